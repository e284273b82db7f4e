"""The server's log lines: plain messages on stdout, which Cog attaches to each prediction's logs."""

import logging
import sys
import warnings


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of the record, not at the time of setup."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the live sys.stdout always wins
        pass


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
        handler.setFormatter(logging.Formatter("%(message)s"))
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
