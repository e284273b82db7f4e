"""Performance table: cost per speed at 1024x1024, memory budget, and the serving code measured.

Usage:
  python scripts/benchmark.py --profile tiny [--weights-dir DIR] [--runs 5] [--quick] [--json PATH]
  python scripts/benchmark.py --profile production [--weights-dir weights]   # on a CUDA GPU
  python scripts/benchmark.py --profile random [--runs 5] [--json PATH]   # CUDA GPU, no weights needed
  python scripts/benchmark.py --profile random --smoke [--json PATH]      # a CPU: CI's smoke run
  Any profile: [--speeds Turbo,Default] [--compile on|off] [--verbose]

Every profile is measured by the same code (timing.py's measure_service): CharacterService.load() loads
the weights folder as the Cog predictor's setup() does (warm-up included on CUDA; its setup_seconds give
the split), then each speed at 1024x1024 on the text-to-image, inpainting and appearance paths runs
through service.generate: end-to-end p50/p90 and the first request's seconds, ms per denoising step, each
stage's median (the service's stage laps, model/timing.py), the time in no stage and the time outside the
models against its 300 ms budget; the magic prompt rewrite forced to 90 new tokens; the compile state and
dynamo's counters in setup and during the timed requests (0 frames expected); peak GPU memory, torch's and
the process's (onnxruntime and the CUDA context included), in both GPU configurations (the pristine LoRA
copy on the GPU, or in host memory as on a 24 GB GPU); and the first speed's text-to-image request before
and after gc.freeze (the collector table). Beside it, plain diffusers SDXL from the same files (the
pipeline's own load_sdxl and build_scheduler, no adapters) with the same schedules, text to image and
inpainting, eager and, when ours is compiled, compiled by the server's compile_unet; and ours/plain on the
same path in the same compile state. The profiles differ only in the weights folder, the speeds, the runs
and max_steps:

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
every production component against a 24 GB GPU. --json writes the report of any profile, after every part.

Before anything, the preflight (devtools/packages.py) imports what the serving code imports and prints the
installed versions that differ from requirements.txt. On a GPU machine without a package index,
scripts/gpu_check.sh installs the carried wheels and runs this benchmark eager and compiled
(docs/PERFORMANCE.md, "The GPU check"). The random folder takes about 14.5 GiB of disk.

Modules: timing.py (the one measurement and the plain-SDXL baseline), tables.py (the printed tables).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from devtools.benchmark.tables import (
    collector_table,
    flops_table,
    measured_table,
    memory_table,
    preflight_table,
)
from devtools.benchmark.timing import (
    PATHS,
    SIZE,
    Plan,
    machine,
    measure_service,
    ratios,
    time_plain_sdxl,
)
from devtools.counting import RequestFlops, real_size_character, request_flops
from devtools.packages import Preflight, preflight
from model.generation.speeds import SPEEDS

__all__ = ["PATHS", "SMOKE_STEPS", "Plan", "main", "measure_service", "speed_flops"]

RUNS = {"tiny": 5, "production": 10, "random": 5}
QUICK_RUNS = 2  # --quick
# --quick: the offline LLM's rewrite takes seconds a run on a CPU, and so does each collector-table request.
QUICK_MAGIC_PROMPT_RUNS = 1
QUICK_COLLECTOR_RUNS = 1
SMOKE_RUNS = 1  # --smoke
# --smoke: every speed keeps its solver, guidance and adapters, with at most this many steps (CI's CPU time).
SMOKE_STEPS = 2
COMPILE_SWITCH = {"on": True, "off": False}


@functools.cache
def speed_flops() -> dict[str, RequestFlops]:
    """Each speed's FLOPs per 1024x1024 request, counted on the real architecture with meta weights
    (tens of seconds on a CPU: counted once per process)."""
    character = real_size_character()
    return {name: request_flops(character, name, speed) for name, speed in SPEEDS.items()}


def main(argv: list[str] | None = None, checked: Preflight | None = None) -> list[str]:
    """Run the benchmark with these command-line arguments; return the printed lines. `checked`: the
    preflight scripts/benchmark.py ran before importing this package (run here when not given)."""
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
    parser.add_argument(
        "--speeds", type=_speeds, help="comma-separated speeds to time (default: " + ",".join(SPEEDS) + ")"
    )
    parser.add_argument(
        "--compile",
        choices=tuple(COMPILE_SWITCH),
        help="compile the service's UNet (on) or not (off); default: the server's own setting "
        "(CHARACTER_TORCH_COMPILE, as setup reads it). Plain SDXL is compiled the same way when ours is.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny, CI: Turbo only, two runs")
    parser.add_argument("--smoke", action="store_true", help="random, CI: the tiny sizes on any device")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file, as it goes")
    parser.add_argument("--verbose", action="store_true", help="log the serving code's INFO lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.smoke and args.profile != "random":
        parser.error("--smoke goes with --profile random")
    command = "python scripts/benchmark.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    checked = checked if checked is not None else preflight()
    if not checked.ok:
        raise SystemExit(checked.failure_message())

    lines = preflight_table(checked) + [""]
    if args.profile != "random":
        lines += flops_table(speed_flops()) + [""] + memory_table() + [""]
    if args.profile == "production" and not torch.cuda.is_available():
        lines.append("GPU timings: skipped, CUDA is not available (needs a CUDA GPU and production weights).")
    else:
        report = run_profile(args, command, checked)
        lines += measured_table(report)
        if report["collector"] is not None:
            lines += [""] + collector_table(report)
    print("\n".join(lines))
    return lines


def _speeds(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in SPEEDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown speed(s) {unknown or value!r}: choose from {', '.join(SPEEDS)}"
        )
    return names


def run_profile(args: argparse.Namespace, command: str, checked: Preflight) -> dict:
    """The profile's Plan measured: measure_service, then plain SDXL on the same plan; the report, written
    to args.json (when given) after every part, with "complete": false until the end."""
    from model.service import serving_device

    device, dtype = serving_device()
    cpu = f"CPU ({torch.get_num_threads()} torch threads)"
    report: dict = {
        "complete": False,
        "profile": args.profile,
        "size": None,
        "smoke": args.smoke,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else cpu,
        "machine": machine(),
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, **checked.versions},
        "preflight": checked.as_dict(),
        "resolution": SIZE,
    }

    def progress(key: str, value) -> None:
        report[key] = value
        if args.json:
            # Whole or not at all: a run stopped by a time limit leaves the last complete write.
            args.json.parent.mkdir(parents=True, exist_ok=True)
            partial = args.json.with_name(args.json.name + ".partial")
            partial.write_text(json.dumps(report, indent=2, default=str) + "\n")
            partial.replace(args.json)

    plan, size, write_seconds = profile_plan(args, device)
    progress("size", size)
    measured = measure_service(plan, progress)
    measured["setup"] = {"write_seconds": write_seconds, **measured["setup"]}
    for key, value in measured.items():
        progress(key, value)
    plain = time_plain_sdxl(plan, compiled=measured["compile"]["unet_compiled"], progress=progress)
    progress("plain_sdxl", plain)
    progress("ratios", ratios(measured["requests"], plain, measured["compile"]["unet_compiled"]))
    progress("complete", True)
    return report


def profile_plan(args: argparse.Namespace, device: torch.device) -> tuple[Plan, str, float]:
    """What the profile measures (its weights folder, written first where needed, its speeds, runs,
    max_steps and compile switch), the architecture's size, and the seconds spent writing weights."""
    compile_switch = COMPILE_SWITCH.get(args.compile) if args.compile else None
    speeds = args.speeds or tuple(SPEEDS)
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
            # The collector table is the tiny profile's (--profile tiny): the smoke run covers the paths.
            plan = Plan(
                weights_dir,
                speeds,
                args.runs or SMOKE_RUNS,
                SMOKE_STEPS,
                compile=compile_switch,
                collector_runs=0,
            )
            return plan, size, write_seconds
        plan = Plan(weights_dir, speeds, args.runs or RUNS["random"], compile=compile_switch)
        return plan, size, write_seconds
    if args.profile == "production":
        runs = args.runs or RUNS["production"]
        plan = Plan(args.weights_dir or Path("weights"), speeds, runs, compile=compile_switch)
        return plan, "real", 0.0
    weights_dir, write_seconds = args.weights_dir, 0.0
    if weights_dir is None:
        from devtools.profiles.tiny import build_tiny_profile

        weights_dir = Path(tempfile.mkdtemp(prefix="tiny-weights-"))
        started = time.perf_counter()
        build_tiny_profile(weights_dir)
        write_seconds = time.perf_counter() - started
    if args.quick:
        plan = Plan(
            weights_dir,
            args.speeds or ("Turbo",),
            args.runs or QUICK_RUNS,
            compile=compile_switch,
            magic_prompt_runs=QUICK_MAGIC_PROMPT_RUNS,
            collector_runs=QUICK_COLLECTOR_RUNS,
        )
        return plan, "tiny", write_seconds
    return Plan(weights_dir, speeds, args.runs or RUNS["tiny"], compile=compile_switch), "tiny", write_seconds


if __name__ == "__main__":
    main()
