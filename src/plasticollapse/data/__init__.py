"""Real datasets: MNIST, Fashion-MNIST, CIFAR-10 and scikit-learn's digits, as tensors.

Every dataset loads whole into memory as one :class:`Dataset`: images are ``float32`` in
``[0, 1]`` with shape ``(N, C, H, W)``, labels are ``int64``. The experiments slice these
tensors directly (no DataLoader), and normalisation is theirs to apply: CIFAR-10 comes
unnormalised, with :data:`CIFAR10_MEAN` and :data:`CIFAR10_STD` beside it.

Where files are looked for, first hit wins (see :func:`dataset_folders`):

- ``root/<name>/`` where ``root`` is the argument, else ``$PLASTICOLLAPSE_DATA``, else
  ``~/.cache/plasticollapse``; torchvision's ``root/MNIST/raw`` style folders also count;
- system folders, e.g. ``/usr/share/datasets/fashion-mnist`` (Debian's
  ``dataset-fashion-mnist`` package).

Integrity: the md5 of every canonical file is listed in :data:`MD5`, keyed by file name.
A downloaded file is checked against the md5 its source publishes before it is moved into
place. On loading, an IDX file is checked by the md5 of its *uncompressed* content, so a
re-compressed copy (Debian's) or a gunzipped one verifies too; a CIFAR-10 tarball or
extracted batch is checked by its own md5. Files with no listed md5 are still validated
by their headers and sizes, so a truncated file never loads silently.

Example::

    data = load_dataset("mnist", download=True)
    x, y = data.flat("train")          # (60000, 784) float32, (60000,) int64
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import tarfile
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm import tqdm

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASET_NAMES",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "CorruptDatasetError",
    "Dataset",
    "DatasetNotFoundError",
    "DownloadError",
    "dataset_folders",
    "default_root",
    "digits_split",
    "download_dataset",
    "download_file",
    "flatten",
    "load_dataset",
    "read_cifar10",
    "read_idx",
]

#: Per-channel statistics of the CIFAR-10 training set, as the paper's protocol uses them.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

DATASET_NAMES = ("mnist", "fashion-mnist", "cifar10", "digits")

#: Environment variable naming the data root; unset or empty means ~/.cache/plasticollapse.
DATA_ENV = "PLASTICOLLAPSE_DATA"

# The four IDX files of MNIST and Fashion-MNIST, uncompressed names, as (images, labels).
IDX_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_FILES = tuple(name for pair in IDX_SPLITS.values() for name in pair)

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

#: md5 of each canonical file, by dataset and file name. ``*.gz`` / ``*.tar.gz`` entries are
#: the archives as their sources publish them (checked on download); an IDX name without
#: ``.gz`` is the md5 of the uncompressed content (checked on loading, whatever the
#: compression); CIFAR-10 batch names are the extracted pickles. Values as in torchvision.
MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "cifar10": {
        CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a",
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
}

#: Base URLs tried in order; a file's URL is base + file name.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}

#: Files a download fetches, per dataset.
DOWNLOAD_FILES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(f"{name}.gz" for name in IDX_FILES),
    "fashion-mnist": tuple(f"{name}.gz" for name in IDX_FILES),
    "cifar10": (CIFAR10_ARCHIVE,),
}

#: Folders outside the data root where a system package may have installed a dataset.
SYSTEM_FOLDERS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

# torchvision's folder names, so an existing torchvision download under `root` is reused.
TORCHVISION_FOLDERS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "digits": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}

#: The digits split is fixed once for everyone: its seed is not the experiment's seed, so
#: every run, whatever its seed, trains and tests on the same images.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are in none of the folders searched; the message says how to get them."""


class CorruptDatasetError(ValueError):
    """A dataset file is truncated, malformed or fails its checksum; the message names it."""


class DownloadError(OSError):
    """No mirror delivered a file with the right checksum; the message lists each attempt."""


