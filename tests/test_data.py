import gzip
import logging
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bsstudy import ConfigError, UsageError
from bsstudy.config import DATA_RULES, check_settings
from bsstudy.train.data import TensorData, epoch_permutation, load_data, read_idx, steps_per_epoch


def data_cfg(**kw):
    base = {
        "name": "synthetic",
        "root": "unused",
        "download": False,
        "check_known": False,  # the IDX files below are tiny custom copies, not the 60,000 / 10,000 of the real sets
        "val_size": 0,
        "train_size": None,
        "test_size": None,
        "n_train": 200,
        "n_test": 50,
        "input_size": 8,
        "num_classes": 3,
        "class_sep": 1.0,
        "test_fraction": 0.2,
    }
    return OmegaConf.create(base | kw)


def write_idx(path, array, magic):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def fake_mnist(root, n_train=20, n_test=10, gz=True):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    ext = ".gz" if gz else ""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(raw / f"{split}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n), 2049)
    return raw


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_gzipped_or_unpacked_in_torchvision_layout(tmp_path, gz):
    fake_mnist(tmp_path, gz=gz)
    data = load_data(data_cfg(name="mnist", root=str(tmp_path)), seed=0)
    assert data.x_train.shape == (20, 784) and data.x_test.shape == (10, 784)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    # standardized with the training set's statistics: mean 0, std 1 over all training pixels
    assert abs(data.x_train.mean().item()) < 1e-4 and abs(data.x_train.std().item() - 1) < 1e-4


def test_idx_with_wrong_magic_number_is_rejected_with_the_file_name(tmp_path):
    raw = fake_mnist(tmp_path, gz=False)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(20), 1234)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*magic number 1234"):
        load_data(data_cfg(name="mnist", root=str(tmp_path)), seed=0)


def test_truncated_idx_file_is_rejected(tmp_path):
    raw = fake_mnist(tmp_path, gz=False)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(path)


def test_missing_files_without_download_list_places_and_ways_out(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_data(data_cfg(name="mnist", root=str(tmp_path)), seed=0)
    assert isinstance(err.value, UsageError)  # the CLI prints it without a traceback
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "data.download=false" in message
    assert "go online" in message and "<data.root>/MNIST/raw/" in message and "data=digits" in message


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ConfigError, match=r"data.name must be one of .*fashion_mnist.*got 'cifar'"):
        check_settings(data_cfg(name="cifar"), DATA_RULES, "data")


def test_digits_needs_no_files_and_splits_by_test_fraction():
    data = load_data(data_cfg(name="digits"), seed=0)
    assert data.input_size == 64 and data.num_classes == 10
    assert len(data.y_test) == round(1797 * 0.2) and data.n_train + len(data.y_test) == 1797


def test_subsets_are_seeded_and_sized():
    a = load_data(data_cfg(train_size=50, test_size=20), seed=3)
    b = load_data(data_cfg(train_size=50, test_size=20), seed=3)
    assert a.n_train == 50 and len(a.y_test) == 20
    assert torch.equal(a.x_train, b.x_train)
    with pytest.raises(ConfigError, match=r"data.train_size must be null or an integer in \[1, 200\]"):
        load_data(data_cfg(train_size=500), seed=0)


def test_fashion_mnist_loads_from_the_offline_folder(shared_data):
    cfg = data_cfg(name="fashion_mnist", root=str(shared_data), check_known=True, train_size=1000, test_size=500)
    data = load_data(cfg, seed=0)
    assert data.input_size == 784 and data.num_classes == 10 and data.n_train == 1000


def test_the_fashion_mnist_files_get_a_cheap_fingerprint_each(shared_data):
    from bsstudy.train.data import IDX_FILES, file_fingerprint, read_idx

    cfg = data_cfg(name="fashion_mnist", root=str(shared_data), check_known=True, train_size=100, test_size=100)
    files = load_data(cfg, seed=0).files  # of the whole files, whatever the subsets
    assert list(files) == list(IDX_FILES.values()) and files["train-images-idx3-ubyte"]["shape"] == [60000, 28, 28]
    path = Path(files["train-images-idx3-ubyte"]["path"])
    images = read_idx(path)
    started = time.perf_counter()
    assert file_fingerprint(path, images) == files["train-images-idx3-ubyte"]
    assert time.perf_counter() - started < 1.0  # about 0.05 s: each start and resume computes it


