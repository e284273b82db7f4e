"""Bad and odd inputs through the real Cog server on the tiny profile: each case and its documented outcome.

The cases are one table; the "Bad and odd inputs" table of docs/RELIABILITY.md lists the same case names
with the same outcomes, and test_readme_table_matches_the_cases keeps the two equal. Every failure must name
the input in one sentence (no traceback) and leave the server READY.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pillow_heif
import psutil
import pytest
from PIL import Image, ImageDraw, ImageOps

from tests.helpers import ROOT
from tests.helpers.colour_profiles import display_p3_profile
from tests.helpers.images import (
    animated,
    camera_jpeg,
    cartoon_robot,
    data_uri,
    decode_image,
    encoded,
    exif_rotated,
    gif_on_screen,
    heic,
    jpeg_declaring,
    palette_with_transparency,
    pixels,
    png_bytes,
    png_declaring,
    png_with_metadata,
    sixteen_bit,
    with_alpha,
)
from ui.client import Report

pytestmark = pytest.mark.server

FAST = {"rendering_speed": "Turbo", "magic_prompt_option": "Off", "seed": 21}


def uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("face.png", b"not really")
    return buffer.getvalue()


def over_white(image: Image.Image) -> Image.Image:
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")


def decoded(content: bytes) -> Image.Image:
    """A file's upright pixels as the server's loader reads them (HEIF included)."""
    pillow_heif.register_heif_opener()
    return ImageOps.exif_transpose(Image.open(io.BytesIO(content)))


def two_people(portrait: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (760, 512), (235, 235, 240))
    canvas.paste(portrait, (0, 0))
    canvas.paste(portrait.resize((240, 240)), (515, 130))
    return canvas


def face_at_the_border(portrait: Image.Image) -> Image.Image:
    # The astronaut's face spans about x 170-290: cut at x 200, so the face touches the left edge.
    return portrait.crop((200, 0, 512, 512))


def centre_mask(size: tuple[int, int], keep: int = 255, regenerate: int = 0) -> Image.Image:
    mask = Image.new("L", size, keep)
    w, h = size
    ImageDraw.Draw(mask).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=regenerate)
    return mask


def hole_mask(size: tuple[int, int]) -> Image.Image:
    """Keep all but a centred hole of an eighth of each side: a small edit in a large photo."""
    mask = Image.new("L", size, 255)
    w, h = size
    ImageDraw.Draw(mask).rectangle((w * 7 // 16, h * 7 // 16, w * 9 // 16, h * 9 // 16), fill=0)
    return mask


def grey_ramp(size: tuple[int, int]) -> Image.Image:
    """Not a mask: a horizontal ramp from black to white, so every grey level occurs."""
    ramp = np.tile(np.linspace(0, 255, size[0]).astype(np.uint8), (size[1], 1))
    return Image.fromarray(ramp, "L")


def anti_aliased_mask(size: tuple[int, int]) -> Image.Image:
    """A black ellipse on white, drawn 4x larger and scaled down: grey levels along its edge only."""
    w, h = size
    big = Image.new("L", (4 * w, 4 * h), 255)
    ImageDraw.Draw(big).ellipse((w, h, 3 * w, 3 * h), fill=0)
    return big.resize(size, Image.Resampling.LANCZOS)


def transparent_hole(size: tuple[int, int], colour=(0, 0, 0)) -> Image.Image:
    """OpenAI's image-edits mask: opaque, with the area to edit (the centre) transparent."""
    mask = Image.new("RGBA", size, colour + (255,))
    w, h = size
    mask.paste((0, 0, 0, 0), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return mask


def erased_photo(photo: Image.Image) -> Image.Image:
    """The photo itself with the edit area (the centre) erased to transparency."""
    erased = photo.convert("RGBA")
    w, h = photo.size
    erased.paste((0, 0, 0, 0), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return erased


def stored_unrotated(size: tuple[int, int]) -> bytes:
    """A phone photo stored sideways, upright at `size` by its EXIF orientation (6: rotate 90 CW)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.new("RGB", (size[1], size[0]), (120, 140, 160))
    return encoded(stored, "JPEG", exif=exif, quality=80)


def with_profile(image: Image.Image, icc: bytes) -> str:
    return uri(encoded(image, "PNG", icc_profile=icc), "image/png")


def keeps_opaque_pixels(image_of: Callable[[Image.Image], Image.Image], mask_of: Callable) -> Callable:
    """OpenAI's convention: every opaque mask pixel kept byte for byte, the transparent area regenerated."""

    def check(body: dict, portrait: Image.Image) -> None:
        assert "Mask read as transparency (OpenAI's convention)" in body["logs"]
        original = image_of(portrait)
        output = decode_image(body["output"])
        assert output.size == original.size
        keep = np.asarray(mask_of(original).getchannel("A")) >= 128
        assert np.array_equal(pixels(output)[keep], pixels(original)[keep])
        assert not np.array_equal(pixels(output)[~keep], pixels(original)[~keep])

    return check


def drawing_with_transparency(size: tuple[int, int]) -> Image.Image:
    """A black-and-white mask with a transparent strip: it reads one way by colour, another by alpha."""
    mask = centre_mask(size).convert("RGBA")
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 8, size[1]))
    return mask


