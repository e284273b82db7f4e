"""Performance table: cost per speed at 1024x1024, memory budget, and measured time per stage.

Usage:
  python scripts/benchmark.py --profile tiny [--weights-dir DIR] [--runs 5] [--quick]
  python scripts/benchmark.py --profile production [--weights-dir weights]   # on a CUDA GPU
  python scripts/benchmark.py --profile random [--runs 5] [--json PATH]   # CUDA GPU, no weights needed
  python scripts/benchmark.py --profile random --smoke [--json PATH]      # a CPU: CI's smoke run

tiny and production: always printed, computed on the real architecture with empty (meta) weights, the
denoiser evaluations and TFLOPs per request of each speed (torch.utils.flop_counter) and the parameter
bytes of every production component against a 24 GB GPU. Then measured: on the tiny profile, the median
seconds of each stage on this CPU (the images are noise; this measures the code around the models); with
production weights on CUDA, the p50 and p90 seconds of each speed over 10 runs and the peak GPU memory.
--quick (CI) times Turbo only.

random: the serving path measured on random weights of the real architecture (devtools/profiles/random.py
writes them into --weights-dir in the production layout, or reuses that folder; CharacterService.load()
loads them as it loads production weights, warm-up included), on the device production would pick (CUDA in
fp16 when present). For each speed at 1024x1024, on the text-to-image, inpainting and appearance paths:
end-to-end p50/p90 and the first request's seconds, ms per denoising step, and each stage's median (the
service's stage laps, model/timing.py); plain diffusers SDXL (StableDiffusionXLPipeline loaded from the same
files, no adapters) with the same schedule, and ours/plain; the magic prompt rewrite on the production LLM's
architecture (Qwen2.5-1.5B, random weights, stand-in tokenizer) forced to 90 new tokens; setup seconds with
the warm-up; peak GPU memory; and the torch.compile (dynamo) compilations during the timed requests, which
should be 0. --smoke builds the tiny sizes instead and runs each request once: the same code, in seconds,
on a CPU (CI).

What a GPU run of --profile random needs: Python 3.11 or 3.12, a CUDA torch, and the pinned packages of
requirements.txt (diffusers, peft, transformers, accelerate, safetensors, insightface with onnx, onnxruntime
or onnxruntime-gpu, opencv-python(-headless), scikit-image, pillow; gguf is not needed). Where the machine
lacks some, carry their wheels: `pip download --no-deps -d wheels diffusers==0.42.1 peft==0.21.2
insightface==2.1 ...` on a machine with PyPI access, then `pip install --no-deps wheels/*.whl` there
(insightface 2.1 is a pure-Python py3-none-any wheel). A machine's own transformers, accelerate or
safetensors should be the pinned versions too (the magic prompt's static cache and CompileConfig follow
transformers 5.23's API): carry those wheels as well when they differ. The script checks the imports first
and names what is missing. The folder takes about 13 GiB of disk (docs/PERFORMANCE.md's memory budget).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import logging
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

from devtools.counting import (
    ACTIVATION_RESERVE_GIB,
    GPU_MEMORY_GIB,
    RequestFlops,
    fits_gpu,
    memory_budget,
    real_size_character,
    request_flops,
)
from model.generation.speeds import SPEEDS, Speed
from model.timing import stage_seconds

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
        "the GPU times are measured by --profile random or production, not derived from these counts)",
        "",
        "| speed | scheduler | steps | CFG | LoRAs | UNet evals | text enc | image enc | UNet | VAE dec "
        "| TFLOPs | vs Default |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, speed in SPEEDS.items():
        row = flops[name]
        options = ", ".join(f"{k}={v}" for k, v in speed.scheduler.options.items())
        lines.append(
            f"| {name} | {speed.scheduler.class_name} ({options}) | {speed.num_inference_steps} "
            f"| {speed.guidance_scale:g} | {loras(speed)} | {row.denoiser_evaluations} "
            f"| {row.text_encoders / 1e12:.2f} | {row.image_encoder / 1e12:.2f} | {row.denoiser / 1e12:.1f} "
            f"| {row.vae_decode / 1e12:.1f} | {row.total / 1e12:.1f} | {row.total / default:.2f} |"
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
    from model.inputs.request import build_request
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


# ---------------------------------------------------------------- --profile random

RANDOM_RUNS = 5
# --smoke: every speed keeps its solver, guidance and adapters, with this many steps (CI's CPU time).
SMOKE_STEPS = 2
MAGIC_PROMPT_TOKENS = 90  # the measurement: a 90-token rewrite
PROMPT = "a close up photo of a woman in a fashion magazine photoshoot"
PATHS = ("text-to-image", "inpainting", "appearance")


@contextlib.contextmanager
def smoke_schedules():
    """While open, each row of the speed table (model/generation/speeds.py, the one the service reads) has
    SMOKE_STEPS
    steps and nothing else changed: the smoke run takes the production code path, only shorter."""
    shorter = {
        name: dataclasses.replace(speed, num_inference_steps=SMOKE_STEPS) for name, speed in SPEEDS.items()
    }
    with mock.patch.dict(SPEEDS, shorter):
        yield


def cartoon_reference(folder: Path) -> Path:
    """A drawn character with no human face (grey robot, white background): the appearance path."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (768, 768), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((264, 120, 504, 330), fill=(120, 130, 150), outline=(20, 20, 30), width=6)  # head
    draw.ellipse((310, 180, 360, 230), fill=(40, 200, 250))  # eyes
    draw.ellipse((408, 180, 458, 230), fill=(40, 200, 250))
    draw.rectangle((214, 350, 554, 690), fill=(90, 100, 120), outline=(20, 20, 30), width=6)  # body
    path = folder / "robot.png"
    image.save(path)
    return path


