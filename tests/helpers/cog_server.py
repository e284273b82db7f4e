"""The real coglet server on a folder of weights, as `cog build`'s image starts it, and a plain file server
for inputs sent as URLs and weights fetched from a bucket."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import ROOT, TORCH_THREADS


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
    # This checkout's packages first, so a worktree's server and schema are its own code, not the
    # installed checkout's (a script's sys.path starts at its folder, not at the working directory).
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    schema_env = {**os.environ, "PYTHONPATH": python_path}
    script = str(ROOT / "scripts" / "write_openapi_schema.py")
    subprocess.run([sys.executable, script], check=True, cwd=ROOT, env=schema_env)
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **schema_env,
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
