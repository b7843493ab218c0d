"""Linear interpolation between this run's final weights (alpha = 0) and another minimizer (alpha = 1),
see bsstudy/measures/interpolation.py. `probes.interpolation.other` names the other minimizer: a run
folder (its checkpoints/last.ckpt) or a checkpoint file, of a network with the same architecture.

Files in the output folder (<run>/probes/interpolation/, or <sweep>/geometry/interpolation_<Ba>_<Bb>/ from
`python -m bsstudy.analysis.geometry interpolate`): `interpolation.csv` (alpha, train_loss, train_acc, test_loss,
test_acc) and `meta.json` (run_a, run_b, batch_size_a, batch_size_b, geometry_bn, settings, and the summary:
train_loss and grad_norm at alpha = 0, other_train_loss and other_grad_norm at alpha = 1, on the whole training
set). Batch norm follows run_a's model.geometry_bn (under "running" the running statistics are interpolated too).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bsstudy import ConfigError
from bsstudy.config import POSITIVE_INT, SAMPLES, Rule
from bsstudy.measures.interpolation import interpolate, interpolated_statistics
from bsstudy.measures.objective import measured_point, subset_loss
from bsstudy.runfolder import RunFolder, load_weights, write_json, write_table
from bsstudy.train.probe import Probe


def recorded_batch_size(run_dir: Path | None) -> int | None:
    """A run's batch size from its .hydra/config.yaml, else its summary.json, else None."""
    if run_dir is None:
        return None
    if RunFolder(run_dir).config_path.is_file():
        return RunFolder(run_dir).config().data.batch_size
    return (RunFolder(run_dir).summary() or {}).get("batch_size")


def resolve_other(other: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint, run folder or None) of `other`: a run folder or a checkpoint file inside or outside one."""
    other = Path(other)
    if other.is_dir():
        return RunFolder(other).checkpoints / "last.ckpt", other
    run = other.parent.parent
    return other, run if other.parent.name == RunFolder.CHECKPOINTS else None


class Interpolation(Probe):
    """Train and test loss and accuracy along (1 - alpha) theta_this + alpha theta_other."""

    report_section = "bsstudy.analysis.report.geometry:interpolation_section"
    report_order = 50
    measures_at_train_end = True
    settings = {
        "other": Rule("str", nullable=True),
        "points": Rule("int", min=2),
        "alpha_min": Rule("number"),
        "alpha_max": Rule("number"),
        "train_samples": SAMPLES,
        "test_samples": SAMPLES,
        "chunk_size": POSITIVE_INT,
    }

    def __init__(
        self,
        out_dir,
        other: str | None = None,
        points: int = 31,
        alpha_min: float = -1.0,
        alpha_max: float = 2.0,
        train_samples: int | None = None,
        test_samples: int | None = None,
        chunk_size: int = 8192,
    ):
        super().__init__(out_dir)
        if not alpha_min < alpha_max:
            raise ConfigError(f"probes.interpolation.alpha_min must be < alpha_max; got {alpha_min!r}, {alpha_max!r}")
        self.other, self.points, self.alpha_min, self.alpha_max = other, points, alpha_min, alpha_max
        self.train_samples, self.test_samples, self.chunk_size = train_samples, test_samples, chunk_size

    def on_fit_start(self, trainer, pl_module) -> None:
        """Fail before training, not after it, when the other minimizer is missing."""
        if self.other is None:
            raise ConfigError("probes.interpolation.other must name a run folder or a checkpoint file; got null")
        checkpoint, _ = resolve_other(self.other)
        if not checkpoint.is_file():
            raise ConfigError(f"probes.interpolation.other={self.other}: no checkpoint at {checkpoint}")

    def on_train_end(self, trainer, pl_module) -> None:
        if pl_module.diverged:
            self.summary = {"skipped": "the run diverged"}
            return
        checkpoint, other_run = resolve_other(self.other)
        other_net = load_weights(copy.deepcopy(pl_module.net).cpu(), checkpoint).to(pl_module.device)
        meta = {
            "run_a": str(self.out_dir.parents[1]),
            "run_b": str(other_run or checkpoint),
            "batch_size_a": pl_module.batch_size,
            "batch_size_b": recorded_batch_size(other_run),
            "checkpoint_b": str(checkpoint),
        }
        self.summary = self.measure(pl_module.net, other_net, pl_module.data, pl_module.seed, meta)

    def measure(self, net_a, net_b, data, seed: int, meta: dict) -> dict:
        """Evaluate the interpolation between `net_a` and `net_b`; writes interpolation.csv and meta.json."""
        started = time.perf_counter()
        train = subset_loss(net_a, data, "train", self.train_samples, seed, self.chunk_size, self.check_stop)
        test = subset_loss(net_a, data, "test", self.test_samples, seed, self.chunk_size, self.check_stop)
        test.model = train.model  # one network copy, so the interpolated running statistics serve both
        statistics_a = {name: value.clone() for name, value in train.model.running_statistics().items()}
        statistics_b = dict(net_b.named_buffers())
        running = train.model.geometry_bn == "running"

        def evaluate(theta, alpha):
            if running:
                train.model.set_running_statistics(interpolated_statistics(statistics_a, statistics_b, alpha))
            (train_loss, train_acc), (test_loss, test_acc) = (
                train.loss_and_accuracy(theta),
                test.loss_and_accuracy(theta),
            )
            return {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc}

        theta_b = train.model.flatten(dict(net_b.named_parameters())).detach()
        alphas = np.linspace(self.alpha_min, self.alpha_max, self.points)
        table = pd.DataFrame(interpolate(evaluate, train.model.theta, theta_b, alphas))
        write_table(self.out_dir / "interpolation.csv", table)
        inside = table[(table.alpha >= 0) & (table.alpha <= 1)]
        ends = np.interp([0.0, 1.0], table.alpha, table.train_loss)
        at_b = {f"other_{k}": v for k, v in measured_point(net_b, data, self.chunk_size, self.check_stop).items()}
        summary = {
            # train_loss, grad_norm at this run's weights
            **measured_point(net_a, data, self.chunk_size, self.check_stop),
            **at_b,
            "train_loss_a": float(ends[0]),
            "train_loss_b": float(ends[1]),
            "barrier_train_loss": float(inside.train_loss.max() - ends.max()),
            "points": self.points,
            "geometry_bn": train.model.geometry_bn,
            "train_samples": len(train.y),
            "test_samples": len(test.y),
            "time_s": time.perf_counter() - started,
        }
        write_json(
            self.out_dir / "meta.json", meta | {"alpha_min": self.alpha_min, "alpha_max": self.alpha_max} | summary
        )
        return summary
