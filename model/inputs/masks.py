"""What a mask file means: which convention it follows, whether it is a mask at all, and whether it fits.

The contract's mask is BLACK = regenerate, WHITE = keep. Other tools send other shapes, and a mask read the
wrong way regenerates what the user meant to keep, silently. So a mask is read one of two ways, or refused:

- **Black and white** (no transparent pixel): black = regenerate, white = keep. Semi-transparent edge pixels
  lie over white.
- **Transparency only** (OpenAI's image-edits convention): some pixels are transparent and the opaque ones
  carry no black-and-white drawing (one colour, e.g. opaque black or white, or a photo, e.g. the image
  itself with the edit area erased). The transparent area is regenerated, the opaque area kept.
- **A paint tool's brush layer** (Gradio's image editor and other editors export strokes this way): a mostly
  transparent layer carrying strokes of one colour, opaque or half-transparent. The strokes are regenerated,
  the transparent rest kept.
- Which of the two a transparent file is, its layers decide: mostly opaque (at least OPAQUE_HOLE_MIN of its
  pixels) with a transparent area is OpenAI's; mostly clear (at most STROKES_MAX painted) with strokes of
  one colour is a brush layer. Anything else (half and half, several colours on transparency, an empty
  layer) stays ambiguous and is refused with what the file looks like and how to send it.
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
# OpenAI's convention: an opaque image with a hole. At least this share of the pixels is opaque (alpha at
# least KEEP_THRESHOLD): the hole is the smaller part, as an edit usually is.
OPAQUE_HOLE_MIN = 0.6
# A brush layer: at most this share of the pixels is painted (alpha at least STROKE_ALPHA_MIN, so strokes
# of a half-transparent brush count), the rest clear. Between the two shares a file is not read either way.
STROKES_MAX = 0.4
STROKE_ALPHA_MIN = 32
# Strokes of one colour: this share of the painted pixels within STROKE_TONE_SPREAD grey levels of their
# median (an anti-aliased edge may differ; a photo's pixels spread over the whole range).
STROKE_TONE_SHARE = 0.9
STROKE_TONE_SPREAD = 24


@dataclass(frozen=True)
class Convention:
    name: str
    description: str


BLACK_AND_WHITE = Convention("black and white", "black = regenerate, white = keep")
TRANSPARENCY = Convention(
    "transparency (OpenAI's convention)", "transparent = regenerate, opaque = keep; its colours are ignored"
)
BRUSH_LAYER = Convention(
    "a paint tool's brush layer", "painted strokes = regenerate, transparent = keep; their colour is ignored"
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
    opaque_share = 1 - float(transparent.mean())
    if opaque_share >= OPAQUE_HOLE_MIN:
        # Transparent = regenerate = black: the alpha channel is the mask in the contract's convention.
        return TRANSPARENCY, layers.alpha
    painted = alpha >= STROKE_ALPHA_MIN
    painted_share = float(painted.mean())
    if 0 < painted_share <= STROKES_MAX and _one_tone(grey[painted]):
        return BRUSH_LAYER, Image.fromarray(np.where(painted, 0, 255).astype(np.uint8), "L")
    raise InputError(f"{input_name} {_ambiguous_layers(painted_share, grey[painted])}")


def _one_tone(values: np.ndarray) -> bool:
    """Whether grey levels are those of one brush colour (but for anti-aliased edges)."""
    near = np.abs(values.astype(np.int16) - int(np.median(values))) <= STROKE_TONE_SPREAD
    return float(near.mean()) >= STROKE_TONE_SHARE


def _ambiguous_layers(painted_share: float, painted: np.ndarray) -> str:
    """What a transparent file that is neither OpenAI's mask nor a brush layer looks like; what to send."""
    send = (
        "send black (regenerate) and white (keep) without transparency, an opaque image with the area to "
        "regenerate erased to transparency, or the brush layer alone with its strokes on transparency"
    )
    if painted_share == 0:
        return (
            "is fully transparent: as a paint tool's layer it has no strokes, and in OpenAI's convention it "
            "would regenerate the whole image; paint the area to regenerate, or send an all-black mask to "
            "regenerate everything"
        )
    look = f"is {100 * painted_share:.0f}% painted on transparency"
    if painted_share <= STROKES_MAX and not _one_tone(painted):
        look += " in several colours (a brush layer has strokes of one colour)"
    return (
        f"{look}, so it reads neither as a brush layer (strokes on a mostly transparent layer, at most "
        f"{100 * STROKES_MAX:.0f}% painted) nor as OpenAI's mask (an opaque image, at least "
        f"{100 * OPAQUE_HOLE_MIN:.0f}% opaque, with a transparent hole): {send}"
    )


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
