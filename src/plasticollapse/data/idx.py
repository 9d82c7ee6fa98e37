"""The IDX format of MNIST and Fashion-MNIST: a validating reader, gzipped or raw.

An IDX file is a magic number ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes,
then the data, big-endian, row-major (LeCun's description on the MNIST page). MNIST and
Fashion-MNIST ship as four such files, gzipped: training and test images (N, 28, 28) and
labels (N,). Every check here names the file it fails on, so a truncated download never
loads silently.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from plasticollapse.data.checksums import CorruptDatasetError, check_md5, md5_of_bytes

# The four IDX files of MNIST and Fashion-MNIST, uncompressed names, as (images, labels).
IDX_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_FILES = tuple(name for pair in IDX_SPLITS.values() for name in pair)

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_maybe_gzipped(path: Path) -> bytes:
    """The file's bytes, gunzipped if it is gzip (by its magic bytes, whatever its name)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise CorruptDatasetError(
            f"{path}: gzip stream is truncated or damaged ({error}). Delete it and run again "
            "with download=True (`--download true`)."
        ) from error


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """Decode IDX bytes: magic ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, data."""

    def corrupt(why: str) -> CorruptDatasetError:
        return CorruptDatasetError(
            f"{path}: not a valid IDX file ({why}). If it was downloaded, delete it and run "
            "again with download=True (`--download true`)."
        )

    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise corrupt(f"bad magic number {raw[:4].hex() or 'empty file'}")
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        raise corrupt(f"unknown data type code 0x{type_code:02x}")
    if ndim == 0:
        raise corrupt("zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt(f"header needs {header} bytes, file has {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise corrupt(
            f"header promises shape {shape} = {expected} bytes of data, "
            f"found {len(raw) - header} (truncated or padded)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str], md5: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array.

    The header is validated (magic number, type code, dimensions) and the payload must be
    exactly ``prod(dims) * itemsize`` bytes. ``md5``, if given, is checked against the
    *uncompressed* bytes, so it holds whatever the compression.

    Raises:
        CorruptDatasetError: truncated, malformed or mismatched file; the message names it.
    """
    path = Path(path)
    raw = _read_maybe_gzipped(path)
    check_md5(path, md5_of_bytes(raw), md5)
    return _parse_idx(raw, path)


def find_idx_folder(folders: Iterable[Path]) -> dict[str, Path] | None:
    """The first folder holding all four IDX files (``name`` or ``name.gz``): name -> path."""
    for folder in folders:
        found = {}
        for name in IDX_FILES:
            candidates = [folder / name, folder / f"{name}.gz"]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                break
            found[name] = path
        else:
            return found
    return None


def read_idx_split(
    paths: Mapping[str, Path], split: str, md5s: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` of one split, cross-checked.

    ``paths`` maps each name of :data:`IDX_FILES` to its file (see :func:`find_idx_folder`);
    ``md5s`` gives the md5 of a name's uncompressed content, where one is known.
    """
    images_name, labels_name = IDX_SPLITS[split]
    images = read_idx(paths[images_name], md5s.get(images_name))
    labels = read_idx(paths[labels_name], md5s.get(labels_name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise CorruptDatasetError(
            f"{paths[images_name]} and {paths[labels_name]}: expected images (N, H, W) and "
            f"labels (N,), got {images.shape} and {labels.shape}."
        )
    return images, labels
