"""Performance table: cost per speed at 1024x1024, memory budget, and the serving code measured.

Usage:
  python scripts/benchmark.py --profile tiny [--weights-dir DIR] [--runs 5] [--quick] [--json PATH]
  python scripts/benchmark.py --profile production [--weights-dir weights]   # on a CUDA GPU
  python scripts/benchmark.py --profile random [--runs 5] [--json PATH]   # CUDA GPU, no weights needed
  python scripts/benchmark.py --profile random --smoke [--json PATH]      # a CPU: CI's smoke run

Every profile is measured by the same code (timing.py's measure_service): CharacterService.load() loads
the weights folder as the Cog predictor's setup() does (warm-up included on CUDA; its setup_seconds give
the split), then each speed at 1024x1024 on the text-to-image, inpainting and appearance paths runs
through service.generate: end-to-end p50/p90 and the first request's seconds, ms per denoising step, each
stage's median (the service's stage laps, model/timing.py) and the time outside the models against its
300 ms budget; the magic prompt rewrite forced to 90 new tokens; peak GPU memory; and the torch.compile
(dynamo) compilations during the timed requests, which should be 0. Beside it, plain diffusers SDXL from
the same files (the pipeline's own load_sdxl and build_scheduler, no adapters) with the same schedules,
and ours/plain. The profiles differ only in the weights folder, the speeds, the runs and max_steps:

- tiny: the tiny profile (a fresh one unless --weights-dir), on this machine's device: the images are
  noise, so this measures the code around the models. 5 runs; --quick (CI): Turbo only, two runs.
- production: production weights (./weights) on a CUDA GPU, 10 runs.
- random: random weights of the real architecture (devtools/profiles/random.py writes them into
  --weights-dir in the production layout, or reuses that folder; the magic prompt LLM is Qwen2.5-1.5B's
  architecture with a stand-in tokenizer), on a CUDA GPU, 5 runs. --smoke builds the tiny sizes instead
  and runs each request once with max_steps=2 (CharacterService.load's cap on every speed's steps): the
  same code, in seconds, on a CPU (CI).

tiny and production also print, computed on the real architecture with empty (meta) weights, the denoiser
evaluations and TFLOPs per request of each speed (torch.utils.flop_counter) and the parameter bytes of
every production component against a 24 GB GPU. --json writes the report of any profile.

What a GPU run of --profile random needs: Python 3.11 or 3.12, a CUDA torch, and the pinned packages of
requirements.txt (diffusers, peft, transformers, accelerate, safetensors, insightface with onnx, onnxruntime
or onnxruntime-gpu, opencv-python(-headless), scikit-image, pillow; gguf is not needed). Where the machine
lacks some, carry their wheels: `pip download --no-deps -d wheels diffusers==0.42.1 peft==0.21.2
insightface==2.1 ...` on a machine with PyPI access, then `pip install --no-deps wheels/*.whl` there
(insightface 2.1 is a pure-Python py3-none-any wheel). A machine's own transformers, accelerate or
safetensors should be the pinned versions too (the magic prompt's static cache and CompileConfig follow
transformers 5.23's API): carry those wheels as well when they differ. The script checks the imports first
and names what is missing. The folder takes about 13 GiB of disk (docs/PERFORMANCE.md's memory budget).

Modules: timing.py (the one measurement and the plain-SDXL baseline), tables.py (the printed tables).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from devtools.benchmark.tables import flops_table, measured_table, memory_table
from devtools.benchmark.timing import PATHS, SIZE, Plan, measure_service, ratios, time_plain_sdxl
from devtools.counting import real_size_character, request_flops
from model.generation.speeds import SPEEDS

__all__ = ["PATHS", "SMOKE_STEPS", "Plan", "main", "measure_service"]

RUNS = {"tiny": 5, "production": 10, "random": 5}
QUICK_RUNS = 2  # --quick
SMOKE_RUNS = 1  # --smoke
# --smoke: every speed keeps its solver, guidance and adapters, with at most this many steps (CI's CPU time).
SMOKE_STEPS = 2


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("tiny", "production", "random"), required=True)
    parser.add_argument(
        "--weights-dir",
        type=Path,
        help="default: a fresh tiny profile, ./weights, or (random) a fresh folder; random reuses a folder "
        "it wrote before",
    )
    parser.add_argument(
        "--runs", type=int, help="requests per row (tiny: 5; production: 10; random: 5, --smoke: 1)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny, CI: Turbo only, two runs")
    parser.add_argument("--smoke", action="store_true", help="random, CI: the tiny sizes on any device")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.smoke and args.profile != "random":
        parser.error("--smoke goes with --profile random")
    command = "python scripts/benchmark.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    lines = []
    if args.profile != "random":
        flops = {name: request_flops(real_size_character(), name, speed) for name, speed in SPEEDS.items()}
        lines += flops_table(flops) + [""] + memory_table() + [""]
    if args.profile == "production" and not torch.cuda.is_available():
        lines.append("GPU timings: skipped, CUDA is not available (needs a CUDA GPU and production weights).")
    else:
        report = run_profile(args, command)
        lines += measured_table(report)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))
    return lines


def run_profile(args: argparse.Namespace, command: str) -> dict:
    """The profile's Plan measured: measure_service, then plain SDXL on the same plan; the report."""
    from model.service import serving_device

    device, dtype = serving_device()
    plan, size, write_seconds = profile_plan(args, device)
    measured = measure_service(plan)
    plain = time_plain_sdxl(plan)
    measured["setup"] = {"write_seconds": write_seconds, **measured["setup"]}
    cpu = f"CPU ({torch.get_num_threads()} torch threads)"
    return {
        "profile": args.profile,
        "size": size,
        "smoke": args.smoke,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else cpu,
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "resolution": SIZE,
        **measured,
        "plain_sdxl": plain,
        "ratios": ratios(measured["requests"], plain),
    }


