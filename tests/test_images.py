"""Phone photos through the loader (model/inputs/images.py): HEIC with its rotation box, and the size limits.

Big files are made once per session (tests/helpers/images.camera_jpeg) or are small files whose
header declares a big size. Peak memory is measured in a fresh Python process, since this one's peak
already holds the big test files.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from model.errors import InputError
from model.identity.reference import REFERENCE_INPUT, REFERENCE_PIXELS
from model.inputs.images import (
    MAX_DECODED_PIXELS,
    MAX_METADATA_CHUNK,
    MAX_REDUCED_PIXELS,
    load_image,
    load_mask,
)
from tests.helpers import ROOT
from tests.helpers.images import (
    camera_jpeg,
    gif_on_screen,
    heic,
    jpeg_declaring,
    png_bytes,
    png_declaring,
    png_with_metadata,
)

MB = 2**20
# The sizes the issue names: the 200 MP sensor of current phones, and their 50 MP mode.
SENSOR_200MP = (16320, 12240)
MODE_50MP = (8160, 6144)
# Run in a fresh process: load one file and print its size and how much the peak resident size grew.
# The peak is the kernel's VmHWM of the new process (ru_maxrss would start at the parent's size: Linux
# carries it across fork and exec).
PEAK = """
import sys
from PIL import Image
from model.inputs.images import load_image

def peak_kb():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0])

Image.new("RGB", (64, 64)).convert("L").resize((8, 8))  # Pillow's own first-use allocations
before = peak_kb()
image = load_image(sys.argv[1], sys.argv[2], reduce_to_pixels=int(sys.argv[3]) or None)
print(image.width, image.height, image.mode, (peak_kb() - before) * 1024)
"""


def peak_load(path, input_name: str, reduce_to_pixels: int | None) -> tuple[tuple[int, int], str, int]:
    """(size, mode, growth of the peak resident size in bytes) of load_image in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK, str(path), input_name, str(reduce_to_pixels or 0)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    width, height, mode, grown = result.stdout.split()
    return (int(width), int(height)), mode, int(grown)


def test_heic_from_a_phone_carries_its_rotation_box_and_loads_upright(astronaut, tmp_path):
    landscape = astronaut.resize((384, 288))
    content = heic(landscape, orientation=6)
    # Stored turned (288 wide) with the turn in HEIF's rotation box, as a phone writes it.
    assert b"irot" in content
    ispe = content.index(b"ispe")
    assert struct.unpack(">II", content[ispe + 8 : ispe + 16]) == (288, 384)
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(content)
    image, mask = load_image(path, "image"), load_mask(path, "mask")
    assert image.size == mask.size == (384, 288) and (image.mode, mask.grey.mode) == ("RGB", "L")
    assert mask.alpha is None
    # Turned once only: the rotation box is applied and the EXIF tag, now 1, adds nothing.
    difference = np.abs(np.asarray(image, float) - np.asarray(landscape, float)).mean()
    assert difference < 4, difference


def test_a_truncated_heic_names_the_input_and_the_accepted_formats(astronaut, tmp_path):
    content = heic(astronaut)
    path = tmp_path / "cut.heic"
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(InputError, match="^mask is not a readable image .*JPEG, PNG, WebP or HEIC file$"):
        load_mask(path, "mask")


def test_a_200mp_jpeg_reference_is_read_at_a_quarter_of_its_sides_without_a_full_size_buffer(
    astronaut, tmp_path
):
    path = tmp_path / "200mp.jpg"
    path.write_bytes(camera_jpeg(png_bytes(astronaut), *SENSOR_200MP))
    size, mode, grown = peak_load(path, REFERENCE_INPUT, REFERENCE_PIXELS)
    # 1/4 is the smallest JPEG scale that keeps REFERENCE_PIXELS (1/8 would give 3.1 MP).
    assert size == (4080, 3060) and mode == "RGB"
    # The decoded quarter is 37 MB; the full image would be 599 MB. Measured: about 52 MB.
    assert grown < 100 * MB, grown / MB


def test_a_50mp_inpainting_image_is_decoded_whole_into_one_buffer(astronaut, tmp_path):
    path = tmp_path / "50mp.jpg"
    path.write_bytes(camera_jpeg(png_bytes(astronaut), *MODE_50MP))
    size, mode, grown = peak_load(path, "image", None)
    assert size == MODE_50MP and mode == "RGB"
    # One RGB buffer is 150 MB: no second copy (EXIF transpose or RGB conversion) on the way.
    assert grown < 200 * MB, grown / MB


def test_a_12mp_reference_keeps_its_full_size(astronaut, tmp_path):
    path = tmp_path / "12mp.jpg"
    path.write_bytes(camera_jpeg(png_bytes(astronaut), 4000, 3000))
    assert load_image(path, REFERENCE_INPUT, reduce_to_pixels=REFERENCE_PIXELS).size == (4000, 3000)


def test_pillows_bomb_check_is_replaced_by_the_loaders_not_removed():
    # Raised from the default 89 MP (which refuses a 200 MP photo) to the largest header accepted.
    load_image(ROOT / "evaluation" / "references" / "eileen_collins.jpg", REFERENCE_INPUT)
    assert Image.MAX_IMAGE_PIXELS == MAX_REDUCED_PIXELS


