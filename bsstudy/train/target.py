"""Steps to a target validation accuracy, measured within the epoch (Shallue et al. 2019, "Measuring the
Effects of Data Parallelism on Neural Network Training": steps to a target validation error).

An epoch is too coarse a clock for this: at B=16 an epoch of Fashion-MNIST is 3,400 steps, at B=4096 it
is 13. `ValTarget` evaluates the validation accuracy on a geometric schedule of optimizer steps: after a
check at step s the next one is due at step ceil(s * ratio) (ratio `trainer.stop_at.val_check_ratio`,
1.1 by default). Checks happen at chunk ends (training runs in chunks of trainer.chunk_samples samples,
bsstudy/train/module.py), at the first chunk end where the due step is reached, so the step of a check is
exact and the resolution is max(ratio - 1, steps per chunk / steps) of the step count: the first step
at which the target was seen lies in (previous check, this check]. The run stops at the first check
with val_acc >= trainer.stop_at.val_acc, or at the first chunk end at or after trainer.stop_at.max_steps
optimizer steps (the step budget; trainer.max_epochs stays the cap too).

The checks' time is counted as probe time (metrics.csv probe_time_s), never as training time, so
train_time_s at the crossing is the training time to target. Selection uses validation only; the
test accuracy at the crossing is recorded once, for the report, never for a choice.

Files: `<run>/target.csv`, one row per check: optimizer_steps, epoch (samples_seen / n_train, a
fraction), samples_seen, train_time_s, val_loss, val_acc, reached (0/1). summary.json gains `target`:
{val_acc_target, reached, optimizer_steps, previous_check_steps, epochs, samples_seen, train_time_s,
val_acc, test_acc, checks, max_steps} (the crossing's numbers; null when not reached).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import lightning as L

from bsstudy import ConfigError
from bsstudy.config import has_target
from bsstudy.resources import synchronized_now
from bsstudy.runfolder import EpochCSVLogger
from bsstudy.train.evaluate import EpochEvaluation, evaluate

DEFAULT_RATIO = 1.1  # trainer.stop_at.val_check_ratio=null: checks about 10% of the step count apart


def next_check_step(step: int, ratio: float) -> int:
    """The step at which the check after a check at `step` is due: ceil(step * ratio), at least step + 1."""
    return max(step + 1, math.ceil(round(step * ratio, 9)))  # round: 100 * 1.1 is 110.00000000000001 in floats


def target_callbacks(stop_at, run_dir: Path) -> list[ValTarget]:
    """A ValTarget when a val_acc target or a step budget is set, else none."""
    if not has_target(stop_at):
        return []
    ratio = stop_at.get("val_check_ratio") or DEFAULT_RATIO
    return [ValTarget(run_dir, stop_at.get("val_acc"), ratio, stop_at.get("max_steps"))]


class ValTarget(L.Callback):
    """Validation accuracy on a geometric step schedule; stop at `val_acc` or after `max_steps` steps.

    >>> next_check_step(10, 1.1), next_check_step(100, 1.1)
    (11, 110)
    """

    def __init__(self, run_dir: str | Path, val_acc: float | None, ratio: float, max_steps: int | None):
        self.run_dir, self.val_acc, self.ratio, self.max_steps = Path(run_dir), val_acc, ratio, max_steps
        self.due = 1  # the step at or after which the next check happens
        self.previous_check = 0  # the step of the last check below the target
        self.checks = 0
        self.summary: dict = {"val_acc_target": val_acc, "reached": False, "max_steps": max_steps}

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        evaluation = next(cb for cb in trainer.callbacks if isinstance(cb, EpochEvaluation))

        def train_time_s() -> float:  # the finished epochs' (EpochEvaluation) plus this epoch's, probes excluded
            now = synchronized_now(pl_module.device)
            return evaluation.train_time_s + now - evaluation.epoch_start - pl_module.record.probe_time_s

        self.start(pl_module, evaluation.eval_chunk_size, train_time_s)

    def start(self, pl_module, eval_chunk_size: int, train_time_s: Callable[[], float]) -> None:
        """Before training: `train_time_s()` gives the run's training time so far (probes excluded)."""
        if self.val_acc is not None and pl_module.data.n_val == 0:
            raise ConfigError("trainer.stop_at.val_acc needs a validation split: set data.val_size > 0")
        self.csv = EpochCSVLogger(self.run_dir, "target.csv")
        self.eval_chunk_size, self.train_time_s = eval_chunk_size, train_time_s

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.after_chunk(pl_module):
            trainer.should_stop = True

    def after_chunk(self, pl_module) -> bool:
        """At a chunk end: check the validation accuracy if a check is due; whether the run stops here (the
        target reached, or the step budget used up)."""
        steps = pl_module.optimizer_steps
        stop = False
        if self.val_acc is not None and steps >= self.due and not pl_module.diverged:
            stop = self.check(pl_module, steps)
        return stop or (self.max_steps is not None and steps >= self.max_steps and not self.summary["reached"])

    def check(self, pl_module, steps: int) -> bool:
        """One check (a row of target.csv); True when it reached the target."""
        start = synchronized_now(pl_module.device)
        train_time_s = self.train_time_s()
        data = pl_module.data
        val = evaluate(pl_module.net, data.x_val, data.y_val, self.eval_chunk_size, data.num_classes)
        reached = val["acc"] >= self.val_acc
        self.checks += 1
        row = {
            "epoch": pl_module.samples_seen / data.n_train,
            "optimizer_steps": steps,
            "samples_seen": pl_module.samples_seen,
            "train_time_s": train_time_s,
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "reached": int(reached),
        }
        self.csv.log_metrics(row)
        if reached:
            test = evaluate(pl_module.net, data.x_test, data.y_test, self.eval_chunk_size, data.num_classes)
            self.summary |= {
                "reached": True,
                "optimizer_steps": steps,
                "previous_check_steps": self.previous_check,
                "epochs": row["epoch"],
                "samples_seen": pl_module.samples_seen,
                "train_time_s": train_time_s,
                "val_acc": val["acc"],
                "test_acc": test["acc"],  # reported at the crossing; never used to select
            }
        else:
            self.previous_check = steps
            self.due = next_check_step(steps, self.ratio)
        self.summary["checks"] = self.checks
        pl_module.record.probe_time_s += synchronized_now(pl_module.device) - start
        return reached

    def stopped(self, optimizer_steps: int) -> dict | None:
        """summary.json's `stopped` when this callback stopped the run (target or step budget), else None."""
        if self.summary["reached"]:
            return {"stopped": f"val_acc >= {self.val_acc:g} at step {self.summary['optimizer_steps']}"}
        if self.max_steps is not None and optimizer_steps >= self.max_steps:
            return {"stopped": f"step budget: {optimizer_steps} >= trainer.stop_at.max_steps={self.max_steps}"}
        return None

    def state_dict(self) -> dict:
        return {"due": self.due, "previous_check": self.previous_check, "checks": self.checks, "summary": self.summary}

    def load_state_dict(self, state_dict: dict) -> None:
        self.due, self.previous_check = state_dict["due"], state_dict["previous_check"]
        self.checks, self.summary = state_dict["checks"], state_dict["summary"]
