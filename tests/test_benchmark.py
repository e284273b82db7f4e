"""The performance budget: FLOP counting on meta weights, the speed and memory targets, the benchmark script.

The GPU measurement path is marked `gpu` and skipped without CUDA: it needs production weights on a GPU.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from devtools.counting import (
    META,
    count_flops,
    fits_gpu,
    memory_budget,
    real_size_modules,
    request_flops,
)
from devtools.profiles.checkpoint_layouts import LIGHTNING_LORA_RANK, lightning_lora_shapes
from model.generation.speeds import SPEEDS, TURBO_LORA_ADAPTER
from model.weights.layout import (
    PULID_ADAPTER_FILE,
    PULID_FACE_DETECTOR_FILE,
    PULID_FACE_RECOGNIZER_FILE,
    TURBO_LORA_FILE,
    WeightsLayout,
)
from model.weights.manifest import production_manifest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def flops(character):
    return {name: request_flops(character, name, speed) for name, speed in SPEEDS.items()}


def test_flop_counter_counts_exactly_on_meta_tensors():
    layer = torch.nn.Linear(1280, 5120, device=META, dtype=torch.float16)
    counter = count_flops(lambda: layer(torch.empty(2, 257, 1280, device=META, dtype=torch.float16)))
    assert counter.get_total_flops() == 2 * 2 * 257 * 1280 * 5120


def test_image_encoder_flops_match_its_parameter_count():
    # A transformer's matmuls cost 2 FLOPs per weight per token, plus attention scores (small at 257 tokens).
    encoder = real_size_modules()["image_encoder"]
    image = torch.empty(1, 3, 224, 224, device=META, dtype=torch.float16)
    counted = count_flops(lambda: encoder(image)).get_total_flops()
    layers = encoder.vision_model.encoder
    matmul_weights = sum(
        p.numel()
        for n, p in layers.named_parameters()
        if n.endswith(("proj.weight", "fc1.weight", "fc2.weight"))
    )
    assert 1.0 < counted / (2 * 257 * matmul_weights) < 1.05


@pytest.mark.slow
def test_turbo_costs_at_most_a_fifth_of_default_and_quality_more(flops):
    for name, speed in SPEEDS.items():
        assert flops[name].denoiser_evaluations == speed.denoiser_evaluations
        assert flops[name].vae_decode > 0 and flops[name].text_encoders > 0 and flops[name].image_encoder > 0
    assert flops["Turbo"].total <= flops["Default"].total / 5
    assert flops["Quality"].total > flops["Default"].total


def test_lightning_lora_attaches_to_all_788_real_modules(character):
    assert character.loras.layer_count(TURBO_LORA_ADAPTER) == 788
    assert character.loras.ranks(TURBO_LORA_ADAPTER) == {LIGHTNING_LORA_RANK}


def test_real_shape_lightning_lora_fills_the_published_file():
    shapes = lightning_lora_shapes(real_size_modules()["unet"])
    assert len(shapes) == 3 * 788
    tensor_bytes = 2 * sum(math.prod(shape) for shape in shapes.values())  # fp16; alphas are 0-d
    (published,) = [entry for entry in production_manifest().files if entry.path.endswith(TURBO_LORA_FILE)]
    # The rest is the safetensors JSON header: ~150 bytes per key. A wrong rank or module set would be
    # off by at least one LoRA matrix (64 x 320 x 2 = 40 kB), far outside these bounds.
    overhead = published.size - tensor_bytes
    assert 100 * len(shapes) < overhead < 200 * len(shapes)


@pytest.mark.parametrize(
    ("adapter", "loaded", "absent"),
    [
        ("pulid", ("PuLID", "EVA02", "BiSeNet", "antelopev2"), ("FaceID",)),
        ("faceid", ("FaceID",), ("PuLID",)),
    ],
)
def test_production_components_fit_a_24_gb_gpu_with_room_for_activations(adapter, loaded, absent):
    rows = memory_budget(identity_adapter=adapter)
    names = " ".join(row.name for row in rows)
    for component in ("unet", "vae", "text_encoder_2", "image_encoder", "Lightning", "buffalo_l", "safety"):
        assert component in names
    assert all(component in names for component in loaded)
    assert not any(component in names for component in absent)
    fits, left = fits_gpu(rows)
    assert fits and left > 0


# The top-level fields of the report, the same for every profile: one measurement (measure_service) makes it.
REPORT_FIELDS = {
    "profile",
    "size",
    "smoke",
    "date",
    "command",
    "device",
    "dtype",
    "versions",
    "resolution",
    "runs",
    "max_steps",
    "steps_per_speed",
    "weights_dir",
    "setup",
    "requests",
    "magic_prompt",
    "peak_gpu_gib",
    "dynamo_compilations_during_requests",
    "plain_sdxl",
    "ratios",
}


@pytest.mark.slow
def test_benchmark_quick_prints_the_table(tiny_weights, tmp_path, capsys):
    import json

    from devtools.benchmark import PATHS, main

    report_file = tmp_path / "tiny.json"
    lines = main(
        ["--profile", "tiny", "--quick", "--weights-dir", str(tiny_weights), "--json", str(report_file)]
    )
    text = "\n".join(lines)
    assert text == capsys.readouterr().out.strip()
    for speed in SPEEDS:
        assert f"| {speed} |" in text
    assert "fits a 24 GiB GPU" in text
    report = json.loads(report_file.read_text())
    assert set(report) == REPORT_FIELDS and report["profile"] == "tiny" and report["max_steps"] is None
    assert {(row["speed"], row["path"]) for row in report["requests"]} == {("Turbo", path) for path in PATHS}
    assert all(
        row["runs"] == 2 and row["steps"] == SPEEDS["Turbo"].num_inference_steps for row in report["requests"]
    )
    (turbo,) = [line for line in lines if line.startswith("| Turbo | text-to-image | 8 |")]
    # Everything outside the model forward passes: the budget is 300 ms per request (the table says
    # "within" or "OVER"; ~0.17 s here on 2 free cores). The CI cores are shared with other jobs, which
    # can double any wall time, so the test fails only beyond twice the budget.
    overhead = float(turbo.split("|")[-2].split()[0])
    assert overhead < 2 * 0.300, text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU only: needs CUDA and production weights")
def test_gpu_benchmark_measures_each_speed():
    weights = Path(os.environ.get("WEIGHTS_DIR", ROOT / "weights"))
    if not (weights / "manifest.json").is_file():
        pytest.skip(f"GPU only: production weights not found in {weights}")
    from devtools.benchmark import PATHS, main

    lines = main(["--profile", "production", "--weights-dir", str(weights)])
    for speed in SPEEDS:
        for path in PATHS:  # the request table and ours/plain
            assert sum(line.startswith(f"| {speed} | {path} |") for line in lines) == 2, (speed, path)


# --- --profile random: the serving path on random weights; on a CPU, the tiny sizes (--smoke)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One `--profile random --smoke --json` run for the tests below: its lines, what it printed, its JSON
    report, and what each CharacterService.load it made returned (setup_seconds, max_steps)."""
    import contextlib
    import io
    import json
    from types import SimpleNamespace

    from devtools.benchmark import main
    from model.service import CharacterService

    folder = tmp_path_factory.mktemp("smoke")
    loaded = []
    load = CharacterService.load.__func__

    def spy(cls, *args, **kwargs):
        service = load(cls, *args, **kwargs)
        loaded.append(SimpleNamespace(setup_seconds=dict(service.setup_seconds), max_steps=service.max_steps))
        return service

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(CharacterService, "load", classmethod(spy))
        lines = main(
            [
                "--profile",
                "random",
                "--smoke",
                "--weights-dir",
                str(folder / "w"),
                "--json",
                str(folder / "r.json"),
            ]
        )
    report = json.loads((folder / "r.json").read_text())
    return SimpleNamespace(
        lines=lines, printed=printed.getvalue(), report=report, loaded=loaded, weights=folder / "w"
    )


