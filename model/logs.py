"""The server's log lines: plain messages on stdout, which Cog attaches to each prediction's logs."""

import logging
import sys


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of the record, not at the time of setup."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the live sys.stdout always wins
        pass


def configure_logging() -> None:
    """Our own loggers at INFO as bare lines ("Using seed: N"); other libraries keep their defaults."""
    logger = logging.getLogger("model")
    if not any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
