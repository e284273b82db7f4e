"""A prompt's own rules, before any model: text, something visible, a bounded length (prompting/limits.py)."""

from __future__ import annotations

import pytest

from model.errors import InputError
from model.prompting.limits import (
    MAX_PROMPT_CHARS,
    MAX_PROMPT_TOKENS,
    WINDOW_TOKENS,
    check_prompt,
    check_prompt_tokens,
    load_prompt_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_weights):
    return load_prompt_tokenizer(tiny_weights / "sdxl")


@pytest.mark.parametrize(
    "prompt",
    [
        "\u200b\ufeff\u2060",  # zero-width space, byte-order mark, word joiner
        "\u200b \u200c\u200d\n",  # with joiners and ordinary whitespace
        "\u00ad\u2061\u180e",  # soft hyphen, function application, Mongolian vowel separator
        "\u3164\u2800",  # Hangul filler, blank Braille pattern
        "\u0301\ufe0f",  # a combining accent and a variation selector, with nothing to combine with
        "\u202e\u2066\u2069",  # bidi controls
    ],
)
def test_a_prompt_of_invisible_characters_only_is_empty(prompt):
    with pytest.raises(
        InputError, match=rf"prompt is empty \(its {len(prompt)} characters are all invisible\)"
    ):
        check_prompt(prompt)


@pytest.mark.parametrize("prompt", ["a\u200bb", "\u200b\u00e9", "🦸\u200d♀️", "城", "\u3164x", "!"])
def test_a_prompt_with_one_visible_character_is_kept(prompt):
    check_prompt(prompt)


def test_the_character_limit_is_named():
    check_prompt("x" * MAX_PROMPT_CHARS)
    with pytest.raises(InputError, match=f"prompt is {MAX_PROMPT_CHARS + 1} characters, more than the 5000"):
        check_prompt("x" * (MAX_PROMPT_CHARS + 1))


def test_the_window_limit_counts_the_encoders_tokens(tokenizer):
    # The tiny profile's tokenizer has one token per character of this text.
    assert len(tokenizer("ab" * 10, add_special_tokens=False)["input_ids"]) == 20
    check_prompt_tokens("ab" * (MAX_PROMPT_TOKENS // 2), tokenizer)
    with pytest.raises(
        InputError,
        match=r"prompt is 602 tokens \(9 text-encoder windows of 75\), more than the 600 \(8 windows\)",
    ):
        check_prompt_tokens("ab" * (MAX_PROMPT_TOKENS // 2 + 1), tokenizer)


def test_eight_windows_of_seventy_five():
    assert (MAX_PROMPT_TOKENS, WINDOW_TOKENS) == (600, 75)