@pytest.mark.slow
def test_random_profile_smoke_reports_every_row_in_the_table_and_the_json(smoke_run):
    """The CPU smoke run of what a GPU runs at real size: the random profile written in the production
    layout, loaded by CharacterService.load, every speed on every path, plain diffusers, the magic prompt.
    About 50 s on 2 free cores (the tiny VAE decoding 1024x1024 is most of it)."""
    from devtools.benchmark import PATHS

    lines, report = smoke_run.lines, smoke_run.report
    text = "\n".join(lines)
    assert text == smoke_run.printed.strip()
    assert set(report) == REPORT_FIELDS
    assert report["profile"] == "random" and report["size"] == "tiny" and report["smoke"] is True
    assert report["command"].startswith("python scripts/benchmark.py --profile random --smoke")
    rows = {(row["speed"], row["path"]): row for row in report["requests"]}
    assert set(rows) == {(speed, path) for speed in SPEEDS for path in PATHS}
    for (speed, path), row in rows.items():
        assert sum(line.startswith(f"| {speed} | {path} |") for line in lines) == 2, (speed, path)
        assert row["runs"] == 1 and row["p50_s"] > 0 and row["p90_s"] >= row["p50_s"]
        assert row["steps"] == report["steps_per_speed"][speed] and row["ms_per_step"] > 0
        stages = row["stages_median_s"]
        assert {"read_inputs", "face_analysis", "denoise", "decode", "encode_output"} <= set(stages)
        assert ("composite" in stages) == (path == "inpainting")
    assert {row["speed"] for row in report["plain_sdxl"]} == set(SPEEDS)
    assert len(report["ratios"]) == len(rows) and all(r["ratio"] > 0 for r in report["ratios"])
    magic = report["magic_prompt"]
    assert magic["new_tokens"] == [90] and magic["p50_s"] > 0
    assert report["setup"]["load_seconds"] > 0
    assert report["dynamo_compilations_during_requests"] == 0
    assert "Magic prompt rewrite" in text and "compilations during the timed requests: 0" in text


