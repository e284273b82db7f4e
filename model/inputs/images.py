"""Reading the images a user sends: any common file and mode in, an upright 8-bit RGB (or L mask) image out.

Every failure to read an input is an InputError that names the input and says what to send instead. Rules:
- EXIF orientation is applied, so a phone photo is upright whatever its pixel order.
- Transparency is composited over white: a cut-out character reads as being on a plain white background.
  A mask's transparency is handed on as its own layer (load_mask); model/inputs/masks.py decides what it
  means.
- 16-bit and 32-bit greyscale is scaled by its bit depth (65535 -> 255), never stretched per image, so one
  grey level always gives the same 8-bit value.
- An animated GIF or WebP gives its first frame.
- HEIC/HEIF (the default format of iPhones) is read with pillow-heif, registered with Pillow on first use.
- Size limits are checked from the header, before any pixel is decoded: the pixel count, and the aspect
  ratio, at most MAX_ASPECT_RATIO. An image is decoded in full up to
  MAX_DECODED_PIXELS. A caller that needs fewer pixels (the reference) may let a larger baseline JPEG be
  decoded at a reduced scale, up to MAX_REDUCED_PIXELS in the header, so the full-size image never exists in
  memory (libjpeg's DCT scaling, Pillow's Image.draft).
- An embedded ICC colour profile is kept: an RGB profile travels with the pixels in `info["icc_profile"]`
  (to_srgb converts for the models, from_srgb converts back); any other (CMYK, greyscale) is applied when
  the image becomes RGB, giving sRGB pixels.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from model.errors import InputError
from model.inputs.gif import first_frame_alone

log = logging.getLogger(__name__)

# The largest image decoded at full size: 8192 x 6144 holds the 50-megapixel mode of current phones
# (8160 x 6144). Decoded, it is 151 MB as RGB and 201 MB as RGBA.
MAX_DECODED_PIXELS = 8192 * 6144
# The largest header accepted for a file decoded at a reduced scale: 16384 x 16384 holds the 200-megapixel
# phone sensors (16320 x 12240). At JPEG's smallest scale, 1/8, it decodes to 4.2 megapixels.
MAX_REDUCED_PIXELS = 16384 * 16384
# Formats Pillow can decode at 1/2, 1/4 or 1/8 scale (JpegImageFile.draft; MPO is JPEG's multi-picture form).
# A progressive JPEG is excluded: libjpeg holds all its DCT coefficients at full size whatever the output
# scale (measured: 637 MB to read a 200-megapixel progressive JPEG at 1/4 scale, 52 MB for a baseline one).
_REDUCIBLE_FORMATS = {"JPEG", "MPO"}
# PNG metadata read, decompressed: a text or ICC chunk up to MAX_METADATA_CHUNK (Pillow's default, 1 MiB, is
# exceeded by the workflows and parameters that image generators and editors embed, and by large LUT ICC
# profiles), and all text chunks together up to MAX_METADATA (Pillow's default). Both are held in memory
# while the file is read, so they stay bounded; a larger file is refused naming them.
MAX_METADATA_CHUNK = 16 * 2**20
MAX_METADATA = 64 * 2**20
# The most elongated image accepted, longer side to shorter. The face detector reads every image (the
# reference, and the output, which has the inpainting image's size) with its longer side scaled to 640 px
# (model/identity/faces.py) and its coarsest grid is 32 px: beyond 20:1 the shorter side is under one
# cell there, and beyond 640:1 under one pixel, which the detector cannot even resize to. At 20:1 the
# inpainting working size is still about one megapixel (4576x224); a thinner strip would have its 32-px
# minimum side inflate the megapixel budget. No photo or panorama format is that thin.
MAX_ASPECT_RATIO = 20
WHITE = (255, 255, 255)
ACCEPTED_FORMATS = "send a JPEG, PNG, WebP or HEIC file"

# Pillow's high-bit-depth single-channel modes. I;16 is 16-bit by definition; I (32-bit integer) and F (float)
# hold whatever the file held, so their full scale is the smallest of 1 (float only), 255 and 65535 that holds
# the largest value (Pillow opens many 16-bit PNGs and TIFFs as I).
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_HIGH_BIT_MODES = _SIXTEEN_BIT_MODES | {"I", "F"}


def load_image(
    path: str | os.PathLike, input_name: str, *, reduce_to_pixels: int | None = None
) -> Image.Image:
    """Read an input image as upright 8-bit RGB; raise InputError naming `input_name` if it cannot be used.

    reduce_to_pixels: when given, a baseline JPEG with more pixels is decoded at the smallest of JPEG's
    scales (1/2, 1/4, 1/8) that keeps at least this many, and such a JPEG is accepted up to
    MAX_REDUCED_PIXELS; for a caller that reads the image at a smaller size anyway. Otherwise the image
    comes at its full size, up to MAX_DECODED_PIXELS.
    An embedded RGB colour profile is in the result's `info["icc_profile"]` (see keep_colour_profile).
    """
    image = _open_upright(path, input_name, reduce_to_pixels)
    return keep_colour_profile(image, _as_rgb(image), input_name)


def _as_rgb(image: Image.Image) -> Image.Image:
    if _has_transparency(image):
        return _over_white(image)
    if image.mode in _HIGH_BIT_MODES:
        return _grey_to_8bit(image).convert("RGB")
    if image.mode == "RGB":
        return image  # convert() would copy it: 151 MB at the largest size
    # Pillow converts every remaining mode (L, 1, P, CMYK, YCbCr, LAB, HSV); a non-RGB ICC profile is
    # applied by keep_colour_profile instead, where there is one.
    return image.convert("RGB")


@dataclass(frozen=True)
class MaskLayers:
    """A mask file as decoded, before anything is decided about its meaning (model/inputs/masks.py does that).

    grey: "L", the colour channels as 8-bit grey (high bit depths scaled by their depth), upright.
    alpha: "L", its transparency (alpha channel or colour key), or None when the file has none.
    """

    grey: Image.Image
    alpha: Image.Image | None

    @property
    def size(self) -> tuple[int, int]:
        return self.grey.size


def load_mask(path: str | os.PathLike, input_name: str = "mask") -> MaskLayers:
    """Read a mask file as its grey level and, when it has one, its transparency, both upright 8-bit."""
    image = _open_upright(path, input_name, None)
    if image.mode in _HIGH_BIT_MODES:
        # A high-bit greyscale image (with or without a colour key): reduce to 8 bits first, since
        # Pillow's own conversions clip at 255.
        key = image.info.get("transparency")
        image = _grey_to_8bit(image)
        if key is not None:
            image.info["transparency"] = key if key <= 255 else round(key / 257)
    if not _has_transparency(image):
        return MaskLayers(grey=image.convert("L"), alpha=None)
    rgba = image.convert("RGBA")
    return MaskLayers(grey=rgba.convert("RGB").convert("L"), alpha=rgba.getchannel("A"))


def _unreadable(input_name: str, reason: str) -> InputError:
    return InputError(f"{input_name} is not a readable image ({reason}): {ACCEPTED_FORMATS}")


@cache
def _register_formats() -> None:
    """Teach Pillow, once per process, what the limits above assume: HEIF files, large headers and metadata.

    Pillow's decompression-bomb check (Image.MAX_IMAGE_PIXELS, by default 89 megapixels, an error above
    twice that) would refuse a 200-megapixel JPEG before its header can be read. The checks of this module
    replace it: they refuse anything over MAX_REDUCED_PIXELS from the header, so Pillow's limit is raised
    to that and still stops anything larger that reaches Pillow another way. Likewise its PNG metadata
    bounds are set to MAX_METADATA_CHUNK and MAX_METADATA. These settings are Pillow's process-wide
    registries; they are set here, on the first image read, rather than at import time.
    """
    pillow_heif.register_heif_opener()
    Image.MAX_IMAGE_PIXELS = MAX_REDUCED_PIXELS
    PngImagePlugin.MAX_TEXT_CHUNK = MAX_METADATA_CHUNK
    PngImagePlugin.MAX_TEXT_MEMORY = MAX_METADATA


def _open_upright(path: str | os.PathLike, input_name: str, reduce_to_pixels: int | None) -> Image.Image:
    """Open, check the size from the header, decode the first frame (at a reduced scale when allowed and
    possible) and apply EXIF orientation."""
    image = _open_header(Path(path), input_name, reduce_to_pixels)
    try:
        width, height = image.size
        if width == 0 or height == 0:
            raise _unreadable(input_name, f"it is {width}x{height} pixels")
        check_proportions((width, height), input_name)
        reducible = reduce_to_pixels is not None and _reducible(image)
        if width * height > (MAX_REDUCED_PIXELS if reducible else MAX_DECODED_PIXELS):
            raise _too_large(input_name, (width, height), reduce_to_pixels)
        if reducible:
            _reduce(image, reduce_to_pixels, input_name)
        return _decode_upright(image, input_name)
    except BaseException:
        image.close()
        raise


def check_proportions(size: tuple[int, int], input_name: str) -> None:
    """InputError for an image more elongated than MAX_ASPECT_RATIO, with its size and the limit."""
    width, height = size
    longer, shorter = max(width, height), min(width, height)
    if longer > MAX_ASPECT_RATIO * shorter:
        raise InputError(
            f"{input_name} is {width}x{height} pixels, an aspect ratio of {longer / shorter:.0f}:1; "
            f"this server reads images up to {MAX_ASPECT_RATIO}:1 (its face detector sees the longer side "
            "at 640 pixels and cannot search a strip thinner than 32): crop it to a less elongated shape"
        )


def _open_header(path: Path, input_name: str, reduce_to_pixels: int | None) -> Image.Image:
    """Open the file and read its header only (Pillow decodes lazily); an InputError for what is no image."""
    _register_formats()
    if not path.is_file():
        # Cog turns http(s) URLs and data URIs into files; any other string (a bare name, ftp://...) reaches
        # the predictor as a path that names no file. That is the user's input, not the server's files.
        raise InputError(
            f"{input_name} names no file ({str(path)!r}): send an http(s) URL or a data URI of an image"
        )
    if path.stat().st_size == 0:
        raise _unreadable(input_name, "the file is empty")
    try:
        rewritten = first_frame_alone(path, MAX_DECODED_PIXELS)
        if rewritten is None:
            return Image.open(path)
        data, layout = rewritten
        log.info(
            "Read %s (a GIF whose logical screen is %dx%d) as its first frame: %dx%d",
            input_name,
            *layout.screen,
            *layout.frame,
        )
        return Image.open(data)
    except UnidentifiedImageError:
        raise _unreadable(input_name, "not an image format this server reads") from None
    except Image.DecompressionBombError:
        raise _too_large(input_name, None, reduce_to_pixels) from None
    except PermissionError:
        raise  # the server's file handling, not the user's image
    except (OSError, SyntaxError, ValueError) as error:
        _raise_if_metadata_too_large(error, input_name)
        # Pillow reports a recognised but broken header this way ("Truncated File Read", "broken PNG file").
        raise _unreadable(input_name, f"the file is corrupt: {error}") from None


def _raise_if_metadata_too_large(error: Exception, input_name: str) -> None:
    """InputError naming the metadata bound when Pillow refused a PNG's text or ICC chunk for its size."""
    if "MAX_TEXT_CHUNK" in str(error) or "MAX_TEXT_MEMORY" in str(error):
        raise InputError(
            f"{input_name} carries metadata (a PNG text chunk or ICC profile) larger than this server reads "
            f"({MAX_METADATA_CHUNK // 2**20} MiB a chunk, {MAX_METADATA // 2**20} MiB in all, decompressed): "
            "save it again without its metadata"
        ) from None


