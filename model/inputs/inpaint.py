"""Inpainting geometry: crop-and-stitch around the mask, colour profiles, and the composite back.

The contract's mask is BLACK = regenerate, WHITE = keep (model/inputs/masks.py reads and checks it); diffusers
wants WHITE = repaint at the working size. Only a crop around the regenerated area is denoised: its
bounding box with context on every side, at SDXL's native size (about one megapixel, sides multiples of
32), so a small area of a large photo is generated at full detail instead of at the whole image's reduced
scale. The crop is then composited back: the output has the input image's size, every pixel under white
mask is the input's byte for byte, and the seam is softened only inside the regenerated area.

Colours: the models work in sRGB. An image with an RGB ICC profile is denoised converted to sRGB; the
generated pixels are converted back into the image's profile before compositing, and the output carries
that profile, so kept pixels are byte-identical and look the same, and the new ones match them.

The crop is diffusers' own (`VaeImageProcessor.get_crop_region`, what `padding_mask_crop` uses). The
pipeline's `padding_mask_crop` itself is not used: its `apply_overlay` pastes the generated crop with a hard
edge and in the image's own colour space, and it would send the whole full-size image through the pipeline's
preprocessing; the composite here keeps the seam ramp, the byte-for-byte guarantee and the colour profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from scipy import ndimage

from model.errors import InputError
from model.inputs.images import from_srgb, to_srgb
from model.inputs.masks import KEEP_THRESHOLD
from model.inputs.sizes import Size, working_size

__all__ = ["KEEP_THRESHOLD", "Box", "InpaintPlan", "crop_box"]

# Width, in pixels of the original image, of the blend ramp inside the regenerated area.
SEAM_PIXELS = 8
# Context around the regenerated area's bounding box on each side: a quarter of the box's longer side (the
# box is then two thirds of the crop, so the model sees what it paints into), and at least this many pixels.
CONTEXT_FRACTION = 0.25
MIN_CONTEXT_PIXELS = 32
# SDXL's most elongated trained sizes are 3:1 and 1:3 (model/inputs/sizes.py): a thinner crop is widened.
MAX_CROP_RATIO = 3.0


@dataclass(frozen=True)
class Box:
    """A rectangle of the image in pixels: left and top included, right and bottom excluded."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def size(self) -> Size:
        return Size(self.right - self.left, self.bottom - self.top)

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


def density(working: Size, region: Size) -> float:
    """Denoised pixels per original pixel along the less favoured axis (1.0 = the original's detail)."""
    return min(working.width / region.width, working.height / region.height)


def crop_box(keep: np.ndarray) -> tuple[Box, Size]:
    """The region to denoise and its working size, for a keep mask (bool, height x width) with a False pixel.

    The regenerated area's bounding box, padded with context, widened to at most MAX_CROP_RATIO and to the
    working size's aspect ratio by diffusers' get_crop_region, clamped to the image. Its working size has
    the crop's aspect ratio, about one megapixel, with sides rounded up so that a crop of at most one
    megapixel is never scaled down. When that would give the regenerated area fewer pixels than denoising
    the whole image (a crop almost as large as the image), the whole image is denoised, as before.
    """
    height, width = keep.shape
    whole = Box(0, 0, width, height)
    whole_size = working_size(whole.size)
    rows = np.flatnonzero((~keep).any(axis=1))
    columns = np.flatnonzero((~keep).any(axis=0))
    box_width, box_height = columns[-1] + 1 - columns[0], rows[-1] + 1 - rows[0]
    pad = max(MIN_CONTEXT_PIXELS, round(CONTEXT_FRACTION * max(box_width, box_height)))
    target_width, target_height = box_width + 2 * pad, box_height + 2 * pad
    target_width = max(target_width, target_height / MAX_CROP_RATIO)
    target_height = max(target_height, target_width / MAX_CROP_RATIO)
    regenerate = Image.fromarray(np.where(keep, 0, 255).astype(np.uint8))
    crop = Box(*VaeImageProcessor.get_crop_region(regenerate, target_width, target_height, pad=pad))
    size = working_size(crop.size, round_up=True)
    if crop == whole or density(size, crop.size) < density(whole_size, whole.size):
        return whole, whole_size
    return crop, size


