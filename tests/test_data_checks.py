"""Corrupt and inconsistent IDX files are named, with the way out, before any training (issue 15, item 5), and so
are files that are not the known data set's: other split sizes, swapped train and test files, missing classes
(issue 25). Each case writes tiny IDX files (20 train, 10 test images) in tmp_path and breaks one of them; the
known-set checks see them as the full sets (KNOWN_SIZES patched), and the real files swapped are checked too."""

import gzip
import logging

import numpy as np
import pytest

from bsstudy import DataError
from bsstudy.train import data_checks
from bsstudy.train.data import IDX_FILES, load_idx_dataset

from conftest import RAW, write_fashion_mnist


def load(root, check_known=False):
    """The arrays of the files under `root`; they are tiny, so not checked against the known sizes unless asked."""
    return load_idx_dataset("fashion_mnist", root, download=False, check_known=check_known)[0]


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


# --- the known data set's promises (issue 25) --------------------------------------------------------------------


@pytest.fixture
def tiny_is_known(monkeypatch):
    """The tiny files stand for the full Fashion-MNIST: 20 training and 10 test samples."""
    monkeypatch.setitem(data_checks.KNOWN_SIZES, "fashion_mnist", (20, 10))


def swapped(rng, n_train=10, n_test=20):
    """Arrays of a train/test swap: the training files hold the test set's number of samples and the reverse."""
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28)), "y_train": np.arange(n_train) % 10,
            "x_test": rng.integers(0, 256, (n_test, 28, 28)), "y_test": np.arange(n_test) % 10}  # fmt: skip


def test_swapped_train_and_test_files_are_named_with_the_sizes_expected(tmp_path, tiny_is_known):
    paths = write_fashion_mnist(tmp_path, **swapped(np.random.default_rng(0)))
    with pytest.raises(DataError) as err:
        load(tmp_path, check_known=True)
    message = str(err.value)
    assert message.startswith(f"data=fashion_mnist: {paths['x_train']} holds 10 images, but the fashion_mnist train ")
    assert "set has 20 (the test set's size: are train-* and t10k-* swapped?)" in message
    assert "data.check_known=false" in message and "\n" not in message
    assert len(load(tmp_path, check_known=False)["y_train"]) == 10  # a deliberately custom copy loads


def test_a_test_file_of_another_size_is_named(tmp_path, tiny_is_known):
    paths = write_fashion_mnist(tmp_path, y_train=np.arange(20) % 10, x_test=np.zeros((7, 28, 28)), y_test=np.arange(7))
    with pytest.raises(
        DataError, match=r"holds 7 images, but the fashion_mnist test set has 10\. .*check_known"
    ) as err:
        load(tmp_path, check_known=True)
    assert str(err.value).startswith(f"data=fashion_mnist: {paths['x_test']} ") and "swapped" not in str(err.value)


SWAPPED = r"train-images-idx3-ubyte.gz holds 10,000 images, but the fashion_mnist train set has 60,000 \(the test"


def test_the_real_files_swapped_are_refused(tmp_path, shared_data):
    raw = tmp_path / RAW
    raw.mkdir(parents=True)
    for stem in IDX_FILES.values():
        other = stem.replace("train", "t10k") if stem.startswith("train") else stem.replace("t10k", "train")
        (raw / f"{other}.gz").symlink_to(shared_data / RAW / f"{stem}.gz")
    with pytest.raises(DataError, match=SWAPPED):
        load(tmp_path, check_known=True)


def test_missing_classes_are_an_error_for_a_known_set_and_a_warning_for_a_custom_copy(tmp_path, tiny_is_known, caplog):
    paths = write_fashion_mnist(tmp_path, y_train=np.array([0, 1, 2, 4, 5, 6, 8, 9] * 2 + [0, 1, 2, 4]))
    with pytest.raises(DataError) as err:
        load(tmp_path, check_known=True)
    assert str(err.value).startswith(
        f"data=fashion_mnist: {paths['y_train']} has no training sample of classes 3, 7 (of the 10: 0 ... 9)"
    )
    assert "data.check_known=false" in str(err.value)
    with caplog.at_level(logging.WARNING):
        load(tmp_path, check_known=False)
    assert "has no training sample of classes 3, 7" in caplog.text and "training without them" in caplog.text


def test_the_fingerprint_is_of_the_contents_whether_gzipped_or_not(tmp_path):
    write_fashion_mnist(tmp_path / "gz", gz=True)
    write_fashion_mnist(tmp_path / "plain", gz=False)
    write_fashion_mnist(tmp_path / "other", x_test=np.ones((10, 28, 28)))
    gz, plain, other = (load_idx_dataset("fashion_mnist", tmp_path / name, False, False)[1]
                        for name in ("gz", "plain", "other"))  # fmt: skip
    assert list(gz) == list(IDX_FILES.values()) and gz["t10k-images-idx3-ubyte"]["shape"] == [10, 28, 28]
    assert gz["t10k-images-idx3-ubyte"]["path"].endswith("t10k-images-idx3-ubyte.gz")

    def contents(files):
        return {name: (f["shape"], f["blake2b"]) for name, f in files.items()}

    assert contents(gz) == contents(plain)  # the same contents, unpacked
    changed = {name for name, f in contents(other).items() if f != contents(gz)[name]}
    assert changed == {"t10k-images-idx3-ubyte"}