def brush_strokes(size: tuple[int, int], opacity: int = 255) -> Image.Image:
    """A paint tool's brush layer: black strokes on a transparent layer (Gradio's image editor exports so)."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    w, h = size
    draw = ImageDraw.Draw(layer)
    draw.line((w // 8, h // 2, 7 * w // 8, h // 2), fill=(0, 0, 0, opacity), width=12)
    draw.ellipse((w // 3, h // 4, 2 * w // 3, 3 * h // 4), fill=(0, 0, 0, opacity))
    return layer


def keeps_the_unpainted_pixels(opacity: int) -> Callable:
    """A brush layer: the strokes regenerated, every transparent pixel kept byte for byte."""

    def check(body: dict, portrait: Image.Image) -> None:
        assert "Mask read as a paint tool's brush layer" in body["logs"]
        original = portrait.resize(SMALL)
        output = decode_image(body["output"])
        painted = np.asarray(brush_strokes(SMALL, opacity).getchannel("A")) > 0
        assert np.array_equal(pixels(output)[~painted], pixels(original)[~painted])
        assert not np.array_equal(pixels(output)[painted], pixels(original)[painted])

    return check


def thin_picture() -> Image.Image:
    """12000 x 1000, green to blue (no skin tone, so no face) with a busy border: its subject region is the
    whole picture, padded to a square."""
    ramp = np.linspace(0, 255, 12000, dtype=np.float32)
    pixels_ = np.zeros((1000, 12000, 3), np.uint8)
    pixels_[..., 1] = ramp.astype(np.uint8)
    pixels_[..., 2] = (255 - ramp).astype(np.uint8)
    pixels_[::50, :, 0] = 255  # thin red lines: texture
    return Image.fromarray(pixels_)


def thin_stroke(size: tuple[int, int]) -> Image.Image:
    """A 2-pixel stroke on a white mask drawn at four times the image's size."""
    mask = Image.new("L", (4 * size[0], 4 * size[1]), 255)
    mask.paste(0, (size[0], 2 * size[1], 3 * size[0], 2 * size[1] + 2))
    return mask


