"""The Hessian spectrum from Hessian-vector products alone (the Hessian itself is never formed).

- Top eigenvalues by block power iteration (orthogonal iteration): V <- qr(H V), with the Ritz values
  eig(V^T H V) as estimates, until every one changes by at most `tol` relative between iterations. It
  finds the k eigenvalues of largest magnitude; at a minimum those are the largest positive ones.
- Trace by Hutchinson's estimator: tr(H) = E[v^T H v] for v with i.i.d. Rademacher (+-1) entries
  (Hutchinson 1990), averaged until the standard error of the mean is at most `rel_tol` |mean|.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

HVP = Callable[[torch.Tensor], torch.Tensor]


def hessian_top_eigenvalues(
    hvp: HVP,
    dim: int,
    generator: torch.Generator,
    k: int = 1,
    max_iterations: int = 100,
    tol: float = 1e-3,
    device: torch.device | str = "cpu",
) -> dict:
    """The k eigenvalues of largest magnitude of the symmetric H (given as v -> H v), largest first."""
    basis, _ = torch.linalg.qr(torch.randn(dim, k, generator=generator).to(device))
    previous, iterations, converged = None, 0, False
    while iterations < max_iterations and not converged:
        iterations += 1
        image = torch.stack([hvp(basis[:, j]) for j in range(k)], dim=1)
        ritz = torch.linalg.eigvalsh(((basis.T @ image + image.T @ basis) / 2).double())
        values = ritz[ritz.abs().argsort(descending=True)]
        converged = previous is not None and bool(((values - previous).abs() <= tol * values.abs()).all())
        previous = values
        basis, _ = torch.linalg.qr(image)
    return {"eigenvalues": values.tolist(), "iterations": iterations, "converged": converged, "tol": tol}


def hessian_trace_hutchinson(
    hvp: HVP,
    dim: int,
    generator: torch.Generator,
    max_samples: int = 100,
    min_samples: int = 10,
    rel_tol: float = 0.02,
    device: torch.device | str = "cpu",
) -> dict:
    """tr(H) ~ mean of v^T H v over Rademacher v, with its standard error and the samples it took."""
    quadratic_forms = []
    for _ in range(max_samples):
        v = (torch.randint(0, 2, (dim,), generator=generator) * 2 - 1).to(device, torch.float32)
        quadratic_forms.append(torch.dot(v, hvp(v)).item())
        n = len(quadratic_forms)
        mean, stderr = (
            float(np.mean(quadratic_forms)),
            float(np.std(quadratic_forms, ddof=1) / np.sqrt(n)) if n > 1 else float("inf"),
        )
        if n >= min_samples and stderr <= rel_tol * abs(mean):
            break
    return {
        "trace": mean,
        "stderr": stderr,
        "samples": n,
        "rel_tol": rel_tol,
        "converged": stderr <= rel_tol * abs(mean),
    }
