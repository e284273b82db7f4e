"""Convert the magic prompt's offline fallback model (SmolLM2-135M's GGUF file) once, at install time.

transformers de-quantizes the GGUF file on every load from it (15-90 s on a 2-core CPU); the first load
saves the result beside it (model/prompting/fallback_model.py) and later loads read that in about a second.
`make install` runs this, so that neither `make demo` nor the server's first setup pays for it. Prints the
folder and the seconds it took; does nothing when the conversion is already there.

Usage: python scripts/convert_fallback_model.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

# transformers' GGUF reader shows a progress bar of its own (plain tqdm, which transformers'
# disable_progress_bar does not reach); tqdm reads TQDM_DISABLE when it is imported.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from model.logs import configure_logging  # noqa: E402
from model.prompting.fallback_model import converted_folder  # noqa: E402
from model.prompting.rewriter import PromptRewriter, fallback_gguf, llm_dtype  # noqa: E402
from model.weights.layout import WeightsLayout  # noqa: E402


def main() -> None:
    configure_logging()
    device = torch.device("cpu")
    gguf = fallback_gguf()
    if gguf is not None and (folder := converted_folder(gguf, llm_dtype(device))).is_dir():
        print(f"The magic prompt's fallback model is already converted ({folder})")
        return
    started = time.perf_counter()
    # An empty weights folder has no prompt_model/: the fallback is loaded, and converted, as the server does.
    with tempfile.TemporaryDirectory() as empty:
        PromptRewriter.load(WeightsLayout(Path(empty)), device)
    print(f"Converted the magic prompt's fallback model in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