def keep_at_size(mask: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The kept pixels (bool, height x width) of an "L" mask (BLACK = regenerate) laid on an image of `size`.

    Scaled up (or kept), the mask is interpolated and thresholded. Scaled down, every image pixel whose
    footprint holds a regenerated mask pixel is regenerated (a max-pool of the regenerated area, by the
    area-weighted BOX filter): a 2-pixel stroke on a mask drawn at four times the image's size keeps its
    place instead of averaging away to light grey, which would be kept.
    """
    if mask.size == size:
        return np.asarray(mask) >= KEEP_THRESHOLD
    if mask.width <= size[0] and mask.height <= size[1]:
        return np.asarray(mask.resize(size, Image.Resampling.BILINEAR)) >= KEEP_THRESHOLD
    regenerate = Image.fromarray(np.where(np.asarray(mask) < KEEP_THRESHOLD, 255, 0).astype(np.uint8))
    return np.asarray(regenerate.resize(size, Image.Resampling.BOX)) == 0


@dataclass(frozen=True)
class InpaintPlan:
    """An inpainting image prepared for the pipeline, and what is needed to composite the result back."""

    original: Image.Image  # RGB, the input's size and colour space (its ICC profile in info, if any)
    keep: np.ndarray  # bool (height, width): True where the mask is white
    crop: Box  # the region of `original` that is denoised
    working_image: Image.Image  # the crop in sRGB, at the working size
    working_mask: Image.Image  # "L" at the working size, WHITE = repaint (diffusers' convention)

    @property
    def working_size(self) -> Size:
        return Size(*self.working_image.size)

    @property
    def density(self) -> float:
        """Denoised pixels per original pixel in the regenerated area (1.0 = the input's own detail)."""
        return density(self.working_size, self.crop.size)

    @property
    def icc_profile(self) -> bytes | None:
        return self.original.info.get("icc_profile") or None

    @classmethod
    def prepare(cls, image: Image.Image, mask: Image.Image) -> InpaintPlan:
        """image: RGB (an RGB ICC profile in info is honoured); mask: "L", BLACK = regenerate, any size with
        the image's aspect ratio (model/inputs/masks.py checks it), laid on the image by keep_at_size."""
        image = image.convert("RGB")  # keeps info, and with it the ICC profile
        keep = keep_at_size(mask.convert("L"), image.size)
        if keep.all():
            raise InputError(
                "mask is all white, so nothing would be regenerated: paint black where the character goes"
            )
        crop, size = crop_box(keep)
        region = (crop.left, crop.top, crop.right, crop.bottom)
        regenerate = Image.fromarray(np.where(keep[crop.slices()], 0, 255).astype(np.uint8))
        return cls(
            original=image,
            keep=keep,
            crop=crop,
            working_image=to_srgb(image.crop(region)).resize(
                (size.width, size.height), Image.Resampling.LANCZOS
            ),
            # Nearest keeps the working mask binary; the seam is handled in composite().
            working_mask=regenerate.resize((size.width, size.height), Image.Resampling.NEAREST),
        )

    def blend_weights(self, keep: np.ndarray) -> np.ndarray:
        """Weight of the generated pixels: 0 on kept pixels, rising to 1 within SEAM_PIXELS of them.

        Computed on the crop: every regenerated pixel is at least MIN_CONTEXT_PIXELS > SEAM_PIXELS inside
        it (or at the image's border), so its nearest kept pixel within the ramp is in the crop too.
        """
        if not keep.any():  # all black: nothing to blend with (and EDT needs a kept pixel)
            return np.ones((*keep.shape, 1), dtype=np.float32)
        distance_to_kept = ndimage.distance_transform_edt(~keep)
        return np.clip(distance_to_kept / SEAM_PIXELS, 0.0, 1.0).astype(np.float32)[..., None]

    def composite(self, generated: Image.Image) -> Image.Image:
        """The generated working image (sRGB), scaled to the crop, converted to the input's colour profile
        and laid under the kept pixels; the result has the input's size and carries its ICC profile."""
        crop_size = self.crop.size
        generated = generated.convert("RGB").resize(
            (crop_size.width, crop_size.height), Image.Resampling.LANCZOS
        )
        generated = from_srgb(generated, self.icc_profile)
        rows, columns = self.crop.slices()
        keep = self.keep[rows, columns]
        original = np.asarray(self.original)
        region = original[rows, columns]
        weights = self.blend_weights(keep)
        blended = region.astype(np.float32) * (1 - weights) + np.asarray(generated, np.float32) * weights
        result = original.copy()
        result[rows, columns] = np.where(keep[..., None], region, np.rint(blended).astype(np.uint8))
        output = Image.fromarray(result)
        if self.icc_profile:
            output.info["icc_profile"] = self.icc_profile
        return output
