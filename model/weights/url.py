"""Weights fetched at setup from a URL, the way Replicate models fetch theirs with pget.

Owns the optional path where the image carries no weights and nothing is mounted: with WEIGHTS_URL set
(read with WEIGHTS_SHA256 in model/options.py), setup() streams a tarball of a weights folder (the layout of
model/weights/layout.py, manifest.json at its top level), hashes it while it streams, extracts it on the fly into a temporary folder inside the weights
folder, and only when the whole stream matches WEIGHTS_SHA256 moves its entries into place, manifest.json
last (check_weights looks for it first, so an interrupted fetch is never taken for a complete folder).
Nothing is fetched when the folder already passes check_weights. The usual check then runs as always.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from model.errors import WeightsError
from model.options import WEIGHTS_SHA256_ENV, WEIGHTS_URL_ENV
from model.weights.checks import check_weights
from model.weights.layout import WeightsLayout
from model.weights.manifest import DOWNLOAD_DIR_PREFIX, MANIFEST_NAME, remove_stale_downloads

log = logging.getLogger(__name__)

_CHUNK = 8 * 1024 * 1024
# Per socket operation, not for the whole download (15 GB takes minutes on any link).
_SOCKET_TIMEOUT = 60


def _public(url: str) -> str:
    """The URL without its query and credentials: signed URLs carry secrets there, logs must not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _HashingReader:
    """A file-like view of a response that hashes every byte tarfile reads, and counts them."""

    def __init__(self, stream):
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        # tar ends with zero blocks (and compressors with trailers) that tarfile never asks for.
        while self.read(_CHUNK):
            pass


def _member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    # tarfile's "data" filter refuses absolute paths, "..", links leaving the folder and device files, and
    # drops set-uid bits. On top of it: a folder's hidden bookkeeping (the verification stamp, a download in
    # progress) is not weights and must not come from someone else's machine.
    member = tarfile.data_filter(member, dest)
    parts = [p for p in Path(member.name).parts if p != "."]
    if parts and parts[0].startswith("."):
        return None
    return member


def _needs_fetch(layout: WeightsLayout) -> str | None:
    """Why the folder must be fetched (missing or incomplete), or None when it is complete."""
    if not layout.root.exists():
        return f"{layout.root} does not exist"
    try:
        check_weights(layout)
    except WeightsError as error:
        return str(error).splitlines()[0]
    return None


def _extract(url: str, work: Path) -> tuple[str, int]:
    """Stream the tarball into `work`; return its sha256 and size."""
    request = urllib.request.Request(url, headers={"User-Agent": "open-character-setup"})
    try:
        with urllib.request.urlopen(request, timeout=_SOCKET_TIMEOUT) as response:
            reader = _HashingReader(response)
            # "r|*": a stream (no seeking), any of tar's compressions, detected from the first bytes.
            with tarfile.open(fileobj=reader, mode="r|*") as archive:
                archive.extractall(work, filter=_member_filter)
            reader.drain()
    except (urllib.error.URLError, OSError) as error:
        raise WeightsError(
            f"Could not download the weights from {WEIGHTS_URL_ENV}={_public(url)} ({error}): check the URL "
            "and that this machine can reach it."
        ) from error
    except tarfile.TarError as error:
        raise WeightsError(
            f"{WEIGHTS_URL_ENV}={_public(url)} is not a readable tar archive ({error}): make it with "
            "`tar -C weights -cf weights.tar .`."
        ) from error
    return reader.digest.hexdigest(), reader.size


def _move_into_place(work: Path, root: Path) -> None:
    # The old manifest goes first and the new one last: at every instant in between the folder reads as
    # incomplete, never as complete with a mix of old and new files.
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    for entry in sorted(work.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
        target = root / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def fetch_weights_if_configured(weights_dir: str | Path, url: str | None, expected: str | None) -> None:
    """With a URL (WEIGHTS_URL) and the folder missing or incomplete, fetch and install the tarball there.

    expected: the tarball's sha256 (WEIGHTS_SHA256), 64 lower-case hex digits, checked by ServiceOptions;
    required with a URL. Raises WeightsError when the download, the archive or its digest is not right.
    """
    if not url:
        return
    if expected is None:
        raise ValueError("a weights URL needs its sha256 (ServiceOptions checks WEIGHTS_SHA256)")
    layout = WeightsLayout(Path(weights_dir))
    reason = _needs_fetch(layout)
    if reason is None:
        log.info("Weights in %s are complete; %s is not fetched", layout.root, WEIGHTS_URL_ENV)
        return
    log.info("Fetching the weights from %s (%s)", _public(url), reason)
    root = layout.root
    # Inside the folder, not beside it: /src/weights may be a mount point, which cannot be renamed, and a
    # same-disk move is a rename. A run killed hard leaves its temporary folder: the next one removes it.
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_downloads(root, log.info)
    work = Path(tempfile.mkdtemp(prefix=DOWNLOAD_DIR_PREFIX, dir=root))
    started = time.perf_counter()
    try:
        actual, size = _extract(url, work)
        if actual != expected:
            raise WeightsError(
                f"The weights tarball from {_public(url)} has sha256 {actual}, but {WEIGHTS_SHA256_ENV} is "
                f"{expected}: not the file expected (or a wrong digest); nothing was installed."
            )
        if not (work / MANIFEST_NAME).is_file():
            raise WeightsError(
                f"The weights tarball from {_public(url)} has no {MANIFEST_NAME} at its top level: make it "
                "from inside the weights folder with `tar -C weights -cf weights.tar .`."
            )
        _move_into_place(work, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    log.info(
        "Fetched and verified %.1f MB of weights in %.1f s (%.1f MB/s)",
        size / 1e6,
        seconds,
        size / 1e6 / max(seconds, 1e-9),
    )
