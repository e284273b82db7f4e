"""Output sizes: the aspect-ratio table, resolution parsing and the working size for inpainting.

Every size the server generates at has sides that are multiples of 32, because SDXL's VAE divides by 8
and its UNet downsamples the latent twice more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SIDE_MULTIPLE = 32
WORKING_PIXELS = 1024 * 1024
# Whatever the aspect ratio, a working size has at most this many times `pixels`: rounding both sides up
# adds up to a 32-px strip on each (9% at 3:1), while the 32-px minimum side of a strip thinner than about
# 1000:1 would otherwise inflate the area without bound.
MAX_WORKING_OVERSHOOT = 1.25


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def pixels(self) -> int:
        return self.width * self.height


def parse_resolution(text: str) -> Size:
    """'1344x768' -> Size(1344, 768)."""
    width, _, height = text.partition("x")
    return Size(int(width), int(height))


# Each aspect ratio maps to the resolution of Ideogram's own list (the `resolution` choices) whose
# ratio is nearest, at 0.79 to 1.05 megapixels; all but 16:9 and 9:16 are exact ratios.
ASPECT_RATIO_SIZES: dict[str, Size] = {
    "1:3": Size(512, 1536),
    "3:1": Size(1536, 512),
    "1:2": Size(704, 1408),
    "2:1": Size(1408, 704),
    "9:16": Size(736, 1312),
    "16:9": Size(1312, 736),
    "10:16": Size(800, 1280),
    "16:10": Size(1280, 800),
    "2:3": Size(832, 1248),
    "3:2": Size(1248, 832),
    "3:4": Size(864, 1152),
    "4:3": Size(1152, 864),
    "4:5": Size(896, 1120),
    "5:4": Size(1120, 896),
    "1:1": Size(1024, 1024),
}


def working_size(original: Size, pixels: int = WORKING_PIXELS, round_up: bool = False) -> Size:
    """The size to denoise an inpainting image (or a crop of it) at: its aspect ratio, `pixels` in area.

    Sides are rounded to multiples of SIDE_MULTIPLE, to the nearest or, with round_up, upwards (so that no
    side is scaled by less than sqrt(pixels / original.pixels)); the result is composited back at the
    original size.
    """
    scale = math.sqrt(pixels / original.pixels)
    # Up: a hair below the next multiple, so that float error in an exact multiple does not add 32 px.
    rounding = (lambda x: math.ceil(x - 1e-9)) if round_up else round

    def side(value: int) -> int:
        return max(SIDE_MULTIPLE, rounding(value * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE)

    width, height = side(original.width), side(original.height)
    budget = MAX_WORKING_OVERSHOOT * pixels
    if width * height > budget:
        # Only a strip far thinner than any input the loader accepts (model/inputs/images.py) gets here.
        if width >= height:
            width = max(SIDE_MULTIPLE, int(budget / height) // SIDE_MULTIPLE * SIDE_MULTIPLE)
        else:
            height = max(SIDE_MULTIPLE, int(budget / width) // SIDE_MULTIPLE * SIDE_MULTIPLE)
    return Size(width, height)
