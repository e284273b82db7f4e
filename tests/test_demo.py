"""`make demo`'s script on the tiny profile, as a newcomer runs it: one prediction through the predictor."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.helpers import ROOT, TORCH_THREADS

pytestmark = pytest.mark.slow

# Long and English: magic_prompt_option=Auto keeps it with any rewriter, so the run never waits for an LLM.
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
        # This checkout's packages first (a script's sys.path starts at its folder, and the editable install
        # may be another checkout's), as tests/helpers/cog_server.py does for the server.
        env={**os.environ, "OMP_NUM_THREADS": TORCH_THREADS, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the tiny offline profile" in result.stdout
    assert "Rendering speed: Turbo" in result.stdout and "Step 8/8" in result.stdout
    # Nothing but the demo's own lines: no library notices or progress bars on either stream.
    assert result.stderr == "", result.stderr[-3000:]
    assert "it/s" not in result.stdout and "torchvision" not in result.stdout
    assert f"Wrote {out}" in result.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1024, 1024)
