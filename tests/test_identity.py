"""The identity stage and image loading, on the tiny insightface models and skimage's astronaut photo.

The tiny detector is a skin-colour detector (devtools/profiles/tiny/faces.py): it finds faces in colour photos
only, so greyscale inputs are checked for how they load, not for a face.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import onnx
import onnxruntime
import pytest
from insightface.utils import face_align
from PIL import Image
from skimage import data

from devtools.profiles.tiny.faces import write_face_models
from model.errors import InputError, WeightsError
from model.identity.faces import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    FaceAnalyzer,
    Identity,
    NoUsableFace,
    cosine_similarity,
    execution_providers,
    provider_options,
)
from model.inputs.images import MAX_DECODED_PIXELS, load_image, load_mask
from model.weights.layout import FACE_DETECTOR_FILE, FACE_RECOGNIZER_FILE
from tests.helpers.images import (
    animated,
    encoded,
    exif_rotated,
    heic,
    palette_with_transparency,
    sixteen_bit,
    with_alpha,
)

REFERENCE = "character_reference_image"
# The astronaut's five landmarks (eyes, nose tip, mouth corners), read off the 512 x 512 photo by eye.
ASTRONAUT_LANDMARKS = np.array([(203, 102), (245, 103), (225, 127), (207, 143), (243, 142)], np.float32)
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def astronaut_identity(analyzer, astronaut):
    return analyzer.analyze(astronaut)


def two_portraits(astronaut: Image.Image) -> Image.Image:
    """The astronaut's head and shoulders at full size on the left and at 60 % on the right."""
    portrait = astronaut.crop((100, 0, 360, 300))
    small = portrait.resize((156, 180))
    canvas = Image.new("RGB", (460, 320), (200, 200, 205))
    canvas.paste(portrait, (0, 20))
    canvas.paste(small, (290, 70))
    return canvas


def contains(box, point) -> bool:
    x1, y1, x2, y2 = box
    return x1 <= point[0] <= x2 and y1 <= point[1] <= y2


# --- The tiny models ---------------------------------------------------------------------------------------


def test_write_face_models_is_fast_and_has_the_real_signatures(tmp_path):
    started = time.perf_counter()
    paths = write_face_models(tmp_path)
    assert time.perf_counter() - started < 1.0
    assert [path.name for path in paths] == [FACE_DETECTOR_FILE, FACE_RECOGNIZER_FILE]

    detector = onnx.load(str(tmp_path / FACE_DETECTOR_FILE)).graph
    (image,) = detector.input
    assert image.name == "input.1"
    dims = [d.dim_value or d.dim_param for d in image.type.tensor_type.shape.dim]
    assert dims == [1, 3, "height", "width"]
    widths = [output.type.tensor_type.shape.dim[1].dim_value for output in detector.output]
    assert widths == [1, 1, 1, 4, 4, 4, 10, 10, 10]

    recognizer = onnx.load(str(tmp_path / FACE_RECOGNIZER_FILE)).graph
    dims = [d.dim_value or d.dim_param for d in recognizer.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 112, 112]
    assert [len(recognizer.output), recognizer.output[0].type.tensor_type.shape.dim[1].dim_value] == [1, 512]


def test_missing_model_file_is_a_weights_error_naming_it(tmp_path):
    write_face_models(tmp_path)
    (tmp_path / FACE_RECOGNIZER_FILE).unlink()
    with pytest.raises(WeightsError, match=FACE_RECOGNIZER_FILE):
        FaceAnalyzer(tmp_path)
    with pytest.raises(WeightsError, match=FACE_DETECTOR_FILE):
        FaceAnalyzer(tmp_path / "absent")


def test_corrupt_or_misplaced_model_file_is_a_weights_error(tmp_path):
    write_face_models(tmp_path)
    (tmp_path / FACE_DETECTOR_FILE).write_bytes(b"not an onnx file")
    with pytest.raises(WeightsError, match="corrupt"):
        FaceAnalyzer(tmp_path)
    # A recognizer where the detector should be: insightface routes files by signature, not by name.
    (tmp_path / FACE_DETECTOR_FILE).write_bytes((tmp_path / FACE_RECOGNIZER_FILE).read_bytes())
    with pytest.raises(WeightsError, match=f"{FACE_DETECTOR_FILE} is not an insightface detection model"):
        FaceAnalyzer(tmp_path)


# --- Finding the face --------------------------------------------------------------------------------------


def test_one_face_on_the_astronaut_with_a_box_over_her_face(astronaut_identity):
    identity = astronaut_identity
    assert isinstance(identity, Identity)
    assert identity.faces_found == 1
    x1, y1, x2, y2 = identity.face_box
    for point in ASTRONAUT_LANDMARKS:
        assert contains(identity.face_box, point)
    # Her face is about 90 px wide; the box must not take in the suit or the background.
    assert 60 <= x2 - x1 <= 130 and 60 <= y2 - y1 <= 130


