"""Long prompts: SDXL conditioning past 77 tokens, on the tiny profile's real tokenizers and encoders."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline

from model.generation.prompt_encoding import encode_prompts, token_windows, window_count
from model.weights.layout import SDXL_VARIANT, WeightsLayout

CPU = torch.device("cpu")
NEGATIVE = "blurry, low quality"


@pytest.fixture(scope="module")
def pipe(tiny_weights) -> StableDiffusionXLPipeline:
    layout = WeightsLayout(tiny_weights)
    return StableDiffusionXLPipeline.from_pretrained(
        layout.sdxl, vae=AutoencoderKL.from_pretrained(layout.vae), variant=SDXL_VARIANT
    )


def long_prompt(pipe, last_word: str) -> str:
    """A prompt whose last word starts after the first window (75 text tokens) of both tokenizers."""
    text = "a portrait of a woman"
    while len(pipe.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 80:
        text += ", in a garden"
    return f"{text}, {last_word}"


def test_short_prompt_gives_exactly_the_pipelines_own_encoding(pipe):
    prompt = "a woman in a garden"
    ours = encode_prompts(pipe, prompt, NEGATIVE, CPU)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt, device=CPU, do_classifier_free_guidance=True, negative_prompt=NEGATIVE
    )
    torch.testing.assert_close(ours.prompt_embeds, embeds)
    torch.testing.assert_close(ours.negative_prompt_embeds, negative)
    torch.testing.assert_close(ours.pooled_prompt_embeds, pooled)
    torch.testing.assert_close(ours.negative_pooled_prompt_embeds, negative_pooled)


def test_a_word_after_token_77_changes_the_conditioning_and_the_pooled_embedding(pipe):
    dragon = long_prompt(pipe, "dragon")
    castle = long_prompt(pipe, "castle")
    first_window = pipe.tokenizer.model_max_length
    assert len(pipe.tokenizer(dragon)["input_ids"]) > first_window
    a = encode_prompts(pipe, dragon, NEGATIVE, CPU)
    b = encode_prompts(pipe, castle, NEGATIVE, CPU)
    assert a.prompt_embeds.shape == b.prompt_embeds.shape == (1, 2 * first_window, 64)
    # The first window is the same text, so only the second window differs.
    torch.testing.assert_close(a.prompt_embeds[:, :first_window], b.prompt_embeds[:, :first_window])
    assert not torch.allclose(a.prompt_embeds[:, first_window:], b.prompt_embeds[:, first_window:])
    assert not torch.allclose(a.pooled_prompt_embeds, b.pooled_prompt_embeds)
    # diffusers' own encoding cannot tell them apart: it truncates at 77.
    truncated_a = pipe.encode_prompt(dragon, device=CPU, do_classifier_free_guidance=False)[0]
    truncated_b = pipe.encode_prompt(castle, device=CPU, do_classifier_free_guidance=False)[0]
    torch.testing.assert_close(truncated_a, truncated_b)


def test_prompt_and_negative_are_padded_to_the_same_length(pipe):
    prompt = long_prompt(pipe, "dragon")
    embeds = encode_prompts(pipe, prompt, NEGATIVE, CPU)
    assert window_count(pipe, prompt) == 2 and window_count(pipe, NEGATIVE) == 1
    assert embeds.prompt_embeds.shape == embeds.negative_prompt_embeds.shape
    assert embeds.pooled_prompt_embeds.shape == embeds.negative_pooled_prompt_embeds.shape == (1, 32)
    # A short negative keeps its own pooled embedding: the padding windows carry no text.
    short = encode_prompts(pipe, "a woman", NEGATIVE, CPU)
    torch.testing.assert_close(embeds.negative_pooled_prompt_embeds, short.negative_pooled_prompt_embeds)


def test_windows_start_end_and_pad_with_each_tokenizers_own_tokens(pipe):
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
        windows = token_windows(tokenizer, long_prompt(pipe, "dragon"))
        assert len(windows) == 2
        for window in windows:
            assert len(window) == tokenizer.model_max_length
            assert window[0] == tokenizer.bos_token_id
            assert tokenizer.eos_token_id in window
        assert windows[1][-1] == tokenizer.pad_token_id
    assert token_windows(pipe.tokenizer_2, "")[0][2] == pipe.tokenizer_2.convert_tokens_to_ids("!")
