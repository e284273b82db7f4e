"""Request normalisation: each rule of the contract that needs no model, one case per row."""

import logging
import math
from pathlib import Path

import pytest

from model.errors import InputError
from model.inputs.request import (
    SEED_MAX,
    SEED_MIN,
    build_request,
    check_downloaded,
    output_size,
    resolve_seed,
)
from model.inputs.sizes import ASPECT_RATIO_SIZES, Size, working_size

DEFAULTS = dict(
    prompt="a portrait",
    character_reference_image="ref.png",
    image=None,
    mask=None,
    seed=7,
    resolution="None",
    style_type="Auto",
    aspect_ratio="1:1",
    rendering_speed="Default",
    magic_prompt_option="Auto",
)


def request(**changes):
    return build_request(**{**DEFAULTS, **changes})


@pytest.mark.parametrize(
    ("resolution", "aspect_ratio", "expected"),
    [
        ("None", "1:1", Size(1024, 1024)),
        ("None", "16:9", Size(1312, 736)),
        ("None", "9:16", Size(736, 1312)),
        ("None", "3:1", Size(1536, 512)),
        ("1344x768", "1:1", Size(1344, 768)),  # resolution overrides aspect_ratio
        ("512x1536", "16:9", Size(512, 1536)),
    ],
)
def test_output_size(resolution, aspect_ratio, expected):
    assert output_size(resolution, aspect_ratio) == expected
    assert request(resolution=resolution, aspect_ratio=aspect_ratio).size == expected


@pytest.mark.parametrize(("ratio", "size"), ASPECT_RATIO_SIZES.items())
def test_aspect_ratio_table_row(ratio, size):
    width, height = (int(part) for part in ratio.split(":"))
    assert size.width % 32 == 0 and size.height % 32 == 0
    assert 0.75e6 <= size.pixels <= 1.1e6
    assert abs(size.width / size.height - width / height) < 0.01


def test_inpainting_ignores_resolution_and_aspect_ratio():
    normalised = request(image="in.png", mask="mask.png", resolution="1344x768", aspect_ratio="16:9")
    assert normalised.mode == "inpaint"
    assert normalised.size is None
    assert str(normalised.inpaint.image) == "in.png"


def test_mask_without_image_names_both_inputs():
    with pytest.raises(InputError, match="mask was given without image"):
        request(mask="mask.png")


def test_image_without_mask_names_both_inputs():
    with pytest.raises(InputError, match="image was given without mask"):
        request(image="in.png")


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_empty_prompt_is_refused(prompt):
    with pytest.raises(InputError, match="prompt is empty"):
        request(prompt=prompt)


def test_given_seed_is_kept_and_logged(caplog):
    with caplog.at_level(logging.INFO):
        assert request(seed=42).seed == 42
    assert "Using seed: 42" in caplog.text


def test_missing_seed_is_random_in_range_and_logged(caplog):
    with caplog.at_level(logging.INFO):
        seeds = {resolve_seed(None) for _ in range(50)}
    assert len(seeds) > 40
    assert all(0 <= seed <= SEED_MAX for seed in seeds)
    assert all(f"Using seed: {seed}" in caplog.text for seed in seeds)


@pytest.mark.parametrize("seed", [SEED_MAX + 1, SEED_MIN - 1, -(2**70), float(-(2**70)), 7.0, True])
def test_seeds_the_generator_cannot_take_are_refused_naming_the_range(seed):
    with pytest.raises(
        InputError, match=r"seed must be a whole number from -9223372036854775808 to 2147483647 "
    ):
        resolve_seed(seed)


@pytest.mark.parametrize("seed", [SEED_MIN, SEED_MAX, 0, -7])
def test_the_ends_of_the_seed_range_are_the_generators_own(seed):
    import torch

    assert resolve_seed(seed) == seed
    torch.Generator("cpu").manual_seed(seed)  # raises for any seed outside the generator's range


def test_the_generator_refuses_the_seed_just_below_the_range():
    import torch

    with pytest.raises(ValueError, match="Overflow"):
        torch.Generator("cpu").manual_seed(SEED_MIN - 1)


@pytest.mark.parametrize(
    ("prompt", "shown"), [(None, "null"), (5, "int"), (["a"], "list"), ({"a": 1}, "dict")]
)
def test_a_prompt_that_is_not_text_is_an_input_error(prompt, shown):
    with pytest.raises(InputError, match=f"prompt must be text \\(a JSON string\\); got {shown}"):
        request(prompt=prompt)


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        (Size(1600, 1200), Size(1184, 896)),
        (Size(512, 512), Size(1024, 1024)),
        (Size(4000, 3000), Size(1184, 896)),
        (Size(3000, 1000), Size(1760, 576)),
    ],
)
def test_working_size_keeps_ratio_near_one_megapixel(original, expected):
    size = working_size(original)
    assert size == expected
    assert size.width % 32 == 0 and size.height % 32 == 0


def test_file_inputs_must_be_files_cog_downloaded(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    inside = downloads / "tmpabc.png"
    inside.write_bytes(b"x")
    check_downloaded(inside, "image", downloads)
    check_downloaded(None, "mask", downloads)
    # A path of the server's own disk, and one that climbs out of the folder, are refused naming the input.
    nested = downloads / "checkout" / "evaluation" / "photo.jpg"
    for outside in (Path("/etc/hostname"), downloads / ".." / "secret.png", Path("reference.png"), nested):
        with pytest.raises(InputError, match=r"^mask names no file sent with the request .*data URI"):
            check_downloaded(outside, "mask", downloads)


@pytest.mark.parametrize("ratio", [1, 3, 8, 20, 100, 1000, 5000])
@pytest.mark.parametrize("round_up", [False, True])
def test_the_working_size_is_capped_in_pixels_whatever_the_aspect_ratio(ratio, round_up):
    for original in (Size(100 * ratio, 100), Size(7, 7 * ratio)):
        size = working_size(original, round_up=round_up)
        assert size.pixels <= 1.25 * 1024 * 1024
        assert size.width % 32 == 0 and size.height % 32 == 0
        if ratio <= 20:  # what the loader accepts: about one megapixel at the image's own aspect ratio
            assert 0.9 <= size.pixels / (1024 * 1024) <= 1.15
            # The shorter side, a multiple of 32, is at least 224 px: within 15% of the exact ratio.
            assert abs(math.log((size.width / size.height) / (original.width / original.height))) < 0.15
