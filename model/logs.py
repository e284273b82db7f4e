"""The server's log lines: plain messages on stdout, which Cog attaches to each prediction's logs.

One record is one line. Messages carry what users send (the prompt, the magic prompt's rewrite of it, file
names), and clients read the logs line by line ("Identity similarity: 0.82", "Safety checker: flagged"),
so every character that any common reader takes for a line break (Python's str.splitlines, JavaScript's
multi-line regular expressions) is written escaped, as Python writes it in a string literal.
"""

import logging
import sys
import warnings

# Every line boundary of str.splitlines: \n, \r, \v, \f, the file/group/record separators, NEL, and
# Unicode's line and paragraph separators (the two that JavaScript's `m` flag adds to \n and \r).
_LINE_BREAKS = {character: repr(character)[1:-1] for character in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
_ESCAPES = str.maketrans(_LINE_BREAKS)


def one_line(text: str) -> str:
    """`text` with every line break written as its escape ("\\n", "\\u2028"), so it stays one line."""
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """The bare message, its line breaks escaped; a traceback (exc_info) still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of the record, not at the time of setup."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the live sys.stdout always wins
        pass


# Library notices that say nothing to the user, dropped where the library logs them. transformers' lazy
# import logs "`CLIPImageProcessor` requires torchvision (not installed); falling back to
# `CLIPImageProcessorPil` ..." (and the same for SiglipImageProcessor) when diffusers' SDXL pipeline module
# imports those names: torchvision is deliberately not a dependency and the PIL processors are the ones
# used. It is logged at import time, before configure_logging() runs in setup, so a verbosity setting
# there comes too late; the filter is installed when the `model` package is first imported.
_IMPORT_NOTICES = {
    "transformers.utils.import_utils": ("requires torchvision (not installed); falling back to",)
}


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def drop_import_notices() -> None:
    """Install the filters of _IMPORT_NOTICES on the loggers that emit them (once; idempotent)."""
    for name, fragments in _IMPORT_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))


def configure_logging() -> None:
    """Our own loggers at INFO as bare lines ("Using seed: N"), and the known-benign library noise off.

    A prediction's logs are what the user reads: diffusers and transformers repeat load-time notices
    (an empty "kept in float32: []" list, tokenizer length notes, progress bars) on every request,
    insightface calls a scikit-image function deprecated in 0.26, and peft warns about the second LoRA
    adapter that the pipeline loads on purpose. Their errors still show.
    """
    logger = logging.getLogger("model")
    if not any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(OneLineFormatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.")
    # The FaceID LoRA and the Turbo LoRA are loaded as two peft adapters on one UNet, then merged per
    # request (model/generation/merged_loras.py).
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
