"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, "An Empirical
Model of Large-Batch Training"), estimated during training.

G is the full-batch gradient and Sigma the per-sample gradient covariance. A batch of B samples
has E|G_B|^2 = |G|^2 + tr(Sigma)/B, so squared gradient norms at two batch sizes b < B give
unbiased estimates (their appendix A.1):

    |G|^2    ~ (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(Sigma) ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

Each measurement draws B training samples (seeded by seed, epoch and measurement, independent of
the training order), splits them into B/b batches of b, takes the gradient of each batch at the
current weights with torch.func (the model is not touched), and uses the mean of their squared
norms as |G_b|^2 and the squared norm of their mean as |G_B|^2. Both estimates are smoothed by
an exponential moving average, and B_simple is the ratio of the averages.

Batch norm (model=keskar_f1): the gradients are those of the network in eval mode, each BatchNorm
normalizing with its running statistics at the moment of the measurement. The estimator needs a
loss that is a mean of per-sample losses, E|G_b|^2 = |G|^2 + tr(Sigma)/b; with batch statistics a
sample's loss depends on the rest of its batch, there is no per-sample gradient, and the two-batch
estimate would measure a quantity that changes with b. So with batch norm B_simple is that of the
eval-mode loss (the function the per-epoch evaluation reports), not of the training-mode gradients;
summary.json probes.noise_scale.batch_norm says so. Without batch norm (or dropout) eval and
training mode are the same function.

How to read it: B_simple approximates the critical batch size. Batches well below it make
almost perfect use of every sample (doubling B halves the steps needed); batches well above it
waste samples (doubling B barely reduces the steps). It grows during training as the gradient
signal shrinks relative to its noise.

Files in <run>/probes/noise_scale/: `measurements.csv`, one row per measurement.
metrics.csv gains `noise_scale`, `grad_sq_norm` and `grad_trace_cov` (the smoothed values at the epoch's end).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from bsstudy import ConfigError
from bsstudy.config import POSITIVE_INT, Rule
from bsstudy.measures.objective import has_batch_norm
from bsstudy.runfolder import EpochCSVLogger
from bsstudy.streams import torch_generator
from bsstudy.train.probe import Probe


def noise_scale_estimates(small_sq: float, big_sq: float, b_small: int, b_big: int) -> tuple[float, float]:
    """Unbiased (|G|^2, tr(Sigma)) from E|G_b|^2 = |G|^2 + tr(Sigma)/b at batch sizes b_small < b_big."""
    g_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
    return g_sq, trace


@contextmanager
def eval_mode(net: torch.nn.Module):
    """`net` in eval mode for the block, then back in the mode it was in."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def batch_gradient_sq_norms(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, b_small: int
) -> tuple[float, float]:
    """(mean over batches of |G_b|^2, |mean of the batch gradients|^2) for x, y split into batches of b_small,
    with `net` in eval mode (batch norm on its running statistics, which are read, never written)."""
    params = {name: p.detach() for name, p in net.named_parameters()}

    def batch_loss(params, xb, yb):
        return F.nll_loss(functional_call(net, params, (xb,)), yb)

    xs, ys = x.reshape(-1, b_small, x.shape[1]), y.reshape(-1, b_small)
    with eval_mode(net):
        grads = vmap(grad(batch_loss), in_dims=(None, 0, 0))(params, xs, ys)
    flat = torch.cat([g.reshape(len(xs), -1) for g in grads.values()], dim=1)  # [B/b, parameters]
    return flat.square().sum(1).mean().item(), flat.mean(0).square().sum().item()


class NoiseScale(Probe):
    """B_simple = tr(Sigma)/|G|^2 from two batch sizes, `measurements_per_epoch` times per epoch."""

    report_section = "bsstudy.analysis.report.dynamics:noise_scale_section"
    report_order = 30
    epoch_columns = ("noise_scale", "grad_sq_norm", "grad_trace_cov")
    settings = {
        "small_batch": POSITIVE_INT,
        "big_batch": POSITIVE_INT,
        "measurements_per_epoch": POSITIVE_INT,
        "ema": Rule("number", min=0, max=1, open_max=True),
    }

    def __init__(self, out_dir, small_batch: int, big_batch: int, measurements_per_epoch: int, ema: float):
        super().__init__(out_dir)
        if not (small_batch >= 1 and big_batch > small_batch and big_batch % small_batch == 0):
            raise ConfigError(
                "probes.noise_scale.big_batch must be a larger multiple of probes.noise_scale.small_batch; "
                f"got big_batch={big_batch}, small_batch={small_batch}"
            )
        self.small_batch, self.big_batch, self.ema = small_batch, big_batch, ema
        self.measurements_per_epoch = measurements_per_epoch
        self.smoothed: dict[str, float] = {}  # EMA of |G|^2 and tr(Sigma); saved with checkpoints

    def on_train_start(self, trainer, pl_module) -> None:
        if pl_module.data.n_train < self.big_batch:
            raise ConfigError(
                f"probes.noise_scale.big_batch ({self.big_batch}) exceeds the training set ({pl_module.data.n_train})"
            )
        self.csv = EpochCSVLogger(self.out_dir, "measurements.csv")
        if has_batch_norm(pl_module.net):
            self.summary["batch_norm"] = "eval mode: gradients of the loss with the running statistics"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Measurement k of the epoch happens at the end of the chunk where (k+1)/m of the epoch is done;
        with fewer chunks than measurements, several happen (on independent samples) at one chunk end."""
        n_chunks, m = trainer.num_training_batches, self.measurements_per_epoch
        for k in range(m):
            if math.ceil((k + 1) * n_chunks / m) - 1 == batch_idx:
                with self.timed(pl_module):
                    self.measure(trainer, pl_module, k)

    def measure(self, trainer, pl_module, index: int) -> None:
        g = torch_generator(pl_module.seed, "noise_scale", trainer.current_epoch, index)
        picked = torch.randperm(pl_module.data.n_train, generator=g)[: self.big_batch].to(pl_module.device)
        x, y = pl_module.data.x_train[picked], pl_module.data.y_train[picked]
        small_sq, big_sq = batch_gradient_sq_norms(pl_module.net, x, y, self.small_batch)
        g_sq, trace = noise_scale_estimates(small_sq, big_sq, self.small_batch, self.big_batch)
        for key, value in (("grad_sq_norm", g_sq), ("grad_trace_cov", trace)):
            previous = self.smoothed.get(key, value)
            self.smoothed[key] = self.ema * previous + (1 - self.ema) * value
        epoch = trainer.current_epoch + (index + 1) / self.measurements_per_epoch  # nominal; optimizer_steps is exact
        self.csv.log_metrics(
            {"epoch": epoch, "optimizer_steps": pl_module.optimizer_steps, "small_sq": small_sq, "big_sq": big_sq,
             "grad_sq_norm_raw": g_sq, "grad_trace_cov_raw": trace, **self.smoothed, "noise_scale": self.noise_scale()}
        )  # fmt: skip

    def noise_scale(self) -> float:
        return self.smoothed["grad_trace_cov"] / self.smoothed["grad_sq_norm"]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.smoothed:
            pl_module.record.columns |= {**self.smoothed, "noise_scale": self.noise_scale()}

    def state_dict(self) -> dict:
        return {"smoothed": self.smoothed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.smoothed = state_dict["smoothed"]
