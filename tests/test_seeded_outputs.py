"""Seeded outputs of the tiny profile, pixel for pixel: a refactor that changes no behaviour keeps them.

The hashes are of the RGB bytes of the output PNG of CharacterService on the tiny profile, with one torch
thread (float sums depend on how work is split across threads). A change meant to alter outputs (a new
scheduler default, another noise order) updates them in the same commit and says why in its message.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from model.inputs.request import NO_RESOLUTION, build_request
from model.service import CharacterService, ServiceOptions

pytestmark = pytest.mark.slow

# Per identity adapter. FaceID's are those of the releases before PuLID became the default: its path is
# kept whole, pixel for pixel.
EXPECTED = {
    "faceid": {
        "text_to_image_default": "32e1b076db1541686ecb90efdcc4f84f2b6fb06d00871dcea8833303dce272ec",
        "text_to_image_turbo": "120577f98de96d5d24c84c29ac4875b6ce8182507ccc05f6369917bc97e1fa42",
        "inpainting_default": "4a70c364b442706a4ee675f5059b0fe682325432ea741c4f8ccec1a572c78664",
    },
    "pulid": {
        "text_to_image_default": "5c9ebf6f7adcae19928d5f6099ba9bd9295382de02efc5763d44b0a7fe75e0cb",
        "text_to_image_turbo": "5633a831b7190446611d9a32c0ca56b795beb71384377b98001c1d020de3ab2a",
        "inpainting_default": "6a0fb5dd22d8a82112e4263dfdb8ae8b36239e3a904b456af6f9e7a60c373984",
    },
}
PROMPT = "a woman reading in a cafe, watercolor"


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, portrait):
    from skimage import data

    folder = tmp_path_factory.mktemp("seeded-inputs")
    portrait.save(folder / "reference.png")
    Image.fromarray(data.coffee()).save(folder / "image.png")  # 400 x 600
    mask = np.full((400, 600), 255, dtype=np.uint8)
    mask[100:300, 150:450] = 0  # black: regenerated
    Image.fromarray(mask).save(folder / "mask.png")
    return folder


def output_hash(service: CharacterService, inputs, speed: str, inpaint: bool) -> str:
    request = build_request(
        prompt=PROMPT,
        character_reference_image=inputs / "reference.png",
        image=inputs / "image.png" if inpaint else None,
        mask=inputs / "mask.png" if inpaint else None,
        seed=42,
        resolution=NO_RESOLUTION,
        style_type="Auto",
        aspect_ratio="1:1",
        rendering_speed=speed,
        magic_prompt_option="Off",
    )
    with Image.open(service.generate(request)) as image:
        return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


@pytest.mark.parametrize("adapter", list(EXPECTED))
def test_seeded_tiny_outputs_are_pixel_identical(tiny_weights, inputs, one_thread, adapter):
    service = CharacterService.load(tiny_weights, ServiceOptions(identity_adapter=adapter))
    actual = {
        "text_to_image_default": output_hash(service, inputs, "Default", inpaint=False),
        "text_to_image_turbo": output_hash(service, inputs, "Turbo", inpaint=False),
        "inpainting_default": output_hash(service, inputs, "Default", inpaint=True),
    }
    assert actual == EXPECTED[adapter]
