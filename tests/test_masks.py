"""Masks as people make them (conventions, two tones, aspect ratio); every input checked before any model."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from skimage import data

from model.errors import InputError
from model.inputs.images import MaskLayers, load_mask
from model.inputs.masks import (
    BLACK_AND_WHITE,
    BRUSH_LAYER,
    MAX_STRAY_GREY,
    TRANSPARENCY,
    check_aspect_ratio,
    read_mask,
    stray_grey_fraction,
)
from model.inputs.request import build_request
from model.service import CharacterService

FACES = Path(__file__).parent / "data" / "faces"


def layers_of(image: Image.Image, tmp_path: Path, fmt: str = "PNG") -> MaskLayers:
    path = tmp_path / f"mask.{fmt.lower()}"
    image.save(path, format=fmt)
    return load_mask(path)


def drawn_mask(size=(512, 384), supersample=4) -> Image.Image:
    """Black shapes on white, anti-aliased (drawn 4x larger and scaled down), as a paint program makes."""
    width, height = size
    big = Image.new("L", (width * supersample, height * supersample), 255)
    draw = ImageDraw.Draw(big)
    draw.ellipse((big.width // 4, big.height // 5, big.width // 2, 4 * big.height // 5), fill=0)
    draw.rectangle((3 * big.width // 5, big.height // 4, 4 * big.width // 5, big.height // 2), fill=0)
    return big.resize(size, Image.Resampling.LANCZOS)


def regenerated(reading) -> np.ndarray:
    return np.asarray(reading.mask) < 128


# --- Conventions -------------------------------------------------------------------------------------------


def test_black_and_white_is_read_as_the_contract(tmp_path):
    reading = read_mask(layers_of(drawn_mask(), tmp_path), (1024, 768))
    assert reading.convention is BLACK_AND_WHITE
    assert regenerated(reading)[192, 192] and not regenerated(reading)[10, 10]


def test_opaque_black_with_a_transparent_rectangle_regenerates_the_rectangle(tmp_path, caplog):
    # The first example: OpenAI's convention. It was read as "transparent = white = keep".
    mask = Image.new("RGBA", (400, 300), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (100, 100, 200, 180))
    with caplog.at_level(logging.INFO):
        reading = read_mask(layers_of(mask, tmp_path), (800, 600))
    assert reading.convention is TRANSPARENCY
    expected = np.zeros((300, 400), dtype=bool)
    expected[100:180, 100:200] = True
    assert np.array_equal(regenerated(reading), expected)
    assert reading.regenerated_fraction == pytest.approx(8000 / 120000)
    assert "Mask read as transparency (OpenAI's convention)" in caplog.text
    assert "6.7% of the image will be regenerated" in caplog.text


@pytest.mark.parametrize("colour", [(255, 255, 255, 255), (0, 0, 0, 255), (30, 90, 200, 255)])
def test_any_one_colour_with_a_transparent_hole_is_openai_convention(tmp_path, colour):
    mask = Image.new("RGBA", (64, 48), colour)
    mask.paste((255, 255, 255, 0), (8, 8, 24, 24))
    reading = read_mask(layers_of(mask, tmp_path), (64, 48))
    assert reading.convention is TRANSPARENCY and regenerated(reading).sum() == 16 * 16


def test_the_photo_with_the_edit_area_erased_regenerates_only_that_area(portrait, tmp_path):
    # The second example: the photo itself was thresholded, so its dark parts were regenerated.
    photo = portrait.convert("RGBA")
    photo.paste((0, 0, 0, 0), (300, 250, 420, 400))
    reading = read_mask(layers_of(photo, tmp_path), portrait.size)
    assert reading.convention is TRANSPARENCY
    expected = np.zeros((512, 512), dtype=bool)
    expected[250:400, 300:420] = True
    assert np.array_equal(regenerated(reading), expected)


def test_a_soft_eraser_edge_is_an_anti_aliased_edge(portrait, tmp_path):
    alpha = Image.new("L", portrait.size, 255)
    ImageDraw.Draw(alpha).ellipse((150, 150, 350, 350), fill=0)
    photo = portrait.convert("RGBA")
    photo.putalpha(alpha.filter(ImageFilter.GaussianBlur(3)))
    reading = read_mask(layers_of(photo, tmp_path), portrait.size)
    assert reading.convention is TRANSPARENCY and regenerated(reading)[250, 250]


def test_transparency_and_a_black_and_white_drawing_is_refused_as_ambiguous(tmp_path):
    mask = drawn_mask().convert("RGBA")
    mask.paste((0, 0, 0, 0), (0, 0, 100, 384))
    with pytest.raises(InputError, match="^mask has transparent pixels and also a black-and-white drawing"):
        read_mask(layers_of(mask, tmp_path), (512, 384))


def brush_layer(size=(512, 384), colour=(0, 0, 0), opacity=255, width=12) -> Image.Image:
    """Strokes on a transparent layer, as paint tools (Gradio's image editor among them) export them."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.line((40, 60, 300, 200), fill=colour + (opacity,), width=width)
    draw.ellipse((350, 100, 450, 300), fill=colour + (opacity,))
    return layer


@pytest.mark.parametrize(
    ("colour", "opacity"),
    [
        ((0, 0, 0), 255),
        ((255, 255, 255), 255),
        ((230, 30, 40), 255),
        ((0, 0, 0), 128),
        ((255, 255, 255), 100),
    ],
    ids=["black", "white", "red", "half-transparent black", "faint white"],
)
def test_strokes_on_a_transparent_layer_are_the_area_to_regenerate(tmp_path, caplog, colour, opacity):
    layer = brush_layer(colour=colour, opacity=opacity)
    with caplog.at_level(logging.INFO):
        reading = read_mask(layers_of(layer, tmp_path), (1024, 768))
    assert reading.convention is BRUSH_LAYER
    painted = np.asarray(layer.getchannel("A")) > 0
    assert np.array_equal(regenerated(reading), painted)
    assert "Mask read as a paint tool's brush layer (painted strokes = regenerate" in caplog.text


def empty_layer() -> Image.Image:
    return Image.new("RGBA", (64, 48), (0, 0, 0, 0))


def photo_strip() -> Image.Image:
    """A strip of a photo (a quarter of the width) on transparency: painted, but in many colours."""
    layer = empty_layer()
    layer.paste(Image.fromarray(data.astronaut()).resize((16, 48)), (0, 0))
    return layer


def half_painted() -> Image.Image:
    layer = empty_layer()
    layer.paste((0, 0, 0, 255), (0, 0, 32, 48))
    return layer


@pytest.mark.parametrize(
    ("layer", "error"),
    [
        (empty_layer, "mask is fully transparent: as a paint tool's layer it has no strokes"),
        (
            photo_strip,
            "mask is 25% painted on transparency in several colours (a brush layer has strokes of one",
        ),
        (half_painted, "mask is 50% painted on transparency, so it reads neither as a brush layer"),
    ],
    ids=["empty layer", "photo strip on transparency", "half painted"],
)
def test_a_transparent_file_that_is_neither_layer_is_refused_saying_what_it_looks_like(
    tmp_path, layer, error
):
    with pytest.raises(InputError, match="^" + re.escape(error)) as refused:
        read_mask(layers_of(layer(), tmp_path), (64, 48))
    assert "all-black mask" in str(refused.value) or "without transparency" in str(refused.value)


def test_opaque_alpha_and_anti_aliased_alpha_edges_read_the_colours(tmp_path):
    mask = drawn_mask().convert("RGBA")  # alpha 255 everywhere: a plain black-and-white mask
    assert read_mask(layers_of(mask, tmp_path), (512, 384)).convention is BLACK_AND_WHITE


# --- Black and white, or not a mask ------------------------------------------------------------------------


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"))


# The measurements behind MAX_STRAY_GREY (model/inputs/masks.py): masks people make, and what is not a mask.
MASKS = {
    "anti-aliased": lambda: drawn_mask(),
    "JPEG quality 10": lambda: jpeg(drawn_mask(), 10),
    "1-bit dithered": lambda: drawn_mask().convert("1"),
    "scaled up 4x": lambda: drawn_mask().resize((2048, 1536), Image.Resampling.BILINEAR),
    "64 px scaled to 4000": lambda: drawn_mask((64, 48)).resize((4000, 3000), Image.Resampling.BICUBIC),
    "feathered 4 px": lambda: drawn_mask().filter(ImageFilter.GaussianBlur(4)),
    "feathered 8 px": lambda: drawn_mask().filter(ImageFilter.GaussianBlur(8)),
}
NOT_MASKS = {
    "astronaut": lambda: Image.fromarray(data.astronaut()),
    "camera": lambda: Image.fromarray(data.camera()),
    "coffee": lambda: Image.fromarray(data.coffee()),
    "moon": lambda: Image.fromarray(data.moon()),
    "Obama portrait": lambda: Image.open(FACES / "obama_portrait_2012.jpg"),
    "black-to-white gradient": lambda: Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (64, 1))),
    "red drawing on black": lambda: Image.eval(drawn_mask().convert("RGB"), lambda v: 255 - v).convert(
        "RGB", (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    ),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_masks_people_make_are_two_toned(name):
    assert stray_grey_fraction(grey(MASKS[name]())) <= MAX_STRAY_GREY / 1.5


@pytest.mark.parametrize("name", list(NOT_MASKS))
def test_photos_gradients_and_colour_drawings_are_not(name, tmp_path):
    assert stray_grey_fraction(grey(NOT_MASKS[name]())) >= 1.5 * MAX_STRAY_GREY
    image = NOT_MASKS[name]()
    with pytest.raises(InputError, match="^mask is not a black-and-white image"):
        read_mask(layers_of(image.convert("RGB"), tmp_path), image.size)


# --- Aspect ratio ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "image"),
    [
        ((200, 150), (800, 600)),
        ((333, 250), (4000, 3000)),
        ((1000, 563), (1920, 1080)),
        ((4001, 3000), (4000, 3000)),
    ],
)
def test_scaled_masks_fit(mask, image):
    check_aspect_ratio(mask, image)
    check_aspect_ratio(image, mask)