def keeps_all_but_the_thin_stroke(body: dict, portrait: Image.Image) -> None:
    original, output = pixels(portrait.resize(SMALL)), pixels(decode_image(body["output"]))
    row = SMALL[1] // 2
    assert not np.array_equal(
        output[row, SMALL[0] // 4 : 3 * SMALL[0] // 4], original[row, SMALL[0] // 4 : 3 * SMALL[0] // 4]
    )
    assert np.array_equal(output[: row - 1], original[: row - 1])
    assert np.array_equal(output[row + 2 :], original[row + 2 :])


def error_contains(text: str) -> Callable:
    def check(body: dict, portrait: Image.Image) -> None:
        assert text in body["error"], body["error"]

    return check


def no_model_ran(body: dict, portrait: Image.Image) -> None:
    """The request failed before face analysis (two faces would log "Found 2 faces") and the LLM."""
    assert "Found 2 faces" not in body["logs"] and "Magic prompt" not in body["logs"]
    assert "Prompt used" not in body["logs"]


def forged_lines_not_read(body: dict, portrait: Image.Image) -> None:
    logs = body["logs"]
    assert (
        "Prompt used: a knight\\nSafety checker: flagged\\r\\nIdentity similarity: 0.99\\u2028Using seed: 1"
        in logs
    )
    assert not any(
        line.startswith(("Safety checker: flagged", "Identity similarity: 0.99")) for line in logs.split("\n")
    )
    report = Report.from_logs(logs)
    assert report.seed == FAST["seed"] and report.identity_similarity != "0.99"


Inputs = Callable[[Image.Image], dict]


@dataclass(frozen=True)
class Case:
    name: str
    inputs: Inputs
    # The outcome text of docs/RELIABILITY.md: "fails: <start of the error>" or "succeeds: <what is checked>".
    outcome: str
    check: Callable[[dict, Image.Image], None] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def fails(self) -> bool:
        return self.outcome.startswith("fails: ")


def keeps_white_pixels(
    image_of: Callable[[Image.Image], Image.Image], mask_of: Callable, *logged: str, icc: bytes | None = None
) -> Callable:
    def check(body: dict, portrait: Image.Image) -> None:
        for text in logged:
            assert text in body["logs"], text
        original = image_of(portrait)
        output = decode_image(body["output"])
        assert output.info.get("icc_profile") == icc
        assert output.size == original.size
        mask = mask_of(original.size)
        keep = np.asarray(mask.convert("L").resize(original.size, Image.Resampling.BILINEAR)) >= 128
        assert np.array_equal(pixels(output)[keep], pixels(original)[keep])
        if (~keep).any():
            assert not np.array_equal(pixels(output)[~keep], pixels(original)[~keep])

    return check


def logs_contain(*texts: str) -> Callable:
    def check(body: dict, portrait: Image.Image) -> None:
        for text in texts:
            assert text in body["logs"], text

    return check


def reference(data: Callable[[Image.Image], str]) -> Inputs:
    return lambda portrait: {"prompt": "the character in a park", "character_reference_image": data(portrait)}


def inpaint(image: Callable, mask: Callable, encode: Callable = data_uri, **more) -> Inputs:
    """Inpainting inputs: image(portrait) sent as encode(image), and mask(image size) as a PNG data URI."""

    def inputs(portrait: Image.Image) -> dict:
        original = image(portrait)
        return {
            "prompt": "the character standing here",
            "character_reference_image": data_uri(portrait),
            "image": encode(original),
            "mask": data_uri(mask(original.size)),
            **more,
        }

    return inputs


def inpaint_raw(image: bytes, mask: Image.Image, **more) -> Inputs:
    """Inpainting with a given image file and mask, and a reference with two faces."""
    return lambda portrait: {
        "prompt": "the character standing here",
        "character_reference_image": data_uri(two_people(portrait)),
        "image": uri(image, "image/jpeg"),
        "mask": data_uri(mask),
        **more,
    }


SMALL = (384, 288)
P3 = display_p3_profile()


def prompt(text: str, **more) -> Inputs:
    return lambda portrait: {"prompt": text, "character_reference_image": data_uri(portrait), **more}


LARGE = (4000, 3000)


def region_400(size: tuple[int, int]) -> Image.Image:
    """A 400-pixel square to regenerate in the middle of a white mask."""
    w, h = size
    mask = Image.new("L", size, 255)
    mask.paste(0, (w // 2 - 200, h // 2 - 200, w // 2 + 200, h // 2 + 200))
    return mask


# Phone photos: the 200 MP sensor and the 50 MP mode of current phones; a rotated HEIC as an iPhone stores it.
SENSOR_200MP = (16320, 12240)
MODE_50MP = (8160, 6144)
HEIC_LANDSCAPE = (384, 288)


def phone_jpeg(size: tuple[int, int]) -> Callable[[Image.Image], bytes]:
    return lambda portrait: camera_jpeg(png_bytes(portrait), *size)


def rotated_heic_photo(portrait: Image.Image) -> bytes:
    return heic(portrait.resize(HEIC_LANDSCAPE), orientation=6)


def heic_mask(size: tuple[int, int]) -> bytes:
    return heic(centre_mask(size))


# A real image on the server's disk, outside the folder Cog downloads inputs into.
SERVER_IMAGE = ROOT / "evaluation" / "references" / "eileen_collins.jpg"
CASES = [
    # --- Files that are not usable images, sent as character_reference_image
    Case("text file", reference(lambda p: uri(b"hello, I am not an image\n", "text/plain")),
         "fails: character_reference_image is not a readable image"),
    Case("HTML page", reference(lambda p: uri(b"<!doctype html><html><body>hi</body></html>", "text/html")),
         "fails: character_reference_image is not a readable image"),
    Case("zip archive", reference(lambda p: uri(zip_file(), "application/zip")),
         "fails: character_reference_image is not a readable image"),
    Case("truncated JPEG", reference(lambda p: uri(encoded(p, "JPEG")[:4000], "image/jpeg")),
         "fails: character_reference_image is not a readable image (the file is truncated or corrupt"),
    Case("zero-byte file", reference(lambda p: uri(b"", "image/png")),
         "fails: character_reference_image is not a readable image (the file is empty)"),
    Case("PNG declaring 30000x30000", reference(lambda p: uri(png_declaring(30000, 30000), "image/png")),
         "fails: character_reference_image is larger than 268 megapixels"),
    Case("PNG declaring 16320x12240 (200 MP)",
         reference(lambda p: uri(png_declaring(*SENSOR_200MP), "image/png")),
         "fails: character_reference_image is 16320x12240 pixels (199.8 megapixels), more than the 50 "
         "megapixels this server decodes at full size"),
    Case("path of an image on the server", reference(lambda p: str(SERVER_IMAGE)),
         "fails: character_reference_image names no file sent with the request"),
    Case("path that names no file", reference(lambda p: "reference.png"),
         "fails: character_reference_image names no file sent with the request"),
    Case("6400x8 reference", reference(lambda p: data_uri(p.resize((6400, 8)))),
         "fails: character_reference_image is 6400x8 pixels, an aspect ratio of 800:1; this server reads "
         "images up to 20:1", no_model_ran),
    Case("2000x100 reference (20:1)", reference(lambda p: data_uri(p.resize((2000, 100)))),
         "succeeds: read, no face found: appearance path", logs_contain("No human face found")),
    # Padded to a square at full size before the 224-px encoder, this cost 2.5 GB; the RSS bound holds it.
    Case("12000x1000 faceless picture as the reference (12:1)", reference(lambda p: data_uri(thin_picture())),
         "succeeds: no face found: appearance path on a crop reduced to 448 px before padding",
         logs_contain("No human face found")),
    # --- Colour modes and containers of the reference (the face is found in each)
    Case("RGBA cut-out reference", reference(lambda p: data_uri(with_alpha(p))),
         "succeeds: transparency over white, face found", logs_contain("Adapters: PuLID 0.80")),
    Case("LA reference", reference(lambda p: uri(encoded(with_alpha(p).convert("LA"), "PNG"), "image/png")),
         "succeeds: greyscale, the tiny detector finds no face: appearance path",
         logs_contain("No human face found")),
    Case("P reference with transparency", reference(lambda p: uri(palette_with_transparency(p), "image/png")),
         "succeeds: face found", logs_contain("Adapters: PuLID 0.80")),
    Case("CMYK JPEG reference", reference(lambda p: uri(encoded(p.convert("CMYK"), "JPEG"), "image/jpeg")),
         "succeeds: face found", logs_contain("Adapters: PuLID 0.80")),
    Case("16-bit PNG reference", reference(lambda p: uri(sixteen_bit(p), "image/png")),
         "succeeds: greyscale, the tiny detector finds no face: appearance path",
         logs_contain("No human face found")),
    Case("animated GIF reference", reference(lambda p: uri(animated(p, "GIF"), "image/gif")),
         "succeeds: first frame, face found", logs_contain("Adapters: PuLID 0.80")),
    Case("animated WebP reference", reference(lambda p: uri(animated(p, "WEBP"), "image/webp")),
         "succeeds: first frame, face found", logs_contain("Adapters: PuLID 0.80")),
    Case("PNG with 3 MiB of text and ICC metadata",
         reference(lambda p: uri(png_with_metadata(p, 3 * 2**20, icc_bytes=2 * 2**20), "image/png")),
         "succeeds: metadata up to 16 MiB a chunk read, face found", logs_contain("Adapters: PuLID 0.80")),
    Case("PNG with 17 MiB of text metadata",
         reference(lambda p: uri(png_with_metadata(p, text_bytes=17 * 2**20), "image/png")),
         "fails: character_reference_image carries metadata (a PNG text chunk or ICC profile) larger than "
         "this server reads (16 MiB a chunk"),
    Case("GIF with a 60000x60000 logical screen",
         reference(lambda p: uri(gif_on_screen(p, (60000, 60000)), "image/gif")),
         "succeeds: read as its 512x512 first frame, logged, face found",
         logs_contain("as its first frame: 512x512", "Adapters: PuLID 0.80")),
    Case("GIF whose frame declares 60000x60000",
         reference(lambda p: uri(gif_on_screen(p, (60000, 60000), frame=(60000, 60000)), "image/gif")),
         "fails: character_reference_image is larger than 268 megapixels"),
    Case("EXIF-rotated JPEG reference", reference(lambda p: uri(exif_rotated(p), "image/jpeg")),
         "succeeds: turned upright, face found", logs_contain("Adapters: PuLID 0.80")),
    # --- Phone photos
    Case("HEIC reference", reference(lambda p: uri(heic(p), "image/heic")),
         "succeeds: face found", logs_contain("Adapters: PuLID 0.80")),
    Case("16320x12240 JPEG reference (200 MP)",
         reference(lambda p: uri(phone_jpeg(SENSOR_200MP)(p), "image/jpeg")),
         "succeeds: read at 1/4 scale, face found",
         logs_contain("(16320x12240) at 1/4 scale: 4080x3060", "Adapters: PuLID 0.80")),
    Case("EXIF-rotated HEIC image, HEIC mask",
         lambda p: {"prompt": "the character standing here", "character_reference_image": data_uri(p),
                    "image": uri(rotated_heic_photo(p), "image/heic"),
                    "mask": uri(heic_mask(HEIC_LANDSCAPE), "image/heic")},
         "succeeds: turned upright, white pixels kept exactly",
         keeps_white_pixels(lambda p: decoded(rotated_heic_photo(p)), lambda s: decoded(heic_mask(s)))),
    Case("8160x6144 JPEG image (50 MP)",
         lambda p: {"prompt": "the character standing here", "character_reference_image": data_uri(p),
                    "image": uri(phone_jpeg(MODE_50MP)(p), "image/jpeg"),
                    "mask": data_uri(hole_mask(MODE_50MP))},
         "succeeds: output 8160x6144, white pixels kept exactly",
         keeps_white_pixels(lambda p: decoded(phone_jpeg(MODE_50MP)(p)), hole_mask)),
    Case("16320x12240 JPEG image (200 MP)",
         lambda p: {"prompt": "x", "character_reference_image": data_uri(p),
                    "image": uri(jpeg_declaring(*SENSOR_200MP), "image/jpeg"),
                    "mask": data_uri(centre_mask((64, 64)))},
         "fails: image is 16320x12240 pixels (199.8 megapixels), more than the 50 megapixels this server "
         "accepts"),
    # --- Faces in the reference
    Case("cartoon, no human face", reference(lambda p: data_uri(cartoon_robot())),
         "succeeds: appearance path, logged",
         logs_contain("No human face found in character_reference_image")),
    Case("blank reference", reference(lambda p: data_uri(Image.new("RGB", (512, 512), (90, 120, 200)))),
         "fails: character_reference_image is blank (one colour, or almost)"),
    Case("two faces", reference(lambda p: data_uri(two_people(p))),
         "succeeds: the largest face is used, logged",
         logs_contain("Found 2 faces in character_reference_image")),
    Case("tiny face", reference(lambda p: data_uri(p.resize((96, 96)))),
         "succeeds: face under 40 px: appearance path, logged", logs_contain("pixels wide")),
    Case("face at the border", reference(lambda p: data_uri(face_at_the_border(p))),
         "succeeds: face found", logs_contain("Adapters: PuLID 0.80")),
    # --- Inpainting inputs
    Case("mask without image",
         lambda p: {"prompt": "x", "character_reference_image": data_uri(p),
                    "mask": data_uri(centre_mask((64, 64)))},
         "fails: mask was given without image"),
    Case("image without mask",
         lambda p: {"prompt": "x", "character_reference_image": data_uri(p), "image": data_uri(p)},
         "fails: image was given without mask"),
    Case("mask of another size", inpaint(lambda p: p.resize((800, 600)), lambda s: centre_mask((200, 150))),
         "succeeds: mask resized to the image, white pixels kept exactly",
         keeps_white_pixels(lambda p: p.resize((800, 600)), lambda s: centre_mask((200, 150)))),
    Case("anti-aliased grey mask", inpaint(lambda p: p, anti_aliased_mask),
         "succeeds: grey >= 128 kept exactly, darker regenerated",
         keeps_white_pixels(lambda p: p, anti_aliased_mask)),
    Case("all-white mask",
         inpaint_raw(encoded(Image.new("RGB", SMALL), "JPEG"), Image.new("L", SMALL, 255),
                     magic_prompt_option="On"),
         "fails: mask is all white, so nothing would be regenerated", no_model_ran),
    Case("opaque mask with a transparent hole",
         inpaint(lambda p: p.resize(SMALL), transparent_hole),
         "succeeds: OpenAI's convention, logged: the hole regenerated, opaque pixels kept exactly",
         keeps_opaque_pixels(lambda p: p.resize(SMALL), lambda image: transparent_hole(image.size))),
    Case("photo with the edit area erased",
         lambda p: inpaint(lambda q: q.resize(SMALL), lambda s: erased_photo(p.resize(SMALL)))(p),
         "succeeds: OpenAI's convention, logged: the erased area regenerated, the rest kept exactly",
         keeps_opaque_pixels(lambda p: p.resize(SMALL), erased_photo)),
    Case("brush layer from a paint tool", inpaint(lambda p: p.resize(SMALL), brush_strokes),
         "succeeds: read as a brush layer, logged: the strokes regenerated, transparent pixels kept exactly",
         keeps_the_unpainted_pixels(255)),
    Case("half-transparent brush layer", inpaint(lambda p: p.resize(SMALL), lambda s: brush_strokes(s, 128)),
         "succeeds: read as a brush layer, logged: the strokes regenerated, transparent pixels kept exactly",
         keeps_the_unpainted_pixels(128)),
    Case("fully transparent mask",
         inpaint(lambda p: p.resize(SMALL), lambda s: Image.new("RGBA", s, (0, 0, 0, 0))),
         "fails: mask is fully transparent: as a paint tool's layer it has no strokes", no_model_ran),
    Case("2-pixel stroke on a mask at 4x the image's size", inpaint(lambda p: p.resize(SMALL), thin_stroke),
         "succeeds: the stroke regenerated (any regenerated pixel keeps its area), the rest kept exactly",
         keeps_all_but_the_thin_stroke),
    Case("grey ramp mask", inpaint(lambda p: p.resize(SMALL), grey_ramp),
         "fails: mask is not a black-and-white image"),
    Case("photo as mask", lambda p: inpaint(lambda q: q.resize(SMALL), lambda s: p.resize(SMALL))(p),
         "fails: mask is not a black-and-white image"),
    Case("transparency and a black-and-white drawing",
         inpaint(lambda p: p.resize(SMALL), drawing_with_transparency),
         "fails: mask has transparent pixels and also a black-and-white drawing"),
    Case("mask drawn on the unrotated photo",
         inpaint_raw(stored_unrotated((626, 1200)), centre_mask((1200, 626))),
         "fails: mask is 1200x626 pixels and image is 626x1200 (upright)",
         error_contains("exactly swapped, so it was probably drawn on the photo before")),
    Case("8x6400 inpainting image",
         inpaint_raw(encoded(Image.new("RGB", (8, 6400), (90, 120, 200)), "JPEG"),
                     Image.new("L", (8, 6400), 0)),
         "fails: image is 8x6400 pixels, an aspect ratio of 800:1; this server reads images up to 20:1",
         no_model_ran),
    Case("mask of another aspect ratio", inpaint(lambda p: p.resize(SMALL), lambda s: centre_mask((96, 96))),
         "fails: mask is 96x96 pixels and image is 384x288 (upright): their aspect ratios differ"),
    Case("all-black mask", inpaint(lambda p: p, lambda s: Image.new("L", s, 0)),
         "succeeds: the whole image regenerated at its size",
         keeps_white_pixels(lambda p: p, lambda s: Image.new("L", s, 0))),
    Case("4000x3000 image, 400-pixel region", inpaint(lambda p: p.resize(LARGE), region_400),
         "succeeds: output 4000x3000, white pixels kept exactly, a 600x600 crop denoised at 1024x1024",
         keeps_white_pixels(lambda p: p.resize(LARGE), region_400,
                            "denoising a 600x600 region of the 4000x3000 image at 1024x1024")),
    Case("Display P3 image and reference",
         lambda p: inpaint(lambda q: q.resize(SMALL), centre_mask, lambda i: with_profile(i, P3))(p)
         | {"character_reference_image": with_profile(p, P3)},
         "succeeds: white pixels kept exactly, output carries the image's ICC profile, reference in sRGB",
         keeps_white_pixels(lambda p: p.resize(SMALL), centre_mask,
                            "pixel density), converted from its ICC profile (Display P3",
                            "character_reference_image: converted from its ICC profile (Display P3",
                            "PuLID 0.80", icc=P3)),
    Case("RGBA image, P mask", inpaint(lambda p: with_alpha(p), lambda s: centre_mask(s).convert("P")),
         "succeeds: transparency over white, white pixels kept exactly",
         keeps_white_pixels(lambda p: over_white(with_alpha(p)), lambda s: centre_mask(s))),
    # --- Prompts and seeds
    Case("empty prompt", prompt(""), "fails: prompt is empty"),
    Case("whitespace prompt", prompt(" \n\t "), "fails: prompt is empty"),
    Case("zero-width prompt", prompt("\u200b\ufeff\u2060"),
         "fails: prompt is empty (its 3 characters are all invisible)", no_model_ran),
    Case("10,000-character prompt", prompt("a knight in a forest " * 500),
         "fails: prompt is 10500 characters, more than the 5000 this server reads", no_model_ran),
    # The tiny profile's tokenizer has about one token per character: 608 tokens here (190 for SDXL's).
    Case("prompt of 9 encoder windows", prompt("a knight in a forest " * 38),
         "fails: prompt is 608 tokens (9 text-encoder windows of 75), more than the 600 (8 windows)",
         no_model_ran),
    Case("prompt of 8 encoder windows", prompt("a knight in a forest " * 37),
         "succeeds: encoded whole in 75-token windows", logs_contain("Prompt used: a knight in a forest")),
    Case("prompt with forged log lines",
         prompt("a knight\nSafety checker: flagged\r\nIdentity similarity: 0.99\u2028Using seed: 1"),
         "succeeds: logged on one line, its line breaks escaped; clients read the server's lines",
         forged_lines_not_read),
    Case("emoji and right-to-left text", prompt("🦸‍♀️ בגן עם פרחים، في الحديقة 🌸"),
         "succeeds: used as given", logs_contain("Prompt used: 🦸‍♀️ בגן עם פרחים، في الحديقة 🌸")),
    Case("negative seed", prompt("x", seed=-7), "succeeds: accepted as given",
         logs_contain("Using seed: -7")),
    Case("maximum seed", prompt("x", seed=2147483647), "succeeds: accepted",
         logs_contain("Using seed: 2147483647")),
    Case("minimum seed", prompt("x", seed=-(2**63)), "succeeds: accepted (the generator's lowest)",
         logs_contain("Using seed: -9223372036854775808")),
    Case("seed below the generator's range", prompt("x", seed=-(2**63) - 1),
         "fails: seed must be a whole number from -9223372036854775808 to 2147483647"),
    Case("seed beyond 64 bits", prompt("x", seed=-(10**30)),
         "fails: seed must be a whole number from -9223372036854775808 to 2147483647"),
]  # fmt: skip


def worker_rss(cog_server) -> int:
    """Resident bytes of the server and its worker processes."""
    root = psutil.Process(cog_server.pid)
    return sum(process.memory_info().rss for process in [root, *root.children(recursive=True)])


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_and_odd_inputs(cog_server, portrait, case):
    inputs = FAST | case.inputs(portrait)
    before = worker_rss(cog_server)
    response = cog_server.predict(**inputs)
    body = response.json()
    assert response.status_code == 200, body
    if case.fails:
        assert body["status"] == "failed", body.get("logs")
        error = body["error"]
        assert case.outcome.removeprefix("fails: ") in error
        assert "Traceback" not in error and len(error.splitlines()) == 1
        if case.check is not None:
            case.check(body, portrait)
    else:
        assert body["status"] == "succeeded", body.get("error")
        if case.check is not None:
            case.check(body, portrait)
    # Nothing was decoded at full size: a 30000 x 30000 bomb would need 900 MB.
    assert worker_rss(cog_server) - before < 300 * 2**20
    assert cog_server.settles_ready()


def readme_table() -> dict[str, str]:
    text = (ROOT / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    section = text.split("<!-- bad-inputs:start -->")[1].split("<!-- bad-inputs:end -->")[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("case", "") and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells[1]
    return rows


def test_readme_table_matches_the_cases():
    assert readme_table() == {case.name: case.outcome for case in CASES}


@pytest.mark.parametrize("value", [None, 5, ["a knight"]], ids=["null", "number", "list"])
def test_a_prompt_that_is_not_text_is_refused_naming_prompt(cog_server, portrait, value):
    """Not a server fault: the schema check answers 422 naming the input, and no prediction starts."""
    inputs = FAST | {"prompt": value, "character_reference_image": data_uri(portrait)}
    response = cog_server.predict(**inputs)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == "prompt"
    assert "Generation failed" not in response.text
    assert cog_server.settles_ready()
