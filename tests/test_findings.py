"""Each verdict rule of the findings table on hand-made run folders whose answer is known: too few seeds,
a clean trend, a reversal in the middle, the opposite trend, a flat noisy metric, the sqrt(B) margin, a
protocol that decides the answer, a diverged run, and sharpness at unmatched training losses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from bsstudy.analysis.report.findings import (
    CAPTION,
    COLUMNS,
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_COMPARABLE,
    NOT_MEASURABLE,
    NOT_MEASURED,
    NOT_SUPPORTED,
    SUPPORTED,
    TOO_FEW_SEEDS,
    findings_table,
    holm,
    kind_of,
    least_squares_slopes,
    rank_correlations,
)
from bsstudy.analysis.report.runs import read_sweep

LOWER_ACCURACY = "Larger batches reach lower test accuracy at fixed epochs and lr"
SCALING = "Scaling the lr with B narrows the test-accuracy gap between small and large batches"
STEPS = "Larger batches take smaller steps per update and travel less per epoch"
SQRT = "The gradient-sum norm grows like sqrt(B)"
SHARPER = "Large-batch minima are sharper"


class Sweep:
    """A sweep folder of hand-made runs (the run files' contract: .hydra/config.yaml, metrics.csv, summary.json)."""

    def __init__(self, path: Path):
        self.path, self.jobs = path, 0

    def run(
        self,
        batch_size: int,
        seed: int,
        test_acc: float = 0.9,
        train_loss: float = 0.1,
        status: str = "completed",
        lr_scaling: str = "none",
        epoch_columns: dict | None = None,
        **probes,
    ) -> Path:
        path = self.path / str(self.jobs)
        self.jobs += 1
        (path / ".hydra").mkdir(parents=True)
        config = {
            "seed": seed,
            "data": {"batch_size": batch_size, "name": "synthetic"},
            "optim": {"lr": 0.01, "lr_scaling": lr_scaling, "accumulate": 1, "name": "sgd"},
            "probes": {name: {"_target_": f"bsstudy.probes.{name}"} for name in probes},
        }
        (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        rows = [
            {"epoch": e, "test_acc": a, "train_acc": a, "train_loss": loss, "test_loss": loss}
            | {k: (math.nan if e == 0 else v) for k, v in (epoch_columns or {}).items()}
            for e, a, loss in ((0, 0.1, 2.3), (1, test_acc, train_loss))
        ]
        header = list(rows[0])
        lines = [",".join(header), *(",".join(str(r[k]) for k in header) for r in rows)]
        (path / "metrics.csv").write_text("\n".join(lines) + "\n")
        summary = {
            "status": status,
            "batch_size": batch_size,
            "seed": seed,
            "lr_scaling": lr_scaling,
            "accumulate": 1,
            "final": rows[-1],
            "epochs_completed": 1,
            "probes": {name: numbers for name, numbers in probes.items() if numbers},
        }
        (path / "summary.json").write_text(json.dumps(summary))  # NaN and Infinity as Python's json writes them
        return path

    def gradsum(self, seed: int, fits: dict, update: bool = True, common_samples: bool = False, reduction="mean"):
        """A gradsum run (trained at B=1024) whose fit.json has, per regime, k with its bootstrap interval."""
        path = self.run(1024, seed, gradsum={})
        settings = {"update": update, "common_samples": common_samples, "reduction": reduction, "trials": 200}
        body = {
            regime: {"k": k, "ci95": list(ci), "ci_method": "bootstrap over trials", "n_trials": 200}
            | {"settings": settings}
            for regime, (k, ci) in fits.items()
        }
        (path / "probes" / "gradsum").mkdir(parents=True)
        (path / "probes" / "gradsum" / "fit.json").write_text(json.dumps(body))

    def gradsum_stds(self, seed: int, std_norms: dict[str, dict[int, float]]):
        """A gradsum run whose summary.csv has, per regime and B, the source's normalized std (and a fit.json)."""
        path = self.run(1024, seed, gradsum={})
        rows = [(r, b, s) for r, by_b in std_norms.items() for b, s in by_b.items()]
        (path / "probes" / "gradsum").mkdir(parents=True)
        text = "regime,batch_size,std_norm\n" + "".join(f"{r},{b},{s}\n" for r, b, s in rows)
        (path / "probes" / "gradsum" / "summary.csv").write_text(text)
        (path / "probes" / "gradsum" / "fit.json").write_text("{}")  # the probe writes both files

    def findings(self) -> dict[str, dict]:
        table = findings_table(read_sweep(self.path))
        assert list(table.frame.columns) == COLUMNS
        return {row["claim"]: row for row in table.frame.to_dict("records")}


@pytest.fixture
def sweep(tmp_path) -> Sweep:
    return Sweep(tmp_path)


def accuracy_sweep(sweep: Sweep, accuracies: dict[int, list[float]]) -> dict:
    """accuracies[B] = final test accuracy of seeds 0, 1, ... at B; returns the lower-accuracy row."""
    for batch_size, per_seed in accuracies.items():
        for seed, acc in enumerate(per_seed):
            sweep.run(batch_size, seed, test_acc=acc)
    return sweep.findings()[LOWER_ACCURACY]


def falling(seeds: int, noise: float = 0.002) -> dict[int, list[float]]:
    """Accuracy 0.9 - 0.02 log2(B / 32) at B = 32, 128, 512, 2048, plus small seeded noise."""
    rng = np.random.default_rng(0)
    return {b: [0.9 - 0.02 * math.log2(b / 32) + noise * rng.standard_normal() for _ in range(seeds)]
            for b in (32, 128, 512, 2048)}  # fmt: skip


def test_one_seed_is_too_few_seeds_even_with_a_big_effect(sweep):
    row = accuracy_sweep(sweep, {32: [0.9], 128: [0.7], 512: [0.5]})
    assert kind_of(row["verdict"]) == TOO_FEW_SEEDS
    assert f"MIN_SEEDS = {MIN_SEEDS}" in row["verdict"]
    assert row["n"] == "1 seed"
    # the numbers are still shown: slope of accuracy per doubling of B = -0.2 / 2 = -0.1
    assert row["effect [95% interval]"].startswith("-0.1 (no interval)")
    assert "B=32: 0.9, B=128: 0.7, B=512: 0.5" in row["evidence"]


def test_two_seeds_with_a_resolved_effect_are_still_too_few(sweep):
    row = accuracy_sweep(sweep, {32: [0.90, 0.91], 128: [0.70, 0.71], 512: [0.50, 0.52]})
    assert kind_of(row["verdict"]) == TOO_FEW_SEEDS and row["n"] == "2 seeds"


def test_three_seeds_with_a_clean_falling_trend_are_supported(sweep):
    row = accuracy_sweep(sweep, falling(seeds=3))
    assert row["verdict"] == SUPPORTED
    assert row["n"] == "3 seeds"
    mean = float(row["effect [95% interval]"].split()[0])
    assert mean == pytest.approx(-0.02, abs=0.003)  # the slope per doubling the data were made with
    assert "MIN_SEEDS = 3" in row["rule"] and "log2 B" in row["rule"]


def test_a_seed_missing_at_one_batch_size_is_left_out_and_named(sweep):
    accuracies = falling(seeds=3)
    accuracies[2048] = accuracies[2048][:2]  # seed 2 has no run at B=2048
    row = accuracy_sweep(sweep, accuracies)
    assert kind_of(row["verdict"]) == TOO_FEW_SEEDS and row["n"] == "2 seeds"
    assert "seed 2 left out: no run at B=2048" in row["evidence"]


def test_an_opposite_trend_is_not_supported(sweep):
    row = accuracy_sweep(sweep, {b: [1.7 - a for a in accs] for b, accs in falling(seeds=3).items()})
    assert row["verdict"] == f"{NOT_SUPPORTED}: the slope's and the rank correlation's intervals lie wholly above 0"


def test_a_flat_noisy_metric_is_inconclusive(sweep):
    row = accuracy_sweep(sweep, {32: [0.85, 0.86, 0.85], 128: [0.86, 0.85, 0.85], 512: [0.85, 0.86, 0.84]})
    assert row["verdict"] == f"{INCONCLUSIVE}: the slope's and the rank correlation's intervals contain 0"


def test_identical_values_give_a_zero_slope_not_a_roundoff_sign(sweep):
    row = accuracy_sweep(sweep, {b: [0.9, 0.9, 0.9] for b in (2, 64, 256, 1024)})
    assert row["effect [95% interval]"].startswith("0 [0, 0]")
    assert "Spearman rho 0 [0, 0]" in row["effect [95% interval]"]  # no order, not a nan from constant input
    assert row["verdict"] == f"{INCONCLUSIVE}: the slope's and the rank correlation's intervals contain 0"


def test_slopes_are_the_closed_form_least_squares_slopes():
    x, y = np.log2([2, 64, 256, 1024]), np.random.default_rng(3).normal(0.9, 0.01, (6, 4))
    dx = x - x.mean()
    np.testing.assert_allclose(least_squares_slopes(x, y), (y - y[:, :1]) @ dx / (dx @ dx), rtol=1e-12)
    assert least_squares_slopes(x, np.full((2, 4), 0.9)).tolist() == [0.0, 0.0]  # exactly, not a roundoff sign
    assert least_squares_slopes(x, np.empty((0, 4))).shape == (0,)


def test_a_flat_then_falling_curve_has_a_slope_but_no_monotone_trend_and_the_row_says_so(sweep):
    # flat at 0.9 (each seed's own wiggle) up to B=512, then a drop at B=1024: the slope is steeply negative in
    # every seed, the ranks are not (seed 0 rises along the flat part): the two tests disagree
    flat = {0: [0.900, 0.901, 0.902, 0.903, 0.904], 1: [0.904, 0.903, 0.902, 0.901, 0.900],
            2: [0.902, 0.900, 0.904, 0.901, 0.903]}  # fmt: skip
    sizes = (32, 64, 128, 256, 512, 1024)
    row = accuracy_sweep(sweep, {b: [(flat[s] + [0.7])[i] for s in range(3)] for i, b in enumerate(sizes)})
    assert row["verdict"] == (
        f"{INCONCLUSIVE}: the slope and the rank test disagree: the slope's interval lies wholly below 0, "
        "the rank correlation's contains 0 (a trend, not monotone in B: e.g. flat, then falling)"
    )
    assert "Spearman rho per seed: 0.143, -1, -0.257" in row["evidence"]
    assert "Spearman rho -0.371 [" in row["effect [95% interval]"]


def test_a_monotone_fall_with_an_unresolved_slope_says_the_tests_disagree(sweep):
    # every seed falls at every step (rho = -1), but by 0.0001 per doubling in two seeds and 0.1 in the third
    row = accuracy_sweep(sweep, {32: [0.9, 0.9, 0.9], 64: [0.8999, 0.8999, 0.8], 128: [0.8998, 0.8998, 0.7]})
    assert row["verdict"] == (
        f"{INCONCLUSIVE}: the slope and the rank test disagree: the slope's interval contains 0, the rank "
        "correlation's lies wholly below 0 (monotone in B, but the slope is not resolved)"
    )
    assert "Spearman rho -1 [-1, -1]" in row["effect [95% interval]"]


def test_rank_correlations_are_scipys_spearman_and_zero_without_spread():
    x = np.log2([2, 64, 256, 1024])
    y = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.7, 0.8, 0.6], [0.5, 0.5, 0.5, 0.5]])
    assert rank_correlations(x, y).tolist() == pytest.approx([-1.0, -0.8, 0.0])