def test_a_mask_with_swapped_sides_was_drawn_on_the_unrotated_photo():
    # The third example.
    with pytest.raises(InputError) as error:
        check_aspect_ratio((1200, 626), (626, 1200))
    message = str(error.value)
    assert message.startswith("mask is 1200x626 pixels and image is 626x1200")
    assert "exactly swapped" in message and "before it was turned upright" in message


def test_a_mask_of_another_aspect_ratio_is_refused_naming_both_sizes():
    with pytest.raises(
        InputError, match=r"^mask is 1024x1024 pixels and image is 1600x1200 \(upright\)"
    ) as error:
        check_aspect_ratio((1024, 1024), (1600, 1200))
    assert "swapped" not in str(error.value)


# --- Every input checked before any model runs -------------------------------------------------------------


class MustNotRun:
    """A service component that fails the test if anything of it is used."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute):
        raise AssertionError(f"{self._name}.{attribute} was used before the inputs were checked")


def service_without_models() -> CharacterService:
    return CharacterService(
        layout=MustNotRun("layout"),
        faces=MustNotRun("face analyser"),
        pipeline=MustNotRun("pipeline"),
        rewriter=MustNotRun("magic-prompt LLM"),
    )


def write(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


BAD_INPAINTING = {
    "all-white mask": (lambda: Image.new("L", (64, 48), 255), "mask is all white"),
    "photo as mask": (
        lambda: Image.fromarray(data.astronaut()).resize((64, 48)),
        "mask is not a black-and-white",
    ),
    "mask on the unrotated photo": (
        lambda: Image.new("L", (48, 64), 0),
        "mask is 48x64 pixels and image is 64x48",
    ),
    "unreadable mask": (None, "mask is not a readable image"),
}


@pytest.mark.parametrize("case", list(BAD_INPAINTING))
def test_a_bad_mask_fails_before_face_analysis_and_the_llm(portrait, tmp_path, case):
    make_mask, error = BAD_INPAINTING[case]
    mask = tmp_path / "mask.png"
    if make_mask is None:
        mask.write_bytes(b"not a picture")
    else:
        write(make_mask(), mask)
    request = build_request(
        prompt="the character on a bench",
        character_reference_image=write(portrait, tmp_path / "reference.png"),
        image=write(portrait.resize((64, 48)), tmp_path / "image.png"),
        mask=mask,
        seed=1,
        resolution="None",
        style_type="Auto",
        aspect_ratio="1:1",
        rendering_speed="Turbo",
        magic_prompt_option="On",
    )
    with pytest.raises(InputError, match=f"^{error}"):
        service_without_models().generate(request)


def test_a_bad_image_or_blank_reference_fails_before_any_model(portrait, tmp_path):
    inputs = dict(
        prompt="x", seed=1, resolution="None", style_type="Auto", aspect_ratio="1:1",
        rendering_speed="Turbo", magic_prompt_option="On",
    )  # fmt: skip
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    request = build_request(
        character_reference_image=write(portrait, tmp_path / "reference.png"),
        image=broken,
        mask=write(Image.new("L", (64, 48), 0), tmp_path / "mask.png"),
        **inputs,
    )
    with pytest.raises(InputError, match="^image is not a readable image"):
        service_without_models().generate(request)
    blank = write(Image.new("RGB", (64, 64), (90, 120, 200)), tmp_path / "blank.png")
    request = build_request(character_reference_image=blank, image=None, mask=None, **inputs)
    with pytest.raises(InputError, match="^character_reference_image is blank"):
        service_without_models().generate(request)


@pytest.mark.parametrize(
    ("option", "value"),
    [("style_type", "Anime"), ("rendering_speed", "Fast"), ("magic_prompt_option", "Yes")],
)
def test_options_are_checked_with_the_request(portrait, tmp_path, option, value):
    inputs = dict(
        prompt="x", character_reference_image=tmp_path / "r.png", image=None, mask=None, seed=1,
        resolution="None", style_type="Auto", aspect_ratio="1:1", rendering_speed="Turbo",
        magic_prompt_option="Off",
    )  # fmt: skip
    with pytest.raises(InputError, match=f"^{option} '{value}' is not one of"):
        build_request(**(inputs | {option: value}))
