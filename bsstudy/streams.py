"""Every random stream of a run, derived from the run's one seed.

A stream is named (`STREAMS`) and may take integer keys (an epoch, a measurement, a trial). Its
generator is seeded by numpy's SeedSequence over (seed, crc32(stream name), number of keys, *keys): SeedSequence
hashes its whole entropy list, so two streams, or two keys of one stream, give statistically
independent draws, unlike seeds built by arithmetic (`seed * 1_000_003 + epoch`), where stream A's
key can equal stream B's. Names, not positions, pick the stream, so adding one changes no other. The
number of keys is part of the entropy because SeedSequence pads its entropy with zeros: without it,
(stream, k) and (stream, k, 0) would be the same stream.

>>> int(rng(0, "epoch_order", 1).integers(10)) == int(rng(0, "epoch_order", 1).integers(10))
True
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

STREAMS = (
    "epoch_order",  # the order in which epoch e visits the training samples (key: epoch)
    "val_split",  # which training samples are held out for validation
    "train_subset",  # data.train_size
    "test_subset",  # data.test_size
    "dataset",  # synthetic data and the digits train/test split
    "noise_scale",  # the noise-scale probe's samples (keys: epoch, measurement)
    "geometry_subset",  # the samples a geometry measure evaluates the loss on (key: split code)
    "geometry_directions",  # random directions and subspaces (key: one of the DIRECTIONS_* measures below)
    "gradsum",  # the gradient-sum experiment's trials (keys: regime, batch size or 0, trial)
    "gradsum_bootstrap",  # the gradient-sum experiment's resamples of its trials (key: regime)
    "tuned_bootstrap",  # the tuned study's resamples of seeds for the interval of B_crit (analysis/report/tuned.py)
)

# keys of "geometry_directions": each measure draws its own directions
DIRECTIONS_SHARPNESS, DIRECTIONS_HESSIAN, DIRECTIONS_LANDSCAPE, DIRECTIONS_LANCZOS = 0, 1, 2, 3


def seed_sequence(seed: int, stream: str, *keys: int) -> np.random.SeedSequence:
    """The SeedSequence of `stream` (one of STREAMS) under the run's `seed`, for the integer `keys`."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; the streams are {STREAMS}")
    if not all(isinstance(k, (int, np.integer)) and k >= 0 for k in (seed, *keys)):
        raise ValueError(f"seed and stream keys must be integers >= 0; got seed={seed!r}, keys={keys!r}")
    return np.random.SeedSequence([int(seed), zlib.crc32(stream.encode()), len(keys), *map(int, keys)])


def rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """A numpy Generator for `stream` (see the module docstring)."""
    return np.random.default_rng(seed_sequence(seed, stream, *keys))


def torch_generator(seed: int, stream: str, *keys: int) -> torch.Generator:
    """A CPU torch.Generator for `stream`, seeded with 63 bits of its SeedSequence."""
    state = int(seed_sequence(seed, stream, *keys).generate_state(1, np.uint64)[0]) >> 1
    return torch.Generator().manual_seed(state)
