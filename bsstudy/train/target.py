"""Steps to target validation accuracies, measured within the epoch (Shallue et al. 2019, "Measuring the
Effects of Data Parallelism on Neural Network Training": steps to a target validation error).

An epoch is too coarse a clock for this: at B=16 an epoch of Fashion-MNIST is 3,400 steps, at B=4096 it
is 13. `ValTarget` evaluates the validation accuracy on a geometric schedule of optimizer steps: after a
check at step s the next one is due at step ceil(s * ratio) (ratio `trainer.stop_at.val_check_ratio`,
1.1 by default). Checks happen at chunk ends (training runs in chunks of trainer.chunk_samples samples,
bsstudy/train/module.py), at the first chunk end where the due step is reached, so the step of a check is
exact. The epoch-end evaluations (metrics.csv's rows, bsstudy/train/evaluate.py) count as evaluations too.

Targets: trainer.stop_at.val_acc is one number or a list of them (taken in ascending order, duplicates once).
The run trains to the highest: it stops at the first evaluation (a check or an epoch end) with val_acc >= the
highest target, or at the first chunk end at or after trainer.stop_at.max_steps optimizer steps (the step
budget; trainer.max_epochs stays the cap too). Every target's crossing is recorded (`crossing`): the first
evaluation at or above it (step s1, val_acc a1) and the last one before it (s0, a0, below the target), and the
steps to target interpolated in log-steps, log s* = log s0 + (t - a0) / (a1 - a0) * (log s1 - log s0); a
crossing at the very first evaluation is counted at that step (no bracket). The resolution s1 / s0 says how
far apart the bracketing evaluations were (about the ratio, more where a chunk is long against the steps).

The checks' time is counted as probe time (metrics.csv probe_time_s), never as training time, so
train_time_s at the crossing is the training time to target. Selection uses validation only; the
test accuracy at the crossing is recorded once, for the report, never for a choice.

Files: `<run>/target.csv`, one row per evaluation: optimizer_steps, epoch (samples_seen / n_train, a
fraction), samples_seen, train_time_s, val_loss, val_acc, test_acc (at evaluations that first reached a target,
and at epoch ends; else empty), reached (0/1: val_acc >= the highest target), epoch_end (0: an in-epoch check,
1: an epoch end's row).
summary.json gains `target`: {val_acc_target (the highest target), val_acc_targets (all, ascending), reached,
optimizer_steps and check_steps (the integer step of the first evaluation at or above the highest target: where
the run stopped), steps_interpolated (the crossing in log-steps: steps to target), previous_check_steps (s0; 0
when crossed at the first evaluation), resolution (s1 / s0; null then), epochs, samples_seen, train_time_s,
val_acc, test_acc (at s1), checks (in-epoch checks), evaluations (checks and epoch ends), max_steps, crossings
(one `crossing` per target, ascending)}; the crossing's numbers are null while the highest is not reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import lightning as L

from bsstudy import ConfigError
from bsstudy.config import has_target
from bsstudy.resources import synchronized_now
from bsstudy.runfolder import EpochCSVLogger, read_metrics
from bsstudy.train.evaluate import EpochEvaluation, evaluate

DEFAULT_RATIO = 1.1  # trainer.stop_at.val_check_ratio=null: checks about 10% of the step count apart
EVALUATION_FIELDS = ("optimizer_steps", "val_acc", "test_acc", "epoch", "samples_seen", "train_time_s")  # resume


def next_check_step(step: int, ratio: float) -> int:
    """The step at which the check after a check at `step` is due: ceil(step * ratio), at least step + 1."""
    return max(step + 1, math.ceil(round(step * ratio, 9)))  # round: 100 * 1.1 is 110.00000000000001 in floats


def target_list(val_acc) -> list[float]:
    """trainer.stop_at.val_acc as a list: [] for null, [t] for a number, a list sorted ascending, duplicates once.

    >>> target_list(None), target_list(0.85), target_list([0.88, 0.85, 0.87, 0.85])
    ([], [0.85], [0.85, 0.87, 0.88])
    """
    if val_acc is None:
        return []
    if isinstance(val_acc, (int, float)):
        return [float(val_acc)]
    return sorted({float(t) for t in val_acc})


def crossing(evaluations: Iterable[Mapping], target: float) -> dict | None:
    """The first upward crossing of `target` by val_acc over `evaluations` (in step order, each with
    optimizer_steps and val_acc, optionally test_acc, epoch, samples_seen, train_time_s); None if never reached.

    The first evaluation at or above the target (s1, a1) and the one before it (s0, a0 < target) bracket the
    crossing; steps_interpolated = exp(log s0 + (target - a0) / (a1 - a0) * (log s1 - log s0)), resolution
    s1 / s0. Crossed at the first evaluation: s1 itself, previous_check_steps 0, resolution None. Evaluations
    at step 0 (before training) or with a NaN accuracy (a diverged net) are not counted.

    >>> crossing([{"optimizer_steps": 100, "val_acc": 0.8}, {"optimizer_steps": 110, "val_acc": 0.9}], 0.85)
    ... # doctest: +ELLIPSIS
    {'target': 0.85, 'check_steps': 110, 'steps_interpolated': 104.88..., 'previous_check_steps': 100, ...}
    """
    below = None
    for row in evaluations:
        steps, acc = row["optimizer_steps"], row["val_acc"]
        if steps <= 0 or acc is None or acc != acc:
            continue
        if acc < target:
            below = row
            continue
        if below is None:
            s0, a0, interpolated, resolution = 0, None, float(steps), None
        else:
            s0, a0 = below["optimizer_steps"], below["val_acc"]
            fraction = (target - a0) / (acc - a0)
            interpolated = math.exp(math.log(s0) + fraction * (math.log(steps) - math.log(s0)))
            resolution = steps / s0
        return {
            "target": target,
            "check_steps": steps,
            "steps_interpolated": interpolated,
            "previous_check_steps": s0,
            "resolution": resolution,
            "val_acc_below": a0,
            "val_acc": acc,
            "test_acc": row.get("test_acc"),  # reported at the crossing; never used to select
            "epochs": row.get("epoch"),  # samples_seen / n_train
            "samples_seen": row.get("samples_seen"),
            "train_time_s": row.get("train_time_s"),
        }
    return None


def target_callbacks(stop_at, run_dir: Path) -> list[ValTarget]:
    """A ValTarget when a val_acc target or a step budget is set, else none."""
    if not has_target(stop_at):
        return []
    ratio = stop_at.get("val_check_ratio") or DEFAULT_RATIO
    return [ValTarget(run_dir, stop_at.get("val_acc"), ratio, stop_at.get("max_steps"))]


class ValTarget(L.Callback):
    """Validation accuracy on a geometric step schedule and at epoch ends; stop at the highest of the `val_acc`
    targets or after `max_steps` steps.

    >>> next_check_step(10, 1.1), next_check_step(100, 1.1)
    (11, 110)
    """

    def __init__(self, run_dir: str | Path, val_acc, ratio: float, max_steps: int | None):
        self.run_dir, self.ratio, self.max_steps = Path(run_dir), ratio, max_steps
        self.targets = target_list(val_acc)
        self.val_acc = self.targets[-1] if self.targets else None  # the highest: the run stops there
        self.due = 1  # the step at or after which the next check happens
        self.checks = 0
        self.evaluations: list[dict] = []  # EVALUATION_FIELDS of every evaluation counted, in step order
        self.summary: dict = self.summarize()

    @property
    def reached(self) -> bool:
        return self.val_acc is not None and bool(self.summary["reached"])

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        evaluation = next(cb for cb in trainer.callbacks if isinstance(cb, EpochEvaluation))

        def train_time_s() -> float:  # the finished epochs' (EpochEvaluation) plus this epoch's, probes excluded
            now = synchronized_now(pl_module.device)
            return evaluation.train_time_s + now - evaluation.epoch_start - pl_module.record.probe_time_s

        self.evaluation = evaluation
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

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        """After EpochEvaluation (before it in trainer.callbacks): its row of this epoch is an evaluation."""
        if self.epoch_end(pl_module, self.evaluation.row):
            trainer.should_stop = True

    def after_chunk(self, pl_module) -> bool:
        """At a chunk end: check the validation accuracy if a check is due; whether the run stops here (the
        highest target reached, or the step budget used up)."""
        steps = pl_module.optimizer_steps
        stop = False
        if self.val_acc is not None and steps >= self.due and not pl_module.diverged:
            stop = self.check(pl_module, steps)
        return stop or (self.max_steps is not None and steps >= self.max_steps and not self.reached)

    def check(self, pl_module, steps: int) -> bool:
        """One check (a row of target.csv); True when it reached the highest target."""
        start = synchronized_now(pl_module.device)
        train_time_s = self.train_time_s()
        data = pl_module.data
        val = evaluate(pl_module.net, data.x_val, data.y_val, self.eval_chunk_size, data.num_classes)
        self.checks += 1
        row = {
            "epoch": pl_module.samples_seen / data.n_train,
            "optimizer_steps": steps,
            "samples_seen": pl_module.samples_seen,
            "train_time_s": train_time_s,
            "val_loss": val["loss"],
            "val_acc": val["acc"],
        }
        if self.first_reaches(val["acc"]):
            test = evaluate(pl_module.net, data.x_test, data.y_test, self.eval_chunk_size, data.num_classes)
            row["test_acc"] = test["acc"]
        reached = self.record(row, epoch_end=False)
        if not reached:
            self.due = next_check_step(steps, self.ratio)
        pl_module.record.probe_time_s += synchronized_now(pl_module.device) - start
        return reached

    def epoch_end(self, pl_module, row: Mapping) -> bool:
        """The epoch's metrics.csv row (evaluate.py: epoch_row) as an evaluation, unless a check already saw its
        step; True when it reached the highest target (the run stops after this epoch)."""
        steps = row["optimizer_steps"]
        if self.val_acc is None or pl_module.diverged or self.reached or "val_acc" not in row:
            return False
        if self.evaluations and self.evaluations[-1]["optimizer_steps"] >= steps:
            return False
        evaluation = {key: row[key] for key in ("optimizer_steps", "samples_seen", "train_time_s", "val_loss")}
        evaluation |= {"epoch": row["samples_seen"] / pl_module.data.n_train, "val_acc": row["val_acc"],
                       "test_acc": row["test_acc"]}  # fmt: skip
        return self.record(evaluation, epoch_end=True)

    def first_reaches(self, val_acc: float) -> bool:
        """Whether an evaluation at `val_acc` reaches a target that no evaluation reached before."""
        best = max((e["val_acc"] for e in self.evaluations if e["val_acc"] == e["val_acc"]), default=-math.inf)
        return any(best < t <= val_acc for t in self.targets)

    def record(self, row: dict, epoch_end: bool) -> bool:
        """A row of target.csv and an evaluation of the crossings; True when it reached the highest target."""
        reached = row["val_acc"] >= self.val_acc
        self.csv.log_metrics({**row, "reached": int(reached), "epoch_end": int(epoch_end)})
        self.evaluations.append({key: row.get(key) for key in EVALUATION_FIELDS})
        self.summary = self.summarize()
        return reached

    def summarize(self) -> dict:
        """summary.json's `target` from the evaluations so far (the module docstring lists its keys)."""
        crossings = [crossing(self.evaluations, t) or {"target": t, "reached": False} for t in self.targets]
        for c in crossings:
            c.setdefault("reached", True)
        top = crossings[-1] if crossings and crossings[-1]["reached"] else {}
        fields = ("steps_interpolated", "previous_check_steps", "resolution", "epochs", "samples_seen",
                  "train_time_s", "val_acc", "test_acc")  # fmt: skip
        return {
            "val_acc_target": self.val_acc,
            "val_acc_targets": self.targets,
            "reached": bool(top),
            "optimizer_steps": top.get("check_steps"),
            "check_steps": top.get("check_steps"),
            **{key: top.get(key) for key in fields},
            "checks": self.checks,
            "evaluations": len(self.evaluations),
            "max_steps": self.max_steps,
            "crossings": crossings,
        }

    def stopped(self, optimizer_steps: int) -> dict | None:
        """summary.json's `stopped` when this callback stopped the run (target or step budget), else None."""
        if self.reached:
            return {"stopped": f"val_acc >= {self.val_acc:g} at step {self.summary['optimizer_steps']}"}
        if self.max_steps is not None and optimizer_steps >= self.max_steps:
            return {"stopped": f"step budget: {optimizer_steps} >= trainer.stop_at.max_steps={self.max_steps}"}
        return None

    def state_dict(self) -> dict:
        return {"due": self.due, "checks": self.checks, "evaluations": self.evaluations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.due, self.checks = state_dict["due"], state_dict["checks"]
        if "evaluations" in state_dict:
            self.evaluations = [dict(e) for e in state_dict["evaluations"]]
        else:  # a checkpoint from before epoch ends counted: its checks, all below the target, are in target.csv
            path = self.run_dir / "target.csv"
            rows = read_metrics(path) if path.exists() else []
            last = state_dict["previous_check"]
            self.evaluations = [{k: r.get(k) for k in EVALUATION_FIELDS} for r in rows if r["optimizer_steps"] <= last]
        self.summary = self.summarize()
