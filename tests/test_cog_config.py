"""cog.yaml passes Cog's own schema and describes the GPU build the README promises."""

import json

import jsonschema
import yaml

from tests.helpers import ROOT

COG_SCHEMA = ROOT / "specs" / "cog-config-schema-v1.0.json"


def test_cog_yaml_passes_cogs_schema():
    config = yaml.safe_load((ROOT / "cog.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(config, json.loads(COG_SCHEMA.read_text(encoding="utf-8")))


def test_cog_yaml_builds_for_a_gpu_with_python_311_and_our_predictor():
    config = yaml.safe_load((ROOT / "cog.yaml").read_text(encoding="utf-8"))
    assert config["build"]["gpu"] is True
    assert str(config["build"]["python_version"]) == "3.11"
    assert config["run"] == "predict.py:Predictor"
    assert (ROOT / config["build"]["python_requirements"]).is_file()


def test_schema_rejects_a_broken_config():
    """The check above can fail: Cog's schema refuses unknown keys and wrong types."""
    schema = json.loads(COG_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    assert list(validator.iter_errors({"build": {"gpu": "yes"}}))
    assert list(validator.iter_errors({"biuld": {}}))


def test_the_gpu_image_installs_the_gpu_wheel_of_onnxruntime_and_nothing_else_differs():
    """cog.yaml installs requirements-gpu.txt: requirements.txt with onnxruntime-gpu for onnxruntime, at the
    same version (checked to exist on PyPI with `pip index versions onnxruntime-gpu`), and lays the GPU wheel
    over the CPU one that insightface's dependency pulls in."""
    config = yaml.safe_load((ROOT / "cog.yaml").read_text(encoding="utf-8"))
    assert config["build"]["python_requirements"] == "requirements-gpu.txt"
    cpu = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    gpu = (ROOT / "requirements-gpu.txt").read_text(encoding="utf-8").splitlines()
    assert len(cpu) == len(gpu)
    differing = [(a, b) for a, b in zip(cpu, gpu, strict=True) if a != b]
    assert len(differing) == 1, differing
    ((cpu_line, gpu_line),) = differing
    name, version = cpu_line.split("==")
    assert name == "onnxruntime" and gpu_line == f"onnxruntime-gpu=={version}"
    (fix,) = [command for command in config["build"]["run"] if "onnxruntime" in command]
    assert "pip uninstall -y onnxruntime " in fix and f"--force-reinstall {gpu_line}" in fix


def test_runtime_requirements_are_pinned():
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert "==" in line, f"{line} is not pinned"
