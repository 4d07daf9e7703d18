"""Dataset loaders: real files, the bundled subset, and every kind of bad input."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecompress import data
from edgecompress.errors import DataError, DataNotFoundError, UnknownNameError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# --- writers of the real formats ------------------------------------------------------------

def write_idx_images(path: Path, images: np.ndarray, gz: bool = False, magic: int = 2051) -> Path:
    n, rows, cols = images.shape
    raw = struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_idx_labels(path: Path, labels: np.ndarray, gz: bool = False) -> Path:
    raw = struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_mnist_dir(root: Path, n: int = 20, gz: bool = True, shape=(28, 28)) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx_images(root / f"{prefix}-images-idx3-ubyte{suffix}",
                         rng.integers(0, 256, (n, *shape)), gz)
        write_idx_labels(root / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)
    return root


def write_cifar_batches(root: Path, n: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


# --- real data ----------------------------------------------------------------------------

def test_real_mnist_test_split():
    ds = data.load("mnist", root=SHARED / "mnist", split="test")
    assert len(ds) == 10_000 and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.targets[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 7


def test_real_cifar10_subset_npz():
    train = data.load("cifar10", root=SHARED / "cifar10_subset", split="train")
    test = data.load("cifar10", root=SHARED / "cifar10_subset", split="test")
    assert (len(train), len(test)) == (4000, 1000) and train.input_shape == (3, 32, 32)
    assert train.targets[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert test.targets[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_bundled_mnist_is_the_head_of_real_mnist():
    train, test = data.load("mnist-bundled", split="train"), data.load("mnist-bundled", split="test")
    assert (len(train), len(test)) == (6000, 1000)
    real = data.load("mnist", root=SHARED / "mnist", split="test")
    assert torch.equal(test.images, real.images[:1000])
    assert torch.equal(test.targets, real.targets[:1000])
    pixels = torch.stack([train[i][0] for i in range(500)])
    assert abs(pixels.mean().item()) < 0.1 and 0.8 < pixels.std().item() < 1.2


# --- formats and options ----------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_raw_and_gz(tmp_path, gz):
    root = write_mnist_dir(tmp_path / "m", gz=gz)
    ds = data.load("fashion-mnist", root=root, split="train")
    assert len(ds) == 20 and ds.targets.tolist() == [i % 10 for i in range(20)]
    assert ds.classes[9] == "ankle boot"


def test_cifar_pickle_batches(tmp_path):
    write_cifar_batches(tmp_path)
    train = data.load("cifar10", root=tmp_path, split="train")
    test = data.load("cifar10", root=tmp_path / "cifar-10-batches-py", split="test")
    assert (len(train), len(test)) == (30, 6) and train.input_shape == (3, 32, 32)


def test_augment_is_deterministic_under_seed_and_changes_images():
    ds = data.load("cifar10", root=SHARED / "cifar10_subset", split="train", augment=True, limit=8)
    torch.manual_seed(0)
    a = torch.stack([ds[i][0] for i in range(8)])
    torch.manual_seed(0)
    b = torch.stack([ds[i][0] for i in range(8)])
    plain = data.load("cifar10", root=SHARED / "cifar10_subset", split="train", limit=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.stack([plain[i][0] for i in range(8)]))


def test_limit_keeps_the_first_samples():
    ds = data.load("mnist-bundled", split="train", limit=50)
    assert len(ds) == 50 and len(ds.targets) == 50


# --- bad input --------------------------------------------------------------------------------

def test_missing_directory_lists_expected_files(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        data.load("mnist", root=tmp_path / "nowhere", split="train")
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "nowhere" in message
    assert "EDGECOMPRESS_DATA" in message and "never downloads" in message


def test_default_root_uses_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_DATA", str(tmp_path))
    write_mnist_dir(tmp_path / "kmnist")
    assert len(data.load("kmnist", split="test")) == 20
    assert data.default_root("cifar10") == tmp_path / "cifar10"


def test_truncated_idx(tmp_path):
    root = write_mnist_dir(tmp_path, gz=False)
    f = root / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated or corrupt"):
        data.load("mnist", root=root)


def test_bad_magic(tmp_path):
    root = write_mnist_dir(tmp_path, gz=False)
    write_idx_images(root / "train-images-idx3-ubyte", np.zeros((20, 28, 28)), magic=1234)
    with pytest.raises(DataError, match="magic 1234, expected 2051"):
        data.load("mnist", root=root)


def test_corrupt_gzip(tmp_path):
    root = write_mnist_dir(tmp_path)
    f = root / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:12])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: cannot read"):
        data.load("mnist", root=root, split="test")


def test_wrong_image_shape(tmp_path):
    root = write_mnist_dir(tmp_path, shape=(32, 32))
    with pytest.raises(DataError, match="images are 32x32, expected 28x28"):
        data.load("mnist", root=root)


def test_label_image_count_mismatch(tmp_path):
    root = write_mnist_dir(tmp_path)
    write_idx_labels(root / "train-labels-idx1-ubyte.gz", np.zeros(7), gz=True)
    with pytest.raises(DataError, match="20 images but .* 7 labels"):
        data.load("mnist", root=root)


def test_corrupt_pickle(tmp_path):
    folder = write_cifar_batches(tmp_path)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:500])
    with pytest.raises(DataError, match="test_batch"):
        data.load("cifar10", root=tmp_path, split="test")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_with_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_cifar_batches(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    with pytest.raises(DataError, match="not allowed"):
        data.load("cifar10", root=tmp_path, split="test")
    assert not (tmp_path / "pwned.txt").exists()


def test_npz_wrong_shape(tmp_path):
    np.savez(tmp_path / "train.npz", x=np.zeros((4, 28, 28), np.uint8), y=np.zeros(4))
    with pytest.raises(DataError, match=r"x has shape \(4, 28, 28\).*expected \(N, 32, 32, 3\)"):
        data.load("cifar10", root=tmp_path, split="train")


def test_unknown_dataset_and_bad_split_and_option():
    with pytest.raises(UnknownNameError, match="available: cifar10, .*mnist-bundled"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("mnist-bundled", split="validation")
    with pytest.raises(TypeError, match="colour"):
        data.load("mnist-bundled", colour=True)