def test_holm_adjusts_step_down_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5] and holm([]) == []


def reversal_sweep(sweep: Sweep, mean: float, spread: float) -> dict:
    """Accuracy 0.9 - 0.05 k at five batch sizes, except that B=512 is B=256's plus mean + spread * (-1, 0, 1) in
    seeds 0, 1, 2: a reversal whose one-sided t-statistic is mean / (spread / sqrt(3))."""
    sizes = (32, 128, 256, 512, 2048)
    accuracies = {b: [0.9 - 0.05 * k] * 3 for k, b in enumerate(sizes)}
    accuracies[512] = [0.8 + mean + spread * d for d in (-1, 0, 1)]
    return accuracy_sweep(sweep, accuracies)


def test_a_strong_reversal_survives_holm(sweep):
    row = reversal_sweep(sweep, mean=0.025, spread=0.002)  # t = 21.7: one-sided p = 0.001, x 4 pairs = 0.004
    assert row["verdict"] == f"{NOT_SUPPORTED}: B=256 -> 512 goes the other way (Holm)"
    assert "Holm-adjusted over 4 pairs 0.00" in row["evidence"]
    assert "Holm-Bonferroni" in row["rule"]


def test_a_reversal_significant_alone_but_not_after_holm_is_not_one(sweep):
    row = reversal_sweep(sweep, mean=0.03, spread=0.01)  # t = 5.2: one-sided p = 0.0175 < 0.025, x 4 pairs = 0.07
    assert row["verdict"] == SUPPORTED
    assert "not a reversal after Holm: B=256 -> 512 goes the other way: 0.03 [" in row["evidence"]
    assert "one-sided p = 0.0175, Holm-adjusted over 4 pairs 0.0702" in row["evidence"]