def test_a_generated_set_that_misses_a_class_in_training_warns(caplog):
    with caplog.at_level(logging.WARNING):
        data = load_data(data_cfg(n_train=3, num_classes=10), seed=0)
    assert data.files is None  # generated from the config: no files to fingerprint
    assert "data=synthetic: the training set (data.n_train=3) has no training sample of classes" in caplog.text


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    assert torch.equal(epoch_permutation(100, 0, 3), epoch_permutation(100, 0, 3))
    assert not torch.equal(epoch_permutation(100, 0, 3), epoch_permutation(100, 0, 4))
    assert sorted(epoch_permutation(100, 1, 0).tolist()) == list(range(100))


def test_steps_per_epoch_with_and_without_drop_last():
    assert steps_per_epoch(60000, 1024, drop_last=False) == 59  # 58 full steps + one of 608 samples
    assert steps_per_epoch(60000, 1024, drop_last=True) == 58
    assert steps_per_epoch(60000, 64, drop_last=True) == steps_per_epoch(60000, 64, drop_last=False) - 1


# --- the validation split ------------------------------------------------------------------------

N_FILE, N_TEST = 300, 40


def numbered_mnist(root):
    """IDX files whose image i carries its number in pixels 0 and 1 (i // 256, i % 256); the test images are
    numbered from N_FILE on. Pixels 2 and 3 are always 0 and 255, so the standardization can be undone."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, numbers in (("train", range(N_FILE)), ("t10k", range(N_FILE, N_FILE + N_TEST))):
        images = np.full((len(numbers), 28, 28), 7)
        images[:, 0, 0], images[:, 0, 1] = np.divmod(np.array(numbers), 256)
        images[:, 0, 2], images[:, 0, 3] = 0, 255
        write_idx(raw / f"{split}-images-idx3-ubyte", images, 2051)
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.array(numbers) % 10, 2049)
    return root


def numbers(x: torch.Tensor) -> set[int]:
    """The image numbers of standardized rows: raw = 255 (x - x[2]) / (x[3] - x[2])."""
    raw = 255 * (x[:, :2] - x[:, 2:3]) / (x[:, 3:4] - x[:, 2:3])
    return {int(n) for n in torch.round(raw[:, 0] * 256 + raw[:, 1]).tolist()}


def numbered(root, seed=0, **kw) -> TensorData:
    return load_data(data_cfg(name="mnist", root=str(root), **kw), seed=seed)


def test_validation_split_is_disjoint_from_training_and_test_and_sizes_add_up(tmp_path):
    data = numbered(numbered_mnist(tmp_path), val_size=60)
    train, val, test = numbers(data.x_train), numbers(data.x_val), numbers(data.x_test)
    assert data.n_train == N_FILE - 60 and data.n_val == len(val) == 60 and len(train) == N_FILE - 60
    assert train.isdisjoint(val) and train | val == set(range(N_FILE))
    assert test == set(range(N_FILE, N_FILE + N_TEST))
    assert torch.equal(data.y_val, torch.tensor(sorted(val)) % 10)  # labels travel with their images


def test_validation_split_is_seeded(tmp_path):
    root = numbered_mnist(tmp_path)
    first, again, other = (numbers(numbered(root, seed, val_size=60).x_val) for seed in (0, 0, 1))
    assert again == first and other != first


def test_validation_is_held_out_before_train_size_subsamples_the_rest(tmp_path):
    root = numbered_mnist(tmp_path)
    full = numbered(root, val_size=60)
    small = numbered(root, val_size=60, train_size=100)
    assert numbers(small.x_val) == numbers(full.x_val)  # train_size does not change the validation samples
    assert small.n_train == 100 and numbers(small.x_train) < numbers(full.x_train)


def test_standardization_uses_the_training_part_only():
    # mean 0 and std 1 over the 150 training rows alone; with the 50 held-out rows in the statistics the
    # training part's mean would be off by about 1 / sqrt(1200), far above the tolerance
    data = load_data(data_cfg(val_size=50), seed=0)
    assert abs(data.x_train.mean().item()) < 1e-5 and abs(data.x_train.std().item() - 1) < 1e-5
    assert abs(torch.cat([data.x_train, data.x_val]).mean().item()) > 1e-3


def test_no_validation_split_gives_empty_validation_tensors():
    data = load_data(data_cfg(), seed=0)
    assert data.n_val == 0 and data.x_val.shape == (0, 8) and data.n_train == 200


@pytest.mark.parametrize("val_size", [200, 500, -1, 2.5, "10"])
def test_validation_size_must_leave_a_training_sample(val_size):
    with pytest.raises(ConfigError, match=r"data.val_size must be an integer in \[0, 199\]"):
        load_data(data_cfg(val_size=val_size), seed=0)


def test_digits_hold_out_validation_from_their_training_part():
    data = load_data(data_cfg(name="digits", val_size=300), seed=0)
    assert data.n_val == 300 and data.n_train + data.n_val + len(data.y_test) == 1797