def _decode_upright(image: Image.Image, input_name: str) -> Image.Image:
    """Decode the first frame of an opened image and turn it as its EXIF orientation says."""
    try:
        # Only the first frame of an animation is decoded (Image.open starts there). Loading closes the
        # file; the decoded pixels stay.
        image.load()
        if getattr(image, "fp", None) is not None:
            # A multi-frame file stays open after load() (for seek): keep the frame, close the file.
            frame = image.copy()
            image.close()
            image = frame
        # Rotated as its EXIF orientation says, in place: no second copy of a large image when there is
        # nothing to turn. HEIF applies its own rotation box when decoding (libheif) and pillow-heif
        # resets the EXIF orientation to 1, so nothing is turned twice.
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError) as error:
        _raise_if_metadata_too_large(error, input_name)
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated"), and some
        # plugins as SyntaxError or ValueError.
        raise _unreadable(input_name, f"the file is truncated or corrupt: {error}") from None
    return image


def _reducible(image: Image.Image) -> bool:
    """Whether the file can be decoded at a reduced scale without a full-size buffer (a baseline JPEG)."""
    return image.format in _REDUCIBLE_FORMATS and not image.info.get("progressive")


def _reduce(image: Image.Image, at_least_pixels: int, input_name: str) -> None:
    """Set a JPEG to decode at the smallest scale of 1/2, 1/4 and 1/8 that keeps at_least_pixels pixels."""
    width, height = image.size
    for scale in (8, 4, 2):
        if (width // scale) * (height // scale) >= at_least_pixels:
            # Pillow picks the largest scale whose result is at least the size asked for.
            image.draft(None, (width // scale, height // scale))
            log.info("Read %s (%dx%d) at 1/%d scale: %dx%d", input_name, width, height, scale, *image.size)
            return


def _too_large(input_name: str, size: tuple[int, int] | None, reduce_to_pixels: int | None) -> InputError:
    largest = MAX_REDUCED_PIXELS if reduce_to_pixels is not None else MAX_DECODED_PIXELS
    if size is None:
        # Pillow's own bomb check fired (set to MAX_REDUCED_PIXELS by _register_formats).
        return InputError(f"{input_name} is larger than {largest / 1e6:.0f} megapixels: send a smaller image")
    width, height = size
    described = f"{input_name} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels)"
    full = f"{MAX_DECODED_PIXELS / 1e6:.0f} megapixels"
    if reduce_to_pixels is None:
        return InputError(f"{described}, more than the {full} this server accepts: send a smaller image")
    if width * height > MAX_REDUCED_PIXELS:
        return InputError(
            f"{described}, more than the {largest / 1e6:.0f} megapixels this server accepts: "
            "send a smaller image"
        )
    return InputError(
        f"{described}, more than the {full} this server decodes at full size; larger photos are read only "
        f"as baseline (non-progressive) JPEG, up to {largest / 1e6:.0f} megapixels: send a camera JPEG or "
        "a smaller image"
    )


def _has_transparency(image: Image.Image) -> bool:
    # Alpha bands (RGBA, LA, PA, RGBa, La) or a transparent colour key (P, L or RGB with a tRNS chunk).
    return "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info


def _over_white(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_BIT_MODES:
        # A high-bit image with a colour key: reduce to 8 bits first (Pillow's RGBA conversion clips).
        image = _grey_to_8bit(image)
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _grey_to_8bit(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float greyscale image to mode L by its bit depth."""
    values = np.asarray(image).astype(np.float64)
    largest = values.max() if values.size else 0.0
    if image.mode in _SIXTEEN_BIT_MODES:
        full_scale = 65535.0
    elif image.mode == "F" and largest <= 1.0:
        full_scale = 1.0
    else:
        full_scale = 255.0 if largest <= 255 else 65535.0
    scaled = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)


# ---------------------------------------------------------------- colour profiles (ICC)

# The models (SDXL's VAE, the CLIP image encoder, insightface) were trained on sRGB images.
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# Colorimetric: in-gamut colours map exactly; the only intent every matrix/TRC profile implements.
_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC


def keep_colour_profile(source: Image.Image, rgb: Image.Image, input_name: str) -> Image.Image:
    """`rgb` (source converted to RGB) with source's ICC profile kept or applied.

    An RGB profile stays with the pixels, in rgb.info["icc_profile"], so kept pixels can stay byte-identical
    and the output can carry it. A profile of another colour space (a CMYK or greyscale one) is applied now,
    giving sRGB pixels without a profile, since the RGB pixels no longer match it. A profile that littleCMS
    cannot read is logged and dropped (the pixels are then read as sRGB, as a browser without colour
    management would show them).
    """
    icc = source.info.get("icc_profile")
    rgb.info.pop("icc_profile", None)
    if not icc:
        return rgb
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if space == "RGB":
            rgb.info["icc_profile"] = icc
            return rgb
        mode = {"CMYK": "CMYK", "GRAY": "L"}.get(space)
        if mode is None or source.mode != mode:
            raise ImageCms.PyCMSError(f"a {space} profile on a {source.mode} image")
        converted = ImageCms.profileToProfile(
            source, profile, SRGB, renderingIntent=_INTENT, outputMode="RGB"
        )
        converted.info.pop("icc_profile", None)  # ImageCms attaches sRGB's; no profile means sRGB here
        return converted
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        log.warning("%s: its ICC profile cannot be used (%s); reading its colours as sRGB", input_name, error)
        return rgb


def profile_name(image: Image.Image) -> str:
    """The description of an image's ICC profile ("Display P3", "Adobe RGB (1998)"), for the log."""
    icc = image.info.get("icc_profile")
    if not icc:
        return "none"
    return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip() or "unnamed"


def to_srgb(image: Image.Image) -> Image.Image:
    """An RGB image in sRGB, converted from its info["icc_profile"] if it has one (the input otherwise)."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    converted = ImageCms.profileToProfile(
        image, ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB, renderingIntent=_INTENT, outputMode="RGB"
    )
    converted.info.pop("icc_profile", None)
    return converted


def from_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """An sRGB RGB image converted into the colour space of the ICC profile `icc`, which it then carries."""
    if not icc:
        return image
    converted = ImageCms.profileToProfile(
        image, SRGB, ImageCms.ImageCmsProfile(io.BytesIO(icc)), renderingIntent=_INTENT, outputMode="RGB"
    )
    converted.info["icc_profile"] = icc
    return converted
