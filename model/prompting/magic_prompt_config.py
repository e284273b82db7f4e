"""The magic prompt's settings, read once from data/magic_prompt.json.

Owns MagicPromptConfig and config(): the system prompt, the user's turn and the few-shot examples, the
sampling settings and the deadline, the Auto rule's length and stopword lists, and the guard rails' word
limit and word lists (function words, chat and narrative markers). They are data, so that tuning the
rewrite edits the JSON file, not the code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class MagicPromptConfig:
    system_prompt: str
    # The user's turn, with {prompt} where the prompt goes, framed as data.
    user_template: str
    examples: tuple[tuple[str, str], ...]
    max_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    timeout_seconds: float
    max_words: int
    long_prompt_words: int
    stopwords: dict[str, frozenset[str]]
    # The subject check: words that carry no subject, and the share of the others a rewrite must keep.
    function_words: frozenset[str]
    min_subject_share: float
    # Words and phrases of a chat reply, not of an image description (casefolded, apostrophes as ').
    chat_markers: tuple[str, ...]
    # Words and phrases of a story (past tense, first person plural, events in sequence), not of a picture.
    narrative_markers: tuple[str, ...]


@cache
def config() -> MagicPromptConfig:
    raw = json.loads(
        (resources.files("model.prompting") / "data" / "magic_prompt.json").read_text(encoding="utf-8")
    )
    generation, auto, output = raw["generation"], raw["auto"], raw["output"]
    return MagicPromptConfig(
        system_prompt=raw["system_prompt"],
        user_template=raw["user_template"],
        examples=tuple((e["user"], e["assistant"]) for e in raw["examples"]),
        max_new_tokens=generation["max_new_tokens"],
        temperature=generation["temperature"],
        top_p=generation["top_p"],
        repetition_penalty=generation["repetition_penalty"],
        timeout_seconds=generation["timeout_seconds"],
        max_words=output["max_words"],
        long_prompt_words=auto["long_prompt_words"],
        stopwords={lang: frozenset(words) for lang, words in auto["stopwords"].items()},
        function_words=frozenset(output["function_words"]),
        min_subject_share=output["min_subject_share"],
        chat_markers=tuple(output["chat_markers"]),
        narrative_markers=tuple(output["narrative_markers"]),
    )
