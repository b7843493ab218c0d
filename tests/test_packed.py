"""Packed runs (bsstudy/train/packed.py, hydra/launcher=packed): runs that differ in seed and lr train as one batched
model and end with the same numbers, files and resume as runs alone."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from omegaconf import OmegaConf

from bsstudy.runfolder import RunFolder, read_metrics
from bsstudy.train.fast_step import fast_sgd_step
from bsstudy.train.net import MLP
from bsstudy.train.packed import Member, PackedSGD, pack_blocker, train_pack
from bsstudy.train.signals import STOP, RunInterrupted
from hydra_plugins.bsstudy_packed.packed_launcher import Job, packs_of
from tests.conftest import compose_run, run_cli

SMALL = ["data=synthetic", "model.hidden_sizes=[32,32]", "data.val_size=256", "trainer.threads=1"]
COMPARED = ("optimizer_steps", "samples_seen", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "val_acc")


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 1e-3), (0.0, 1e-3)])
@pytest.mark.parametrize("rows", [2, 5])
def test_a_packed_step_equals_the_fast_step_of_each_net(momentum, weight_decay, rows):
    torch.manual_seed(0)
    nets = [MLP(20, [16, 8], 4) for _ in range(3)]
    alone = [MLP(20, [16, 8], 4) for _ in range(3)]
    for a, n in zip(alone, nets, strict=True):
        a.load_state_dict(n.state_dict())
    lrs = [0.05, 0.1, 0.3]
    optimizers = [torch.optim.SGD(a.parameters(), lr, momentum, weight_decay=weight_decay)
                  for a, lr in zip(alone, lrs, strict=True)]  # fmt: skip
    pack = PackedSGD(nets, momentum, weight_decay)
    for _ in range(3):
        x, y = torch.randn(3, rows, 20), torch.randint(0, 4, (3, rows))
        losses = pack.step(x, y, torch.tensor(lrs))
        for k in range(3):
            loss = fast_sgd_step(alone[k].layers, optimizers[k], x[k], y[k])
            assert losses[k] == pytest.approx(loss.item(), rel=1e-5)
    pack.flush()  # rows of 2 and 5 on a CPU: deferred updates (fast_step.DeferredUpdates)
    for net, a in zip(nets, alone, strict=True):  # the nets' own parameters are views of the pack: updated in place
        for p, q in zip(net.parameters(), a.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def job(idx: int, *overrides: str) -> Job:
    return Job(idx, list(overrides), None)


def test_jobs_are_packed_by_everything_but_seed_and_lr_up_to_the_pack_size():
    grid = [(b, s, lr) for b in (8, 32) for s in (0, 1) for lr in (0.1, 0.2)]
    jobs = [job(i, f"data.batch_size={b}", f"seed={s}", f"optim.lr={lr}") for i, (b, s, lr) in enumerate(grid)]
    packs = packs_of(jobs, pack_size=3)
    assert [[j.idx for j in p] for p in packs] == [[0, 1, 2], [3], [4, 5, 6], [7]]


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["probes=[update_norms]"], "probes"),
        (["trainer.stop_at.train_acc=0.9"], "trainer.stop_at.train_acc"),
        (["trainer.stop_at.patience=2"], "trainer.stop_at.patience"),
        (["optim=adam"], "optim.name=adam"),
        (["logger=wandb"], "logger=wandb"),
        (["+trainer.max_steps=10"], "trainer.max_steps"),
        (["trainer.fast_step=off"], "trainer.fast_step=off"),
        (["optim.accumulate=2"], "optim.accumulate"),
        (["model=cnn"], "model=cnn"),
    ],
)
def test_what_a_pack_cannot_take_is_named(tmp_path, overrides, named):
    assert pack_blocker(compose_run(tmp_path, [*SMALL, *overrides])) is not None
    assert named in pack_blocker(compose_run(tmp_path, [*SMALL, *overrides]))
    assert pack_blocker(compose_run(tmp_path, SMALL)) is None


def rows_of(run_dir) -> list[dict]:
    return [{k: r.get(k) for k in COMPARED} for r in read_metrics(RunFolder(run_dir).metrics_path)]


def assert_same_rows(packed, alone):
    assert len(packed) == len(alone)
    for p, a in zip(packed, alone, strict=True):
        for key in COMPARED:
            if isinstance(a[key], float) and a[key] == a[key]:
                assert p[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
            else:
                assert (p[key] != p[key]) if a[key] != a[key] else p[key] == a[key], key


def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("batch_size", [16, 4])  # 4: the CPU's deferred updates and look-ahead blocks
def test_a_packed_sweep_gives_each_run_the_files_and_numbers_of_a_run_alone(tmp_path, batch_size):
    """Four runs (2 seeds x 2 lrs; lr 1e4 diverges) packed, against the same sweep run one at a time."""
    sweep = ["-m", *SMALL, f"data.batch_size={batch_size}", "seed=0,1", "optim.lr=0.05,1e4", "trainer.max_epochs=2"]
    run_cli([*sweep, f"hydra.sweep.dir={tmp_path / 'alone'}"], cwd=tmp_path)
    proc = run_cli([*sweep, "hydra/launcher=packed", f"hydra.sweep.dir={tmp_path / 'packed'}"], cwd=tmp_path)
    assert "4 runs in one pack" in proc.stdout + proc.stderr
    for i in range(4):
        packed, alone = tmp_path / "packed" / str(i), tmp_path / "alone" / str(i)
        assert (packed / ".hydra" / "overrides.yaml").read_text() == (alone / ".hydra" / "overrides.yaml").read_text()
        assert (packed / "identity.json").exists() and (packed / "checkpoints" / "last.ckpt").exists()
        assert_same_rows(rows_of(packed), rows_of(alone))
        s, a = summary(packed), summary(alone)
        assert (s["status"], s["epochs_completed"], s["optimizer_steps"]) == (
            a["status"], a["epochs_completed"], a["optimizer_steps"])  # fmt: skip
        assert s["packed"]["size"] == 4 and a.get("packed") is None
    assert {summary(tmp_path / "packed" / str(i))["status"] for i in range(4)} == {"completed", "diverged"}
    assert (tmp_path / "packed" / "report" / "report.md").exists()
    for i in range(4):  # each run's log file has its own lines (and the pack's), as a run alone's has
        (log,) = (tmp_path / "packed" / str(i)).glob("*.log")
        lines = log.read_text()
        assert f"{i}: epoch 0/2" in lines, lines
        assert not any(f"{j}: epoch" in lines for j in range(4) if j != i)
        assert f"summary in {tmp_path / 'packed' / str(i)}" in lines


def test_a_packed_run_resumes_packed_or_alone_to_the_numbers_of_an_uninterrupted_run(tmp_path):
    sweep = ["-m", *SMALL, "data.batch_size=16", "seed=0,1", "optim.momentum=0.9"]
    run_cli([*sweep, "trainer.max_epochs=3", f"hydra.sweep.dir={tmp_path / 'whole'}"], cwd=tmp_path)
    for name, second_launcher in (("packed", ["hydra/launcher=packed"]), ("alone", [])):
        folder = f"hydra.sweep.dir={tmp_path / name}"
        run_cli([*sweep, "hydra/launcher=packed", "trainer.max_epochs=2", folder], cwd=tmp_path)
        run_cli([*sweep, *second_launcher, "trainer.max_epochs=3", "resume=true", folder], cwd=tmp_path)
        for i in range(2):
            assert_same_rows(rows_of(tmp_path / name / str(i)), rows_of(tmp_path / "whole" / str(i)))
            assert summary(tmp_path / name / str(i))["epochs_completed"] == 3


def without_times(value):
    """A summary's target value without its training times (a pack's are the pack's, bsstudy/train/packed.py)."""
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return {k: v for k, v in value.items() if k != "train_time_s"} if isinstance(value, dict) else value


