"""The server's settings from the environment: each variable read once, checked, and documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from model.errors import ConfigurationError
from model.options import (
    APPEARANCE_WITH_FACE_ENV,
    COMPILE_ENV,
    INDUCTOR_CACHE_ENV,
    SAFETY_CHECKER_ENV,
    VARIABLES,
    WEIGHTS_DIR_ENV,
    WEIGHTS_SHA256_ENV,
    WEIGHTS_URL_ENV,
    ServiceOptions,
)

ROOT = Path(__file__).resolve().parent.parent
SERVED = [ROOT / "predict.py", *sorted((ROOT / "model").rglob("*.py"))]


def test_the_defaults_are_what_the_readme_says():
    assert ServiceOptions.from_environment({}) == ServiceOptions(
        weights_dir=Path("weights"),
        weights_url=None,
        weights_sha256=None,
        torch_compile=True,
        appearance_scale_with_face=0.0,
        safety_checker=True,
    )


def test_every_variable_reaches_its_field():
    digest = "ab" * 32
    environ = {
        WEIGHTS_DIR_ENV: "/src/weights",
        WEIGHTS_URL_ENV: " https://example.com/w.tar ",
        WEIGHTS_SHA256_ENV: digest.upper(),
        COMPILE_ENV: "0",
        APPEARANCE_WITH_FACE_ENV: "0.3",
        SAFETY_CHECKER_ENV: " Off ",
        INDUCTOR_CACHE_ENV: "/cache/inductor",
    }
    options = ServiceOptions.from_environment(environ)
    assert options == ServiceOptions(
        weights_dir=Path("/src/weights"),
        weights_url="https://example.com/w.tar",
        weights_sha256=digest,
        torch_compile=False,
        appearance_scale_with_face=0.3,
        safety_checker=False,
        compile_cache_dir=Path("/cache/inductor"),
    )
    # Every field is set by exactly one variable.
    assert sorted(VARIABLES.values()) == sorted(field.name for field in dataclasses.fields(ServiceOptions))


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({APPEARANCE_WITH_FACE_ENV: "-0.1"}, f"^{APPEARANCE_WITH_FACE_ENV}='-0.1': .*from 0 \\(off\\) to 1"),
        ({APPEARANCE_WITH_FACE_ENV: "2"}, f"^{APPEARANCE_WITH_FACE_ENV}='2': .*from 0 \\(off\\) to 1"),
        ({APPEARANCE_WITH_FACE_ENV: "half"}, f"^{APPEARANCE_WITH_FACE_ENV}='half'"),
        ({APPEARANCE_WITH_FACE_ENV: "nan"}, f"^{APPEARANCE_WITH_FACE_ENV}='nan'"),
        ({SAFETY_CHECKER_ENV: "maybe"}, f"^{SAFETY_CHECKER_ENV}='maybe' is not one of on, off"),
        ({COMPILE_ENV: "yes"}, f"^{COMPILE_ENV}='yes' is not one of '', 0, 1: set it to 1"),
        (
            {WEIGHTS_URL_ENV: "http://127.0.0.1/w.tar"},
            f"{WEIGHTS_SHA256_ENV} is not set: set it to the 64-hex",
        ),
        (
            {WEIGHTS_URL_ENV: "http://127.0.0.1/w.tar", WEIGHTS_SHA256_ENV: "abc"},
            f"{WEIGHTS_SHA256_ENV} is abc",
        ),
    ],
)
def test_a_bad_value_fails_naming_the_variable_and_what_to_set(environ, message):
    with pytest.raises(ConfigurationError, match=message):
        ServiceOptions.from_environment(environ)


@pytest.mark.parametrize(("value", "enabled"), [("on", True), ("ON", True), ("off", False), (" Off ", False)])
def test_the_safety_switch(value, enabled):
    assert ServiceOptions.from_environment({SAFETY_CHECKER_ENV: value}).safety_checker is enabled


def test_a_digest_without_a_url_is_not_read():
    assert ServiceOptions.from_environment({WEIGHTS_SHA256_ENV: "not a digest"}).weights_sha256 is None


def readme_configuration_variables() -> set[str]:
    """The variable names in the first column of the README's configuration table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in re.findall(r"^\| (.+?) \|", section, flags=re.MULTILINE):
        names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", row))
    return names


def test_the_readme_documents_every_variable_of_the_server():
    documented = readme_configuration_variables()
    assert set(VARIABLES) <= documented, set(VARIABLES) - documented
    # The table's other rows are the Makefile's, the page's and torch's, none read by the server.
    assert not {name for name in documented - set(VARIABLES) if name.startswith(("CHARACTER_", "WEIGHTS_"))}


def test_nothing_else_in_the_server_reads_the_environment():
    readers = [
        str(path.relative_to(ROOT))
        for path in SERVED
        if path.name != "options.py" and re.search(r"os\.environ|os\.getenv|getenv\(", path.read_text())
    ]
    assert readers == []
