"""What a mask file means: which convention it follows, whether it is a mask at all, and whether it fits.

The contract's mask is BLACK = regenerate, WHITE = keep. Other tools send other shapes, and a mask read the
wrong way regenerates what the user meant to keep, silently. So a mask is read one of two ways, or refused:

- **Black and white** (no transparent pixel): black = regenerate, white = keep. Semi-transparent edge pixels
  lie over white.
- **Transparency only** (OpenAI's image-edits convention): some pixels are transparent and the opaque ones
  carry no black-and-white drawing (one colour, e.g. opaque black or white, or a photo, e.g. the image
  itself with the edit area erased). The transparent area is regenerated, the opaque area kept.
- A mask with transparent pixels *and* a black-and-white drawing can be read both ways: refused.

Then, whatever the convention, a mask must be essentially two-toned (a photo or a gradient sent as a mask
is refused), its aspect ratio must be the upright image's (a mask is never stretched), and it must
regenerate something. The log says which convention was read and the share of the image regenerated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from model.errors import InputError
from model.inputs.images import WHITE, MaskLayers

log = logging.getLogger(__name__)

MASK_INPUT = "mask"
# Grey levels at or above this are white (kept), below it black (regenerated); alpha below it is transparent.
KEEP_THRESHOLD = 128
# "Near black" and "near white": the outer quarters of the grey range. A JPEG-compressed or dithered mask
# stays well inside them away from its edges (JPEG's error on flat areas is a few levels); a photo's
# mid-tones, a gradient or a colour drawing (pure red is grey 76) do not.
NEAR_BLACK_MAX = 63
NEAR_WHITE_MIN = 192
# Anti-aliased and feathered edges are grey by design: a grey pixel counts as edge when it lies within this
# many pixels of both a near-black and a near-white pixel. One per 256 pixels of the mask's longer side, at
# least 3: a 1-2 px anti-aliased edge at the size it was drawn, scaled with the mask when a tool resized it.
EDGE_RADIUS_MIN = 3
EDGE_RADIUS_PER_SIDE = 1 / 256
# The share of pixels that may be grey away from any edge. Measured (tests/test_masks.py): an anti-aliased
# mask, saved as JPEG at quality 10, or scaled up 4x: 0%; a 64 px mask scaled up to 4000 px: 1%; feathered
# with a Gaussian blur of 4 / 8 px on 512 px: 2% / 6%. Photos (scikit-image's samples, the test faces):
# 38% to 99%; a black-to-white gradient: 50%. Grey edges are thresholded at KEEP_THRESHOLD either way.
MAX_STRAY_GREY = 0.10
# A black-and-white drawing in the opaque part of a transparent mask: both tones on at least this share of
# the opaque pixels, and two-toned. Below it, a few dark or light pixels (a shadow in a photo) do not count.
DRAWING_TONE_MIN = 0.01


@dataclass(frozen=True)
class Convention:
    name: str
    description: str


BLACK_AND_WHITE = Convention("black and white", "black = regenerate, white = keep")
TRANSPARENCY = Convention(
    "transparency (OpenAI's convention)", "transparent = regenerate, opaque = keep; its colours are ignored"
)


@dataclass(frozen=True)
class MaskReading:
    """A mask read and checked: "L" at the mask's own size, BLACK = regenerate, WHITE = keep."""

    mask: Image.Image
    convention: Convention
    regenerated_fraction: float  # share of the mask's pixels that will be regenerated, in (0, 1]


def read_mask(layers: MaskLayers, image_size: tuple[int, int], input_name: str = MASK_INPUT) -> MaskReading:
    """Decide the convention, check the mask against the rules above and log what was read.

    image_size is the upright input image's (width, height). Raises InputError naming `input_name` with what
    was read and how to send the mask instead.
    """
    convention, mask = _convention(layers, input_name)
    check_two_toned(np.asarray(mask), input_name)
    check_aspect_ratio(mask.size, image_size, input_name)
    regenerate = np.asarray(mask) < KEEP_THRESHOLD
    fraction = float(regenerate.mean())
    if fraction == 0.0:  # only in black and white: a transparent pixel is regenerated
        raise InputError(
            f"{input_name} is all white, so nothing would be regenerated: "
            "paint black where the character goes"
        )
    log.info(
        "Mask read as %s (%s): %.1f%% of the image will be regenerated",
        convention.name,
        convention.description,
        100 * fraction,
    )
    return MaskReading(mask=mask, convention=convention, regenerated_fraction=fraction)