def inpainting_inputs(folder: Path, reference: Path) -> tuple[Path, Path]:
    """A 1024x1024 photo and a mask that repaints its middle (black = regenerate, white = keep)."""
    from PIL import Image, ImageDraw

    image = Image.open(reference).convert("RGB").resize((1024, 1024))
    mask = Image.new("L", (1024, 1024), 255)
    ImageDraw.Draw(mask).rectangle((256, 256, 768, 768), fill=0)
    image_path, mask_path = folder / "inpaint_image.png", folder / "inpaint_mask.png"
    image.save(image_path)
    mask.save(mask_path)
    return image_path, mask_path


@dataclass
class RequestTimes:
    """The runs of one (speed, path): wall seconds, stage laps and the times of the denoising steps."""

    speed: str
    path: str
    wall: list[float] = dataclasses.field(default_factory=list)
    stages: list[dict[str, float]] = dataclasses.field(default_factory=list)
    step_ms: list[float] = dataclasses.field(default_factory=list)
    steps: int = 0

    def summary(self) -> dict:
        stages = sorted({stage for run in self.stages for stage in run}, key=_order)
        pipeline = [run.get("denoise", 0.0) + run.get("decode", 0.0) for run in self.stages]
        return {
            "speed": self.speed,
            "path": self.path,
            "runs": len(self.wall),
            "first_s": self.wall[0],
            "p50_s": _quantile(self.wall, 0.5),
            "p90_s": _quantile(self.wall, 0.9),
            "pipeline_p50_s": _quantile(pipeline, 0.5),
            "steps": self.steps,
            "ms_per_step": statistics.median(self.step_ms) if self.step_ms else None,
            "stages_median_s": {
                stage: statistics.median(run.get(stage, 0.0) for run in self.stages) for stage in stages
            },
        }


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (statistics.quantiles needs two values; one run is its own p90)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _synchronize() -> None:
    if torch.cuda.is_available():  # GPU only: the CPU runs synchronously
        torch.cuda.synchronize()


