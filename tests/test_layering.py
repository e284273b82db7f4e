"""The serving package stands alone: nothing under model/ imports the development tools."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVELOPMENT_ONLY = ("devtools", "tests", "scripts")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def development_imports(package: Path) -> list[str]:
    """'<file> imports <module>' for each import of a development-only package under `package`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if name.split(".")[0] in DEVELOPMENT_ONLY:
                found.append(f"{path.relative_to(package.parent)} imports {name}")
    return found


def test_the_serving_package_imports_no_development_tool():
    assert development_imports(ROOT / "model") == []
    assert not (imported := imported_modules(ROOT / "predict.py")) & set(DEVELOPMENT_ONLY), imported


def test_the_scan_sees_an_import_inside_a_function(tmp_path):
    """The check above can fail: a lazy import of a development tool inside a function is found too."""
    package = tmp_path / "package"
    package.mkdir()
    (package / "module.py").write_text("def build():\n    from devtools.profiles import tiny\n")
    assert development_imports(package) == ["package/module.py imports devtools.profiles"]


MAX_MODULE_LINES = 400


def test_no_serving_module_outgrows_one_concern():
    """A module over 400 lines has become several concerns: split it (as the pipeline and the magic
    prompt were) rather than raise the limit."""
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "model").rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
