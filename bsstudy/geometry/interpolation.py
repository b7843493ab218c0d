"""1-D linear interpolation between two minimizers (Goodfellow et al. 2015; Keskar et al. 2017, fig. 3):

    theta(alpha) = (1 - alpha) theta_a + alpha theta_b,   alpha in [-1, 2] by default,

with train and test loss and accuracy at every alpha; alpha = 0 is theta_a, alpha = 1 is theta_b.
A network with batch norm has running statistics that belong to one endpoint each, so at every alpha
they are recomputed as the batch statistics of the training subset (recorded in meta.json); without
batch norm alpha = 0 and 1 reproduce the two networks' own losses exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from bsstudy.geometry.objective import FlatModel


def interpolate(
    evaluate: Callable[[torch.Tensor], dict[str, float]],
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    alphas: np.ndarray,
) -> list[dict[str, float]]:
    """One row {alpha, **evaluate(theta(alpha))} per alpha."""
    return [{"alpha": float(a), **evaluate(torch.lerp(theta_a, theta_b, float(a)))} for a in alphas]


@torch.no_grad()
def recompute_batch_norm_statistics(model: FlatModel, theta: torch.Tensor, x: torch.Tensor) -> None:
    """Set every batch norm's running mean and variance to the batch statistics of x under theta
    (one training-mode pass over all of x, with momentum None = a cumulative average)."""
    norms = [m for m in model.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    model(theta, x)
    for m, (momentum, training) in zip(norms, saved, strict=True):
        m.momentum = momentum
        m.train(training)
