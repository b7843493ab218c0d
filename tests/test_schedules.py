"""Batch-size and learning-rate schedules: switch at the given epochs, recorded per epoch, probes keep working."""

import numpy as np
import pytest

from bsstudy import ConfigError
from bsstudy.runfolder import read_metrics
from bsstudy.train.module import value_at
from bsstudy.train.run import train

from conftest import compose_run

SYNTH = ["data=synthetic", "trainer.max_epochs=3"]  # 2048 training samples


def test_a_schedule_holds_each_value_from_its_epoch_on():
    schedule = {0: 1024, 10: 64}
    assert [value_at(schedule, e, 7) for e in (0, 9, 10, 29)] == [1024, 1024, 64, 64]
    assert value_at({5: 0.5}, 4, 1.0) == 1.0 and value_at(None, 3, 2) == 2


def test_batch_size_schedule_switches_the_batch_and_the_update_norm_probe_follows(tmp_path):
    train(compose_run(tmp_path, [*SYNTH, "data.batch_size_schedule={0:256,2:16}", "probes=[update_norms]"]))
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["batch_size"] for r in rows] == [256, 256, 256, 16]
    assert [r["optimizer_steps"] for r in rows] == [0, 8, 16, 16 + 128]  # 2048/256 = 8 and 2048/16 = 128 steps
    steps = [len(np.load(tmp_path / "probes" / "update_norms" / f"epoch_{e:03d}.npz")["total"]) for e in (1, 2, 3)]
    assert steps == [8, 8, 128]


def test_lr_schedule_multiplies_the_lr_from_its_epoch_on(tmp_path):
    train(compose_run(tmp_path, [*SYNTH, "optim.lr_schedule={1:0.5,2:0.1}"]))
    # row e holds the lr of the epoch that led to it (row 0: the starting lr)
    assert [r["lr"] for r in read_metrics(tmp_path / "metrics.csv")] == pytest.approx([0.01, 0.01, 0.005, 0.001])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.batch_size_schedule={0:0}",
            r"data.batch_size_schedule must be null or a mapping \{epoch >= 0: batch size\}",
        ),
        ("data.batch_size_schedule={2:4096}", r"data.batch_size \(4096\) x optim.accumulate \(1\) must be at most"),
        ("optim.lr_schedule={3:-1}", r"optim.lr_schedule must be null or a mapping \{epoch >= 0: factor > 0\}"),
    ],
)
def test_bad_schedules_are_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_run(tmp_path, [*SYNTH, override]))


@pytest.mark.parametrize("preset", ["batch_switch", "lr_decay", "increase_batch"])
def test_schedule_presets_compose(tmp_path, preset):
    cfg = compose_run(tmp_path, [f"experiment={preset}"])
    assert cfg.data.batch_size_schedule or cfg.optim.lr_schedule
