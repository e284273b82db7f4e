"""The docs and code speak of the product: no reference to the project's tracker, which readers lack."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACKER_REFERENCE = re.compile(r"\b(issue|ticket)s? #?\d+", re.IGNORECASE)


def tracker_references(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if TRACKER_REFERENCE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def project_files() -> list[Path]:
    files = [
        ROOT / "README.md",
        ROOT / "predict.py",
        ROOT / "Makefile",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    for folder in ("model", "devtools", "scripts", "tests", "ui", "examples", "deploy"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".yaml", ".sh"))
    return files


def test_no_doc_or_module_names_an_issue_number():
    assert tracker_references(project_files()) == []


def test_the_check_finds_one(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    note = tmp_path / "note.md"
    note.write_text("The cache (see issue" + " 13) is new.\nIssues are welcome.\n", encoding="utf-8")
    assert tracker_references([note]) == ["note.md:1: The cache (see issue" + " 13) is new."]
