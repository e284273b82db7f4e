"""The guard rails on the magic prompt's output: what makes a rewrite usable, and RewriteError when not.

clean() turns the LLM's raw answer into one bounded paragraph without chat artefacts (special tokens, role
tags, a preamble, wrapping quotes, repeated sentences); check_rewrite() then rejects a rewrite that drops
quoted text, reads as a chat reply, tells a story, or, for an English prompt, loses its subject. A rejected
rewrite never reaches the image: the caller keeps the user's prompt.
"""

from __future__ import annotations

import re

from model.prompting.magic_prompt_config import config
from model.prompting.rewrite_policy import _QUOTED, _WORD, looks_english, quoted_texts

# A list in a rewrite: two or more enumerated items ("1. A cat ... 2. A dog", "- A cat - A dog").
_LIST_ITEM = re.compile(r"(?:^|\s)(?:\d{1,2}[.)]|[-*•])\s+\S")
# Chat artefacts a small model leaves around its answer.
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>")
_ROLE_TAG = re.compile(r"^\s*(?:system|user|assistant)\s*[:\n]", re.IGNORECASE | re.MULTILINE)
_PREAMBLE = re.compile(
    r"^\s*(?:(?:here(?: is|'s)|sure|certainly|of course|okay|ok)\b[^:\n]*[:\n]"
    r"|(?:rewritten |improved |enhanced |new )?prompt\s*:)\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class RewriteError(RuntimeError):
    """The LLM gave no usable rewrite; the caller keeps the user's prompt.

    `rewrite` is the cleaned text that was rejected, if there was one, for the log.
    """

    def __init__(self, reason: str, rewrite: str = "") -> None:
        super().__init__(reason)
        self.rewrite = rewrite


def clean(text: str, max_words: int) -> str:
    """One paragraph of at most max_words words, without role tags, preamble, wrapping quotes or repeats."""
    text = _ROLE_TAG.sub("\n", _SPECIAL_TOKEN.sub("\n", text))
    text = _PREAMBLE.sub("", text.strip())
    # The first paragraph is the prompt; what follows a blank line is the model talking about it.
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    text = " ".join(paragraphs[0].split()) if paragraphs else ""
    text = text.replace("**", "").strip()
    if len(text) > 1 and text[0] in "\"'“" and text[-1] in "\"'”" and text.count(text[0]) <= 2:
        text = text[1:-1].strip()
    # Small models loop: drop sentences already said.
    sentences, seen = [], set()
    for sentence in _SENTENCE_END.split(text):
        key = sentence.casefold().strip(" .!?")
        if key and key not in seen:
            seen.add(key)
            sentences.append(sentence)
    text = " ".join(sentences)
    words = text.split()
    if len(words) > max_words:
        text = " ".join(words[:max_words])
        # End on the last whole sentence when there is one, else on the last whole word.
        cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
        text = text[: cut + 1] if cut > 0 else text.rstrip(",;:")
    return text.strip()


def check_rewrite(original: str, rewrite: str) -> str:
    """The rewrite, if it keeps what can be checked mechanically; else RewriteError saying why.

    In order: some text; every quoted passage of the original, exactly; no chat (words of a reply to
    a person, a question, a list of examples) and no story (narrative_reason) that the original did not
    have; and for an English original, its subject (subject_kept). A followed prompt injection fails the
    chat and subject checks: an answer to "ignore the instructions above and ..." is neither a description
    nor about the prompt's words.
    """
    if not rewrite:
        raise RewriteError("the model returned no text")
    missing = [q for q in quoted_texts(original) if q[1:-1].strip() not in rewrite]
    if missing:
        raise RewriteError(f"the rewrite dropped the quoted text {', '.join(missing)}", rewrite)
    chat = chat_reason(original, rewrite)
    if chat:
        raise RewriteError(f"the rewrite reads as chat, not a description ({chat})", rewrite)
    story = narrative_reason(original, rewrite)
    if story:
        raise RewriteError(f"the rewrite tells a story, not a picture ({story})", rewrite)
    if looks_english(original):
        kept, words = subject_kept(original, rewrite)
        if words and len(kept) < config().min_subject_share * len(words):
            lost = ", ".join(sorted(set(words) - set(kept)))
            raise RewriteError(
                f"the rewrite lost the subject: it keeps {len(kept)} of the prompt's {len(words)} "
                f"content words (missing: {lost})",
                rewrite,
            )
    return rewrite


def _words(text: str) -> list[str]:
    """Casefolded words outside quoted text, apostrophes as '."""
    return [w.casefold().replace("’", "'") for w in _WORD.findall(_QUOTED.sub(" ", text))]


def _stem(word: str) -> str:
    """A word's form for comparison: no possessive, no plural s ("umbrellas", "woman's" -> the noun)."""
    word = word.removesuffix("'s")
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def content_words(prompt: str) -> list[str]:
    """The words that name the prompt's subject: outside quoted text, not a function word, in stem form,
    each once. Function words (data/magic_prompt.json) are articles, pronouns, prepositions, auxiliaries,
    contractions ("don't" is one word here, never a quotation mark) and the words of a request ("draw",
    "image of") that a description drops."""
    function_words = config().function_words
    seen: dict[str, None] = {}
    for word in _words(prompt):
        if word not in function_words and len(word) > 1:
            seen.setdefault(_stem(word), None)
    return list(seen)


def subject_kept(original: str, rewrite: str) -> tuple[list[str], list[str]]:
    """(content words of the original found in the rewrite, all content words of the original)."""
    words = content_words(original)
    present = {_stem(word) for word in _words(rewrite)}
    return [word for word in words if word in present], words


def _new_marker(original: str, rewrite: str, markers: tuple[str, ...]) -> str | None:
    """The first marker (a word or a phrase of words) the rewrite has and the original has not."""
    said = f" {' '.join(_words(rewrite))} "
    asked = f" {' '.join(_words(original))} "
    for marker in markers:
        if f" {marker} " in said and f" {marker} " not in asked:
            return marker
    return None


def narrative_reason(original: str, rewrite: str) -> str | None:
    """Why the rewrite reads as a story rather than an image description, or None.

    An image prompt describes one moment in the present: what is there and how it looks. A small model
    often writes a story instead ("An elf who was born into the kingdom ... he used to sit by the fire"):
    past tense ("was", "had", "used to"), the first person plural, events in sequence ("one day",
    "suddenly", "and then"). Any such marker the original did not have rejects the rewrite, however many
    of the prompt's words it kept. Participles ("a knight dressed in armour") are not markers.
    """
    marker = _new_marker(original, rewrite, config().narrative_markers)
    return None if marker is None else f"{marker!r}"


def chat_reason(original: str, rewrite: str) -> str | None:
    """Why the rewrite reads as a chat reply rather than an image description, or None.

    Only what the original did not have counts: a prompt written in the first person, or with a question
    mark, may keep them.
    """
    marker = _new_marker(original, rewrite, config().chat_markers)
    if marker is not None:
        return f"{marker!r}"
    outside_quotes = _QUOTED.sub(" ", rewrite)
    if "?" in outside_quotes and "?" not in _QUOTED.sub(" ", original):
        return "a question"
    if len(_LIST_ITEM.findall(outside_quotes)) >= 2 and len(_LIST_ITEM.findall(original)) < 2:
        return "a list"
    return None
