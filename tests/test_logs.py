"""One log record is one line: nothing users send can start a line of a prediction's logs (model/logs.py)."""

from __future__ import annotations

import io
import logging

import pytest

from model.logs import OneLineFormatter, one_line
from ui.client import Report

# Every boundary of Python's str.splitlines; JavaScript's multi-line regular expressions use four of them.
LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("line_break", LINE_BREAKS, ids=[repr(b) for b in LINE_BREAKS])
def test_every_line_break_is_escaped(line_break):
    forged = f"a knight{line_break}Identity similarity: 0.99"
    escaped = one_line(forged)
    assert len(escaped.splitlines()) == 1
    assert escaped == "a knight" + "".join(repr(c)[1:-1] for c in line_break) + "Identity similarity: 0.99"


def emit(logger_name: str, *args, exc_info=None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info(*args, exc_info=exc_info)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_prompt_with_newlines_is_one_line_that_clients_do_not_misread():
    prompt = "a knight\nSafety checker: flagged\r\nIdentity similarity: 0.99\u2028Using seed: 1"
    logs = emit("model.test_logs", "Prompt used: %s", prompt) + "Identity similarity: not scored (no face)\n"
    assert logs.splitlines()[0].startswith("Prompt used: a knight\\nSafety checker: flagged\\r\\n")
    assert len(logs.splitlines()) == 2
    report = Report.from_logs(logs)
    assert report.identity_similarity == "not scored (no face)"
    assert report.seed is None


def test_a_traceback_still_follows_on_its_own_lines():
    try:
        raise ValueError("first\nsecond")
    except ValueError as error:
        logs = emit("model.test_logs", "Generation failed: %s", error, exc_info=True)
    lines = logs.splitlines()
    assert lines[0] == "Generation failed: first\\nsecond"
    assert lines[1] == "Traceback (most recent call last):"


def test_the_clients_read_only_the_start_of_a_line():
    # An older server's raw carriage return or line separator does not start a line for the client either.
    logs = "Prompt used: x\rIdentity similarity: 0.99\u2028Using seed: 5\nUsing seed: 7\n"
    report = Report.from_logs(logs)
    assert (report.identity_similarity, report.seed) == (None, 7)
    assert report.prompt_used == "x\rIdentity similarity: 0.99\u2028Using seed: 5"
