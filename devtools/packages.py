"""The preflight: what the serving code imports, whether this machine can import it, and how the installed
versions compare with the pins.

The list is derived, not written down: `serving_imports` reads every import statement of the serving
package (model/) and the Cog predictor (predict.py) with the ast module, top-level and inside functions,
so a dependency the server starts importing is checked from that day on. `preflight` then imports each
of those modules as the code names them (and the names it takes from them: diffusers and transformers
load their submodules lazily), which also proves what they import in turn (diffusers needs requests,
insightface needs tqdm), and compares the versions of the distributions involved with requirements.txt.

scripts/benchmark.py and scripts/gpu_check.sh run it before anything else, so that a bare GPU machine
hears which wheels to carry instead of an ImportError from deep inside the package, and which installed
versions are not the pinned ones. Standard library only until the imports themselves; `packaging`
(a dependency of transformers and diffusers) checks the requirement ranges when it is there.

Usage: python -m devtools.packages [--pins requirements.txt] [--json PATH]   (exit 1: an import fails)
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import importlib.metadata
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING_SOURCES = ("model", "predict.py")
PINS = ROOT / "requirements.txt"
# The project's own top-level packages and modules: not third-party.
LOCAL_MODULES = frozenset({"model", "predict", "devtools", "scripts", "tests"})
# Imported by predict.py alone: the Cog runtime, which the benchmark does not start (it loads the service
# directly). `serving_imports` still lists it; `preflight(predictor=False)` leaves it out.
PREDICTOR_ONLY = frozenset({"cog"})
# Import name -> the pip distribution that provides it, where they differ: for a machine that lacks it,
# where importlib.metadata cannot tell.
DISTRIBUTION_OF_IMPORT = {
    "PIL": "pillow",
    "cv2": "opencv-python",
    "skimage": "scikit-image",
    "google": "protobuf",
    "yaml": "pyyaml",
    "cog": "cog",
}
# Distributions that install the same modules as a pinned one: either satisfies the other's pin
# (requirements-gpu.txt pins onnxruntime-gpu where requirements.txt pins onnxruntime).
SAME_MODULES = {"onnxruntime-gpu": "onnxruntime", "opencv-python-headless": "opencv-python"}


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them: `Pillow_HEIF` -> `pillow-heif`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _family(name: str) -> str:
    name = normalize(name)
    return SAME_MODULES.get(name, name)


def serving_imports(root: Path = ROOT, sources: Iterable[str] = SERVING_SOURCES) -> dict[str, set[str]]:
    """Every third-party module the serving sources import -> the names taken from it (`from X import a`).

    Module names are as written (`insightface.app`, `google.protobuf.message`); `import X` contributes X
    with no names. The standard library, relative imports and the project's own packages are left out.
    """
    found: dict[str, set[str]] = {}
    for source in sources:
        path = root / source
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            tree = ast.parse(file.read_text(), filename=str(file))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    pairs = [(alias.name, None) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    pairs = [(node.module, alias.name) for alias in node.names]
                else:
                    continue
                for module, name in pairs:
                    top = module.partition(".")[0]
                    if top in sys.stdlib_module_names or top in LOCAL_MODULES or top == "__future__":
                        continue
                    names = found.setdefault(module, set())
                    if name is not None and name != "*":
                        names.add(name)
    return found


def read_pins(path: Path = PINS) -> dict[str, tuple[str, str]]:
    """The `name==version` lines of a requirements file: normalized family name -> (name, version)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+).*", line)
        if match:
            pins[_family(match[1])] = (match[1], match[2])
    return pins


def installed_version(name: str) -> tuple[str, str] | None:
    """(distribution, version) installed here for `name` or for a distribution with the same modules."""
    wanted = _family(name)
    candidates = [name] + [other for other, family in SAME_MODULES.items() if family == wanted]
    candidates += [wanted] if wanted != normalize(name) else []
    for candidate in candidates:
        try:
            return normalize(candidate), importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    # Reads every installed distribution's file list: once per process, not once per module.
    return importlib.metadata.packages_distributions()


def _distribution_of(module: str) -> str:
    top = module.partition(".")[0]
    provided = _packages_distributions().get(top)
    if provided:
        return provided[0]
    return DISTRIBUTION_OF_IMPORT.get(top, top)


@dataclass(frozen=True)
class Difference:
    """One row of the table: a pin or a requirement the installed packages do not meet."""

    package: str
    wanted: str  # "==2.13.0" (the pin), or "regex>=2025.10.22 (transformers)" (a package's requirement)
    installed: str  # the version, or "not installed"