W, H = SENSOR_200MP
TOO_LARGE = [
    # (file, input, reduced reads allowed, start of the error)
    (lambda: png_declaring(W, H), REFERENCE_INPUT, True,
     f"{REFERENCE_INPUT} is {W}x{H} pixels (199.8 megapixels), more than the 50 megapixels this server "
     "decodes at full size; larger photos are read only as baseline (non-progressive) JPEG"),
    (lambda: jpeg_declaring(W, H, progressive=True), REFERENCE_INPUT, True,
     f"{REFERENCE_INPUT} is {W}x{H} pixels (199.8 megapixels), more than the 50 megapixels"),
    (lambda: jpeg_declaring(16400, 16400), REFERENCE_INPUT, True,
     f"{REFERENCE_INPUT} is 16400x16400 pixels (269.0 megapixels), more than the 268 megapixels this "
     "server accepts: send a smaller image"),
    (lambda: jpeg_declaring(W, H), "image", False,
     f"image is {W}x{H} pixels (199.8 megapixels), more than the 50 megapixels this server accepts: send "
     "a smaller image"),
    (lambda: png_declaring(30000, 30000), REFERENCE_INPUT, True,
     f"{REFERENCE_INPUT} is larger than 268 megapixels: send a smaller image"),
    (lambda: png_declaring(30000, 30000), "mask", False, "mask is larger than 50 megapixels"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "input_name", "reduced", "error"), TOO_LARGE)
def test_files_too_large_to_decode_are_refused_from_the_header(tmp_path, make, input_name, reduced, error):
    path = tmp_path / "large"
    path.write_bytes(make())
    loader = load_mask if input_name == "mask" else load_image
    options = {"reduce_to_pixels": REFERENCE_PIXELS} if reduced else {}
    with pytest.raises(InputError) as refused:
        loader(path, input_name, **options)
    assert str(refused.value).startswith(error), str(refused.value)


def test_the_limits_hold_the_phone_sizes_the_issue_names():
    assert MODE_50MP[0] * MODE_50MP[1] <= MAX_DECODED_PIXELS
    assert SENSOR_200MP[0] * SENSOR_200MP[1] <= MAX_REDUCED_PIXELS
    # At 1/8 the largest reduced read is still under the full-size limit.
    assert MAX_REDUCED_PIXELS / 64 <= MAX_DECODED_PIXELS


def test_an_animated_file_is_closed_after_its_first_frame_is_read(astronaut, tmp_path):
    frames = [astronaut, Image.new("RGB", astronaut.size, (255, 0, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    path = tmp_path / "animated.gif"
    path.write_bytes(buffer.getvalue())
    image = load_image(path, "image")
    assert getattr(image, "fp", None) is None


@pytest.mark.parametrize(("size", "ratio"), [((6400, 8), 800), ((8, 6400), 800), ((2100, 100), 21)])
def test_an_image_thinner_than_the_detector_reads_is_refused_from_its_header(tmp_path, size, ratio):
    path = tmp_path / "strip.png"
    Image.new("RGB", size, (90, 120, 200)).save(path)
    width, height = size
    expected = f"image is {width}x{height} pixels, an aspect ratio of {ratio}:1; this server reads images up "
    expected += "to 20:1"
    with pytest.raises(InputError, match=re.escape(expected)):
        load_image(path, "image")


def test_an_image_at_the_aspect_ratio_limit_is_read(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (2000, 100), (90, 120, 200)).save(path)
    assert load_image(path, "image").size == (2000, 100)


@pytest.mark.parametrize(
    ("text", "icc"), [(3 * 2**20, 0), (0, 2 * 2**20), (15 * 2**20, 15 * 2**20)], ids=["text", "icc", "both"]
)
def test_metadata_over_pillows_default_megabyte_is_read(astronaut, tmp_path, text, icc):
    path = tmp_path / "generated.png"
    path.write_bytes(png_with_metadata(astronaut, text_bytes=text, icc_bytes=icc))
    assert np.array_equal(np.asarray(load_image(path, "image")), np.asarray(astronaut))


def test_metadata_over_the_bound_is_refused_naming_it(astronaut, tmp_path):
    path = tmp_path / "generated.png"
    path.write_bytes(png_with_metadata(astronaut, text_bytes=MAX_METADATA_CHUNK + 1))
    with pytest.raises(InputError, match=r"^image carries metadata .* \(16 MiB a chunk, 64 MiB in all"):
        load_image(path, "image")


def test_a_gif_is_read_by_its_frame_not_its_logical_screen(astronaut, tmp_path, caplog):
    path = tmp_path / "screen.gif"
    path.write_bytes(gif_on_screen(astronaut, (60000, 60000)))
    with caplog.at_level(logging.INFO):
        image = load_image(path, "image")
    assert image.size == astronaut.size
    expected = Image.open(io.BytesIO(gif_on_screen(astronaut, astronaut.size))).convert("RGB")
    assert np.array_equal(np.asarray(image), np.asarray(expected))
    assert "a GIF whose logical screen is 60000x60000) as its first frame: 512x512" in caplog.text


def test_a_gif_whose_frame_is_huge_is_still_refused(astronaut, tmp_path):
    path = tmp_path / "bomb.gif"
    path.write_bytes(gif_on_screen(astronaut, (60000, 60000), frame=(60000, 60000)))
    with pytest.raises(InputError, match="^image is larger than 50 megapixels"):
        load_image(path, "image")
