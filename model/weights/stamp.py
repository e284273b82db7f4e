"""The verification stamp of a weights folder and the file hashing it caches.

Owns `sha256_file` (chunked, for multi-GB files), `STAMP_NAME` and `Stamp`, which records the size, mtime
and sha256 of each file already hashed so that a start does not re-read ~11 GB. It knows nothing of the
manifest: model/weights/manifest.py and model/weights/checks.py decide what to hash and when.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# Path -> size, mtime_ns, sha256 of every file whose digest was checked; see Stamp.
STAMP_NAME = ".verified.json"

_HASH_CHUNK = 8 * 1024 * 1024


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
