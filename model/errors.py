"""The errors a request can end with, and how a failure is reported: one sentence to the user, the details
to the operator's log. Each InputError message names the input and says what to do."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# A user-facing error message is cut to this many characters (a library's message can be pages long).
MAX_ERROR_CHARS = 300


class RequestRefused(Exception):
    """A request's own outcome, told to the client as it is: a refused input, a flagged output."""


class InputError(RequestRefused, ValueError):
    """A request input is missing, inconsistent or unusable; the message names the input."""


class ConfigurationError(ValueError):
    """An environment variable of the server has a value it cannot use; the message names it and the range."""


class WeightsError(RuntimeError):
    """The weights folder is missing a file, or a file is corrupt; the message names the fix."""


class GenerationError(RuntimeError):
    """A valid request failed inside the server (a bug, a device error); the log holds the traceback."""


@contextmanager
def reported_failures() -> Iterator[None]:
    """Let RequestRefused through as it is; turn any other failure into a one-line GenerationError.

    Cog shows the exception's text as the prediction's `error`: a library's multi-line message or a
    traceback is no use to a client, while the operator needs the whole traceback, so it goes to the log.
    """
    try:
        yield
    except RequestRefused as error:
        log.info("Request refused: %s", error)
        raise
    except Exception as error:
        log.exception("Generation failed")
        first_line = (str(error).strip().splitlines() or [""])[0][:MAX_ERROR_CHARS]
        # Set by CharacterService.generate: the last stage that completed (None: it failed in the first).
        stage = getattr(error, "failed_after_stage", False)
        where = "" if stage is False else f" after its {stage} stage" if stage else " in its first stage"
        raise GenerationError(
            f"Generation failed inside the server{where} ({type(error).__name__}: {first_line}); the inputs "
            "were accepted, so retry, and report it with the server log if it persists"
        ) from error
