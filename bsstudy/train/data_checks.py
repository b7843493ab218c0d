"""The data is checked before training: what an IDX data set promises (10 classes, 28x28 images, as many
labels as images) is verified against its files, and a file that breaks it is named with the way out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bsstudy import DataError

IDX_CLASSES = 10  # MNIST, Fashion-MNIST and KMNIST: labels 0 ... 9
IDX_IMAGE_SHAPE = (28, 28)
WAY_OUT = (
    "The file is corrupt or from another data set: delete it and let torchvision download it again "
    "(data.download=true), or replace it with the original"
)


def check_idx_arrays(name: str, arrays: dict[str, np.ndarray], paths: dict[str, Path]) -> None:
    """Each split: images [n, 28, 28], as many labels as images, every label in 0 ... 9; else DataError."""
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
