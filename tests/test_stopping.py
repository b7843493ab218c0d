"""trainer.stop_at: Lightning EarlyStopping on the full-pass training loss/accuracy of metrics.csv's rows."""

import json

import pytest
from lightning.pytorch.callbacks import Timer

from bsstudy import ConfigError
from bsstudy.runfolder import read_metrics
from bsstudy.train.run import train

from conftest import compose_run

SYNTH = ["data=synthetic", "model.hidden_sizes=[16]", "data.batch_size=64", "trainer.max_epochs=8"]


def rows_of(run_dir):
    return read_metrics(run_dir / "metrics.csv")


@pytest.fixture(scope="module")
def free(tmp_path_factory):
    """The rows of the same run without a stopping rule: where each target is first reached."""
    run_dir = tmp_path_factory.mktemp("free")
    train(compose_run(run_dir, SYNTH))
    return rows_of(run_dir)


def test_loss_target_stops_at_the_first_epoch_at_or_below_it(tmp_path, free):
    # a target the free run crosses in its middle: the stopped run must end at the first row at or below it
    target = free[4]["train_loss"]
    first = next(r["epoch"] for r in free[1:] if r["train_loss"] <= target)
    summary = train(compose_run(tmp_path / "stopped", [*SYNTH, f"trainer.stop_at.train_loss={target!r}"]))
    rows = rows_of(tmp_path / "stopped")
    assert rows[-1]["epoch"] == first < 8
    assert all(r["train_loss"] > target for r in rows[1:-1]) and rows[-1]["train_loss"] <= target
    assert summary["stopped"] == f"train_loss <= {target:.6g} at epoch {first}" and summary["stopped_epoch"] == first
    assert summary["status"] == "completed" and summary["epochs_completed"] == summary["epochs_trained"] == first
    assert json.loads((tmp_path / "stopped" / "summary.json").read_text())["stopped"] == summary["stopped"]


def test_accuracy_target_equal_to_a_rows_accuracy_stops_there(tmp_path, free):
    target = free[5]["train_acc"]  # reached exactly: >= must hold where EarlyStopping's own test is strict
    first = next(r["epoch"] for r in free[1:] if r["train_acc"] >= target)
    summary = train(compose_run(tmp_path, [*SYNTH, f"trainer.stop_at.train_acc={target!r}"]))
    assert rows_of(tmp_path)[-1]["epoch"] == first
    assert summary["stopped"] == f"train_acc >= {target:.6g} at epoch {first}"


def test_plateau_stops_after_patience_epochs_without_an_improvement_of_min_delta(tmp_path):
    # a min_delta larger than any epoch's fall in loss: epoch 1 sets the best, 2 and 3 do not beat it by 10
    summary = train(compose_run(tmp_path, [*SYNTH, "trainer.stop_at.patience=2", "trainer.stop_at.min_delta=10.0"]))
    assert rows_of(tmp_path)[-1]["epoch"] == 3
    assert summary["stopped"] == "plateau: train_loss improved by no more than 10 in 2 epochs at epoch 3"


def test_max_epochs_caps_an_unreached_target(tmp_path):
    summary = train(compose_run(tmp_path, [*SYNTH, "trainer.max_epochs=2", "trainer.stop_at.train_loss=1e-9",
                                           "trainer.stop_at.patience=5"]))  # fmt: skip
    assert rows_of(tmp_path)[-1]["epoch"] == 2
    assert (summary["stopped"], summary["stopped_epoch"]) == ("max_epochs", 2)


def test_a_users_own_early_stopping_sees_the_rows_columns(tmp_path, free):
    target = (free[2]["test_loss"] + free[3]["test_loss"]) / 2
    first = next(r["epoch"] for r in free[1:] if r["test_loss"] < target)
    own = ("+trainer.callbacks.own={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: test_loss, "
           f"stopping_threshold: {target!r}, check_on_train_epoch_end: true}}")  # fmt: skip
    summary = train(compose_run(tmp_path, [*SYNTH, own]))
    assert rows_of(tmp_path)[-1]["epoch"] == first
    assert summary["stopped"] == f"test_loss <= {target:.6g} at epoch {first}"


@pytest.mark.parametrize("limit", ["+trainer.max_time=00:00:00:19", "+trainer.max_steps=76"])
def test_a_stop_within_an_epoch_counts_only_whole_epochs_and_marks_the_cut_one(tmp_path, monkeypatch, limit):
    # 32 steps per epoch, 4 per chunk; the timer's clock ticks one second per chunk: 19 s or 76 steps stop after
    # chunk 19, 12 steps (37.5%) into epoch 3
    tick = Timer.on_train_batch_end

    def one_second_per_chunk(self, trainer, *args, **kwargs):
        self.seconds = getattr(self, "seconds", 0) + 1
        tick(self, trainer, *args, **kwargs)

    monkeypatch.setattr(Timer, "on_train_batch_end", one_second_per_chunk)
    monkeypatch.setattr(Timer, "time_elapsed", lambda self, stage=None: getattr(self, "seconds", 0))
    summary = train(compose_run(tmp_path, [*SYNTH, "trainer.chunk_samples=256", limit]))
    rows = rows_of(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3] and rows[-1]["optimizer_steps"] == 76
    assert rows[-1]["epoch_fraction"] == 0.375 and all(r.get("epoch_fraction") is None for r in rows[:-1])
    assert (summary["epochs_completed"], summary["epochs_trained"], summary["stopped_epoch"]) == (2, 2.375, 3)
    assert summary["samples_seen"] == 76 * 64 and summary["status"] == "completed"
    cause = "timer: 0:00:19 of training" if "max_time" in limit else "trainer.max_steps: 76 optimizer steps"
    assert summary["stopped"] == f"{cause} within epoch 3 (2.38 epochs trained)"
    assert json.loads((tmp_path / "summary.json").read_text())["epochs_trained"] == 2.375


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.stop_at.train_loss=0", r"trainer.stop_at.train_loss must be null or a number > 0; got 0"),
        ("trainer.stop_at.train_loss=abc", r"trainer.stop_at.train_loss must be null or a number > 0; got 'abc'"),
        ("trainer.stop_at.train_acc=1.5", r"trainer.stop_at.train_acc must be null or a number in \(0, 1\]"),
        ("trainer.stop_at.patience=0", r"trainer.stop_at.patience must be null or a positive integer; got 0"),
        ("trainer.stop_at.min_delta=-1", r"trainer.stop_at.min_delta must be a number >= 0; got -1"),
        ("+trainer.stop_at.val_loss=0.1", r"trainer.stop_at.val_loss is not a setting; allowed: train_loss, "),
    ],
)
def test_bad_stop_at_settings_fail_before_training_naming_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_run(tmp_path, [*SYNTH, override]))
    assert not (tmp_path / "metrics.csv").exists()
