"""The benchmark's printed tables: the counted ones (FLOPs per speed, memory budget) and the measured one.

Owns formatting only: `measured_table` renders a report of any profile (timing.py's measurement plus the
header fields that devtools/benchmark/__init__.py adds), the same rows for every profile; `collector_table`
the request before and after gc.freeze; `preflight_table` what differs from the pins.
"""

from __future__ import annotations

from devtools.benchmark.timing import OVERHEAD_STAGES, SIZE
from devtools.counting import ACTIVATION_RESERVE_GIB, GPU_MEMORY_GIB, RequestFlops, fits_gpu, memory_budget
from devtools.packages import Preflight
from model.generation.speeds import SPEEDS, Speed

OVERHEAD_BUDGET_SECONDS = 0.300
# setup() on a CPU (no warm-up there) and on a CUDA GPU with the warm-up.
SETUP_BUDGET_SECONDS = {"cpu": 15.0, "cuda": 120.0}
IDEOGRAM_CHARACTER_SECONDS = 14.5
STAGE_ORDER = (
    "read_inputs",
    "face_analysis",
    "prompt",
    "denoise",
    "decode",
    "composite",
    "identity_score",
    "safety_check",
    "encode_output",
)
WEIGHTS = {"tiny": "the tiny profile's weights", "production": "production weights"}


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


def preflight_table(checked: Preflight) -> list[str]:
    """What differs from the pins (devtools/packages.py), or one line saying nothing does."""
    return checked.table()


def measured_table(report: dict) -> list[str]:
    """Setup and compilation, each (speed, path) row, plain diffusers (eager, and compiled when ours is) and
    ours/plain, the magic prompt, memory in both GPU configurations, compiles during the requests."""
    setup = report["setup"]
    split = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in setup["split"].items())
    budget = SETUP_BUDGET_SECONDS["cuda" if report["peak_gpu_gib"] is not None else "cpu"]
    weights = WEIGHTS.get(report["profile"], f"random weights of the {report['size']} architecture")
    steps = f", at most {report['max_steps']} steps" if report["max_steps"] is not None else ""
    stages = sorted({stage for row in report["requests"] for stage in row["stages_median_s"]}, key=_order)
    compiled = report["compile"]
    lines = [
        f"Measured on {_machine(report)} ({report['dtype']}), {weights}, {report['resolution']}, "
        f"{report['runs']} run(s) per row{steps}, {report['date']}",
        "",
        f"Setup (CharacterService.load, warm-up included on CUDA): {setup['load_seconds']:.1f} s, budget "
        f"{budget:.0f} s (seconds: {split}); writing the weights: {setup['write_seconds']:.1f} s.",
        f"UNet compiled: {compiled['unet_compiled']} (torch_compile option {compiled['torch_compile_option']}"
        f"{'' if compiled['requested'] is None else ', set by --compile'}); dynamo in setup: "
        f"{_counts(compiled['setup'])}; during the requests: {_counts(compiled['requests'])}.",
        "",
        "| speed | path | steps | first s | p50 s | p90 s | ms/step | "
        + " | ".join(stages)
        + " | no stage | outside the models |",
        "|---|---|---|---|---|---|---|" + "---|" * (len(stages) + 2),
    ]
    for row in report["requests"]:
        medians = row["stages_median_s"]
        cells = " | ".join(f"{medians[stage]:.3f}" if stage in medians else "-" for stage in stages)
        outside = row["outside_models_s"]
        within = "within" if outside < OVERHEAD_BUDGET_SECONDS else "OVER"
        lines.append(
            f"| {row['speed']} | {row['path']} | {row['steps']} | {row['first_s']:.3f} | {row['p50_s']:.3f} "
            f"| {row['p90_s']:.3f} | {_number(row['ms_per_step'])} | {cells} | {row['untimed_s']:.3f} "
            f"| {outside:.3f} ({within} {OVERHEAD_BUDGET_SECONDS * 1000:.0f} ms) |"
        )
    lines += [
        "",
        "Stages: read_inputs (image decoding), face_analysis (SCRFD + ArcFace on the reference), prompt "
        "(the style; the requests run with magic_prompt_option=Off, the rewrite is timed below), denoise "
        "(text and image encoders, UNet loop), decode (VAE and conversion to PIL), composite (inpainting "
        "only), identity_score (face analysis of the output), safety_check, encode_output (PNG); no stage: "
        "the wall time in no lap (the collection and cleanup after the request). Outside the models: "
        + ", ".join(OVERHEAD_STAGES)
        + ".",
        "",
    ]
    lines += _plain_table(report)
    magic = report["magic_prompt"]
    lines += ["", *(_memory_lines(report))]
    lines += [
        f"Magic prompt rewrite ({magic['model']}, static cache: {magic['static_cache']}), new tokens "
        f"{sorted(set(magic['new_tokens']))}: p50 {magic['p50_s']:.3f} s, p90 {magic['p90_s']:.3f} s.",
        f"Face analysis ran on {report.get('face_analysis_provider') or 'an unknown provider'}.",
        f"torch.compile (dynamo) compilations during the timed requests: "
        f"{report['dynamo_compilations_during_requests']} (should be 0).",
        f"Ideogram Character on Replicate: {IDEOGRAM_CHARACTER_SECONDS} s per prediction.",
    ]
    return lines


