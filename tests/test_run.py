"""A whole run, in-process through the real config tree (fast) and through the real CLI (as a user runs it)."""

import errno
import json
import logging
import math
import os
from pathlib import Path

import pytest

from bsstudy import ConfigError, UsageError, WriteError
from bsstudy.__main__ import main, sweeper_objective
from bsstudy.runfolder import RunCheckpoints, read_metrics
from bsstudy.train.run import best_on_validation, train

from conftest import compose_run, run_cli

SYNTH = ["data=synthetic", "trainer.max_epochs=3", "data.batch_size=16"]


def measured(rows):
    """Every column except wall-clock timings (which measure the machine, not the training)."""
    return [{k: v for k, v in row.items() if not k.endswith("_time_s")} for row in rows]


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    for name in ("a", "b"):
        train(compose_run(tmp_path / name, SYNTH))
    a, b = read_metrics(tmp_path / "a" / "metrics.csv"), read_metrics(tmp_path / "b" / "metrics.csv")
    assert [row["epoch"] for row in a] == [0, 1, 2, 3]
    assert measured(a) == measured(b)
    train(compose_run(tmp_path / "c", [*SYNTH, "seed=1"]))
    assert measured(read_metrics(tmp_path / "c" / "metrics.csv")) != measured(a)


def test_run_files_hold_metrics_summary_and_gap(tmp_path):
    summary = train(compose_run(tmp_path, [*SYNTH, "checkpoint.at_epochs=[1,3]"]))
    rows = read_metrics(tmp_path / "metrics.csv")
    for row in rows:
        assert row["gap"] == pytest.approx(row["train_acc"] - row["test_acc"])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    assert on_disk["final"]["test_acc"] == rows[-1]["test_acc"]
    assert on_disk["optimizer_steps"] == 3 * on_disk["steps_per_epoch"] == rows[-1]["optimizer_steps"]
    assert on_disk["steps_per_epoch"] == -(-2048 // 16)
    assert on_disk["seed"] == 0 and "torch" in on_disk["versions"] and on_disk["peak_memory_bytes"] > 0
    machine = on_disk["machine"]
    assert machine["cpu"] and machine["cpu_count"] >= 1 and isinstance(machine["gpus"], list)
    assert on_disk["finished_at"].endswith("+00:00")  # UTC, for the published study's first start and last end
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["epoch=1.ckpt", "epoch=3.ckpt", "last.ckpt", "previous.ckpt"]  # previous: the fallback


def test_lr_scaling_and_warmup_are_applied_and_recorded(tmp_path):
    # linear scaling: eta_eff = 0.01 * (B * k) / B0 = 0.01 * (32 * 2) / 16 = 0.04
    overrides = [
        *SYNTH,
        "data.batch_size=32",
        "optim.accumulate=2",
        "optim.lr_scaling=linear",
        "optim.base_batch_size=16",
        "optim.warmup_epochs=2",
    ]
    summary = train(compose_run(tmp_path, overrides))
    assert summary["effective_batch_size"] == 64 and summary["effective_lr"] == pytest.approx(0.04)
    lrs = [row["lr"] for row in read_metrics(tmp_path / "metrics.csv")]
    steps = summary["steps_per_epoch"]  # warm-up over 2 epochs: lr after epoch 1 is eta_eff * steps / (2 steps)
    assert lrs[1] == pytest.approx(0.04 * steps / (2 * steps)) and lrs[3] == pytest.approx(0.04)


def test_resume_after_a_crash_ends_with_the_same_metrics(tmp_path, monkeypatch):
    overrides = [*SYNTH, "trainer.max_epochs=4"]
    train(compose_run(tmp_path / "straight", overrides))

    save = RunCheckpoints.on_train_epoch_end

    def crash_after_epoch_2(self, trainer, pl_module):
        save(self, trainer, pl_module)
        if trainer.current_epoch + 1 == 2:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(RunCheckpoints, "on_train_epoch_end", crash_after_epoch_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_run(tmp_path / "crashed", overrides))
    failed = json.loads((tmp_path / "crashed" / "summary.json").read_text())
    assert failed["status"] == "failed" and "simulated crash" in failed["error"]
    monkeypatch.setattr(RunCheckpoints, "on_train_epoch_end", save)

    resumed = train(compose_run(tmp_path / "crashed", [*overrides, "resume=true"]))
    assert resumed["status"] == "completed" and resumed["optimizer_steps"] == 4 * resumed["steps_per_epoch"]
    assert measured(read_metrics(tmp_path / "crashed" / "metrics.csv")) == measured(
        read_metrics(tmp_path / "straight" / "metrics.csv")
    )
    # a completed run is not trained again
    assert (
        train(compose_run(tmp_path / "crashed", [*overrides, "resume=true"]))["wall_time_s"] == resumed["wall_time_s"]
    )


def test_a_disk_that_fills_during_a_run_is_one_error_naming_the_files_and_resume_loses_nothing(
    tmp_path, monkeypatch, caplog
):
    run = tmp_path / "run"
    open_file = Path.open

    def open_on_a_full_disk(self, mode="r", *args, **kwargs):  # full once the first epoch's checkpoint is written
        if "w" in mode and self.name.endswith(".tmp") and (run / "checkpoints" / "last.ckpt").exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return open_file(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_on_a_full_disk)
    with caplog.at_level(logging.INFO), pytest.raises(WriteError) as failed:
        train(compose_run(run, SYNTH))
    assert isinstance(failed.value, UsageError) and failed.value.errno == errno.ENOSPC  # the CLI prints one line
    assert str(failed.value) == (
        f"could not write {run / 'metrics.csv'} (No space left on device); metrics.csv is as it was; "
        f"could not write {run / 'summary.json'} (No space left on device); summary.json is as it was"
    )
    assert any(r.getMessage().startswith("epoch 2/3 | train loss") for r in caplog.records)  # on the console
    monkeypatch.undo()
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == [0, 1]  # as it was before the disk filled
    assert not list(run.rglob("*.tmp"))
    # the disk has room again: resume=true continues from epoch 1 with the numbers of a run that never failed
    assert train(compose_run(run, [*SYNTH, "resume=true"]))["status"] == "completed"
    train(compose_run(tmp_path / "straight", SYNTH))
    assert measured(read_metrics(run / "metrics.csv")) == measured(read_metrics(tmp_path / "straight" / "metrics.csv"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", r"data.batch_size must be a positive integer; got 0"),
        ("data.batch_size=2.5", r"data.batch_size must be a positive integer; got 2.5"),
        ("data.batch_size=5000", r"data.batch_size \(5000\) x optim.accumulate \(1\) must be at most .* 2048"),
        ("trainer.max_epochs=0", r"trainer.max_epochs must be a positive integer; got 0"),
        ("optim.lr=0", r"optim.lr must be a number > 0"),
        ("data.name=imagenet", r"data.name must be one of"),
        ("data.val_size=2048", r"data.val_size must be an integer in \[0, 2047\] .*got 2048"),
    ],
)
def test_bad_settings_fail_before_training_with_a_named_error(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_run(tmp_path, [*SYNTH, override]))
    assert not (tmp_path / "metrics.csv").exists()  # nothing that looks like a result
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_sweep_runs_one_folder_per_batch_size_and_survives_a_diverged_run(tmp_path):
    run_cli(
        [
            "-m",
            "data=synthetic",
            "trainer.max_epochs=2",
            "data.batch_size=16,64",
            "optim.lr=0.01,1e5",
            "hydra.sweep.dir=sweep",
        ],
        cwd=tmp_path,
    )
    jobs = sorted((tmp_path / "sweep").iterdir())
    jobs = [j for j in jobs if j.is_dir() and j.name.isdigit()]  # not the sweep's report/
    assert len(jobs) == 4
    statuses = {}
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert (job / ".hydra" / "config.yaml").exists()
        statuses[(summary["batch_size"], summary["lr"])] = summary["status"]
        if summary["status"] == "completed":
            assert [r["epoch"] for r in read_metrics(job / "metrics.csv")] == [0, 1, 2]
    assert statuses[(16, 0.01)] == statuses[(64, 0.01)] == "completed"
    assert statuses[(16, 1e5)] == "diverged"


def test_cli_rejects_a_bad_batch_size_with_the_setting_named(tmp_path):
    proc = run_cli(["data=synthetic", "data.batch_size=-3"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "data.batch_size must be a positive integer; got -3" in proc.stderr + proc.stdout


def test_wandb_logger_works_offline_without_a_login(tmp_path):
    run_cli(["data=synthetic", "trainer.max_epochs=1", "logger=wandb", "hydra.run.dir=run"], cwd=tmp_path, timeout=180)
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and (tmp_path / "run" / "metrics.csv").exists()


def test_fashion_mnist_sweep_from_the_offline_folder(tmp_path, shared_data):
    run_cli(
        [
            "-m",
            "data=fashion_mnist",
            f"data.root={shared_data}",
            "data.download=false",
            "data.train_size=2000",
            "data.test_size=1000",
            "trainer.max_epochs=2",
            "data.batch_size=32,256",
            "hydra.sweep.dir=sweep",
        ],
        cwd=tmp_path,
    )
    for job in ("0", "1"):
        rows = read_metrics(tmp_path / "sweep" / job / "metrics.csv")
        assert len(rows) == 3 and rows[-1]["test_acc"] > 0.3  # 10 classes: chance is 0.1; 16 steps at B=256
        assert {"train_acc", "test_acc", "gap", "val_loss", "val_acc"} <= set(rows[-1])  # default data.val_size


def test_the_bsstudy_console_script_composes_the_same_config(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "bsstudy"  # installed beside the interpreter by `pip install -e .`
    proc = subprocess.run([str(script), "data=digits", "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "name: digits" in proc.stdout and "hidden_sizes:" in proc.stdout


def test_validation_columns_every_epoch_and_best_epoch_selected_on_them(tmp_path):
    summary = train(compose_run(tmp_path, [*SYNTH, "data.val_size=256"]))
    rows = read_metrics(tmp_path / "metrics.csv")
    assert all(0 <= r["val_acc"] <= 1 and r["val_loss"] > 0 for r in rows)
    assert summary["n_val"] == 256 and summary["n_train"] == 2048 - 256
    assert summary["steps_per_epoch"] == -(-(2048 - 256) // 16)  # training steps over the training part only
    best = max(rows, key=lambda r: r["val_acc"])
    assert summary["selected_on"] == "val"
    assert summary["best"] == {"epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc": best["test_acc"]}


def test_best_epoch_is_the_best_validation_epoch_not_the_best_test_epoch():
    rows = [
        {"epoch": 0, "val_acc": 0.10, "test_acc": 0.10},
        {"epoch": 1, "val_acc": 0.80, "test_acc": 0.70},  # best on validation
        {"epoch": 2, "val_acc": 0.75, "test_acc": 0.90},  # best on test: never selected
        {"epoch": 3, "val_acc": float("nan"), "test_acc": 0.95},
    ]
    assert best_on_validation(rows) == {
        "best": {"epoch": 1, "val_acc": 0.80, "test_acc": 0.70},
        "selected_on": "val",
    }


def test_without_validation_split_nothing_is_selected(tmp_path):
    summary = train(compose_run(tmp_path, [*SYNTH, "trainer.max_epochs=1", "data.val_size=0"]))
    assert "val_acc" not in read_metrics(tmp_path / "metrics.csv")[-1]
    assert summary["best"] is None and summary["selected_on"] is None
    assert "data.val_size=0" in summary["selected_on_reason"]


def test_main_returns_the_final_validation_accuracy_to_sweepers(tmp_path):
    value = main.__wrapped__(compose_run(tmp_path, [*SYNTH, "trainer.max_epochs=1", "data.val_size=256"]))
    final = read_metrics(tmp_path / "metrics.csv")[-1]
    assert value == final["val_acc"] != final["test_acc"]


def test_sweeper_objective_is_nan_with_one_warning_without_validation(caplog):
    with caplog.at_level(logging.WARNING):
        value = sweeper_objective({"final": {"test_acc": 0.9, "train_acc": 0.95}})
    assert math.isnan(value)
    assert len(caplog.records) == 1 and "never test accuracy" in caplog.records[0].getMessage()
