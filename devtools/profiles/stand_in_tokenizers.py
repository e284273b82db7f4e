"""Stand-in tokenizers, for models whose real vocabularies are not in the repository: SDXL's two CLIP text
encoders and the magic prompt LLM (chat_stand_in_tokenizer, at the end).

A byte-level BPE vocabulary (every byte alone and at a word end, a few merges, then CLIP's special tokens)
with the file set and classes of SDXL's tokenizer folders (vocab.json, merges.txt: no tokenizer.json), so
any text tokenizes, prompts pad to 77 tokens as in production, and transformers builds them through the
production path. Used by the tiny profile, the random real-size profile (devtools/profiles/random.py) and the
meta-device checks (devtools/counting.py); every id is below the real vocabularies' 49408, so the real-size
text encoders take them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import CLIPTokenizer, PreTrainedTokenizerFast

# SDXL's first tokenizer (OpenAI CLIP) pads with the end-of-text token, the second (OpenCLIP) with "!".
CLIP_PAD_TOKEN = "<|endoftext|>"
OPEN_CLIP_PAD_TOKEN = "!"
CLIP_MAX_LENGTH = 77


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte -> printable character map, which the tokenizer's ByteLevel step applies.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


# A few merges so that the tokenizer exercises BPE merging, not only single characters.
STAND_IN_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "i n", "o n</w>", "e r</w>")


def stand_in_vocab() -> dict[str, int]:
    """Every byte alone and at a word end (so any text tokenizes), the merges, then the special tokens."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(merge.split()) for merge in STAND_IN_MERGES]
    # Special tokens last, as in CLIP: the end-of-text id is the largest, which CLIP's pooling relies on.
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def clip_stand_in_tokenizer(pad_token: str) -> CLIPTokenizer:
    return CLIPTokenizer(
        vocab=stand_in_vocab(),
        merges=[tuple(merge.split()) for merge in STAND_IN_MERGES],
        pad_token=pad_token,
        model_max_length=CLIP_MAX_LENGTH,
    )


def write_clip_stand_in_tokenizer(folder: Path, pad_token: str) -> None:
    """The file set of SDXL's tokenizer folders, with the stand-in vocabulary."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(
        json.dumps(stand_in_vocab(), ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(STAND_IN_MERGES) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CLIP_MAX_LENGTH,
        "do_lower_case": True,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


# ---------------------------------------------------------------- the magic prompt LLM's chat tokenizer

# ChatML, the chat format of the production LLM (Qwen2.5) and of the SmolLM2 fallback.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def chat_stand_in_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with ChatML's special tokens and chat template, for an LLM whose real
    tokenizer is not in the repository (the random profile's Qwen2.5-1.5B architecture).

    One token per byte, no merges: a chat is about four times as many tokens as with Qwen's 151,643-token
    vocabulary, so a prefill timed with it is an upper bound. Ids run from 0 to len(tokenizer) - 1.
    """
    byte_symbols = list(_bytes_to_unicode().values())
    vocab = {symbol: index for index, symbol in enumerate(byte_symbols)}
    vocab |= {token: len(byte_symbols) + index for index, token in enumerate(CHAT_SPECIAL_TOKENS)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(token, special=True) for token in CHAT_SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
