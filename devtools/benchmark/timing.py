"""The benchmark's one timing path, the same for every profile, and the plain-SDXL baseline beside it.

Owns `measure_service` (load the service as the Cog predictor's setup() does, then time its requests, its
magic prompt rewrite, and the same request before and after gc.freeze), the requests' input images, and
`time_plain_sdxl` (diffusers' SDXL text-to-image and inpainting pipelines built by the serving code's own
loader and scheduler table, no adapters: eagerly, and compiled as the server compiles its UNet when ours
is compiled). A profile only chooses a Plan: the weights folder, the speeds, the runs per row, max_steps
and the compile switch. The tables that print the result are in tables.py.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
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
MAGIC_PROMPT_TOKENS = 90  # a 90-token rewrite: the magic prompt's latency target is stated for it
# The paths plain diffusers has: ours' appearance path is text to image too.
PLAIN_PATHS = ("text-to-image", "inpainting")
PLAIN_NEGATIVE_PROMPT = "blurry, low quality"
# The request the collector table repeats before and after gc.freeze: the first speed, on this path.
COLLECTOR_PATH = "text-to-image"
GIB = 2**30

Progress = Callable[[str, object], None]


@dataclass(frozen=True)
class Plan:
    """What a profile measures; everything else is the same for every profile."""

    weights_dir: Path
    speeds: tuple[str, ...]
    runs: int
    # CharacterService.load's cap on every speed's denoising steps (the smoke run); None: the full schedules.
    max_steps: int | None = None
    # The service's UNet compilation (ServiceOptions.torch_compile): None leaves the server's own setting,
    # read from the environment as setup() reads it.
    compile: bool | None = None
    # Rewrites timed (None: `runs`).
    magic_prompt_runs: int | None = None
    # The same request before and after gc.freeze (time_collector_states): this many more requests each
    # (None: `runs`; 0: no collector table).
    collector_runs: int | None = None

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

    @property
    def untimed(self) -> list[float]:
        """Per run, the wall time in no stage lap: the collection and cleanup after the request."""
        return [max(0.0, wall - sum(run.values())) for wall, run in zip(self.wall, self.stages, strict=True)]

    @property
    def outside(self) -> list[float]:
        """Per run, the stages that run no model forward pass (OVERHEAD_STAGES)."""
        return [sum(run.get(stage, 0.0) for stage in OVERHEAD_STAGES) for run in self.stages]

    def summary(self) -> dict:
        stages = dict.fromkeys(stage for run in self.stages for stage in run)  # the service's lap order
        pipeline = [run.get("denoise", 0.0) + run.get("decode", 0.0) for run in self.stages]
        return {
            "speed": self.speed,
            "path": self.path,
            "runs": len(self.wall),
            "first_s": self.wall[0],
            "p50_s": quantile(self.wall, 0.5),
            "p90_s": quantile(self.wall, 0.9),
            "pipeline_p50_s": quantile(pipeline, 0.5),
            "outside_models_s": quantile(self.outside, 0.5),
            "untimed_s": quantile(self.untimed, 0.5),
            "steps": self.steps,
            "ms_per_step": statistics.median(self.step_ms) if self.step_ms else None,
            "stages_median_s": {
                stage: statistics.median(run.get(stage, 0.0) for run in self.stages) for stage in stages
            },
        }


def measure_service(plan: Plan, progress: Progress | None = None) -> dict:
    """Load the service from plan.weights_dir (CharacterService.load, warm-up included on CUDA), run every
    speed on every path plan.runs times, time its magic prompt rewrite, then (unless plan.collector_runs is
    0) the first speed's text-to-image request before and after gc.freeze; the measured part of the report.

    progress(key, value), when given, receives each part as soon as it is measured (the benchmark writes
    its JSON as it goes, so that a run cut short by a time limit keeps what it measured).
    """
    from model.options import ServiceOptions
    from model.service import CharacterService

    progress = progress or (lambda key, value: None)
    cuda = torch.cuda.is_available()
    options = ServiceOptions.from_environment()
    if plan.compile is not None:
        options = dataclasses.replace(options, torch_compile=plan.compile)
    gc.collect()  # e.g. a profile writer's modules: not part of setup's peak memory
    if cuda:  # GPU only
        torch.cuda.init()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    memory_before = gpu_memory()
    counts_before = dynamo_counts()
    started = time.perf_counter()
    service = CharacterService.load(plan.weights_dir, options=options, max_steps=plan.max_steps)
    load_seconds = time.perf_counter() - started
    setup = {
        "load_seconds": load_seconds,
        "split": service.setup_seconds,
        "peak_gpu_gib": _peak_gib(),
        "collector_frozen_objects": gc.get_freeze_count(),
    }
    compile_state = {
        "requested": plan.compile,
        "torch_compile_option": options.torch_compile,
        "unet_compiled": bool(getattr(service.pipeline, "compiled", False)),
        "setup": _count_delta(counts_before, dynamo_counts()),
    }
    progress("setup", setup)
    progress("compile", compile_state)

    counts = dynamo_counts()
    if cuda:  # GPU only
        torch.cuda.reset_peak_memory_stats()
    files = request_files(Path(tempfile.mkdtemp(prefix="benchmark-inputs-")))
    requests = []
    for speed in plan.speeds:
        for path in PATHS:
            requests.append(time_request(service, speed, path, files[path], plan.runs))
            progress("requests", [times.summary() for times in requests])
    compile_state["requests"] = _count_delta(counts, dynamo_counts())
    memory = memory_report(service, memory_before)
    progress("memory", memory)
    magic = time_magic_prompt(service.rewriter, plan.magic_prompt_runs or plan.runs)
    progress("magic_prompt", magic)
    collector = None
    collector_runs = plan.runs if plan.collector_runs is None else plan.collector_runs
    if collector_runs:
        speed = plan.speeds[0]
        collector = time_collector_states(service, speed, files[COLLECTOR_PATH], collector_runs)
        progress("collector", collector)
    return {
        "runs": plan.runs,
        "max_steps": plan.max_steps,
        "steps_per_speed": {name: plan.steps(name) for name in plan.speeds},
        "weights_dir": str(plan.weights_dir),
        "setup": setup,
        "compile": compile_state,
        "face_analysis_provider": getattr(service.faces, "provider", None),
        "requests": [times.summary() for times in requests],
        "magic_prompt": magic,
        "collector": collector,
        "memory": memory,
        "peak_gpu_gib": memory["peak_allocated_gib"],
        "dynamo_compilations_during_requests": compile_state["requests"]["graphs"],
    }


def time_collector_states(service, speed: str, files: dict, runs: int) -> list[dict]:
    """The same request (`speed`, text to image) `runs` times with every object tracked by Python's
    garbage collector (gc.unfreeze), then after freeze_long_lived_objects (gc.freeze, what setup ends
    with so that the collection after each request scans only what the request made); per state the
    objects the collector tracks, the median wall time of one gc.collect() right after a request, and the
    request's medians: end to end, outside the models (OVERHEAD_STAGES plus the time in no stage, where
    the collection after the request is), and in no stage. Leaves the collector frozen, as setup does."""
    from model.memory import freeze_long_lived_objects

    rows = []
    for state in ("before gc.freeze", "after gc.freeze"):
        if state.startswith("before"):
            gc.unfreeze()
        else:
            freeze_long_lived_objects()
        collections = []

        def collect_after(times: RequestTimes, collections=collections) -> None:
            started = time.perf_counter()
            gc.collect()
            collections.append(time.perf_counter() - started)

        times = time_request(service, speed, COLLECTOR_PATH, files, runs, after_each=collect_after)
        outside = [a + b for a, b in zip(times.outside, times.untimed, strict=True)]
        rows.append(
            {
                "state": state,
                "speed": speed,
                "path": COLLECTOR_PATH,
                "runs": runs,
                "tracked_objects": len(gc.get_objects()),
                "frozen_objects": gc.get_freeze_count(),
                "gc_collect_ms": 1000 * statistics.median(collections),
                "p50_s": quantile(times.wall, 0.5),
                "outside_models_s": quantile(outside, 0.5),
                "untimed_s": quantile(times.untimed, 0.5),
            }
        )
    return rows


def time_request(
    service,
    speed: str,
    path: str,
    files: dict,
    runs: int,
    after_each: Callable[[RequestTimes], None] | None = None,
) -> RequestTimes:
    """Run one (speed, path) request `runs` times through service.generate; the first is timed like the
    others; after_each(times), when given, runs after each (untimed). Wall times need no final
    synchronisation: the service returns a PNG file, copied off the GPU."""
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
        if after_each is not None:
            after_each(times)
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


def time_plain_sdxl(
    plan: Plan,
    compiled: bool,
    progress: Progress | None = None,
    compile_backend: str | None = None,
    paths: tuple[str, ...] = PLAIN_PATHS,
) -> dict:
    """Plain diffusers SDXL from the same files (load_sdxl without the image encoder: no adapters, no LoRA),
    each speed's schedule as the service runs it (build_scheduler, plan.max_steps), text to image and
    inpainting (diffusers' inpainting pipeline on the same modules, ours' image and mask, strength 1),
    eagerly; then, when `compiled` (ours' UNet is), with the UNet compiled as the server compiles its own
    (model/generation/compilation.py's compile_unet, its defaults).

    Returns {"eager": rows, "compiled": rows or None, "compile": what the compiled rows ran with}; a row per
    (speed, path). One untimed call per row comes first where there is first-call work (CUDA's kernels and
    allocator, or the compilation): plain diffusers has no setup warm-up of its own. The dynamo counters
    say what was compiled in those calls and, expected 0, during the timed ones. compile_backend: another
    torch.compile backend for compile_unet (tests: "eager", which traces without generating code); the
    benchmark leaves the server's. paths: a subset of PLAIN_PATHS (tests).
    """
    from model.generation.pipeline import apply_gpu_settings, load_sdxl
    from model.service import serving_device
    from model.weights.layout import WeightsLayout

    progress = progress or (lambda key, value: None)
    device, dtype = serving_device()
    text_to_image = load_sdxl(WeightsLayout(plan.weights_dir), device, dtype, image_encoder=False)
    text_to_image.set_progress_bar_config(disable=True)
    if device.type == "cuda":  # GPU only: the settings CharacterPipeline.load gives ours
        apply_gpu_settings(text_to_image)
    inputs = _plain_inpainting_inputs()
    result: dict = {"eager": None, "compiled": None, "compile": None}
    warm_up = 1 if device.type == "cuda" else 0
    result["eager"] = _time_plain_rows(plan, text_to_image, inputs, warm_up, paths=paths)
    progress("plain_sdxl", result)
    if compiled:
        try:
            compile_unet = _compile_unet()
        except ImportError as error:  # a tree without the serving code's compile_unet: eager rows only
            result["compile"] = {"error": f"{type(error).__name__}: {error}"}
            progress("plain_sdxl", result)
            return result
        counts = dynamo_counts()
        started = time.perf_counter()
        backend = {} if compile_backend is None else {"backend": compile_backend}
        unet = compile_unet(text_to_image.unet, **backend)
        if unet is not None and unet is not text_to_image.unet:  # a compiled wrapper, not in place
            text_to_image.unet = unet
        rows = _time_plain_rows(plan, text_to_image, inputs, warm_up=1, compiled=True, paths=paths)
        result["compiled"] = rows
        result["compile"] = {
            "function": f"{compile_unet.__module__}.{compile_unet.__qualname__}",
            "backend": compile_backend or "the server's",
            "seconds_incl_warm_up_calls": time.perf_counter() - started,
            "counts": _count_delta(counts, dynamo_counts()),
            "during_timed_calls": sum(row["dynamo_graphs"] for row in rows),
        }
        progress("plain_sdxl", result)
    return result


def _compile_unet():
    """The serving code's compile_unet: imported here, where it is used, so that a tree without it can
    still run every eager measurement."""
    from model.generation.compilation import compile_unet

    return compile_unet


def _plain_inpainting_inputs() -> dict:
    """Ours' inpainting image and mask for diffusers' pipeline, whose mask is WHITE = repaint (ours'
    black = regenerate)."""
    from PIL import Image, ImageOps

    folder = Path(tempfile.mkdtemp(prefix="benchmark-plain-"))
    files = request_files(folder)["inpainting"]
    image = Image.open(files["image"]).convert("RGB")  # convert() reads the file before it is removed
    mask = ImageOps.invert(Image.open(files["mask"]).convert("L"))
    shutil.rmtree(folder, ignore_errors=True)
    return {"image": image, "mask_image": mask, "strength": 1.0}


def _time_plain_rows(
    plan: Plan,
    text_to_image,
    inpainting_inputs: dict,
    warm_up: int,
    compiled: bool = False,
    paths: tuple[str, ...] = PLAIN_PATHS,
) -> list[dict]:
    from diffusers import StableDiffusionXLInpaintPipeline

    from model.generation.pipeline import build_scheduler

    pipes = {
        "text-to-image": (text_to_image, {}),
        # The same modules (the UNet as it is now: eager, or compiled), diffusers' inpainting code.
        "inpainting": (StableDiffusionXLInpaintPipeline.from_pipe(text_to_image), inpainting_inputs),
    }
    config = text_to_image.scheduler.config
    rows = []
    for name in plan.speeds:
        schedule = SPEEDS[name].schedule(plan.max_steps)
        for path in paths:
            pipe, extra = pipes[path]
            pipe.set_progress_bar_config(disable=True)
            wall, step_ms = [], []
            counts = None
            for run in range(plan.runs + warm_up):
                if run == warm_up:
                    counts = dynamo_counts()
                pipe.scheduler = build_scheduler(schedule["scheduler"], config)
                step_times: list[float] = []

                def on_step(pipeline, step, timestep, tensors, step_times=step_times):
                    _synchronize()
                    step_times.append(time.perf_counter())
                    if compiled:
                        # A compiled UNet that replays CUDA graphs reuses its output buffers: this marks
                        # the next step's call as a new iteration (nothing happens without CUDA graphs).
                        torch.compiler.cudagraph_mark_step_begin()
                    return tensors

                if compiled:
                    torch.compiler.cudagraph_mark_step_begin()
                _synchronize()
                started = time.perf_counter()
                pipe(
                    prompt=PROMPT,
                    negative_prompt=PLAIN_NEGATIVE_PROMPT,
                    width=1024,
                    height=1024,
                    num_inference_steps=schedule["num_inference_steps"],
                    guidance_scale=schedule["guidance_scale"],
                    generator=torch.Generator("cpu").manual_seed(1),
                    callback_on_step_end=on_step,
                    **extra,
                )
                _synchronize()
                if run < warm_up:
                    continue
                wall.append(time.perf_counter() - started)
                if len(step_times) > 1:
                    step_ms.append(1000 * (step_times[-1] - step_times[0]) / (len(step_times) - 1))
            rows.append(
                {
                    "speed": name,
                    "path": path,
                    "runs": plan.runs,
                    "steps": len(step_times),
                    "p50_s": quantile(wall, 0.5),
                    "p90_s": quantile(wall, 0.9),
                    "ms_per_step": statistics.median(step_ms) if step_ms else None,
                    "dynamo_graphs": _count_delta(counts, dynamo_counts())["graphs"],
                }
            )
    return rows


def ratios(requests: list[dict], plain: dict, ours_compiled: bool) -> list[dict]:
    """Ours/plain per (speed, path): our denoise and decode stages (the part plain diffusers does) over
    plain diffusers on the same path (inpainting over inpainting; text to image and appearance over text
    to image), in ours' compile state: compiled plain when ours is compiled and it was measured."""
    state = "compiled" if ours_compiled and plain.get("compiled") else "eager"
    base_rows = {(row["speed"], row["path"]): row for row in plain[state]}
    rows = []
    for row in requests:
        plain_path = "inpainting" if row["path"] == "inpainting" else "text-to-image"
        base = base_rows[(row["speed"], plain_path)]
        step_ratio = (
            row["ms_per_step"] / base["ms_per_step"] if row["ms_per_step"] and base["ms_per_step"] else None
        )
        rows.append(
            {
                "speed": row["speed"],
                "path": row["path"],
                "plain_path": plain_path,
                "plain_state": state,
                "ours_pipeline_p50_s": row["pipeline_p50_s"],
                "plain_p50_s": base["p50_s"],
                "ratio": row["pipeline_p50_s"] / base["p50_s"],
                "ms_per_step_ratio": step_ratio,
            }
        )
    return rows


# ---------------------------------------------------------------- memory, compilation and the machine


def gpu_memory() -> dict | None:
    """The device's memory now (torch.cuda.mem_get_info: every process's, the CUDA context, onnxruntime's
    arena and the libraries' workspaces included) and torch's allocator; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()  # GPU only
    return {
        "total_gib": total / GIB,
        "device_used_gib": (total - free) / GIB,
        "torch_reserved_gib": torch.cuda.memory_reserved() / GIB,
    }


def memory_report(service, before: dict | None) -> dict:
    """Peak GPU memory of the requests in the configuration measured and in the other one.

    peak_allocated_gib: torch's tensors (max_memory_allocated since the requests began). Outside torch's
    allocator (the CUDA context, onnxruntime's CUDA arena, cuDNN/cuBLAS workspaces): the device's used
    memory minus torch's reserved pool, read after the requests (onnxruntime's arena never shrinks, so
    this is its largest). peak_process_gib = torch's peak reserved pool + that. The pristine copy of the
    LoRA-adapted weights (model/generation/merged_loras.py) is on the GPU on a GPU of 40 GiB or more and in
    host memory on a 24 GB one, allocated once at load and never freed: the 24 GB configuration's peak is
    this peak less the copy's bytes where it is on the GPU (derived; measured directly where it is on the
    host). None-valued fields without CUDA."""
    loras = service.pipeline.loras
    pristine_device = _pristine_device(loras)
    pristine_gib = loras.pristine_bytes / GIB
    on_gpu = pristine_device is not None and pristine_device.type == "cuda"
    # Where the copy is cannot be told (no adapted layer, or MergedLoras changed): no derived figure.
    known = pristine_device is not None
    report = {
        "pristine_copy_device": None if pristine_device is None else str(pristine_device),
        "pristine_copy_gib": pristine_gib,
        "peak_allocated_gib": _peak_gib(),
        "peak_reserved_gib": None,
        "outside_torch_gib": None,
        "peak_process_gib": None,
        "peak_24gb_configuration_gib": None,
        "peak_large_gpu_configuration_gib": None,
        "nvidia_smi_process_gib": None,
        "before_load": before,
        "after_requests": gpu_memory(),
    }
    after = report["after_requests"]
    if after is None:
        return report
    peak_reserved = torch.cuda.max_memory_reserved() / GIB  # GPU only
    outside = after["device_used_gib"] - after["torch_reserved_gib"]
    peak = peak_reserved + outside
    report |= {
        "peak_reserved_gib": peak_reserved,
        "outside_torch_gib": outside,
        "peak_process_gib": peak,
        "peak_24gb_configuration_gib": (peak - pristine_gib if on_gpu else peak) if known else None,
        "peak_large_gpu_configuration_gib": (peak if on_gpu else peak + pristine_gib) if known else None,
        "nvidia_smi_process_gib": _nvidia_smi_process_gib(),
    }
    return report


def _pristine_device(loras) -> torch.device | None:
    # MergedLoras keeps no public device for its copy; its first layer's copy tells (all share one).
    layers = getattr(loras, "_layers", None)
    return layers[0].pristine.device if layers else None


def _nvidia_smi_process_gib() -> float | None:
    """This process's GPU memory as the driver reports it (nvidia-smi), None where it cannot tell."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()) and used.strip().isdigit():
            return int(used) / 1024
    return None


def machine() -> dict:
    """The device, and on CUDA the GPU's name, memory, driver, CUDA runtime and cuDNN."""
    info: dict = {"cuda": torch.cuda.is_available(), "torch_threads": torch.get_num_threads()}
    if not info["cuda"]:
        return info
    properties = torch.cuda.get_device_properties(0)  # GPU only
    info |= {
        "gpu": properties.name,
        "gpu_memory_gib": properties.total_memory / GIB,
        "compute_capability": f"{properties.major}.{properties.minor}",
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": _nvidia_smi_query("driver_version"),
    }
    return info


def _nvidia_smi_query(field_name: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field_name}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def dynamo_counts() -> dict[str, int]:
    """torch.compile's (dynamo's) counters so far: graphs compiled (first compilations and recompilations
    alike: a request that compiles anything raises it), frames, calls captured into graphs, graph breaks.
    Graphs, not frames, are the count that holds for every way of compiling: a module compiled with
    nn.Module.compile counts no frame on this torch."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "frames": int(counters["frames"]["total"]),
        "captured_calls": int(counters["stats"]["calls_captured"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


def _count_delta(before: dict[str, int] | None, after: dict[str, int]) -> dict[str, int]:
    before = before or dict.fromkeys(after, 0)
    return {key: after[key] - before[key] for key in after}


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
