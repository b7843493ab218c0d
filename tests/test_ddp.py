"""trainer=ddp: data.batch_size is the global batch; two CPU processes train exactly like one process."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from bsstudy import ConfigError
from bsstudy.config import per_device_batch_size, world_size
from bsstudy.runfolder import read_metrics
from bsstudy.train.run import train

from conftest import compose_run, run_cli

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# 2047 samples at B = 48: 42 full steps and a last step of 31 samples, split 16 / 15 between the processes
TINY = ["data=synthetic", "data.n_train=2047", "data.batch_size=48", "model.hidden_sizes=[32]", "trainer.max_epochs=2",
        "trainer.threads=1"]  # fmt: skip


def trainer_cfg(**keys):
    return OmegaConf.create({"strategy": "ddp", "devices": 1, "num_nodes": 1} | keys)


def test_each_process_gets_the_global_batch_divided_by_the_number_of_processes():
    assert world_size(trainer_cfg(devices=2)) == 2
    assert world_size(trainer_cfg(devices=[0, 3], num_nodes=2)) == 4  # 2 devices on each of 2 machines
    assert world_size(trainer_cfg(strategy="auto", devices=4)) == 1  # not DDP: one process
    assert per_device_batch_size(1024, 4) == 256
    assert per_device_batch_size(48, 2) == 24


def test_a_batch_size_not_divisible_by_the_processes_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data.batch_size \(33\) must be divisible .* = 2"):
        train(compose_run(tmp_path / "a", [*DDP, "data=synthetic", "data.batch_size=33"]))
    with pytest.raises(ConfigError, match=r"data.batch_size \(15\) must be divisible .* = 2"):  # a scheduled B too
        train(compose_run(tmp_path / "b", [*DDP, "data=synthetic", "data.batch_size=32",
                                            "+data.batch_size_schedule={1: 15}"]))  # fmt: skip
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "failed" and "trainer.devices x trainer.num_nodes" in summary["error"]


def test_the_fast_step_is_refused_under_ddp(tmp_path):
    with pytest.raises(ConfigError, match="trainer=ddp with 2 processes"):
        train(compose_run(tmp_path, [*DDP, "data=synthetic", "trainer.fast_step=on"]))


def test_ddp_inside_a_local_sweep_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="inside a local -m sweep"):
        train(compose_run(tmp_path, [*DDP, "data=synthetic", "hydra.mode=MULTIRUN"]))


def test_two_cpu_processes_train_like_one_process_with_the_global_batch(tmp_path):
    run_cli([*DDP, *TINY, f"hydra.run.dir={tmp_path / 'ddp'}"], tmp_path, timeout=120)
    train(compose_run(tmp_path / "one", [*TINY, "trainer.fast_step=off"]))
    ddp, one = (read_metrics(tmp_path / name / "metrics.csv") for name in ("ddp", "one"))
    assert len(ddp) == len(one) == 3
    for a, b in zip(ddp, one, strict=True):
        for key in ("optimizer_steps", "samples_seen", "batch_size"):
            assert a[key] == b[key]
        for key in ("train_loss", "test_loss", "train_acc", "test_acc", "train_loss_running"):
            assert a[key] == (None if b[key] is None else pytest.approx(b[key], rel=1e-5)), (
                key
            )  # epoch 0: no running loss
    weights = [torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
               for name in ("ddp", "one")]  # fmt: skip
    for key, value in weights[1].items():
        torch.testing.assert_close(weights[0][key], value, rtol=1e-5, atol=1e-6)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert (summary["world_size"], summary["per_device_batch_size"], summary["fast_step"]) == (2, 24, False)
    assert summary["optimizer_steps"] == 2 * 43  # ceil(2047 / 48) steps per epoch, counted once, not per process
    assert not list((tmp_path / "ddp" / "checkpoints").glob("*.tmp"))