@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset held whole in memory.

    Attributes:
        name: one of :data:`DATASET_NAMES`.
        train_x, test_x: ``float32`` images in ``[0, 1]``, shape ``(N, C, H, W)``:
            ``(N, 1, 28, 28)`` for MNIST and Fashion-MNIST, ``(N, 3, 32, 32)`` for CIFAR-10
            (unnormalised), ``(N, 1, 8, 8)`` for digits.
        train_y, test_y: ``int64`` class indices in ``[0, num_classes)``, shape ``(N,)``.
        num_classes: number of classes.
        classes: class names, indexed by label.
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    classes: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def input_dim(self) -> int:
        """``C * H * W``: the width of a flattened image, e.g. 784 for MNIST."""
        return int(np.prod(self.image_shape))

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"`` or ``"test"``."""
        if split == "train":
            return self.train_x, self.train_y
        if split == "test":
            return self.test_x, self.test_y
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def flat(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of a split with images flattened to ``(N, C*H*W)`` (a view, no copy)."""
        x, y = self.split(split)
        return flatten(x), y

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, num_classes={self.num_classes})"
        )


def flatten(x: torch.Tensor) -> torch.Tensor:
    """Images ``(N, C, H, W)`` -> ``(N, C*H*W)``, channel-major as PyTorch lays them out."""
    return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------------------
# Where datasets live
# --------------------------------------------------------------------------------------


def default_root() -> Path:
    """``$PLASTICOLLAPSE_DATA`` if set and non-empty, else ``~/.cache/plasticollapse``."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "plasticollapse"


def _resolve_root(root: str | os.PathLike[str] | None) -> Path:
    return default_root() if root is None else Path(root).expanduser()


def dataset_folders(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for ``name``'s files, in order; the first is where downloads go."""
    base = _resolve_root(root)
    folders = [base / name]
    if name in TORCHVISION_FOLDERS:
        folders.append(base / TORCHVISION_FOLDERS[name])
    folders.extend(SYSTEM_FOLDERS.get(name, ()))
    return folders


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def _not_found(name: str, folders: Sequence[Path], expected: str) -> DatasetNotFoundError:
    """The error for a missing dataset: where we looked, what we wanted, how to get it."""
    searched = "\n".join(f"  {folder}" for folder in folders)
    urls = "\n".join(
        f"  {MIRRORS[name][0]}{file_name}" for file_name in DOWNLOAD_FILES.get(name, ())
    )
    return DatasetNotFoundError(
        f"{name} not found. Folders searched:\n{searched}\n"
        f"Files expected in one folder: {expected}.\n"
        f"To get it, call load_dataset({name!r}, download=True) or pass `--download true` on "
        f"the command line; or fetch by hand\n{urls}\ninto {folders[0]}\n"
        f"(set ${DATA_ENV} or the data root option to use another folder)."
    )


# --------------------------------------------------------------------------------------
# Checksums and downloads
# --------------------------------------------------------------------------------------


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _known_md5(dataset: str, file_name: str) -> str | None:
    return MD5.get(dataset, {}).get(file_name)


def _check_md5(path: Path, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise CorruptDatasetError(
            f"{path}: md5 {actual} does not match the expected {expected}; the file is "
            "corrupt or incomplete. Delete it and run again with download=True "
            "(`--download true`) to fetch a fresh copy."
        )


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


def download_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    opener: Callable[[str], IO[bytes]] | None = None,
) -> Path:
    """Fetch ``name``'s missing files into ``root/<name>/`` and return that folder.

    Files already there are kept (loading verifies them). ``mirrors`` (base URLs ending in
    ``/``) replaces :data:`MIRRORS`; with ``opener`` it lets tests download from
    ``file://`` URLs. Digits ships with scikit-learn and needs no download.
    """
    _check_name(name)
    folder = dataset_folders(name, root)[0]
    if name == "digits":
        return folder
    bases = tuple(mirrors) if mirrors is not None else MIRRORS[name]
    for file_name in DOWNLOAD_FILES[name]:
        dest = folder / file_name
        if dest.exists() or (name != "cifar10" and dest.with_suffix("").exists()):
            continue
        urls = [base + file_name for base in bases]
        download_file(urls, dest, _known_md5(name, file_name), opener)
    return folder


# --------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------


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
    _check_md5(path, hashlib.md5(raw, usedforsecurity=False).hexdigest(), md5)
    return _parse_idx(raw, path)


def _find_idx_folder(folders: Iterable[Path]) -> dict[str, Path] | None:
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


def _idx_split(name: str, paths: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` of one split, cross-checked."""
    images_name, labels_name = IDX_SPLITS[split]
    images = read_idx(paths[images_name], _known_md5(name, images_name))
    labels = read_idx(paths[labels_name], _known_md5(name, labels_name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise CorruptDatasetError(
            f"{paths[images_name]} and {paths[labels_name]}: expected images (N, H, W) and "
            f"labels (N,), got {images.shape} and {labels.shape}."
        )
    return images, labels


def _load_idx_dataset(name: str, root: str | os.PathLike[str] | None) -> Dataset:
    folders = dataset_folders(name, root)
    paths = _find_idx_folder(folders)
    if paths is None:
        expected = ", ".join(f"{n}[.gz]" for n in IDX_FILES)
        raise _not_found(name, folders, expected)
    train_x, train_y = _idx_split(name, paths, "train")
    test_x, test_y = _idx_split(name, paths, "test")
    return _make_dataset(name, train_x[:, None], train_y, test_x[:, None], test_y, 255.0)


# --------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches)
# --------------------------------------------------------------------------------------


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
    path: str | os.PathLike[str], verify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read CIFAR-10 from ``cifar-10-python.tar.gz`` or an extracted ``cifar-10-batches-py``.

    Returns ``(train_x, train_y, test_x, test_y)``: images uint8 ``(N, 3, 32, 32)`` and
    labels int64, from ``data_batch_1..5`` (train) and ``test_batch`` (test). With
    ``verify``, files are checked against :data:`MD5` where it lists them.

    Raises:
        CorruptDatasetError: truncated archive, unreadable batch or checksum mismatch.
    """
    path = Path(path)
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    if path.is_dir():
        blobs = {n: (path / n).read_bytes() for n in names}
        for n, blob in blobs.items():
            actual = hashlib.md5(blob, usedforsecurity=False).hexdigest()
            _check_md5(path / n, actual, _known_md5("cifar10", n) if verify else None)
    else:
        if verify:
            _check_md5(path, _md5_of_file(path), _known_md5("cifar10", path.name))
        blobs = _read_cifar_batches_from_tar(path, names)
    train = [_parse_cifar_batch(blobs[n], f"{path}:{n}") for n in CIFAR10_TRAIN_BATCHES]
    test_x, test_y = _parse_cifar_batch(blobs[CIFAR10_TEST_BATCH], f"{path}:{CIFAR10_TEST_BATCH}")
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return train_x, train_y, test_x, test_y


def _find_cifar10(folders: Iterable[Path]) -> Path | None:
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


def _load_cifar10(root: str | os.PathLike[str] | None) -> Dataset:
    folders = dataset_folders("cifar10", root)
    source = _find_cifar10(folders)
    if source is None:
        expected = f"{CIFAR10_ARCHIVE}, or its extracted {CIFAR10_FOLDER}/ folder"
        raise _not_found("cifar10", folders, expected)
    train_x, train_y, test_x, test_y = read_cifar10(source)
    return _make_dataset("cifar10", train_x, train_y, test_x, test_y, 255.0)


# --------------------------------------------------------------------------------------
# digits (scikit-learn, offline)
# --------------------------------------------------------------------------------------


def digits_split(
    labels: np.ndarray, test_fraction: float = DIGITS_TEST_FRACTION, seed: int = DIGITS_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices: each class gives ``round(test_fraction * n_c)`` to test.

    Per class, its indices are shuffled by ``numpy.random.default_rng(seed)`` (classes in
    ascending order, one shared generator) and the first ``round(test_fraction * n_c)`` go
    to test. Returns sorted ``(train_idx, test_idx)``; disjoint, covering all samples.
    """
    rng = np.random.default_rng(seed)
    test_parts = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(round(test_fraction * len(members)))
        test_parts.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_parts))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def _load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, pixel values 0..16, split by :func:`digits_split`."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = digits_split(labels)
    return _make_dataset(
        "digits", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], 16.0
    )


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


def _to_images(x: np.ndarray, scale: float) -> torch.Tensor:
    # astype copies into a fresh writable array (the decoded buffers are read-only views).
    return torch.from_numpy(x.astype(np.float32)).div_(scale)


def _to_labels(y: np.ndarray, name: str, num_classes: int) -> torch.Tensor:
    labels = torch.from_numpy(y.astype(np.int64))
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDatasetError(
            f"{name}: labels span [{int(labels.min())}, {int(labels.max())}], expected "
            f"[0, {num_classes - 1}]; the files are not {name}."
        )
    return labels


def _make_dataset(
    name: str, train_x: Any, train_y: Any, test_x: Any, test_y: Any, scale: float
) -> Dataset:
    """Wrap uint8-range arrays as a :class:`Dataset`, images divided by ``scale`` into [0, 1]."""
    classes = CLASS_NAMES[name]
    return Dataset(
        name=name,
        train_x=_to_images(train_x, scale),
        train_y=_to_labels(train_y, name, len(classes)),
        test_x=_to_images(test_x, scale),
        test_y=_to_labels(test_y, name, len(classes)),
        num_classes=len(classes),
        classes=classes,
    )


def load_dataset(
    name: str, root: str | os.PathLike[str] | None = None, download: bool = False
) -> Dataset:
    """Load ``name`` (one of :data:`DATASET_NAMES`) whole into memory.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"digits"``.
        root: data root; default :func:`default_root`. Files are looked for in
            :func:`dataset_folders` and downloaded into ``root/<name>/``.
        download: fetch missing files (checksummed, atomic) instead of raising.

    Returns:
        A :class:`Dataset` of ``float32`` images in ``[0, 1]``, ``(N, C, H, W)``, and
        ``int64`` labels.

    Raises:
        ValueError: unknown name.
        DatasetNotFoundError: files missing and ``download`` is false.
        CorruptDatasetError: a file is truncated, malformed or fails its checksum.
        DownloadError: ``download`` was asked for and no mirror worked.
    """
    _check_name(name)
    if name == "digits":
        return _load_digits()
    try:
        return _load_from_files(name, root)
    except DatasetNotFoundError:
        if not download:
            raise
    download_dataset(name, root)
    return _load_from_files(name, root)


def _load_from_files(name: str, root: str | os.PathLike[str] | None) -> Dataset:
    return _load_cifar10(root) if name == "cifar10" else _load_idx_dataset(name, root)


# --------------------------------------------------------------------------- synthetic


def mnist_like(
    n: int, dim: int = 784, classes: int = 10, density: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse, learnable MNIST-like data: each class has a random "stroke" pattern of about
    ``density / 0.8`` of the pixels; a sample keeps 70% of its class's pixels, borrows 15%
    of another class's and adds a little noise, with intensities uniform in (0, 1].

    Returns x (n, dim) float32 and y (n,) int64. For tests and benchmarks that need
    MNIST-like sparsity without a download."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, dim, generator=g) < density / 0.8
    y = torch.randint(0, classes, (n,), generator=g)
    other = torch.randint(0, classes, (n,), generator=g)
    on = (protos[y] & (torch.rand(n, dim, generator=g) < 0.7)) | (
        protos[other] & (torch.rand(n, dim, generator=g) < 0.15)
    )
    on |= torch.rand(n, dim, generator=g) < 0.02
    x = (1.0 - torch.rand(n, dim, generator=g)) * on
    return x.contiguous(), y