def sharpness_sweep(sweep: Sweep, sharpness: dict[int, float], losses: dict[int, float], noise=0.03, seeds=3):
    rng = np.random.default_rng(1)
    for batch_size, value in sharpness.items():
        for seed in range(seeds):
            numbers = {"sharpness_eps_0.001": value * math.exp(noise * rng.standard_normal())}
            sweep.run(batch_size, seed, train_loss=losses[batch_size], sharpness=numbers)
    return sweep.findings()[SHARPER]


MATCHED = {2: 0.05, 64: 0.05, 256: 0.055, 1024: 0.06}


def test_a_reversal_in_the_middle_is_not_supported(sweep):
    # the numbers: sharpness rises from B=2 to 64, then falls 64 -> 256 -> 1024; the ends alone
    # (90 at B=2, 469 at B=1024) would say "sharper"
    row = sharpness_sweep(sweep, {2: 90.0, 64: 1280.0, 256: 716.0, 1024: 469.0}, MATCHED)
    assert kind_of(row["verdict"]) == NOT_SUPPORTED
    assert "B=64 -> 256" in row["verdict"] and "the other way" in row["verdict"]
    assert float(row["effect [95% interval]"].split(" [")[1].split(",")[0]) > 0  # the overall slope is positive


def test_sharpness_rising_at_matched_loss_is_supported(sweep):
    row = sharpness_sweep(sweep, {2: 90.0, 64: 300.0, 256: 716.0, 1024: 1280.0}, MATCHED)
    assert row["verdict"] == SUPPORTED
    assert "training loss at the measured point (final train loss)" in row["evidence"]
    assert "LOSS_TOLERANCE = 1.25" in row["rule"]


