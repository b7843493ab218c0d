"""The weight norm ||theta||_2 after every epoch, whole network and per layer: a small example of a probe.

Large-batch training is often said to stay closer to its initialization (Hoffer et al. 2017, "Train longer,
generalize better"); the norm of the weights is the simplest view of how far they grew. This module and
bsstudy/conf/probes/weight_norm.yaml are the whole probe: `probes=[weight_norm]` runs it, and the report shows
it with the generic probe section (bsstudy/analysis/report/probes.py), because it names no section of its own.

Files in <run>/probes/weight_norm/: `epochs.csv`, one row per epoch (the whole norm and, with per_layer=true,
one column per layer). metrics.csv gains `weight_norm`; summary.json probes.weight_norm has the final norm
and its ratio to the initial one.
"""

from __future__ import annotations

import torch

from bsstudy.config import BOOL
from bsstudy.runfolder import EpochCSVLogger
from bsstudy.train.probe import Probe


def weight_norm(net: torch.nn.Module) -> float:
    """||theta||_2 over every parameter of `net`."""
    return torch.cat([p.detach().flatten() for p in net.parameters()]).norm().item()


def layer_norms(net: torch.nn.Module) -> dict[str, float]:
    """||W||_2 (Frobenius) of each parameter tensor, by its name in `net`."""
    return {f"norm_{name}": p.detach().norm().item() for name, p in net.named_parameters()}


class WeightNorm(Probe):
    """The weight norm after every epoch, whole network and per layer."""

    epoch_columns = ("weight_norm",)
    settings = {"per_layer": BOOL}

    def __init__(self, out_dir, per_layer: bool = True):
        super().__init__(out_dir)
        self.per_layer = per_layer

    def on_train_start(self, trainer, pl_module) -> None:
        self.csv = EpochCSVLogger(self.out_dir, "epochs.csv")  # keeps the rows of a resumed run
        if trainer.current_epoch == 0:
            self.log_epoch(0, pl_module.net)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        norm = self.log_epoch(trainer.current_epoch + 1, pl_module.net)
        pl_module.record.columns |= {"weight_norm": norm}
        initial = self.csv.rows[0]["weight_norm"]
        self.summary = {"final_weight_norm": norm, "growth_from_init": norm / initial}

    def log_epoch(self, epoch: int, net: torch.nn.Module) -> float:
        norm = weight_norm(net)
        self.csv.log_metrics({"epoch": epoch, "weight_norm": norm, **(layer_norms(net) if self.per_layer else {})})
        return norm
