"""The browser page's server-side helpers (ui/client.py), without a browser: the controls read from the
server's own OpenAPI document, the log lines shown with an output, and the mask made from painted strokes.
The page itself is tested in Chromium by tests/test_ui.py."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.helpers import ROOT
from ui.client import Report, contract_fields, http_error_sentence, last_step, mask_from_strokes

CONTRACT = json.loads((ROOT / "specs" / "ideogram-character.contract.json").read_text(encoding="utf-8"))

# A real prediction's logs on the tiny profile (Turbo, magic prompt Off).
LOGS = """Using seed: 542619961
Generating...
Magic prompt: Off, prompt kept as given
Style: Auto chose Fiction (cues: knight)
Prompt used: a knight
Style: Fiction ({prompt}, illustration, stylized character art, vibrant colors, clean lines, detailed)
Adapters: FaceID 0.90 (LoRA 0.80, structure 0.60), appearance 0.00
Step 5/8
Step 8/8
Identity similarity: not scored (no face in output)
Safety checker: passed
Image generation took 9.52 seconds
"""


def test_controls_come_from_the_servers_openapi_document():
    from devtools.openapi_schema import build

    fields = contract_fields(build("predict.py:Predictor"))
    assert {field.name for field in fields} == set(CONTRACT["inputs"])
    for field in fields:
        spec = CONTRACT["inputs"][field.name]
        assert field.required == spec["required"], field.name
        assert field.description, field.name
        if "enum" in spec:
            assert field.kind == "enum" and list(field.choices) == spec["enum"], field.name
            assert field.default == spec["default"], field.name
    kinds = {field.name: field.kind for field in fields}
    assert kinds["character_reference_image"] == kinds["image"] == kinds["mask"] == "file"
    assert kinds["seed"] == "integer" and kinds["prompt"] == "string"
    assert [field.name for field in fields][:2] == ["prompt", "character_reference_image"]  # x-order


def test_report_reads_the_lines_that_reproduce_an_image():
    report = Report.from_logs(LOGS)
    assert report.seed == 542619961
    assert report.prompt_used == "a knight"
    assert report.style == "Fiction"  # the preset that ran, not "Auto chose ..."
    assert report.adapters == "FaceID 0.90 (LoRA 0.80, structure 0.60), appearance 0.00"
    assert report.identity_similarity == "not scored (no face in output)"
    assert "**Prompt used:** a knight" in report.markdown()
    assert last_step(LOGS) == "Step 8/8" and last_step("Using seed: 1\n") is None
    assert Report.from_logs("") == Report()


def test_mask_is_black_exactly_where_painted_at_the_images_size():
    background = Image.new("RGB", (40, 30), "gray")
    layer = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    layer.paste((255, 45, 149, 153), (10, 5, 20, 15))  # a translucent brush colour
    mask = mask_from_strokes(background, [layer])
    values = np.asarray(mask)
    assert mask.mode == "L" and mask.size == (40, 30)
    expected = np.full((30, 40), 255, np.uint8)
    expected[5:15, 10:20] = 0
    assert (values == expected).all()
    # A layer at another scale (a canvas the editor scaled) lands on the same pixels, still two-toned.
    doubled = layer.resize((80, 60), Image.Resampling.NEAREST)
    assert (np.asarray(mask_from_strokes(background, [doubled])) == expected).all()
    assert mask_from_strokes(background, [Image.new("RGBA", (40, 30), (0, 0, 0, 0))]) is None


def test_refusals_read_as_the_server_worded_them():
    detail = {"detail": [{"loc": ["body", "input", "style_type"], "msg": '"Nope" is not one of ["Auto"]'}]}
    assert http_error_sentence(422, detail) == 'style_type: "Nope" is not one of ["Auto"]'
    assert http_error_sentence(409, {"error": "At capacity"}) == "At capacity"
    assert http_error_sentence(502, {}) == "HTTP 502"