def profile_plan(args: argparse.Namespace, device: torch.device) -> tuple[Plan, str, float]:
    """What the profile measures (its weights folder, written first where needed, its speeds, runs and
    max_steps), the architecture's size, and the seconds spent writing weights."""
    if args.profile == "random":
        from devtools.profiles.random import SIZES, ensure_random_profile

        if not args.smoke and device.type != "cuda":
            raise SystemExit(
                "--profile random builds the real-size architecture (~14 GiB of weights in fp16): it needs a "
                "CUDA GPU. On a CPU run `--profile random --smoke` (the tiny sizes, the same code)."
            )
        size = "tiny" if args.smoke else "real"
        weights_dir = args.weights_dir or Path(tempfile.mkdtemp(prefix=f"random-{size}-weights-"))
        _, write_seconds = ensure_random_profile(weights_dir, SIZES[size], device)
        if args.smoke:
            return Plan(weights_dir, tuple(SPEEDS), args.runs or SMOKE_RUNS, SMOKE_STEPS), size, write_seconds
        return Plan(weights_dir, tuple(SPEEDS), args.runs or RUNS["random"]), size, write_seconds
    if args.profile == "production":
        return (
            Plan(args.weights_dir or Path("weights"), tuple(SPEEDS), args.runs or RUNS["production"]),
            "real",
            0.0,
        )
    weights_dir, write_seconds = args.weights_dir, 0.0
    if weights_dir is None:
        from devtools.profiles.tiny import build_tiny_profile

        weights_dir = Path(tempfile.mkdtemp(prefix="tiny-weights-"))
        started = time.perf_counter()
        build_tiny_profile(weights_dir)
        write_seconds = time.perf_counter() - started
    if args.quick:
        return Plan(weights_dir, ("Turbo",), args.runs or QUICK_RUNS), "tiny", write_seconds
    return Plan(weights_dir, tuple(SPEEDS), args.runs or RUNS["tiny"]), "tiny", write_seconds


if __name__ == "__main__":
    main()
