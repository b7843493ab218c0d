"""Hessian spectrum of the final minimizer: extreme eigenvalues (Lanczos) and trace, see bsstudy/measures/hessian.py.

Files in <run>/probes/hessian/: `hessian.json` (estimates with their residuals, products, tolerances, convergence).
summary.json probes.hessian: lambda_max (largest algebraic eigenvalue) and lambda_abs_max (largest magnitude),
each with _residual (||H v - lambda v||), _relative_residual (/ |lambda|), _hvps (0 for lambda_max when it
was read from a positive lambda_abs_max) and _converged; trace, trace_stderr, ...; geometry_bn (the
batch-norm convention). `top_eigenvalue` is kept as an alias of lambda_abs_max (what the earlier power
iteration estimated), for readers of older summaries.
train_loss and grad_norm (whole training set, at the measured weights: bsstudy/measures/objective.py).
"""

from __future__ import annotations

import time

import torch

from bsstudy import ConfigError
from bsstudy.config import POSITIVE_INT, SAMPLES, Rule
from bsstudy.measures.hessian import hessian_lambda_max_and_abs_max, hessian_trace_hutchinson
from bsstudy.measures.objective import measured_point, subset_loss
from bsstudy.runfolder import write_json
from bsstudy.streams import DIRECTIONS_HESSIAN, DIRECTIONS_LANCZOS, rng, torch_generator
from bsstudy.train.probe import FinalWeightsProbe


class Hessian(FinalWeightsProbe):
    """Extreme Hessian eigenvalues (Lanczos: largest algebraic and largest magnitude) and trace
    (Hutchinson) of the training loss."""

    report_section = "bsstudy.analysis.report.geometry:sharpness_section"
    report_order = 40
    settings = {
        "k": POSITIVE_INT,
        "tol": Rule("number", min=0, max=1, open_min=True, open_max=True),
        "ncv": POSITIVE_INT,
        "max_hvps": POSITIVE_INT,
        "trace_max_samples": POSITIVE_INT,
        "trace_min_samples": POSITIVE_INT,
        "trace_rel_tol": Rule("number", min=0, open_min=True),
        "train_samples": SAMPLES,
        "chunk_size": POSITIVE_INT,
    }

    def __init__(
        self,
        out_dir,
        k: int = 1,
        tol: float = 1e-3,
        ncv: int = 20,
        max_hvps: int = 500,
        trace_max_samples: int = 100,
        trace_min_samples: int = 10,
        trace_rel_tol: float = 0.02,
        train_samples: int | None = 10000,
        chunk_size: int = 8192,
    ):
        super().__init__(out_dir)
        if ncv <= k:
            raise ConfigError(f"probes.hessian.ncv must be an integer > probes.hessian.k ({k}); got {ncv!r}")
        if max_hvps < ncv:
            raise ConfigError(
                f"probes.hessian.max_hvps must be >= probes.hessian.ncv ({ncv}), one Lanczos basis; got {max_hvps}"
            )
        self.k, self.tol, self.ncv, self.max_hvps = k, tol, ncv, max_hvps
        self.trace_max_samples, self.trace_min_samples, self.trace_rel_tol = (
            trace_max_samples,
            trace_min_samples,
            trace_rel_tol,
        )
        self.train_samples, self.chunk_size = train_samples, chunk_size

    def measure(self, net, data, seed: int) -> dict:
        """Eigenvalues and trace of the Hessian of the training-subset loss at `net`'s weights."""
        started = time.perf_counter()
        loss = subset_loss(net, data, "train", self.train_samples, seed, self.chunk_size, self.check_stop)
        theta = loss.model.theta
        generator = torch_generator(seed, "geometry_directions", DIRECTIONS_HESSIAN)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return loss.hessian_vector_product(theta, v)

        start = rng(seed, "geometry_directions", DIRECTIONS_LANCZOS).standard_normal(len(theta))
        lanczos = hessian_lambda_max_and_abs_max(hvp, theta, start, self.k, self.tol, self.ncv, self.max_hvps)
        trace = hessian_trace_hutchinson(
            hvp,
            len(theta),
            generator,
            self.trace_max_samples,
            self.trace_min_samples,
            self.trace_rel_tol,
            theta.device,
        )
        summary = measured_point(net, data, self.chunk_size, self.check_stop) | {
            **extreme_summary("lambda_max", lanczos["LA"]),
            **extreme_summary("lambda_abs_max", lanczos["LM"]),
            "top_eigenvalue": lanczos["LM"]["eigenvalues"][0],  # alias of lambda_abs_max
            "trace": trace["trace"],
            "lanczos_k": self.k,
            "lanczos_tol": self.tol,
            "lanczos_ncv": self.ncv,
            "lanczos_max_hvps": self.max_hvps,
            "trace_stderr": trace["stderr"],
            "trace_samples": trace["samples"],
            "trace_converged": trace["converged"],
            "trace_rel_tol": self.trace_rel_tol,
            "train_samples": len(loss.y),
            "geometry_bn": loss.model.geometry_bn,
            "parameters": len(theta),
            "time_s": time.perf_counter() - started,
        }
        write_json(self.out_dir / "hessian.json", {"summary": summary, "lanczos": lanczos, "hutchinson": trace})
        return summary


def extreme_summary(name: str, result: dict) -> dict:
    """The summary entries of one Lanczos result: its first (largest) eigenvalue as `name`, with its
    residual, relative residual, the products used and convergence; all k eigenvalues when k > 1."""
    entries = {
        name: result["eigenvalues"][0],
        f"{name}_residual": result["residuals"][0],
        f"{name}_relative_residual": result["relative_residuals"][0],
        f"{name}_hvps": result["hvps"],
        f"{name}_converged": result["converged"],
    }
    return entries | ({f"{name}_all": result["eigenvalues"]} if result["k"] > 1 else {})