def test_sharpness_at_unmatched_training_losses_is_not_comparable(sweep):
    losses = {2: 0.15, 64: 0.3, 256: 0.45, 1024: 0.57}
    row = sharpness_sweep(sweep, {2: 90.0, 64: 300.0, 256: 716.0, 1024: 1280.0}, losses)
    assert row["verdict"] == (
        f"{NOT_COMPARABLE}: training losses 0.15 (B=2) ... 0.57 (B=1024); train to matched loss with trainer.stop_at"
    )
    assert "B=1024: 0.57" in row["evidence"]


def test_the_probe_train_loss_is_preferred_to_the_final_one(sweep):
    for batch_size, sharp in ((32, 10.0), (512, 100.0)):
        for seed in range(3):
            numbers = {"sharpness_eps_0.001": sharp * (1 + seed / 100), "train_loss": 0.01}
            sweep.run(batch_size, seed, train_loss=0.1 if batch_size == 32 else 0.5, sharpness=numbers)
    row = sweep.findings()[SHARPER]
    assert row["verdict"] == SUPPORTED
    assert "probes.sharpness.train_loss" in row["evidence"]


def test_hessian_lambda_max_is_preferred_to_top_eigenvalue(sweep):
    for batch_size, lam in ((32, 10.0), (512, 100.0)):
        for seed in range(3):
            sweep.run(batch_size, seed, hessian={"lambda_max": lam * (1 + seed / 100), "top_eigenvalue": -1.0})
    row = sweep.findings()[SHARPER]
    assert "Hessian lambda_max" in row["evidence"] and row["verdict"] == SUPPORTED


def test_a_diverged_run_is_shown_and_makes_the_verdict_inconclusive(sweep):
    for batch_size, per_seed in falling(seeds=3).items():
        for seed, acc in enumerate(per_seed):
            diverged = batch_size == 2048 and seed == 1
            sweep.run(
                batch_size, seed, test_acc=math.nan if diverged else acc, status="diverged" if diverged else "completed"
            )
    row = sweep.findings()[LOWER_ACCURACY]
    assert row["verdict"] == f"{INCONCLUSIVE}: non-finite values at B=2048"
    assert "B=2048 seed 1: nan (diverged)" in row["evidence"]
    assert "B=2048: nan" in row["evidence"]  # the mean over seeds is not computed over the survivors