def test_embedding_is_512_unit_norm_and_deterministic(face_dir, analyzer, astronaut, astronaut_identity):
    embedding = astronaut_identity.embedding
    assert embedding.shape == (512,) and embedding.dtype == np.float32
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(analyzer.analyze(astronaut).embedding, embedding)
    # Freshly written models and a fresh analyzer give the same numbers: nothing random at run time.
    np.testing.assert_allclose(FaceAnalyzer(face_dir).analyze(astronaut).embedding, embedding, atol=1e-6)


def test_face_crop_is_an_aligned_224_rgb_face(astronaut, astronaut_identity):
    crop = astronaut_identity.face_crop
    assert crop.size == (224, 224) and crop.mode == "RGB"
    # Skin is red-dominant: a BGR crop would have a blue-dominant face.
    centre = np.asarray(crop)[60:170, 60:170].astype(float)
    assert centre[..., 0].mean() > centre[..., 2].mean() + 20
    # Aligned like ArcFace's crop: close to the crop made from her real landmarks (a 12 px shift gives 0.6).
    expected = face_align.norm_crop(np.asarray(astronaut), landmark=ASTRONAUT_LANDMARKS, image_size=224)
    assert np.corrcoef(np.asarray(crop, float).ravel(), expected.astype(float).ravel())[0, 1] > 0.8


@pytest.mark.parametrize("colour", [(128, 128, 128), (255, 255, 255), (0, 0, 0), (204, 170, 146)])
def test_uniform_image_has_no_face(analyzer, colour):
    # (204, 170, 146) is the astronaut's mean skin colour: flat skin is not a face.
    with pytest.raises(InputError, match=f"No human face found in {REFERENCE}"):
        analyzer.analyze(Image.new("RGB", (400, 300), colour))
    found = analyzer.find_identity(Image.new("RGB", (400, 300), colour))
    assert isinstance(found, NoUsableFace) and found.faces_found == 0


def test_photo_without_skin_has_no_face(analyzer):
    assert analyzer.embed_largest_face(Image.fromarray(data.rocket())) is None
    with pytest.raises(InputError, match=REFERENCE):
        analyzer.analyze(Image.fromarray(data.rocket()))


def test_two_portraits_use_the_larger_face(analyzer, astronaut, caplog):
    with caplog.at_level(logging.INFO, logger="model.identity.faces"):
        identity = analyzer.analyze(two_portraits(astronaut))
    assert identity.faces_found == 2
    assert f"Found 2 faces in {REFERENCE}; using the largest" in caplog.text
    x1, _, x2, _ = identity.face_box
    assert x2 < 260, "the larger portrait is the left one"
    assert x2 - x1 > 60
    # The right portrait is the same photo at 60 %: the embedding of the largest face must be of the left one.
    left_only = two_portraits(astronaut)
    left_only.paste((200, 200, 205), (270, 0, 460, 320))
    assert cosine_similarity(analyzer.analyze(left_only).embedding, identity.embedding) > 0.999


def test_different_faces_have_different_embeddings(analyzer, astronaut, astronaut_identity):
    # The tiny detector takes the ginger cat's face for a face (skin-coloured and textured): a second subject.
    cat = analyzer.embed_largest_face(Image.fromarray(data.chelsea()))
    assert cat is not None
    assert cosine_similarity(cat, astronaut_identity.embedding) < 0.8
    mirrored = analyzer.analyze(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).embedding
    assert cosine_similarity(mirrored, astronaut_identity.embedding) < 0.95
    assert analyzer.cosine_similarity(astronaut_identity.embedding, astronaut_identity.embedding) == (
        pytest.approx(1.0)
    )


def test_face_smaller_than_the_minimum_is_refused(analyzer, astronaut):
    thumbnail = astronaut.resize((128, 128))
    with pytest.raises(InputError, match=f"{REFERENCE}.* at least 40 pixels wide"):
        analyzer.analyze(thumbnail)
    # find_identity says why instead, for the appearance path (model/identity/reference.py).
    found = analyzer.find_identity(thumbnail)
    assert isinstance(found, NoUsableFace) and found.faces_found == 1
    assert "only" in found.reason and "at least 40" in found.reason


# --- Loading: orientation and modes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "stored"),
    [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)],
    ids=["orientation-6", "orientation-8"],
)
def test_exif_rotated_jpeg_gives_the_upright_face(analyzer, astronaut, tmp_path, orientation, stored):
    upright_path = tmp_path / "upright.jpg"
    astronaut.save(upright_path, quality=95)
    rotated_path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    astronaut.transpose(stored).save(rotated_path, quality=95, exif=exif)

    loaded = load_image(rotated_path, REFERENCE)
    assert loaded.size == astronaut.size
    upright = analyzer.analyze(load_image(upright_path, REFERENCE))
    rotated = analyzer.analyze(loaded)
    assert cosine_similarity(rotated.embedding, upright.embedding) > 0.99
    np.testing.assert_allclose(rotated.face_box, upright.face_box, atol=8)


