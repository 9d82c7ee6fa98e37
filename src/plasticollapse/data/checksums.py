"""Integrity of dataset files: their md5, and the error a bad file raises.

Shared by the readers (:mod:`~plasticollapse.data.idx`, :mod:`~plasticollapse.data.cifar`),
which check what they load, and the downloader (:mod:`~plasticollapse.data.download`), which
checks what it fetches. Which md5 a file must have is the registry's business
(:data:`plasticollapse.data.MD5`); these helpers only compare.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Bytes read or written at a time when hashing or downloading a file.
CHUNK = 1 << 20


class CorruptDatasetError(ValueError):
    """A dataset file is truncated, malformed or fails its checksum; the message names it."""


def md5_of_bytes(blob: bytes) -> str:
    """Hex md5 of ``blob`` (a checksum against corruption, not a security measure)."""
    return hashlib.md5(blob, usedforsecurity=False).hexdigest()


def md5_of_file(path: Path) -> str:
    """Hex md5 of the file at ``path``, read in :data:`CHUNK` pieces (archives are large)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, actual: str, expected: str | None) -> None:
    """Raise :class:`CorruptDatasetError` naming ``path`` unless ``actual`` is ``expected``;
    ``expected=None`` (no md5 listed for the file) accepts anything."""
    if expected is not None and actual != expected:
        raise CorruptDatasetError(
            f"{path}: md5 {actual} does not match the expected {expected}; the file is "
            "corrupt or incomplete. Delete it and run again with download=True "
            "(`--download true`) to fetch a fresh copy."
        )
