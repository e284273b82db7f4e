"""Time the magic prompt's rewrite on this machine: median of several seeded runs on a few prompts.

    OMP_NUM_THREADS=2 python scripts/magic_prompt_latency.py --weights-dir .cache/tiny-weights --runs 5

Loads the rewriter exactly as the server does (the production LLM when the folder has prompt_model/,
else the SmolLM2 GGUF fallback) and prints each run's time, the output's length and the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from model.logs import configure_logging
from model.options import weights_dir_from_environment
from model.prompting.guard_rails import RewriteError
from model.prompting.rewriter import PromptRewriter
from model.weights.layout import WeightsLayout

PROMPTS = [
    "a woman with a red umbrella in Paris",
    "un homme qui lit le journal dans un café",
    "Marie Curie",
    'a chef holding a sign that says "Fresh Bread"',
    "一个女孩在樱花树下",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", default=weights_dir_from_environment())
    parser.add_argument("--runs", type=int, default=5, help="runs per prompt, each with another seed")
    args = parser.parse_args(argv)
    configure_logging()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    rewriter = PromptRewriter.load(WeightsLayout(Path(args.weights_dir)), torch.device("cpu"))
    times = []
    for prompt in PROMPTS:
        for seed in range(args.runs):
            started = time.perf_counter()
            try:
                text = rewriter.rewrite(prompt, seed)
            except RewriteError as error:  # timed like any other run: the server then keeps the prompt
                text = f"<rejected: {error}>"
            times.append(time.perf_counter() - started)
            print(f"{times[-1]:5.2f} s  {len(text.split()):3d} words  {prompt!r} -> {text!r}")
    print(
        f"{rewriter.name}, {torch.get_num_threads()} threads: median {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s over {len(times)} rewrites"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
