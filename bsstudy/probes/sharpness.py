"""Sharpness of the final minimizer (Keskar et al. 2017), at the end of training: see bsstudy/measures/sharpness.py.

For every eps: the full-space eps-box sharpness, the same in a random `subspace_dim`-dimensional subspace,
and the mean relative loss increase at `random_samples` uniform random points of the box (the baseline).
Files in <run>/probes/sharpness/: `sharpness.json` (every result with the optimizer's budget and use).
summary.json probes.sharpness: sharpness_eps_<eps>, random_sharpness_eps_<eps>, subspace_sharpness_eps_<eps>, ...,
geometry_bn (the batch-norm convention, model.geometry_bn), train_loss and grad_norm (whole training set, at the
measured weights: bsstudy/measures/objective.py).
"""

from __future__ import annotations

import time

from bsstudy import ConfigError
from bsstudy.config import POSITIVE_INT, SAMPLES, Rule
from bsstudy.measures.objective import measured_point, subset_loss
from bsstudy.measures.sharpness import OPTIMIZER, random_sharpness, random_subspace, sharpness_eps_box
from bsstudy.runfolder import write_json
from bsstudy.streams import DIRECTIONS_SHARPNESS, torch_generator
from bsstudy.train.probe import FinalWeightsProbe


class Sharpness(FinalWeightsProbe):
    """Keskar et al.'s eps-box sharpness of the trained network, with the random-point baseline."""

    report_section = "bsstudy.analysis.report.geometry:sharpness_section"
    report_order = 40
    settings = {
        "eps": Rule("list", each=Rule("number", min=0, open_min=True)),
        "iterations": POSITIVE_INT,
        "subspace_dim": Rule("int", min=0, nullable=True),
        "random_samples": POSITIVE_INT,
        "train_samples": SAMPLES,
        "chunk_size": POSITIVE_INT,
    }

    def __init__(
        self,
        out_dir,
        eps=(1e-3, 5e-4),
        iterations: int = 10,
        subspace_dim: int = 100,
        random_samples: int = 10,
        train_samples: int | None = None,
        chunk_size: int = 8192,
    ):
        super().__init__(out_dir)
        if not eps:
            raise ConfigError(f"probes.sharpness.eps must be a non-empty list of numbers > 0; got {eps}")
        self.eps, self.iterations, self.subspace_dim = [float(e) for e in eps], iterations, subspace_dim or 0
        self.random_samples, self.train_samples, self.chunk_size = random_samples, train_samples, chunk_size

    def measure(self, net, data, seed: int) -> dict:
        """Every sharpness of `net`; writes sharpness.json and returns the summary numbers."""
        started = time.perf_counter()
        loss = subset_loss(net, data, "train", self.train_samples, seed, self.chunk_size, self.check_stop)
        theta = loss.model.theta
        generator = torch_generator(seed, "geometry_directions", DIRECTIONS_SHARPNESS)
        subspace = random_subspace(len(theta), self.subspace_dim, generator) if self.subspace_dim else None
        results, summary = [], {}
        for eps in self.eps:
            full = sharpness_eps_box(loss.loss_and_gradient, theta, eps, self.iterations)
            rand = random_sharpness(loss.loss, theta, eps, self.random_samples, generator)
            results += [{"kind": "full_space", **full}, {"kind": "random_points", "eps": eps, **rand}]
            summary |= {
                f"sharpness_eps_{eps}": full["sharpness"],
                f"random_sharpness_eps_{eps}": rand["mean"],
                f"random_sharpness_std_eps_{eps}": rand["std"],
            }
            if subspace is not None:
                sub = sharpness_eps_box(loss.loss_and_gradient, theta, eps, self.iterations, subspace)
                results.append({"kind": f"random_subspace_{self.subspace_dim}", **sub})
                summary[f"subspace_sharpness_eps_{eps}"] = sub["sharpness"]
        summary |= measured_point(net, data, self.chunk_size, self.check_stop) | {
            "loss": results[0]["loss"],
            "optimizer": OPTIMIZER,
            "max_iterations": self.iterations,
            "subspace_dim": self.subspace_dim,
            "random_samples": self.random_samples,
            "train_samples": len(loss.y),
            "geometry_bn": loss.model.geometry_bn,
            "time_s": time.perf_counter() - started,
        }
        write_json(self.out_dir / "sharpness.json", {"summary": summary, "results": results})
        return summary
