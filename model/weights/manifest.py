"""The weights manifest: the list of files a weights folder must hold, and how it is read and written.

Owns the manifest format (`Manifest`, `ManifestFile`, `load_manifest`), the production manifest shipped in
the package (`weights_manifest.json`), `write_manifest` for folders built locally (the tiny profile), and the
names a weights folder reserves for its own bookkeeping. Checking a folder against its manifest is
model/weights/checks.py; nothing here downloads: scripts/download_weights.py (model/weights/download.py) does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path, PurePosixPath

from model.errors import WeightsError
from model.weights.stamp import STAMP_NAME, Stamp, sha256_file

PRODUCTION = "production"
TINY = "tiny"
# The production layout with random weights of the real architecture (or of the tiny one), written by the
# benchmark (devtools/profiles/random.py) to time the serving code without the production files.
RANDOM = "random"
PROFILES = (PRODUCTION, TINY, RANDOM)
PRODUCTION_MANIFEST = Path(__file__).with_name("weights_manifest.json")
MANIFEST_NAME = "manifest.json"
# Folders the downloader works in, inside the weights folder so that the final move is a same-disk rename.
DOWNLOAD_DIR_PREFIX = ".download-"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REVISION = re.compile(r"^[0-9a-f]{40}$")


def remove_stale_downloads(root: Path, say: Callable[[str], None]) -> None:
    """Remove the temporary folders of downloads that were killed hard (SIGKILL, power loss) and so could
    not clean up after themselves: the next run does."""
    for stale in root.glob(DOWNLOAD_DIR_PREFIX + "*"):
        say(f"Removing the partial download {stale.name} of an interrupted run.")
        shutil.rmtree(stale, ignore_errors=True)


@dataclass(frozen=True)
class ManifestFile:
    """One file of a weights folder; the source and licence fields are set for downloaded files only."""

    path: str
    size: int | None
    sha256: str | None
    repo: str | None = None
    revision: str | None = None
    file: str | None = None
    licence: str | None = None
    licence_url: str | None = None
    commercial_use: bool | None = None
    # True for a file only scripts/evaluate.py reads (e.g. the CLIP-T model): setup() does not require it,
    # and the downloader fetches it only when asked (--with-evaluation).
    evaluation_only: bool | None = None

    @property
    def url(self) -> str | None:
        """The file's page on the Hub, for someone fetching it by hand."""
        if self.repo is None or self.file is None:
            return None
        return f"https://huggingface.co/{self.repo}/blob/{self.revision or 'main'}/{self.file}"


@dataclass(frozen=True)
class Manifest:
    profile: str
    files: tuple[ManifestFile, ...]

    @property
    def serving_files(self) -> tuple[ManifestFile, ...]:
        """The files the server loads: what check_weights() requires."""
        return tuple(f for f in self.files if not f.evaluation_only)

    @property
    def evaluation_files(self) -> tuple[ManifestFile, ...]:
        return tuple(f for f in self.files if f.evaluation_only)

    def to_json(self) -> dict:
        # Tiny manifests leave the source fields out rather than writing a column of nulls.
        files = [
            {k: v for k, v in asdict(f).items() if v is not None or k in ("size", "sha256")}
            for f in self.files
        ]
        return {"profile": self.profile, "files": files}


def _invalid(source: Path, why: str) -> WeightsError:
    return WeightsError(f"Invalid weights manifest {source}: {why}")


def _check_path(source: Path, path: object) -> str:
    if not isinstance(path, str) or not path:
        raise _invalid(source, f"a file has no path ({path!r})")
    pure = PurePosixPath(path)
    # The paths are joined to the weights folder: none may leave it, and none may be one of its own files.
    if "\\" in path or pure.is_absolute() or ".." in pure.parts or str(pure) != path:
        raise _invalid(source, f"{path!r} is not a plain relative path inside the weights folder")
    if path in (MANIFEST_NAME, STAMP_NAME) or pure.parts[0].startswith(DOWNLOAD_DIR_PREFIX):
        raise _invalid(source, f"{path!r} is a name the weights folder reserves")
    return path


