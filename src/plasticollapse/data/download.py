"""Checksummed, atomic downloads from a list of mirrors.

:func:`download_file` fetches one file: each mirror in turn is streamed to a temporary file
next to the destination, its md5 compared with the expected one, and only a verified file
is renamed into place, so an interrupted or corrupt download never leaves a file that looks
complete. Which files a dataset needs and where they are mirrored is the registry's
business (:func:`plasticollapse.data.download_dataset`, :data:`plasticollapse.data.MIRRORS`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from tqdm import tqdm

from plasticollapse.data.checksums import CHUNK, CorruptDatasetError


class DownloadError(OSError):
    """No mirror delivered a file with the right checksum; the message lists each attempt."""


def _open_url(url: str) -> IO[bytes]:
    # An explicit agent string: some mirrors refuse Python's default one.
    request = urllib.request.Request(url, headers={"User-Agent": "plasticollapse (urllib)"})
    return urllib.request.urlopen(request, timeout=60)


def _fetch_to(url: str, target: IO[bytes], opener: Callable[[str], IO[bytes]]) -> str:
    """Stream ``url`` into ``target`` with a progress bar; return the md5 of what was read."""
    digest = hashlib.md5(usedforsecurity=False)
    with opener(url) as response:
        length = getattr(response, "headers", {}).get("Content-Length")
        total = int(length) if length and str(length).isdigit() else None
        desc = url.rsplit("/", 1)[-1]
        # disable=None: quiet when stderr is not a terminal (logs, CI, tests).
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None) as bar:
            while chunk := response.read(CHUNK):
                target.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def download_file(
    urls: Sequence[str],
    dest: str | os.PathLike[str],
    md5: str | None,
    opener: Callable[[str], IO[bytes]] | None = None,
) -> Path:
    """Download the first of ``urls`` that works to ``dest``, atomically.

    Each URL is streamed to a temporary file in ``dest``'s folder and its md5 compared with
    ``md5`` (skipped if ``None``); only a verified file is renamed onto ``dest``
    (``os.replace``, atomic on one file system), so an interrupted or corrupt download never
    leaves a file that looks complete. A URL that fails or mismatches moves on to the next.

    Args:
        urls: mirrors of the same file, tried in order.
        dest: final path of the file; its folder is created.
        md5: expected hex md5 of the file as served.
        opener: ``url -> binary file-like`` context manager; default ``urllib`` with a
            timeout. Tests inject their own or use ``file://`` URLs.

    Raises:
        DownloadError: every URL failed; the message gives each one's reason.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or _open_url
    failures = []
    for url in urls:
        # Not mkstemp: its 0600 mode would stick to the dataset; "xb" honours the umask.
        tmp = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
        try:
            with open(tmp, "xb") as target:
                actual = _fetch_to(url, target, opener)
            if md5 is not None and actual != md5:
                raise CorruptDatasetError(f"md5 {actual} instead of {md5}")
            os.replace(tmp, dest)
            return dest
        # URLError is an OSError; a connection cut mid-body is an http.client.IncompleteRead.
        except (OSError, ValueError, http.client.HTTPException) as error:
            failures.append(f"  {url}: {error}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(
        f"could not download {dest.name}; tried:\n" + "\n".join(failures) + "\n"
        f"Fetch it by hand (md5 {md5}) and put it at {dest}."
    )
