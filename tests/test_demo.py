"""`make demo`'s script on the tiny profile, as a newcomer runs it: one prediction through the predictor."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.helpers import ROOT, TORCH_THREADS

pytestmark = pytest.mark.slow

# Long and English, so that magic_prompt_option=Auto keeps it and the run does not wait for the LLM.
PROMPT = (
    "a close up photo of a woman in a fashion magazine photoshoot, standing in a sunlit studio with a "
    "plain grey backdrop, wearing a tailored navy coat, looking straight at the camera with a calm smile, "
    "soft window light from the left, shallow depth of field"
)


def test_demo_writes_an_image_from_the_tiny_profile(tiny_weights, tmp_path):
    out = tmp_path / "demo.png"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/demo.py",
            "--weights-dir",
            str(tmp_path / "no-production-weights"),
            "--tiny-weights-dir",
            str(tiny_weights),
            "--out",
            str(out),
            "--prompt",
            PROMPT,
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": TORCH_THREADS},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the tiny offline profile" in result.stdout
    assert f"Wrote {out}" in result.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1024, 1024)
