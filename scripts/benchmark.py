"""Performance table: cost per speed at 1024x1024, memory budget, and measured time per stage.

Usage:
  python scripts/benchmark.py --profile tiny [--weights-dir DIR] [--runs 5] [--quick]
  python scripts/benchmark.py --profile production [--weights-dir weights]   # on a CUDA GPU

Always printed, computed on the real architecture with empty (meta) weights: denoiser evaluations and
TFLOPs per request of each speed (torch.utils.flop_counter), the predicted H100 time at a stated share of
its peak, and the parameter bytes of every production component at its serving dtype against a 24 GB
GPU. Then measured: on the tiny profile, the median seconds of each stage of a request on this CPU (the
images are noise; this measures the code around the models); with production weights on CUDA, the p50
and p90 seconds of each speed over 10 runs and the peak GPU memory. --quick (CI) times Turbo only, twice.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from model.performance import (  # noqa: E402
    ACTIVATION_RESERVE_GIB,
    ASSUMED_UTILISATION,
    GPU_MEMORY_GIB,
    H100_PEAK_TFLOPS,
    RequestFlops,
    fits_gpu,
    memory_budget,
    real_size_character,
    request_flops,
)
from model.speeds import SPEEDS, Speed  # noqa: E402
from model.timing import stage_seconds  # noqa: E402

SIZE = "1024x1024"
# Stages that run no model forward pass: the per-request overhead the performance budget limits.
OVERHEAD_STAGES = ("read_inputs", "face_analysis", "composite", "identity_score", "encode_output")
OVERHEAD_BUDGET_SECONDS = 0.300
SETUP_BUDGET_SECONDS = 15.0
GPU_RUNS = 10
IDEOGRAM_CHARACTER_SECONDS = 14.5


def loras(speed: Speed) -> str:
    active = ["FaceID"] + (["Lightning-8step"] if speed.turbo_lora_scale else [])
    return " + ".join(active)


def flops_table(flops: dict[str, RequestFlops]) -> list[str]:
    default = flops["Default"].total
    lines = [
        f"Cost of one {SIZE} text-to-image request (FLOPs counted on the real architecture, meta weights; "
        f"predicted H100 time at {ASSUMED_UTILISATION:.0%} of its {H100_PEAK_TFLOPS:.0f} TFLOP/s dense "
        "bf16 peak)",
        "",
        "| speed | scheduler | steps | CFG | LoRAs | UNet evals | text enc | image enc | UNet | VAE dec "
        "| TFLOPs | vs Default | H100 s (pred.) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, speed in SPEEDS.items():
        row = flops[name]
        options = ", ".join(f"{k}={v}" for k, v in speed.scheduler.options.items())
        lines.append(
            f"| {name} | {speed.scheduler.class_name} ({options}) | {speed.num_inference_steps} "
            f"| {speed.guidance_scale:g} | {loras(speed)} | {row.denoiser_evaluations} "
            f"| {row.text_encoders / 1e12:.2f} | {row.image_encoder / 1e12:.2f} | {row.denoiser / 1e12:.1f} "
            f"| {row.vae_decode / 1e12:.1f} | {row.total / 1e12:.1f} | {row.total / default:.2f} "
            f"| {row.predicted_seconds():.2f} |"
        )
    return lines


def memory_table() -> list[str]:
    rows = memory_budget()
    fits, left = fits_gpu(rows)
    lines = [
        "Memory budget: parameters of every production component at its serving dtype",
        "",
        "| component | parameters (M) | bytes/param | GiB | note |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.parameters / 1e6:,.1f} | {row.bytes_per_parameter:g} "
            f"| {row.bytes / 2**30:.2f} | {row.note} |"
        )
    total = sum(row.bytes for row in rows) / 2**30
    verdict = "fits" if fits else "does NOT fit"
    lines += [
        f"| **total** | | | **{total:.2f}** | |",
        "",
        f"{total:.2f} GiB of weights + {ACTIVATION_RESERVE_GIB:.0f} GiB reserved for 1024x1024 activations "
        f"{verdict} a {GPU_MEMORY_GIB:.0f} GiB GPU ({left:.2f} GiB left).",
    ]
    return lines


@dataclass
class Measured:
    load_seconds: list[float]
    # The service's own "Setup seconds: ..." log line of the last load: the split by component.
    setup_split: str
    # speed -> one {stage: seconds} per run, and the wall seconds of each run
    runs: dict[str, list[dict[str, float]]]
    wall: dict[str, list[float]]
    # speed -> peak GPU memory in GiB (CUDA only)
    peak_gib: dict[str, float]


def reference_image(folder: Path) -> Path:
    """NASA's public-domain astronaut portrait, shipped with scikit-image: a real face, no download."""
    from PIL import Image
    from skimage import data

    path = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