def _plain_table(report: dict) -> list[str]:
    plain = report["plain_sdxl"]
    rows = {
        state: {(row["speed"], row["path"]): row for row in plain[state] or []}
        for state in ("eager", "compiled")
    }
    compiled = plain.get("compile") or {}
    if "error" in compiled:
        note = f"plain compiled: not measured ({compiled['error']}): ours/plain is over eager plain"
    elif plain["compiled"]:
        note = (
            f"plain compiled with {compiled['function']} (the server's way): "
            f"{compiled['seconds_incl_warm_up_calls']:.1f} s to compile and warm up, dynamo "
            f"{_counts(compiled['counts'])}, {compiled['during_timed_calls']} frames during the timed calls"
        )
    else:
        note = "ours is not compiled, so neither is plain"
    lines = [
        "Plain diffusers SDXL (same files, no adapters) and ours/plain: ours is the denoise and decode "
        "stages (the part plain diffusers does), over plain on the same path (inpainting over diffusers' "
        f"inpainting pipeline) in ours' compile state; {note}.",
        "",
        "| speed | path | plain path | plain eager p50 s | plain eager ms/step | plain compiled p50 s "
        "| plain compiled ms/step | ours s | ours/plain | ms/step ours/plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["ratios"]:
        key = (row["speed"], row["plain_path"])
        eager, comp = rows["eager"].get(key), rows["compiled"].get(key)
        lines.append(
            f"| {row['speed']} | {row['path']} | {row['plain_path']} | {_field(eager, 'p50_s', '.3f')} "
            f"| {_field(eager, 'ms_per_step')} | {_field(comp, 'p50_s', '.3f')} "
            f"| {_field(comp, 'ms_per_step')} "
            f"| {row['ours_pipeline_p50_s']:.3f} | {row['ratio']:.2f} ({row['plain_state']}) "
            f"| {_number(row['ms_per_step_ratio'], '.2f')} |"
        )
    return lines


def _memory_lines(report: dict) -> list[str]:
    memory, setup = report["memory"], report["setup"]
    if memory["peak_process_gib"] is None:
        return [f"Peak GPU memory: {_gib(None)}."]
    where = memory["pristine_copy_device"]
    measured = "large GPU" if where and where.startswith("cuda") else "24 GB"
    return [
        f"Peak GPU memory during the requests: {memory['peak_allocated_gib']:.2f} GiB of torch tensors, "
        f"{memory['peak_process_gib']:.2f} GiB for the process (torch's peak pool "
        f"{memory['peak_reserved_gib']:.2f} GiB + {memory['outside_torch_gib']:.2f} GiB outside torch: CUDA "
        "context, onnxruntime, cuDNN/cuBLAS workspaces; nvidia-smi: "
        f"{_gib(memory['nvidia_smi_process_gib'])}); "
        f"setup {_gib(setup['peak_gpu_gib'])} of tensors.",
        f"By configuration (the pristine LoRA copy, {memory['pristine_copy_gib']:.2f} GiB, was on {where}, "
        f"so the {measured} one is measured and the other derived by that copy's bytes): 24 GB "
        f"configuration (copy in host memory) {memory['peak_24gb_configuration_gib']:.2f} GiB, target within "
        f"{GPU_MEMORY_GIB:.0f} GiB; large GPU (copy on the GPU) "
        f"{memory['peak_large_gpu_configuration_gib']:.2f} GiB.",
    ]


def collector_table(report: dict) -> list[str]:
    """The same request before and after gc.freeze (timing.py's time_collector_states)."""
    rows = report["collector"]
    first = rows[0]
    lines = [
        f"Python's garbage collector: the {first['speed']} {first['path']} request, {first['runs']} run(s) "
        "each, with every object tracked and after gc.freeze (model/memory.py's freeze_long_lived_objects, "
        "what setup ends with); medians",
        "",
        "| collector | tracked objects | frozen objects | one gc.collect() ms | request p50 s "
        "| no stage s | outside the models s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['state']} | {row['tracked_objects']:,} | {row['frozen_objects']:,} "
            f"| {row['gc_collect_ms']:.2f} | {row['p50_s']:.3f} | {row['untimed_s']:.3f} "
            f"| {row['outside_models_s']:.3f} |"
        )
    return lines


def _machine(report: dict) -> str:
    info = report.get("machine") or {}
    if not info.get("cuda"):
        return report["device"]
    return (
        f"{info['gpu']} ({info['gpu_memory_gib']:.0f} GiB, driver {info['driver'] or 'unknown'}, CUDA "
        f"{info['cuda_runtime']}, cuDNN {info['cudnn']})"
    )


def _counts(counts: dict[str, int]) -> str:
    return f"{counts['graphs']} graphs, {counts['frames']} frames, {counts['graph_breaks']} graph breaks"


def _field(row: dict | None, key: str, spec: str = ".1f") -> str:
    return "-" if row is None else _number(row[key], spec)


def _order(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _number(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _gib(value: float | None) -> str:
    return "- (no GPU)" if value is None else f"{value:.1f} GiB"