def _dynamo_compilations() -> int:
    """Frames dynamo has compiled so far (first compilations and recompilations alike): a request that
    compiles anything raises it."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def time_requests(service, cases: list[tuple[str, str, dict]], runs: int) -> list[RequestTimes]:
    """Run each case `runs` times through service.generate; the first run is timed like the others."""
    from model.inputs.request import build_request

    results = []
    for speed, path, files in cases:
        request = build_request(
            prompt=PROMPT,
            seed=1,
            resolution=SIZE if path != "inpainting" else "None",
            style_type="Auto",
            aspect_ratio="1:1",
            rendering_speed=speed,
            magic_prompt_option="Off",
            **files,
        )
        times = RequestTimes(speed, path)
        for _ in range(runs):
            metrics: dict[str, float] = {}
            step_times: list[float] = []

            def record(key: str, value, metrics=metrics, step_times=step_times) -> None:
                if key == "denoising_step":
                    _synchronize()  # so that a step's time is the device's, not the launch queue's
                    step_times.append(time.perf_counter())
                metrics[key] = value

            _synchronize()
            started = time.perf_counter()
            service.generate(request, record_metric=record)
            times.wall.append(time.perf_counter() - started)
            times.stages.append(stage_seconds(metrics))
            times.steps = len(step_times)
            if len(step_times) > 1:
                times.step_ms.append(1000 * (step_times[-1] - step_times[0]) / (len(step_times) - 1))
        results.append(times)
    return results


def time_plain_sdxl(weights_dir: Path, runs: int) -> list[dict]:
    """Plain diffusers SDXL from the same files (no adapters, no LoRA), each speed's schedule, text to image.

    On CUDA one untimed call per speed comes first (cuDNN and allocator warm-up): plain diffusers has no
    setup warm-up of its own.
    """
    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline

    from model.service import serving_device
    from model.weights.layout import SDXL_VARIANT, WeightsLayout

    layout = WeightsLayout(weights_dir)
    device, dtype = serving_device()
    pipe = StableDiffusionXLPipeline.from_pretrained(
        layout.sdxl,
        vae=AutoencoderKL.from_pretrained(layout.vae, dtype=dtype),
        variant=SDXL_VARIANT,
        dtype=dtype,
        add_watermarker=False,
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":  # GPU only: the memory format apply_gpu_settings gives ours
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    config = pipe.scheduler.config
    rows = []
    for name, speed in SPEEDS.items():
        spec = speed.scheduler
        wall, step_ms = [], []
        warm_up = 1 if device.type == "cuda" else 0
        for run in range(runs + warm_up):
            pipe.scheduler = getattr(diffusers, spec.class_name).from_config(config, **spec.options)
            step_times: list[float] = []

            def on_step(pipeline, step, timestep, tensors, step_times=step_times):
                _synchronize()
                step_times.append(time.perf_counter())
                return tensors

            _synchronize()
            started = time.perf_counter()
            pipe(
                prompt=PROMPT,
                negative_prompt="blurry, low quality",
                width=1024,
                height=1024,
                num_inference_steps=speed.num_inference_steps,
                guidance_scale=speed.guidance_scale,
                generator=torch.Generator("cpu").manual_seed(1),
                callback_on_step_end=on_step,
            )
            if run < warm_up:
                continue
            wall.append(time.perf_counter() - started)
            if len(step_times) > 1:
                step_ms.append(1000 * (step_times[-1] - step_times[0]) / (len(step_times) - 1))
        rows.append(
            {
                "speed": name,
                "runs": runs,
                "p50_s": _quantile(wall, 0.5),
                "p90_s": _quantile(wall, 0.9),
                "ms_per_step": statistics.median(step_ms) if step_ms else None,
            }
        )
    del pipe
    return rows


def time_magic_prompt(rewriter, runs: int) -> dict:
    """The rewrite of the production LLM's architecture, forced to MAGIC_PROMPT_TOKENS new tokens (the random
    profile's model has no end token), with no deadline: a rewrite cut short would time fewer tokens.
    Random weights write noise, which the guard rails reject; that is timed like any other rewrite, as the
    server would spend it, and the reasons are reported."""
    from model.prompting.guard_rails import RewriteError

    rewriter.settings = dataclasses.replace(
        rewriter.settings, max_new_tokens=MAGIC_PROMPT_TOKENS, timeout_seconds=float("inf")
    )
    seconds, tokens, rejected = [], [], set()
    for seed in range(runs):
        _synchronize()
        started = time.perf_counter()
        try:
            rewriter.rewrite("a woman with a red umbrella in Paris", seed)
        except RewriteError as error:
            rejected.add(str(error))
        seconds.append(time.perf_counter() - started)
        tokens.append(rewriter.last_new_tokens)
    return {
        "model": rewriter.name,
        "runs": runs,
        "new_tokens": tokens,
        "static_cache": rewriter.static_cache is not None,
        "rejected_by_the_guard_rails": sorted(rejected),
        "p50_s": _quantile(seconds, 0.5),
        "p90_s": _quantile(seconds, 0.9),
    }


def random_profile(weights_dir: Path | None, smoke: bool, runs: int, command: str) -> dict:
    """Write or reuse the random profile, load it as production does, and time everything; the JSON report."""
    from devtools.profiles.random import SIZES, ensure_random_profile
    from model.service import CharacterService, serving_device

    cuda = torch.cuda.is_available()
    if not smoke and not cuda:
        raise SystemExit(
            "--profile random builds the real-size architecture (~14 GiB of weights in fp16): it needs a "
            "CUDA GPU. On a CPU run `--profile random --smoke` (the tiny sizes, the same code)."
        )
    size = SIZES["tiny" if smoke else "real"]
    device, dtype = serving_device()
    if weights_dir is None:
        weights_dir = Path(tempfile.mkdtemp(prefix=f"random-{size.name}-weights-"))
    _, write_seconds = ensure_random_profile(weights_dir, size, device)
    # The writer's modules are garbage now: free them before setup's peak memory is measured.
    gc.collect()
    if cuda:  # GPU only
        torch.cuda.empty_cache()

    setup_lines = _LogCapture("Setup seconds: ")
    service_log = logging.getLogger("model.service")
    service_log.addHandler(setup_lines)
    previous_level = service_log.level
    service_log.setLevel(logging.INFO)
    if cuda:  # GPU only
        torch.cuda.reset_peak_memory_stats()
    try:
        started = time.perf_counter()
        service = CharacterService.load(weights_dir)
        load_seconds = time.perf_counter() - started
    finally:
        service_log.removeHandler(setup_lines)
        service_log.setLevel(previous_level)
    setup_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    folder = Path(tempfile.mkdtemp(prefix="benchmark-inputs-"))
    face = reference_image(folder)
    robot = cartoon_reference(folder)
    image, mask = inpainting_inputs(folder, face)
    files = {
        "text-to-image": dict(character_reference_image=face, image=None, mask=None),
        "inpainting": dict(character_reference_image=face, image=image, mask=mask),
        "appearance": dict(character_reference_image=robot, image=None, mask=None),
    }
    cases = [(speed, path, files[path]) for speed in SPEEDS for path in PATHS]

    compiled_before = _dynamo_compilations()
    if cuda:  # GPU only
        torch.cuda.reset_peak_memory_stats()
    requests = time_requests(service, cases, runs)
    magic = time_magic_prompt(service.rewriter, runs)
    compiled_during = _dynamo_compilations() - compiled_before
    request_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    del service
    plain = time_plain_sdxl(weights_dir, runs)

    summaries = [times.summary() for times in requests]
    plain_by_speed = {row["speed"]: row for row in plain}
    ratios = [
        {
            "speed": row["speed"],
            "path": row["path"],
            "ours_pipeline_p50_s": row["pipeline_p50_s"],
            "plain_p50_s": plain_by_speed[row["speed"]]["p50_s"],
            "ratio": row["pipeline_p50_s"] / plain_by_speed[row["speed"]]["p50_s"],
            "ms_per_step_ratio": (
                row["ms_per_step"] / plain_by_speed[row["speed"]]["ms_per_step"]
                if row["ms_per_step"] and plain_by_speed[row["speed"]]["ms_per_step"]
                else None
            ),
        }
        for row in summaries
    ]
    return {
        "profile": "random",
        "size": size.name,
        "smoke": smoke,
        "steps_per_speed": {name: speed.num_inference_steps for name, speed in SPEEDS.items()},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} torch threads)",
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "resolution": SIZE,
        "runs": runs,
        "weights_dir": str(weights_dir),
        "setup": {
            "write_seconds": write_seconds,
            "load_seconds": load_seconds,
            "split": setup_lines.last,
            "peak_gpu_gib": setup_peak,
        },
        "requests": summaries,
        "plain_sdxl": plain,
        "ratios": ratios,
        "magic_prompt": magic,
        "peak_gpu_gib": request_peak,
        "dynamo_compilations_during_requests": compiled_during,
    }


def _gib(value: float | None) -> str:
    return "- (no GPU)" if value is None else f"{value:.1f} GiB"


def random_table(report: dict) -> list[str]:
    setup = report["setup"]
    peak = report["peak_gpu_gib"]
    lines = [
        f"Measured on {report['device']} ({report['dtype']}), random weights of the {report['size']} "
        f"architecture, {report['resolution']}, {report['runs']} run(s) per row, {report['date']}",
        "",
        f"Setup (CharacterService.load, warm-up included): {setup['load_seconds']:.1f} s ({setup['split']}); "
        f"writing the random weights: {setup['write_seconds']:.1f} s.",
        "",
        "| speed | path | steps | first s | p50 s | p90 s | ms/step | " + " | ".join(STAGE_ORDER) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(STAGE_ORDER),
    ]
    for row in report["requests"]:
        stages = row["stages_median_s"]
        step = f"{row['ms_per_step']:.1f}" if row["ms_per_step"] is not None else "-"
        cells = " | ".join(f"{stages[stage]:.3f}" if stage in stages else "-" for stage in STAGE_ORDER)
        lines.append(
            f"| {row['speed']} | {row['path']} | {row['steps']} | {row['first_s']:.3f} | {row['p50_s']:.3f} "
            f"| {row['p90_s']:.3f} | {step} | {cells} |"
        )
    lines += [
        "",
        "Plain diffusers SDXL (same files, no adapters), text to image, and ours/plain (ours: the denoise "
        "and decode stages, the part plain diffusers does)",
        "",
        "| speed | path | plain p50 s | plain p90 s | plain ms/step | ours s | ours/plain "
        "| ms/step ours/plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    plain = {row["speed"]: row for row in report["plain_sdxl"]}
    for row in report["ratios"]:
        base = plain[row["speed"]]
        step = f"{base['ms_per_step']:.1f}" if base["ms_per_step"] is not None else "-"
        step_ratio = f"{row['ms_per_step_ratio']:.2f}" if row["ms_per_step_ratio"] is not None else "-"
        lines.append(
            f"| {row['speed']} | {row['path']} | {base['p50_s']:.3f} | {base['p90_s']:.3f} | {step} "
            f"| {row['ours_pipeline_p50_s']:.3f} | {row['ratio']:.2f} | {step_ratio} |"
        )
    magic = report["magic_prompt"]
    lines += [
        "",
        f"Magic prompt rewrite ({magic['model']}, static cache: {magic['static_cache']}), new tokens "
        f"{sorted(set(magic['new_tokens']))}: p50 {magic['p50_s']:.3f} s, p90 {magic['p90_s']:.3f} s.",
        f"Peak GPU memory: {_gib(peak)} during the requests; {_gib(setup['peak_gpu_gib'])} in setup "
        f"(target: within a {GPU_MEMORY_GIB:.0f} GiB GPU).",
        f"torch.compile (dynamo) compilations during the timed requests: "
        f"{report['dynamo_compilations_during_requests']} (should be 0).",
    ]
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("tiny", "production", "random"), required=True)
    parser.add_argument(
        "--weights-dir",
        type=Path,
        help="default: a fresh tiny profile, ./weights, or (random) a fresh folder; random reuses a folder "
        "it wrote before",
    )
    parser.add_argument("--runs", type=int, help="requests per row (tiny: 5; random: 5, --smoke: 1)")
    parser.add_argument("--quick", action="store_true", help="tiny, CI: Turbo only, two runs, one load")
    parser.add_argument("--smoke", action="store_true", help="random, CI: the tiny sizes on any device")
    parser.add_argument("--json", type=Path, help="random: also write the report as JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.smoke and args.profile != "random":
        parser.error("--smoke goes with --profile random")
    if args.json and args.profile != "random":
        parser.error("--json goes with --profile random")

    if args.profile == "random":
        runs = args.runs or (1 if args.smoke else RANDOM_RUNS)
        with smoke_schedules() if args.smoke else contextlib.nullcontext():
            command = "python scripts/benchmark.py " + shlex.join(sys.argv[1:] if argv is None else argv)
            report = random_profile(args.weights_dir, args.smoke, runs, command)
        lines = random_table(report)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        print("\n".join(lines))
        return lines

    lines = flops_table({name: request_flops(real_size_character(), name, s) for name, s in SPEEDS.items()})
    lines += [""] + memory_table() + [""]
    if args.profile == "tiny":
        weights_dir = args.weights_dir
        if weights_dir is None:
            from devtools.profiles.tiny import build_tiny_profile

            weights_dir = Path(tempfile.mkdtemp(prefix="tiny-weights-"))
            build_tiny_profile(weights_dir)
        speeds, runs, loads = (["Turbo"], 2, 1) if args.quick else (list(SPEEDS), args.runs or 5, 3)
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
