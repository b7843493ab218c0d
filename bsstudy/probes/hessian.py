"""Hessian spectrum of the final minimizer: top eigenvalue(s) and trace, see bsstudy/geometry/hessian.py.

Files in <run>/probes/hessian/: `hessian.json` (estimates with their iterations, tolerances, convergence).
summary.json probes.hessian: top_eigenvalue, trace, top_eigenvalues, trace_stderr, train_loss and grad_norm (whole
training set, at the measured weights: bsstudy/geometry/objective.py), ...
"""

from __future__ import annotations

import time

import torch

from bsstudy import ConfigError, is_positive_int
from bsstudy.geometry.hessian import hessian_top_eigenvalues, hessian_trace_hutchinson
from bsstudy.geometry.objective import check_sample_size, measured_point, subset_loss
from bsstudy.probes import FinalWeightsProbe
from bsstudy.runfiles import write_json


class Hessian(FinalWeightsProbe):
    """Top-k Hessian eigenvalues (power iteration) and trace (Hutchinson) of the training loss."""

    def __init__(
        self,
        out_dir,
        top_k: int = 1,
        power_iterations: int = 100,
        power_tol: float = 1e-3,
        trace_max_samples: int = 100,
        trace_min_samples: int = 10,
        trace_rel_tol: float = 0.02,
        train_samples: int | None = 10000,
        chunk_size: int = 8192,
    ):
        super().__init__(out_dir)
        ints = {"top_k": top_k, "power_iterations": power_iterations, "trace_max_samples": trace_max_samples,
                "trace_min_samples": trace_min_samples, "chunk_size": chunk_size}  # fmt: skip
        for key, value in ints.items():
            if not is_positive_int(value):
                raise ConfigError(f"probes.hessian.{key} must be a positive integer; got {value!r}")
        for key, value in (("power_tol", power_tol), ("trace_rel_tol", trace_rel_tol)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"probes.hessian.{key} must be a number > 0; got {value!r}")
        check_sample_size("probes.hessian.train_samples", train_samples)
        self.top_k, self.power_iterations, self.power_tol = top_k, power_iterations, power_tol
        self.trace_max_samples, self.trace_min_samples, self.trace_rel_tol = (
            trace_max_samples,
            trace_min_samples,
            trace_rel_tol,
        )
        self.train_samples, self.chunk_size = train_samples, chunk_size

    def measure(self, net, data, seed: int) -> dict:
        """Eigenvalues and trace of the Hessian of the training-subset loss at `net`'s weights."""
        started = time.perf_counter()
        loss = subset_loss(net, data, "train", self.train_samples, seed, self.chunk_size)
        theta = loss.model.theta
        generator = torch.Generator().manual_seed(seed)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return loss.hessian_vector_product(theta, v)

        top = hessian_top_eigenvalues(
            hvp, len(theta), generator, self.top_k, self.power_iterations, self.power_tol, theta.device
        )
        trace = hessian_trace_hutchinson(
            hvp,
            len(theta),
            generator,
            self.trace_max_samples,
            self.trace_min_samples,
            self.trace_rel_tol,
            theta.device,
        )
        summary = measured_point(net, data, self.chunk_size) | {
            "top_eigenvalue": top["eigenvalues"][0],
            "trace": trace["trace"],
            "top_eigenvalues": top["eigenvalues"],
            "power_iterations": top["iterations"],
            "power_converged": top["converged"],
            "power_tol": self.power_tol,
            "trace_stderr": trace["stderr"],
            "trace_samples": trace["samples"],
            "trace_converged": trace["converged"],
            "trace_rel_tol": self.trace_rel_tol,
            "train_samples": len(loss.y),
            "parameters": len(theta),
            "time_s": time.perf_counter() - started,
        }
        write_json(self.out_dir / "hessian.json", {"summary": summary, "power_iteration": top, "hutchinson": trace})
        return summary
