"""Corrupt and inconsistent IDX files are named, with the way out, before any training (issue 15, item 5).
Each case writes tiny IDX files (20 train, 10 test images) in tmp_path and breaks one of them."""

import gzip
import struct

import numpy as np
import pytest

from bsstudy import DataError
from bsstudy.train.data import load_idx_dataset

RAW = "FashionMNIST/raw"


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root, gz=True, **replace) -> dict:
    """The four files (gzipped or not); `replace` gives another array for x_train, y_test, ... Returns their paths."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (20, 28, 28)),
        "y_train": rng.integers(0, 10, 20),
        "x_test": rng.integers(0, 256, (10, 28, 28)),
        "y_test": rng.integers(0, 10, 10),
    } | replace
    stems = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}  # fmt: skip
    (root / RAW).mkdir(parents=True)
    paths = {}
    for key, array in arrays.items():
        path = root / RAW / (stems[key] + (".gz" if gz else ""))
        raw = idx_bytes(np.asarray(array), 2049 if key.startswith("y") else 2051)
        path.write_bytes(gzip.compress(raw) if gz else raw)
        paths[key] = path
    return paths


def load(root):
    return load_idx_dataset("fashion_mnist", root, download=False)


def test_intact_files_load(tmp_path):
    write_fashion_mnist(tmp_path)
    arrays = load(tmp_path)
    assert arrays["x_train"].shape == (20, 28, 28) and arrays["y_test"].shape == (10,)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    ("broken", "array", "message"),
    [
        ("y_train", np.array([200] + [1] * 19), r"label 200 at index 0 .*labels 0 \.\.\. 9"),
        ("y_test", np.array([3] * 9 + [10]), r"label 10 at index 9"),
        ("y_train", np.ones(19), r"has 20 images but .*train-labels-idx1-ubyte.* has 19 labels"),
        ("y_test", np.ones(9), r"has 10 images but .*t10k-labels-idx1-ubyte.* has 9 labels"),
        ("x_train", np.zeros((25, 28, 28)), r"has 25 images but .* has 20 labels"),
        ("x_test", np.zeros((10, 27, 28)), r"t10k-images-idx3-ubyte.* holds images of 27x28 pixels; .* are 28x28"),
        ("x_train", np.zeros((20, 32, 32)), r"train-images-idx3-ubyte.* holds images of 32x32 pixels"),
    ],
)
def test_inconsistent_files_are_named_with_the_way_out(tmp_path, gz, broken, array, message):
    paths = write_fashion_mnist(tmp_path, gz=gz, **{broken: array})
    with pytest.raises(DataError, match=message) as err:
        load(tmp_path)
    assert str(paths[broken]) in str(err.value) and "delete it" in str(err.value)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda data: data[: len(data) // 2], r"is not a complete gzip file \(EOFError"),  # truncated download
        (lambda data: gzip.decompress(data), r"is not a complete gzip file \(BadGzipFile"),  # .gz that is not gzip
        (lambda data: b"", r"magic number None"),  # an empty file
        (lambda data: gzip.compress(gzip.decompress(data)[:-5]), r"truncated or corrupt"),  # short IDX inside
        (lambda data: data[:20] + bytes(len(data) - 20), r"is not a complete gzip file"),  # zeroed bytes
    ],
)
@pytest.mark.parametrize("key", ["x_train", "y_test"])
def test_corrupt_archives_are_named_with_the_way_out(tmp_path, corrupt, message, key):
    paths = write_fashion_mnist(tmp_path)
    paths[key].write_bytes(corrupt(paths[key].read_bytes()))
    with pytest.raises(DataError, match=message) as err:
        load(tmp_path)
    assert str(paths[key]) in str(err.value) and "delete it" in str(err.value)


def test_a_truncated_unpacked_file_is_named(tmp_path):
    paths = write_fashion_mnist(tmp_path, gz=False)
    paths["x_test"].write_bytes(paths["x_test"].read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated or corrupt"):
        load(tmp_path)
