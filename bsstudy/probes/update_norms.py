"""How far the weights move: per-step update norms and per-epoch distances (Chang & Pathak 2020).

Per optimizer step t: ||theta_{t+1} - theta_t||_2 of the whole model and of each layer (weight
and bias together). Per epoch e: the epoch distance ||theta_end(e) - theta_start(e)||_2, the
distance from initialization ||theta_end(e) - theta_0||_2, and the median and quartiles of the
step norms. The step norms come from the training step itself (StudyModule.record, module.EpochRecord), so
the probe adds no pass over the weights per step.

Files in <run>/probes/update_norms/: `epoch_<e>.npz` (arrays `total` and `layer_<i>`, one value
per step of epoch e), `epochs.csv` (one row per epoch), `theta0.pt` (the initial weights, so a
resumed run measures from the same origin).
"""

from __future__ import annotations

import numpy as np
import torch

from bsstudy.runfolder import EpochCSVLogger
from bsstudy.train.probe import Probe

QUANTILES = torch.tensor([0.25, 0.5, 0.75])


def flat_parameters(net: torch.nn.Module) -> torch.Tensor:
    """All parameters of `net` as one detached vector theta (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def epoch_distance(theta_end: torch.Tensor, theta_start: torch.Tensor) -> float:
    """||theta_end - theta_start||_2."""
    return torch.linalg.vector_norm(theta_end - theta_start).item()


def layer_of_parameters(net: torch.nn.Module) -> list[int]:
    """The layer i of every parameter, in `parameters()` order: `layers.<i>.*` and its batch norm `norms.<i>.*`."""
    return [int(name.split(".")[1]) for name, _ in net.named_parameters()]


def step_norm_table(update_sq_norms: torch.Tensor, layer_of_param: list[int]) -> dict[str, np.ndarray]:
    """Per-step norms from per-parameter squared norms [steps, parameters]: `total` = sqrt(sum of all),
    `layer_<i>` = sqrt(sum over layer i's parameters: weight, bias and, with batch norm, its scale and shift)."""
    index = torch.tensor(layer_of_param, device=update_sq_norms.device)
    per_layer = update_sq_norms.new_zeros(len(update_sq_norms), max(layer_of_param) + 1)
    per_layer.index_add_(1, index, update_sq_norms)
    table = {"total": update_sq_norms.sum(1).sqrt()}
    table |= {f"layer_{i}": per_layer[:, i].sqrt() for i in range(per_layer.shape[1])}
    return {k: v.cpu().numpy() for k, v in table.items()}


class UpdateNorms(Probe):
    """Step norms, epoch distance and distance from initialization; medians and distances join metrics.csv."""

    report_section = "bsstudy.analysis.report.dynamics:update_norms_section"
    report_order = 10
    epoch_columns = ("update_norm_median", "epoch_distance", "distance_from_init")

    def on_train_start(self, trainer, pl_module) -> None:
        path = self.out_dir / "theta0.pt"
        if trainer.current_epoch == 0 or not path.exists():
            torch.save(flat_parameters(pl_module.net).cpu(), path)
        self.theta0 = torch.load(path).to(pl_module.device)
        self.epochs_csv = EpochCSVLogger(self.out_dir, "epochs.csv")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.theta_start = flat_parameters(pl_module.net)
        n_params = len(list(pl_module.net.parameters()))
        steps = pl_module.epoch_plan(trainer.current_epoch).steps
        pl_module.record.track_update_norms(steps, n_params, pl_module.device)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        norms = pl_module.record.take_update_norms()[: pl_module.epoch_steps]
        table = step_norm_table(norms, layer_of_parameters(pl_module.net))
        np.savez(self.out_dir / f"epoch_{epoch:03d}.npz", **table)
        theta = flat_parameters(pl_module.net)
        q25, median, q75 = torch.quantile(torch.from_numpy(table["total"]), QUANTILES).tolist()
        row = {
            "update_norm_median": median,
            "epoch_distance": epoch_distance(theta, self.theta_start),
            "distance_from_init": epoch_distance(theta, self.theta0),
        }
        pl_module.record.columns |= row
        self.epochs_csv.log_metrics(
            {"epoch": epoch, "steps": pl_module.epoch_steps, **row, "update_norm_q25": q25, "update_norm_q75": q75}
            | {f"{k}_median": float(np.median(v)) for k, v in table.items() if k != "total"}
        )
