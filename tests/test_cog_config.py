"""cog.yaml passes Cog's own schema and describes the GPU build the README promises."""

import json

import jsonschema
import yaml

from tests.contract import ROOT

COG_SCHEMA = ROOT / "reference" / "cog-config-schema-v1.0.json"


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


def test_runtime_requirements_are_pinned():
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert "==" in line, f"{line} is not pinned"
