"""Sweep launchers: the parallel preset (joblib) reproduces the sequential sweep; the SLURM preset composes into
the sbatch script it should submit; submitit's local executor runs a job."""

import json
import threading
import time

import pytest
import submitit
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from bsstudy import CONF_DIR
from bsstudy.runfolder import read_metrics
from bsstudy.tools.bench_sweep import max_relative_difference
from bsstudy.train.parallel import available_cores, claimed_slot, threads_per_job
from bsstudy.train.run import train

from conftest import compose_run, run_cli

TINY = ["data=synthetic", "model.hidden_sizes=[32]", "trainer.max_epochs=2"]


def hydra_config(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_time_s")} for r in rows]


def test_each_of_n_parallel_jobs_gets_its_share_of_the_cores():
    assert threads_per_job(cores=2, jobs=2) == 1
    assert threads_per_job(cores=16, jobs=3) == 5
    assert threads_per_job(cores=2, jobs=4) == 1  # never 0


def test_a_job_takes_the_gpu_of_its_number_or_the_next_free_one_or_waits(tmp_path):
    with claimed_slot(tmp_path, slots=2, preferred=0) as first:  # job 0
        with claimed_slot(tmp_path, slots=2, preferred=0) as second:  # job 2, while job 0 still runs
            assert (first, second) == (0, 1)
            got = []
            waiting = threading.Thread(target=lambda: got.append(claimed_slot(tmp_path, 2, 1).__enter__()))
            waiting.start()  # job 3: both GPUs busy, so it waits for its own, GPU 1
            time.sleep(0.3)
            assert got == []
        waiting.join(timeout=5)
        assert got == [1]  # GPU 1 came free when job 2 ended


def test_the_parallel_preset_runs_one_job_per_gpu_or_two_on_the_cpu():
    import bsstudy.train.parallel  # noqa: F401  (registers the resolver of the default n_jobs)

    launcher = hydra_config(["hydra/launcher=parallel"]).hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.backend == "loky"
    assert launcher.n_jobs == (torch.cuda.device_count() or 2)


def test_a_two_job_parallel_sweep_gives_the_same_runs_as_the_sequential_sweep(tmp_path):
    sweep = tmp_path / "parallel"
    run_cli(["-m", "hydra/launcher=parallel", *TINY, "data.batch_size=8,32", f"hydra.sweep.dir={sweep}"], tmp_path)
    for job, batch_size in enumerate((8, 32)):
        sequential = tmp_path / f"sequential{job}"
        # one thread like each parallel job: two threads give the same numbers too, but can take 100x longer
        # while another process holds a core (OpenMP threads waiting for each other)
        train(compose_run(sequential, [*TINY, f"data.batch_size={batch_size}", "trainer.threads=1"]))
        parallel_rows = read_metrics(sweep / str(job) / "metrics.csv")
        assert parallel_rows[-1]["batch_size"] == batch_size
        assert without_times(parallel_rows) == without_times(read_metrics(sequential / "metrics.csv"))
        summary = json.loads((sweep / str(job) / "summary.json").read_text())
        assert summary["threads"] == threads_per_job(available_cores(), 2)
    assert "2 jobs at a time" in (sweep / "0" / "__main__.log").read_text()


class Submitted(Exception):
    """Raised instead of calling sbatch: carries the sbatch script submitit wrote."""


def test_the_slurm_preset_submits_one_array_job_with_the_configured_resources(tmp_path, monkeypatch):
    def capture_submission(executor, command):
        raise Submitted(executor._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun here
    monkeypatch.setattr(submitit.SlurmExecutor, "_submit_command", capture_submission)
    cfg = hydra_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
                        "hydra.launcher.timeout_min=30", "hydra.launcher.array_parallelism=2",
                        f"hydra.sweep.dir={tmp_path}"])  # fmt: skip
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["data.batch_size=64"], ["data.batch_size=256"], ["data.batch_size=1024"]], 0)
    script = submitted.value.args[0].splitlines()
    expected = ["--array=0-2%2", "--partition=gpu", "--gpus-per-node=2", "--time=30", "--ntasks-per-node=1",
                "--cpus-per-task=4", "--mem=16GB"]  # fmt: skip
    for option in expected:
        assert f"#SBATCH {option}" in script


def test_submitits_local_executor_runs_a_tiny_sweep_job(tmp_path):
    sweep = tmp_path / "local"
    run_cli(["-m", "hydra/launcher=submitit_local", *TINY, "trainer.max_epochs=1", "trainer.threads=1",
             f"hydra.sweep.dir={sweep}"], tmp_path)  # fmt: skip
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    assert list((sweep / ".submitit").iterdir())  # submitit's own job folder: it really went through submitit


def test_the_sweep_bench_reports_the_largest_relative_difference_between_runs():
    runs = [[{"epoch": 0, "train_loss": 2.0, "lr": None}, {"epoch": 1, "train_loss": 1.0, "lr": 0.1}]]
    other = [[{"epoch": 0, "train_loss": 2.0, "lr": None}, {"epoch": 1, "train_loss": 1.001, "lr": 0.1}]]
    assert max_relative_difference(runs, runs) == 0.0
    assert max_relative_difference(runs, other) == pytest.approx(0.001 / 1.001)  # |a - b| / max(|a|, |b|)
    assert max_relative_difference(runs, [other[0][:1]]) == float("inf")  # a run with fewer epochs


def test_what_the_parallel_launcher_sets_is_in_summary_json_and_a_resumed_job_is_the_same_run(tmp_path):
    from bsstudy.runfolder.identity import run_identity
    from bsstudy.train.parallel import job_share, set_by_launcher

    parallel = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "hydra.mode=MULTIRUN"]
    cfg = compose_run(tmp_path, [*TINY, *parallel, "trainer.max_epochs=1"])
    with job_share(cfg):
        summary = train(cfg)
    threads = threads_per_job(available_cores(), 2)
    assert summary["launcher"] == {
        "name": "JoblibLauncher", "jobs_at_a_time": 2, "threads": threads, "devices": 1,
        "set_by_launcher": {"trainer.threads": threads},
    }  # fmt: skip
    assert json.loads((tmp_path / "summary.json").read_text())["launcher"] == summary["launcher"]
    resumed = compose_run(tmp_path, [*TINY, *parallel, "trainer.max_epochs=2", "resume=true"])
    with job_share(resumed):
        assert train(resumed)["epochs_completed"] == 2  # the same run, continued
    # a job given GPU 1 (trainer.devices=[1]) on its first start and GPU 0 when resumed is the same run
    identities = []
    for gpu in (1, 0):
        job = compose_run(tmp_path, [*TINY, "trainer=gpu"])
        with job_share(job):
            set_by_launcher(job, "trainer.devices", [gpu])
            identities.append(run_identity(job))
    assert identities[0] == identities[1] and identities[0]["trainer.devices"] == 1
