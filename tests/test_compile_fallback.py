"""A compile failure never fails the server: at the setup's warm-up or in a request, the UNet logs a warning
and runs eagerly, with the same image as an uncompiled UNet gives.

The failure is injected as a torch.compile backend that raises, which dynamo reports as it reports any
compiler's failure (BackendCompilerFailed). Its own file: the request-time case resets dynamo's caches.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model.generation.compilation import CompileFailed
from model.generation.pipeline import CharacterPipeline
from model.generation.settings import GenerationSettings, IDTokens
from model.generation.speeds import SPEEDS
from model.generation.warm_up import PULID_ID_TOKENS

pytestmark = pytest.mark.slow


class InjectedBackend:
    """torch.compile's eager backend until `fail` is set; then every compilation raises."""

    def __init__(self, fail: bool):
        self.fail = fail
        self.compilations = 0

    def __call__(self, graph_module, example_inputs):
        self.compilations += 1
        if self.fail:
            raise CompileFailed("injected compiler failure")
        return graph_module.forward


@pytest.fixture(scope="module")
def pipeline(tiny_layout) -> CharacterPipeline:
    # Its own pipeline: compiling must not change the session's shared one.
    return CharacterPipeline.load(tiny_layout, torch.device("cpu"), torch.float32, identity_adapter="pulid")


def settings(pipeline: CharacterPipeline, seed: int) -> GenerationSettings:
    tokens = torch.from_numpy(
        np.random.default_rng(seed).standard_normal((1, PULID_ID_TOKENS, pipeline.id_token_width), np.float32)
    )
    return GenerationSettings(
        prompt="a knight in a castle",
        negative_prompt="blurry",
        width=128,
        height=128,
        seed=seed,
        **SPEEDS["Turbo"].schedule(max_steps=1),
        adapters=SPEEDS["Turbo"].adapters.for_pulid().with_appearance(0.0),
        face=IDTokens(tokens=tokens, null=torch.zeros_like(tokens)),
    )


def uncompiled(pipeline: CharacterPipeline, request: GenerationSettings) -> np.ndarray:
    unet = pipeline.text_to_image.unet
    saved, unet._compiled_call_impl = unet._compiled_call_impl, None
    try:
        return np.asarray(pipeline.generate(request))
    finally:
        unet._compiled_call_impl = saved


def test_a_compile_failure_at_the_warm_up_is_served_eagerly(pipeline, caplog):
    request = settings(pipeline, seed=1)
    expected = uncompiled(pipeline, request)
    torch._dynamo.reset()
    backend = InjectedBackend(fail=True)
    pipeline.compile(backend=backend)
    assert pipeline.compiled
    with caplog.at_level(logging.WARNING, logger="model.generation.compilation"):
        image = np.asarray(pipeline.generate(request))
    assert backend.compilations == 1
    assert not pipeline.compiled
    assert "torch.compile failed (BackendCompilerFailed" in caplog.text
    assert "injected compiler failure" in caplog.text and "runs eagerly from now on" in caplog.text
    assert pipeline.text_to_image.unet.compile_failure.startswith("BackendCompilerFailed")
    np.testing.assert_array_equal(image, expected)
    # Eager from then on: nothing more is compiled, and the inpaint pipeline (the same UNet) is eager too.
    pipeline.generate(settings(pipeline, seed=2))
    assert backend.compilations == 1 and not pipeline.compiled


def test_a_compile_failure_in_a_request_is_served_eagerly(pipeline, caplog):
    torch._dynamo.reset()
    backend = InjectedBackend(fail=False)
    pipeline.compile(backend=backend)
    pipeline.generate(settings(pipeline, seed=3))  # the warm-up: compiles, with the working backend
    assert backend.compilations > 0 and pipeline.compiled
    # A request that compiles (dynamo's caches dropped stands for a guard that no warm-up foresaw) and whose
    # compilation fails: the request still gets its image, the eager one.
    request = settings(pipeline, seed=4)
    expected = uncompiled(pipeline, request)
    torch._dynamo.reset()
    backend.fail = True
    with caplog.at_level(logging.WARNING, logger="model.generation.compilation"):
        image = np.asarray(pipeline.generate(request))
    assert "torch.compile failed (BackendCompilerFailed" in caplog.text
    assert not pipeline.compiled
    np.testing.assert_array_equal(image, expected)


def test_the_unets_own_errors_are_not_taken_for_compile_failures(pipeline):
    """Only torch.compile's exceptions switch to eager: a UNet error (here a wrong input) propagates, and the
    UNet stays compiled."""
    torch._dynamo.reset()
    pipeline.compile(backend="eager")
    unet = pipeline.text_to_image.unet
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        unet(torch.zeros(1, 3, 8, 8), 1, encoder_hidden_states=torch.zeros(1, 77, 7))
    assert pipeline.compiled
    torch._dynamo.reset()