def save_in_mode(image: Image.Image, mode: str, path):
    if mode == "RGBA":
        rgba = image.convert("RGBA")
        # A transparent left edge: it must come out white, not black.
        alpha = np.full(image.size[::-1], 255, np.uint8)
        alpha[:, :20] = 0
        rgba.putalpha(Image.fromarray(alpha))
        rgba.save(path)
    elif mode == "P":
        image.quantize(256).save(path)
    elif mode == "CMYK":
        image.convert("CMYK").save(path, quality=95)
    elif mode == "L":
        image.convert("L").save(path)
    elif mode == "I;16":
        grey = np.asarray(image.convert("L")).astype(np.uint16) * 257
        Image.fromarray(grey).save(path)
    return path


@pytest.mark.parametrize(("mode", "suffix"), [("RGBA", "png"), ("P", "png"), ("CMYK", "jpg")])
def test_colour_modes_load_as_rgb_and_give_the_face(
    analyzer, astronaut, astronaut_identity, tmp_path, mode, suffix
):
    path = save_in_mode(astronaut, mode, tmp_path / f"astronaut.{suffix}")
    with Image.open(path) as stored:
        assert stored.mode == mode
    loaded = load_image(path, REFERENCE)
    assert loaded.mode == "RGB" and loaded.size == astronaut.size
    identity = analyzer.analyze(loaded)
    assert identity.faces_found == 1
    # Same face; palette and JPEG colours may move the tiny detector's box by one 8-pixel cell.
    assert cosine_similarity(identity.embedding, astronaut_identity.embedding) > 0.8
    if mode == "RGBA":
        assert np.asarray(loaded)[:, :20].min() == 255


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_greyscale_modes_load_as_8bit_grey_rgb(astronaut, tmp_path, mode):
    path = save_in_mode(astronaut, mode, tmp_path / "astronaut.png")
    with Image.open(path) as stored:
        assert stored.mode == mode
    loaded = load_image(path, REFERENCE)
    assert loaded.mode == "RGB" and loaded.size == astronaut.size
    # 16-bit v * 257 must come back as v exactly: scaled by bit depth, not clipped or stretched.
    expected = np.asarray(astronaut.convert("L"))
    pixels = np.asarray(loaded)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)
    np.testing.assert_array_equal(np.asarray(load_mask(path).grey), expected)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (64, 48), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = load_image(path, REFERENCE)
    assert loaded.size == (64, 48)
    assert tuple(np.asarray(loaded)[10, 10]) == (255, 0, 0)


def test_mask_loads_its_grey_and_its_transparency_apart(tmp_path):
    # What the transparency means is model/inputs/masks.py's decision; the loader hands both layers on.
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))
    path = tmp_path / "mask.png"
    mask.save(path)
    loaded = load_mask(path)
    assert loaded.grey.mode == "L" and loaded.alpha.mode == "L" and loaded.size == (64, 64)
    assert np.asarray(loaded.grey).max() == 0
    alpha = np.asarray(loaded.alpha)
    assert alpha[:, :32].max() == 0 and alpha[:, 32:].min() == 255
    assert load_mask(png_path(Image.new("L", (8, 8), 0), tmp_path / "opaque.png")).alpha is None


def png_path(image: Image.Image, path):
    image.save(path)
    return path


def load_mask_grey(path, input_name):
    return load_mask(path, input_name).grey


# --- Loading: unreadable inputs ----------------------------------------------------------------------------


def empty_file(astronaut, path):
    path.write_bytes(b"")


def text_file(astronaut, path):
    path.write_text("a prompt, not a picture\n")


