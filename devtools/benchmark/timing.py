"""The benchmark's one timing path, the same for every profile, and the plain-SDXL baseline beside it.

Owns `measure_service` (load the service as the Cog predictor's setup() does, then time its requests and its
magic prompt rewrite), the requests' input images, and `time_plain_sdxl` (diffusers' SDXL pipeline built by
the serving code's own loader and scheduler table, no adapters). A profile only chooses a Plan: the weights
folder, the speeds, the runs per row and max_steps. The tables that print the result are in tables.py.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.generation.speeds import SPEEDS
from model.timing import stage_seconds

SIZE = "1024x1024"
PROMPT = "a close up photo of a woman in a fashion magazine photoshoot"
PATHS = ("text-to-image", "inpainting", "appearance")
# Stages that run no model forward pass: the per-request overhead the performance budget limits.
OVERHEAD_STAGES = ("read_inputs", "face_analysis", "composite", "identity_score", "encode_output")
MAGIC_PROMPT_TOKENS = 90  # the measurement: a 90-token rewrite


@dataclass(frozen=True)
class Plan:
    """What a profile measures; everything else is the same for every profile."""

    weights_dir: Path
    speeds: tuple[str, ...]
    runs: int
    # CharacterService.load's cap on every speed's denoising steps (the smoke run); None: the full schedules.
    max_steps: int | None = None

    def steps(self, speed: str) -> int:
        return SPEEDS[speed].schedule(self.max_steps)["num_inference_steps"]


@dataclass
class RequestTimes:
    """The runs of one (speed, path): wall seconds, stage laps and the times of the denoising steps."""

    speed: str
    path: str
    wall: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    steps: int = 0

    def summary(self) -> dict:
        stages = dict.fromkeys(stage for run in self.stages for stage in run)  # the service's lap order
        pipeline = [run.get("denoise", 0.0) + run.get("decode", 0.0) for run in self.stages]
        outside = [sum(run.get(stage, 0.0) for stage in OVERHEAD_STAGES) for run in self.stages]
        return {
            "speed": self.speed,
            "path": self.path,
            "runs": len(self.wall),
            "first_s": self.wall[0],
            "p50_s": quantile(self.wall, 0.5),
            "p90_s": quantile(self.wall, 0.9),
            "pipeline_p50_s": quantile(pipeline, 0.5),
            "outside_models_s": quantile(outside, 0.5),
            "steps": self.steps,
            "ms_per_step": statistics.median(self.step_ms) if self.step_ms else None,
            "stages_median_s": {
                stage: statistics.median(run.get(stage, 0.0) for run in self.stages) for stage in stages
            },
        }


def measure_service(plan: Plan) -> dict:
    """Load the service from plan.weights_dir (CharacterService.load, warm-up included on CUDA), run every
    speed on every path plan.runs times, then time its magic prompt rewrite; the measured part of the report.
    """
    from model.service import CharacterService

    cuda = torch.cuda.is_available()
    gc.collect()  # e.g. a profile writer's modules: not part of setup's peak memory
    if cuda:  # GPU only
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    service = CharacterService.load(plan.weights_dir, max_steps=plan.max_steps)
    load_seconds = time.perf_counter() - started
    setup_peak = _peak_gib()

    compiled_before = _dynamo_compilations()
    if cuda:  # GPU only
        torch.cuda.reset_peak_memory_stats()
    files = request_files(Path(tempfile.mkdtemp(prefix="benchmark-inputs-")))
    requests = [
        time_request(service, speed, path, files[path], plan.runs) for speed in plan.speeds for path in PATHS
    ]
    magic = time_magic_prompt(service.rewriter, plan.runs)
    return {
        "runs": plan.runs,
        "max_steps": plan.max_steps,
        "steps_per_speed": {name: plan.steps(name) for name in plan.speeds},
        "weights_dir": str(plan.weights_dir),
        "setup": {"load_seconds": load_seconds, "split": service.setup_seconds, "peak_gpu_gib": setup_peak},
        "requests": [times.summary() for times in requests],
        "magic_prompt": magic,
        "peak_gpu_gib": _peak_gib(),
        "dynamo_compilations_during_requests": _dynamo_compilations() - compiled_before,
    }


def time_request(service, speed: str, path: str, files: dict, runs: int) -> RequestTimes:
    """Run one (speed, path) request `runs` times through service.generate; the first is timed like the
    others. Wall times need no final synchronisation: the service returns a PNG file, copied off the GPU."""
    from model.inputs.request import build_request

    request = build_request(
        prompt=PROMPT,
        seed=1,
        resolution=SIZE if path != "inpainting" else "None",
        style_type="Auto",
        aspect_ratio="1:1",
        rendering_speed=speed,
        magic_prompt_option="Off",  # the rewrite is timed on its own (time_magic_prompt)
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
    return times


def time_magic_prompt(rewriter, runs: int) -> dict:
    """The rewrite forced to MAGIC_PROMPT_TOKENS new tokens at most (the random profile's model has no end
    token), with no deadline: a rewrite cut short would time fewer tokens. Random weights write noise, which
    the guard rails reject; that is timed like any other rewrite, as the server would spend it, and the
    reasons are reported."""
    from model.prompting.guard_rails import RewriteError

    settings = rewriter.settings
    rewriter.settings = dataclasses.replace(
        settings, max_new_tokens=MAGIC_PROMPT_TOKENS, timeout_seconds=math.inf
    )
    seconds, tokens, rejected = [], [], set()
    try:
        for seed in range(runs):
            _synchronize()
            started = time.perf_counter()
            try:
                rewriter.rewrite("a woman with a red umbrella in Paris", seed)
            except RewriteError as error:
                rejected.add(str(error))
            seconds.append(time.perf_counter() - started)
            tokens.append(rewriter.last_new_tokens)
    finally:
        rewriter.settings = settings
    return {
        "model": rewriter.name,
        "runs": runs,
        "new_tokens": tokens,
        "static_cache": rewriter.static_cache is not None,
        "rejected_by_the_guard_rails": sorted(rejected),
        "p50_s": quantile(seconds, 0.5),
        "p90_s": quantile(seconds, 0.9),
    }


def time_plain_sdxl(plan: Plan) -> list[dict]:
    """Plain diffusers SDXL from the same files (load_sdxl without the image encoder: no adapters, no LoRA),
    each speed's schedule as the service runs it (build_scheduler, plan.max_steps), text to image.

    On CUDA one untimed call per speed comes first (cuDNN and allocator warm-up): plain diffusers has no
    setup warm-up of its own.
    """
    from model.generation.pipeline import apply_gpu_settings, build_scheduler, load_sdxl
    from model.service import serving_device
    from model.weights.layout import WeightsLayout

    device, dtype = serving_device()
    pipe = load_sdxl(WeightsLayout(plan.weights_dir), device, dtype, image_encoder=False)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":  # GPU only: the settings CharacterPipeline.load gives ours
        apply_gpu_settings(pipe)
    config = pipe.scheduler.config
    warm_up = 1 if device.type == "cuda" else 0
    rows = []
    for name in plan.speeds:
        schedule = SPEEDS[name].schedule(plan.max_steps)
        wall, step_ms = [], []
        for run in range(plan.runs + warm_up):
            pipe.scheduler = build_scheduler(schedule["scheduler"], config)
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
                num_inference_steps=schedule["num_inference_steps"],
                guidance_scale=schedule["guidance_scale"],
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
                "runs": plan.runs,
                "steps": len(step_times),
                "p50_s": quantile(wall, 0.5),
                "p90_s": quantile(wall, 0.9),
                "ms_per_step": statistics.median(step_ms) if step_ms else None,
            }
        )
    return rows


def ratios(requests: list[dict], plain: list[dict]) -> list[dict]:
    """Ours/plain per (speed, path): our denoise and decode stages, the part plain diffusers does."""
    plain_by_speed = {row["speed"]: row for row in plain}
    rows = []
    for row in requests:
        base = plain_by_speed[row["speed"]]
        step_ratio = (
            row["ms_per_step"] / base["ms_per_step"] if row["ms_per_step"] and base["ms_per_step"] else None
        )
        rows.append(
            {
                "speed": row["speed"],
                "path": row["path"],
                "ours_pipeline_p50_s": row["pipeline_p50_s"],
                "plain_p50_s": base["p50_s"],
                "ratio": row["pipeline_p50_s"] / base["p50_s"],
                "ms_per_step_ratio": step_ratio,
            }
        )
    return rows


# ---------------------------------------------------------------- the requests' inputs


def request_files(folder: Path) -> dict[str, dict[str, Path | None]]:
    """The file inputs of each path, written into `folder`."""
    face, robot = reference_image(folder), cartoon_reference(folder)
    image, mask = inpainting_inputs(folder, face)
    return {
        "text-to-image": dict(character_reference_image=face, image=None, mask=None),
        "inpainting": dict(character_reference_image=face, image=image, mask=mask),
        "appearance": dict(character_reference_image=robot, image=None, mask=None),
    }


def reference_image(folder: Path) -> Path:
    """NASA's public-domain astronaut portrait, shipped with scikit-image: a real face, no download."""
    from PIL import Image
    from skimage import data

    path = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


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


# ---------------------------------------------------------------- helpers


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (statistics.quantiles needs two values; one run is its own p90)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _synchronize() -> None:
    if torch.cuda.is_available():  # GPU only: the CPU runs synchronously
        torch.cuda.synchronize()


def _peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _dynamo_compilations() -> int:
    """Frames dynamo has compiled so far (first compilations and recompilations alike): a request that
    compiles anything raises it."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])
