"""1-D linear interpolation between two minimizers (Goodfellow et al. 2015; Keskar et al. 2017, fig. 3):

    theta(alpha) = (1 - alpha) theta_a + alpha theta_b,   alpha in [-1, 2] by default,

with train and test loss and accuracy at every alpha; alpha = 0 is theta_a, alpha = 1 is theta_b.
Batch norm follows model.geometry_bn (measures/objective.py, recorded in meta.json): under "batch" each
subset is normalized with its own statistics at theta(alpha); under "running" the running means and
variances are interpolated with the weights, (1 - alpha) s_a + alpha s_b, so that alpha = 0 and 1
reproduce the two networks' own eval-mode losses exactly, as they do without batch norm.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def interpolate(
    evaluate: Callable[[torch.Tensor, float], dict[str, float]],
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    alphas: np.ndarray,
) -> list[dict[str, float]]:
    """One row {alpha, **evaluate(theta(alpha), alpha)} per alpha."""
    return [{"alpha": float(a), **evaluate(torch.lerp(theta_a, theta_b, float(a)), float(a))} for a in alphas]


def interpolated_statistics(
    statistics_a: dict[str, torch.Tensor], statistics_b: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) s_a + alpha s_b for every running statistic (the "running" convention along the line)."""
    return {name: torch.lerp(value, statistics_b[name].to(value), alpha) for name, value in statistics_a.items()}
