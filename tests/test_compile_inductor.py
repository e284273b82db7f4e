"""The UNet compiled by inductor's real CPU backend (generated C++, not dynamo's eager backend): its images
equal eager's within one 8-bit level, no request after the warm-up compiles, and the compile cache in the
weights folder spares a restarted server inductor's code generation.

One path (a face with PuLID, text-to-image, CFG), because each graph inductor builds for the tiny UNet takes
about a minute on two cores: the warm-up at one size, then requests at other sizes, prompt lengths, adapter
scales (another style) and speeds (Default and Quality share the graph). tests/test_compile.py covers
every speed, path and mode with the eager backend; tests/test_compile_fallback.py the failures.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from model.generation.compilation import CACHE_FOLDER, use_compile_cache
from model.generation.pipeline import CharacterPipeline
from model.options import INDUCTOR_CACHE_ENV, TRITON_CACHE_ENV
from tests.test_compile import request

pytestmark = pytest.mark.slow

# (speed, face, style, size, prompt, inpaint), as tests/test_compile.py's request() takes them.
WARM_UP = ("Default", True, "Realistic", (128, 128), "a portrait photo of a character", False)
REQUESTS = [
    ("Quality", True, "Fiction", (192, 256), "a knight in a castle at night, " * 8, False),
    ("Default", True, "Fiction", (256, 192), "a dragon", False),
]
# Inductor's C++ kernels reorder float sums (vectorised reductions, fused ops): a pixel may round to the
# next 8-bit level, rarely further.
MAX_LEVELS = 2
MAX_MEAN_LEVELS = 0.05


@pytest.fixture(scope="module")
def weights_copy(tiny_weights, tmp_path_factory):
    """A weights folder of its own, whose compile cache the test can look at (and that starts empty)."""
    folder = tmp_path_factory.mktemp("weights") / "tiny"
    shutil.copytree(tiny_weights, folder)
    return folder


@pytest.fixture(scope="module")
def compile_cache(weights_copy):
    """The compile cache pointed at the weights folder for this file's compilations, as the server's setup
    points it; the variables are restored afterwards."""
    saved = {name: os.environ.pop(name, None) for name in (INDUCTOR_CACHE_ENV, TRITON_CACHE_ENV)}
    yield use_compile_cache(weights_copy)
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


def images(pipeline: CharacterPipeline, cases) -> list[np.ndarray]:
    return [np.asarray(pipeline.generate(request(pipeline, *case)), dtype=np.int16) for case in cases]


@pytest.fixture(scope="module")
def compiled(tiny_layout, compile_cache):
    pipeline = CharacterPipeline.load(
        tiny_layout, torch.device("cpu"), torch.float32, identity_adapter="pulid"
    )
    eager = images(pipeline, [WARM_UP, *REQUESTS])
    torch._dynamo.reset()
    pipeline.compile(backend="inductor")
    misses = counters["inductor"]["fxgraph_cache_miss"]
    warm_up = images(pipeline, [WARM_UP])
    compiled_at_warm_up = counters["inductor"]["fxgraph_cache_miss"] - misses
    yield pipeline, eager, warm_up, compiled_at_warm_up
    torch._dynamo.reset()


def assert_close_to_eager(image: np.ndarray, eager: np.ndarray) -> None:
    difference = np.abs(image - eager)
    assert difference.max() <= MAX_LEVELS and difference.mean() <= MAX_MEAN_LEVELS, (
        difference.max(),
        difference.mean(),
    )


def test_inductor_builds_the_graphs_at_the_warm_up_and_its_image_is_eagers(compiled):
    pipeline, eager, warm_up, compiled_at_warm_up = compiled
    assert pipeline.compiled
    assert compiled_at_warm_up > 0  # inductor generated code (cache misses: the cache started empty)
    assert_close_to_eager(warm_up[0], eager[0])


def test_no_request_compiles_after_the_warm_up_and_each_image_is_eagers(compiled):
    pipeline, eager, _, _ = compiled
    graphs = counters["stats"]["unique_graphs"]
    for image, expected in zip(images(pipeline, REQUESTS), eager[1:], strict=True):
        assert_close_to_eager(image, expected)
    assert counters["stats"]["unique_graphs"] == graphs
    assert pipeline.compiled


def test_a_restart_reuses_the_compile_cache_in_the_weights_folder(compiled, compile_cache, weights_copy):
    pipeline, eager, _, compiled_at_warm_up = compiled
    assert compile_cache.is_relative_to(weights_copy / CACHE_FOLDER)
    assert any(path.is_file() for path in compile_cache.rglob("*"))
    # A restart, as far as compilation goes: dynamo forgets every graph and traces again, and inductor finds
    # the code it generated for them in the cache instead of generating it.
    torch._dynamo.reset()
    pipeline.compile(backend="inductor")
    hits, misses = counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]
    assert_close_to_eager(images(pipeline, [WARM_UP])[0], eager[0])
    assert counters["inductor"]["fxgraph_cache_miss"] == misses
    assert counters["inductor"]["fxgraph_cache_hit"] - hits == compiled_at_warm_up
