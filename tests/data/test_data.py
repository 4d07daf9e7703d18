"""Dataset loaders: real files, the bundled subset, every supported format and every bad input."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecompress import data
from edgecompress.data.bundled_mnist import BUNDLED_FILE
from edgecompress.errors import DataError, DataNotFoundError, UnknownNameError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


# --- writers of the real formats ------------------------------------------------------------

def idx_images_bytes(images: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels_bytes(labels: np.ndarray, magic: int = 2049) -> bytes:
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def write(path: Path, raw: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_mnist_dir(root: Path, n: int = 20, gz: bool = True, shape=(28, 28)) -> Path:
    """Train and test IDX files of ``n`` random images with labels 0, 1, ..., 9, 0, ..."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        write(root / f"{prefix}-images-idx3-ubyte{suffix}",
              idx_images_bytes(rng.integers(0, 256, (n, *shape))), gz)
        write(root / f"{prefix}-labels-idx1-ubyte{suffix}", idx_labels_bytes(np.arange(n) % 10), gz)
    return root


def write_cifar_batches(root: Path, n: int = 6) -> Path:
    """cifar-10-batches-py/ with 5 train batches and a test batch of ``n`` random images each."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n, 3072), np.uint8),
                 b"labels": [i % 10 for i in range(n)], b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def write_cifar_npz(path: Path, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (n, 32, 32, 3), np.uint8), np.arange(n) % 10
    np.savez(path, x=x, y=y)
    return x, y


def images_of(ds) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in range(len(ds))])


# --- real data ----------------------------------------------------------------------------

def test_real_mnist_test_split(shared_data):
    ds = data.load("mnist", root=shared_data("mnist"), split="test")
    assert len(ds) == 10_000 and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.targets.dtype == torch.int64 and ds.targets.shape == (10_000,)
    assert ds.targets[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 7


def test_real_cifar10_subset_npz(shared_data):
    train = data.load("cifar10", root=shared_data("cifar10_subset"), split="train")
    test = data.load("cifar10", root=shared_data("cifar10_subset"), split="test")
    assert (len(train), len(test)) == (4000, 1000) and train.input_shape == (3, 32, 32)
    assert train.classes[6] == "frog" and train.num_classes == 10
    assert train.targets[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert test.targets[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    pixels = images_of(test)  # the standard CIFAR-10 statistics normalise each channel
    assert pixels.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert ((pixels.std(dim=(0, 2, 3)) - 1).abs() < 0.1).all()


def test_bundled_mnist_is_the_head_of_real_mnist(shared_data):
    train = data.load("mnist-bundled")  # split defaults to train
    test = data.load("mnist-bundled", split="test", root="/ignored")
    assert (len(train), len(test)) == (6000, 1000) and train.input_shape == test.input_shape == (1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.num_classes == 10
    real = data.load("mnist", root=shared_data("mnist"), split="test")
    assert torch.equal(test.images, real.images[:1000])
    assert torch.equal(test.targets, real.targets[:1000])
    assert torch.bincount(train.targets).tolist() == [592, 671, 581, 608, 623, 514, 608, 651,
                                                      551, 601]


def test_bundled_readme_records_the_file_hash():
    readme = (BUNDLED_FILE.parent / "README.md").read_text()
    digest = hashlib.sha256(BUNDLED_FILE.read_bytes()).hexdigest()
    assert digest in readme
    assert BUNDLED_FILE.stat().st_size < 3_000_000


def test_normalisation_gives_zero_mean_unit_std_over_the_set():
    pixels = images_of(data.load("mnist-bundled", split="test"))
    assert abs(pixels.mean().item()) < 0.05 and abs(pixels.std().item() - 1) < 0.05


# --- formats --------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_raw_and_gz(tmp_path, gz):
    root = write_mnist_dir(tmp_path / "m", gz=gz)
    ds = data.load("fashion-mnist", root=root, split="train")
    assert len(ds) == 20 and ds.targets.tolist() == [i % 10 for i in range(20)]
    assert ds.classes[9] == "ankle boot" and ds.input_shape == (1, 28, 28)


def test_idx_pixels_are_scaled_and_normalised(tmp_path):
    root = write_mnist_dir(tmp_path)
    images = np.zeros((2, 28, 28), np.uint8)
    images[1, 3, 5] = 255
    write(root / "train-images-idx3-ubyte.gz", idx_images_bytes(images), gz=True)
    write(root / "train-labels-idx1-ubyte.gz", idx_labels_bytes(np.array([3, 8])), gz=True)
    ds = data.load("mnist", root=root)
    x, y = ds[1]
    assert y == 8
    assert x[0, 3, 5].item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD, rel=1e-5)
    assert x[0, 0, 0].item() == pytest.approx(-MNIST_MEAN / MNIST_STD, rel=1e-5)


def test_cifar_pickle_batches_keep_the_channel_planes(tmp_path):
    folder = write_cifar_batches(tmp_path)
    train = data.load("cifar10", root=tmp_path, split="train")
    test = data.load("cifar10", root=folder, split="test")  # root may be the folder itself
    assert (len(train), len(test)) == (30, 6) and train.input_shape == (3, 32, 32)
    with open(folder / "test_batch", "rb") as f:
        row = pickle.load(f)[b"data"][2]  # our own trusted file
    expected = torch.from_numpy(row.reshape(3, 32, 32).copy())
    assert torch.equal(test.images[2], expected)  # R plane, G plane, B plane, row-major


def test_cifar_npz_any_name_and_hwc_layout(tmp_path):
    x, y = write_cifar_npz(tmp_path / "my_train_part.npz")
    write_cifar_npz(tmp_path / "test.npz", n=3)
    train = data.load("cifar10", root=tmp_path, split="train")
    assert len(train) == 5 and train.targets.tolist() == y.tolist()
    assert torch.equal(train.images[4], torch.from_numpy(x[4]).permute(2, 0, 1))
    assert len(data.load("cifar10", root=tmp_path, split="test")) == 3


def test_ambiguous_npz_names(tmp_path):
    write_cifar_npz(tmp_path / "a_train.npz")
    write_cifar_npz(tmp_path / "b_train.npz")
    with pytest.raises(DataError, match="several .npz files match split 'train'.*a_train.npz"):
        data.load("cifar10", root=tmp_path)


def test_registered_dataset_and_name_normalisation(tmp_path):
    @data.register("tiny-test-set")
    def tiny(root, split, scale=1):
        images = torch.full((3, 1, 2, 2), 10 * scale, dtype=torch.uint8)
        return data.ImageDataset(images, torch.tensor([0, 1, 0]), ["a", "b"], [0.0], [1.0])

    assert "tiny-test-set" in data.available()
    ds = data.load("Tiny_Test_Set", split="test", scale=2, limit=2)
    assert len(ds) == 2 and ds[0][0][0, 0, 0].item() == pytest.approx(20 / 255)

    @data.register("not-an-image-dataset")
    def wrong(root, split):
        return [1, 2, 3]

    with pytest.raises(TypeError, match="'not-an-image-dataset' returned list"):
        data.load("not-an-image-dataset")


def test_default_root_uses_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_DATA", str(tmp_path))
    write_mnist_dir(tmp_path / "kmnist")
    assert len(data.load("kmnist", split="test")) == 20
    assert data.default_root("cifar10") == tmp_path / "cifar10"
    monkeypatch.delenv("EDGECOMPRESS_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_root("mnist") == tmp_path / "home" / ".edgecompress" / "data" / "mnist"


# --- augment and limit ------------------------------------------------------------------------

def test_augment_is_deterministic_under_seed_and_changes_images(shared_data):
    ds = data.load("cifar10", root=shared_data("cifar10_subset"), split="train", augment=True, limit=8)
    torch.manual_seed(0)
    a = images_of(ds)
    torch.manual_seed(0)
    b = images_of(ds)
    torch.manual_seed(1)
    c = images_of(ds)
    plain = images_of(data.load("cifar10", root=shared_data("cifar10_subset"), limit=8))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, plain)


def test_augment_is_a_padded_crop_optionally_flipped(tmp_path):
    write_cifar_npz(tmp_path / "train.npz", n=1)
    ds = data.load("cifar10", root=tmp_path, augment=True)
    original = ds.images[0].float() / 255
    padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
    crops = [padded[:, top:top + 32, left:left + 32] for top in range(9) for left in range(9)]
    candidates = crops + [crop.flip(-1) for crop in crops]
    torch.manual_seed(3)
    for _ in range(10):
        norm = ds.normalization
        x = (ds[0][0] * torch.tensor(norm.std).view(-1, 1, 1)
             + torch.tensor(norm.mean).view(-1, 1, 1))
        assert any(torch.allclose(x, c, atol=1e-5) for c in candidates)


def test_augment_only_where_defined(tmp_path):
    write_cifar_npz(tmp_path / "test.npz", n=1)
    with pytest.raises(ValueError, match="train split only"):
        data.load("cifar10", root=tmp_path, split="test", augment=True)
    with pytest.raises(ValueError, match="'mnist-bundled' defines no augmentation"):
        data.load("mnist-bundled", augment=True)


def test_limit_keeps_the_first_samples():
    full = data.load("mnist-bundled", split="test")
    ds = data.load("mnist-bundled", split="test", limit=50)
    assert len(ds) == 50 and torch.equal(ds.targets, full.targets[:50])
    assert torch.equal(ds[49][0], full[49][0])
    assert len(data.load("mnist-bundled", split="test", limit=10**6)) == 1000
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            data.load("mnist-bundled", limit=bad)


def test_classes_keeps_those_classes_relabelled_in_list_order_before_limit():
    full = data.load("mnist-bundled", split="test")
    ds = data.load("mnist-bundled", split="test", classes=[7, 3])
    chosen = (full.targets == 7) | (full.targets == 3)
    assert len(ds) == int(chosen.sum()) and ds.num_classes == 2
    assert ds.classes == [full.classes[7], full.classes[3]]
    assert torch.equal(ds.targets, (full.targets[chosen] == 3).long())  # 7 -> 0, 3 -> 1
    assert torch.equal(ds.images, full.images[chosen])
    few = data.load("mnist-bundled", split="test", classes=[7, 3], limit=5)
    assert torch.equal(few.targets, ds.targets[:5])


@pytest.mark.parametrize("bad, message", [
    ([], "non-empty list of class indices in 0..9"), ([3, 10], r"in 0..9, got \[3, 10\]"),
    ([1.0], "class indices"), ([True], "class indices"), ("5", "class indices"),
    ([2, 2], "lists a class twice")])
def test_bad_classes_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        data.load("mnist-bundled", split="test", classes=bad)


def test_real_cifar10_subset_class_split(shared_data):
    root = shared_data("cifar10_subset")
    full = data.load("cifar10", root=root, split="train")
    second = data.load("cifar10", root=root, split="train", classes=[5, 6, 7, 8, 9])
    assert len(second) == int((full.targets >= 5).sum())  # 393+414+385+407+413
    assert second.classes == ["dog", "frog", "horse", "ship", "truck"]
    assert torch.equal(second.targets, full.targets[full.targets >= 5] - 5)


# --- bad input --------------------------------------------------------------------------------

def test_missing_directory_lists_expected_files(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        data.load("mnist", root=tmp_path / "nowhere", split="train")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "does not exist" in message
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "t10k" not in message
    assert "root=" in message and "EDGECOMPRESS_DATA" in message and "never downloads" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_cifar_files_list_both_layouts(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    with pytest.raises(DataNotFoundError) as info:
        data.load("cifar10", root=tmp_path, split="train")
    message = str(info.value)
    assert "data_batch_5" in message and "train.npz" in message and str(tmp_path) in message
    assert "does not exist" not in message


def test_truncated_idx_names_expected_and_actual_bytes(tmp_path):
    root = write_mnist_dir(tmp_path, gz=False)
    f = root / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    expected = 16 + 20 * 28 * 28
    with pytest.raises(DataError, match=re.escape(f"{f}: truncated or corrupt: header says 20 "
                                                  f"images = {expected} bytes, file has "
                                                  f"{expected - 100}")):
        data.load("mnist", root=root)


@pytest.mark.parametrize("which, raw, expected", [
    ("train-images-idx3-ubyte", idx_images_bytes(np.zeros((20, 28, 28)), magic=1234),
     "magic 1234, expected 2051"),
    ("train-labels-idx1-ubyte", idx_labels_bytes(np.zeros(20), magic=2051),
     "magic 2051, expected 2049"),
    ("train-labels-idx1-ubyte", b"\x00\x00", "too short for an IDX label header"),
])
def test_bad_idx_header(tmp_path, which, raw, expected):
    root = write_mnist_dir(tmp_path, gz=False)
    write(root / which, raw)
    with pytest.raises(DataError, match=f"{which}: .*{expected}"):
        data.load("mnist", root=root)


@pytest.mark.parametrize("damage", [lambda b: b[:12], lambda b: b"not gzip at all" + b[15:]])
def test_corrupt_gzip(tmp_path, damage):
    root = write_mnist_dir(tmp_path)
    f = root / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        data.load("mnist", root=root, split="test")


def test_wrong_image_shape(tmp_path):
    root = write_mnist_dir(tmp_path, shape=(32, 32))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: images are 32x32, "
                                        "expected 28x28"):
        data.load("mnist", root=root)


def test_label_image_count_mismatch(tmp_path):
    root = write_mnist_dir(tmp_path)
    write(root / "train-labels-idx1-ubyte.gz", idx_labels_bytes(np.zeros(7)), gz=True)
    with pytest.raises(DataError, match="20 images but .*train-labels.* 7 labels"):
        data.load("mnist", root=root)


def test_label_out_of_range(tmp_path):
    root = write_mnist_dir(tmp_path)
    write(root / "train-labels-idx1-ubyte.gz", idx_labels_bytes(np.full(20, 12)), gz=True)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: labels must be in 0..9, "
                                        r"found 12"):
        data.load("mnist", root=root)


@pytest.mark.parametrize("damage", [lambda b: b[:500], lambda b: b[:40] + b"\xff" * 60 + b[100:],
                                    lambda b: b"garbage"])
def test_corrupt_pickle(tmp_path, damage):
    folder = write_cifar_batches(tmp_path)
    f = folder / "test_batch"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match=f"{re.escape(str(f))}: .*pickle"):
        data.load("cifar10", root=tmp_path, split="test")


class _Exploit:
    """Pickles as a call to os.system that would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_with_code_is_refused_without_running_it(tmp_path, protocol):
    marker = tmp_path / "pwned"
    folder = write_cifar_batches(tmp_path)
    payload = {b"data": _Exploit(marker), b"labels": []}
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(DataError, match=r"test_batch: refused to unpickle: global "
                                        r"'(posix|os|nt)\.system' is not allowed"):
        data.load("cifar10", root=tmp_path, split="test")
    assert not marker.exists()


