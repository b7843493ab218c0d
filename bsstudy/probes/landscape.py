"""2-D filter-normalized loss landscape and 1-D curve of the final minimizer (Li et al. 2018),
see bsstudy/measures/landscape.py.

Files in <run>/probes/landscape/: `landscape.npz` (alphas [n], betas [m], train_loss [n, m], train_acc [n, m],
curve_alphas, curve_train_loss, curve_train_acc, and curve_test_* with test samples; point_train_loss and
point_grad_norm: the whole training set's loss and gradient norm at the centre), `landscape.png`.
summary.json probes.landscape: center_train_loss, max_train_loss, settings, geometry_bn (model.geometry_bn),
train_loss and grad_norm at the centre (bsstudy/measures/objective.py).
"""

from __future__ import annotations

import time

import numpy as np

from bsstudy.config import BOOL, POSITIVE_INT, SAMPLES, Rule
from bsstudy.measures.landscape import filter_normalized_direction, loss_curve, loss_grid, plot_landscape
from bsstudy.measures.objective import measured_point, subset_loss
from bsstudy.streams import DIRECTIONS_LANDSCAPE, torch_generator
from bsstudy.train.probe import FinalWeightsProbe


class Landscape(FinalWeightsProbe):
    """Loss and accuracy on a grid of theta + alpha d1 + beta d2, and along theta + alpha d1."""

    report_section = "bsstudy.analysis.report.geometry:landscape_section"
    report_order = 60
    settings = {
        "points": POSITIVE_INT,
        "span": Rule("number", min=0, open_min=True),
        "curve_points": POSITIVE_INT,
        "include_biases": BOOL,
        "direction_seed": Rule("int", min=0, nullable=True, says="null (the run's seed) or an integer >= 0"),
        "train_samples": SAMPLES,
        "test_samples": Rule("int", min=0, nullable=True),
        "chunk_size": POSITIVE_INT,
        "plot": BOOL,
    }

    def __init__(
        self,
        out_dir,
        points: int = 51,
        span: float = 1.0,
        curve_points: int = 51,
        include_biases: bool = False,
        direction_seed: int | None = None,
        train_samples: int | None = 10000,
        test_samples: int | None = None,
        chunk_size: int = 8192,
        plot: bool = True,
    ):
        super().__init__(out_dir)
        self.points, self.span, self.curve_points, self.include_biases = points, span, curve_points, include_biases
        self.direction_seed, self.train_samples, self.test_samples = direction_seed, train_samples, test_samples
        self.chunk_size, self.plot = chunk_size, plot

    def measure(self, net, data, seed: int) -> dict:
        """The grid and the curve around `net`'s weights; writes landscape.npz (and .png)."""
        started = time.perf_counter()
        train = subset_loss(net, data, "train", self.train_samples, seed, self.chunk_size, self.check_stop)
        model, theta = train.model, train.model.theta
        direction_seed = seed if self.direction_seed is None else self.direction_seed
        generator = torch_generator(direction_seed, "geometry_directions", DIRECTIONS_LANDSCAPE)
        params = model.params(theta)
        d1, d2 = (model.flatten(filter_normalized_direction(params, generator, self.include_biases)) for _ in range(2))
        alphas = np.linspace(-self.span, self.span, self.points)
        curve_alphas = np.linspace(-self.span, self.span, self.curve_points)
        grid = loss_grid(train.loss_and_accuracy, theta, d1, d2, alphas, alphas)
        curve = loss_curve(train.loss_and_accuracy, theta, d1, curve_alphas)
        point = measured_point(net, data, self.chunk_size, self.check_stop)
        arrays = {
            "alphas": alphas,
            "betas": alphas,
            "train_loss": grid["loss"],
            "train_acc": grid["acc"],
            "curve_alphas": curve_alphas,
            "curve_train_loss": curve["loss"],
            "curve_train_acc": curve["acc"],
            "point_train_loss": point["train_loss"],
            "point_grad_norm": point["grad_norm"],
        }
        if self.test_samples != 0:
            test = subset_loss(net, data, "test", self.test_samples, seed, self.chunk_size, self.check_stop)
            test_curve = loss_curve(test.loss_and_accuracy, theta, d1, curve_alphas)
            arrays |= {"curve_test_loss": test_curve["loss"], "curve_test_acc": test_curve["acc"]}
        np.savez(self.out_dir / "landscape.npz", **arrays)
        if self.plot:
            plot_landscape(self.out_dir / "landscape.png", arrays, f"train loss, {len(train.y)} samples")
        centre = self.points // 2
        return point | {
            "center_train_loss": float(grid["loss"][centre, centre]) if self.points % 2 else None,
            "max_train_loss": float(np.nanmax(grid["loss"])),
            "points": self.points,
            "span": self.span,
            "include_biases": self.include_biases,
            "direction_seed": direction_seed,
            "train_samples": len(train.y),
            "geometry_bn": model.geometry_bn,
            "time_s": time.perf_counter() - started,
        }
