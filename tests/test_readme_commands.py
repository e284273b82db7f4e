"""Every command of the README's first run (Quick start; Serve it) and of the deployment page's Docker,
Replicate, Kubernetes and Clients sections (docs/DEPLOYMENT.md, linked from the README) is either run here,
as written (pointed at the test server and test files), or named as needing what CI lacks (Docker, the Cog
CLI, a cluster, the model hub)."""

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
from PIL import Image

from tests.helpers import ROOT
from tests.helpers.cog_server import serving_folder
from tests.helpers.images import png_bytes

pytestmark = pytest.mark.server

DEPLOYMENT = (ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
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


def section(title: str, document: str = DEPLOYMENT) -> str:
    start = document.index(f"\n## {title}\n")
    end = document.find("\n## ", start + 1)
    return document[start : end if end != -1 else None]


def blocks(title: str, language: str, document: str = DEPLOYMENT) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(title, document), flags=re.S)


def commands(title: str, document: str = DEPLOYMENT) -> list[str]:
    """The shell commands of a section: backslash continuations joined, quoted newlines kept in."""
    found = []
    for block in blocks(title, "sh", document):
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


# ---------------------------------------------------------------- the README's first run

README_SECTIONS = ("Quick start", "Serve it, and try it in a browser")
README_COMMANDS = [command for title in README_SECTIONS for command in commands(title, README)]
# Each command of the README's first run, by its start, and the test that runs it. `make demo`, `make
# serve-tiny` and `make ui` start long-lived or minutes-long work: their recipes are checked to run what
# tests/test_demo.py, the shared Cog server (tests/helpers/cog_server.py) and tests/test_ui.py run.
README_RUN_HERE = {
    "make demo": "test_the_first_run_make_targets (and tests/test_demo.py)",
    "make serve-tiny": "test_the_first_run_make_targets (and the cog_server fixture)",
    "until curl -s localhost:5000/health-check": "test_the_first_run_curl_saves_a_png",
    'printf \'{"input": {': "test_the_first_run_curl_saves_a_png",
    "curl -s localhost:5000/predictions": "test_the_first_run_curl_saves_a_png",
    "python3 -c ": "test_the_first_run_curl_saves_a_png",
    "make ui SERVER=http://localhost:5000": "test_the_first_run_make_targets (and tests/test_ui.py)",
}


def readme_command(start: str) -> str:
    (command,) = (c for c in README_COMMANDS if c.startswith(start))
    return command


def test_every_readme_command_is_run_here_and_uses_one_port():
    assert len(README_COMMANDS) == len(README_RUN_HERE), README_COMMANDS
    for start in README_RUN_HERE:
        readme_command(start)
    # One server port throughout: every address of the README but the page's own (make ui's UI_PORT, 7860)
    # is the one make serve-tiny serves on.
    assert set(re.findall(r"localhost:(\d+)", README)) - {"7860"} == {"5000"}


def dry_run(*arguments: str) -> str:
    """What make would run, without running it (-n), from this checkout's Makefile."""
    result = subprocess.run(["make", "-n", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_first_run_make_targets():
    demo = dry_run(*shlex.split(readme_command("make demo").split("#")[0])[1:])
    assert "scripts/demo.py --weights-dir weights --tiny-weights-dir .cache/tiny-weights" in demo
    serve = dry_run(*shlex.split(readme_command("make serve-tiny").split("#")[0])[1:])
    assert "scripts/make_tiny_weights.py --if-missing .cache/tiny-weights" in serve
    # The server command of tests/helpers/cog_server.py, on the tiny profile and the README's port.
    assert re.search(
        r"WEIGHTS_DIR=\.cache/tiny-weights COG_PREDICT_TYPE_STUB=predict\.py:Predictor PORT=5000 \\?\s*"
        r"\S*python -m cog\.server\.http",
        serve,
    ), serve
    ui = dry_run(*shlex.split(readme_command("make ui").split("#")[0])[1:])
    # What tests/test_ui.py starts: the page's python -m ui, with SERVER set.
    assert re.search(r"SERVER=http://localhost:5000 \S*\.venv-ui/bin/python -m ui", ui), ui


def test_the_first_run_curl_saves_a_png(cog_server, tmp_path):
    host = cog_server.url.removeprefix("http://")
    # The README runs in the checkout; here, a folder of its own that sees the shipped photo.
    (tmp_path / "evaluation").symlink_to(ROOT / "evaluation")
    steps = ("until curl", "printf '{", "curl -s localhost:5000/predictions", "python3 -c ")
    for start in steps:
        command = readme_command(start).replace("localhost:5000", host)
        result = bash(
            f"timeout 60 bash -c {shlex.quote(command)}" if start == "until curl" else command, tmp_path
        )
        assert result.returncode == 0, f"{command[:200]}\n{result.stdout}\n{result.stderr}"
    response = json.loads((tmp_path / "response.json").read_text())
    assert response["status"] == "succeeded", response.get("error")
    # The prompt is English: offline, Auto keeps it as given.
    assert "Prompt used: a close up photo of a woman in a fashion magazine photoshoot" in response["logs"]
    with Image.open(tmp_path / "output.png") as image:
        assert image.format == "PNG" and image.size == (1024, 1024)


def test_the_first_run_decoder_prints_a_failed_predictions_error(tmp_path):
    sentence = "character_reference_image is not an image file: send a PNG, JPEG or WebP photo"
    failed = {"status": "failed", "output": None, "error": sentence, "logs": ""}
    (tmp_path / "response.json").write_text(json.dumps(failed))
    result = bash(readme_command("python3 -c "), tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == sentence
    assert not (tmp_path / "output.png").exists()
