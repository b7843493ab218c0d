"""Fault injection around the run folder: signals, failed sweep jobs, resume that checks what it resumes.

Each test is one case of issue 15; the name says the behaviour that holds now.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from omegaconf import OmegaConf

from bsstudy import ConfigError, RunFolderError
from bsstudy.runfolder import is_whole, read_metrics, run_folders
from bsstudy.runfolder.identity import LOCK_FILE, job_subdir
from bsstudy.train.run import train

from conftest import FAST, RAW, compose_run, run_cli, write_fashion_mnist

# small and many chunks per epoch, so a signal lands mid-epoch; one thread, as in the in-process reference run
TINY = ["data=synthetic", "model.hidden_sizes=[32]", "data.batch_size=8", "trainer.chunk_samples=64",
        "trainer.threads=1"]  # fmt: skip


def measured(rows):
    """Every column except wall-clock timings."""
    return [{k: v for k, v in row.items() if not k.endswith("_time_s")} for row in rows]


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [sys.executable, "-m", "bsstudy", *args, *FAST],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_epoch(metrics: Path, epoch: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Wait until metrics.csv has the row of `epoch` (the run is then inside epoch + 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and any(r["epoch"] == epoch for r in read_metrics(metrics)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before epoch {epoch}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no epoch {epoch} in {metrics} after {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "logger"), [(signal.SIGTERM, "csv"), (signal.SIGINT, "wandb")])
@pytest.mark.cli
def test_a_stop_signal_exits_non_zero_marks_the_run_interrupted_and_resume_is_exact(tmp_path, signum, logger):
    epochs = ["trainer.max_epochs=5"]
    straight = tmp_path / "straight"
    train(compose_run(straight, [*TINY, *epochs]))

    run = tmp_path / "run"
    proc = start_cli([*TINY, *epochs, f"logger={logger}", f"hydra.run.dir={run}"], tmp_path)
    wait_for_epoch(run / "metrics.csv", 1, proc)
    proc.send_signal(signum)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signum, output[-3000:]
    assert "UnboundLocalError" not in output and "Traceback" not in output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and signal.Signals(signum).name in summary["error"]
    assert 1 <= summary["epochs_completed"] < 5  # stopped inside the run, not after it

    run_cli([*TINY, *epochs, f"logger={logger}", f"hydra.run.dir={run}", "resume=true"], tmp_path)
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert measured(read_metrics(run / "metrics.csv")) == measured(read_metrics(straight / "metrics.csv"))


@pytest.mark.slow
@pytest.mark.cli
def test_sigterm_stops_a_sweep_writes_its_report_and_exits_non_zero(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_cli(["-m", *TINY, "trainer.max_epochs=5", "data.batch_size=8,16,32", f"hydra.sweep.dir={sweep}"],
                     tmp_path)  # fmt: skip
    wait_for_epoch(sweep / "0" / "metrics.csv", 1, proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=180)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "interrupted"
    assert not (sweep / "1").exists()  # the remaining jobs did not start
    assert (sweep / "report" / "report.html").exists()


SIGTERM_DURING_THE_REPORT = """
import os, signal, sys
import bsstudy.analysis.report.build as build
drawn = build.report_sections
def report_sections(*args, **kwargs):  # the scheduler's SIGTERM while the end-of-sweep report is drawn
    os.kill(os.getpid(), signal.SIGTERM)
    return drawn(*args, **kwargs)
