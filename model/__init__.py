"""Open, self-hosted Ideogram Character: one reference image of a character, a prompt, a new image."""

from model.logs import drop_import_notices

drop_import_notices()
