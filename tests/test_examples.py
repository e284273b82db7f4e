"""The clients in examples/, run as a user runs them, against the live Cog server on the tiny profile."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest
import requests
from PIL import Image

from tests.helpers import ROOT
from tests.helpers.cog_server import serving_folder
from tests.helpers.images import data_uri, png_bytes

pytestmark = pytest.mark.server

FAST = {"rendering_speed": "Turbo", "magic_prompt_option": "Off", "seed": 7}
FAST_ARGS = [arg for key, value in FAST.items() for arg in ("--input", f"{key}={value}")]


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def reference_file(portrait, tmp_path_factory):
    path = tmp_path_factory.mktemp("client") / "reference.jpg"
    portrait.save(path, format="JPEG")
    return path


@pytest.fixture(scope="module")
def reference_url(portrait, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    (folder / "reference.png").write_bytes(png_bytes(portrait))
    with serving_folder(folder) as base_url:
        yield f"{base_url}/reference.png"


def test_curl_script_sends_a_local_file_and_saves_the_png(cog_server, reference_file, tmp_path):
    out = tmp_path / "out.png"
    result = run(
        ["bash", "examples/predict.sh", str(reference_file), "a knight in a forest", str(out)],
        SERVER=cog_server.url,
        EXTRA='{"rendering_speed": "Turbo", "magic_prompt_option": "Off", "aspect_ratio": "16:9"}',
    )
    assert result.returncode == 0, result.stderr
    assert f"saved {out}" in result.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1312, 736)


def examples_client():
    spec = importlib.util.spec_from_file_location("examples_client", ROOT / "examples" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clients_print_the_servers_error_sentence_alone(cog_server, portrait, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (256, 256), (90, 120, 200)).save(blank)
    # What a raw HTTP client receives: HTTP 200, status failed, and the sentence inside coglet's wrapping.
    response = cog_server.predict(prompt="x", character_reference_image=data_uri(Image.open(blank)))
    body = response.json()
    assert response.status_code == 200 and body["status"] == "failed" and body.get("output") is None, body
    wrapping = "Prediction failed: Prediction failed: InputError: "
    assert body["error"].startswith(wrapping), body["error"]
    sentence = body["error"].removeprefix(wrapping)
    assert sentence.startswith("character_reference_image ") and "Prediction failed" not in sentence
    assert examples_client().error_sentence(body["error"]) == sentence
    # The clients show the sentence alone, and exit 1 without writing an output.
    curl = run(
        ["bash", "examples/predict.sh", str(blank), "x", str(tmp_path / "o.png")], SERVER=cog_server.url
    )
    python = run(
        [sys.executable, "examples/client.py", "--server", cog_server.url, "--prompt", "x",
         "--reference", str(blank), "--out", str(tmp_path / "o.png")]
    )  # fmt: skip
    for result in (curl, python):
        assert result.returncode == 1 and result.stderr.strip() == sentence, result.stderr
    assert not (tmp_path / "o.png").exists()
    assert cog_server.settles_ready()


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        ("Prediction failed: Prediction failed: InputError: mask is 1200x626 pixels and image is 800x800.",
         "mask is 1200x626 pixels and image is 800x800."),
        ("Prediction failed: UnsafeOutputError: the output was flagged by the safety checker",
         "the output was flagged by the safety checker"),
        ("Prediction failed: Prediction failed: GenerationError: Generation failed inside the server (...)",
         "Generation failed inside the server (...)"),
        # Not coglet's wrapping: left as it is, a colon in the sentence included.
        ("mask is not black and white: paint it", "mask is not black and white: paint it"),
        ("Prediction failed: mask: not an image", "mask: not an image"),
    ],
)  # fmt: skip
def test_error_sentence_removes_coglets_wrapping_only(error, sentence):
    assert examples_client().error_sentence(error) == sentence


def test_python_client_sends_a_url_and_retries_while_the_server_is_busy(
    cog_server, portrait, reference_url, tmp_path
):
    # Occupy the single slot with a prediction submitted asynchronously, then run the client at once.
    busy_inputs = {
        "rendering_speed": "Turbo",
        "magic_prompt_option": "Off",
    }  # ~3 s here; the client starts in 0.3 s
    busy = requests.post(
        f"{cog_server.url}/predictions",
        json={"input": {"prompt": "x", "character_reference_image": data_uri(portrait), **busy_inputs}},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert busy.status_code == 202, busy.text
    out = tmp_path / "client.png"
    started = time.monotonic()
    result = run(
        [sys.executable, "examples/client.py", "--server", cog_server.url, "--prompt", "a knight",
         "--reference", reference_url, "--out", str(out), *FAST_ARGS]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "server busy (409), retrying" in result.stderr
    assert time.monotonic() - started > 1
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1024, 1024)


def test_python_client_reports_invalid_input_by_name(cog_server, reference_file, tmp_path):
    result = run(
        [sys.executable, "examples/client.py", "--server", cog_server.url, "--prompt", "x",
         "--reference", str(reference_file), "--input", "style_type=Anime", "--out", str(tmp_path / "o.png")]
    )  # fmt: skip
    assert result.returncode == 1
    assert "invalid input" in result.stderr and "style_type" in result.stderr


def test_async_example_receives_progress_by_webhook_and_saves_the_output(
    cog_server, reference_file, tmp_path
):
    out = tmp_path / "async.png"
    result = run(
        [sys.executable, "examples/async_webhook.py", "--server", cog_server.url, "--prompt", "a knight",
         "--reference", str(reference_file), "--out", str(out), "--timeout", "240", *FAST_ARGS]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("submitted: HTTP 202")
    # Progress as it happens: the step counter in the logs (Turbo: 8 steps) and the metric in an event.
    assert "  log: Step 5/8" in lines and "  log: Step 8/8" in lines
    assert any("denoising_step=8" in line for line in lines if line.startswith("event:"))
    assert lines[-2] == "event: status=succeeded denoising_step=8" and lines[-1] == f"saved {out}"
    with Image.open(out) as image:
        assert image.format == "PNG"
