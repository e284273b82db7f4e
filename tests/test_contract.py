"""predict.py declares exactly the original model's inputs, and its literal choice lists match the
contract and the package's own tables (Cog reads the lists statically, so they must be literals)."""

import ast

import pytest

from devtools.openapi_schema import build
from model.generation.speeds import SPEEDS
from model.inputs.request import SEED_MAX
from model.inputs.sizes import ASPECT_RATIO_SIZES, parse_resolution
from model.prompting.styles import style_types
from tests.helpers import ROOT
from tests.helpers.contract import contract_differences, load_contract

CONTRACT = load_contract()


def predict_constants() -> dict:
    """The module-level literal assignments of predict.py, read the way Cog's static parser reads them."""
    tree = ast.parse((ROOT / "predict.py").read_text(encoding="utf-8"))
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return constants


CONSTANTS = predict_constants()


@pytest.mark.parametrize(
    ("constant", "contract_input"),
    [
        ("RESOLUTIONS", "resolution"),
        ("ASPECT_RATIOS", "aspect_ratio"),
        ("STYLE_TYPES", "style_type"),
        ("RENDERING_SPEEDS", "rendering_speed"),
        ("MAGIC_PROMPT_OPTIONS", "magic_prompt_option"),
    ],
)
def test_choice_lists_equal_the_contract_in_order(constant, contract_input):
    assert CONSTANTS[constant] == CONTRACT["inputs"][contract_input]["enum"]


def test_seed_maximum():
    assert CONSTANTS["SEED_MAX"] == SEED_MAX == CONTRACT["inputs"]["seed"]["maximum"]


def test_package_tables_cover_every_choice():
    assert list(ASPECT_RATIO_SIZES) == CONSTANTS["ASPECT_RATIOS"]
    assert sorted(SPEEDS) == sorted(CONSTANTS["RENDERING_SPEEDS"])
    assert sorted(style_types()) == sorted(CONSTANTS["STYLE_TYPES"])


def test_every_resolution_parses_to_sides_of_multiples_of_32():
    for text in CONSTANTS["RESOLUTIONS"][1:]:
        size = parse_resolution(text)
        assert size.width % 32 == 0 and size.height % 32 == 0
        assert 0.78e6 <= size.pixels <= 1.06e6


def test_aspect_ratio_sizes_are_resolutions_of_the_contract():
    for size in ASPECT_RATIO_SIZES.values():
        assert str(size) in CONSTANTS["RESOLUTIONS"]


def test_generated_schema_matches_the_contract_field_by_field():
    document = build("predict.py:Predictor")
    assert contract_differences(document, CONTRACT) == []


def test_the_comparison_notices_a_difference():
    """The comparison above can fail: a reordered enum, a dropped default and a wrong maximum show up."""
    document = {
        "components": {
            "schemas": {
                "Input": {
                    "type": "object",
                    "required": ["prompt", "character_reference_image"],
                    "properties": {
                        name: {
                            "type": spec["type"],
                            **({"format": spec["format"]} if "format" in spec else {}),
                        }
                        for name, spec in CONTRACT["inputs"].items()
                    },
                },
                "Output": {"type": "string", "format": "uri"},
            }
        }
    }
    properties = document["components"]["schemas"]["Input"]["properties"]
    properties["style_type"]["enum"] = ["Fiction", "Auto", "Realistic"]
    properties["seed"]["maximum"] = 10
    differences = contract_differences(document, CONTRACT)
    assert any(line.startswith("style_type.enum") for line in differences)
    assert any(line.startswith("seed.maximum") for line in differences)
    assert any(line.startswith("rendering_speed.default") for line in differences)
