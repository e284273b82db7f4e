"""The rendering speeds: one test per row of the schedule table, the Turbo LoRA, and speed switching.

Switching speed between requests must reload nothing and leave nothing behind: alternating speeds on
one pipeline gives exactly the images of fresh pipelines.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, StableDiffusionXLPipeline
from safetensors.torch import load_file

from devtools.counting import settings_for
from devtools.profiles.checkpoint_layouts import lightning_lora_shapes, lightning_lora_targets
from devtools.profiles.tiny.sdxl import tiny_unet
from model.generation.pipeline import FACEID_LORA_ADAPTER, CharacterPipeline
from model.generation.settings import FaceCondition
from model.generation.speeds import SPEEDS, TURBO_LORA_ADAPTER
from model.weights.layout import WeightsLayout

# The expected table, written out: a change to a speed must be made here too, on purpose.
EXPECTED = {
    "Turbo": dict(
        scheduler=EulerDiscreteScheduler,
        config={"timestep_spacing": "trailing"},
        steps=8,
        guidance=0.0,
        evaluations=8,
        loras={FACEID_LORA_ADAPTER: 1.0, TURBO_LORA_ADAPTER: 1.0},
    ),
    "Default": dict(
        scheduler=DPMSolverMultistepScheduler,
        config={"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
        steps=28,
        guidance=6.0,
        evaluations=56,
        loras={FACEID_LORA_ADAPTER: 1.0},
    ),
    "Quality": dict(
        scheduler=DPMSolverMultistepScheduler,
        config={"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
        steps=45,
        guidance=6.5,
        evaluations=90,
        loras={FACEID_LORA_ADAPTER: 1.0},
    ),
}
# Small images keep the 28- and 45-step schedules fast on the tiny profile; the schedule is the same.
SIZE = 256


def load(layout: WeightsLayout) -> CharacterPipeline:
    return CharacterPipeline.load(layout, torch.device("cpu"), torch.float32, identity_adapter="faceid")


def generate(pipeline: CharacterPipeline, identity, speed: str, seed: int = 7) -> np.ndarray:
    settings = dataclasses.replace(
        settings_for(SPEEDS[speed], SIZE, SIZE), seed=seed, face=FaceCondition(*identity)
    )
    return np.asarray(pipeline.generate(settings))


def test_the_table_has_exactly_the_contract_speeds():
    assert list(SPEEDS) == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_speed_row(pipeline, identity, name):
    speed, expected = SPEEDS[name], EXPECTED[name]
    assert speed.num_inference_steps == expected["steps"]
    assert speed.guidance_scale == expected["guidance"]
    assert speed.denoiser_evaluations == expected["evaluations"]
    # FaceID Plus v2 at its authors' scales on every speed.
    assert (speed.adapters.ip_adapter, speed.adapters.faceid_lora, speed.adapters.face_structure) == (
        1.0,
        1.0,
        1.0,
    )

    face = FaceCondition(*identity)
    pipe, inputs = pipeline.prepare(dataclasses.replace(settings_for(speed, SIZE, SIZE), face=face))
    scheduler = pipe.scheduler
    assert type(scheduler) is expected["scheduler"]
    for key, value in expected["config"].items():
        assert scheduler.config[key] == value, key
    # The speed's solver on the model's own noise schedule.
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert inputs["num_inference_steps"] == expected["steps"]
    assert inputs["guidance_scale"] == expected["guidance"]
    # The speed's LoRAs, merged into the UNet's weights at their weights.
    assert pipeline.loras.merged == expected["loras"]


def test_turbo_is_a_fifth_of_default_in_denoiser_evaluations_and_quality_more():
    evaluations = {name: speed.denoiser_evaluations for name, speed in SPEEDS.items()}
    assert evaluations["Turbo"] * 5 <= evaluations["Default"] < evaluations["Quality"]


def test_tiny_turbo_lora_has_the_real_key_names_and_adapts_every_target(tiny_layout, pipeline):
    with torch.device("meta"):
        unet = tiny_unet()
    keys = set(load_file(tiny_layout.turbo_lora_file))
    assert keys == set(lightning_lora_shapes(unet))
    assert all(key.startswith("lora_unet_") for key in keys)
    assert pipeline.loras.layer_count(TURBO_LORA_ADAPTER) == len(lightning_lora_targets(unet))


def test_turbo_lora_changes_the_image(pipeline, identity):
    settings = dataclasses.replace(settings_for(SPEEDS["Turbo"], SIZE, SIZE), face=FaceCondition(*identity))
    with_lora = np.asarray(pipeline.generate(settings))
    without = np.asarray(pipeline.generate(dataclasses.replace(settings, turbo_lora_scale=0.0)))
    assert not np.array_equal(with_lora, without)


def test_alternating_speeds_gives_the_images_of_fresh_pipelines_without_reloading(
    tiny_layout, pipeline, identity, monkeypatch
):
    fresh = {name: generate(load(tiny_layout), identity, name) for name in SPEEDS}

    def no_reload(*args, **kwargs):
        raise AssertionError("switching speed must not load weights")

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", no_reload)
    monkeypatch.setattr(StableDiffusionXLPipeline, "load_lora_into_unet", no_reload)
    monkeypatch.setattr(StableDiffusionXLPipeline, "load_ip_adapter", no_reload)
    unet = pipeline.text_to_image.unet
    weights = {name: parameter.data_ptr() for name, parameter in unet.named_parameters()}
    for name in ["Turbo", "Default", "Turbo", "Quality", "Default", "Turbo"]:
        assert np.array_equal(generate(pipeline, identity, name), fresh[name]), name
    assert pipeline.text_to_image.unet is unet
    assert {name: parameter.data_ptr() for name, parameter in unet.named_parameters()} == weights
