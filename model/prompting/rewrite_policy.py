"""When the magic prompt rewrites: the rule of each magic_prompt_option (On, Off, Auto).

On always rewrites, Off never does, and Auto rewrites a prompt that is short or not English and keeps a
long English prompt as it is; offline (the rewriter is the small fallback model, not the production LLM)
Auto keeps every English prompt as it is, and rewrites only to translate. Owns what that rule reads in a
prompt: its quoted passages (text to render in the image, in the quotation marks of several languages, told
apart from apostrophes), its language and its length in words, both outside quoted text. The guard rails
read quoted text and words the same way, with the patterns defined here.
"""

from __future__ import annotations

import re
import unicodedata

from model.prompting.magic_prompt_config import config

# Quoted text is text to render in the image: kept verbatim, and not read as the prompt's language.
# Double quotes, and the quotation marks of other languages: “…”, «…», „…“, 「…」, 『…』, ‹…›, ‚…‘.
_PAIRED_QUOTES = r'"[^"]+"|“[^”]+”|«[^»]+»|„[^“”]+[“”]|「[^」]+」|『[^』]+』|‹[^›]+›|‚[^‘’]+[‘’]'
# Single quotes ('OPEN 24H', ‘OPEN 24H’) share their mark with the apostrophe (don't, the kids' toys,
# ’90s), so a quote opens only where no letter or digit precedes it and closes only where none follows
# it; inside, the mark is an apostrophe only between two letters ('Don't Stop').
_LETTER = r"[^\W\d_]"
_SINGLE_QUOTES = (
    rf"(?<![^\W_])'(?=\S)(?:[^'\n]|(?<={_LETTER})'(?={_LETTER}))+?(?<=\S)'(?![^\W_])"
    rf"|‘(?=\S)(?:[^’\n]|(?<={_LETTER})’(?={_LETTER}))+?(?<=\S)’(?![^\W_])"
)
_QUOTED = re.compile(f"{_PAIRED_QUOTES}|{_SINGLE_QUOTES}")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def quoted_texts(prompt: str) -> list[str]:
    """Every quoted passage of the prompt, with its quotation marks."""
    return _QUOTED.findall(prompt)


def looks_english(prompt: str) -> bool:
    """Whether the prompt, outside quoted text, reads as English.

    Any letter outside the Latin script (CJK, kana, Cyrillic, ...) means no. Otherwise the prompt's
    function words are counted against each language's list: English needs at least as many as any other
    language, and accented letters (é, ñ, ü, ß) count as one more word for the other side. A prompt with
    no function words at all (a name) counts as English.
    """
    text = _QUOTED.sub(" ", prompt)
    letters = [c for c in text if c.isalpha()]
    if any(not unicodedata.name(c, "").startswith("LATIN") for c in letters):
        return False
    words = [w.casefold() for w in _WORD.findall(text)]
    counts = {lang: sum(w in stop for w in words) for lang, stop in config().stopwords.items()}
    english = counts.pop("en")
    accented = int(any(not c.isascii() for c in letters))
    return english >= max(counts.values()) + accented


def word_count(prompt: str) -> int:
    """Words outside quoted text; CJK characters count one each, as they carry about a word."""
    text = _QUOTED.sub(" ", prompt)
    cjk = sum(1 for c in text if c.isalpha() and ord(c) >= 0x3000)
    return len(_WORD.findall("".join(" " if ord(c) >= 0x3000 else c for c in text))) + cjk


def should_rewrite(option: str, prompt: str, offline: bool = False) -> bool:
    """On: always. Off: never. Auto: when the prompt is short or not English; a long English prompt
    (at least long_prompt_words words outside quoted text) is taken to be what the user means, as is.

    offline: the rewriter is the offline fallback (SmolLM2-135M), not the production LLM. Auto then keeps
    every English prompt as given: the fallback's rewrites of short prompts invent stories and lose the
    subject far more often than they add detail, and on a small CPU each one costs seconds to the deadline;
    a prompt in another language is still sent to it, to be translated.
    """
    if option == "On":
        return True
    if option == "Off":
        return False
    if option == "Auto":
        if not looks_english(prompt):
            return True
        return not offline and word_count(prompt) < config().long_prompt_words
    raise ValueError(f"magic_prompt_option {option!r} is not one of Auto, On, Off")
