"""Every command in the deployment page's Docker, Replicate, Kubernetes and Clients sections
(docs/DEPLOYMENT.md, linked from the README) is either run here, as written (pointed at the test server and
test files), or named as needing what CI lacks (Docker, the Cog CLI, a cluster, the model hub)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import tarfile

import jsonschema
import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.cog_server import serving_folder
from tests.helpers.images import png_bytes

pytestmark = pytest.mark.server

DEPLOYMENT = (ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
SECTIONS = ("Docker (GPU)", "Replicate", "Kubernetes", "Clients")
NOT_RUNNABLE_HERE = {
    "cog build": "needs the Cog CLI and a Docker engine",
    "cog login": "needs the Cog CLI and a Replicate account",
    "cog push": "needs the Cog CLI, Docker and a Replicate account",
    "docker run --gpus all": "needs Docker with an NVIDIA GPU",
    "kubectl ": "needs a Kubernetes cluster",
    # tests/test_weights.py covers the downloader offline.
    ".venv/bin/python scripts/download_weights.py": "needs huggingface.co",
}
REFERENCE_URL = "https://replicate.delivery/pbxt/NUKxQppU8C2sCfleK0lGVI0vt9P3swKz3MnKs1z9fnHkdAV2/0_1.webp"


def section(title: str) -> str:
    start = DEPLOYMENT.index(f"\n## {title}\n")
    end = DEPLOYMENT.find("\n## ", start + 1)
    return DEPLOYMENT[start : end if end != -1 else None]


def blocks(title: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(title), flags=re.S)


def commands(title: str) -> list[str]:
    """The shell commands of a section: backslash continuations joined, quoted newlines kept in."""
    found = []
    for block in blocks(title, "sh"):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending = f"{pending}\n{line}" if pending else line.strip()
            try:
                shlex.split(pending)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            found.append(pending)
            pending = ""
        assert not pending, f"unterminated command in {title}: {pending}"
    return found


ALL_COMMANDS = [command for title in SECTIONS for command in commands(title)]
RUN_HERE = {
    "tar -C weights -cf weights.tar .": "test_tarball_commands",
    "sha256sum weights.tar": "test_tarball_commands",
    "curl -s localhost:5000/health-check": "test_curl_commands",
    "curl -s localhost:5000/predictions": "test_curl_commands",
    "SERVER=http://localhost:5000 EXTRA=": "test_client_commands",
    ".venv/bin/python examples/client.py": "test_client_commands",
    ".venv/bin/python examples/async_webhook.py": "test_client_commands",
}


def runs_here(command: str) -> bool:
    return any(command.startswith(prefix) for prefix in RUN_HERE)


def test_every_command_is_run_here_or_named_as_needing_what_ci_lacks():
    assert len(ALL_COMMANDS) >= 15, ALL_COMMANDS
    for command in ALL_COMMANDS:
        assert runs_here(command) or any(command.startswith(p) for p in NOT_RUNNABLE_HERE), command
    # kubectl applies every manifest in deploy/kubernetes, and only files that exist.
    applied = {m for c in ALL_COMMANDS if c.startswith("kubectl apply") for m in re.findall(r"-f (\S+)", c)}
    assert applied == {str(p.relative_to(ROOT)) for p in (ROOT / "deploy" / "kubernetes").glob("*.yaml")}
    # Each prefix that claims a test matches a command that is still on the page.
    for prefix in RUN_HERE:
        assert any(command.startswith(prefix) for command in ALL_COMMANDS), prefix


@pytest.fixture(scope="module")
def reference_server(portrait, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    (folder / "me.png").write_bytes(png_bytes(portrait))
    with serving_folder(folder) as base_url:
        yield f"{base_url}/me.png"


def bash(command: str, cwd, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tarball_commands(tiny_weights, tmp_path):
    shutil.copytree(tiny_weights, tmp_path / "weights")
    lines = [c for c in commands("Docker (GPU)") if c.startswith(("tar ", "sha256sum "))]
    results = [bash(line, tmp_path) for line in lines]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    digest = results[-1].stdout.split()[0]
    assert digest == hashlib.sha256((tmp_path / "weights.tar").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "weights.tar") as archive:
        assert "./manifest.json" in archive.getnames()  # at the top level, as setup expects


def test_curl_commands(cog_server, reference_server, tmp_path):
    host = cog_server.url.removeprefix("http://")
    health, predict = (c for c in commands("Docker (GPU)") if c.startswith("curl "))
    status = bash(health.replace("localhost:5000", host), tmp_path)
    assert json.loads(status.stdout)["status"] == "READY"
    result = bash(predict.replace("localhost:5000", host).replace(REFERENCE_URL, reference_server), tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "output.png").read_bytes().startswith(b"\x89PNG")


def test_client_commands(cog_server, reference_server, portrait, tmp_path):
    portrait.save(tmp_path / "me.jpg")
    for number, command in enumerate(c for c in commands("Clients") if runs_here(c)):
        out = tmp_path / f"out{number}.png"
        local = (
            command.replace("http://localhost:5000", cog_server.url)
            .replace("https://example.com/me.jpg", reference_server)
            .replace(" me.jpg", f" {tmp_path / 'me.jpg'}")
            .replace(" out.png", f" {out}")
        )
        result = bash(local, ROOT)
        assert result.returncode == 0, f"{local}\n{result.stdout}\n{result.stderr}"
        assert out.read_bytes().startswith(b"\x89PNG"), local


def test_the_replicate_environment_passes_cogs_schema():
    config = yaml.safe_load((ROOT / "cog.yaml").read_text(encoding="utf-8"))
    (snippet,) = blocks("Replicate", "yaml")
    config["environment"] = yaml.safe_load(snippet)["environment"]
    schema = json.loads((ROOT / "specs" / "cog-config-schema-v1.0.json").read_text(encoding="utf-8"))
    jsonschema.validate(config, schema)
    assert {entry.split("=")[0] for entry in config["environment"]} == {
        "WEIGHTS_DIR",
        "WEIGHTS_URL",
        "WEIGHTS_SHA256",
    }


def test_the_original_example_input_is_a_valid_request():
    (example,) = blocks("Replicate", "json")
    contract = json.loads((ROOT / "specs" / "ideogram-character.contract.json").read_text(encoding="utf-8"))
    inputs = contract["inputs"]
    for name, value in json.loads(example).items():
        assert name in inputs, name
        assert value in inputs[name].get("enum", [value]), (name, value)
