"""The Cog predictor called directly on the tiny profile: both modes, seeds, identity score, references."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.errors import GenerationError, InputError, WeightsError
from tests.helpers.images import pixels

DEFAULT_INPUTS = dict(
    prompt="a character reading in a library",
    image=None,
    mask=None,
    seed=5,
    resolution="None",
    style_type="Auto",
    aspect_ratio="1:1",
    rendering_speed="Turbo",
    # Off: these tests are about images and identity; tests/test_magic_prompt.py covers the rewrite.
    magic_prompt_option="Off",
)


@pytest.fixture(scope="module")
def predictor(tiny_weights):
    import gc
    import os

    from predict import Predictor

    previous = os.environ.get("WEIGHTS_DIR")
    os.environ["WEIGHTS_DIR"] = str(tiny_weights)
    try:
        predictor = Predictor()
        predictor.setup()
        # setup() ends by freezing every live object out of garbage collection, as a server should; this
        # test process goes on to other modules, so it gives them back to the collector.
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
    finally:
        if previous is None:
            del os.environ["WEIGHTS_DIR"]
        else:
            os.environ["WEIGHTS_DIR"] = previous
    return predictor


@pytest.fixture(scope="module")
def reference(portrait, tmp_path_factory):
    path = tmp_path_factory.mktemp("reference") / "portrait.png"
    portrait.save(path)
    return path


def downloaded(path):
    """The file as Cog hands a downloaded input to the predictor: a copy directly in the temporary folder
    (the predictor refuses any other path, model/inputs/request.py)."""
    if path is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=Path(path).name, delete=False) as copy:
        copy.write(Path(path).read_bytes())
    return Path(copy.name)


def predict(predictor, reference, **inputs):
    """Predictor.run with its file inputs handed over as Cog hands them."""
    inputs = {**DEFAULT_INPUTS, **inputs}
    for name in ("image", "mask"):
        inputs[name] = downloaded(inputs[name])
    return predictor.run(character_reference_image=downloaded(reference), **inputs)


def run(predictor, reference, **inputs):
    return Image.open(predict(predictor, reference, **inputs))


@pytest.mark.slow
def test_text_to_image_logs_the_four_lines_and_the_identity_score(predictor, reference, capsys):
    image = run(predictor, reference, resolution="768x1344")
    assert image.size == (768, 1344)
    logs = capsys.readouterr().out
    for line in ("Using seed: 5", "Generating...", "Prompt used: a character reading in a library"):
        assert line in logs
    assert "Image generation took " in logs
    assert "Identity similarity: " in logs


@pytest.mark.slow
def test_same_seed_same_image_other_seed_other_image(predictor, reference):
    first = pixels(run(predictor, reference, seed=1234))
    again = pixels(run(predictor, reference, seed=1234))
    other = pixels(run(predictor, reference, seed=1235))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.slow
def test_each_output_gets_a_fresh_file_and_the_next_request_removes_it(predictor, reference):
    first = predict(predictor, reference)
    assert first.exists()
    second = predict(predictor, reference)
    # Cog has read the first output by the time the second request starts; keeping it would fill the disk.
    assert first != second and second.exists()
    assert not first.parent.exists()


@pytest.mark.slow
def test_inpainting_on_a_large_photo_with_a_mask_of_another_size(predictor, reference, portrait, tmp_path):
    photo = portrait.resize((1600, 1200))
    photo_path = tmp_path / "photo.jpg"
    photo.save(photo_path, quality=95)
    mask = Image.new("L", (400, 300), 255)
    mask.paste(0, (100, 60, 300, 240))
    mask_path = tmp_path / "mask.png"
    mask.save(mask_path)

    output = run(predictor, reference, image=photo_path, mask=mask_path, resolution="1344x768")
    assert output.size == (1600, 1200)
    keep = np.asarray(mask.resize((1600, 1200), Image.Resampling.BILINEAR)) >= 128
    decoded = pixels(Image.open(photo_path))
    assert np.array_equal(pixels(output)[keep], decoded[keep])
    assert not np.array_equal(pixels(output)[~keep], decoded[~keep])


@pytest.mark.slow
def test_reference_without_a_face_is_an_input_error(predictor, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (400, 400), (30, 140, 60)).save(blank)
    with pytest.raises(InputError, match="character_reference_image"):
        run(predictor, blank)


@pytest.mark.slow
def test_exif_rotated_reference_gives_the_same_identity(predictor, portrait, tmp_path, caplog):
    upright = tmp_path / "upright.jpg"
    portrait.save(upright, quality=95)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be turned 90 degrees clockwise to view
    portrait.transpose(Image.Transpose.ROTATE_90).save(rotated, quality=95, exif=exif)
    faces = predictor.service.faces
    from model.inputs.images import load_image

    first = faces.analyze(load_image(upright, "character_reference_image"))
    second = faces.analyze(load_image(rotated, "character_reference_image"))
    assert faces.cosine_similarity(first.embedding, second.embedding) > 0.95


@pytest.mark.slow
def test_reference_with_two_faces_uses_the_larger_and_says_so(predictor, portrait, tmp_path, capsys):
    head = portrait.crop((100, 0, 400, 300))
    canvas = Image.new("RGB", (900, 500), (235, 235, 235))
    canvas.paste(head, (20, 100))
    canvas.paste(head.resize((200, 200)), (650, 150))
    path = tmp_path / "two.png"
    canvas.save(path)
    run(predictor, path)
    assert "using the largest" in capsys.readouterr().out


def test_setup_fails_clearly_on_a_corrupt_weights_file(tiny_weights, tmp_path):
    import shutil

    from model.service import CharacterService

    broken = tmp_path / "weights"
    shutil.copytree(tiny_weights, broken)
    adapter = broken / "ip_adapter" / "ip-adapter-faceid-plusv2_sdxl.bin"
    data = bytearray(adapter.read_bytes())
    data[len(data) // 2] ^= 0xFF
    adapter.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="ip-adapter-faceid-plusv2_sdxl.bin"):
        CharacterService.load(broken)


def test_logging_goes_to_stdout_as_bare_lines(capsys):
    from model.logs import configure_logging

    configure_logging()
    configure_logging()  # idempotent: one handler, one line
    logging.getLogger("model.inputs.request").info("Using seed: %d", 9)
    assert capsys.readouterr().out == "Using seed: 9\n"


def test_a_failure_inside_the_server_names_the_stage_it_came_after(predictor, reference, monkeypatch):
    """coglet returns no logs with a failed prediction: the one sentence must say where it failed."""

    def broken_generate(settings, on_step=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    monkeypatch.setattr(predictor.service.pipeline, "generate", broken_generate)
    with pytest.raises(GenerationError) as raised:
        predict(predictor, reference)
    message = str(raised.value)
    assert message.startswith(
        "Generation failed inside the server after its prompt stage (RuntimeError: CUDA error: an illegal"
    ), message
    assert "\n" not in message and "retry" in message
