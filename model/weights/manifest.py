"""The weights manifest and the check that a weights folder holds exactly the files it lists.

Owns: the manifest format (`Manifest`, `ManifestFile`, `load_manifest`), the production manifest shipped in
the package (`weights_manifest.json`), `write_manifest` for folders built locally (the tiny profile), the
verification stamp that spares re-hashing ~11 GB on every start, and `check_weights`, which `setup()` calls
before loading anything. Nothing here downloads: scripts/download_weights.py (model/weights/download.py) does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path, PurePosixPath

from model.errors import WeightsError
from model.weights.layout import WeightsLayout

log = logging.getLogger(__name__)

PRODUCTION = "production"
TINY = "tiny"
# The production layout with random weights of the real architecture (or of the tiny one), written by the
# benchmark (devtools/profiles/random.py) to time the serving code without the production files.
RANDOM = "random"
PROFILES = (PRODUCTION, TINY, RANDOM)
PRODUCTION_MANIFEST = Path(__file__).with_name("weights_manifest.json")
MANIFEST_NAME = "manifest.json"
# Path -> size, mtime_ns, sha256 of every file whose digest was checked; see Stamp.
STAMP_NAME = ".verified.json"
# Folders the downloader works in, inside the weights folder so that the final move is a same-disk rename.
DOWNLOAD_DIR_PREFIX = ".download-"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REVISION = re.compile(r"^[0-9a-f]{40}$")
_HASH_CHUNK = 8 * 1024 * 1024


def remove_stale_downloads(root: Path, say: Callable[[str], None]) -> None:
    """Remove the temporary folders of downloads that were killed hard (SIGKILL, power loss) and so could
    not clean up after themselves: the next run does."""
    for stale in root.glob(DOWNLOAD_DIR_PREFIX + "*"):
        say(f"Removing the partial download {stale.name} of an interrupted run.")
        shutil.rmtree(stale, ignore_errors=True)


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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (the UNet alone is 5 GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Stamp:
    """The verification stamp of a weights folder: which files were hashed, at which size and mtime.

    A file whose size and mtime_ns still equal its stamp entry is not hashed again. Writing a file changes
    its mtime, so a file replaced or edited in place is re-hashed; one edited by a tool that restores the
    old mtime would not be, which is the price of not reading ~11 GB on every start.
    """

    def __init__(self, root: Path):
        self.path = Path(root) / STAMP_NAME
        self.entries: dict[str, dict] = self._read()
        self.changed = False

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            # The stamp is a cache: when it is unreadable every file is simply hashed again.
            log.warning("Ignoring the unreadable verification stamp %s (%s); re-hashing.", self.path, error)
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}

    def digest(self, rel: str, stat: os.stat_result) -> str | None:
        """The recorded sha256 of `rel` if the file is unchanged since it was hashed, else None."""
        entry = self.entries.get(rel)
        if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            sha = entry.get("sha256")
            return sha if isinstance(sha, str) else None
        return None

    def record(self, rel: str, stat: os.stat_result, sha256: str) -> None:
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
        if self.entries.get(rel) != entry:
            self.entries[rel] = entry
            self.changed = True

    def forget(self, rel: str) -> None:
        if self.entries.pop(rel, None) is not None:
            self.changed = True

    def keep_only(self, paths: Iterable[str]) -> None:
        wanted = set(paths)
        for rel in [r for r in self.entries if r not in wanted]:
            self.forget(rel)

    def save(self) -> None:
        if not self.changed:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(
                json.dumps({"files": self.entries}, indent=1, sort_keys=True) + "\n", encoding="utf-8"
            )
            os.replace(tmp, self.path)
        except OSError as error:
            # A read-only weights mount is legitimate: the check passed, it will just hash again next time.
            log.warning(
                "Could not write the verification stamp %s (%s); files will be re-hashed next start.",
                self.path,
                error,
            )
            tmp.unlink(missing_ok=True)
            return
        self.changed = False


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
