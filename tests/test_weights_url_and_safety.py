"""Weights fetched at setup from WEIGHTS_URL, and the output safety checker, through the real Cog server.

Both need a server started on its own weights, so they share starts: the tarball served over a local
http.server holds a copy of the tiny profile whose safety checker flags everything, which proves at once
that a fetched folder serves and that a flagged output fails the prediction. The same folder, served with
CHARACTER_SAFETY_CHECKER=off, proves the switch.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from devtools.profiles.tiny.safety import ALWAYS_FLAGS, write_safety_checker
from model.errors import WeightsError
from model.options import SAFETY_CHECKER_ENV, WEIGHTS_SHA256_ENV, WEIGHTS_URL_ENV
from model.safety import FLAGGED_MESSAGE, SafetyChecker
from model.weights.manifest import write_manifest
from model.weights.url import fetch_weights_if_configured
from tests.helpers.cog_server import free_port, running_cog_server, serving_folder
from tests.helpers.images import data_uri, decode_image

REQUEST = {
    "prompt": "a portrait on a beach",
    "rendering_speed": "Turbo",
    "magic_prompt_option": "Off",
    "seed": 5,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder served over http://127.0.0.1, as a bucket serves a weights tarball."""
    folder = tmp_path_factory.mktemp("bucket")
    with serving_folder(folder) as base_url:
        yield folder, base_url


def make_tarball(weights: Path, tarball: Path) -> str:
    """The README's commands: `tar -C weights -cf weights.tar .` and `sha256sum weights.tar`."""
    subprocess.run(["tar", "-C", str(weights), "-cf", str(tarball), "."], check=True)
    output = subprocess.run(["sha256sum", str(tarball)], check=True, capture_output=True, text=True).stdout
    return output.split()[0]


@pytest.fixture(scope="module")
def flagging_tarball(tiny_weights, served, tmp_path_factory) -> tuple[str, str]:
    """URL and sha256 of a tarball of the tiny profile whose safety checker flags every image."""
    folder, base_url = served
    weights = tmp_path_factory.mktemp("flagging") / "weights"
    shutil.copytree(tiny_weights, weights)
    shutil.rmtree(weights / "safety_checker")
    write_safety_checker(weights, threshold=ALWAYS_FLAGS)
    write_manifest(weights, profile="tiny")
    digest = make_tarball(weights, folder / "weights.tar")
    return f"{base_url}/weights.tar", digest


@pytest.fixture(scope="module")
def fetched_server(flagging_tarball, tmp_path_factory):
    url, digest = flagging_tarball
    root = tmp_path_factory.mktemp("fetched")
    weights_dir = root / "weights"  # does not exist yet: setup creates it
    env = {WEIGHTS_URL_ENV: url, WEIGHTS_SHA256_ENV: digest, SAFETY_CHECKER_ENV: "on"}
    with running_cog_server(weights_dir, root / "server.log", **env) as server:
        yield server, weights_dir


@pytest.mark.server
def test_setup_fetches_the_tarball_into_a_missing_weights_folder(fetched_server):
    server, weights_dir = fetched_server
    health = server.health()
    assert health["status"] == "READY", health["setup"].get("logs", "")[-3000:]
    assert "Fetched and verified" in health["setup"]["logs"]
    assert (weights_dir / "manifest.json").is_file()
    # Nothing of the download is left behind, and the folder's hidden bookkeeping did not come from the tar.
    assert not list(weights_dir.glob(".download-*"))


@pytest.mark.server
def test_a_flagged_output_fails_with_one_clear_sentence_and_the_server_stays_ready(fetched_server, portrait):
    server, _ = fetched_server
    body = server.predict(character_reference_image=data_uri(portrait), **REQUEST).json()
    assert body["status"] == "failed" and body.get("output") is None
    # coglet prefixes "Prediction failed: ... UnsafeOutputError:"; the sentence itself is ours, whole.
    assert body["error"].endswith(FLAGGED_MESSAGE)
    # coglet returns no logs with a failed prediction; the server's own log has them.
    assert "Safety checker: output flagged" in server.log_path.read_text(encoding="utf-8", errors="replace")
    assert server.settles_ready()


@pytest.mark.server
def test_with_the_checker_off_the_same_request_succeeds(fetched_server, portrait, tmp_path):
    _, weights_dir = fetched_server
    # Same folder, second server: WEIGHTS_URL is set but the folder is complete, so nothing is fetched.
    env = {
        SAFETY_CHECKER_ENV: "off",
        WEIGHTS_URL_ENV: "http://127.0.0.1:9/unused.tar",
        WEIGHTS_SHA256_ENV: "0" * 64,
    }
    with running_cog_server(weights_dir, tmp_path / "server.log", **env) as server:
        health = server.health()
        assert health["status"] == "READY", health["setup"].get("logs", "")[-3000:]
        assert "is not fetched" in health["setup"]["logs"]
        body = server.predict(character_reference_image=data_uri(portrait), **REQUEST).json()
        # From the server's own log: coglet's setup logs in /health-check can miss the last setup lines
        # when the worker's output arrives after the READY snapshot (seen on a loaded machine).
        server_log = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert body["status"] == "succeeded", body.get("error")
    assert decode_image(body["output"]).size == (1024, 1024)
    assert "Safety checker: off (CHARACTER_SAFETY_CHECKER=off)" in server_log


