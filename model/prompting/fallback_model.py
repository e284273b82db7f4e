"""The offline fallback LLM's GGUF file, converted once to a transformers folder that loads in a second.

transformers reads a GGUF file by de-quantizing every tensor on each load: for SmolLM2-135M's Q4_1 file that
is 15-45 s of CPU on a 2-core machine, at every server start, demo and test. The weights it produces do not
change, so the first load saves them (safetensors, with the config, generation config and tokenizer) in a
folder beside the GGUF, named by the file's size, modification time, the dtype and the transformers
version; later loads read that folder (about 0.4 s), with the same tensors bit for bit and the same
tokenizer. transformers refuses save_pretrained on a model it loaded from GGUF (it marks it quantized),
although the tensors it holds are plain: the mark is removed on the loaded copy before saving. When the
folder cannot be written (a read-only install), the GGUF is read as before.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CONVERTED_PREFIX = ".converted-"


def converted_folder(gguf: Path, dtype: torch.dtype) -> Path:
    """Where the conversion of this GGUF file at this dtype lives (it may not exist yet)."""
    stat = gguf.stat()
    dtype_name = str(dtype).removeprefix("torch.")
    key = f"{stat.st_size}-{stat.st_mtime_ns}-{dtype_name}-{transformers.__version__}"
    return gguf.parent / f"{CONVERTED_PREFIX}{gguf.stem}-{key}"


def save_converted(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path | None:
    """Save a model loaded from GGUF as a transformers folder, atomically (written aside, then renamed, so
    that a concurrent reader never sees half a folder); None, with a log line, when it cannot be written."""
    try:
        work = Path(tempfile.mkdtemp(prefix=CONVERTED_PREFIX + "partial-", dir=folder.parent))
    except OSError as error:
        log.info("Magic prompt: not caching the converted fallback model (%s)", error)
        return None
    try:
        # The tensors are plain after de-quantization; only the loader's mark stops save_pretrained.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        work.chmod(0o755)  # mkdtemp's 0700 would hide it from another user of the same install
        os.replace(work, folder)
    except OSError as error:
        # Another process may have renamed its copy into place first: theirs is as good as ours.
        shutil.rmtree(work, ignore_errors=True)
        if not folder.is_dir():
            log.info("Magic prompt: not caching the converted fallback model (%s)", error)
            return None
    return folder