def test_infinite_sharpness_is_shown_not_dropped(sweep):
    for batch_size, sharp in ((32, 10.0), (128, 30.0), (512, 100.0)):
        for seed in range(3):
            value = math.inf if (batch_size, seed) == (512, 0) else sharp * (1 + seed / 100)
            sweep.run(batch_size, seed, sharpness={"sharpness_eps_0.001": value})
    row = sweep.findings()[SHARPER]
    assert row["verdict"] == f"{INCONCLUSIVE}: non-finite values at B=512"
    assert "B=512 seed 0: inf" in row["evidence"]


def test_steps_claim_needs_both_step_norm_and_distance_to_fall(sweep):
    rng = np.random.default_rng(2)
    for batch_size in (32, 128, 512):
        for seed in range(3):
            noise = math.exp(0.02 * rng.standard_normal())
            columns = {"update_norm_median": 0.1 * math.sqrt(batch_size) * noise,
                       "epoch_distance": 5.0 / math.sqrt(batch_size) * noise}  # fmt: skip
            sweep.run(batch_size, seed, epoch_columns=columns, update_norms={})
    row = sweep.findings()[STEPS]
    # the step norm grows like sqrt(B) while the distance falls: the conjunction fails on the step norm
    assert kind_of(row["verdict"]) == NOT_SUPPORTED
    assert "median step norm" in row["verdict"] and "epoch distance" not in row["verdict"]


def test_lr_scaling_with_two_seeds_is_too_few_and_with_three_is_supported(tmp_path):
    for seeds, expected in ((2, TOO_FEW_SEEDS), (3, SUPPORTED)):
        sweep = Sweep(tmp_path / str(seeds))
        for seed in range(seeds):
            for batch_size, fixed, scaled in ((32, 0.90, 0.90), (512, 0.80, 0.89)):
                sweep.run(batch_size, seed, test_acc=fixed + seed / 1000)
                sweep.run(batch_size, seed, test_acc=scaled + seed / 700, lr_scaling="linear")
        row = sweep.findings()[SCALING]
        assert kind_of(row["verdict"]) == expected
        assert "0.1 at a fixed lr" in row["evidence"]


def test_sqrt_interval_inside_the_margin_with_three_seeds_is_supported(sweep):
    for seed, k in enumerate((0.49, 0.50, 0.51)):
        sweep.gradsum(seed, {"2": (k, (k - 0.05, k + 0.05)), "30": (k, (k - 0.05, k + 0.05))})
    row = sweep.findings()[SQRT]
    assert row["verdict"] == SUPPORTED  # t-interval 0.5 +- 0.025
    assert row["n"] == "3 seeds x 200 trials"
    assert row["effect [95% interval]"].startswith("epoch 2: k = 0.5 [0.475, 0.525]; epoch 30:")


def test_sqrt_interval_wider_than_the_margin_is_inconclusive(sweep):
    for seed, k in enumerate((0.4, 0.5, 0.6)):  # t-interval 0.5 +- 0.25
        sweep.gradsum(seed, {"2": (k, (k - 0.05, k + 0.05))})
    assert sweep.findings()[SQRT]["verdict"] == f"{INCONCLUSIVE}: interval wider than the margin"


def test_sqrt_interval_outside_the_margin_is_not_supported(sweep):
    for seed, k in enumerate((0.95, 1.0, 1.05)):
        sweep.gradsum(seed, {"2": (k, (k - 0.05, k + 0.05))})
    assert kind_of(sweep.findings()[SQRT]["verdict"]) == NOT_SUPPORTED


def test_sqrt_needs_every_regime(sweep):
    for seed, (early, late) in enumerate(((0.49, 0.95), (0.5, 1.0), (0.51, 1.05))):
        sweep.gradsum(seed, {"2": (early, (early - 0.05, early + 0.05)), "30": (late, (late - 0.05, late + 0.05))})
    row = sweep.findings()[SQRT]
    assert kind_of(row["verdict"]) == NOT_SUPPORTED and "epoch 30" in row["verdict"]
    assert "epoch 2:" not in row["verdict"]