def test_packed_runs_with_a_val_acc_target_stop_each_at_its_own_step(tmp_path):
    """trainer.stop_at.val_acc in a pack: every run checks and stops as it would alone; the others go on."""
    sweep = ["-m", *SMALL, "data.batch_size=16", "seed=0", "optim.lr=0.02,0.1,0.4", "trainer.max_epochs=3",
             "trainer.stop_at.val_acc=[0.45,0.4]", "trainer.chunk_samples=256"]  # fmt: skip
    run_cli([*sweep, f"hydra.sweep.dir={tmp_path / 'alone'}"], cwd=tmp_path)
    run_cli([*sweep, "hydra/launcher=packed", f"hydra.sweep.dir={tmp_path / 'packed'}"], cwd=tmp_path)
    steps = []
    for i in range(3):
        packed, alone = summary(tmp_path / "packed" / str(i)), summary(tmp_path / "alone" / str(i))
        assert packed["packed"]["size"] == 3
        for key in ("reached", "optimizer_steps", "previous_check_steps", "checks", "evaluations", "crossings"):
            assert without_times(packed["target"].get(key)) == without_times(alone["target"].get(key)), key
        assert packed["stopped"] == alone["stopped"] and packed["epochs_completed"] == alone["epochs_completed"]
        assert_same_rows(rows_of(tmp_path / "packed" / str(i)), rows_of(tmp_path / "alone" / str(i)))
        checks = [read_metrics(tmp_path / name / str(i) / "target.csv") for name in ("packed", "alone")]
        assert [r["optimizer_steps"] for r in checks[0]] == [r["optimizer_steps"] for r in checks[1]]
        steps.append(alone["target"].get("optimizer_steps"))
    assert len(set(steps)) > 1  # the runs stopped at different steps: some trained on after others stopped


