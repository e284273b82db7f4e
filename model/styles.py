"""Style types: the prompt template and negative prompt of each, read from data/styles.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Style:
    name: str
    template: str
    negative_prompt: str

    def apply(self, prompt: str) -> str:
        return self.template.format(prompt=prompt)


@cache
def styles() -> dict[str, Style]:
    """The style table, by the contract's style_type names."""
    data = json.loads(resources.files("model").joinpath("data/styles.json").read_text(encoding="utf-8"))
    return {name: Style(name=name, **fields) for name, fields in data.items()}
