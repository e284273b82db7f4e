"""Fuzzing the live Cog server's POST /predictions with schemathesis, from the server's own /openapi.json.

Every request, valid or not, must end as a 4xx or as a prediction (succeeded, or failed with a readable
one-line error), never as a 5xx, a hang or a traceback, and the server must be READY afterwards.
"""

from __future__ import annotations

import time

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode

from tests.helpers.images import cartoon_robot, data_uri

pytestmark = [pytest.mark.server, pytest.mark.soak]

# Bounded for CI: each case that reaches the model takes about 3-6 s on 2 CPU cores.
FUZZ_EXAMPLES = 30
FILE_INPUTS = ("character_reference_image", "image", "mask")
# What the file inputs of a case hold. Schemathesis makes random `format: uri` strings, which fail before
# the model (Cog cannot fetch them, or they name no file); real images let a share of the cases, with
# fuzzed prompts, seeds, styles and sizes, run through the model and the inpainting path.
FILE_CHOICES = ("fuzzed", "face", "cartoon", "inpainting")
# Cog's own message when it cannot download a URL input, before the predictor runs. It does not name the
# input (coglet words it, we cannot), so it is the one accepted error that does not.
COG_DOWNLOAD_ERROR = "Input validation error: "


def small_images(portrait: Image.Image) -> dict[str, str]:
    photo = portrait.resize((256, 256))
    mask = Image.new("L", photo.size, 255)
    mask.paste(0, (64, 64, 192, 192))
    return {
        "face": data_uri(photo),
        "cartoon": data_uri(cartoon_robot()),
        "photo": data_uri(photo),
        "mask": data_uri(mask),
    }


def with_real_files(body: object, choice: str, images: dict[str, str]) -> object:
    """The case's body with its file inputs replaced as `choice` says (bodies that are not an object of
    inputs are sent as generated). Cases given real images run at Turbo without the magic prompt: Default,
    Quality and the magic prompt take 15-30 s each here, and Cog checks their enum values before the model
    either way (tests/test_server.py and tests/test_speeds.py run them)."""
    if choice == "fuzzed" or not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        return body
    # Explicit nulls are dropped too: Cog 0.23 refuses `null` for an optional input with 422 (README,
    # Limits), which fuzzed cases keep checking, so these cases omit the key as clients must.
    inputs = {
        key: value for key, value in body["input"].items() if key not in FILE_INPUTS and value is not None
    }
    inputs["character_reference_image"] = images["cartoon" if choice == "cartoon" else "face"]
    if choice == "inpainting":
        inputs["image"], inputs["mask"] = images["photo"], images["mask"]
    inputs.update(rendering_speed="Turbo", magic_prompt_option="Off")
    return {**body, "input": inputs}


def call_until_admitted(case, base_url: str):
    """Send the case, retrying on 409 as clients must: the slot of the previous prediction may still be
    closing when its response arrives."""
    deadline = time.monotonic() + 30
    while True:
        # A case must never hang: the slowest valid one takes about 6 s here.
        response = case.call(base_url=base_url, timeout=120)
        if response.status_code != 409 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def check_outcome(response, inputs: object) -> None:
    """The issue's rule for any request: a 4xx, or a prediction that succeeded or failed readably."""
    code = response.status_code
    assert code < 500, f"{code} for {inputs!r}: {response.text[:2000]}"
    assert code == 200 or 400 <= code < 500, f"{code} for {inputs!r}: {response.text[:2000]}"
    if code != 200:
        return
    body = response.json()
    assert body["status"] in ("succeeded", "failed"), body
    if body["status"] == "succeeded":
        assert body["output"].startswith("data:image/png;base64,"), body["output"][:100]
        return
    error = body.get("error") or ""
    assert error.strip(), f"failed without an error for {inputs!r}"
    assert "Traceback" not in error, error
    assert "\n" not in error.strip(), f"not one line: {error!r}"
    names_an_input = any(name in error for name in (*FILE_INPUTS, "prompt", "seed"))
    assert names_an_input or error.startswith(COG_DOWNLOAD_ERROR), f"names no input: {error!r}"


def test_fuzzed_predictions_never_give_a_server_error(cog_server, portrait):
    schema = schemathesis.openapi.from_url(f"{cog_server.url}/openapi.json", timeout=10)
    operation = schema["/predictions"]["POST"]
    images = small_images(portrait)
    outcomes: list[str] = []

    @hypothesis.settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        # The same 30 cases on every run: a random draw gave from 1 to 10 cases through the model, and a
        # CI failure must be reproducible. Remove it locally to explore other cases.
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        ),
        files=st.sampled_from(FILE_CHOICES),
    )
    def fuzz(case, files):
        case.body = with_real_files(case.body, files, images)
        response = call_until_admitted(case, cog_server.url)
        check_outcome(response, case.body)
        outcome = str(response.status_code)
        if response.status_code == 200:
            outcome += ":" + response.json()["status"]
        outcomes.append(outcome)

    fuzz()
    print("Fuzz outcomes:", {outcome: outcomes.count(outcome) for outcome in sorted(set(outcomes))})
    # A fuzzer that only ever got refusals would prove little: some cases must have run the model.
    assert "200:succeeded" in outcomes, outcomes
    assert cog_server.settles_ready()


@pytest.mark.parametrize("value", ["ftp://host/a.png", "a", "/", "file:///nonexistent.png"])
def test_a_file_input_that_is_no_url_fails_naming_the_input(cog_server, portrait, value):
    """Found by fuzzing: Cog passes any string that is not an http(s) URL or a data URI on as a path, and
    the predictor used to fail with a bare FileNotFoundError naming no input."""
    body = cog_server.predict(prompt="a portrait", character_reference_image=value).json()
    assert body["status"] == "failed"
    assert "character_reference_image names no file sent with the request" in body["error"], body["error"]
    assert "send an http(s) URL or a data URI" in body["error"]
    assert cog_server.settles_ready()
