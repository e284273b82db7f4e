"""Inpainting geometry on real photo sizes: mask convention, working size and the composite back."""

import numpy as np
import pytest
from PIL import Image

from model.errors import InputError
from model.inpaint import KEEP_THRESHOLD, InpaintPlan
from model.sizes import Size


@pytest.fixture
def photo(portrait):
    return portrait.resize((1600, 1200))


def centre_mask(size, box, background=255, hole=0):
    mask = Image.new("L", size, background)
    mask.paste(hole, box)
    return mask


def test_black_is_regenerated_and_white_is_kept(photo):
    plan = InpaintPlan.prepare(photo, centre_mask((800, 600), (200, 150, 600, 450)))
    assert plan.working_size == Size(1184, 896)
    working_mask = np.asarray(plan.working_mask)
    # diffusers' convention in the working mask: white (255) = repaint, at the centre.
    assert working_mask[448, 592] == 255 and working_mask[10, 10] == 0
    assert plan.keep.shape == (1200, 1600) and plan.keep[0, 0] and not plan.keep[600, 800]


def test_composite_is_byte_identical_under_white_and_generated_inside_black(photo):
    plan = InpaintPlan.prepare(photo, centre_mask((800, 600), (200, 150, 600, 450)))
    generated = Image.new("RGB", plan.working_image.size, (0, 255, 0))
    result = np.asarray(plan.composite(generated))
    original = np.asarray(photo)
    assert result.shape == original.shape
    assert np.array_equal(result[plan.keep], original[plan.keep])
    # Deep inside the black area the generated pixels win; at its edge the seam blends.
    assert tuple(result[600, 800]) == (0, 255, 0)
    edge = result[600, 401]
    assert not np.array_equal(edge, original[600, 401]) and tuple(edge) != (0, 255, 0)


def test_grey_mask_is_thresholded(photo):
    grey = np.full((1200, 1600), 200, dtype=np.uint8)
    grey[:, :800] = KEEP_THRESHOLD - 1
    plan = InpaintPlan.prepare(photo, Image.fromarray(grey))
    assert not plan.keep[:, :800].any() and plan.keep[:, 800:].all()


def test_all_white_mask_is_refused(photo):
    with pytest.raises(InputError, match="mask is all white"):
        InpaintPlan.prepare(photo, Image.new("L", (64, 64), 255))


def test_all_black_mask_regenerates_the_whole_image_at_its_size(photo):
    plan = InpaintPlan.prepare(photo, Image.new("L", (10, 10), 0))
    result = plan.composite(Image.new("RGB", plan.working_image.size, (9, 9, 9)))
    assert result.size == photo.size
    assert not plan.keep.any()
    assert (np.asarray(result) == 9).all()
