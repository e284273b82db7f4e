"""Images as the tests send and read them: PNG bytes, data URIs and pixels, and the files clients and phones
send (HEIC, camera JPEGs, headers that declare huge sizes, alpha, palettes, 16-bit, animation, EXIF rotation),
and a drawn character with no human face."""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(data_uri: str) -> Image.Image:
    header, _, payload = data_uri.partition(",")
    assert header.startswith("data:image/png"), header
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def data_uri(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid little PNG whose header declares width x height: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\0" * (width + 1) * 4)  # a few rows only: decoding it would need 900 MB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def with_alpha(image: Image.Image) -> Image.Image:
    """A cut-out: opaque in the middle, transparent in a 40 px frame."""
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).rectangle((40, 40, image.width - 41, image.height - 41), fill=255)
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def palette_with_transparency(image: Image.Image) -> bytes:
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    return encoded(palette, "PNG", transparency=0)


def sixteen_bit(image: Image.Image) -> bytes:
    grey = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return encoded(Image.fromarray(grey), "PNG")  # uint16 -> mode I;16


def animated(image: Image.Image, fmt: str) -> bytes:
    frames = [image, Image.new("RGB", image.size, (255, 0, 0))]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated(image: Image.Image) -> bytes:
    # Stored rotated 90 degrees with EXIF orientation 6 ("rotate 90 CW to display"): upright when applied.
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(image.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=92)


def heic(image: Image.Image, orientation: int = 1) -> bytes:
    """HEIC encoded by pillow-heif. With an orientation, stored as a phone stores it: the pixels turned as
    the EXIF tag says (as exif_rotated's), and the turn written both in EXIF and as HEIF's rotation box."""
    pillow_heif.register_heif_opener()
    stored = {1: image, 6: image.transpose(Image.Transpose.ROTATE_90)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    # EXIF as bytes: pillow-heif reads the orientation it writes as a rotation box from bytes only.
    return encoded(stored, "HEIF", exif=exif.tobytes(), quality=90)


@functools.cache
def camera_jpeg(portrait_bytes: bytes, width: int, height: int) -> bytes:
    """A baseline JPEG of width x height as a phone writes it: the portrait, scaled up to a third of the
    height, on a grey wall. Encoded once per size and session (16320x12240 takes about 2 s and 600 MB)."""
    portrait = Image.open(io.BytesIO(portrait_bytes))
    canvas = Image.new("RGB", (width, height), (200, 200, 205))
    side = height // 3
    canvas.paste(portrait.resize((side, side), Image.Resampling.NEAREST), ((width - side) // 2, side))
    return encoded(canvas, "JPEG", quality=80)


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A small JPEG whose frame header declares width x height; refused from the header, never decoded."""
    data = bytearray(encoded(Image.new("RGB", (16, 16), (128, 64, 32)), "JPEG", progressive=progressive))
    start = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    # SOF: marker, length (2 bytes), precision (1), height (2), width (2).
    data[start + 5 : start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def cartoon_robot(size=(512, 640), background=(255, 255, 255)) -> Image.Image:
    """A drawn mascot with no human face: a blue head with yellow eyes on a green body."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    draw.rectangle((180, 120, 330, 260), fill=(40, 90, 200), outline=(0, 0, 0), width=6)
    draw.ellipse((210, 160, 240, 190), fill=(255, 230, 0))
    draw.ellipse((270, 160, 300, 190), fill=(255, 230, 0))
    draw.rectangle((150, 280, 360, 520), fill=(60, 160, 80), outline=(0, 0, 0), width=6)
    return image


def png_with_metadata(image: Image.Image, text_bytes: int = 0, icc_bytes: int = 0) -> bytes:
    """A PNG carrying a compressed text chunk and an ICC chunk of the given sizes once decompressed, as image
    generators (their workflow and parameters) and editors write them."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if text_bytes:
        info.add_text("workflow", "{" + "x" * (text_bytes - 2) + "}", zip=True)
    options = {"icc_profile": b"\0" * icc_bytes} if icc_bytes else {}
    return encoded(image, "PNG", pnginfo=info, **options)


def gif_on_screen(image: Image.Image, screen: tuple[int, int], frame: tuple[int, int] | None = None) -> bytes:
    """A GIF of `image` whose header declares a logical screen of `screen`; with `frame`, its first frame's
    descriptor declares that size too (a decompression bomb's shape)."""
    data = bytearray(encoded(image.convert("RGB"), "GIF"))
    struct.pack_into("<HH", data, 6, *screen)
    if frame is not None:
        descriptor = data.index(b"\x2c", 13 + 3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 13)
        struct.pack_into("<HH", data, descriptor + 5, *frame)
    return bytes(data)
