"""The magic prompt and style through the real Cog server, on the fallback LLM and the tiny profile."""

from __future__ import annotations

import pytest

from tests.conftest import data_uri, decode_image

pytestmark = pytest.mark.server

LONG_ENGLISH = (
    "a wide shot of the character standing on a wooden pier at sunrise, gulls circling above the harbour, "
    "soft golden light on the water, small fishing boats in the background and a coil of rope at her feet"
)


def test_magic_prompt_on_rewrites_a_long_english_prompt_and_logs_it(cog_server, portrait):
    # Auto would keep this prompt as it is; On must rewrite it.
    body = cog_server.predict(
        prompt=LONG_ENGLISH,
        character_reference_image=data_uri(portrait),
        magic_prompt_option="On",
        style_type="Auto",
        rendering_speed="Turbo",
        seed=21,
    ).json()
    assert body["status"] == "succeeded", body
    assert decode_image(body["output"]).size == (1024, 1024)
    lines = body["logs"].splitlines()
    rewritten = [line for line in lines if line.startswith("Magic prompt: On, rewritten by the fallback")]
    failed = [line for line in lines if line.startswith("Magic prompt failed")]
    assert rewritten, f"no rewrite logged (failure lines: {failed}) in {lines}"
    used = next(line for line in lines if line.startswith("Prompt used: "))
    assert used != f"Prompt used: {LONG_ENGLISH}" and len(used) > len("Prompt used: ")
    assert "Style: Auto chose Realistic (cues: none)" in lines
    assert any(line.startswith("Style: Realistic (") for line in lines)