@pytest.mark.slow
def test_random_profile_smoke_runs_max_steps_and_reports_the_services_setup_split(smoke_run):
    """--smoke caps the steps through CharacterService.load(max_steps=...), not by editing the speed table:
    every request (counted from the service's denoising_step metrics) and the plain-SDXL baseline ran
    SMOKE_STEPS steps, fewer than each speed's schedule; the setup split is the service's setup_seconds."""
    from devtools.benchmark import SMOKE_STEPS

    report = smoke_run.report
    (service,) = smoke_run.loaded
    assert service.max_steps == report["max_steps"] == SMOKE_STEPS
    for speed in SPEEDS.values():
        assert speed.num_inference_steps > SMOKE_STEPS  # the speed table itself is untouched
    assert report["steps_per_speed"] == dict.fromkeys(SPEEDS, SMOKE_STEPS)
    assert {row["steps"] for row in report["requests"]} == {SMOKE_STEPS}
    assert {row["steps"] for row in report["plain_sdxl"]} == {SMOKE_STEPS}
    split = report["setup"]["split"]
    assert list(split) == list(service.setup_seconds) and split == service.setup_seconds
    assert {"load_faces", "load_pipeline", "load_prompt_model"} <= set(split)
    setup_line = next(line for line in smoke_run.lines if line.startswith("Setup (CharacterService.load"))
    assert all(stage in setup_line for stage in split)


@pytest.mark.slow
def test_random_profile_holds_pulids_files_in_the_production_layout(smoke_run):
    from model.weights.manifest import load_manifest

    layout = WeightsLayout(smoke_run.weights)
    listed = {entry.path for entry in load_manifest(layout.manifest).files}
    pulid = [layout.pulid_adapter, layout.eva_clip, layout.face_parsing]
    pulid += [
        layout.pulid_face_analysis / name for name in (PULID_FACE_DETECTOR_FILE, PULID_FACE_RECOGNIZER_FILE)
    ]
    assert {path.relative_to(layout.root).as_posix() for path in pulid} <= listed


def test_the_real_size_pulid_adapter_has_the_published_files_tensors():
    """The random profile's pulid_v1.1.safetensors at real size, on meta: 312 fp16 tensors, the IDFormer's
    172 and [hidden, 2048] id_to_k/id_to_v for the real UNet's 70 cross-attentions, whose bytes fill the
    published file up to its JSON header (~110 bytes a tensor)."""
    from devtools.profiles.random import real_pulid_adapter

    state = real_pulid_adapter(real_size_modules()["unet"], META)
    assert len(state) == 312 and {tensor.dtype for tensor in state.values()} == {torch.float16}
    assert sum(key.startswith("id_adapter.") for key in state) == 172
    attention = {key: tuple(t.shape) for key, t in state.items() if key.startswith("id_adapter_attn_layers.")}
    assert len(attention) == 140
    assert {shape[1] for shape in attention.values()} == {2048}
    assert {shape[0] for shape in attention.values()} == {640, 1280}  # SDXL has no attention at 320
    indices = {int(key.split(".")[1]) for key in attention}
    assert indices == set(range(1, 140, 2))
    (published,) = [f for f in production_manifest().files if f.path.endswith(PULID_ADAPTER_FILE)]
    header = published.size - sum(2 * t.numel() for t in state.values())
    assert 50 * len(state) < header < 200 * len(state), header


def test_plan_steps_follow_max_steps():
    from devtools.benchmark import Plan

    capped, full = Plan(Path("w"), tuple(SPEEDS), 1, max_steps=2), Plan(Path("w"), tuple(SPEEDS), 1)
    for name, speed in SPEEDS.items():
        assert full.steps(name) == speed.num_inference_steps
        assert capped.steps(name) == min(2, speed.num_inference_steps)


def test_random_profile_at_real_size_needs_cuda_and_says_how_to_smoke_test():
    from devtools.benchmark import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real-size run would start")
    with pytest.raises(SystemExit, match="needs a CUDA GPU.*--smoke"):
        main(["--profile", "random"])


def test_missing_packages_are_named_with_their_pip_pins(monkeypatch):
    from devtools import packages

    monkeypatch.setitem(packages.REQUIRED_PACKAGES, "no_such_module_here", "no-such-package==1.0")
    assert packages.missing_packages() == ["no-such-package==1.0"]


def test_the_prompt_model_config_is_the_published_qwen25_15b():
    """specs/prompt-model/config.json was transcribed (no hub here): its parameters at 2 bytes (bf16)
    fill the published model.safetensors up to the JSON header, ~110 bytes per tensor. A wrong width,
    depth or head count is off by millions of bytes."""
    import json

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from devtools.profiles.random import PROMPT_MODEL_CONFIG

    config = Qwen2Config(**json.loads(PROMPT_MODEL_CONFIG.read_text()))
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())  # tied embeddings are counted once
    tensors = len(model.state_dict()) - 1  # the tied lm_head is not stored
    (published,) = [f for f in production_manifest().files if f.path == "prompt_model/model.safetensors"]
    header = published.size - 2 * parameters
    assert 50 * tensors < header < 200 * tensors, header