def _convention(layers: MaskLayers, input_name: str) -> tuple[Convention, Image.Image]:
    grey = np.asarray(layers.grey)
    if layers.alpha is None:
        return BLACK_AND_WHITE, layers.grey
    alpha = np.asarray(layers.alpha)
    transparent = alpha < KEEP_THRESHOLD
    if not transparent.any():
        # Opaque, or semi-transparent only at anti-aliased edges: the colours are the mask; lay them on white
        # as any viewer shows them.
        weight = alpha.astype(np.float32) / 255
        flat = grey * weight + WHITE[0] * (1 - weight)
        return BLACK_AND_WHITE, Image.fromarray(np.rint(flat).astype(np.uint8), "L")
    opaque = grey[~transparent]
    if _is_drawing(opaque):
        raise InputError(
            f"{input_name} has transparent pixels and also a black-and-white drawing, so it can be read two "
            "ways: send black (regenerate) and white (keep) without transparency, or an opaque image with "
            "the area to regenerate erased to transparency"
        )
    # Transparent = regenerate = black: the alpha channel is the mask in the contract's convention.
    return TRANSPARENCY, layers.alpha


def _is_drawing(values: np.ndarray) -> bool:
    """Whether opaque grey levels hold a black-and-white drawing: both tones present and little else."""
    if values.size == 0:
        return False
    black = float((values <= NEAR_BLACK_MAX).mean())
    white = float((values >= NEAR_WHITE_MIN).mean())
    return black >= DRAWING_TONE_MIN and white >= DRAWING_TONE_MIN and black + white >= 1 - MAX_STRAY_GREY


def stray_grey_fraction(values: np.ndarray) -> float:
    """The share of an "L" mask's pixels that are grey and not on an edge between black and white."""
    near_black = values <= NEAR_BLACK_MAX
    near_white = values >= NEAR_WHITE_MIN
    grey = ~(near_black | near_white)
    if not grey.any():
        return 0.0
    radius = max(EDGE_RADIUS_MIN, round(max(values.shape) * EDGE_RADIUS_PER_SIDE))
    window = 2 * radius + 1
    # A square window: the maximum filter is separable, so a 12-megapixel mask takes a fraction of a second.
    by_black = ndimage.maximum_filter(near_black.view(np.uint8), size=window).astype(bool)
    by_white = ndimage.maximum_filter(near_white.view(np.uint8), size=window).astype(bool)
    return float((grey & ~(by_black & by_white)).mean())


def check_two_toned(values: np.ndarray, input_name: str = MASK_INPUT) -> None:
    """InputError unless the mask is black and white but for its anti-aliased edges."""
    stray = stray_grey_fraction(values)
    if stray > MAX_STRAY_GREY:
        raise InputError(
            f"{input_name} is not a black-and-white image ({100 * stray:.0f}% of its pixels are grey away "
            "from any edge): send black where the character goes and white elsewhere, or an opaque image "
            "with that area erased to transparency"
        )


def check_aspect_ratio(
    mask_size: tuple[int, int], image_size: tuple[int, int], input_name: str = MASK_INPUT
) -> None:
    """InputError when the mask would have to be stretched to lie on the image.

    A mask scaled from the image (or the image from the mask) has sides rounded to whole pixels: with
    w = W*s + e1 and h = H*s + e2, |w*H - h*W| = |e1*H - e2*W| <= W + H for rounding errors up to 1 px
    (tools that floor or ceil included). Anything further is another aspect ratio.
    """
    (w, h), (width, height) = mask_size, image_size
    tolerance = max(width + height, w + h)
    if abs(w * height - h * width) <= tolerance:
        return
    message = (
        f"{input_name} is {w}x{h} pixels and image is {width}x{height} (upright): their aspect ratios "
        "differ, so the mask would be stretched onto another area"
    )
    if abs(w * width - h * height) <= tolerance:
        how = "exactly swapped" if (w, h) == (height, width) else "swapped"
        message += (
            f"; its sides are {how}, so it was probably drawn on the photo before it was turned upright by "
            "its EXIF orientation: draw the mask on the upright image"
        )
    raise InputError(message + f": send a mask of {width}x{height} pixels, or a copy scaled from it")