def _parse_file(source: Path, raw: object, profile: str) -> ManifestFile:
    if not isinstance(raw, dict):
        raise _invalid(source, f"a file entry is not an object: {raw!r}")
    known = set(ManifestFile.__dataclass_fields__)
    if unknown := set(raw) - known:
        raise _invalid(source, f"unknown keys {sorted(unknown)} in the entry of {raw.get('path')!r}")
    path = _check_path(source, raw.get("path"))
    size, sha256, revision = raw.get("size"), raw.get("sha256"), raw.get("revision")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise _invalid(source, f"{path}: size must be a byte count or null, not {size!r}")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.match(sha256)):
        raise _invalid(source, f"{path}: sha256 must be 64 lowercase hex digits or null, not {sha256!r}")
    if revision is not None and not (isinstance(revision, str) and _REVISION.match(revision)):
        raise _invalid(source, f"{path}: revision must be a 40-hex commit or null, not {revision!r}")
    commercial = raw.get("commercial_use")
    if commercial is not None and not isinstance(commercial, bool):
        raise _invalid(source, f"{path}: commercial_use must be true or false, not {commercial!r}")
    evaluation_only = raw.get("evaluation_only")
    if evaluation_only is not None and not isinstance(evaluation_only, bool):
        raise _invalid(source, f"{path}: evaluation_only must be true or false, not {evaluation_only!r}")
    entry = ManifestFile(
        path=path,
        size=size,
        sha256=sha256,
        repo=raw.get("repo"),
        revision=revision,
        file=raw.get("file"),
        licence=raw.get("licence"),
        licence_url=raw.get("licence_url"),
        commercial_use=commercial,
        evaluation_only=evaluation_only,
    )
    if profile == PRODUCTION:
        # A production file is downloaded, so it must say from where and under which terms.
        missing = [
            k
            for k in ("repo", "file", "licence", "licence_url", "commercial_use")
            if getattr(entry, k) is None
        ]
        if missing:
            raise _invalid(source, f"{path}: a production entry needs {', '.join(missing)}")
    return entry


def parse_manifest(data: object, source: Path) -> Manifest:
    if not isinstance(data, dict) or set(data) != {"profile", "files"}:
        raise _invalid(source, 'expected an object with exactly the keys "profile" and "files"')
    profile, files = data["profile"], data["files"]
    if profile not in PROFILES:
        raise _invalid(source, f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    if not isinstance(files, list) or not files:
        raise _invalid(source, '"files" must be a non-empty list')
    entries = tuple(_parse_file(source, raw, profile) for raw in files)
    seen: set[str] = set()
    for entry in entries:
        if entry.path in seen:
            raise _invalid(source, f"{entry.path} is listed twice")
        seen.add(entry.path)
    return Manifest(profile=profile, files=entries)


def load_manifest(path: Path) -> Manifest:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _invalid(path, f"cannot be read ({error})") from error
    return parse_manifest(data, path)


@cache
def production_manifest() -> Manifest:
    """The production file list shipped with the package (model/weights/weights_manifest.json)."""
    manifest = load_manifest(PRODUCTION_MANIFEST)
    if manifest.profile != PRODUCTION:
        raise _invalid(PRODUCTION_MANIFEST, f"profile is {manifest.profile!r}, not {PRODUCTION!r}")
    return manifest


def _listed_files(root: Path) -> list[Path]:
    # Everything in the folder but its own bookkeeping: the manifest, the stamp, hidden and temporary files.
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.relative_to(root).as_posix() != MANIFEST_NAME
    )


def write_manifest(
    root: Path,
    profile: str = TINY,
    paths: Sequence[Path] | None = None,
    evaluation_paths: Sequence[Path] = (),
) -> Manifest:
    """Write root/manifest.json listing files already written there, with their sizes and sha256.

    `paths` are absolute or relative to root; None lists every file in the folder. `evaluation_paths`, a
    subset of them, are marked evaluation_only. Used by the tiny-profile builder, so the same check_weights
    guards both profiles. The digests just computed seed the stamp.
    """
    root = Path(root)
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    files = (
        _listed_files(root) if paths is None else [p if Path(p).is_absolute() else root / p for p in paths]
    )
    stamp = Stamp(root)

    def relative(path: Path) -> str:
        return (
            Path(path if Path(path).is_absolute() else root / path)
            .resolve()
            .relative_to(root.resolve())
            .as_posix()
        )

    evaluation = {relative(p) for p in evaluation_paths}
    entries = []
    for path in files:
        rel = relative(path)
        stat = Path(path).stat()
        sha = sha256_file(Path(path))
        stamp.record(rel, stat, sha)
        entries.append(
            ManifestFile(path=rel, size=stat.st_size, sha256=sha, evaluation_only=(rel in evaluation) or None)
        )
    # Parse what is written, so a tiny folder obeys exactly the rules a production one does.
    manifest = parse_manifest(Manifest(profile=profile, files=tuple(entries)).to_json(), root / MANIFEST_NAME)
    tmp = root / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST_NAME)
    stamp.keep_only(e.path for e in manifest.files)
    stamp.save()
    return manifest