build.report_sections = report_sections
from bsstudy.__main__ import cli
cli()
"""


@pytest.mark.cli
def test_sigterm_during_the_end_of_sweep_report_writes_it_whole_and_exits_143(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-c", SIGTERM_DURING_THE_REPORT, "-m", *TINY, "trainer.max_epochs=1",
               "data.batch_size=16,32", f"hydra.sweep.dir={sweep}", *FAST]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert [json.loads((sweep / j / "summary.json").read_text())["status"] for j in "01"] == ["completed"] * 2
    assert is_whole(sweep / "report")  # what was complete is written, whole


@pytest.mark.cli
def test_a_failed_job_does_not_suppress_the_sweep_report_and_the_sweep_exits_non_zero(tmp_path):
    proc = run_cli(["-m", *TINY, "trainer.max_epochs=1", "data.batch_size=5000,64", "hydra.sweep.dir=sweep"],
                   tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 1
    assert json.loads((tmp_path / "sweep" / "0" / "summary.json").read_text())["status"] == "failed"
    assert json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())["status"] == "completed"
    assert (tmp_path / "sweep" / "report" / "report.html").exists()
    assert "1 run(s) did not end" in proc.stderr and "data.batch_size (5000)" in proc.stderr


# --- the run folder knows what it holds -------------------------------------------------------------------------

ONE = [*TINY, "trainer.max_epochs=1"]


def test_resume_with_a_changed_batch_size_fails_naming_the_key_and_leaves_the_run_as_it_was(tmp_path):
    train(compose_run(tmp_path, ONE))
    before = (tmp_path / "summary.json").read_text(), (tmp_path / "metrics.csv").read_text()
    with pytest.raises(RunFolderError, match=r"data.batch_size: 8 -> 16"):
        train(compose_run(tmp_path, [*ONE, "data.batch_size=16", "resume=true"]))
    assert ((tmp_path / "summary.json").read_text(), (tmp_path / "metrics.csv").read_text()) == before


def test_resume_of_a_completed_run_with_more_epochs_trains_on_exactly(tmp_path):
    train(compose_run(tmp_path / "straight", [*TINY, "trainer.max_epochs=3"]))
    train(compose_run(tmp_path / "extended", [*TINY, "trainer.max_epochs=2"]))
    summary = train(compose_run(tmp_path / "extended", [*TINY, "trainer.max_epochs=3", "resume=true"]))
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    rows = read_metrics(tmp_path / "extended" / "metrics.csv")
    assert measured(rows) == measured(read_metrics(tmp_path / "straight" / "metrics.csv"))
    # the same max_epochs again: nothing to do, nothing rewritten
    again = train(compose_run(tmp_path / "extended", [*TINY, "trainer.max_epochs=3", "resume=true"]))
    assert again["wall_time_s"] == summary["wall_time_s"]


def test_a_fresh_run_into_a_folder_holding_a_run_refuses_with_the_way_out(tmp_path):
    train(compose_run(tmp_path, ONE))
    before = (tmp_path / "summary.json").read_text()
    with pytest.raises(RunFolderError, match=r"already holds a run .*new folder.*resume=true"):
        train(compose_run(tmp_path, [*ONE, "data.batch_size=16"]))
    assert (tmp_path / "summary.json").read_text() == before


def test_a_fresh_run_may_replace_a_run_that_failed_before_training(tmp_path):
    with pytest.raises(ConfigError):
        train(compose_run(tmp_path, [*ONE, "data.batch_size=0"]))
    assert train(compose_run(tmp_path, ONE))["status"] == "completed"


def test_a_second_process_on_the_same_run_folder_fails_with_a_clear_error(tmp_path):
    with FileLock(tmp_path / LOCK_FILE, timeout=0), pytest.raises(RunFolderError, match="another process is running"):
        train(compose_run(tmp_path, ONE))
    assert not (tmp_path / "summary.json").exists()


def test_a_sweep_job_finds_its_folder_by_its_overrides_not_its_number(tmp_path):
    existing = [["data.batch_size=16", "data=synthetic"], ["data.batch_size=64", "data=synthetic"]]
    for num, overrides in enumerate(existing):
        (tmp_path / str(num) / ".hydra").mkdir(parents=True)
        (tmp_path / str(num) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    # the resumed list is 8, 16, 64: jobs 1 and 2 find the runs of 16 and 64; job 0 (B=8) gets a folder of its own
    assert job_subdir(str(tmp_path), 1, ["data=synthetic", "data.batch_size=16", "resume=true"]) == "0"
    assert job_subdir(str(tmp_path), 2, ["data.batch_size=64", "data=synthetic", "trainer.max_epochs=9"]) == "1"
    assert job_subdir(str(tmp_path), 0, ["data.batch_size=8", "data=synthetic"]) == "data.batch_size=8,data=synthetic"
    assert job_subdir(str(tmp_path), 3, ["data.batch_size=256", "data=synthetic"]) == "3"  # a free number stays
    assert job_subdir(str(tmp_path / "new"), 0, ["data.batch_size=8"]) == "0"  # a new sweep: Hydra's numbers


@pytest.mark.slow
@pytest.mark.cli
def test_a_resumed_sweep_whose_list_changed_runs_each_batch_size_once_in_its_own_folder(tmp_path):
    run_cli(["-m", *ONE, "data.batch_size=16,64", "hydra.sweep.dir=sweep"], tmp_path)
    before = {b: json.loads((tmp_path / "sweep" / j / "summary.json").read_text()) for j, b in (("0", 16), ("1", 64))}
    run_cli(["-m", *ONE, "data.batch_size=8,16,64", "hydra.sweep.dir=sweep", "resume=true"], tmp_path)
    runs = {}
    for folder in run_folders(tmp_path / "sweep"):
        summary = json.loads((folder / "summary.json").read_text())
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
        assert summary["status"] == "completed" and summary["batch_size"] == config.data.batch_size
        runs[summary["batch_size"]] = summary
    assert sorted(runs) == [8, 16, 64]
    for batch_size, summary in before.items():  # not trained again
        assert runs[batch_size]["wall_time_s"] == summary["wall_time_s"]


@pytest.mark.cli
def test_two_default_runs_started_in_the_same_second_get_two_folders(tmp_path):
    command = [sys.executable, "-m", "bsstudy", "--cfg", "hydra", "--resolve", "--package", "hydra.run"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    folders = [proc.communicate(timeout=120)[0] for proc in procs]
    assert "outputs/" in folders[0] and folders[0] != folders[1]


def test_a_job_requeued_by_slurm_resumes_its_run_instead_of_refusing_the_folder(tmp_path, monkeypatch):
    train(compose_run(tmp_path, [*TINY, "trainer.max_epochs=1"]))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM sets when submitit requeues a preempted job
    summary = train(compose_run(tmp_path, [*TINY, "trainer.max_epochs=2"]))  # the same command, no resume=true
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2


def test_resume_of_a_run_that_failed_before_training_starts_it_with_the_fixed_config(tmp_path):
    with pytest.raises(ConfigError):
        train(compose_run(tmp_path, [*ONE, "optim.lr=inf"]))
    assert train(compose_run(tmp_path, [*ONE, "resume=true"]))["status"] == "completed"


# --- a resumed run goes on with its own data, and says whether it resumed (issue 25) -------------------------------

# tiny Fashion-MNIST files (20 + 10 images), a custom copy: not the 60,000 / 10,000 of the real set
IDX = ["data=fashion_mnist", "data.download=false", "data.check_known=false", "data.val_size=0",
       "model.hidden_sizes=[8]", "data.batch_size=8", "trainer.threads=1"]  # fmt: skip


def idx_run(root: Path, *overrides: str) -> list[str]:
    return [*IDX, f"data.root={root}", *overrides]


def test_resume_with_a_data_root_holding_other_files_is_refused_naming_the_file(tmp_path):
    write_fashion_mnist(tmp_path / "data", y_train=np.arange(20) % 10)
    write_fashion_mnist(tmp_path / "other", y_train=np.arange(20) % 10, x_train=np.zeros((20, 28, 28)))  # same names
    run = tmp_path / "run"
    train(compose_run(run, idx_run(tmp_path / "data", "trainer.max_epochs=1")))
    before = {name: (run / name).read_text() for name in ("summary.json", "identity.json", "metrics.csv")}
    recorded = json.loads(before["identity.json"])["data_files"]["train-images-idx3-ubyte"]
    assert recorded["shape"] == [20, 28, 28] and len(recorded["blake2b"]) == 32
    with pytest.raises(RunFolderError) as err:
        train(compose_run(run, idx_run(tmp_path / "other", "trainer.max_epochs=2", "resume=true")))
    message = str(err.value)
    assert message.startswith(f"resume=true: {tmp_path / 'other' / RAW}/train-images-idx3-ubyte.gz is not the file ")
    assert "\n" not in message and "new folder" in message
    assert {name: (run / name).read_text() for name in before} == before  # the folder is as it was
    moved = tmp_path / "moved"  # the same files elsewhere: data.root may change on resume
    shutil.copytree(tmp_path / "data", moved)
    summary = train(compose_run(run, idx_run(moved, "trainer.max_epochs=2", "resume=true")))
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2


def test_an_older_run_folder_without_data_fingerprints_resumes_and_says_so(tmp_path, caplog):
    write_fashion_mnist(tmp_path / "data", y_train=np.arange(20) % 10)
    run = tmp_path / "run"
    train(compose_run(run, idx_run(tmp_path / "data", "trainer.max_epochs=1")))
    record = json.loads((run / "identity.json").read_text())
    del record["data_files"]  # as an older bsstudy wrote it
    (run / "identity.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        summary = train(compose_run(run, idx_run(tmp_path / "data", "trainer.max_epochs=2", "resume=true")))
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert "records no data fingerprints (an older bsstudy): the data files are not checked" in caplog.text


def test_resume_true_on_a_new_folder_starts_fresh_with_a_warning_and_says_so_in_the_summary(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        summary = train(compose_run(tmp_path / "new", [*ONE, "resume=true"]))
    assert summary["status"] == "completed" and summary["resumed"] is False
    assert summary["resumed_reason"] == (
        f"resume=true, but {tmp_path / 'new'} holds no checkpoint to continue from: the run started fresh"
    )
    assert summary["resumed_reason"] in caplog.text
    assert json.loads((tmp_path / "new" / "summary.json").read_text())["resumed"] is False
    resumed = train(compose_run(tmp_path / "new", [*TINY, "trainer.max_epochs=2", "resume=true"]))
    assert resumed["resumed"] is True and resumed["resumed_from"] == str(tmp_path / "new" / "checkpoints" / "last.ckpt")
    fresh = train(compose_run(tmp_path / "fresh", ONE))
    assert fresh["resumed"] is False and "resumed_reason" not in fresh


@pytest.mark.cli
def test_resume_true_on_a_folder_that_does_not_exist_exits_0_and_warns(tmp_path):
    proc = run_cli([*ONE, "resume=true", "hydra.run.dir=never_run"], tmp_path)  # check: exit code 0
    summary = json.loads((tmp_path / "never_run" / "summary.json").read_text())
    assert proc.returncode == 0 and summary["status"] == "completed" and summary["resumed"] is False
    log_text = (tmp_path / "never_run" / "__main__.log").read_text()
    assert "WARNING] - resume=true, but" in log_text and "the run started fresh" in log_text


def test_an_exit_that_no_signal_caused_is_not_reported_as_one():
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bsstudy.train.run import interrupting_signal
    from bsstudy.train.signals import RunInterrupted

    assert interrupting_signal(RunInterrupted(signal.SIGTERM)) == signal.SIGTERM
    assert interrupting_signal(SIGTERMException()) == signal.SIGTERM  # Lightning's, after its own SIGTERM handler
    assert interrupting_signal(KeyboardInterrupt()) == signal.SIGINT
    assert interrupting_signal(SystemExit(-1)) is None  # e.g. submitit exiting after it requeued a timed-out job
    assert RunInterrupted(signal.SIGTERM).code == 143 and RunInterrupted(signal.SIGINT).code == 130


# --- a stop signal during the end-of-training probes (issue 25) ----------------------------------------------------

FINAL_PROBES = {  # small settings; probes.<name>.chunk_size=128: several chunks per evaluation
    "sharpness": ["probes.sharpness.eps=[0.001]", "probes.sharpness.iterations=3", "probes.sharpness.subspace_dim=4",
                  "probes.sharpness.random_samples=2"],
    "landscape": ["probes.landscape.points=3", "probes.landscape.curve_points=3", "probes.landscape.plot=false"],
    "hessian": ["probes.hessian.ncv=5", "probes.hessian.max_hvps=50", "probes.hessian.trace_max_samples=3",
                "probes.hessian.trace_min_samples=2"],
    "interpolation": ["probes.interpolation.points=3"],
}  # fmt: skip
FINAL_FILES = {"sharpness": "sharpness.json", "landscape": "landscape.npz", "hessian": "hessian.json",
               "interpolation": "interpolation.csv"}  # fmt: skip


@pytest.mark.parametrize("probe", sorted(FINAL_PROBES))
def test_sigterm_during_an_end_of_training_probe_interrupts_within_seconds_and_resume_measures_again(
    tmp_path, monkeypatch, probe
):
    import bsstudy.measures.objective as objective
    from bsstudy.train.signals import STOP

    # weight_norm: a per-epoch probe beside it, whose summary the resume keeps
    overrides = [*ONE, f"probes=[weight_norm,{probe}]", *FINAL_PROBES[probe], f"probes.{probe}.chunk_size=128"]
    if probe == "interpolation":
        train(compose_run(tmp_path / "other", ONE))
        overrides.append(f"probes.interpolation.other={tmp_path / 'other'}")
    run = tmp_path / "run"
    chunks, signalled = objective.SubsetLoss.chunks, []

    def slow_chunks(self):  # the scheduler's SIGTERM at the probe's second chunk; every later chunk takes 1 s
        for n, chunk in enumerate(chunks(self)):
            if n == 1 and not signalled:
                signalled.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGTERM)
            elif signalled:
                time.sleep(1.0)
            yield chunk

    try:
        with monkeypatch.context() as patch:
            patch.setattr(objective.SubsetLoss, "chunks", slow_chunks)
            with pytest.raises(SystemExit) as exit_:
                train(compose_run(run, overrides))
        waited = time.monotonic() - signalled[0]
    finally:
        STOP.signum = None  # the process goes on to the resume (a CLI run would have exited)
    assert exit_.value.code == 128 + signal.SIGTERM
    assert waited < 3, f"the {probe} probe went on {waited:.1f} s after SIGTERM"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    assert f"during the end-of-training probes ({probe})" in summary["error"]
    assert not (run / "probes" / probe / FINAL_FILES[probe]).exists()
    assert list(summary["probes"]) == ["weight_norm"]
    metrics = (run / "metrics.csv").read_text()

    resumed = train(compose_run(run, [*overrides, "resume=true"]))
    assert resumed["status"] == "completed" and resumed["resumed"] is True and resumed["epochs_completed"] == 1
    assert (run / "metrics.csv").read_text() == metrics  # not trained again
    assert resumed["probes"][probe]["train_loss"] == pytest.approx(summary["final"]["train_loss"], rel=1e-4)
    assert (run / "probes" / probe / FINAL_FILES[probe]).exists()
    assert resumed["probes"]["weight_norm"] == summary["probes"]["weight_norm"]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
