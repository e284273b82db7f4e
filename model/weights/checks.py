"""The check of a weights folder against its manifest, run by setup() before loading anything.

Owns `check_weights` and `check_evaluation_weights`, the per-file check `verify_file` and its `Problem`
(also used by the downloader to decide what to fetch), and the error messages with the command that fixes
each profile's folder (`download_command`, `fix_command`, ...). Hashing and its cache live in
model/weights/stamp.py; the manifest format in model/weights/manifest.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.errors import WeightsError
from model.weights.layout import WeightsLayout
from model.weights.manifest import (
    MANIFEST_NAME,
    PRODUCTION,
    PRODUCTION_MANIFEST,
    RANDOM,
    TINY,
    Manifest,
    ManifestFile,
    load_manifest,
    production_manifest,
)
from model.weights.stamp import STAMP_NAME, Stamp, sha256_file

log = logging.getLogger(__name__)


def require_file(path: Path, what: str) -> Path:
    """`path` when it is a file; else WeightsError naming `what` and `path`, and the commands that write it."""
    if not Path(path).is_file():
        raise WeightsError(
            f"{what} {path} is missing: run scripts/download_weights.py "
            "(or scripts/make_tiny_weights.py for the tiny profile)"
        )
    return Path(path)


def download_command(root: Path) -> str:
    return f"python scripts/download_weights.py --weights-dir {root}"


def tiny_command(root: Path) -> str:
    return f"python scripts/make_tiny_weights.py {root}"


def random_command(root: Path) -> str:
    return f"rm -r {root} && python scripts/benchmark.py --profile random --weights-dir {root}"


def fix_command(profile: str, root: Path) -> str:
    """The command that (re)builds a folder of this profile."""
    commands = {TINY: tiny_command, RANDOM: random_command}
    return commands.get(profile, download_command)(root)


@dataclass(frozen=True)
class Problem:
    """Why one listed file is unusable: kind is "missing", "size" or "corrupt"."""

    path: str
    kind: str
    detail: str


def verify_file(root: Path, entry: ManifestFile, stamp: Stamp) -> Problem | None:
    """Check one file against its manifest entry; hash it only when the stamp cannot vouch for it."""
    target = Path(root) / entry.path
    try:
        stat = target.stat()
    except FileNotFoundError:
        stamp.forget(entry.path)
        return Problem(entry.path, "missing", "missing")
    if not target.is_file():
        return Problem(entry.path, "missing", "is not a regular file")
    if entry.size is not None and stat.st_size != entry.size:
        stamp.forget(entry.path)
        return Problem(
            entry.path, "size", f"has {stat.st_size} bytes, expected {entry.size} (truncated or wrong file)"
        )
    known = stamp.digest(entry.path, stat)
    if known is not None and (entry.sha256 is None or known == entry.sha256):
        return None
    actual = sha256_file(target)
    if entry.sha256 is not None and actual != entry.sha256:
        stamp.forget(entry.path)
        return Problem(entry.path, "corrupt", f"sha256 is {actual}, expected {entry.sha256}")
    if entry.sha256 is None:
        checked = "size" if entry.size is not None else "presence"
        log.info(
            "%s has no pinned sha256 in the manifest: checked by %s only; its sha256 is %s (recorded in %s).",
            entry.path,
            checked,
            actual,
            STAMP_NAME,
        )
    stamp.record(entry.path, stat, actual)
    return None


def describe(problem: Problem, command: str) -> str:
    """One line of an error report: the file, what is wrong, and what to run."""
    if problem.kind == "corrupt":
        return f"{problem.path}: corrupt ({problem.detail}): delete it and re-run `{command}`"
    return f"{problem.path}: {problem.detail}: run `{command}`"


def check_weights(layout: WeightsLayout) -> Manifest:
    """Prove that the folder holds every file its manifest lists, intact; return that manifest.

    Raises WeightsError naming each missing or corrupt file and the command that fixes it.
    """
    root = layout.root
    if not layout.manifest.is_file():
        raise WeightsError(
            f"The weights folder {root} has no weights ({MANIFEST_NAME} is missing). Download the production "
            f"weights with `{download_command(root)}`, or build the offline tiny profile with "
            f"`{tiny_command(root)}`."
        )
    manifest = load_manifest(layout.manifest)
    if manifest.profile == PRODUCTION and manifest != production_manifest():
        raise WeightsError(
            f"{layout.manifest} lists other files than this version's production manifest "
            f"({PRODUCTION_MANIFEST.name}): the weights were downloaded for another version. "
            f"Re-run `{download_command(root)}`."
        )
    _verify_files(root, manifest, manifest.serving_files, fix_command(manifest.profile, root))
    return manifest


def check_evaluation_weights(layout: WeightsLayout) -> Manifest:
    """Like check_weights, for the evaluation-only files (scripts/evaluate.py); setup() never needs them."""
    root = layout.root
    manifest = check_weights(layout)
    command = fix_command(manifest.profile, root)
    if manifest.profile == PRODUCTION:
        command += " --with-evaluation"
    if not manifest.evaluation_files:
        raise WeightsError(
            f"The {manifest.profile} weights in {root} list no evaluation files: re-run `{command}`"
        )
    _verify_files(root, manifest, manifest.evaluation_files, command)
    return manifest


def _verify_files(root: Path, manifest: Manifest, files: Sequence[ManifestFile], command: str) -> None:
    stamp = Stamp(root)
    problems = [p for entry in files if (p := verify_file(root, entry, stamp)) is not None]
    # The stamp covers every listed file, so checking one group never forgets the other's digests.
    stamp.keep_only(entry.path for entry in manifest.files)
    stamp.save()
    if problems:
        lines = "\n".join(f"  - {describe(p, command)}" for p in problems)
        raise WeightsError(
            f"The {manifest.profile} weights in {root} are incomplete ({len(problems)} of "
            f"{len(files)} files unusable):\n{lines}"
        )
