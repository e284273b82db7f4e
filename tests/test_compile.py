"""Whole-UNet compilation at setup: after CharacterPipeline.warm_up no request compiles, whatever its speed,
path, size, prompt length, adapter scales or LoRA set.

dynamo's own counters prove it. The backend is "eager": dynamo traces, guards and caches graphs exactly as
for inductor, without generating code (tests/test_compile_inductor.py runs inductor's CPU code on fewer
requests: its C++ build takes minutes on two cores).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch._dynamo.utils import counters

from model.generation.pipeline import CharacterPipeline
from model.generation.settings import FaceCondition, GenerationSettings, IDTokens
from model.generation.speeds import SPEEDS
from model.prompting.styles import styles

pytestmark = pytest.mark.slow

# At least 128 px a side: the tiny UNet's deepest level is the latent / 8, and a side of 1 token there would
# be a size dynamo specialises on (0/1 specialisation), unlike SDXL's deepest level (the latent / 4).
WARM_UP_SIZES = ((128, 128), (192, 256))


@pytest.fixture(scope="module", params=["pulid", "faceid"])
def compiled(tiny_layout, request) -> tuple[CharacterPipeline, object]:
    # Its own pipeline, read from the session's tiny folder: compiling it must not change the shared one.
    pipeline = CharacterPipeline.load(
        tiny_layout, torch.device("cpu"), torch.float32, identity_adapter=request.param
    )
    torch._dynamo.reset()
    pipeline.compile(backend="eager")
    return pipeline, pipeline.warm_up(sizes=WARM_UP_SIZES, steps=1)


def compiled_frames() -> dict[str, int]:
    return {"unique_graphs": counters["stats"]["unique_graphs"], "calls": counters["stats"]["calls_captured"]}


def test_warm_up_runs_every_speed_and_path_and_compiles(compiled):
    pipeline, warm_up = compiled
    # Two rounds (sizes) x three speeds x two paths x text-to-image and inpainting.
    assert warm_up.runs == 2 * len(SPEEDS) * 2 * 2
    assert warm_up.compiled and pipeline.compiled
    assert warm_up.graphs > 0
    print(f"warm-up: {warm_up}")


def request(
    pipeline: CharacterPipeline,
    speed: str,
    face: bool,
    style: str,
    size: tuple[int, int],
    prompt: str,
    inpaint: bool,
):
    rng = np.random.default_rng(7)
    embedding = rng.standard_normal(512).astype(np.float32)
    image = Image.fromarray(rng.integers(0, 256, (160, 120, 3), dtype=np.uint8), "RGB")
    scales = styles()[style].adapter_scales(SPEEDS[speed])
    if pipeline.identity_adapter == "pulid":
        tokens = torch.from_numpy(rng.standard_normal((1, 32, pipeline.id_token_width), np.float32))
        the_face = IDTokens(tokens=tokens, null=tokens * 0.5)
        scales = scales.for_pulid()
    else:
        the_face = FaceCondition(embedding / np.linalg.norm(embedding), image)
        scales = scales.for_faceid()
    if face:
        scales = scales.with_appearance(0.0)
    else:
        # Another appearance scale than the warm-up's (the speed's, then half of it).
        scales = scales.without_face().with_appearance(0.8 if style == "Fiction" else 0.45)
    width, height = size
    settings = GenerationSettings(
        prompt=prompt,
        negative_prompt="blurry, low quality",
        width=width,
        height=height,
        seed=3,
        **(SPEEDS[speed].schedule() | {"num_inference_steps": 2}),
        adapters=scales,
        face=the_face if face else None,
        appearance_image=None if face else image,
    )
    if inpaint:
        mask = Image.new("L", size, 0)
        mask.paste(255, (16, 16, width - 16, height - 16))
        settings = dataclasses.replace(settings, init_image=Image.new("RGB", size, "white"), mask_image=mask)
    return settings


def test_no_request_compiles_after_the_warm_up(compiled):
    pipeline, _ = compiled
    before = compiled_frames()
    # Sizes, prompt lengths, styles (other adapter scales and FaceID LoRA weights) that the warm-up
    # did not use, on every speed and path, text-to-image and inpainting.
    cases = [
        ("Turbo", True, "Fiction", (256, 192), "a knight", False),
        ("Default", False, "Realistic", (128, 256), "a knight " * 30, True),
        ("Quality", True, "Realistic", (192, 192), "a knight in a castle", True),
        ("Turbo", False, "Fiction", (128, 192), "a knight " * 12, True),
        ("Default", True, "Fiction", (256, 128), "a dragon", False),
        ("Quality", False, "Fiction", (256, 256), "a dragon", False),
    ]
    for case in cases:
        settings = request(pipeline, *case)
        image = pipeline.generate(settings)
        assert image.size == settings.init_image.size if settings.inpainting else case[3]
    assert compiled_frames() == before
