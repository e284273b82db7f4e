"""Fetching the files of a weights manifest from the Hugging Face Hub into a weights folder.

Owns what scripts/download_weights.py does: skip the files already present and verified, fetch the others
one by one at their pinned revision into a temporary folder inside the weights folder, verify size and
sha256 there, and only then rename them into place, so that no partial or unverified file ever sits at a
path the pipeline reads. The folder's manifest.json is written last, when every file is in place: it is
what check_weights() looks for first.

Only plain files are fetched (safetensors, ONNX, and three torch pickles, the FaceID adapter and PuLID's
EVA-CLIP and face-parsing checkpoints, which the server opens with weights_only=True); no repository code
is ever downloaded or run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

from model.errors import WeightsError
from model.weights.checks import Problem, describe, download_command, verify_file
from model.weights.manifest import (
    DOWNLOAD_DIR_PREFIX,
    MANIFEST_NAME,
    Manifest,
    ManifestFile,
    load_manifest,
    production_manifest,
    remove_stale_downloads,
)
from model.weights.stamp import Stamp, sha256_file

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")

Say = Callable[[str], None]


class DownloadError(RuntimeError):
    """A fetched file is not the one the manifest describes."""


def _say(line: str) -> None:
    print(line, flush=True)


def _human(size: int | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file: what the Hub reports (as etag) for files not stored in LFS."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as stream:
        while chunk := stream.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def hub_digest(entry: ManifestFile, token: str | None) -> tuple[str, str] | None:
    """("sha256" | "git-sha1", hex) as the Hub states it for this file, or None if it states neither.

    The Hub's etag of an LFS file is the file's sha256, that of a small git file its blob sha1.
    """
    url = hf_hub_url(entry.repo, entry.file, revision=entry.revision)
    etag = (get_hf_file_metadata(url, token=token).etag or "").removeprefix("W/").strip('"').lower()
    if _SHA256.match(etag):
        return "sha256", etag
    if _GIT_SHA1.match(etag):
        return "git-sha1", etag
    return None


def _check_unpinned(entry: ManifestFile, got: Path, sha256: str, token: str | None, say: Say) -> None:
    """Verify a file whose manifest entry has no sha256 against the digest the Hub states."""
    stated = hub_digest(entry, token)
    if stated is None:
        say(f"    WARNING: the Hub states no digest for {entry.file}; it is checked by size only.")
    elif stated[0] == "sha256" and stated[1] != sha256:
        raise DownloadError(f"sha256 is {sha256}, but the Hub states {stated[1]}")
    elif stated[0] == "git-sha1" and stated[1] != (blob := git_blob_sha1(got)):
        raise DownloadError(f"git blob sha1 is {blob}, but the Hub states {stated[1]}")
    else:
        say(f"    matches the Hub's {stated[0]} {stated[1]}")
    # A maintainer pins these two values in model/weights/weights_manifest.json.
    say(f'    not pinned in the manifest: "size": {got.stat().st_size}, "sha256": "{sha256}"')


def fetch(root: Path, entry: ManifestFile, token: str | None, say: Say = _say) -> str:
    """Download one file, verify it, move it to root/entry.path; return its sha256.

    Everything is written inside a temporary folder of the weights folder, removed whatever happens
    (error, Ctrl-C), so a failed or interrupted download leaves nothing behind.
    """
    work = Path(tempfile.mkdtemp(prefix=DOWNLOAD_DIR_PREFIX, dir=root))
    try:
        got = Path(
            hf_hub_download(
                repo_id=entry.repo, filename=entry.file, revision=entry.revision, local_dir=work, token=token
            )
        )
        size = got.stat().st_size
        if entry.size is not None and size != entry.size:
            raise DownloadError(f"downloaded {size} bytes, expected {entry.size}")
        sha256 = sha256_file(got)
        if entry.sha256 is None:
            _check_unpinned(entry, got, sha256, token, say)
        elif sha256 != entry.sha256:
            raise DownloadError(f"sha256 is {sha256}, expected {entry.sha256}")
        target = root / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, target)
        return sha256
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _warn_if_short_of_space(root: Path, files: list[ManifestFile], say: Say) -> None:
    needed = sum(f.size or 0 for f in files)
    free = shutil.disk_usage(root).free
    if needed > free:
        say(f"WARNING: {_human(needed)} to download but only {_human(free)} free in {root}.")


def _folder_manifest_problem(root: Path, manifest: Manifest) -> Problem | None:
    path = root / MANIFEST_NAME
    if not path.is_file():
        return Problem(MANIFEST_NAME, "missing", "missing (written once every file is in place)")
    try:
        same = load_manifest(path) == manifest
    except WeightsError as error:
        return Problem(MANIFEST_NAME, "corrupt", str(error))
    return (
        None if same else Problem(MANIFEST_NAME, "corrupt", "lists other files than this version's manifest")
    )


def _write_folder_manifest(root: Path, manifest: Manifest) -> None:
    tmp = root / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST_NAME)


def run(
    root: Path,
    manifest: Manifest | None = None,
    *,
    check_only: bool = False,
    with_evaluation: bool = False,
    token: str | None = None,
    say: Say = _say,
) -> int:
    """Bring `root` to hold every file of `manifest` (default: production); return the exit code.

    With check_only nothing is fetched or changed but the stamp: the files are only verified and reported.
    Evaluation-only files (the CLIP-T model of scripts/evaluate.py) are skipped unless with_evaluation.
    """
    root = Path(root)
    manifest = manifest or production_manifest()
    command = download_command(root) + (" --with-evaluation" if with_evaluation else "")
    wanted = manifest.files if with_evaluation else manifest.serving_files
    if skipped := len(manifest.files) - len(wanted):
        say(f"Skipping {skipped} evaluation-only file(s); add --with-evaluation to fetch them.")
    if not check_only:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_downloads(root, say)
    stamp = Stamp(root)
    total = len(wanted)
    todo: list[tuple[int, ManifestFile, Problem]] = []
    problems: list[Problem] = []
    for index, entry in enumerate(wanted, 1):
        problem = (
            verify_file(root, entry, stamp) if root.is_dir() else Problem(entry.path, "missing", "missing")
        )
        if problem is None:
            say(f"[{index}/{total}] {entry.path}: present and verified")
        elif check_only:
            say(f"[{index}/{total}] {entry.path}: {problem.detail}")
            problems.append(problem)
        else:
            todo.append((index, entry, problem))
    if todo:
        _warn_if_short_of_space(root, [entry for _, entry, _ in todo], say)
    for index, entry, problem in todo:
        if problem.kind != "missing":
            say(f"[{index}/{total}] {entry.path}: {problem.detail}; deleting it and fetching it again")
            (root / entry.path).unlink(missing_ok=True)
        revision = entry.revision or "main (not pinned to a commit)"
        source = f"{entry.repo}/{entry.file} at {revision}"
        say(f"[{index}/{total}] {entry.path}: downloading {source} ({_human(entry.size)})")
        try:
            sha256 = fetch(root, entry, token, say)
        except Exception as error:  # one file's failure must not stop the others: all are reported at the end
            problems.append(
                Problem(entry.path, "failed", f"download failed ({type(error).__name__}: {error})")
            )
            say(f"    FAILED: {type(error).__name__}: {error}")
            continue
        # Recorded at once, so an interrupted run does not hash the files it already fetched again.
        stamp.record(entry.path, (root / entry.path).stat(), sha256)
        stamp.save()
        say("    verified and in place")
    if root.is_dir():
        stamp.keep_only(entry.path for entry in manifest.files)
        stamp.save()
    if check_only:
        if (problem := _folder_manifest_problem(root, manifest)) is not None:
            problems.append(problem)
    elif not problems:
        _write_folder_manifest(root, manifest)
    return _report(root, manifest, len(wanted), problems, command, say)


def _report(
    root: Path, manifest: Manifest, wanted: int, problems: list[Problem], command: str, say: Say
) -> int:
    if not problems:
        say(f"All {wanted} files of the {manifest.profile} weights are verified in {root}.")
        return 0
    by_path = {entry.path: entry for entry in manifest.files}
    say(f"{len(problems)} problem(s) with the weights in {root}:")
    for problem in problems:
        say(f"  - {describe(problem, command)}")
        entry = by_path.get(problem.path)
        if entry is not None and entry.url is not None:
            say(f"    (or by hand: {entry.url} -> {root / entry.path})")
    if any(p.kind == "failed" for p in problems):
        say("A gated or private repository needs HF_TOKEN set to a Hugging Face token that can read it.")
    return 1
