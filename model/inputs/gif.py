"""A GIF judged by its first frame, not by its logical screen.

A GIF's header declares a logical screen (up to 65535 x 65535) and each frame is a rectangle placed on it.
Pillow takes the screen as the image's size and decodes the first frame onto a canvas of that size, so a
small frame on a huge declared screen is refused as too large, or decoded into gigabytes of background.
When the screen exceeds what the loader decodes but the first frame does not, the file is read as that
frame alone: the header's screen is set to the frame's size and the frame moved to its origin, in a copy
in memory (GIF files are small; the pixels are LZW data, untouched). A frame that is itself too large is
still refused by the loader's checks, so a real decompression bomb is refused as before.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

_SIGNATURES = (b"GIF87a", b"GIF89a")
_IMAGE_DESCRIPTOR = 0x2C
_EXTENSION = 0x21


@dataclass(frozen=True)
class GifLayout:
    screen: tuple[int, int]
    frame: tuple[int, int]  # the first frame's width and height
    descriptor_offset: int  # where the first frame's image descriptor starts


def gif_layout(data: bytes) -> GifLayout | None:
    """The logical screen and the first frame of a GIF file's bytes; None for anything else or a broken one
    (Pillow then reports it)."""
    if data[:6] not in _SIGNATURES or len(data) < 13:
        return None
    screen = struct.unpack_from("<HH", data, 6)
    packed = data[10]
    position = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    while position < len(data):
        block = data[position]
        if block == _IMAGE_DESCRIPTOR:
            if position + 10 > len(data):
                return None
            return GifLayout(screen, struct.unpack_from("<HH", data, position + 5), position)
        if block != _EXTENSION:
            return None  # the trailer, or not a GIF block
        position += 2  # introducer and label, then sub-blocks up to an empty one
        while position < len(data) and data[position] != 0:
            position += data[position] + 1
        position += 1
    return None


def first_frame_alone(path: Path, max_pixels: int) -> tuple[io.BytesIO, GifLayout] | None:
    """The GIF at `path` rewritten to its first frame's size, when its screen has more than max_pixels and
    its first frame fewer; None otherwise (any other file, or nothing to rewrite)."""
    with open(path, "rb") as file:
        if file.read(6) not in _SIGNATURES:
            return None
    data = bytearray(path.read_bytes())
    layout = gif_layout(bytes(data))
    if layout is None:
        return None
    (screen_width, screen_height), (width, height) = layout.screen, layout.frame
    if screen_width * screen_height <= max_pixels or width * height > max_pixels or width * height == 0:
        return None
    struct.pack_into("<HH", data, 6, width, height)
    struct.pack_into("<HH", data, layout.descriptor_offset + 1, 0, 0)
    return io.BytesIO(bytes(data)), layout
