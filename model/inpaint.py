"""Inpainting geometry: the contract's mask convention, the working size, and the composite back.

The contract's mask is BLACK = regenerate, WHITE = keep, at any size; diffusers wants WHITE = repaint at
the working size. The output has the input image's size, and every pixel under white mask is copied
from the input byte for byte; the seam is softened only inside the regenerated area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from model.errors import InputError
from model.sizes import Size, working_size

# Grey mask values at or above this count as white (kept); anti-aliased edges are thresholded.
KEEP_THRESHOLD = 128
# Width, in pixels of the original image, of the blend ramp inside the regenerated area.
SEAM_PIXELS = 8


@dataclass(frozen=True)
class InpaintPlan:
    """An inpainting image prepared for the pipeline, and what is needed to composite the result back."""

    original: Image.Image  # RGB, the input's size
    keep: np.ndarray  # bool (height, width): True where the mask is white
    working_image: Image.Image  # RGB at the working size
    working_mask: Image.Image  # "L" at the working size, WHITE = repaint (diffusers' convention)

    @property
    def working_size(self) -> Size:
        return Size(*self.working_image.size)

    @classmethod
    def prepare(cls, image: Image.Image, mask: Image.Image) -> InpaintPlan:
        image = image.convert("RGB")
        mask = mask.convert("L")
        if mask.size != image.size:
            mask = mask.resize(image.size, Image.Resampling.BILINEAR)
        keep = np.asarray(mask) >= KEEP_THRESHOLD
        if keep.all():
            raise InputError(
                "mask is all white, so nothing would be regenerated: paint black where the character goes"
            )
        size = working_size(Size(*image.size))
        regenerate = Image.fromarray(np.where(keep, 0, 255).astype(np.uint8))
        return cls(
            original=image,
            keep=keep,
            working_image=image.resize((size.width, size.height), Image.Resampling.LANCZOS),
            # Nearest keeps the working mask binary; the seam is handled in composite().
            working_mask=regenerate.resize((size.width, size.height), Image.Resampling.NEAREST),
        )

    def blend_weights(self) -> np.ndarray:
        """Weight of the generated pixels: 0 on kept pixels, rising to 1 within SEAM_PIXELS of them."""
        if not self.keep.any():  # all black: nothing to blend with (and EDT needs a kept pixel)
            return np.ones((*self.keep.shape, 1), dtype=np.float32)
        distance_to_kept = ndimage.distance_transform_edt(~self.keep)
        return np.clip(distance_to_kept / SEAM_PIXELS, 0.0, 1.0).astype(np.float32)[..., None]

    def composite(self, generated: Image.Image) -> Image.Image:
        """The generated working image, scaled to the original size and laid under the kept pixels."""
        generated = generated.convert("RGB").resize(self.original.size, Image.Resampling.LANCZOS)
        original = np.asarray(self.original, dtype=np.float32)
        weights = self.blend_weights()
        blended = original * (1 - weights) + np.asarray(generated, dtype=np.float32) * weights
        result = np.where(self.keep[..., None], np.asarray(self.original), np.rint(blended).astype(np.uint8))
        return Image.fromarray(result)
