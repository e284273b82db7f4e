"""Magic prompt: the LLM that rewrites, enriches and translates prompts, and when it is used.

`magic_prompt()` is what a request calls: it never fails because of the LLM; on any failure it logs a
warning and returns the user's prompt. It ties together the parts, each in its own module here: the rule
of each magic_prompt_option (rewrite_policy.py), the LLM loaded once and its seeded generation
(rewriter.py), the guard rails on its output (guard_rails.py), and the system prompt, few-shot examples,
sampling settings and word lists, which are data, in data/magic_prompt.json (magic_prompt_config.py).
"""

from __future__ import annotations

import logging
import time

from model.prompting.guard_rails import RewriteError
from model.prompting.rewrite_policy import should_rewrite
from model.prompting.rewriter import PromptRewriter

log = logging.getLogger(__name__)

# How much of a rejected rewrite the log shows.
REJECTED_LOG_CHARS = 300


def magic_prompt(rewriter: PromptRewriter, option: str, prompt: str, seed: int) -> str:
    """The prompt to generate from: the rewrite when the option calls for one, else the user's prompt.

    The one fallback the issue mandates: if the LLM fails or times out, the user's prompt is used and a
    warning is logged; a prediction never fails because of the rewriter.
    """
    # Off never asks the rewriter anything: a service may run without its LLM loaded at all.
    offline = option != "Off" and rewriter.offline
    if not should_rewrite(option, prompt, offline=offline):
        reason = " (English, and only the offline fallback model is loaded)" if offline else ""
        log.info("Magic prompt: %s, prompt kept as given%s", option, reason)
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
