"""The Hessian spectrum from Hessian-vector products alone (the Hessian itself is never formed).

- Extreme eigenvalues by the implicitly restarted Lanczos method (ARPACK, scipy.sparse.linalg.eigsh on
  a LinearOperator whose matvec is the Hessian-vector product, float64 at the scipy boundary):
  which="LA" gives the largest algebraic eigenvalues (lambda_max: the top curvature), which="LM" the
  largest in magnitude (lambda_abs_max: negative where a direction of negative curvature dominates, as
  it may away from a minimum). ARPACK stops when every Ritz pair's residual estimate is at most
  tol |lambda|; each returned pair (lambda, v) is then checked with one more product, and its residual
  ||H v - lambda v|| (||v|| = 1) and relative residual ||H v - lambda v|| / |lambda| are reported. For a
  symmetric H the residual bounds the error: some eigenvalue lies within ||H v - lambda v|| of lambda.
  When the k largest-magnitude eigenvalues are all positive they are also the k largest algebraic ones
  (every other eigenvalue is at most their magnitude), so LA is then read from LM, not run again.
- Trace by Hutchinson's estimator: tr(H) = E[v^T H v] for v with i.i.d. Rademacher (+-1) entries
  (Hutchinson 1990), averaged until the standard error of the mean is at most `rel_tol` |mean|.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse.linalg
import torch

HVP = Callable[[torch.Tensor], torch.Tensor]


class HVPBudgetSpent(Exception):
    """The Lanczos iteration asked for more Hessian-vector products than it was allowed."""


def hessian_operator(hvp: HVP, dim: int, like: torch.Tensor, max_products: int) -> scipy.sparse.linalg.LinearOperator:
    """H as a float64 scipy LinearOperator; products run in `like`'s dtype and device. Its `products`
    attribute counts them; the product past `max_products` raises HVPBudgetSpent."""

    def matvec(v: np.ndarray) -> np.ndarray:
        if operator.products >= max_products:
            raise HVPBudgetSpent
        operator.products += 1
        vector = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1)).to(like)
        return hvp(vector).double().cpu().numpy()

    operator = scipy.sparse.linalg.LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    operator.products = 0
    return operator


def residuals(hvp: HVP, values: np.ndarray, vectors: np.ndarray, like: torch.Tensor) -> np.ndarray:
    """||H v_i - lambda_i v_i|| for each Ritz pair (the columns of `vectors`, of unit norm)."""
    out = []
    for value, vector in zip(values, vectors.T, strict=True):
        v = torch.from_numpy(np.ascontiguousarray(vector)).to(like)
        out.append(float(np.linalg.norm(hvp(v).double().cpu().numpy() - value * vector)))
    return np.array(out)


def hessian_extreme_eigenvalues(
    hvp: HVP,
    like: torch.Tensor,
    v0: np.ndarray,
    which: str,
    k: int = 1,
    tol: float = 1e-3,
    ncv: int = 20,
    max_hvps: int = 500,
) -> dict:
    """The k eigenvalues of the symmetric H (given as v -> H v on vectors like `like`) that are largest
    algebraically (which="LA", largest first) or in magnitude ("LM", largest |lambda| first), by Lanczos
    from the start vector v0 with ARPACK tolerance `tol`, a basis of `ncv` vectors and at most `max_hvps`
    products. Returns the eigenvalues (NaN where ARPACK did not converge), their residuals, relative
    residuals, the products used and whether all k converged."""
    dim = len(like)
    ncv = min(ncv, dim)
    operator = hessian_operator(hvp, dim, like, max_hvps)
    message = "converged"
    try:
        values, vectors = scipy.sparse.linalg.eigsh(
            operator, k=k, which=which, v0=v0, tol=tol, ncv=ncv, maxiter=max_hvps
        )
    except scipy.sparse.linalg.ArpackNoConvergence as err:
        values, vectors, message = err.eigenvalues, err.eigenvectors, str(err)
    except HVPBudgetSpent:
        values, vectors = np.empty(0), np.empty((dim, 0))
        message = f"no Ritz value converged within max_hvps = {max_hvps} Hessian-vector products"
    order = np.argsort(-values if which == "LA" else -np.abs(values))
    values, vectors = values[order], vectors[:, order]
    residual = residuals(hvp, values, vectors, like)
    missing = k - len(values)
    return {
        "which": which,
        "eigenvalues": [*values.tolist(), *[float("nan")] * missing],
        "residuals": [*residual.tolist(), *[float("nan")] * missing],
        "relative_residuals": [*(residual / np.abs(values)).tolist(), *[float("nan")] * missing],
        "hvps": operator.products,
        "residual_hvps": len(values),
        "converged": missing == 0,
        "message": message,
        "k": k,
        "tol": tol,
        "ncv": ncv,
        "max_hvps": max_hvps,
    }


def hessian_lambda_max_and_abs_max(
    hvp: HVP, like: torch.Tensor, v0: np.ndarray, k: int = 1, tol: float = 1e-3, ncv: int = 20, max_hvps: int = 500
) -> dict[str, dict]:
    """{"LM": ..., "LA": ...}: `hessian_extreme_eigenvalues` for the largest magnitude, then for the largest
    algebraic, which is LM's result (with "read_from": "LM" and no further product) when LM converged to
    k positive eigenvalues."""
    magnitude = hessian_extreme_eigenvalues(hvp, like, v0, "LM", k, tol, ncv, max_hvps)
    if magnitude["converged"] and min(magnitude["eigenvalues"]) > 0:
        top = magnitude | {"which": "LA", "read_from": "LM", "hvps": 0, "residual_hvps": 0}
    else:
        top = hessian_extreme_eigenvalues(hvp, like, v0, "LA", k, tol, ncv, max_hvps)
    return {"LM": magnitude, "LA": top}


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
