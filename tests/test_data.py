"""Tests for plasticollapse.data on tiny files in the real formats; no network."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from plasticollapse import data

N_TRAIN, N_TEST = 6, 4
PER_BATCH = 3  # CIFAR images per batch file


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: magic 00 00 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def tiny_idx_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray], gz: bool) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, array in arrays.items():
        blob = idx_bytes(array)
        path = folder / (f"{name}.gz" if gz else name)
        path.write_bytes(gzip.compress(blob) if gz else blob)
        paths[name] = path
    return paths


def cifar_batch(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    blob = pickle.dumps({b"data": images, b"labels": labels, b"batch_label": b"x"})
    return blob, images, np.asarray(labels)


def write_cifar_tarball(path: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A cifar-10-python.tar.gz with PER_BATCH images per batch; returns (train, test) rows."""
    rng = np.random.default_rng(seed)
    rows = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name in (*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_TEST_BATCH):
            blob, images, labels = cifar_batch(rng, PER_BATCH)
            rows[name] = (images, labels)
            info = tarfile.TarInfo(f"{data.CIFAR10_FOLDER}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    train = np.concatenate([rows[n][0] for n in data.CIFAR10_TRAIN_BATCHES])
    return train, rows[data.CIFAR10_TEST_BATCH][0]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No canonical checksums (tiny files never match), no system folders, no real root."""
    monkeypatch.setattr(data, "MD5", {})
    monkeypatch.setattr(data, "SYSTEM_FOLDERS", {})
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "env-root"))


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = tiny_idx_arrays()
    write_idx_folder(tmp_path / "mnist", arrays, gz=gz)
    ds = data.load_dataset("mnist", root=tmp_path)
    assert ds.train_x.shape == (N_TRAIN, 1, 28, 28) and ds.test_x.shape == (N_TEST, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    expected = arrays["train-images-idx3-ubyte"].astype(np.float32) / 255
    np.testing.assert_allclose(ds.train_x[:, 0].numpy(), expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert ds.num_classes == 10 and len(ds.classes) == 10
    x, y = ds.flat("train")
    assert x.shape == (N_TRAIN, 784) and torch.equal(y, ds.train_y)
    assert ds.input_dim == 784 and ds.image_shape == (1, 28, 28)


def test_read_idx_other_dtypes(tmp_path):
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    path = tmp_path / "ints-idx2-int"
    path.write_bytes(
        bytes([0, 0, 0x0C, 2]) + np.asarray([2, 3], ">u4").tobytes() + values.tobytes()
    )
    out = data.read_idx(path)
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_names_file(tmp_path, gz):
    paths = write_idx_folder(tmp_path / "mnist", tiny_idx_arrays(), gz=gz)
    victim = paths["train-images-idx3-ubyte"]
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(data.CorruptDatasetError) as error:
        data.load_dataset("mnist", root=tmp_path)
    assert str(victim) in str(error.value) and "download=True" in str(error.value)


@pytest.mark.parametrize(
    "blob, why",
    [
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "magic"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "type code"),
        (b"\x00\x00\x08\x03\x00\x00", "header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "truncated or padded"),
    ],
)
def test_malformed_idx(tmp_path, blob, why):
    path = tmp_path / "bad-idx"
    path.write_bytes(blob)
    with pytest.raises(data.CorruptDatasetError, match=why):
        data.read_idx(path)


def test_idx_checksum_checked_on_uncompressed_content(tmp_path, monkeypatch):
    arrays = tiny_idx_arrays()
    write_idx_folder(tmp_path / "mnist", arrays, gz=True)
    good = {name: md5(idx_bytes(a)) for name, a in arrays.items()}
    monkeypatch.setitem(data.MD5, "mnist", good)
    assert data.load_dataset("mnist", root=tmp_path).train_x.shape[0] == N_TRAIN

    monkeypatch.setitem(data.MD5, "mnist", {**good, "t10k-labels-idx1-ubyte": "0" * 32})
    with pytest.raises(data.CorruptDatasetError, match="md5") as error:
        data.load_dataset("mnist", root=tmp_path)
    assert "t10k-labels-idx1-ubyte.gz" in str(error.value)


def test_cifar_tarball_and_folder(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10" / data.CIFAR10_ARCHIVE
    train_rows, test_rows = write_cifar_tarball(archive)
    ds = data.load_dataset("cifar10", root=tmp_path)
    assert ds.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and ds.test_x.shape == (
        PER_BATCH,
        3,
        32,
        32,
    )
    assert ds.train_x.dtype == torch.float32 and ds.test_y.dtype == torch.int64
    # Channel-major rows: the first 1024 values of a row are the red plane.
    np.testing.assert_allclose(
        ds.train_x[4, 0].numpy(), train_rows[4, :1024].reshape(32, 32) / 255, atol=1e-7
    )
    np.testing.assert_allclose(flat := data.flatten(ds.test_x).numpy(), test_rows / 255, atol=1e-7)
    assert flat.shape == (PER_BATCH, 3072)

    # The extracted folder gives the same tensors, and is preferred over the archive.
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "cifar10", filter="data")
    archive.write_bytes(b"broken")
    again = data.load_dataset("cifar10", root=tmp_path)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_cifar_checksum_and_truncation(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10" / data.CIFAR10_ARCHIVE
    write_cifar_tarball(archive)
    monkeypatch.setitem(data.MD5, "cifar10", {data.CIFAR10_ARCHIVE: "0" * 32})
    with pytest.raises(data.CorruptDatasetError, match="md5") as error:
        data.load_dataset("cifar10", root=tmp_path)
    assert str(archive) in str(error.value)

    monkeypatch.setitem(data.MD5, "cifar10", {})
    archive.write_bytes(archive.read_bytes()[:-100])
    with pytest.raises(data.CorruptDatasetError) as error:
        data.load_dataset("cifar10", root=tmp_path)
    assert str(archive) in str(error.value) and "download=True" in str(error.value)


def test_missing_dataset_message(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_dataset("mnist", root=tmp_path)
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert str(tmp_path / "mnist") in message  # folder searched, and where to put files
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "download=True" in message and "--download true" in message
    assert data.MIRRORS["mnist"][0] + "train-images-idx3-ubyte.gz" in message

    with pytest.raises(data.DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        data.load_dataset("cifar10", root=tmp_path)


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="mnist, fashion-mnist, cifar10, digits"):
        data.load_dataset("imagenet")


def test_data_root_from_environment(tmp_path, monkeypatch):
    write_idx_folder(tmp_path / "env-root" / "fashion-mnist", tiny_idx_arrays(), gz=False)
    assert data.default_root() == tmp_path / "env-root"
    assert data.load_dataset("fashion-mnist").train_x.shape[0] == N_TRAIN
    monkeypatch.setenv(data.DATA_ENV, "")
    assert data.default_root() == Path.home() / ".cache" / "plasticollapse"
    monkeypatch.delenv(data.DATA_ENV)
    assert data.default_root() == Path.home() / ".cache" / "plasticollapse"


def test_system_folder_is_searched(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    write_idx_folder(system, tiny_idx_arrays(), gz=True)
    monkeypatch.setattr(data, "SYSTEM_FOLDERS", {"fashion-mnist": (system,)})
    ds = data.load_dataset("fashion-mnist", root=tmp_path / "empty")
    assert ds.classes[0] == "T-shirt/top" and ds.train_x.shape[0] == N_TRAIN


def serve_idx_files(folder: Path) -> dict[str, str]:
    """Gzipped IDX files in ``folder`` (a fake mirror); returns their md5s by file name."""
    write_idx_folder(folder, tiny_idx_arrays(), gz=True)
    return {p.name: md5(p.read_bytes()) for p in folder.iterdir()}


def test_download_from_file_url(tmp_path, monkeypatch):
    sums = serve_idx_files(tmp_path / "mirror")
    monkeypatch.setitem(data.MD5, "mnist", sums)
    monkeypatch.setitem(
        data.MIRRORS, "mnist", ("file:///nonexistent/", (tmp_path / "mirror").as_uri() + "/")
    )
    root = tmp_path / "root"
    ds = data.load_dataset("mnist", root=root, download=True)
    assert ds.train_x.shape == (N_TRAIN, 1, 28, 28)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(sums)


def test_download_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    sums = serve_idx_files(tmp_path / "mirror")
    monkeypatch.setitem(data.MD5, "mnist", {name: "0" * 32 for name in sums})
    root = tmp_path / "root"
    with pytest.raises(data.DownloadError, match="md5") as error:
        data.download_dataset("mnist", root=root, mirrors=[(tmp_path / "mirror").as_uri() + "/"])
    assert "train-images-idx3-ubyte.gz" in str(error.value)
    assert list((root / "mnist").iterdir()) == []  # no partial or temporary file left


def test_download_interrupted_leaves_nothing(tmp_path):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 10:
                raise ConnectionResetError("cut")
            return super().read(5)

    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(data.DownloadError, match="cut"):
        data.download_file(["http://x/file.bin"], dest, None, opener=lambda url: Broken(b"a" * 100))
    assert list(dest.parent.iterdir()) == []

    got = data.download_file(
        ["http://x/file.bin"], dest, md5(b"abc"), opener=lambda url: io.BytesIO(b"abc")
    )
    assert got.read_bytes() == b"abc"


def test_digits_split_deterministic_stratified_disjoint():
    ds = data.load_dataset("digits")
    assert ds.train_x.shape == (1438, 1, 8, 8) and ds.test_x.shape == (359, 1, 8, 8)
    assert ds.train_x.dtype == torch.float32 and float(ds.train_x.max()) == 1.0
    assert float(ds.train_x.min()) == 0.0
    again = data.load_dataset("digits")
    assert torch.equal(ds.test_x, again.test_x) and torch.equal(ds.train_y, again.train_y)

    labels = np.repeat(np.arange(3), [10, 20, 30])
    train_idx, test_idx = data.digits_split(labels)
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.union1d(train_idx, test_idx).size == len(labels)
    assert np.bincount(labels[test_idx]).tolist() == [2, 4, 6]
    other_train, _ = data.digits_split(labels, seed=1)
    assert not np.array_equal(other_train, train_idx)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_debian_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.undo()  # the real checksums and system folders
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    ds = data.load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert int(ds.train_y.min()) == 0 and int(ds.train_y.max()) == 9
    assert torch.equal(ds.test_y.bincount(), torch.full((10,), 1000))


def test_prepare_dataset_finds_downloads_or_says_how_to_get_it(tmp_path, monkeypatch):
    root = tmp_path / "root"
    with pytest.raises(data.DatasetNotFoundError, match="pass `--download true`"):
        data.prepare_dataset("mnist", root=root)
    assert not (root / "mnist").exists()  # without download, nothing is fetched
    sums = serve_idx_files(tmp_path / "mirror")
    monkeypatch.setitem(data.MD5, "mnist", sums)
    monkeypatch.setitem(data.MIRRORS, "mnist", ((tmp_path / "mirror").as_uri() + "/",))
    assert data.prepare_dataset("mnist", root=root, download=True) == root / "mnist"
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(sums)
    # Present now: found without a download (a mirror that cannot answer is never asked).
    monkeypatch.setitem(data.MIRRORS, "mnist", ("http://127.0.0.1:9/",))
    assert data.prepare_dataset("mnist", root=root, download=True) == root / "mnist"
    assert data.prepare_dataset("digits") is None  # ships with scikit-learn
    write_cifar_tarball(root / "cifar10" / data.CIFAR10_ARCHIVE)
    assert data.prepare_dataset("cifar10", root=root) == root / "cifar10" / data.CIFAR10_ARCHIVE
