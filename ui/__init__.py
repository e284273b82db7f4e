"""The browser page for a running server (`make ui`); its packages are in requirements-ui.txt."""
