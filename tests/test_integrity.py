"""Integrity and supply chain: how weights are loaded, what the code never does with user input, and how a
failure is reported. Static checks read the project's own source with `ast`, so they see calls, not text.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
import torch

from model.errors import MAX_ERROR_CHARS, GenerationError, InputError, reported_failures
from tests.helpers import ROOT

# The code that runs in the server: the Cog entry point and the package.
SERVED = [ROOT / "predict.py", *sorted((ROOT / "model").rglob("*.py"))]
PROJECT = SERVED + sorted((ROOT / "scripts").rglob("*.py"))


def calls(path: Path) -> list[tuple[str, ast.Call]]:
    """Every call in a file, with the dotted name it is made through (e.g. "torch.load")."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            found.append((ast.unparse(node.func), node))
    return found


def keyword(call: ast.Call, name: str):
    for item in call.keywords:
        if item.arg == name:
            return ast.literal_eval(item.value) if isinstance(item.value, ast.Constant) else item.value
    return None


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("path", PROJECT, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_without_weights_only_and_no_remote_code(path):
    for name, call in calls(path):
        if name.endswith("torch.load") or (name == "load" and "torch" in imported_modules(path)):
            assert keyword(call, "weights_only") is True, f"{path.name}: {ast.unparse(call)}"
        assert keyword(call, "trust_remote_code") in (None, False), f"{path.name}: {ast.unparse(call)}"
    assert not {"pickle", "dill", "joblib"} & imported_modules(path), path.name


# The one module that opens a URL: the operator's WEIGHTS_URL, fetched once at setup, never a request's input.
SETUP_FETCH = ROOT / "model" / "weights" / "url.py"


@pytest.mark.parametrize("path", SERVED, ids=lambda p: str(p.relative_to(ROOT)))
def test_served_code_runs_no_shell_and_fetches_no_urls(path):
    # User inputs arrive as files that Cog itself downloaded (data URIs or URLs): the predictor never opens
    # a connection or starts a process with them.
    assert not {"subprocess", "requests", "httpx", "urllib3", "socket"} & imported_modules(path), path.name
    for name, call in calls(path):
        assert name not in {"os.system", "os.popen", "eval", "exec"}, f"{path.name}: {name}"
        assert keyword(call, "shell") in (None, False), f"{path.name}: {ast.unparse(call)}"
        if path != SETUP_FETCH:
            assert not name.startswith("urllib.request"), f"{path.name}: {name}"


def test_only_setup_reads_the_weights_url():
    # model/weights/url.py's fetch is reached from setup() alone: nothing in the request path imports it.
    importers = [
        str(path.relative_to(ROOT)) for path in SERVED if "fetch_weights_if_configured" in path.read_text()
    ]
    assert sorted(importers) == ["model/weights/url.py", "predict.py"]
    tree = ast.parse((ROOT / "predict.py").read_text(encoding="utf-8"))
    (setup,) = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "setup"]
    assert "fetch_weights_if_configured" in ast.unparse(setup)


def test_predictor_file_inputs_are_cog_paths():
    # Cog downloads inputs typed Path (URL or data URI) before run() is called.
    tree = ast.parse((ROOT / "predict.py").read_text(encoding="utf-8"))
    (run,) = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "run"]
    annotations = {arg.arg: ast.unparse(arg.annotation) for arg in run.args.args if arg.annotation}
    assert annotations["character_reference_image"] == "Path"
    assert annotations["image"] == annotations["mask"] == "Optional[Path]"


def test_the_faceid_checkpoint_is_unpickled_with_weights_only(tiny_weights, monkeypatch):
    # The FaceID checkpoint, a pickle, goes through diffusers' load_state_dict: spy on torch.load. (PuLID's
    # two pickles are opened by our own torch.load calls, which the static test above checks.)
    from diffusers.models.model_loading_utils import load_state_dict

    from model.weights.layout import WeightsLayout

    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    state = load_state_dict(str(WeightsLayout(tiny_weights).faceid_adapter))
    assert set(state) == {"image_proj", "ip_adapter"}
    assert seen == [True]


def test_an_input_error_passes_through_and_is_logged(caplog):
    with (
        caplog.at_level(logging.INFO, logger="model.errors"),
        pytest.raises(InputError, match="^prompt"),
        reported_failures(),
    ):
        raise InputError("prompt is empty: describe the image to generate")
    assert "Request refused: prompt is empty" in caplog.text


def test_an_unexpected_failure_is_one_sentence_for_the_client_and_a_traceback_for_the_operator(caplog):
    long_message = "CUDA out of memory. Tried to allocate 2.00 GiB " + "x" * 1000 + "\nsecond line\nthird"
    with (
        caplog.at_level(logging.INFO, logger="model.errors"),
        pytest.raises(GenerationError) as raised,
        reported_failures(),
    ):
        raise torch.OutOfMemoryError(long_message)
    message = str(raised.value)
    assert message.startswith("Generation failed inside the server (OutOfMemoryError: CUDA out of memory.")
    assert "\n" not in message and len(message) < MAX_ERROR_CHARS + 200
    assert "retry" in message
    assert "Traceback" in caplog.text and "second line" in caplog.text


@pytest.mark.server
@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_damaged_weights_file_fails_setup_with_the_file_and_the_fix(tiny_weights, tmp_path, damage):
    """Through the real server: /health-check stays at SETUP_FAILED and its setup logs say why."""
    import shutil

    from model.weights.layout import WeightsLayout
    from tests.helpers.cog_server import running_cog_server

    folder = tmp_path / "weights"
    shutil.copytree(tiny_weights, folder)
    damaged = WeightsLayout(folder).appearance_adapter
    data = bytearray(damaged.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # same size, one byte flipped: only the digest can tell
        data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with running_cog_server(folder, tmp_path / "server.log") as server:
        health = server.health()
        # A prediction is refused while setup has failed.
        response = server.predict(prompt="x", character_reference_image="data:image/png;base64,AA==")
    assert health["status"] == "SETUP_FAILED"
    logs = health["setup"]["logs"]
    assert "ip_adapter/ip-adapter-plus_sdxl_vit-h.safetensors" in logs
    assert ("(truncated or wrong file)" if damage == "truncated" else "corrupt (sha256 is") in logs
    assert "scripts/make_tiny_weights.py" in logs
    assert response.status_code >= 400