def truncated_jpeg(astronaut, path):
    astronaut.save(path, quality=95)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def broken_png(astronaut, path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a chunk" * 4)


@pytest.mark.parametrize("write", [empty_file, text_file, truncated_jpeg, broken_png])
@pytest.mark.parametrize("loader", [load_image, load_mask_grey])
def test_unreadable_files_are_input_errors_naming_the_input(astronaut, tmp_path, write, loader):
    path = tmp_path / "upload.jpg"
    write(astronaut, path)
    with pytest.raises(InputError, match=f"^{REFERENCE} is not a readable image .*JPEG, PNG, WebP or HEIC"):
        loader(path, REFERENCE)


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    width = 8000
    height = MAX_DECODED_PIXELS // width + 1
    path = tmp_path / "huge.png"
    Image.new("1", (width, height)).save(path)
    started = time.perf_counter()
    with pytest.raises(InputError, match=f"^{REFERENCE} is {width}x{height} pixels .*megapixels"):
        load_image(path, REFERENCE)
    assert time.perf_counter() - started < 0.5


# Every mode and container of the bad-inputs table, for the inputs `image` and `mask` as well as the
# reference: the same loader rules apply, so each file must load upright, at its size, in the right mode.
ODD_FILES = {
    "RGBA": lambda p: png_bytes_of(with_alpha(p)),
    "LA": lambda p: png_bytes_of(with_alpha(p).convert("LA")),
    "P with transparency": palette_with_transparency,
    "CMYK JPEG": lambda p: encoded(p.convert("CMYK"), "JPEG"),
    "16-bit PNG": sixteen_bit,
    "greyscale": lambda p: png_bytes_of(p.convert("L")),
    "animated GIF": lambda p: animated(p, "GIF"),
    "animated WebP": lambda p: animated(p, "WEBP"),
    "EXIF-rotated JPEG": exif_rotated,
    "HEIC": heic,
    "EXIF-rotated HEIC": lambda p: heic(p, orientation=6),
}


def png_bytes_of(image: Image.Image) -> bytes:
    return encoded(image, "PNG")


@pytest.mark.parametrize("kind", list(ODD_FILES))
@pytest.mark.parametrize(
    ("loader", "mode"), [(load_image, "RGB"), (load_mask_grey, "L")], ids=["image", "mask"]
)
def test_odd_files_load_upright_at_their_size(astronaut, tmp_path, kind, loader, mode):
    landscape = astronaut.resize((384, 288))  # not square, so a missed EXIF rotation shows in the size
    path = tmp_path / "input"
    path.write_bytes(ODD_FILES[kind](landscape))
    loaded = loader(path, "image" if loader is load_image else "mask")
    assert loaded.mode == mode and loaded.size == (384, 288)
    # The content survives: close to the original's grey levels (JPEG, palettes and frames add a little).
    grey = np.asarray(loaded.convert("L"), dtype=np.float64)
    original = np.asarray(landscape.convert("L"), dtype=np.float64)
    # The transparent frame reads as white (a mask's grey as its colour): compare the opaque middle.
    if kind in ("RGBA", "LA"):
        grey, original = grey[40:-40, 40:-40], original[40:-40, 40:-40]
    assert np.corrcoef(grey.ravel(), original.ravel())[0, 1] > 0.9


# --- The onnxruntime provider: CUDA first in the GPU image, the CPU as the fallback.


@pytest.mark.parametrize(
    "available, expected",
    [
        # onnxruntime-gpu (the Cog image) lists CUDA (and TensorRT, which we do not ask for).
        (["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER], ([CUDA_PROVIDER, CPU_PROVIDER], 0)),
        # The CPU wheel (the tests, `make demo`).
        ([CPU_PROVIDER], ([CPU_PROVIDER], -1)),
        (["AzureExecutionProvider", CPU_PROVIDER], ([CPU_PROVIDER], -1)),
    ],
)
def test_execution_providers_put_cuda_first_when_onnxruntime_has_it(available, expected):
    assert execution_providers(available) == expected


CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}


@pytest.mark.parametrize(
    "available, expected",
    [
        (["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER], [CUDA_OPTIONS, {}]),
        ([CPU_PROVIDER], [{}]),
    ],
)
def test_the_cuda_provider_gets_the_heuristic_search_and_an_exact_arena(available, expected):
    providers, _ = execution_providers(available)
    assert provider_options(providers) == expected


def test_every_face_session_is_given_the_provider_options(face_dir, monkeypatch):
    # As in the GPU image, where onnxruntime lists CUDA; this CPU wheel then warns and runs on the CPU, so
    # the sessions still load, and each was created with the CUDA options beside the CPU fallback.
    created = []
    create = onnxruntime.InferenceSession.__init__

    def recording(self, path, *args, **kwargs):
        created.append((kwargs.get("providers"), kwargs.get("provider_options")))
        create(self, path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "__init__", recording)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        analyzer = FaceAnalyzer(face_dir)
    assert created == [([CUDA_PROVIDER, CPU_PROVIDER], [CUDA_OPTIONS, {}])] * 2  # detector, recognizer
    assert analyzer.provider == CPU_PROVIDER
    assert isinstance(analyzer.find_identity(Image.new("RGB", (64, 64), (128, 128, 128))), NoUsableFace)


def test_face_analysis_logs_the_provider_its_sessions_run_on(face_dir, caplog):
    # The CPU wheel here: the sessions run on the CPU, and the log line says so (0.3 s).
    with caplog.at_level(logging.INFO, logger="model.identity.faces"):
        analyzer = FaceAnalyzer(face_dir)
    assert analyzer.provider == CPU_PROVIDER == execution_providers()[0][0]
    assert f"Face analysis runs on {CPU_PROVIDER}" in caplog.text