def test_a_run_without_the_late_regime_is_named(sweep):
    for seed, k in enumerate((0.49, 0.50, 0.51)):
        fits = {"2": (k, (k - 0.05, k + 0.05)), "30": (k, (k - 0.05, k + 0.05))}
        sweep.gradsum(seed, fits if seed else {"2": fits["2"]})  # run 0 diverged before epoch 30
    row = sweep.findings()[SQRT]
    assert row["verdict"] == f"{TOO_FEW_SEEDS}: epoch 30: 2 < MIN_SEEDS = 3"
    assert "no epoch 30 fit in run 0" in row["evidence"]


def test_sqrt_from_one_run_is_too_few_seeds_and_says_what_its_interval_alone_would(sweep):
    sweep.gradsum(0, {"2": (0.5, (0.2, 0.8))})
    row = sweep.findings()[SQRT]
    assert kind_of(row["verdict"]) == TOO_FEW_SEEDS
    assert "k = 0.5 [0.2, 0.8] (bootstrap over trials, 200 trials), alone: inconclusive" in row["evidence"]


def test_frozen_weights_with_common_samples_are_not_measurable(sweep):
    for seed in range(3):
        sweep.gradsum(seed, {"2": (-1.0, (-1.0, -1.0))}, update=False, common_samples=True)
    row = sweep.findings()[SQRT]
    assert (
        row["verdict"]
        == f"{NOT_MEASURABLE}: frozen weights with common samples make k = -1 by construction (mean reduction)"
    )


def test_the_frozen_control_is_not_counted_beside_measured_runs(sweep):
    for seed in range(3):
        sweep.gradsum(seed, {"2": (0.5 + seed / 100, (0.45, 0.55))})
        sweep.gradsum(seed, {"2": (0.0, (0.0, 0.0))}, update=False, common_samples=True, reduction="sum")
    row = sweep.findings()[SQRT]
    assert kind_of(row["verdict"]) == SUPPORTED
    assert "controls, not counted" in row["evidence"] and "k = 0 by construction (sum reduction)" in row["evidence"]


def test_nothing_measured_says_so_and_still_states_each_rule(sweep):
    sweep.run(32, 0)
    findings = sweep.findings()
    for claim in (SCALING, STEPS, SQRT, SHARPER, LOWER_ACCURACY):
        assert kind_of(findings[claim]["verdict"]) == NOT_MEASURED
        assert "MIN_SEEDS = 3" in findings[claim]["rule"]
    assert "MIN_SEEDS = 3" in CAPTION and "[0.4, 0.6]" in CAPTION


STD_GROWS = "The normalized std of the gradient-sum norm grows with B"
GRID = [1, 2, 4, 8, 16, 64, 256, 1024]


def test_a_normalized_std_rising_with_b_in_every_regime_and_seed_is_supported(sweep):
    for seed in range(3):  # std_norm ~ B^0.2 (a slope of 0.2 * ln 2 per doubling in log std), seed-level jitter
        rise = {b: 0.01 * b**0.2 * (1 + 0.01 * seed) for b in GRID}
        sweep.gradsum_stds(seed, {"2": rise, "30": rise})
    row = sweep.findings()[STD_GROWS]
    assert row["verdict"] == "supported", row
    assert "epoch 2: slope 0.139" in row["effect [95% interval]"]  # 0.2 * ln 2 = 0.1386


def test_a_flat_normalized_std_is_not_a_rise(sweep):
    for seed in range(3):
        jitter = {b: 0.01 * (1 + 0.001 * ((b * (seed + 1)) % 7)) for b in GRID}
        sweep.gradsum_stds(seed, {"2": jitter})
    assert sweep.findings()[STD_GROWS]["verdict"].startswith(("inconclusive", "not supported"))


def test_a_normalized_std_falling_in_one_regime_is_not_supported(sweep):
    for seed in range(3):
        rise = {b: 0.01 * b**0.2 * (1 + 0.01 * seed) for b in GRID}
        fall = {b: 0.01 * b**-0.2 * (1 + 0.01 * seed) for b in GRID}
        sweep.gradsum_stds(seed, {"2": rise, "30": fall})
    assert sweep.findings()[STD_GROWS]["verdict"].startswith("not supported")


def test_the_normalized_std_of_two_seeds_is_too_few_seeds(sweep):
    for seed in range(2):
        sweep.gradsum_stds(seed, {"2": {b: 0.01 * b**0.2 for b in GRID}})
    assert sweep.findings()[STD_GROWS]["verdict"].startswith("too few seeds")
