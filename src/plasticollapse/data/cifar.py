"""CIFAR-10 in its python version: the tarball or its extracted pickled batches.

``cifar-10-python.tar.gz`` (Krizhevsky's page) holds ``cifar-10-batches-py/`` with five
training batches ``data_batch_1..5`` and ``test_batch``, each a pickled dict whose
``b"data"`` is (10000, 3072) uint8, rows channel-major (1024 red, 1024 green, 1024 blue
values, each plane row-major), and ``b"labels"`` a list of 10000 ints. The extracted batches
are preferred when both are there (no decompression).
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from plasticollapse.data.checksums import (
    CorruptDatasetError,
    check_md5,
    md5_of_bytes,
    md5_of_file,
)

#: Per-channel statistics of the CIFAR-10 training set, as the paper's protocol uses them.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

#: md5 of the archive as its source publishes it and of each extracted batch (values as in
#: torchvision); :data:`plasticollapse.data.MD5` lists this same table under "cifar10".
CIFAR10_MD5 = {
    CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def _parse_cifar_batch(blob: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images ``(n, 3, 32, 32)`` uint8, labels ``(n,)``."""
    try:
        # The batches are pickles by design of the format; we only open files whose md5 we
        # know or that the user placed there, as torchvision does.
        batch = pickle.loads(blob, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise CorruptDatasetError(
            f"{source}: not a readable CIFAR-10 batch ({type(error).__name__}: {error}). "
            "Delete it and run again with download=True (`--download true`)."
        ) from error
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise CorruptDatasetError(
            f"{source}: expected data (n, 3072) and n labels, got {data.shape} and {labels.shape}."
        )
    # Rows are channel-major (1024 red, 1024 green, 1024 blue), i.e. already (3, 32, 32).
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_batches_from_tar(path: Path, names: Sequence[str]) -> dict[str, bytes]:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in names if n not in members]
            if missing:
                raise CorruptDatasetError(f"{path}: archive lacks {', '.join(missing)}.")
            return {n: tar.extractfile(members[n]).read() for n in names}  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise CorruptDatasetError(
            f"{path}: archive is truncated or damaged ({error}). Delete it and run again "
            "with download=True (`--download true`)."
        ) from error


def read_cifar10(
    path: str | os.PathLike[str], verify: bool = True, md5s: Mapping[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read CIFAR-10 from ``cifar-10-python.tar.gz`` or an extracted ``cifar-10-batches-py``.

    Returns ``(train_x, train_y, test_x, test_y)``: images uint8 ``(N, 3, 32, 32)`` and
    labels int64, from ``data_batch_1..5`` (train) and ``test_batch`` (test). With
    ``verify``, files are checked against ``md5s`` (by file name; default
    :data:`CIFAR10_MD5`) where it lists them.

    Raises:
        CorruptDatasetError: truncated archive, unreadable batch or checksum mismatch.
    """
    path = Path(path)
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    expected = (CIFAR10_MD5 if md5s is None else md5s) if verify else {}
    if path.is_dir():
        blobs = {n: (path / n).read_bytes() for n in names}
        for n, blob in blobs.items():
            check_md5(path / n, md5_of_bytes(blob), expected.get(n))
    else:
        if path.name in expected:
            check_md5(path, md5_of_file(path), expected[path.name])
        blobs = _read_cifar_batches_from_tar(path, names)
    train = [_parse_cifar_batch(blobs[n], f"{path}:{n}") for n in CIFAR10_TRAIN_BATCHES]
    test_x, test_y = _parse_cifar_batch(blobs[CIFAR10_TEST_BATCH], f"{path}:{CIFAR10_TEST_BATCH}")
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return train_x, train_y, test_x, test_y


def find_cifar10(folders: Iterable[Path]) -> Path | None:
    """The extracted batches (preferred: no decompression), else the tarball.

    In each folder: the batches themselves, the batches in ``cifar-10-batches-py/``, or
    ``cifar-10-python.tar.gz``.
    """
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    for folder in folders:
        for extracted in (folder, folder / CIFAR10_FOLDER):
            if all((extracted / n).is_file() for n in names):
                return extracted
        if (folder / CIFAR10_ARCHIVE).is_file():
            return folder / CIFAR10_ARCHIVE
    return None
