"""Every random stream comes from bsstudy/streams.py and no two share draws."""

import numpy as np
import pytest
import torch

from bsstudy.measures.objective import seeded_subset
from bsstudy.streams import STREAMS, rng, torch_generator
from bsstudy.train.data import epoch_permutation

N, HEAD = 60_000, 1_000


def overlap(a: torch.Tensor, b: torch.Tensor) -> int:
    return len(np.intersect1d(a.numpy(), b.numpy()))


def test_epoch_order_noise_scale_and_geometry_subset_draw_different_samples():
    # The old seeds (seed * 1_000_003 + epoch, + epoch * 1_009 + measurement, + split salt 1) made all three
    # of these the same permutation. Independent draws of 1,000 of 60,000 share about 1000^2 / 60000 = 17.
    seed = 0
    epoch_1_head = epoch_permutation(N, seed, 1)[:HEAD]
    noise_scale_sample = torch.randperm(N, generator=torch_generator(seed, "noise_scale", 0, 1))[:HEAD]
    index = torch.arange(N)
    geometry_train, _ = seeded_subset(index, index, HEAD, seed, "train")
    pairs = [(epoch_1_head, noise_scale_sample), (epoch_1_head, geometry_train), (noise_scale_sample, geometry_train)]
    assert [overlap(a, b) < 60 for a, b in pairs] == [True, True, True]


def test_keys_of_one_stream_are_independent_draws():
    # epoch e's order does not reappear shifted or equal in epoch e + 1, nor under seed + 1
    assert not torch.equal(epoch_permutation(N, 0, 0), epoch_permutation(N, 0, 1))
    assert not torch.equal(epoch_permutation(N, 0, 1), epoch_permutation(N, 1, 0))
    assert overlap(epoch_permutation(N, 0, 0)[:HEAD], epoch_permutation(N, 1, 0)[:HEAD]) < 60


def test_same_seed_stream_and_keys_reproduce():
    assert torch.equal(epoch_permutation(N, 3, 2), epoch_permutation(N, 3, 2))
    assert np.array_equal(rng(5, "val_split").permutation(100), rng(5, "val_split").permutation(100))
    a = torch.randn(10, generator=torch_generator(7, "geometry_directions", 1))
    assert torch.equal(a, torch.randn(10, generator=torch_generator(7, "geometry_directions", 1)))


def test_a_trailing_zero_key_is_another_stream():
    # SeedSequence pads its entropy with zeros, so [seed, stream, k] and [seed, stream, k, 0] would hash alike
    # unless the number of keys is part of the entropy
    a, b = rng(0, "gradsum", 2), rng(0, "gradsum", 2, 0)
    assert not np.array_equal(a.integers(0, 2**62, size=4), b.integers(0, 2**62, size=4))
    assert not np.array_equal(rng(0, "val_split").random(4), rng(0, "val_split", 0).random(4))


def test_every_stream_name_gives_its_own_draws():
    heads = {name: tuple(rng(0, name).integers(0, 2**62, size=4)) for name in STREAMS}
    assert len(set(heads.values())) == len(STREAMS)


def test_unknown_stream_name_and_negative_keys_are_refused():
    with pytest.raises(ValueError, match="unknown random stream 'epoch'"):
        rng(0, "epoch")
    with pytest.raises(ValueError, match="integers >= 0"):
        torch_generator(-1, "epoch_order", 0)
