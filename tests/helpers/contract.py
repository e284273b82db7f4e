"""The original model's contract, and a field-by-field comparison of an OpenAPI document against it."""

import json

from tests.helpers import ROOT

CONTRACT_PATH = ROOT / "specs" / "ideogram-character.contract.json"


def load_contract() -> dict:
    return json.loads(CONTRACT_PATH.read_text(encoding="utf-8"))


def resolve(schemas: dict, prop: dict) -> dict:
    """An input property with its allOf enum reference folded in, as clients read it."""
    merged = {key: value for key, value in prop.items() if key != "allOf"}
    for part in prop.get("allOf", []):
        merged.update(schemas[part["$ref"].rsplit("/", 1)[-1]])
    return merged


def contract_differences(openapi: dict, contract: dict) -> list[str]:
    """Every way the document's Input and Output differ from the contract (empty when they match)."""
    schemas = openapi["components"]["schemas"]
    inputs = schemas["Input"]
    properties = inputs["properties"]
    differences = []
    expected_inputs = contract["inputs"]
    # JSON objects have no order (coglet re-serialises them sorted); Cog states the order in x-order.
    names = sorted(properties, key=lambda name: properties[name].get("x-order", 0))
    if names != list(expected_inputs):
        differences.append(f"input names/order {names} != {list(expected_inputs)}")
    required = sorted(inputs.get("required", []))
    expected_required = sorted(name for name, spec in expected_inputs.items() if spec["required"])
    if required != expected_required:
        differences.append(f"required {required} != {expected_required}")
    for name, spec in expected_inputs.items():
        if name not in properties:
            continue
        prop = resolve(schemas, properties[name])
        for key in ("type", "format", "enum", "maximum"):
            if key in spec and prop.get(key) != spec[key]:
                differences.append(f"{name}.{key}: {prop.get(key)!r} != {spec[key]!r}")
        if "default" in spec and prop.get("default", "<absent>") != spec["default"]:
            differences.append(f"{name}.default: {prop.get('default', '<absent>')!r} != {spec['default']!r}")
        if not spec["required"] and name in inputs.get("required", []):
            differences.append(f"{name} should be optional")
    output = schemas["Output"]
    for key in ("type", "format"):
        if output.get(key) != contract["output"][key]:
            differences.append(f"output.{key}: {output.get(key)!r} != {contract['output'][key]!r}")
    return differences
