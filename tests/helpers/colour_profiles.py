"""Real non-sRGB ICC profiles for tests, built byte by byte (ImageCms can only create sRGB, LAB and XYZ).

`display_p3_profile()` is an ICC v2 matrix/TRC display profile with the Display P3 primaries and D65 white
(Apple's "Display P3" has the same primaries, with the sRGB tone curve; here the curve is a plain gamma
2.2). Its colorants are the P3 primaries adapted to the D50 connection space with the Bradford transform,
the values Apple's profile stores. littleCMS reads it like any camera or phone profile, and it converts
differently from sRGB: saturated colours move, which is what the tests look for.
"""

from __future__ import annotations

import struct

# Display P3's red, green and blue colorants (XYZ, D50-adapted), as in Apple's Display P3 profile.
P3_COLORANTS = {
    b"rXYZ": (0.515102, 0.241196, -0.001053),
    b"gXYZ": (0.291965, 0.692245, 0.041885),
    b"bXYZ": (0.157150, 0.066561, 0.784073),
}
D50 = (0.964203, 1.0, 0.824905)


def _s15fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values: tuple[float, float, float]) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15fixed16(v) for v in values)


def _gamma_curve(gamma: float) -> bytes:
    # curveType with one entry: a pure power law, in u8Fixed8Number.
    return b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256)) + b"\0\0"


def _description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    body = b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text
    # No Unicode and no ScriptCode description (both empty), as ICC v2 allows.
    body += struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67
    return body


def _text(text: str) -> bytes:
    return b"text" + b"\0" * 4 + text.encode("ascii") + b"\0"


def matrix_trc_profile(description: str, colorants: dict, gamma: float) -> bytes:
    """An ICC v2 RGB display profile from three colorants (D50 XYZ) and one gamma for all channels."""
    curve = _gamma_curve(gamma)
    tags = [
        *[(name, _xyz(values)) for name, values in colorants.items()],
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    return _profile(b"RGB ", description, tags)


def gray_profile(description: str, gamma: float) -> bytes:
    """An ICC v2 greyscale display profile: one tone curve (kTRC)."""
    return _profile(b"GRAY", description, [(b"kTRC", _gamma_curve(gamma))])


def _profile(colour_space: bytes, description: str, specific_tags: list) -> bytes:
    tags = [
        (b"desc", _description(description)),
        (b"cprt", _text("No copyright, test data")),
        (b"wtpt", _xyz(D50)),
        *specific_tags,
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    table, data = struct.pack(">I", len(tags)), b""
    for name, body in tags:
        while (offset + len(data)) % 4:
            data += b"\0"
        table += name + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = 128 + table_size + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0" * 4  # preferred CMM
        + bytes([2, 0x10, 0, 0])  # version 2.1
        + b"mntr"
        + colour_space
        + b"XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 4  # platform
        + b"\0" * 4  # flags
        + b"\0" * 8  # manufacturer, model
        + b"\0" * 8  # attributes
        + struct.pack(">I", 0)  # perceptual intent
        + b"".join(_s15fixed16(v) for v in D50)
        + b"\0" * 4  # creator
        + b"\0" * 16  # profile id
        + b"\0" * 28
    )
    assert len(header) == 128
    return header + table + data


def display_p3_profile() -> bytes:
    return matrix_trc_profile("Display P3 (test, gamma 2.2)", P3_COLORANTS, 2.2)