def members_of(tmp_path, resume: bool, *overrides: str) -> list[Member]:
    members = []
    for seed in (0, 1):
        run_dir = tmp_path / str(seed)
        run_dir.mkdir(exist_ok=True)
        cfg = compose_run(run_dir, [*SMALL, f"seed={seed}", "trainer.max_epochs=2", f"resume={str(resume).lower()}",
                                    *overrides])  # fmt: skip
        members.append(Member(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), run_dir))
    return members


def test_a_stop_signal_ends_every_run_of_the_pack_interrupted_and_resumable(tmp_path):
    STOP.signum = signal.SIGTERM
    try:
        with pytest.raises(RunInterrupted):
            train_pack(members_of(tmp_path, resume=False), max_epochs=2, threads=1)
    finally:
        STOP.signum = None
    for seed in (0, 1):
        s = summary(tmp_path / str(seed))
        assert s["status"] == "interrupted" and "SIGTERM" in s["error"] and s["epochs_completed"] == 0
    train_pack(members_of(tmp_path, resume=True), max_epochs=2, threads=1)
    for seed in (0, 1):
        assert summary(tmp_path / str(seed))["status"] == "completed"
        assert [r["epoch"] for r in read_metrics(RunFolder(tmp_path / str(seed)).metrics_path)] == [0, 1, 2]


@pytest.mark.parametrize("optim", [["optim.weight_decay=1e-3"], ["optim.momentum=0.9"]], ids=["wd", "momentum"])
def test_a_pack_with_weight_decay_or_momentum_writes_its_checkpoints(tmp_path, optim):
    train_pack(members_of(tmp_path, False, "trainer.max_epochs=1", *optim), max_epochs=1, threads=1)
    for seed in (0, 1):
        assert summary(tmp_path / str(seed))["status"] == "completed"
        checkpoint = torch.load(tmp_path / str(seed) / "checkpoints" / "last.ckpt", weights_only=False)
        state = checkpoint["optimizer_states"][0]["state"]
        assert bool(state) == ("optim.momentum=0.9" in optim)  # momentum buffers only with momentum
