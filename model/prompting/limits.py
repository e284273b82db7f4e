"""What a prompt must be before any model reads it: text, with a visible character, within a bounded length.

The length is bounded twice. Characters first, before the tokenizer runs, so a 200,000-character body is
refused in microseconds. Then text-encoder windows: SDXL's CLIP encoders read 75 text tokens at a time,
and model/generation/prompt_encoding.py encodes a longer prompt window by window, so the text encoders'
passes and the UNet's cross-attention keys (77 per window, at every attention layer of every step) grow
with the prompt. MAX_PROMPT_WINDOWS = 8 (600 tokens, about 450 English words) holds the longest prompts the
magic prompt writes (96 new tokens) and the longest hand-written ones several times over, while a request
still costs one ordinary generation rather than the twenty it took at 200,000 characters. Both SDXL
tokenizers share one vocabulary and one BPE, so one count serves both; the style template's few words
come on top of it.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Protocol

from model.errors import InputError

# 75 text tokens per window, between the start and end tokens of CLIP's 77 positions.
WINDOW_TOKENS = 75
MAX_PROMPT_WINDOWS = 8
MAX_PROMPT_TOKENS = WINDOW_TOKENS * MAX_PROMPT_WINDOWS
# Longer than 600 tokens of any prose (English averages under 5 characters a token, CJK one or more tokens
# a character), so it never refuses what the window limit would accept but for runs of long words; it
# bounds the tokenizer's work on what is plainly too long.
MAX_PROMPT_CHARS = 5000

# Unicode categories that draw nothing on their own: controls, format characters (zero-width space
# U+200B, joiners, U+FEFF, word joiner U+2060, bidi marks), separators, and combining marks without a base.
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"}
# Letters and symbols that render as blank space (Hangul fillers, the blank Braille pattern).
_BLANK_CHARACTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs) -> dict: ...


def is_visible(character: str) -> bool:
    return character not in _BLANK_CHARACTERS and unicodedata.category(character) not in _INVISIBLE_CATEGORIES


def check_prompt(prompt: object) -> None:
    """InputError for a prompt that is not text, shows nothing, or has more than MAX_PROMPT_CHARS."""
    if not isinstance(prompt, str):
        shown = "null" if prompt is None else type(prompt).__name__
        raise InputError(f"prompt must be text (a JSON string); got {shown}: describe the image to generate")
    if not any(is_visible(character) for character in prompt):
        detail = "" if not prompt.strip() else f" (its {len(prompt)} characters are all invisible)"
        raise InputError(f"prompt is empty{detail}: describe the image to generate")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(
            f"prompt is {len(prompt)} characters, more than the {MAX_PROMPT_CHARS} this server reads: "
            "shorten it"
        )


def check_prompt_tokens(prompt: str, tokenizer: Tokenizer) -> None:
    """InputError for a prompt of more than MAX_PROMPT_WINDOWS text-encoder windows."""
    tokens = len(tokenizer(prompt, add_special_tokens=False, truncation=False)["input_ids"])
    if tokens > MAX_PROMPT_TOKENS:
        windows = -(-tokens // WINDOW_TOKENS)
        raise InputError(
            f"prompt is {tokens} tokens ({windows} text-encoder windows of {WINDOW_TOKENS}), more than the "
            f"{MAX_PROMPT_TOKENS} ({MAX_PROMPT_WINDOWS} windows) this server encodes: shorten it"
        )


def load_prompt_tokenizer(sdxl_dir: Path) -> Tokenizer:
    """SDXL's first CLIP tokenizer, from the weights' sdxl/tokenizer folder (a few MB, no model)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(sdxl_dir / "tokenizer")
