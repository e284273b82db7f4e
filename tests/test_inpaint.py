"""Inpainting geometry on real photo sizes: crop-and-stitch, pixel density, colour profiles, the composite."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageCms

from model.errors import InputError
from model.inputs.images import SRGB, load_image
from model.inputs.inpaint import MIN_CONTEXT_PIXELS, SEAM_PIXELS, InpaintPlan, crop_box, density, keep_at_size
from model.inputs.masks import KEEP_THRESHOLD
from model.inputs.sizes import WORKING_PIXELS, Size, working_size
from tests.helpers.colour_profiles import display_p3_profile, gray_profile


@pytest.fixture
def photo(portrait):
    return portrait.resize((1600, 1200))


def centre_mask(size, box, background=255, hole=0):
    mask = Image.new("L", size, background)
    mask.paste(hole, box)
    return mask


def keep_with_hole(size, box):
    width, height = size
    keep = np.ones((height, width), dtype=bool)
    left, top, right, bottom = box
    keep[top:bottom, left:right] = False
    return keep


def test_black_is_regenerated_and_white_is_kept(photo):
    plan = InpaintPlan.prepare(photo, centre_mask((800, 600), (200, 150, 600, 450)))
    # The 800x600 hole with a quarter of its longer side (200 px) of context on each side: a 1200x1000
    # crop, denoised at 1152x960 (0.96 of its pixels; the whole image would be at 0.74).
    assert plan.crop.size == Size(1200, 1000) and plan.working_size == Size(1152, 960)
    assert (plan.crop.left, plan.crop.top) == (200, 100)
    working_mask = np.asarray(plan.working_mask)
    # diffusers' convention in the working mask: white (255) = repaint, at the centre.
    assert working_mask[480, 576] == 255 and working_mask[10, 10] == 0
    assert plan.keep.shape == (1200, 1600) and plan.keep[0, 0] and not plan.keep[600, 800]


def test_a_small_region_of_a_large_photo_is_denoised_at_full_detail():
    # The example: a person painted into a 400-pixel region of a 4000x3000 photo.
    keep = keep_with_hole((4000, 3000), (1800, 1300, 2200, 1700))
    crop, size = crop_box(keep)
    today = density(working_size(Size(4000, 3000)), Size(4000, 3000))
    assert today == pytest.approx(0.296, abs=0.001)  # the region at about 118 px: blown up 3.4x
    assert crop.size == Size(600, 600) and size == Size(1024, 1024)
    assert density(size, crop.size) >= 1.7  # generated at 683 px, shown at 400: sharper than the photo
    # The whole hole with its context is inside the crop, centred.
    assert (crop.left, crop.top, crop.right, crop.bottom) == (1700, 1200, 2300, 1800)


def test_density_is_never_below_the_whole_image_and_at_least_the_original_when_the_crop_fits():
    sizes = [(4000, 3000), (1200, 1600), (640, 480), (4000, 600)]
    boxes = [(0.45, 0.45, 0.1), (0.0, 0.0, 0.05), (0.9, 0.1, 0.08), (0.3, 0.6, 0.3), (0.1, 0.4, 0.6)]
    checked_fitting = 0
    for (width, height), (x, y, side) in itertools.product(sizes, boxes):
        box_side = max(1, round(side * min(width, height)))
        left, top = round(x * (width - box_side)), round(y * (height - box_side))
        keep = np.ones((height, width), dtype=bool)
        keep[top : top + box_side, left : left + box_side * 2] = False  # a 2:1 hole
        crop, size = crop_box(keep)
        region = ~keep
        assert not region[: crop.top].any() and not region[crop.bottom :].any()
        assert not region[:, : crop.left].any() and not region[:, crop.right :].any()
        whole = Size(width, height)
        assert density(size, crop.size) >= density(working_size(whole), whole)
        assert size.width % 32 == 0 and size.height % 32 == 0
        if crop.size.pixels <= WORKING_PIXELS:
            assert density(size, crop.size) >= 1.0
            checked_fitting += 1
        # The crop's aspect ratio is kept within the rounding of the working size's sides to 32.
        assert abs(size.width / size.height - crop.size.width / crop.size.height) < 0.1
    assert checked_fitting >= 8


def test_composite_is_byte_identical_under_white_and_generated_inside_black():
    large = np.random.default_rng(1).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    image = Image.fromarray(large)
    mask = centre_mask((4000, 3000), (1800, 1300, 2200, 1700))
    plan = InpaintPlan.prepare(image, mask)
    assert plan.working_size == Size(1024, 1024)
    generated = Image.new("RGB", plan.working_image.size, (0, 255, 0))
    result = np.asarray(plan.composite(generated))
    assert result.shape == large.shape
    assert np.array_equal(result[plan.keep], large[plan.keep])
    # Deep inside the black area the generated pixels win; at its edge the seam blends.
    assert tuple(result[1500, 2000]) == (0, 255, 0)
    edge = result[1500, 1800]
    assert not np.array_equal(edge, large[1500, 1800]) and tuple(edge) != (0, 255, 0)
    assert tuple(result[1500, 1800 + SEAM_PIXELS]) == (0, 255, 0)


def test_the_working_image_is_the_crop():
    rng = np.random.default_rng(2)
    large = rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    plan = InpaintPlan.prepare(Image.fromarray(large), centre_mask((2000, 1500), (900, 700, 1000, 800)))
    assert plan.crop.size == Size(100 + 2 * MIN_CONTEXT_PIXELS, 100 + 2 * MIN_CONTEXT_PIXELS)
    rows, columns = plan.crop.slices()
    expected = Image.fromarray(large[rows, columns]).resize(plan.working_image.size, Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(plan.working_image), np.asarray(expected))


def test_grey_mask_is_thresholded(photo):
    grey = np.full((1200, 1600), 200, dtype=np.uint8)
    grey[:, :800] = KEEP_THRESHOLD - 1
    plan = InpaintPlan.prepare(photo, Image.fromarray(grey))
    assert not plan.keep[:, :800].any() and plan.keep[:, 800:].all()


def test_all_white_mask_is_refused(photo):
    with pytest.raises(InputError, match="mask is all white"):
        InpaintPlan.prepare(photo, Image.new("L", (64, 48), 255))


def test_all_black_mask_regenerates_the_whole_image_at_its_size(photo):
    plan = InpaintPlan.prepare(photo, Image.new("L", (16, 12), 0))
    result = plan.composite(Image.new("RGB", plan.working_image.size, (9, 9, 9)))
    assert result.size == photo.size and plan.working_size == working_size(Size(*photo.size))
    assert not plan.keep.any()
    assert (np.asarray(result) == 9).all()


# --- Colour profiles ---------------------------------------------------------------------------------------


def p3_photo(tmp_path, colour=(200, 60, 40)):
    """A JPEG in Display P3 (its pixels are P3 values), as phones save them: a flat colour and a gradient."""
    pixels = np.zeros((300, 400, 3), dtype=np.uint8)
    pixels[:] = colour
    pixels[:, 200:, 1] = np.linspace(0, 255, 200).astype(np.uint8)
    path = tmp_path / "p3.jpg"
    Image.fromarray(pixels).save(path, quality=95, icc_profile=display_p3_profile())
    return path


def srgb_of(pixels: np.ndarray, icc: bytes) -> np.ndarray:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    image = ImageCms.profileToProfile(Image.fromarray(pixels), source, SRGB, outputMode="RGB")
    return np.asarray(image)


def test_inpainting_keeps_the_profile_and_converts_only_what_it_generates(tmp_path):
    icc = display_p3_profile()
    image = load_image(p3_photo(tmp_path), "image")
    assert image.info["icc_profile"] == icc
    stored = np.asarray(image)
    plan = InpaintPlan.prepare(image, centre_mask((400, 300), (50, 50, 150, 150)))
    assert plan.icc_profile == icc
    # The model sees sRGB: the P3 red (200, 60, 40) is a more saturated sRGB red.
    working = np.asarray(plan.working_image)
    expected = srgb_of(stored[150:151, 100:101], icc)[0, 0]
    assert np.abs(working[working.shape[0] // 2, working.shape[1] // 3].astype(int) - expected).max() <= 2
    assert expected[0] > 200 and expected[1] < 50
    # The model "generates" an sRGB colour; the output holds that colour in P3, carries the profile, and
    # keeps the kept pixels byte for byte.
    generated_srgb = (120, 160, 90)
    output = plan.composite(Image.new("RGB", plan.working_image.size, generated_srgb))
    assert output.info["icc_profile"] == icc
    result = np.asarray(output)
    assert np.array_equal(result[plan.keep], stored[plan.keep])
    inside = result[100, 100]
    assert tuple(inside) != generated_srgb  # stored as P3 values...
    assert np.abs(srgb_of(result[100:101, 100:101], icc)[0, 0].astype(int) - generated_srgb).max() <= 2
    # ...that display as the generated colour; the PNG written by the service carries the profile.
    buffer = io.BytesIO()
    output.save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).info["icc_profile"] == icc


def test_a_greyscale_profile_is_applied_on_loading(tmp_path):
    # A greyscale (or CMYK) profile cannot travel with RGB pixels: the loader converts with it to sRGB.
    path = tmp_path / "linear.png"
    Image.new("L", (32, 32), 128).save(path, icc_profile=gray_profile("Linear grey (test)", 1.0))
    loaded = load_image(path, "image")
    assert loaded.mode == "RGB" and "icc_profile" not in loaded.info
    # Linear 50% grey is sRGB 188, where reading the value as sRGB would give 128.
    assert np.abs(np.asarray(loaded)[16, 16].astype(int) - 188).max() <= 2


def test_a_profile_of_the_wrong_colour_space_is_dropped_not_applied(tmp_path, caplog):
    path = tmp_path / "lab.jpg"
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(path, quality=95, icc_profile=lab)
    loaded = load_image(path, "image")
    assert "icc_profile" not in loaded.info
    assert np.abs(np.asarray(loaded)[16, 16].astype(int) - (10, 200, 30)).max() <= 3
    assert "image: its ICC profile cannot be used" in caplog.text


@pytest.mark.parametrize("scale", [4, 8])
def test_a_thin_stroke_on_a_larger_mask_keeps_its_area(scale):
    # A 2-pixel stroke drawn on a mask at `scale` times the image's size: averaged, it would turn light grey
    # (kept) and the request would fail as "all white".
    mask = Image.new("L", (200 * scale, 150 * scale), 255)
    mask.paste(0, (40 * scale, 70 * scale, 160 * scale, 70 * scale + 2))
    keep = keep_at_size(mask, (200, 150))
    assert not keep[70, 40:160].any()
    assert keep.sum() == 200 * 150 - 120
    averaged = np.asarray(mask.resize((200, 150), Image.Resampling.BILINEAR)) >= KEEP_THRESHOLD
    assert averaged.all()  # what the averaging resize made of it
    plan = InpaintPlan.prepare(Image.new("RGB", (200, 150), (120, 130, 140)), mask)
    assert not plan.keep[70, 40:160].any()


def test_a_smaller_mask_is_still_interpolated():
    mask = Image.new("L", (100, 75), 255)
    mask.paste(0, (25, 25, 75, 50))
    keep = keep_at_size(mask, (400, 300))
    expected = np.asarray(mask.resize((400, 300), Image.Resampling.BILINEAR)) >= KEEP_THRESHOLD
    assert np.array_equal(keep, expected)
