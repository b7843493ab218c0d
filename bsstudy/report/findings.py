"""The findings table: each claim of the reference study, the evidence this sweep has for it, and a
verdict computed from that evidence: supported, not supported, or not measured in this sweep.

Each claim compares the smallest and the largest batch size of the sweep, seed by seed (seeds present
at both), under the claim's conditions. The per-seed differences d_1..d_n give a mean and a 95%
t-interval (bsstudy.report.uncertainty); with n >= 2 the claim is supported when the interval lies
wholly on the claimed side of zero, with n = 1 when the one difference has the claimed sign (the
evidence then says that the seed-to-seed spread is unknown). Ratios are compared as log ratios.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bsstudy.report.document import Table
from bsstudy.report.dynamics import read_gradsum
from bsstudy.report.geometry import eps_values, probe_numbers
from bsstudy.report.runs import Sweep
from bsstudy.report.uncertainty import mean_ci

SUPPORTED, NOT_SUPPORTED, NOT_MEASURED = "supported", "not supported", "not measured in this sweep"
SQRT_EXPONENT = 0.5


def fmt(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.4g}"


def interval(mean: float, low: float, high: float, n: int) -> str:
    spread = f" [{fmt(low)}, {fmt(high)}]" if math.isfinite(low) else ""
    return f"{fmt(mean)}{spread} (n={n} seed{'s' if n != 1 else ''})"


def verdict(mean: float, low: float, high: float, n: int, sign: int) -> str:
    """supported if the interval (n >= 2) or the single difference (n = 1) is on the side `sign` of zero."""
    if n == 0 or not math.isfinite(mean):
        return NOT_MEASURED
    if n == 1:
        return SUPPORTED if sign * mean > 0 else NOT_SUPPORTED
    return SUPPORTED if (low > 0 if sign > 0 else high < 0) else NOT_SUPPORTED


def baseline_runs(sweep: Sweep) -> pd.DataFrame:
    """Completed runs at a fixed lr (no lr scaling, no accumulation), of the first variant with two batch sizes."""
    runs = sweep.completed[(sweep.completed.lr_scaling == "none") & (sweep.completed.accumulate == 1)]
    for _, group in runs.groupby("variant", sort=True):
        if group.batch_size.nunique() >= 2:
            return group
    return runs.iloc[0:0]


def per_seed(runs: pd.DataFrame, values: pd.Series) -> pd.DataFrame:
    """seed x {small, large}: the value at the smallest and at the largest batch size, seeds present at both."""
    frame = runs.assign(value=values.values)
    small, large = frame.batch_size.min(), frame.batch_size.max()
    table = frame[frame.batch_size.isin([small, large])].pivot_table("value", "seed", "batch_size", aggfunc="mean")
    return table.dropna().rename(columns={small: "small", large: "large"}) if small != large else table.iloc[0:0]


def compare_extremes(runs: pd.DataFrame, values: pd.Series, log: bool) -> dict:
    """Difference large - small (or log(large / small)) per seed, its mean and 95% interval."""
    table = per_seed(runs, values)
    diffs = np.log(table.large / table.small) if log else table.large - table.small
    mean, low, high, n = mean_ci(diffs.tolist()) if len(table) else (math.nan, math.nan, math.nan, 0)
    return {
        "small": runs.batch_size.min(),
        "large": runs.batch_size.max(),
        "mean": mean,
        "low": low,
        "high": high,
        "n": n,
        "small_value": table.small.mean(),
        "large_value": table.large.mean(),
    }


def describe(c: dict, name: str, log: bool) -> str:
    what = (
        f"log({name} at B={c['large']:g} / B={c['small']:g})"
        if log
        else f"{name} at B={c['large']:g} - B={c['small']:g}"
    )
    return (
        f"{name}: {fmt(c['small_value'])} at B={c['small']:g}, {fmt(c['large_value'])} at B={c['large']:g}; "
        f"{what} = {interval(c['mean'], c['low'], c['high'], c['n'])}"
    )


def one_seed_note(n: int) -> str:
    return "; one seed: the seed-to-seed spread is unknown" if n == 1 else ""


def claim_lower_accuracy(sweep: Sweep) -> tuple[str, str]:
    runs = baseline_runs(sweep)
    if runs.empty:
        return "no completed runs at a fixed lr with two batch sizes", NOT_MEASURED
    c = compare_extremes(runs, runs.final_test_acc, log=False)
    return describe(c, "final test accuracy", False) + one_seed_note(c["n"]), verdict(
        c["mean"], c["low"], c["high"], c["n"], -1
    )


def claim_scaling_narrows_gap(sweep: Sweep) -> tuple[str, str]:
    """Small-B advantage acc(B_min) - acc(B_max) with lr scaling minus without, per seed; claimed < 0."""
    runs = sweep.completed[sweep.completed.accumulate == 1]
    rules = [r for r in sorted(runs.lr_scaling.unique()) if r != "none"]
    if "none" not in set(runs.lr_scaling) or not rules:
        return "needs runs with and without lr scaling (e.g. experiment=generalization,lr_scaling)", NOT_MEASURED
    fixed, scaled = runs[runs.lr_scaling == "none"], runs[runs.lr_scaling == rules[0]]
    common = sorted(set(fixed.batch_size) & set(scaled.batch_size))
    if len(common) < 2:
        return "the runs with and without lr scaling share fewer than two batch sizes", NOT_MEASURED
    fixed, scaled = fixed[fixed.batch_size.isin(common)], scaled[scaled.batch_size.isin(common)]
    a, b = per_seed(fixed, fixed.final_test_acc), per_seed(scaled, scaled.final_test_acc)
    seeds = a.index.intersection(b.index)
    gap_fixed, gap_scaled = (a.small - a.large)[seeds], (b.small - b.large)[seeds]
    mean, low, high, n = mean_ci((gap_scaled - gap_fixed).tolist())
    evidence = (
        f"test-accuracy advantage of B={common[0]:g} over B={common[-1]:g}: {fmt(gap_fixed.mean())} with a "
        f"fixed lr, {fmt(gap_scaled.mean())} with lr_scaling={rules[0]}; change = "
        f"{interval(mean, low, high, n)}"
    ) + one_seed_note(n)
    return evidence, verdict(mean, low, high, n, -1)


def claim_smaller_steps(sweep: Sweep) -> tuple[str, str]:
    runs = baseline_runs(sweep)
    epochs = sweep.epochs[(sweep.epochs.epoch > 0) & sweep.epochs.run.isin(runs.run)]
    if runs.empty or "epoch_distance" not in epochs or epochs.epoch_distance.isna().all():
        return "needs probes=[update_norms] at a fixed lr with two batch sizes", NOT_MEASURED
    per_run = epochs.groupby("run")[["update_norm_median", "epoch_distance"]].mean()
    step = compare_extremes(runs, runs.run.map(per_run.update_norm_median), log=True)
    travel = compare_extremes(runs, runs.run.map(per_run.epoch_distance), log=True)
    verdicts = [verdict(c["mean"], c["low"], c["high"], c["n"], -1) for c in (step, travel)]
    overall = NOT_MEASURED if NOT_MEASURED in verdicts else SUPPORTED if verdicts == [SUPPORTED] * 2 else NOT_SUPPORTED
    evidence = (
        describe(step, "median step norm (mean over epochs)", True)
        + "; "
        + describe(travel, "epoch distance (mean over epochs)", True)
        + one_seed_note(step["n"])
    )
    return evidence, overall


def claim_sqrt_growth(sweep: Sweep) -> tuple[str, str]:
    found = read_gradsum(sweep)
    if not found:
        return "needs probes=[gradsum] (e.g. experiment=gradsum)", NOT_MEASURED
    parts, inside = [], []
    for run, _, fit in found:
        for regime, f in sorted(fit.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
            if isinstance(f, dict) and "k" in f:
                low, high = f.get("ci95", [math.nan, math.nan])
                inside.append(low <= SQRT_EXPONENT <= high)
                parts.append(f"run {run.run}, epoch {regime}: k = {fmt(f['k'])} [{fmt(low)}, {fmt(high)}]")
    if not parts:
        return "gradsum results without a fitted exponent", NOT_MEASURED
    shown = (
        parts
        if len(parts) <= 4
        else [*parts[:3], f"... ({len(parts)} fits, {sum(inside)} with {SQRT_EXPONENT} in the interval)"]
    )
    evidence = "mean norm ~ B^k; " + "; ".join(shown) + f"; sqrt(B) is k = {SQRT_EXPONENT}"
    return evidence, SUPPORTED if all(inside) else NOT_SUPPORTED


def claim_sharper_minima(sweep: Sweep) -> tuple[str, str]:
    runs = baseline_runs(sweep)
    sharpness, hessian = probe_numbers(sweep, "sharpness"), probe_numbers(sweep, "hessian")
    if not sharpness.empty and eps_values(sharpness):
        column, numbers, source = f"sharpness_eps_{eps_values(sharpness)[0]}", sharpness, "Keskar sharpness"
    elif not hessian.empty and "top_eigenvalue" in hessian:
        column, numbers, source = "top_eigenvalue", hessian, "Hessian top eigenvalue"
    else:
        return "needs probes=[sharpness] or [hessian] (e.g. experiment=sharpness)", NOT_MEASURED
    runs = runs[runs.run.isin(numbers.run)]
    if runs.batch_size.nunique() < 2:
        return f"{source} measured at fewer than two batch sizes at a fixed lr", NOT_MEASURED
    c = compare_extremes(runs, runs.run.map(numbers.set_index("run")[column]), log=True)
    return describe(c, f"{source} ({column})", True) + one_seed_note(c["n"]), verdict(
        c["mean"], c["low"], c["high"], c["n"], +1
    )


CLAIMS = [
    (
        "Larger batches reach lower test accuracy at fixed epochs and lr",
        "Shen 2018; Keskar et al. 2017",
        claim_lower_accuracy,
    ),
    (
        "Scaling the lr with B narrows the test-accuracy gap between small and large batches",
        "Goyal et al. 2017; Shen 2018",
        claim_scaling_narrows_gap,
    ),
    (
        "Larger batches take smaller steps per update and travel less per epoch",
        "Chang & Pathak 2020",
        claim_smaller_steps,
    ),
    ("The gradient-sum norm grows like sqrt(B)", "Shen 2018", claim_sqrt_growth),
    ("Large-batch minima are sharper", "Keskar et al. 2017", claim_sharper_minima),
]


def findings_table(sweep: Sweep) -> Table:
    rows = []
    for claim, source, measure in CLAIMS:
        evidence, result = measure(sweep)
        rows.append({"claim": claim, "source": source, "evidence from this sweep": evidence, "verdict": result})
    return Table(
        "findings",
        "Each claim of the reference studies against this sweep's data (smallest vs largest "
        "batch size, seed by seed; intervals: 95% t-intervals over seeds).",
        pd.DataFrame(rows),
    )
