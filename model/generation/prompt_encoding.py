"""SDXL prompt encoding without the 77-token limit, for text-to-image and inpainting alike.

Owns turning a prompt and a negative prompt into the four tensors SDXL's pipelines accept in place of
text (prompt_embeds, pooled_prompt_embeds and their negatives). CLIP reads 77 positions (start token,
75 text tokens, end token); diffusers' encode_prompt truncates anything longer, and rewritten prompts
are longer. Here each tokenizer's ids are cut into windows of 75 tokens, every window is wrapped in start
and end tokens, padded and encoded alone, and the windows' hidden states are concatenated along the
sequence axis, which the UNet's cross-attention accepts at any length (the chunking of diffusers'
long-prompt-weighting community pipelines and of compel, without compel's weighting syntax: the user's
"(", "+" and "-" stay plain text, as in Ideogram). A prompt of at most 75 tokens gives exactly
diffusers' own encoding, which tests/test_prompt_encoding.py checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPTokenizer


@dataclass(frozen=True)
class PromptEmbeddings:
    """The keyword arguments of SDXL's pipelines that replace prompt and negative_prompt."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        return dict(
            prompt_embeds=self.prompt_embeds,
            pooled_prompt_embeds=self.pooled_prompt_embeds,
            negative_prompt_embeds=self.negative_prompt_embeds,
            negative_pooled_prompt_embeds=self.negative_pooled_prompt_embeds,
        )


def token_windows(tokenizer: CLIPTokenizer, text: str) -> list[list[int]]:
    """The text's ids in windows of model_max_length, each `start, <= 75 ids, end, pad...`; at least one."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
    length = tokenizer.model_max_length
    width = length - 2
    windows = [ids[i : i + width] for i in range(0, len(ids), width)] or [[]]
    # The padding token is the tokenizer's own, as in diffusers: "<|endoftext|>" for the first SDXL
    # tokenizer, "!" for the second.
    return [
        [tokenizer.bos_token_id, *window, tokenizer.eos_token_id]
        + [tokenizer.pad_token_id] * (width - len(window))
        for window in windows
    ]


def _pad_windows(windows: list[list[int]], count: int, tokenizer: CLIPTokenizer) -> list[list[int]]:
    # Extra windows are the empty prompt's encoding (compel's padding too): they add positions that
    # carry no text, so two prompts of different lengths can share one batch.
    empty = token_windows(tokenizer, "")[0]
    return windows + [empty] * (count - len(windows))


@torch.no_grad()
def _encode(pipe, text: str, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 77 * count, width_1 + width_2) hidden states and the (1, projection) pooled embedding."""
    hidden, pooled = [], None
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        windows = token_windows(tokenizer, text)
        used = len(windows)
        ids = torch.tensor(_pad_windows(windows, count, tokenizer), device=device)
        output = encoder(ids, output_hidden_states=True)
        # SDXL conditions on both encoders' penultimate layer (diffusers' encode_prompt, clip_skip=None).
        states = output.hidden_states[-2]
        hidden.append(states.reshape(1, -1, states.shape[-1]))
        if encoder is pipe.text_encoder_2:
            # The pooled embedding is one vector per window; the mean of the windows that hold text lets
            # words past the first 75 tokens reach it too (compel keeps only the first window's).
            pooled = output.text_embeds[:used].mean(dim=0, keepdim=True)
    return torch.cat(hidden, dim=-1), pooled


def window_count(pipe, text: str) -> int:
    """How many 77-token windows the longer of the two tokenizations of `text` needs."""
    return max(len(token_windows(tokenizer, text)) for tokenizer in (pipe.tokenizer, pipe.tokenizer_2))


def encode_prompts(pipe, prompt: str, negative_prompt: str, device: torch.device) -> PromptEmbeddings:
    """Encode both prompts to the same length (the pipelines require equal shapes) without truncating."""
    count = max(window_count(pipe, prompt), window_count(pipe, negative_prompt))
    dtype = pipe.text_encoder_2.dtype
    embeds, pooled = _encode(pipe, prompt, count, device)
    negative, negative_pooled = _encode(pipe, negative_prompt, count, device)
    return PromptEmbeddings(
        prompt_embeds=embeds.to(dtype),
        pooled_prompt_embeds=pooled.to(dtype),
        negative_prompt_embeds=negative.to(dtype),
        negative_pooled_prompt_embeds=negative_pooled.to(dtype),
    )