@dataclass
class Preflight:
    """What preflight() found: the serving imports that failed, the versions, what differs from the pins."""

    # Module -> why it cannot be imported here (its ImportError).
    failures: dict[str, str] = field(default_factory=dict)
    # Distribution -> installed version: the serving imports' distributions, the pinned ones and their
    # declared requirements, as far as they are installed.
    versions: dict[str, str] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    pins_file: str = ""
    # How many modules were imported.
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def table(self) -> list[str]:
        """The differences as a Markdown table (one line saying none when there are none)."""
        if not self.differences:
            return [f"Installed versions: every pin of {self.pins_file} is met."]
        lines = [
            f"Installed versions that differ from {self.pins_file} (or from a package's requirements)",
            "",
            "| package | wanted | installed |",
            "|---|---|---|",
        ]
        lines += [f"| {d.package} | {d.wanted} | {d.installed} |" for d in self.differences]
        return lines

    def failure_message(self) -> str:
        """One paragraph naming each module that failed, why, and the pip package to install."""
        pins = read_pins(Path(self.pins_file)) if self.pins_file else {}
        parts = []
        for module, error in self.failures.items():
            missing = re.search(r"No module named '([^'.]+)", error)
            package = normalize(DISTRIBUTION_OF_IMPORT.get(missing[1], missing[1])) if missing else None
            pin = pins.get(_family(package)) if package else None
            hint = f"; install {pin[0]}=={pin[1]}" if pin else (f"; install {package}" if package else "")
            parts.append(f"{module} ({error}{hint})")
        return (
            "The serving code's imports fail here: "
            + ", ".join(parts)
            + ". Install the missing packages (on a machine without an index: pip install --no-deps of a "
            "carried wheel each, as scripts/gpu_check.sh does) and run again."
        )

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "pins_file": self.pins_file,
            "failures": self.failures,
            "differences": [vars(d) for d in self.differences],
            "versions": self.versions,
        }


def preflight(
    imports: dict[str, set[str]] | None = None, pins_file: Path = PINS, predictor: bool = False
) -> Preflight:
    """Import every module of `imports` (default: serving_imports(), without the predictor-only ones
    unless predictor=True), then compare the installed versions with the pins and with the requirement
    ranges that the imported and pinned distributions declare."""
    imports = serving_imports() if imports is None else imports
    result = Preflight(pins_file=str(pins_file))
    distributions = set()
    for module, names in sorted(imports.items()):
        if not predictor and module.partition(".")[0] in PREDICTOR_ONLY:
            continue
        distributions.add(_distribution_of(module))
        result.checked += 1
        try:
            loaded = importlib.import_module(module)
            for name in sorted(names):
                _take(loaded, name)
        except Exception as error:  # an ImportError, or what a broken extension raises on import
            result.failures[module] = f"{type(error).__name__}: {error}"
    pins = read_pins(pins_file)
    for name, version in sorted(pins.values()):
        found = installed_version(name)
        if found is None:
            result.differences.append(Difference(name, f"=={version}", "not installed"))
            continue
        result.versions[found[0]] = found[1]
        if _public(found[1]) != version:
            result.differences.append(Difference(found[0], f"=={version}", found[1]))
    for distribution in sorted(distributions | {name for name, _ in pins.values()}):
        found = installed_version(distribution)
        if found is None:
            continue
        result.versions[found[0]] = found[1]
        result.differences += _unmet_requirements(found[0], result.versions)
    return result


def _take(module, name: str) -> None:
    """What `from module import name` does: the attribute (a lazy module such as diffusers or transformers
    imports it now), else the submodule of that name (`from PIL import Image`)."""
    try:
        getattr(module, name)
    except AttributeError:
        importlib.import_module(f"{module.__name__}.{name}")


def _public(version: str) -> str:
    """2.13.0+cpu -> 2.13.0: a local build tag does not change the release a pin names."""
    return version.partition("+")[0]


def _unmet_requirements(distribution: str, versions: dict[str, str]) -> list[Difference]:
    """The declared requirements of `distribution` (its extras left out) that the installed versions do
    not meet; records the versions it looks up. Empty without `packaging` to read the ranges."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return []
    rows = []
    for line in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        found = installed_version(requirement.name)
        wanted = f"{requirement.name}{requirement.specifier} ({distribution})"
        if found is None:
            rows.append(Difference(requirement.name, wanted, "not installed"))
            continue
        versions[found[0]] = found[1]
        if requirement.specifier and not requirement.specifier.contains(found[1], prereleases=True):
            rows.append(Difference(found[0], wanted, found[1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pins", type=Path, default=PINS, help="the requirements file with the pins")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    parser.add_argument("--predictor", action="store_true", help="include predict.py's Cog import")
    args = parser.parse_args(argv)
    result = preflight(pins_file=args.pins, predictor=args.predictor)
    print("\n".join(result.table()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    if not result.ok:
        print(result.failure_message(), file=sys.stderr)
        return 1
    print(f"Preflight passed: the serving code's {result.checked} third-party imports import here.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