@pytest.mark.parametrize("batch, expected", [
    ([1, 2], "not a CIFAR batch: expected a dict"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]},
     r"b'data' has shape \(2, 1024\) \(uint8\), expected \(N, 3072\) uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
     r"b'labels' has shape \(1,\).*expected \(2,\) integers"),
])
def test_pickle_with_wrong_content(tmp_path, batch, expected):
    folder = write_cifar_batches(tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=f"data_batch_3: {expected}"):
        data.load("cifar10", root=tmp_path, split="train")


@pytest.mark.parametrize("arrays, expected", [
    (dict(x=np.zeros((4, 28, 28), np.uint8), y=np.zeros(4, np.int64)),
     r"x has shape \(4, 28, 28\) \(uint8\), expected \(N, 32, 32, 3\)"),
    (dict(x=np.zeros((4, 3, 32, 32), np.uint8), y=np.zeros(4, np.int64)),
     r"x has shape \(4, 3, 32, 32\)"),
    (dict(x=np.zeros((4, 32, 32, 3), np.uint8), y=np.zeros(4)),
     r"y has shape \(4,\) \(float64\), expected \(4,\) integers"),
    (dict(images=np.zeros((4, 32, 32, 3), np.uint8)), r"expected arrays 'x' and 'y', found"),
])
def test_npz_wrong_content(tmp_path, arrays, expected):
    np.savez(tmp_path / "train.npz", **arrays)
    with pytest.raises(DataError, match=f"train.npz: {expected}"):
        data.load("cifar10", root=tmp_path, split="train")


def test_corrupt_npz(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="train.npz: not a readable .npz file"):
        data.load("cifar10", root=tmp_path)


def test_unknown_dataset_bad_split_and_unknown_option():
    with pytest.raises(UnknownNameError, match="unknown dataset 'imagenet'; available: cifar10, "
                                               ".*kmnist, mnist, mnist-bundled"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="unknown split 'validation' of dataset 'mnist-bundled'; "
                                         "available: train, test"):
        data.load("mnist-bundled", split="validation")
    with pytest.raises(TypeError, match=r"'mnist-bundled' got unexpected option\(s\) \['colour'\]"):
        data.load("mnist-bundled", colour=True)
