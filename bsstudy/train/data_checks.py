"""The data is checked before training: what an IDX data set promises (10 classes, 28x28 images, as many
labels as images, 60,000 training and 10,000 test samples, every class in the training labels) is verified
against its files, and a file that breaks it is named with the way out. `data.check_known=false` marks a
deliberately custom copy: its split sizes are not checked and a missing class is a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bsstudy import DataError

log = logging.getLogger(__name__)

IDX_CLASSES = 10  # MNIST, Fashion-MNIST and KMNIST: labels 0 ... 9
IDX_IMAGE_SHAPE = (28, 28)
KNOWN_SIZES = {"mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000), "kmnist": (60_000, 10_000)}  # train, test
WAY_OUT = (
    "The file is corrupt or from another data set: delete it and let torchvision download it again "
    "(data.download=true), or replace it with the original"
)
CUSTOM_COPY = "set data.check_known=false if it is a deliberately custom copy"


def check_idx_arrays(
    name: str, arrays: dict[str, np.ndarray], paths: dict[str, Path], check_known: bool = True
) -> None:
    """Each split: images [n, 28, 28], as many labels as images, every label in 0 ... 9; else DataError. Then,
    with `check_known` (data.check_known), every class in the training labels and the known split sizes."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        x_path, y_path = paths[f"x_{split}"], paths[f"y_{split}"]
        if x.shape[1:] != IDX_IMAGE_SHAPE:
            raise DataError(
                f"data={name}: {x_path} holds images of {'x'.join(map(str, x.shape[1:]))} pixels; {name} images are "
                f"{'x'.join(map(str, IDX_IMAGE_SHAPE))}. {WAY_OUT}"
            )
        if len(x) != len(y):
            raise DataError(
                f"data={name}: {x_path} has {len(x)} images but {y_path} has {len(y)} labels; they must match. "
                f"{WAY_OUT}"
            )
        if len(y) and (bad := np.flatnonzero(y >= IDX_CLASSES)).size:
            raise DataError(
                f"data={name}: {y_path} has label {int(y[bad[0]])} at index {int(bad[0])} ({bad.size} labels out of "
                f"range); {name} has {IDX_CLASSES} classes, labels 0 ... {IDX_CLASSES - 1}. {WAY_OUT}"
            )
    check_classes(name, arrays["y_train"], IDX_CLASSES, str(paths["y_train"]), known=check_known)
    if check_known:
        check_split_sizes(name, arrays, paths)


def check_split_sizes(name: str, arrays: dict[str, np.ndarray], paths: dict[str, Path]) -> None:
    """The files hold the samples the data set promises (data.train_size and data.test_size subsample after
    loading, so this is about the files); a training file of the test set's size is named as swapped files."""
    expected = dict(zip(("train", "test"), KNOWN_SIZES[name], strict=True))
    for split, other in (("train", "test"), ("test", "train")):
        n = len(arrays[f"y_{split}"])
        if n != expected[split]:
            swapped = f" (the {other} set's size: are train-* and t10k-* swapped?)" if n == expected[other] else ""
            raise DataError(
                f"data={name}: {paths[f'x_{split}']} holds {n:,} images, but the {name} {split} set has "
                f"{expected[split]:,}{swapped}. {WAY_OUT}; or {CUSTOM_COPY}"
            )


def missing_classes(labels: np.ndarray, num_classes: int) -> list[int]:
    """The classes 0 ... num_classes - 1 that no label is."""
    return np.flatnonzero(np.bincount(labels, minlength=num_classes)[:num_classes] == 0).tolist()


def check_classes(name: str, y_train: np.ndarray, num_classes: int, source: str, known: bool) -> None:
    """Every class the data set promises has a training sample: a model that never sees a class still has its
    output and the test set still scores it, so the run would look merely worse. A DataError for a known data set
    (naming `source`, the labels' file), a warning for a custom one (data.check_known=false, generated sets)."""
    if not (missing := missing_classes(np.asarray(y_train), num_classes)):
        return
    which = f"{'class' if len(missing) == 1 else 'classes'} {', '.join(map(str, missing))}"
    message = f"data={name}: {source} has no training sample of {which} (of the {num_classes}: 0 ... {num_classes - 1})"
    if known:
        raise DataError(f"{message}. {WAY_OUT}; or {CUSTOM_COPY}")
    log.warning("%s; training without them", message)
