"""`python -m ui` (make ui): the server at $SERVER is asked for its /openapi.json before Gradio is
imported, so that a wrong or stopped SERVER is told in seconds."""

import os
import sys

from ui.client import Server, ServerUnreachable

try:
    openapi = Server(os.environ.get("SERVER", "http://localhost:5000")).openapi(
        wait_seconds=60, on_wait=lambda text: print(text, file=sys.stderr, flush=True)
    )
except ServerUnreachable as error:
    print(error, file=sys.stderr)
    sys.exit(1)

from ui.app import main  # noqa: E402 - Gradio's import takes seconds: only once the server answers

sys.exit(main(openapi))
