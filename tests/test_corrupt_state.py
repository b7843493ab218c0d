"""Corrupt run state gives clear errors naming the file and what to do; resume falls back to the previous good
checkpoint; a diverged run reports NaN and is not resumed; a failed write leaves no temporary file (issue 15, 7); a
metrics.csv that lacks epochs of the checkpoint is not resumed (issue 25)."""

import errno
import json
import math

import pytest

from bsstudy import RunFolderError
from bsstudy.analysis.report.runs import read_sweep
from bsstudy.runfolder import RunCheckpoints, RunFolder, read_metrics, replace_atomically, write_table
from bsstudy.train.run import train

from conftest import compose_run

TINY = ["data=synthetic", "model.hidden_sizes=[32]", "data.batch_size=32", "trainer.threads=1"]


def measured(rows):
    return [{k: v for k, v in row.items() if not k.endswith("_time_s")} for row in rows]


def crash_after_epoch(monkeypatch, epoch: int):
    save = RunCheckpoints.on_train_epoch_end

    def crash(self, trainer, pl_module):
        save(self, trainer, pl_module)
        if trainer.current_epoch + 1 == epoch:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(RunCheckpoints, "on_train_epoch_end", crash)
    return save


def test_an_empty_last_checkpoint_falls_back_to_the_previous_one_and_resume_stays_exact(tmp_path, monkeypatch):
    overrides = [*TINY, "trainer.max_epochs=3"]
    train(compose_run(tmp_path / "straight", overrides))
    save = crash_after_epoch(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_run(tmp_path / "run", overrides))
    monkeypatch.setattr(RunCheckpoints, "on_train_epoch_end", save)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")  # 0 bytes, as a full disk leaves it
    summary = train(compose_run(tmp_path / "run", [*overrides, "resume=true"]))
    assert summary["status"] == "completed"
    assert measured(read_metrics(tmp_path / "run" / "metrics.csv")) == measured(
        read_metrics(tmp_path / "straight" / "metrics.csv")
    )


def test_unreadable_checkpoints_are_named_with_what_to_do(tmp_path, monkeypatch):
    overrides = [*TINY, "trainer.max_epochs=3"]
    crash_after_epoch(monkeypatch, 2)
    with pytest.raises(RuntimeError):
        train(compose_run(tmp_path, overrides))
    for name in ("last.ckpt", "previous.ckpt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"not a checkpoint")
    with pytest.raises(RunFolderError, match=r"last.ckpt and .*previous.ckpt cannot be read .*Delete .*checkpoints"):
        train(compose_run(tmp_path, [*overrides, "resume=true"]))


def test_a_corrupt_summary_is_named_with_what_to_do(tmp_path):
    train(compose_run(tmp_path, [*TINY, "trainer.max_epochs=1"]))
    (tmp_path / "summary.json").write_text('{"status": "compl')
    with pytest.raises(RunFolderError, match=r"summary.json is corrupt .*Delete it"):
        train(compose_run(tmp_path, [*TINY, "trainer.max_epochs=1", "resume=true"]))
    assert RunFolder(tmp_path).summary(strict=False) is None  # readers that list runs (tuned study) skip it


@pytest.mark.parametrize(
    ("damage", "what", "rowless"),
    [
        ("deleted", "is missing", "epochs 0 ... 2"),
        ("cut to epoch 1", "has rows up to epoch 1 only", "epoch 2"),  # rows 0 and 1 of 0 ... 2
        ("header only", "has no rows", "epochs 0 ... 2"),
    ],
)
def test_a_metrics_file_that_lacks_epochs_of_the_checkpoint_is_not_resumed(tmp_path, damage, what, rowless):
    train(compose_run(tmp_path, [*TINY, "trainer.max_epochs=2"]))
    metrics = tmp_path / "metrics.csv"
    if damage == "deleted":
        metrics.unlink()
    else:
        rows = read_metrics(metrics)
        write_table(metrics, rows[:2] if damage == "cut to epoch 1" else [], columns=list(rows[0]))
    before = (tmp_path / "summary.json").read_text(), metrics.read_text() if metrics.exists() else None
    with pytest.raises(RunFolderError) as err:
        train(compose_run(tmp_path, [*TINY, "trainer.max_epochs=3", "resume=true"]))
    assert str(err.value) == (
        f"cannot resume: {metrics} {what}, but {tmp_path / 'checkpoints' / 'last.ckpt'} holds 2 completed epochs; "
        f"resuming would leave {rowless} without a row. Restore metrics.csv (from a backup), or start the run in a new "
        f"folder (or delete {tmp_path} to train it again from the start)"
    )
    assert ((tmp_path / "summary.json").read_text(), metrics.read_text() if metrics.exists() else None) == before


def test_a_diverged_run_reports_nan_and_is_not_resumed_from_nan_weights(tmp_path):
    overrides = [*TINY, "trainer.max_epochs=3", "optim.lr=1e6"]
    summary = train(compose_run(tmp_path, overrides))
    assert summary["status"] == "diverged"
    assert math.isnan(summary["final"]["test_acc"]) and math.isnan(summary["final"]["train_acc"])
    rows = read_metrics(tmp_path / "metrics.csv")
    again = train(compose_run(tmp_path, [*overrides, "trainer.max_epochs=5", "resume=true"]))
    assert again["wall_time_s"] == summary["wall_time_s"]  # nothing re-trained
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.csv")] == [r["epoch"] for r in rows]  # no NaN epochs


def test_a_failed_write_removes_its_temporary_file_and_names_the_path(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("{}\n")

    def disk_full(tmp):
        tmp.write_text('{"half')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=rf"could not write {path} \(No space left on device\)") as err:
        replace_atomically(path, disk_full)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"] and path.read_text() == "{}\n"


@pytest.mark.parametrize("cut", ["header only", "mid-row"])
def test_the_report_lists_a_truncated_metrics_file_as_a_problem(tmp_path, cut):
    train(compose_run(tmp_path / "sweep" / "0", [*TINY, "trainer.max_epochs=1"]))
    metrics = tmp_path / "sweep" / "0" / "metrics.csv"
    text = metrics.read_text()
    metrics.write_text(text.splitlines(keepends=True)[0] if cut == "header only" else text[:-7])
    problems = read_sweep(tmp_path / "sweep").problems
    assert list(problems.file) == ["metrics.csv"] and "cut" in problems.error.iloc[0]
    assert json.loads((tmp_path / "sweep" / "0" / "summary.json").read_text())["status"] == "completed"
