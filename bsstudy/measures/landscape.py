"""Filter-normalized loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

A direction d is a Gaussian random vector with the shapes of the weights, rescaled filter by filter
(for a Linear layer, per output neuron = row i of its weight matrix) to the norm of the weights:

    d_i <- d_i / ||d_i|| x ||theta_i||,

so that a step of 1 along d changes every neuron by about its own size, whatever the scale of the
network (which batch size, weight decay and batch norm all change). One-dimensional parameters
(biases, batch-norm scale and shift) get a zero direction by default, as in Li et al.; with
`include_biases` they get the parameter itself, as in Li et al.'s code. The 2-D landscape is
f(theta + alpha d1 + beta d2) on a grid, the 1-D curve f(theta + alpha d1).

The directions are drawn from a CPU generator seeded with the direction seed, so every run of a sweep
gets the same Gaussian draws (each then normalized to its own weights) and their landscapes compare.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

Evaluate = Callable[[torch.Tensor], tuple[float, float]]


def filter_normalized_direction(
    params: dict[str, torch.Tensor], generator: torch.Generator, include_biases: bool = False
) -> dict[str, torch.Tensor]:
    """A random direction with the parameters' shapes, each row (filter) scaled to its weight row's norm."""
    direction = {}
    for name, weight in params.items():
        d = torch.randn(weight.shape, generator=generator).to(weight)
        if weight.dim() <= 1:
            direction[name] = weight.detach().clone() if include_biases else torch.zeros_like(weight)
            continue
        rows, weight_rows = d.reshape(len(d), -1), weight.detach().reshape(len(weight), -1)
        scale = weight_rows.norm(dim=1, keepdim=True) / rows.norm(dim=1, keepdim=True).clamp_min(1e-30)
        direction[name] = (rows * scale).reshape(weight.shape)
    return direction


def loss_curve(evaluate: Evaluate, theta: torch.Tensor, d: torch.Tensor, alphas: np.ndarray) -> dict[str, np.ndarray]:
    """Loss and accuracy at theta + alpha d for every alpha."""
    values = np.array([evaluate(theta + float(a) * d) for a in alphas])
    return {"loss": values[:, 0], "acc": values[:, 1]}


def loss_grid(
    evaluate: Evaluate,
    theta: torch.Tensor,
    d1: torch.Tensor,
    d2: torch.Tensor,
    alphas: np.ndarray,
    betas: np.ndarray,
) -> dict[str, np.ndarray]:
    """Loss and accuracy [len(alphas), len(betas)] at theta + alpha_i d1 + beta_j d2."""
    loss, acc = np.empty((len(alphas), len(betas))), np.empty((len(alphas), len(betas)))
    point = torch.empty_like(theta)
    for i, a in enumerate(alphas):
        row = theta + float(a) * d1
        for j, b in enumerate(betas):
            loss[i, j], acc[i, j] = evaluate(torch.add(row, d2, alpha=float(b), out=point))
    return {"loss": loss, "acc": acc}


def plot_landscape(path: Path, grid: dict[str, np.ndarray], title: str) -> None:
    """Left: contours of the 2-D train loss (levels evenly spaced in log loss, as the loss spans decades);
    right: the 1-D curve. `grid` holds the arrays of landscape.npz."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_curve) = plt.subplots(1, 2, figsize=(10, 4.5))
    loss = grid["train_loss"]
    finite = loss[np.isfinite(loss)]
    levels = np.geomspace(max(finite.min(), 1e-6), finite.max(), 30) if finite.size and finite.max() > 0 else 30
    contour = ax.contour(grid["betas"], grid["alphas"], loss, levels=levels, cmap="viridis")
    fig.colorbar(contour, ax=ax, label="train loss")
    ax.plot(0, 0, "r+", markersize=10)
    ax.set(xlabel="beta (direction 2)", ylabel="alpha (direction 1)", title=title)
    ax_curve.plot(grid["curve_alphas"], grid["curve_train_loss"], label="train")
    if "curve_test_loss" in grid:
        ax_curve.plot(grid["curve_alphas"], grid["curve_test_loss"], label="test")
    ax_curve.set(xlabel="alpha (direction 1)", ylabel="loss", yscale="log", title="1-D filter-normalized curve")
    ax_curve.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
