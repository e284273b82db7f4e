"""Style types: the Fiction and Realistic presets, and the Auto rule that picks one, from data/styles.json.

Each preset holds a prompt template, a negative prompt and factors on the identity adapters' scales. The
rendering speed (model/generation/speeds.py) sets the base scales; a style multiplies them, and
`adapter_scales` is the one place where the two meet. Auto is not a preset: `choose_style` resolves it to
Fiction or Realistic from cue words in the user's prompt (the data file's lists, several languages), and
logs the choice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from model.generation.settings import AdapterScales
from model.generation.speeds import Speed

log = logging.getLogger(__name__)

AUTO = "Auto"
# A factor of 1.0 on every scale: what a style that names none of them multiplies by.
NEUTRAL_FACTORS = {field.name: 1.0 for field in dataclasses.fields(AdapterScales)}


@dataclass(frozen=True)
class Style:
    name: str
    template: str
    negative_prompt: str
    # Factors on the speed's adapter scales (1.0 keeps the speed's value).
    adapter_factors: AdapterScales = AdapterScales(**NEUTRAL_FACTORS)

    def apply(self, prompt: str) -> str:
        return self.template.format(prompt=prompt)

    def adapter_scales(self, speed: Speed) -> AdapterScales:
        """The speed's adapter scales times this style's factors."""
        return speed.adapters.times(self.adapter_factors)


@dataclass(frozen=True)
class AutoRule:
    default: str
    # The default when the reference has no human face (a cartoon, a mascot, an animal).
    default_without_face: str
    cues: dict[str, tuple[str, ...]]


def _data() -> dict:
    return json.loads(
        (resources.files("model.prompting") / "data" / "styles.json").read_text(encoding="utf-8")
    )


@cache
def styles() -> dict[str, Style]:
    """The presets, by the contract's style_type names (all but Auto)."""
    presets = _data()["presets"]
    return {
        name: Style(
            name=name,
            template=fields["template"],
            negative_prompt=fields["negative_prompt"],
            adapter_factors=AdapterScales(**NEUTRAL_FACTORS | fields["adapter_factors"]),
        )
        for name, fields in presets.items()
    }


def style_types() -> list[str]:
    """Every style_type the contract accepts: Auto and the presets."""
    return [AUTO, *styles()]


@cache
def auto_rule() -> AutoRule:
    raw = _data()["auto"]
    rule = AutoRule(
        default=raw["default"],
        default_without_face=raw["default_without_face"],
        cues={k: tuple(v) for k, v in raw["cues"].items()},
    )
    if {rule.default, rule.default_without_face} - set(styles()) or set(rule.cues) - set(styles()):
        raise ValueError("styles.json: the Auto rule names a style that is not a preset")
    return rule


def _matches(cue: str, text: str) -> bool:
    # Latin cues are whole words ("ink" is not in "pink"); CJK has no spaces, so those match anywhere.
    if all(ord(c) < 0x3000 for c in cue):
        return re.search(rf"(?<!\w){re.escape(cue)}(?!\w)", text) is not None
    return cue in text


def cue_hits(prompt: str) -> dict[str, list[str]]:
    """The cue words of each preset that occur in the prompt."""
    text = prompt.casefold()
    return {name: [cue for cue in cues if _matches(cue, text)] for name, cues in auto_rule().cues.items()}


def choose_style(style_type: str, prompt: str, reference_has_face: bool = True) -> Style:
    """The preset for a request: the named one, or for Auto the preset with the most cue words in the
    user's prompt, and on a tie the default: Realistic (a character reference with a human face is
    usually a photo), or Fiction when the reference has no human face (a cartoon, a mascot).

    Auto reads the prompt as the user wrote it, not the magic prompt's rewrite, so that the choice is
    deterministic and does not depend on what the LLM added.
    """
    if style_type != AUTO:
        return styles()[style_type]
    rule = auto_rule()
    hits = cue_hits(prompt)
    most = max(len(found) for found in hits.values())
    leaders = [name for name, found in hits.items() if len(found) == most]
    default = rule.default if reference_has_face else rule.default_without_face
    best = leaders[0] if most > 0 and len(leaders) == 1 else default
    cues = ", ".join(hits[best]) or "none"
    log.info("Style: Auto chose %s (cues: %s)", best, cues)
    return styles()[best]
