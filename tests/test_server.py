"""End to end through the real Cog server (coglet) on the tiny profile: the contract as clients see it."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from PIL import Image

from model.timing import METRIC_SUFFIX
from tests.helpers.cog_server import serving_folder
from tests.helpers.contract import contract_differences, load_contract
from tests.helpers.images import cartoon_robot, data_uri, decode_image, pixels, png_bytes

pytestmark = pytest.mark.server

LOG_LINES = ("Using seed: ", "Generating...", "Prompt used: ", "Image generation took ")


def test_openapi_matches_the_contract_field_by_field(cog_server):
    document = requests.get(f"{cog_server.url}/openapi.json", timeout=10).json()
    assert contract_differences(document, load_contract()) == []


def test_default_request_with_data_uris(cog_server, portrait):
    response = cog_server.predict(
        prompt="a portrait in a garden", character_reference_image=data_uri(portrait)
    )
    body = response.json()
    assert response.status_code == 200 and body["status"] == "succeeded", body
    image = decode_image(body["output"])
    assert image.format == "PNG" and image.size == (1024, 1024)
    lines = body["logs"].splitlines()
    for prefix in LOG_LINES:
        assert any(line.startswith(prefix) for line in lines), f"no '{prefix}' line in {lines}"
    assert any(line.startswith("Identity similarity: ") for line in lines)
    # The defaults include magic_prompt_option=Auto; with only the offline fallback model loaded (the tiny
    # profile has no production LLM), Auto keeps an English prompt as given and says why.
    assert (
        "Magic prompt: Auto, prompt kept as given (English, and only the offline fallback model is loaded)"
        in lines
    ), lines
    assert "Prompt used: a portrait in a garden" in lines


@pytest.fixture(scope="module")
def file_server(tmp_path_factory):
    """Plain files over http://127.0.0.1, as clients send URLs instead of data URIs."""
    folder = tmp_path_factory.mktemp("served")
    with serving_folder(folder) as base_url:
        yield folder, base_url


@pytest.mark.parametrize(
    ("inputs", "expected_size"),
    [
        ({"resolution": "1344x768"}, (1344, 768)),
        ({"aspect_ratio": "16:9"}, (1312, 736)),
        ({"aspect_ratio": "16:9", "resolution": "832x1216"}, (832, 1216)),
    ],
)
def test_sizes_with_inputs_as_urls(cog_server, file_server, portrait, inputs, expected_size):
    folder, base_url = file_server
    (folder / "reference.png").write_bytes(png_bytes(portrait))
    response = cog_server.predict(
        prompt="a character in a city",
        character_reference_image=f"{base_url}/reference.png",
        rendering_speed="Turbo",
        magic_prompt_option="Off",
        seed=3,
        **inputs,
    )
    body = response.json()
    assert body["status"] == "succeeded", body
    assert decode_image(body["output"]).size == expected_size


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"prompt": "x", "style_type": "Anime"}, "style_type"),
        ({"prompt": "x", "resolution": "1000x1000"}, "resolution"),
        ({"prompt": "x", "seed": 2147483648}, "seed"),
        ({}, "prompt"),
    ],
)
def test_invalid_inputs_are_rejected_with_422_naming_the_field(cog_server, portrait, inputs, field):
    response = cog_server.predict(character_reference_image=data_uri(portrait), **inputs)
    assert response.status_code == 422
    locations = [error["loc"][-1] for error in response.json()["detail"]]
    assert field in locations


def test_image_without_mask_fails_naming_both_and_server_stays_ready(cog_server, portrait):
    response = cog_server.predict(
        prompt="x", character_reference_image=data_uri(portrait), image=data_uri(portrait)
    )
    body = response.json()
    assert body["status"] == "failed"
    assert "image was given without mask" in body["error"] and "mask" in body["error"]
    assert cog_server.settles_ready()


def test_blank_reference_fails_clearly(cog_server):
    blank = Image.new("RGB", (512, 512), (90, 120, 200))
    body = cog_server.predict(prompt="x", character_reference_image=data_uri(blank)).json()
    assert body["status"] == "failed"
    assert "character_reference_image is blank (one colour, or almost)" in body["error"]
    assert cog_server.settles_ready()


def adapter_line(logs: str) -> str:
    (line,) = [line for line in logs.splitlines() if line.startswith("Adapters: ")]
    return line


def test_cartoon_without_a_human_face_uses_the_appearance_adapter(cog_server):
    body = cog_server.predict(
        prompt="the character waving on a beach",
        character_reference_image=data_uri(cartoon_robot()),
        rendering_speed="Turbo",
        magic_prompt_option="Off",
        seed=5,
    ).json()
    assert body["status"] == "succeeded", body
    assert decode_image(body["output"]).size == (1024, 1024)
    logs = body["logs"]
    assert (
        "No human face found in character_reference_image; "
        "using the whole image as the character's appearance" in logs
    )
    # The identity adapter (PuLID, the default) is off; the appearance adapter carries the character.
    assert adapter_line(logs) == "Adapters: PuLID 0.00 (num_zero 0), appearance 0.60"
    assert "Style: Auto chose Fiction" in logs
    assert "Identity similarity: not scored (no human face in character_reference_image)" in logs


def test_human_reference_uses_pulid_by_default(cog_server, portrait):
    body = cog_server.predict(
        prompt="the character waving on a beach",
        character_reference_image=data_uri(portrait),
        rendering_speed="Turbo",
        magic_prompt_option="Off",
        style_type="Realistic",
        seed=5,
    ).json()
    assert body["status"] == "succeeded", body
    # PuLID at v1.1's id_scale and num_zero; FaceID is not loaded, the appearance adapter is off.
    assert adapter_line(body["logs"]) == "Adapters: PuLID 0.80 (num_zero 20), appearance 0.00"
    assert "No human face found" not in body["logs"]
    # The ID extraction is timed per stage.
    for stage in ("pulid_face", "pulid_parse", "pulid_eva", "pulid_idformer"):
        assert stage + METRIC_SUFFIX in body["metrics"], body["metrics"]


@pytest.mark.parametrize("reference", ["human", "cartoon"])
def test_inpainting_keeps_every_white_pixel_at_the_input_size(cog_server, portrait, reference):
    character = portrait if reference == "human" else cartoon_robot()
    photo = portrait.resize((1600, 1200))
    # A mask of another size: black (regenerate) rectangle in the middle, white elsewhere.
    mask = Image.new("L", (800, 600), 255)
    mask.paste(0, (250, 150, 550, 450))
    body = cog_server.predict(
        prompt="the character standing here",
        character_reference_image=data_uri(character),
        image=data_uri(photo),
        mask=data_uri(mask),
        rendering_speed="Turbo",
        magic_prompt_option="Off",
        seed=11,
    ).json()
    assert body["status"] == "succeeded", body
    output = decode_image(body["output"])
    assert output.size == (1600, 1200)
    keep = np.asarray(mask.resize((1600, 1200), Image.Resampling.BILINEAR)) >= 128
    assert np.array_equal(pixels(output)[keep], pixels(photo)[keep])
    assert not np.array_equal(pixels(output)[~keep], pixels(photo)[~keep])
    assert ("appearance 0.60" in body["logs"]) == (reference == "cartoon")


def test_server_starts_without_deprecation_warnings(cog_server):
    setup_logs = cog_server.health()["setup"]["logs"]
    server_log = cog_server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Server ready" in setup_logs
    assert "deprecat" not in (setup_logs + server_log).lower()
