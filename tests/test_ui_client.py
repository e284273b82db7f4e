"""The browser page's server-side helpers (ui/client.py), without a browser: the controls read from the
server's own OpenAPI document, the log lines shown with an output, and the mask made from painted strokes.
The page itself is tested in Chromium by tests/test_ui.py."""

from __future__ import annotations

import ast
import json
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.helpers.cog_server import free_port
from ui.client import (
    Report,
    Server,
    ServerUnreachable,
    abbreviated,
    contract_fields,
    curl_snippet,
    data_uri_of_file,
    error_sentence,
    http_error_sentence,
    last_step,
    mask_from_strokes,
    python_snippet,
    step_numbers,
)

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
    assert step_numbers(LOGS) == (8, 8)
    assert Report.from_logs("") == Report()


def test_report_tells_what_the_server_decided():
    report = Report.from_logs(LOGS)
    assert report.style_cues == "knight"
    assert report.style_text() == "Fiction (Auto chose it by the cues: knight)"
    assert report.magic_prompt == "Off, prompt kept as given"
    assert report.generation_seconds == 9.52
    assert report.safety_checker == "passed"
    markdown = report.markdown()
    assert "**Generation time:** 9.52 s" in markdown
    assert "**Magic prompt:** Off, prompt kept as given" in markdown
    # A style named in the request has no "Auto chose" line; Auto without cues falls back to its default.
    named = Report.from_logs(LOGS.replace("Style: Auto chose Fiction (cues: knight)\n", ""))
    assert named.style_text() == "Fiction (as asked)"
    default = Report.from_logs(LOGS.replace("(cues: knight)", "(cues: none)"))
    assert default.style_text() == "Fiction (Auto's default: no cue words in the prompt)"
    # A rejected rewrite, and the setup's own magic prompt lines, which are no outcome.
    rejected = Report.from_logs(
        "Magic prompt: loaded the fallback SmolLM2 in 0.4 s\n"
        "Magic prompt rejected (timed out after 15 s) after 15.22 s; using the prompt as given. "
        "Rejected rewrite: ''\n"
    )
    assert rejected.magic_prompt.startswith("rejected (timed out after 15 s)"), rejected.magic_prompt
    assert Report.from_logs("Magic prompt: loaded the fallback in 0.4 s\n").magic_prompt is None


def test_error_sentences_lose_cogs_prefixes_and_the_class_name():
    # Cog 0.23's words for an InputError, as a raw HTTP client receives them.
    raw = (
        "Prediction failed: Prediction failed: InputError: mask is 1200x626 pixels and image is "
        "1024x1024: send a mask of the image's aspect ratio"
    )
    assert error_sentence(raw) == (
        "mask is 1200x626 pixels and image is 1024x1024: send a mask of the image's aspect ratio"
    )
    assert error_sentence("GenerationError: Generation failed inside the server (RuntimeError: x)") == (
        "Generation failed inside the server (RuntimeError: x)"
    )
    # A sentence alone (a server that already sends it so) and a colon inside one are kept as they are.
    assert error_sentence("seed: must be an integer") == "seed: must be an integer"
    assert error_sentence("canceled") == "canceled"


def test_an_unreachable_server_is_given_up_on_in_seconds_with_a_sentence():
    server = Server(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(ServerUnreachable) as raised:
        server.openapi(wait_seconds=60, refused_seconds=1)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert server.url in message and "make serve" in message and "SERVER" in message, message


def test_api_snippets_carry_the_exact_request(tmp_path):
    reference = tmp_path / "me.png"
    Image.new("RGB", (8, 8), "red").save(reference)

    inputs = {"prompt": "a knight", "character_reference_image": data_uri_of_file(reference), "seed": 7}
    shown = abbreviated(inputs)
    assert shown["prompt"] == "a knight" and shown["seed"] == 7
    assert shown["character_reference_image"].startswith("data:image/png;base64,")
    assert shown["character_reference_image"].endswith(f"({reference.stat().st_size} bytes)")

    body = tmp_path / "request.json"
    curl = curl_snippet("http://127.0.0.1:5000", body)
    assert f"--data-binary @{body}" in curl and "http://127.0.0.1:5000/predictions" in curl

    script = python_snippet("http://127.0.0.1:5000", inputs, {"character_reference_image": reference})
    ast.parse(script)  # valid Python
    namespace: dict = {}
    # The script's inputs, built as it builds them, are the request that was sent.
    prelude, _, rest = script.partition("inputs = {")
    exec(prelude + "inputs = {" + rest.split("\n}\n", 1)[0] + "\n}\n", namespace)  # noqa: S102
    assert namespace["inputs"] == inputs
    chosen = python_snippet("http://h", {"prompt": "x"}, {}, seed=42)
    assert "# 'seed': 42," in chosen


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