class _LogCapture(logging.Handler):
    """Keeps the text after `prefix` of the last log record that starts with it."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.INFO)
        self.prefix = prefix
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.prefix):
            self.last = message.removeprefix(self.prefix)


def measure(weights_dir: Path, speeds: list[str], runs: int, loads: int) -> Measured:
    """Load the service `loads` times, then run `runs` 1024x1024 requests per speed; stage laps per run.

    Wall times need no CUDA synchronisation: the pipeline returns a PIL image, copied off the GPU.
    """
    cuda = torch.cuda.is_available()
    from model.request import build_request
    from model.service import CharacterService

    setup_lines = _LogCapture("Setup seconds: ")
    service_log = logging.getLogger("model.service")
    service_log.addHandler(setup_lines)
    previous_level = service_log.level
    service_log.setLevel(logging.INFO)
    load_seconds = []
    try:
        for _ in range(loads):
            started = time.perf_counter()
            service = CharacterService.load(weights_dir)
            load_seconds.append(time.perf_counter() - started)
    finally:
        service_log.removeHandler(setup_lines)
        service_log.setLevel(previous_level)
    reference = reference_image(Path(tempfile.mkdtemp(prefix="benchmark-")))
    measured = Measured(load_seconds, setup_lines.last, {}, {}, {})
    for name in speeds:
        request = build_request(
            prompt="a close up photo of a woman in a fashion magazine photoshoot",
            character_reference_image=reference,
            image=None,
            mask=None,
            seed=1,
            resolution=SIZE,
            style_type="Auto",
            aspect_ratio="1:1",
            rendering_speed=name,
            magic_prompt_option="Auto",
        )
        measured.runs[name], measured.wall[name] = [], []
        if cuda:  # GPU only
            torch.cuda.reset_peak_memory_stats()
        for _ in range(runs):
            metrics: dict[str, float] = {}
            started = time.perf_counter()
            service.generate(request, record_metric=metrics.__setitem__)
            measured.wall[name].append(time.perf_counter() - started)
            measured.runs[name].append(stage_seconds(metrics))
        if cuda:  # GPU only
            measured.peak_gib[name] = torch.cuda.max_memory_allocated() / 2**30
    return measured


def stage_table(measured: Measured, device: str) -> list[str]:
    stages = sorted({stage for runs in measured.runs.values() for run in runs for stage in run}, key=_order)
    header = "| speed | runs | " + " | ".join(stages) + " | end to end | outside the models |"
    load = statistics.median(measured.load_seconds)
    lines = [
        f"Measured seconds per stage on {device}, {SIZE}, median of the runs "
        f"(setup: load {load:.2f} s, budget {SETUP_BUDGET_SECONDS:.0f} s; split: {measured.setup_split})",
        "",
        header,
        "|" + "---|" * (len(stages) + 4),
    ]
    for name, runs in measured.runs.items():
        medians = {stage: statistics.median(run.get(stage, 0.0) for run in runs) for stage in stages}
        total = statistics.median(measured.wall[name])
        overhead = statistics.median(sum(run.get(s, 0.0) for s in OVERHEAD_STAGES) for run in runs)
        within = "within" if overhead < OVERHEAD_BUDGET_SECONDS else "OVER"
        cells = " | ".join(f"{medians[stage]:.3f}" for stage in stages)
        lines.append(
            f"| {name} | {len(runs)} | {cells} | {total:.3f} | {overhead:.3f} ({within} "
            f"{OVERHEAD_BUDGET_SECONDS * 1000:.0f} ms) |"
        )
    lines += [
        "",
        "Stages: read_inputs (image decoding), face_analysis (SCRFD + ArcFace on the reference), prompt "
        "(magic prompt rewrite and style), denoise (text and image encoders, UNet loop), decode (VAE and "
        "conversion to PIL), composite (inpainting only), identity_score (face analysis of the output), "
        "encode_output (PNG).",
    ]
    return lines


STAGE_ORDER = (
    "read_inputs",
    "face_analysis",
    "prompt",
    "denoise",
    "decode",
    "composite",
    "identity_score",
    "encode_output",
)


def _order(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def gpu_table(weights_dir: Path) -> list[str]:  # GPU only: needs CUDA and production weights
    """p50 / p90 seconds per speed over GPU_RUNS runs after one warm-up, and peak GPU memory."""
    lines = [
        f"Measured on {torch.cuda.get_device_name(0)}, production weights, {SIZE}, {GPU_RUNS} runs per speed",
        "",
        "| speed | p50 s | p90 s | peak GPU memory GiB |",
        "|---|---|---|---|",
    ]
    measured = measure(weights_dir, list(SPEEDS), GPU_RUNS + 1, loads=1)
    for name in SPEEDS:
        deciles = statistics.quantiles(measured.wall[name][1:], n=10)  # the first run warms up
        lines.append(f"| {name} | {deciles[4]:.2f} | {deciles[8]:.2f} | {measured.peak_gib[name]:.1f} |")
    lines.append(f"Ideogram Character on Replicate: {IDEOGRAM_CHARACTER_SECONDS} s per prediction.")
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("tiny", "production"), required=True)
    parser.add_argument("--weights-dir", type=Path, help="default: a fresh tiny profile, or ./weights")
    parser.add_argument("--runs", type=int, default=5, help="requests per speed on the tiny profile")
    parser.add_argument("--quick", action="store_true", help="CI: Turbo only, two runs, one load")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    lines = flops_table({name: request_flops(real_size_character(), name, s) for name, s in SPEEDS.items()})
    lines += [""] + memory_table() + [""]
    if args.profile == "tiny":
        weights_dir = args.weights_dir
        if weights_dir is None:
            from make_tiny_weights import build_tiny_profile

            weights_dir = Path(tempfile.mkdtemp(prefix="tiny-weights-"))
            build_tiny_profile(weights_dir)
        speeds, runs, loads = (["Turbo"], 2, 1) if args.quick else (list(SPEEDS), args.runs, 3)
        cpu = f"this CPU ({torch.get_num_threads()} torch threads)"
        lines += stage_table(measure(weights_dir, speeds, runs, loads), cpu)
    elif torch.cuda.is_available():
        lines += gpu_table(args.weights_dir or Path("weights"))
    else:
        lines.append("GPU timings: skipped, CUDA is not available (needs a CUDA GPU and production weights).")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
