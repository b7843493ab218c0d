"""Datasets as normalized float32 tensors, and the seeded order in which an epoch visits them.

Everything is loaded once; an epoch is a seeded permutation of the training indices and every
batch is a slice of it, so the hot loop does no per-item Python work.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bsstudy import ConfigError, DataError, MissingDataError, is_positive_int
from bsstudy.streams import rng, torch_generator
from bsstudy.train.data_checks import WAY_OUT, check_classes, check_idx_arrays

log = logging.getLogger(__name__)

# name -> (torchvision class name = folder under <root>, extra folders searched before downloading)
IDX_DATASETS = {
    "mnist": ("MNIST", []),
    "fashion_mnist": ("FashionMNIST", ["/usr/share/datasets/fashion-mnist"]),
    "kmnist": ("KMNIST", []),
}
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_MAGIC = {2049: 1, 2051: 3}  # magic number -> number of dimensions (labels, images)


@dataclass
class TensorData:
    """A classification data set held as tensors: x float32 [n, features], y int64 [n]. The validation
    part (x_val, y_val) is held out of the training file (`data.val_size`) and may be empty. `files`: the
    fingerprints of the files it was read from ({IDX file: file_fingerprint}), None for a generated set."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    files: dict[str, dict] | None = None

    def __post_init__(self) -> None:
        if self.x_val is None:
            self.x_val, self.y_val = self.x_train[:0], self.y_train[:0]

    @property
    def n_train(self) -> int:
        """Samples in the training part (the validation part not included)."""
        return len(self.y_train)

    @property
    def n_val(self) -> int:
        return len(self.y_val)

    @property
    def input_size(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def to(self, device: torch.device | str) -> TensorData:
        move = {k: getattr(self, k).to(device) for k in SPLIT_TENSORS}
        return TensorData(self.name, **move, files=self.files)


SPLIT_TENSORS = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")


def load_data(cfg, seed: int) -> TensorData:
    """Build the data set named by `cfg.name` (the `data` config group), normalized, on the CPU: hold out
    `data.val_size` training samples for validation, then subsample the rest (`data.train_size`)."""
    files = None
    if cfg.name in IDX_DATASETS:  # a run saved before data.check_known was not checked: its data loads as it trained
        arrays, files = load_idx_dataset(cfg.name, Path(cfg.root), cfg.download, cfg.get("check_known", False))
    elif cfg.name == "digits":
        arrays = load_digits(cfg.test_fraction, seed)
    else:
        arrays = make_synthetic(cfg, seed)
        source = f"the training set (data.n_train={cfg.n_train})"
        check_classes(cfg.name, arrays["y_train"], cfg.num_classes, source, known=False)
    arrays = hold_out_validation(arrays, cfg.get("val_size", 0), seed)  # runs saved before val_size had none
    x_train, x_val, x_test = standardize(arrays["x_train"], arrays["x_val"], arrays["x_test"])
    labels = {k: torch.as_tensor(arrays[k], dtype=torch.int64) for k in ("y_train", "y_val", "y_test")}
    data = TensorData(cfg.name, x_train=x_train, x_test=x_test, x_val=x_val, **labels, files=files)
    return take_subsets(data, cfg.train_size, cfg.test_size, seed)


def hold_out_validation(arrays: dict[str, np.ndarray], val_size: int, seed: int) -> dict[str, np.ndarray]:
    """Move a seeded random `val_size` of the training samples (stream "val_split") to x_val/y_val; the
    training samples keep their file order. val_size = 0 holds out nothing."""
    n = len(arrays["y_train"])
    if not (isinstance(val_size, int) and not isinstance(val_size, bool) and 0 <= val_size < n):
        raise ConfigError(
            f"data.val_size must be an integer in [0, {n - 1}] (0: no validation split; at most {n - 1} leaves "
            f"a training sample of the {n}); got {val_size!r}"
        )
    is_val = np.zeros(n, dtype=bool)
    is_val[rng(seed, "val_split").permutation(n)[:val_size]] = True
    x, y = arrays["x_train"], arrays["y_train"]
    return arrays | {"x_train": x[~is_val], "y_train": y[~is_val], "x_val": x[is_val], "y_val": y[is_val]}


def standardize(x_train: np.ndarray, *others: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Flatten and scale every set with the training part's pixel mean and std: x <- (x - mu) / sigma."""
    train = torch.as_tensor(x_train.reshape(len(x_train), -1), dtype=torch.float32)
    mu, sigma = train.mean(), train.std()
    flat = [torch.as_tensor(x.reshape(len(x), train.shape[1]), dtype=torch.float32) for x in others]
    return (train - mu) / sigma, *((x - mu) / sigma for x in flat)


def take_subsets(data: TensorData, train_size: int | None, test_size: int | None, seed: int) -> TensorData:
    """Keep a seeded random subset of the training and test parts (`data.train_size`, `data.test_size`;
    streams "train_subset", "test_subset"); None keeps all. The validation part stays whole."""
    parts = {}
    for split, size in (("train", train_size), ("test", test_size)):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if size is not None:
            if not (is_positive_int(size) and size <= len(y)):
                raise ConfigError(f"data.{split}_size must be null or an integer in [1, {len(y)}]; got {size!r}")
            keep = torch.randperm(len(y), generator=torch_generator(seed, f"{split}_subset"))[:size]
            x, y = x[keep], y[keep]
        parts[f"x_{split}"], parts[f"y_{split}"] = x, y
    return TensorData(data.name, **parts, x_val=data.x_val, y_val=data.y_val, files=data.files)


# --- IDX files (MNIST family) -------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 2049 = labels [n], 2051 = images [n, rows, cols]."""
    raw = read_maybe_gzipped(path)
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic not in IDX_MAGIC:
        raise ValueError(f"{path} is not an IDX label or image file (magic number {magic}, expected 2049 or 2051)")
    ndim = IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(raw)} bytes, the header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable, for torch


def read_maybe_gzipped(path: Path) -> bytes:
    """The bytes of `path`, decompressed when it ends in .gz; a truncated or non-gzip .gz is a DataError naming it."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path} is not a complete gzip file ({type(err).__name__}: {err})") from None


def find_idx_file(stem: str, folders: list[Path]) -> Path | None:
    """First of `<folder>/<stem>` or `<folder>/<stem>.gz` that exists, in folder order."""
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_idx_dataset(
    name: str, root: Path, download: bool, check_known: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Find the four IDX files of `name` under `root` (torchvision layout), in known system folders,
    or by torchvision's download; raise one error listing every place tried if all fail. Returns their arrays
    (checked: data_checks.py; `check_known`: data.check_known) and their fingerprints by file."""
    folder_name, extra = IDX_DATASETS[name]
    folders = [root / folder_name / "raw", *map(Path, extra)]
    paths = {key: find_idx_file(stem, folders) for key, stem in IDX_FILES.items()}
    if None in paths.values() and download:
        download_error = torchvision_download(folder_name, root)
        paths = {key: find_idx_file(stem, folders) for key, stem in IDX_FILES.items()}
    else:
        download_error = "skipped (data.download=false)"
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        tried = "\n".join(f"  - {f}{folder_state(f)}" for f in folders)
        raise MissingDataError(
            f"data={name}: cannot find {', '.join(missing)} (.gz or unpacked).\n"
            f"Looked in:\n{tried}\n  - torchvision download: {download_error}\n"
            f"Ways out:\n"
            f"  1. go online and keep data.download=true (torchvision downloads to {root / folder_name / 'raw'});\n"
            f"  2. put the IDX files under <data.root>/{folder_name}/raw/ and set data.root "
            f"(or the BSSTUDY_DATA environment variable) to that root;\n"
            f"  3. pick a data set that is available offline: data=digits, or data=fashion_mnist "
            f"with its files (e.g. data.root=../shared/data)."
        )
    try:
        arrays = {key: read_idx(path) for key, path in paths.items()}
    except ValueError as err:
        raise DataError(f"data={name}: {err}. {WAY_OUT}") from None
    check_idx_arrays(name, arrays, paths, check_known)
    return arrays, {IDX_FILES[key]: file_fingerprint(paths[key], arrays[key]) for key in IDX_FILES}


def file_fingerprint(path: Path, array: np.ndarray) -> dict:
    """What a data file holds, cheaply (about 0.05 s for Fashion-MNIST's 55 MB): where it was found, the shape of its
    array and a blake2b hash of its bytes (the same contents, gzipped or not, give the same fingerprint).
    identity.json records it, so a resumed run notices that data.root holds other files (runfolder/identity.py)."""
    digest = hashlib.blake2b(np.ascontiguousarray(array), digest_size=16).hexdigest()
    return {"path": str(path), "shape": list(array.shape), "blake2b": digest}


def folder_state(folder: Path) -> str:
    """What is wrong with a folder looked in, for the error's list: " (no such folder)", " (<path> is a file, not a
    folder)" when that part of the path is a file (a data.root given as a file), "" when the folder is there."""
    for part in (folder, *folder.parents):
        if part.is_dir():
            return "" if part == folder else " (no such folder)"
        if part.exists():
            return f" ({part} is a file, not a folder)"
    return " (no such folder)"


def torchvision_download(folder_name: str, root: Path) -> str:
    """Let torchvision download a data set into `root/<folder_name>/raw`; return what happened."""
    import torchvision.datasets

    log.info("Downloading %s with torchvision into %s", folder_name, root)
    try:
        for train in (True, False):
            getattr(torchvision.datasets, folder_name)(str(root), train=train, download=True)
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError... depending on the mirror
        return f"failed ({type(err).__name__}: {err})".replace("\n", " ")[:300]
    return "done"


# --- data sets that need no files ---------------------------------------------------------------


def load_digits(test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, split into train and test with a seeded shuffle."""
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = sklearn_digits(return_X_y=True)
    order = rng(seed, "dataset").permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def make_synthetic(cfg, seed: int) -> dict[str, np.ndarray]:
    """Gaussian clusters: class c has centre mu_c ~ N(0, class_sep^2 I), its samples are mu_c + N(0, I)."""
    draws = rng(seed, "dataset")
    centres = draws.normal(0.0, cfg.class_sep, size=(cfg.num_classes, cfg.input_size))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = draws.integers(0, cfg.num_classes, size=n)
        return (centres[y] + draws.normal(size=(n, cfg.input_size))).astype(np.float32), y

    x_train, y_train = draw(cfg.n_train)
    x_test, y_test = draw(cfg.n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# --- the order of an epoch ----------------------------------------------------------------------


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch `epoch` visits the n training samples: a CPU permutation from stream
    "epoch_order" keyed by the epoch alone, so it is the same on every device and after a resume."""
    return torch.randperm(n, generator=torch_generator(seed, "epoch_order", epoch))


def steps_per_epoch(n: int, samples_per_step: int, drop_last: bool) -> int:
    """Optimizer steps in one epoch of n samples: floor(n / s) with drop_last, else ceil(n / s)."""
    return n // samples_per_step if drop_last else math.ceil(n / samples_per_step)