@pytest.mark.server
def test_a_wrong_digest_fails_setup_with_the_reason(flagging_tarball, tmp_path):
    url, digest = flagging_tarball
    wrong = "f" * 64
    env = {WEIGHTS_URL_ENV: url, WEIGHTS_SHA256_ENV: wrong}
    with running_cog_server(tmp_path / "weights", tmp_path / "server.log", **env) as server:
        health = server.health()
    assert health["status"] == "SETUP_FAILED"
    assert f"has sha256 {digest}, but {WEIGHTS_SHA256_ENV} is {wrong}" in health["setup"]["logs"]
    assert not (tmp_path / "weights" / "manifest.json").exists()


# --- Without a server: the edges of the fetch, and the switch.


def test_an_unreachable_url_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/weights.tar?X-Amz-Signature=secret"
    with pytest.raises(WeightsError, match="Could not download the weights from WEIGHTS_URL=") as error:
        fetch_weights_if_configured(tmp_path / "w", url, "a" * 64)
    assert "secret" not in str(error.value)  # a signed URL's query never reaches the logs


def test_nothing_happens_without_a_url(tmp_path):
    fetch_weights_if_configured(tmp_path / "absent", None, None)
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize(
    ("name", "kind", "refusal"),
    [
        ("../escaped.txt", tarfile.REGTYPE, "not a readable tar archive"),
        # tarfile's data filter strips the leading "/": the file lands inside, and the tarball is then
        # refused for what it lacks.
        ("/abs.txt", tarfile.REGTYPE, "has no manifest.json at its top level"),
        ("link", tarfile.SYMTYPE, "not a readable tar archive"),
    ],
)
def test_a_tarball_cannot_write_outside_the_weights_folder(served, tmp_path, name, kind, refusal):
    folder, base_url = served
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo(name)
        member.type = kind
        if kind == tarfile.SYMTYPE:
            member.linkname = "/etc/passwd"
        payload = b"" if kind == tarfile.SYMTYPE else b"x"
        member.size = len(payload)
        archive.addfile(member, io.BytesIO(payload))
    (folder / "evil.tar").write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    root = tmp_path / "deep" / "weights"
    with pytest.raises(WeightsError, match=refusal):
        fetch_weights_if_configured(root, f"{base_url}/evil.tar", digest)
    assert not (tmp_path / "deep" / "escaped.txt").exists() and not Path("/abs.txt").exists()
    assert list(root.iterdir()) == []  # the temporary folder is gone too


def test_the_tiny_checker_passes_ordinary_images_and_the_flagging_one_flags_them(
    tiny_weights, tmp_path, portrait
):
    write_safety_checker(tmp_path, threshold=ALWAYS_FLAGS)
    cpu = torch.device("cpu")
    tiny = SafetyChecker.load(tiny_weights / "safety_checker", cpu, torch.float32)
    flagging = SafetyChecker.load(tmp_path / "safety_checker", cpu, torch.float32)
    for image in (
        portrait,
        Image.new("RGB", (1024, 1024), (128, 128, 128)),
        Image.effect_noise((512, 512), 60),
    ):
        assert not tiny.flags(image)
        assert flagging.flags(image)


# The published feature_extractor/preprocessor_config.json of stable-diffusion-v1-5, byte for byte: its
# sha256 is the one the manifest pins, so this proves that the production file loads with our transformers.
PUBLISHED_PREPROCESSOR_CONFIG = """{
  "crop_size": 224,
  "do_center_crop": true,
  "do_convert_rgb": true,
  "do_normalize": true,
  "do_resize": true,
  "feature_extractor_type": "CLIPFeatureExtractor",
  "image_mean": [
    0.48145466,
    0.4578275,
    0.40821073
  ],
  "image_std": [
    0.26862954,
    0.26130258,
    0.27577711
  ],
  "resample": 3,
  "size": 224
}
"""


def test_the_published_preprocessor_config_loads(tmp_path):
    from transformers import CLIPImageProcessor

    from model.weights.manifest import production_manifest

    (entry,) = [f for f in production_manifest().files if f.path == "safety_checker/preprocessor_config.json"]
    data = PUBLISHED_PREPROCESSOR_CONFIG.encode()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.size, entry.sha256)
    (tmp_path / "preprocessor_config.json").write_bytes(data)
    processor = CLIPImageProcessor.from_pretrained(tmp_path)
    pixels = processor(images=Image.new("RGB", (1312, 736)), return_tensors="pt").pixel_values
    assert tuple(pixels.shape) == (1, 3, 224, 224)
