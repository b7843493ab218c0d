"""Sharpness of a minimizer (Keskar et al. 2017, "On Large-Batch Training for Deep Learning", metric 2.1).

For a minimizer x of f, a matrix A (n x p) and the box

    C_eps = { y in R^p : |y_i| <= eps (|(A^+ x)_i| + 1) },   A^+ the pseudo-inverse of A,

the sharpness is the largest relative loss increase inside the box, in percent:

    phi_{x,f}(eps, A) = (max_{y in C_eps} f(x + A y) - f(x)) / (1 + f(x)) x 100.

A = I (z = y, box |z_i| <= eps (|x_i| + 1)) is the full-space sharpness; Keskar et al. also report a
random 100-dimensional subspace, A with i.i.d. N(0, 1) entries. The maximum is approximated as they
did, with a few iterations of L-BFGS-B (scipy) started at y = 0; phi reports the largest f seen at any
point the optimizer evaluated (all inside the box), so it is a lower bound of the true maximum.

As the baseline it should be compared with, `random_sharpness` is the same relative increase averaged
over points z drawn uniformly from the full-space box.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import scipy.optimize
import torch

OPTIMIZER = "L-BFGS-B (scipy.optimize.minimize), started at the minimizer"


def relative_increase(loss: float, base: float) -> float:
    """Keskar et al.'s normalization: (f(x + z) - f(x)) / (1 + f(x)) x 100."""
    return (loss - base) / (1.0 + base) * 100.0


def box_half_widths(center: torch.Tensor, eps: float) -> torch.Tensor:
    """eps (|c_i| + 1): the half-width of the box in every coordinate."""
    return eps * (center.abs() + 1.0)


def random_subspace(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """A [n, dim] with i.i.d. N(0, 1) entries, drawn on the CPU from `generator` (the same A on every device)."""
    return torch.randn(n, dim, generator=generator)


def pseudo_inverse_apply(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A^+ x = (A^T A)^{-1} A^T x for A of full column rank (a tall random A is well conditioned)."""
    gram = (a.T @ a).double()
    return torch.linalg.solve(gram, (a.T @ x).double()).to(x.dtype)


def sharpness_eps_box(
    loss_and_gradient: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    x: torch.Tensor,
    eps: float,
    iterations: int = 10,
    subspace: torch.Tensor | None = None,
) -> dict:
    """phi_{x,f}(eps, A) with A = I (subspace None) or A = `subspace` [n, p], maximized by `iterations`
    L-BFGS-B iterations. Returns the sharpness and the optimizer's budget and what it used."""
    started = time.perf_counter()
    base, _ = loss_and_gradient(x)
    if subspace is None:
        center, lift, pull = x, (lambda y: y), (lambda g: g)
    else:
        a = subspace.to(x.device)
        center, lift, pull = pseudo_inverse_apply(a, x), (lambda y: a @ y), (lambda g: a.T @ g)
    half = box_half_widths(center, eps).double().cpu().numpy()
    seen = [base]

    def negative_loss(y: np.ndarray) -> tuple[float, np.ndarray]:
        loss, gradient = loss_and_gradient(x + lift(torch.from_numpy(y).to(x)))
        seen.append(loss)
        return -loss, -pull(gradient).double().cpu().numpy()

    result = scipy.optimize.minimize(
        negative_loss,
        np.zeros_like(half),
        jac=True,
        method="L-BFGS-B",
        bounds=scipy.optimize.Bounds(-half, half),
        options={"maxiter": iterations, "ftol": 0.0, "gtol": 0.0},  # stop on the iteration budget only
    )
    max_loss = max(seen)
    return {
        "sharpness": relative_increase(max_loss, base),
        "loss": base,
        "max_loss": max_loss,
        "eps": eps,
        "dimension": len(half),
        "optimizer": OPTIMIZER,
        "max_iterations": iterations,
        "iterations": int(result.nit),
        "evaluations": len(seen) - 1,
        "message": str(result.message),
        "time_s": time.perf_counter() - started,
    }


def random_sharpness(
    loss: Callable[[torch.Tensor], float], x: torch.Tensor, eps: float, samples: int, generator: torch.Generator
) -> dict:
    """The mean (and std) of (f(x + z) - f(x)) / (1 + f(x)) x 100 over `samples` points z drawn uniformly
    from the full-space box |z_i| <= eps (|x_i| + 1) (CPU generator, so the same z on every device)."""
    base = loss(x)
    half = box_half_widths(x, eps)
    values = [
        relative_increase(loss(x + (2 * torch.rand(len(x), generator=generator).to(x) - 1) * half), base)
        for _ in range(samples)
    ]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "samples": samples}
