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

This module is the registry: which datasets exist, where their files are looked for and
mirrored, their checksums and class names, and :func:`load_dataset`. The file formats and
the network live beside it, each importable from here:

- :mod:`~plasticollapse.data.dataset`: :class:`Dataset`, what every loader returns;
- :mod:`~plasticollapse.data.idx`: the IDX reader (MNIST, Fashion-MNIST);
- :mod:`~plasticollapse.data.cifar`: the CIFAR-10 tarball and batch reader;
- :mod:`~plasticollapse.data.digits`: scikit-learn's digits and their fixed split;
- :mod:`~plasticollapse.data.download`: checksummed atomic downloads from mirrors;
- :mod:`~plasticollapse.data.checksums`: md5 helpers and :class:`CorruptDatasetError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from plasticollapse.data.checksums import CHUNK, CorruptDatasetError
from plasticollapse.data.cifar import (
    CIFAR10_ARCHIVE,
    CIFAR10_FOLDER,
    CIFAR10_MD5,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    find_cifar10,
    read_cifar10,
)
from plasticollapse.data.dataset import Dataset, flatten, make_dataset
from plasticollapse.data.digits import (
    DIGITS_MAX_VALUE,
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    digits_split,
    read_digits,
)
from plasticollapse.data.download import DownloadError, download_file
from plasticollapse.data.idx import (
    IDX_DTYPES,
    IDX_FILES,
    IDX_SPLITS,
    find_idx_folder,
    read_idx,
    read_idx_split,
)

__all__ = [
    "CHUNK",
    "CIFAR10_ARCHIVE",
    "CIFAR10_FOLDER",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_TEST_BATCH",
    "CIFAR10_TRAIN_BATCHES",
    "CLASS_NAMES",
    "DATASET_NAMES",
    "DATA_ENV",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "DOWNLOAD_FILES",
    "IDX_DTYPES",
    "IDX_FILES",
    "IDX_SPLITS",
    "MD5",
    "MIRRORS",
    "SYSTEM_FOLDERS",
    "TORCHVISION_FOLDERS",
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
    "prepare_dataset",
    "read_cifar10",
    "read_idx",
]


DATASET_NAMES = ("mnist", "fashion-mnist", "cifar10", "digits")

#: Environment variable naming the data root; unset or empty means ~/.cache/plasticollapse.
DATA_ENV = "PLASTICOLLAPSE_DATA"

#: md5 of each canonical file, by dataset and file name. ``*.gz`` / ``*.tar.gz`` entries are
#: the archives as their sources publish them (checked on download); an IDX name without
#: ``.gz`` is the md5 of the uncompressed content (checked on loading, whatever the
#: compression); CIFAR-10 batch names are the extracted pickles. Values as in torchvision.
#: Loading looks the expected md5s up here at call time, so a test or a user may replace them.
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
    "cifar10": CIFAR10_MD5,
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


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are in none of the folders searched; the message says how to get them."""


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


def _expected_files(name: str) -> str:
    """The files one folder must hold for ``name``, as the missing-dataset error lists them."""
    if name == "cifar10":
        return f"{CIFAR10_ARCHIVE}, or its extracted {CIFAR10_FOLDER}/ folder"
    return ", ".join(f"{n}[.gz]" for n in IDX_FILES)


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
# Downloading and loading
# --------------------------------------------------------------------------------------


def _known_md5(dataset: str, file_name: str) -> str | None:
    return MD5.get(dataset, {}).get(file_name)


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


def _load_idx_dataset(name: str, root: str | os.PathLike[str] | None) -> Dataset:
    folders = dataset_folders(name, root)
    paths = find_idx_folder(folders)
    if paths is None:
        raise _not_found(name, folders, _expected_files(name))
    md5s = MD5.get(name, {})
    train_x, train_y = read_idx_split(paths, "train", md5s)
    test_x, test_y = read_idx_split(paths, "test", md5s)
    return make_dataset(
        name, CLASS_NAMES[name], train_x[:, None], train_y, test_x[:, None], test_y, 255.0
    )


def _load_cifar10(root: str | os.PathLike[str] | None) -> Dataset:
    folders = dataset_folders("cifar10", root)
    source = find_cifar10(folders)
    if source is None:
        raise _not_found("cifar10", folders, _expected_files("cifar10"))
    train_x, train_y, test_x, test_y = read_cifar10(source, md5s=MD5.get("cifar10", {}))
    return make_dataset("cifar10", CLASS_NAMES["cifar10"], train_x, train_y, test_x, test_y, 255.0)


def _load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, pixel values 0..16, split by :func:`digits_split`."""
    return make_dataset("digits", CLASS_NAMES["digits"], *read_digits(), DIGITS_MAX_VALUE)


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


def prepare_dataset(
    name: str, root: str | os.PathLike[str] | None = None, download: bool = False
) -> Path | None:
    """Make sure ``name``'s files are on disk before runs that need them start: return the
    folder (or CIFAR-10 archive) that holds them, downloading the missing files first when
    ``download`` is true (checksummed, as :func:`load_dataset` does). Digits ships with
    scikit-learn: None.

    A sweep calls this once per dataset in its parent process, so that a dataset that cannot
    be had fails there with one message instead of once in every run, and no run downloads.
    It does not read the files: loading checks their md5s.

    Raises:
        ValueError: unknown name.
        DatasetNotFoundError: files missing and ``download`` is false (the message says
            where they were looked for and how to get them).
        DownloadError: ``download`` was asked for and no mirror worked.
    """
    _check_name(name)
    if name == "digits":
        return None
    found = _find_files(name, root)
    if found is None and download:
        download_dataset(name, root)
        found = _find_files(name, root)
    if found is None:
        raise _not_found(name, dataset_folders(name, root), _expected_files(name))
    return found


def _find_files(name: str, root: str | os.PathLike[str] | None) -> Path | None:
    """Where ``name``'s files are (the first folder of :func:`dataset_folders` holding all of
    them, or the CIFAR-10 archive), or None."""
    folders = dataset_folders(name, root)
    if name == "cifar10":
        return find_cifar10(folders)
    paths = find_idx_folder(folders)
    return None if paths is None else next(iter(paths.values())).parent


def _load_from_files(name: str, root: str | os.PathLike[str] | None) -> Dataset:
    return _load_cifar10(root) if name == "cifar10" else _load_idx_dataset(name, root)
