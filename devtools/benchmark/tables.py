"""The benchmark's printed tables: the counted ones (FLOPs per speed, memory budget) and the measured one.

Owns formatting only: `measured_table` renders a report of any profile (timing.py's measurement plus the
header fields that devtools/benchmark/__init__.py adds), the same rows for every profile.
"""

from __future__ import annotations

from devtools.benchmark.timing import OVERHEAD_STAGES, SIZE
from devtools.counting import ACTIVATION_RESERVE_GIB, GPU_MEMORY_GIB, RequestFlops, fits_gpu, memory_budget
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


def measured_table(report: dict) -> list[str]:
    """Setup, each (speed, path) row, plain diffusers and ours/plain, the magic prompt, memory, compiles."""
    setup = report["setup"]
    split = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in setup["split"].items())
    budget = SETUP_BUDGET_SECONDS["cuda" if report["peak_gpu_gib"] is not None else "cpu"]
    weights = WEIGHTS.get(report["profile"], f"random weights of the {report['size']} architecture")
    steps = f", at most {report['max_steps']} steps" if report["max_steps"] is not None else ""
    stages = sorted({stage for row in report["requests"] for stage in row["stages_median_s"]}, key=_order)
    lines = [
        f"Measured on {report['device']} ({report['dtype']}), {weights}, {report['resolution']}, "
        f"{report['runs']} run(s) per row{steps}, {report['date']}",
        "",
        f"Setup (CharacterService.load, warm-up included on CUDA): {setup['load_seconds']:.1f} s, budget "
        f"{budget:.0f} s (seconds: {split}); writing the weights: {setup['write_seconds']:.1f} s.",
        "",
        "| speed | path | steps | first s | p50 s | p90 s | ms/step | "
        + " | ".join(stages)
        + " | outside the models |",
        "|---|---|---|---|---|---|---|" + "---|" * (len(stages) + 1),
    ]
    for row in report["requests"]:
        medians = row["stages_median_s"]
        cells = " | ".join(f"{medians[stage]:.3f}" if stage in medians else "-" for stage in stages)
        outside = row["outside_models_s"]
        within = "within" if outside < OVERHEAD_BUDGET_SECONDS else "OVER"
        lines.append(
            f"| {row['speed']} | {row['path']} | {row['steps']} | {row['first_s']:.3f} | {row['p50_s']:.3f} "
            f"| {row['p90_s']:.3f} | {_number(row['ms_per_step'])} | {cells} "
            f"| {outside:.3f} ({within} {OVERHEAD_BUDGET_SECONDS * 1000:.0f} ms) |"
        )
    lines += [
        "",
        "Stages: read_inputs (image decoding), face_analysis (SCRFD + ArcFace on the reference), prompt "
        "(the style; the requests run with magic_prompt_option=Off, the rewrite is timed below), denoise "
        "(text and image encoders, UNet loop), decode (VAE and conversion to PIL), composite (inpainting "
        "only), identity_score (face analysis of the output), safety_check, encode_output (PNG). Outside "
        "the models: " + ", ".join(OVERHEAD_STAGES) + ".",
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
        lines.append(
            f"| {row['speed']} | {row['path']} | {base['p50_s']:.3f} | {base['p90_s']:.3f} "
            f"| {_number(base['ms_per_step'])} | {row['ours_pipeline_p50_s']:.3f} | {row['ratio']:.2f} "
            f"| {_number(row['ms_per_step_ratio'], '.2f')} |"
        )
    magic = report["magic_prompt"]
    lines += [
        "",
        f"Magic prompt rewrite ({magic['model']}, static cache: {magic['static_cache']}), new tokens "
        f"{sorted(set(magic['new_tokens']))}: p50 {magic['p50_s']:.3f} s, p90 {magic['p90_s']:.3f} s.",
        f"Peak GPU memory: {_gib(report['peak_gpu_gib'])} during the requests; "
        f"{_gib(setup['peak_gpu_gib'])} in setup (target: within a {GPU_MEMORY_GIB:.0f} GiB GPU).",
        f"torch.compile (dynamo) compilations during the timed requests: "
        f"{report['dynamo_compilations_during_requests']} (should be 0).",
        f"Ideogram Character on Replicate: {IDEOGRAM_CHARACTER_SECONDS} s per prediction.",
    ]
    return lines


def _order(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _number(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _gib(value: float | None) -> str:
    return "- (no GPU)" if value is None else f"{value:.1f} GiB"
