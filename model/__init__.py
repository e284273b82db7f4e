"""Open, self-hosted Ideogram Character: one reference image of a character, a prompt, a new image."""
