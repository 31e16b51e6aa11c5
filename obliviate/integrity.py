"""Cached files that results depend on are checked against the sha256 recorded when they were built.

A corrupted cached model once loaded without a word and reported "0 of 8 facts known"; a truncated one failed with a
bare SafetensorError naming no file. Here each such file has a sidecar ``<name>.sha256`` written beside it; `verify`
hashes the file once per process (a memo keyed by path, size and mtime, so a file rewritten later is hashed again)
and raises `CacheIntegrityError` naming the file and the command that rebuilds it. A file built before sidecars
existed is recorded on first use ("trust on first use"); a later corruption is then caught.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from obliviate.errors import UserError

SIDECAR_SUFFIX = ".sha256"

# One hash per file per process: models are loaded many times per run, and a full hash of SmolLM2 takes seconds.
_verified: dict[tuple[str, int, int], str] = {}


class CacheIntegrityError(UserError, RuntimeError):
    """A cached file does not match its recorded sha256, or cannot be read; the message names the rebuild command."""


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def seal(path: Path) -> str:
    """Record `path`'s sha256 in its sidecar (call right after writing the file); returns the digest."""
    from obliviate.results import atomic_write_json

    path = Path(path)
    digest = file_sha256(path)
    atomic_write_json(sidecar_of(path), {"sha256": digest, "size": path.stat().st_size})
    _verified[_stamp(path)] = digest
    return digest


def verify(path: Path, *, rebuild: str) -> None:
    """Raise CacheIntegrityError unless `path` matches its recorded sha256; `rebuild` says how to remake it."""
    path = Path(path)
    if not path.is_file():
        raise CacheIntegrityError(f"cached file {path} is missing; rebuild it with {rebuild}.")
    if _stamp(path) in _verified:
        return
    sidecar = sidecar_of(path)
    if not sidecar.is_file():
        seal(path)
        return
    try:
        expected = json.loads(sidecar.read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        raise CacheIntegrityError(f"the checksum file {sidecar} is unreadable; delete it and {path}, then rebuild "
                                  f"with {rebuild}.") from None
    actual = file_sha256(path)
    if actual != expected:
        raise CacheIntegrityError(f"cached file {path} is corrupted: its sha256 {actual[:12]}… differs from the "
                                  f"{expected[:12]}… recorded when it was built; rebuild it with {rebuild}.")
    _verified[_stamp(path)] = actual

