"""Settings that used to reach torch, or train to "completed", now fail before training with one line naming the
key (issue 15, item 6; a seed beyond numpy's and a batch-size switch beyond the last epoch: issue 25); the CLI prints
that line without a traceback unless HYDRA_FULL_ERROR=1."""

import json
import os
import subprocess
import sys

import pytest

from bsstudy import ConfigError
from bsstudy.train.run import train

from conftest import FAST, compose_run

TINY = ["data=synthetic", "model.hidden_sizes=[16]", "trainer.max_epochs=1"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hidden_sizes=[0]", r"model.hidden_sizes must be a list of positive integers.*got \[0\]"),
        ("model.hidden_sizes=[-5]", r"model.hidden_sizes must be a list of positive integers"),
        ("model.hidden_sizes=abc", r"model.hidden_sizes must be a list of positive integers.*'abc'"),
        ("optim.momentum=x", r"optim.momentum must be a number in \[0, 1\); got 'x'"),
        ("optim.weight_decay=x", r"optim.weight_decay must be a finite number >= 0; got 'x'"),
        ("optim.lr=inf", r"optim.lr must be a number > 0 and finite; got inf"),
        ("optim.lr=nan", r"optim.lr must be a number > 0 and finite; got nan"),
        ("resume=maybe", r"resume must be true or false; got 'maybe'"),
        ("checkpoint.at_epochs=[1,5]", r"checkpoint.at_epochs has epochs beyond trainer.max_epochs=1: \[5\]"),
        ("seed=-1", r"seed must be an integer in \[0, 4294967295\]; got -1"),
        ("seed=99999999999999", r"^seed must be an integer in \[0, 4294967295\]; got 99999999999999$"),  # numpy's
        (
            "data.batch_size_schedule={0:8,1:16,5:4}",
            r"^data.batch_size_schedule has epochs beyond the last one, 0 \(epochs count from 0; "
            r"trainer.max_epochs=1\): \[1, 5\]; no epoch would train with their batch size. Drop them or raise "
            r"trainer.max_epochs$",
        ),
        ("data.batch_size_schedule=abc", r"data.batch_size_schedule must be null or a mapping.*'abc'"),
        ("optim.lr_schedule={1:-1}", r"optim.lr_schedule must be .*factor > 0}, e.g. \{10: 0.2, 20: 0.04\}"),
    ],
)
def test_a_config_hole_fails_before_training_with_the_key_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_run(tmp_path, [*TINY, override]))
    assert not (tmp_path / "metrics.csv").exists()
    if override != "resume=maybe":  # decided before the folder is touched
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["status"] == "failed" and override.split("=")[0] in summary["error"]


@pytest.mark.cli
@pytest.mark.parametrize("full_error", [False, True])
def test_the_cli_prints_a_config_error_as_one_line_unless_hydra_full_error(tmp_path, full_error):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"WANDB_MODE": "offline"}
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "bsstudy", *TINY, "optim.lr=inf", "hydra.run.dir=run", *FAST],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "optim.lr must be a number > 0 and finite; got inf" in proc.stderr
    assert ("Traceback" in proc.stderr) == full_error
    if not full_error:
        assert proc.stderr.strip().splitlines() == ["error: optim.lr must be a number > 0 and finite; got inf"]


def test_any_lightning_trainer_argument_passes_through_and_an_unknown_one_is_named(tmp_path):
    from bsstudy.train.run import trainer_arguments

    cfg = compose_run(tmp_path, ["trainer.deterministic=true", "+trainer.max_time=00:00:10:00"])
    arguments = trainer_arguments(cfg.trainer)
    assert arguments["deterministic"] is True and arguments["max_time"] == "00:00:10:00"
    assert "threads" not in arguments and "stop_at" not in arguments  # bsstudy's own settings stay out
    for override, message in (
        ("+trainer.not_a_flag=1", "trainer.not_a_flag is no bsstudy setting and no Trainer argument"),
        ("+trainer.logger=false", "trainer.logger is set by bsstudy"),
    ):
        with pytest.raises(ConfigError, match=message):
            train(compose_run(tmp_path / override[1:9], ["data=synthetic", override]))


def test_trainer_deterministic_true_reaches_lightning_and_the_run_completes(tmp_path):
    summary = train(compose_run(tmp_path, [*TINY, "trainer.deterministic=true"]))
    assert summary["status"] == "completed"
