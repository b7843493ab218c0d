"""The findings table: each claim of the reference studies, the evidence this sweep has for it, and a
verdict from a rule that can fail. Every row gives n (the seeds behind the verdict, and the trials where
they matter), the effect with its 95% interval, the rule in one sentence, the verdict and the numbers.

Verdicts: supported; not supported; inconclusive (with the reason); too few seeds (fewer than
MIN_SEEDS seeds with a run at every batch size compared: never "supported", the numbers are still
shown); not measured in this sweep; not measurable with this protocol (one that decides the answer by
construction); not comparable (sharpness at training losses that differ by more than LOSS_TOLERANCE).
Non-finite values and diverged runs are listed in the evidence and make the verdict inconclusive.

Monotone claims use every batch size of the sweep, with two tests per seed s: b_s, the least-squares slope of
y against x = log2 B, with y the metric itself (accuracy) or log2 of it (sharpness, step norms, distances:
positive quantities compared as ratios, so b_s is the exponent p of metric ~ B^p); and rho_s, Spearman's
rank correlation of the metric with B (scipy.stats.spearmanr), which assumes no straight line (0 for a seed
without spread). The mean of b_1..b_n with its 95% t-interval, and of rho_1..rho_n with its t-interval on the
Fisher z scale (artanh, taken back: inside [-1, 1]; bsstudy.analysis.report.uncertainty.mean_ci) decide: one
wholly on the other side of 0 and neither on the claimed side -> not supported (both stated); else, a
neighbouring pair B_i < B_i+1 that goes the other way -> not supported, naming the pair (per pair a
one-sided t-test of the per-seed differences y(B_i+1) - y(B_i) against the claim, Holm-Bonferroni over the
K - 1 pairs at REVERSAL_LEVEL = 0.025, one side of 95%: with one pair the 95% interval wholly on the other
side; a pair significant alone but not after Holm is named in the evidence); else both wholly on the
claimed side -> supported; one on the claimed side and the other not -> inconclusive, saying that the
slope and the rank test disagree (a slope without a monotone trend: e.g. flat, then falling; or a
monotone trend whose slope is not resolved); neither -> inconclusive. Sharpness is first checked for
comparable training losses (max/min of the per-B means at most LOSS_TOLERANCE, else "not comparable").
The lr-scaling claim is a paired comparison per seed: the gap acc(B_min) - acc(B_max) with scaling minus
without, below 0.

Every row names its budget (column "budget"): the final epoch ("30 epochs"), a step or time budget, or the
probe's point. The lower-accuracy claim is tested three times: at the final epoch, and with each run read at
exactly the step and the time budget all runs share (bsstudy.analysis.report.at_budget: interpolated between the
two evaluations that bracket it, the first of its nested comparisons), over the batch sizes comparable there;
fewer than two comparable -> "not comparable", the others named. At equal training time, timings measured on a
shared machine (runs trained several at a time or in packs) or noisy between seeds (seconds per step differing
by more than at_budget.TIME_SPREAD at one B) -> "not comparable: timings noisy", the verdict read as they are
in the evidence.

"Grows like sqrt(B)" is an equivalence test on the exponent k of mean norm ~ B^k (gradsum's fit.json),
per regime: the t-interval of the seeds' k inside SQRT_MARGIN -> supported, wholly outside -> not
supported, otherwise inconclusive; the claim holds only if every regime (of every gradsum protocol in
the sweep) holds. Runs whose protocol fixes k by algebra (frozen weights with common samples) are
shown as controls and not counted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bsstudy.analysis.report import at_budget
from bsstudy.analysis.report.document import Section, Table
from bsstudy.analysis.report.runs import Sweep, eps_values, normalized_std, probe_numbers, read_gradsum
from bsstudy.analysis.report.uncertainty import CORRELATION, UNBOUNDED, mean_ci, side_of_zero

MIN_SEEDS = 3  # seeds with a run at every batch size compared, for any verdict but "too few seeds"
SQRT_EXPONENT = 0.5
SQRT_MARGIN = (0.4, 0.6)  # equivalence margin around SQRT_EXPONENT
REVERSAL_LEVEL = 0.025  # one side of 95%: with one pair, the old rule (the 95% t-interval wholly on the other side)
LOSS_TOLERANCE = 1.25  # sharpness is compared only if max/min of the mean training losses across B is at most this
FINISHED = ("completed", "diverged")  # a diverged run is shown and makes a verdict inconclusive, never dropped

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
TOO_FEW_SEEDS = "too few seeds"
NOT_MEASURED = "not measured in this sweep"
NOT_MEASURABLE = "not measurable with this protocol"
NOT_COMPARABLE = "not comparable"
# "every part holds" takes the first of these kinds that any part has
WORST_FIRST = (NOT_SUPPORTED, INCONCLUSIVE, NOT_COMPARABLE, TOO_FEW_SEEDS, NOT_MEASURABLE, NOT_MEASURED, SUPPORTED)

COLUMNS = ["claim", "source", "budget", "n", "effect [95% interval]", "rule", "verdict", "evidence"]
CAPTION = (
    "Each claim tested on this sweep by the rule in its row: a trend in B by the per-seed slope against log2 B "
    "over all batch sizes and by the per-seed rank correlation (Spearman) with B, which assumes no straight line "
    "(95% t-intervals over seeds, the correlation's on the Fisher z scale; where the two disagree the row says so), "
    "with no reversal between neighbouring batch sizes (Holm-Bonferroni over the pairs), "
    f"sqrt(B) by the exponent's interval inside the margin SQRT_MARGIN = [{SQRT_MARGIN[0]}, {SQRT_MARGIN[1]}]. "
    f"Fewer than MIN_SEEDS = {MIN_SEEDS} seeds give 'too few seeds'; non-finite values make a verdict inconclusive. "
    "Each row names the budget it is measured at; the accuracy claim is also read at equal optimizer steps and "
    "equal training time (see Budgets; each run interpolated at the exact budget), 'not comparable' where fewer "
    "than two batch sizes share that budget, or at equal time where the timings are noisy (a shared machine)."
)


@dataclass
class Finding:
    """One row of the findings table, less the claim and its source."""

    verdict: str
    rule: str
    evidence: str = ""
    n: str = "–"
    effect: str = "–"
    budget: str = "–"  # where the claim is measured: "30 epochs", "1,770 steps", "at the probe's point"


def because(kind: str, reason: str = "") -> str:
    return f"{kind}: {reason}" if reason else kind


def not_measured(reason: str, rule: str, *notes: str) -> Finding:
    """The verdict "not measured in this sweep", with what would measure it in the evidence."""
    return Finding(NOT_MEASURED, rule, "; ".join([reason, *notes]))


def kind_of(verdict: str) -> str:
    """The verdict without its reason: "inconclusive: the slope's interval contains 0" -> "inconclusive"."""
    return verdict.split(":", 1)[0]


def reason_of(verdict: str) -> str:
    return verdict.split(":", 1)[1].strip() if ":" in verdict else ""


def fmt(x) -> str:
    """Three significant digits; nan and inf are printed as such, never hidden."""
    return "–" if x is None else f"{float(x):.3g}"


def fmt_interval(mean: float, low: float, high: float) -> str:
    if math.isfinite(low) and math.isfinite(high):
        return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"
    return f"{fmt(mean)} (no interval)"


def count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def bs(batch_size) -> str:
    return f"B={float(batch_size):g}"


def conjunction(parts: list[tuple[str, Finding]]) -> str:
    """The verdict of "every part holds": supported only if every part is, else the worst kind
    (WORST_FIRST) with the reasons of the parts that have it."""
    worst = min((kind_of(f.verdict) for _, f in parts), key=WORST_FIRST.index)
    if worst == SUPPORTED:
        return SUPPORTED
    reasons = [(label, reason_of(f.verdict)) for label, f in parts if kind_of(f.verdict) == worst]
    if len({r for _, r in reasons}) == 1 and len(reasons) == len(parts):
        return because(worst, reasons[0][1])
    return because(worst, "; ".join(f"{label}: {r}" if r else label for label, r in reasons))


# Runs and seeds


def baseline_runs(sweep: Sweep) -> pd.DataFrame:
    """Finished runs at a fixed lr (no lr scaling, no accumulation), of the first variant with two batch sizes."""
    finished = sweep.runs[sweep.runs.status.isin(FINISHED)]
    runs = finished[(finished.lr_scaling == "none") & (finished.accumulate == 1)]
    for _, group in runs.groupby("variant", sort=True):
        if group.batch_size.nunique() >= 2:
            return group
    return runs.iloc[0:0]


def with_probe(runs: pd.DataFrame, probe: str) -> pd.DataFrame:
    return runs.loc[np.array([probe in str(names).split(",") for names in runs.probes], dtype=bool)]


@dataclass
class SeedTable:
    """values[seed, batch size] of one metric (mean over a seed's runs at one B, nan and inf kept) for the
    seeds with a run at every batch size; `diverged` marks diverged runs' cells; `notes` names the seeds left out."""

    values: pd.DataFrame
    diverged: pd.DataFrame
    notes: list[str]


def seed_table(runs: pd.DataFrame, values) -> SeedTable:
    frame = pd.DataFrame(
        {
            "seed": pd.to_numeric(runs.seed).to_numpy(dtype=float),
            "batch_size": pd.to_numeric(runs.batch_size).to_numpy(dtype=float),
            "value": np.asarray(values, dtype=float),
            "diverged": (runs.status == "diverged").to_numpy(),
        }
    )
    grouped = frame.groupby(["seed", "batch_size"])
    table = grouped["value"].agg(lambda v: float(np.mean(v.to_numpy()))).unstack("batch_size")
    diverged = grouped["diverged"].any().unstack("batch_size", fill_value=False)
    present = grouped.size().unstack("batch_size", fill_value=0) > 0
    complete = present.all(axis=1)
    notes = [
        f"seed {seed:g} left out: no run at " + ", ".join(bs(b) for b in present.columns[~present.loc[seed]])
        for seed in present.index[~complete]
    ]
    return SeedTable(table[complete], diverged[complete].astype(bool), notes)


def unusable_cells(t: SeedTable, log: bool) -> list[tuple[float, float, str]]:
    """(B, seed, "B=1024 seed 1: nan") for each value the rule cannot use: non-finite, of a diverged run,
    or not positive where the rule takes its log."""
    found = []
    for seed, row in t.values.iterrows():
        for batch_size, value in row.items():
            why = ["diverged"] if t.diverged.loc[seed, batch_size] else []
            why += ["not positive: no log"] if log and math.isfinite(value) and value <= 0 else []
            if why or not math.isfinite(value):
                note = f" ({', '.join(why)})" if why else ""
                found.append((batch_size, seed, f"{bs(batch_size)} seed {seed:g}: {fmt(value)}{note}"))
    return sorted(found)


def at(cells: list[tuple[float, float, str]]) -> str:
    return "non-finite values at " + ", ".join(bs(b) for b in sorted({b for b, _, _ in cells}))


def usable(t: SeedTable, log: bool) -> pd.DataFrame:
    """The rows (seeds) whose every value the rule can use, as y = log2(value) or the value itself."""
    values = t.values.where(~t.diverged)
    y = np.log2(values.where(values > 0)) if log else values
    return y[np.isfinite(y).all(axis=1)]


def too_few(n: int) -> str:
    return because(TOO_FEW_SEEDS, f"{n} < MIN_SEEDS = {MIN_SEEDS}")


# Monotone claims


def monotone_rule(metric: str, sign: int, log: bool) -> str:
    y = f"log2({metric})" if log else metric
    side = "above" if sign > 0 else "below"
    return (
        f"slope of {y} vs log2 B per seed, all B, and Spearman's rank correlation of {metric} with B per seed "
        f"(Fisher z): both 95% t-intervals {side} 0 (disagreeing: inconclusive, both stated) and no reversal "
        f"between neighbouring B (one-sided t-test per pair, Holm-Bonferroni over the pairs at {REVERSAL_LEVEL}); "
        f"MIN_SEEDS = {MIN_SEEDS}"
    )


def least_squares_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least-squares slope of each row of y against x (numpy.polyfit of degree 1). Each row is first shifted
    by its first value y_0, which changes nothing but roundoff: a constant row gives exactly 0."""
    if not len(y):
        return np.empty(0)
    return np.polyfit(x, (y - y[:, :1]).T, 1)[0]


def rank_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of y against x (scipy.stats.spearmanr, ties at their mean rank): +1 for a row
    that rises at every step, whatever its shape. A row with no spread has no order: rho = 0."""
    return np.array([stats.spearmanr(x, row).statistic if np.ptp(row) > 0 else 0.0 for row in y], dtype=float)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down: the i-th smallest of m times m - i + 1, kept monotone, at
    most 1); a hypothesis is rejected at level a where its adjusted p is below a. statsmodels is not a
    dependency, hence these lines."""
    m, order = len(p_values), np.argsort(p_values, kind="stable")
    adjusted, running = np.empty(m), 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


@dataclass
class Step:
    """One neighbouring pair B_a < B_b: the per-seed differences y(B_b) - y(B_a), their mean and 95% t-interval,
    the one-sided p-value of "it goes against the claim" and that p Holm-adjusted over the pairs."""

    a: float
    b: float
    mean: float
    low: float
    high: float
    p: float
    p_holm: float = math.nan

    @property
    def label(self) -> str:
        return f"{bs(self.a)} -> {self.b:g}"

    def describe(self, pairs: int) -> str:
        return (
            f"{self.label} goes the other way: {fmt_interval(self.mean, self.low, self.high)}, one-sided p = "
            f"{fmt(self.p)}, Holm-adjusted over {count(pairs, 'pair')} {fmt(self.p_holm)}"
        )


def against(differences: np.ndarray, sign: int) -> float:
    """One-sided p-value of the t-test that the mean difference goes against a claimed sign (scipy.stats.ttest_1samp);
    differences without spread: 0 if they all go against it, else 1; nan with fewer than two."""
    d = differences[np.isfinite(differences)]
    if len(d) < 2:
        return math.nan
    if np.ptp(d) == 0:
        return 0.0 if np.sign(d[0]) == -sign else 1.0
    return float(stats.ttest_1samp(d, 0.0, alternative="greater" if sign < 0 else "less").pvalue)


def neighbour_steps(y: pd.DataFrame, sign: int) -> list[Step]:
    """Each neighbouring pair's Step, its p Holm-adjusted over all pairs."""
    columns = list(y.columns)
    steps = [
        Step(a, b, *mean_ci((y[b] - y[a]).tolist(), UNBOUNDED)[:3], against((y[b] - y[a]).to_numpy(), sign))
        for a, b in zip(columns, columns[1:], strict=False)
    ]
    tested = [s for s in steps if math.isfinite(s.p)]
    for s, adjusted in zip(tested, holm([s.p for s in tested]), strict=True):
        s.p_holm = adjusted
    return steps


def direction(side: int, plural: bool = False) -> str:
    if side == 0:
        return "contain 0" if plural else "contains 0"
    return f"{'lie' if plural else 'lies'} wholly {'above' if side > 0 else 'below'} 0"


def monotone_verdict(n: int, bad: list, reversals: list[Step], slope_side: int, rank_side: int, sign: int) -> str:
    """Both tests on the claimed side and no reversal -> supported; one on the other side and neither on the claimed
    -> not supported; a reversal -> not supported; one on the claimed side and the other not -> inconclusive, saying
    that they disagree; neither on a side -> inconclusive."""
    if n < MIN_SEEDS:
        return too_few(n)
    if bad:
        return because(INCONCLUSIVE, at(bad))
    both = (
        f"the slope's and the rank correlation's intervals {direction(slope_side, plural=True)}"
        if slope_side == rank_side
        else f"the slope's interval {direction(slope_side)}, the rank correlation's {direction(rank_side)}"
    )
    if -sign in (slope_side, rank_side) and sign not in (slope_side, rank_side):
        return because(NOT_SUPPORTED, both)
    if reversals:
        pairs = ", ".join(s.label for s in reversals)
        return because(NOT_SUPPORTED, f"{pairs} {'goes' if len(reversals) == 1 else 'go'} the other way (Holm)")
    if slope_side == rank_side == sign:
        return SUPPORTED
    if sign in (slope_side, rank_side):
        trend = f"a trend, not monotone in B: e.g. flat, then {'falling' if sign < 0 else 'rising'}"
        shape = trend if slope_side == sign else "monotone in B, but the slope is not resolved"
        return because(INCONCLUSIVE, f"the slope and the rank test disagree: {both} ({shape})")
    return because(INCONCLUSIVE, both)


def monotone(runs: pd.DataFrame, values, metric: str, sign: int, log: bool) -> Finding:
    """The monotone rule (module docstring) for `metric` (one value per run) claimed to grow (sign = +1)
    or fall (-1) with B."""
    t = seed_table(runs, values)
    rule, n, batch_sizes = monotone_rule(metric, sign, log), len(t.values), list(t.values.columns)
    if n == 0 or len(batch_sizes) < 2:
        return not_measured("no seed has runs at two or more batch sizes", rule, *t.notes)
    y, bad = usable(t, log), unusable_cells(t, log)
    slopes = least_squares_slopes(np.log2(batch_sizes), y.to_numpy())
    mean, low, high, _ = mean_ci(slopes.tolist(), UNBOUNDED)  # a slope takes any sign
    rhos = rank_correlations(np.log2(batch_sizes), y.to_numpy())
    rho, rho_low, rho_high, _ = mean_ci(rhos.tolist(), CORRELATION)
    steps = neighbour_steps(y, sign)
    reversals = [s for s in steps if s.p_holm < REVERSAL_LEVEL]
    unadjusted = [s for s in steps if s.p < REVERSAL_LEVEL <= s.p_holm]
    means = t.values.mean(skipna=False)
    evidence = [
        f"{metric}, mean over seeds: " + ", ".join(f"{bs(b)}: {fmt(v)}" for b, v in means.items()),
        f"slope per seed ({', '.join(f'{s:g}' for s in y.index)}): " + ", ".join(fmt(s) for s in slopes),
        "Spearman rho per seed: " + ", ".join(fmt(r) for r in rhos),
        *(s.describe(len(steps)) for s in reversals),
        *(f"not a reversal after Holm: {s.describe(len(steps))}" for s in unadjusted),
        *(text for _, _, text in bad),
        *t.notes,
    ]
    effect = (
        f"{fmt_interval(mean, low, high)} per doubling of B"
        + (f" (x{fmt(2**mean)})" if log else "")
        + f"; Spearman rho {fmt_interval(rho, rho_low, rho_high)}"
    )
    verdict = monotone_verdict(n, bad, reversals, side_of_zero(low, high), side_of_zero(rho_low, rho_high), sign)
    return Finding(verdict, rule, "; ".join(evidence), count(n, "seed"), effect)


ACCURACY_RULE = monotone_rule("final test accuracy", -1, log=False)
STEPS_RULE = (
    "for log2(median step norm) and for log2(epoch distance), each: the slope vs log2 B and Spearman's rank "
    "correlation with B per seed, all B, their 95% t-intervals below 0 and no reversal between neighbouring B "
    f"(Holm-Bonferroni over the pairs at {REVERSAL_LEVEL}); MIN_SEEDS = {MIN_SEEDS}"
)


def claim_lower_accuracy(sweep: Sweep) -> Finding:
    runs = baseline_runs(sweep)
    if runs.empty:
        return not_measured("no finished runs at a fixed lr with two batch sizes", ACCURACY_RULE)
    finding = monotone(runs, runs.final_test_acc, "final test accuracy", -1, log=False)
    finding.budget = at_budget.final_epochs(runs)
    return finding


def budget_rule(budget: str) -> str:
    how = "linearly in log(steps)" if budget == "equal steps" else "linearly in time"
    noisy = (
        f"; not comparable where the timings are noisy (runs that shared the machine, or seconds per step that "
        f"differ between seeds by more than TIME_SPREAD = {at_budget.TIME_SPREAD})"
        if budget == "equal training time"
        else ""
    )
    return (
        f"runs read at exactly {budget} (report/at_budget.py: interpolated {how} between the two evaluations that "
        "bracket the budget; a batch size whose bracket starts at the untrained evaluation is not comparable"
        f"{noisy}), then the " + monotone_rule("test accuracy", -1, log=False).replace("all B", "all comparable B")
    )


def lower_accuracy_at(budget: str):
    """The lower-accuracy claim at `budget` ("equal steps", "equal training time"): the monotone rule over the
    batch sizes comparable at the budget all runs share (the first of at_budget.nested_comparisons)."""

    def claim(sweep: Sweep) -> Finding:
        rule, runs = budget_rule(budget), baseline_runs(sweep)
        if runs.empty:
            return not_measured("no finished runs at a fixed lr with two batch sizes", rule)
        found = [c for c in at_budget.comparisons(sweep, runs) if c.budget == budget]
        if not found:
            column = at_budget.CLOCKS[budget][0]
            return not_measured(f"metrics.csv has no {column} column (or no run trained)", rule)
        first = found[0]
        left_out = [f"{bs(b)} not comparable at {first.label}: {why}" for b, why in sorted(first.excluded.items())]
        if len(first.batch_sizes) < 2:
            shared = ", ".join(f"{bs(b)}" for b in first.batch_sizes) or "none"
            finding = Finding(
                because(NOT_COMPARABLE, f"no common {budget.removeprefix('equal ')} budget: comparable only {shared}"),
                rule,
                "; ".join(left_out),
            )
        else:
            r = first.readings
            finding = monotone(r, r.test_acc, f"test accuracy at {first.label}", -1, log=False)
            finding.evidence = "; ".join([finding.evidence, *left_out])
            noise = at_budget.timing_noise(sweep, runs) if budget == "equal training time" else ""
            if noise and kind_of(finding.verdict) != NOT_MEASURED:
                finding.evidence = f"read as they are: {finding.verdict}; {finding.evidence}"
                finding.verdict = because(NOT_COMPARABLE, f"timings noisy: {noise}")
        finding.budget = first.label
        return finding

    return claim


def claim_smaller_steps(sweep: Sweep) -> Finding:
    runs = with_probe(baseline_runs(sweep), "update_norms")
    epochs = sweep.epochs[(sweep.epochs.epoch > 0) & sweep.epochs.run.isin(runs.run)]
    if runs.batch_size.nunique() < 2 or "epoch_distance" not in epochs:
        return not_measured("needs probes=[update_norms] at a fixed lr with two batch sizes", STEPS_RULE)
    per_run = epochs.groupby("run")[["update_norm_median", "epoch_distance"]].mean()
    parts = [
        (label, monotone(runs, runs.run.map(per_run[column]), label, -1, log=True))
        for column, label in (
            ("update_norm_median", "median step norm (mean over epochs)"),
            ("epoch_distance", "epoch distance (mean over epochs)"),
        )
    ]
    return Finding(
        conjunction(parts),
        STEPS_RULE,
        "; ".join(f.evidence for _, f in parts),
        parts[0][1].n,
        "; ".join(f"{label.split(' (')[0]}: {f.effect}" for label, f in parts),
        f"per update and per epoch, over {at_budget.final_epochs(runs)}",
    )


# lr scaling: a paired comparison per seed


SCALING_RULE = (
    "per seed, test-accuracy gap acc(B_min) - acc(B_max) with lr scaling minus without: its 95% t-interval below 0; "
    f"MIN_SEEDS = {MIN_SEEDS}"
)


def claim_scaling_narrows_gap(sweep: Sweep) -> Finding:
    """Small-B advantage acc(B_min) - acc(B_max) with lr scaling minus without, per seed; claimed < 0."""
    runs = sweep.runs[sweep.runs.status.isin(FINISHED) & (sweep.runs.accumulate == 1)]
    rules = [r for r in sorted(runs.lr_scaling.unique()) if r != "none"]
    if "none" not in set(runs.lr_scaling) or not rules:
        reason = "needs runs with and without lr scaling (e.g. experiment=generalization,lr_scaling)"
        return not_measured(reason, SCALING_RULE)
    fixed, scaled = runs[runs.lr_scaling == "none"], runs[runs.lr_scaling == rules[0]]
    common = sorted(set(fixed.batch_size) & set(scaled.batch_size))
    if len(common) < 2:
        reason = "the runs with and without lr scaling share fewer than two batch sizes"
        return not_measured(reason, SCALING_RULE)
    small, large = common[0], common[-1]
    budget = at_budget.final_epochs(pd.concat([fixed, scaled]))
    arms = [seed_table(r[r.batch_size.isin([small, large])], r[r.batch_size.isin([small, large])].final_test_acc)
            for r in (fixed, scaled)]  # fmt: skip
    seeds = arms[0].values.index.intersection(arms[1].values.index)
    gaps = [
        (a.values.loc[seeds, small] - a.values.loc[seeds, large]).where(~a.diverged.loc[seeds].any(axis=1))
        for a in arms
    ]
    change = gaps[1] - gaps[0]
    bad = [(b, s, f"{arm}: {text}") for arm, a in zip(("fixed lr", f"lr_scaling={rules[0]}"), arms, strict=True)
           for b, s, text in unusable_cells(a, log=False) if s in seeds]  # fmt: skip
    mean, low, high, n = *mean_ci(change[np.isfinite(change)].tolist(), UNBOUNDED)[:3], len(seeds)
    if n < MIN_SEEDS:
        verdict = too_few(n)
    elif bad:
        verdict = because(INCONCLUSIVE, at(bad))
    else:
        side = side_of_zero(low, high)
        verdict = {-1: SUPPORTED, 1: because(NOT_SUPPORTED, "the gap widens with lr scaling")}.get(
            side, because(INCONCLUSIVE, "the interval contains 0")
        )
    evidence = [
        f"test-accuracy advantage of {bs(small)} over {bs(large)}: {fmt(gaps[0].mean())} at a fixed lr, "
        f"{fmt(gaps[1].mean())} with lr_scaling={rules[0]}",
        "change per seed: " + ", ".join(f"{s:g}: {fmt(c)}" for s, c in change.items()),
        *(text for _, _, text in bad),
        *(note for a in arms for note in a.notes),
    ]
    return Finding(verdict, SCALING_RULE, "; ".join(evidence), count(n, "seed"), fmt_interval(mean, low, high), budget)


# sqrt(B): an equivalence test on gradsum's exponent


SQRT_RULE = (
    "per regime, 95% t-interval of the seeds' k (mean norm ~ B^k): inside SQRT_MARGIN = "
    f"[{SQRT_MARGIN[0]}, {SQRT_MARGIN[1]}] supported, wholly outside not; every regime; MIN_SEEDS = {MIN_SEEDS}"
)


@dataclass
class GradsumFit:
    """One regime of one run's probes/gradsum/fit.json."""

    run: str
    seed: float
    condition: str
    regime: str
    k: float
    low: float
    high: float
    trials: object
    method: str
    by_construction: str  # why the protocol fixes k, or ""


def decided_by_construction(settings: dict) -> str:
    """Why k is fixed by algebra, or "". Frozen weights and common samples make S_B = c_B times the sum of the
    same per-sample gradients for every B that divides the sample budget: |S_B| ~ c_B, so k = -1 with mean
    reduction (c_B = 1/B) and k = 0 with sum reduction (c_B = 1)."""
    if settings.get("update") is False and settings.get("common_samples") is True:
        reduction = settings.get("reduction", "mean")
        k = -1 if reduction == "mean" else 0
        return f"frozen weights with common samples make k = {k} by construction ({reduction} reduction)"
    return ""


def gradsum_condition(run, settings: dict) -> str:
    protocol = (
        ", ".join(f"{key}={settings[key]}" for key in ("update", "reduction", "common_samples") if key in settings)
        or "settings not recorded"
    )
    return f"{protocol}, trained at {bs(run.batch_size)}" + (f", {run.variant}" if run.variant else "")


def read_gradsum_fits(sweep: Sweep) -> list[GradsumFit]:
    """Every regime of every finished run's probes/gradsum/fit.json ({"<regime>": {"k", "ci95", "ci_method",
    "n_trials", "settings", ...}}); an unreadable file becomes a problem of its run."""
    fits = []
    for run in sweep.runs[sweep.runs.status.isin(FINISHED)].itertuples():
        path = sweep.probe_dir(run.run, "gradsum") / "fit.json"
        if not path.exists():
            continue
        try:
            found = json.loads(path.read_text())
        except Exception as err:  # one corrupt file must not stop the report
            sweep.problem(run.run, "probes/gradsum/fit.json", f"{type(err).__name__}: {err}")
            continue
        for regime, fit in found.items():
            if not (isinstance(fit, dict) and "k" in fit):
                continue
            settings = fit.get("settings") or {}
            low, high = (fit.get("ci95") or [math.nan, math.nan])[:2]
            fits.append(
                GradsumFit(
                    str(run.run),
                    float(run.seed),
                    gradsum_condition(run, settings),
                    f"epoch {regime}" if str(regime).isdigit() else str(regime),
                    float(fit["k"] if fit["k"] is not None else math.nan),
                    float(low if low is not None else math.nan),
                    float(high if high is not None else math.nan),
                    fit.get("n_trials", settings.get("trials")),
                    str(fit.get("ci_method", "interval method not recorded")),
                    decided_by_construction(settings),
                )
            )
    return fits


def equivalence(low: float, high: float) -> str:
    """The verdict of an interval for k against SQRT_MARGIN."""
    lo, hi = SQRT_MARGIN
    if not (math.isfinite(low) and math.isfinite(high)):
        return because(INCONCLUSIVE, "no interval")
    if lo <= low and high <= hi:
        return SUPPORTED
    if high < lo or low > hi:
        return because(NOT_SUPPORTED, f"interval outside SQRT_MARGIN = [{lo}, {hi}]")
    return because(
        INCONCLUSIVE, "interval wider than the margin" if high - low > hi - lo else "interval crosses the margin's edge"
    )


def regime_order(regime: str) -> tuple[float, str]:
    """ "epoch 2" before "epoch 30" before any other name."""
    number = regime.removeprefix("epoch ")
    return (float(number), "") if number.isdigit() else (math.inf, regime)


def describe_fit(f: GradsumFit) -> str:
    return (
        f"run {f.run} (seed {f.seed:g}): k = {fmt_interval(f.k, f.low, f.high)} ({f.method}, {f.trials} trials), "
        f"alone: {equivalence(f.low, f.high)}"
    )


def sqrt_regime(fits: list[GradsumFit]) -> Finding:
    """The equivalence rule over the runs of one condition and regime (k averaged over a seed's runs)."""
    per_seed = pd.DataFrame({"seed": [f.seed for f in fits], "k": [f.k for f in fits]}).groupby("seed").k.mean()
    n, finite = len(per_seed), bool(np.isfinite(per_seed).all())
    mean, low, high, _ = mean_ci(per_seed.tolist(), UNBOUNDED)  # k of any sign
    if n == 1:
        mean, low, high = fits[0].k, fits[0].low, fits[0].high
    if n < MIN_SEEDS:
        verdict = too_few(n)
    elif not finite:
        verdict = because(
            INCONCLUSIVE, "non-finite k of seed " + ", ".join(f"{s:g}" for s in per_seed.index[~np.isfinite(per_seed)])
        )
    else:
        verdict = equivalence(low, high)
    effect = f"k = {fmt_interval(mean, low, high)}" + (f" ({fits[0].method}, one run)" if n == 1 else "")
    return Finding(verdict, SQRT_RULE, "; ".join(describe_fit(f) for f in fits), count(n, "seed"), effect)


def claim_sqrt_growth(sweep: Sweep) -> Finding:
    fits = read_gradsum_fits(sweep)
    if not fits:
        return not_measured("needs probes=[gradsum] (e.g. experiment=gradsum)", SQRT_RULE)
    measured = [f for f in fits if not f.by_construction]
    controls = [f"{f.regime}, run {f.run}: k = {fmt(f.k)}, {f.by_construction}" for f in fits if f.by_construction]
    if not measured:
        return Finding(
            because(NOT_MEASURABLE, fits[0].by_construction), SQRT_RULE, "; ".join(controls), count(len(fits), "fit")
        )
    groups: dict[tuple[str, str], list[GradsumFit]] = {}
    for f in sorted(measured, key=lambda f: (f.condition, regime_order(f.regime), f.run)):
        groups.setdefault((f.condition, f.regime), []).append(f)
    several = len({c for c, _ in groups}) > 1
    parts = [
        (f"{regime} ({condition})" if several else regime, sqrt_regime(g)) for (condition, regime), g in groups.items()
    ]
    trials = sorted({str(f.trials) for f in measured})
    n = min(len({f.seed for f in g}) for g in groups.values())
    evidence = [f"{label}: {p.evidence}" for label, p in parts]
    for (condition, regime), group in groups.items():  # e.g. a run that diverged before its late regime
        absent = sorted({f.run for f in measured if f.condition == condition} - {f.run for f in group})
        evidence += [f"no {regime} fit in run {', '.join(absent)}"] if absent else []
    evidence += [f"controls, not counted: {'; '.join(controls)}"] if controls else []
    return Finding(
        conjunction(parts),
        SQRT_RULE,
        "; ".join(evidence),
        f"{count(n, 'seed')} x {'/'.join(trials)} trials",
        "; ".join(f"{label}: {p.effect}" for label, p in parts),
        "the gradsum protocol's sample budget per trial, at each regime's weights",
    )


# The normalized std of the gradient-sum norm: a trend in B per regime, by slope and rank over seeds

STD_RULE = (
    "per regime, each seed's least-squares slope of log std_norm against log2 B and its Spearman rho with B over "
    "the gradsum grid (std_norm = std_B * mean_1024 / mean_B, as the source rescales it); 95% t-intervals over "
    f"seeds (rho on the Fisher z scale): both above 0 supported, either below 0 not, else inconclusive; every "
    f"regime; MIN_SEEDS = {MIN_SEEDS}"
)


def read_std_norms(sweep: Sweep) -> pd.DataFrame:
    """Every finished run's gradsum summary.csv as rows (run, seed, regime, batch_size, std_norm)."""
    frames = [
        summary.assign(std_norm=normalized_std(summary), run=str(run.run), seed=float(run.seed))
        for run, summary, _ in read_gradsum(sweep, sweep.runs[sweep.runs.status.isin(FINISHED)])
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def std_regime(rows: pd.DataFrame) -> Finding:
    """The trend rule on one regime: per seed (runs of a seed averaged), slope and rank of log std_norm in B."""
    table = rows.groupby(["seed", "batch_size"]).std_norm.mean().unstack("batch_size").dropna(axis=1)
    batch_sizes = table.columns.to_numpy(dtype=float)
    values = np.log(table.to_numpy(dtype=float))
    n = len(table)
    slopes = least_squares_slopes(np.log2(batch_sizes), values)
    rhos = rank_correlations(batch_sizes, values)
    slope, s_low, s_high, _ = mean_ci(slopes.tolist(), UNBOUNDED)
    rho, r_low, r_high, _ = mean_ci(rhos.tolist(), CORRELATION)
    effect = (
        f"slope {fmt_interval(slope, s_low, s_high)} per doubling of B (log std_norm); "
        f"rho {fmt_interval(rho, r_low, r_high)}"
    )
    per_seed = ", ".join(
        f"seed {s:g}: slope {fmt(a)}, rho {fmt(r)}" for s, a, r in zip(table.index, slopes, rhos, strict=True)
    )
    if n < MIN_SEEDS:
        return Finding(too_few(n), STD_RULE, per_seed, count(n, "seed"), effect)
    if not np.isfinite(values).all():
        return Finding(because(INCONCLUSIVE, "non-finite std_norm"), STD_RULE, per_seed, count(n, "seed"), effect)
    if s_low > 0 and r_low > 0:
        verdict = SUPPORTED
    elif s_high < 0 or r_high < 0:
        verdict = because(NOT_SUPPORTED, "it falls with B")
    elif (s_low > 0) != (r_low > 0):
        verdict = because(INCONCLUSIVE, "the slope and the rank test disagree")
    else:
        verdict = because(INCONCLUSIVE, "no trend resolved")
    return Finding(verdict, STD_RULE, per_seed, count(n, "seed"), effect)


def claim_std_grows(sweep: Sweep) -> Finding:
    rows = read_std_norms(sweep)
    if rows.empty:
        return not_measured("needs probes=[gradsum] (e.g. experiment=gradsum)", STD_RULE)
    parts = [
        (f"epoch {regime}", std_regime(group)) for regime, group in sorted(rows.groupby("regime"), key=lambda g: g[0])
    ]
    n = min(len(group.seed.unique()) for _, group in rows.groupby("regime"))
    return Finding(
        conjunction(parts),
        STD_RULE,
        "; ".join(f"{label}: {p.evidence}" for label, p in parts),
        count(n, "seed"),
        "; ".join(f"{label}: {p.effect}" for label, p in parts),
        "the gradsum protocol's sample budget per trial, at each regime's weights",
    )


# Sharpness: comparable training losses first, then the monotone rule on log sharpness


def sharpness_rule(label: str) -> str:
    return (
        f"mean training losses within LOSS_TOLERANCE = {LOSS_TOLERANCE} (max/min) across B, then the "
        + monotone_rule(label, +1, log=True)
    )


def curvature_measure(sweep: Sweep) -> tuple[str, str, str] | None:
    """(probe, summary key, label): the sharpness probe's first eps, else the Hessian's top algebraic
    eigenvalue (lambda_max), else its older top_eigenvalue."""
    sharpness = probe_numbers(sweep, "sharpness")
    if not sharpness.empty and eps_values(sharpness):
        eps = eps_values(sharpness)[0]
        return "sharpness", f"sharpness_eps_{eps}", f"Keskar sharpness (eps = {eps})"
    hessian = probe_numbers(sweep, "hessian")
    for key in ("lambda_max", "top_eigenvalue"):
        if key in hessian:
            return "hessian", key, f"Hessian {key}"
    return None


def probe_value(sweep: Sweep, run: str, probe: str, key: str) -> float:
    value = ((sweep.summaries.get(run, {}).get("probes") or {}).get(probe) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def training_losses(sweep: Sweep, runs: pd.DataFrame, probe: str) -> tuple[pd.Series, str]:
    """Per run, the training loss at the measured point: the probe's train_loss, else the final full-pass
    train loss; and which of the two was read."""
    from_probe = runs.run.map(lambda run: probe_value(sweep, run, probe, "train_loss"))
    losses = from_probe.where(from_probe.notna(), pd.to_numeric(runs.final_train_loss))
    source = (
        f"probes.{probe}.train_loss"
        if from_probe.notna().all()
        else "final train loss"
        if from_probe.isna().all()
        else f"probes.{probe}.train_loss where recorded, else final train loss"
    )
    return losses, source


def loss_spread(by_batch_size: pd.Series) -> float:
    """max / min of the mean training losses (inf if the smallest is 0 and the largest is not)."""
    low, high = by_batch_size.min(), by_batch_size.max()
    return high / low if low > 0 else (1.0 if high == low else math.inf)


def claim_sharper_minima(sweep: Sweep) -> Finding:
    found = curvature_measure(sweep)
    if found is None:
        reason = "needs probes=[sharpness] or [hessian] (e.g. experiment=sharpness)"
        return not_measured(reason, sharpness_rule("sharpness"))
    probe, key, label = found
    runs = with_probe(baseline_runs(sweep), probe)
    if runs.batch_size.nunique() < 2:
        return not_measured(
            f"{label} measured at fewer than two batch sizes at a fixed lr",
            sharpness_rule(label),
        )
    finding = monotone(runs, runs.run.map(lambda run: probe_value(sweep, run, probe, key)), label, +1, log=True)
    losses, source = training_losses(sweep, runs, probe)
    finite = np.isfinite(losses)
    by_b = losses[finite].groupby(runs.batch_size[finite]).mean()
    odd = [f"run {r.run} ({bs(r.batch_size)}, seed {r.seed:g}): training loss {fmt(x)}"
           for r, x in zip(runs[~finite].itertuples(), losses[~finite], strict=True)]  # fmt: skip
    finding.rule = sharpness_rule(label)
    finding.budget = f"where {probe} measured (training loss in the evidence)"
    finding.evidence = "; ".join(
        [
            f"training loss at the measured point ({source}), mean over seeds: "
            + ", ".join(f"{bs(b)}: {fmt(v)}" for b, v in by_b.items()),
            *odd,
            finding.evidence,
        ]
    )
    if len(by_b) >= 2 and loss_spread(by_b) > LOSS_TOLERANCE:
        ends = sorted([by_b.idxmin(), by_b.idxmax()])
        finding.verdict = because(
            NOT_COMPARABLE,
            f"training losses {fmt(by_b[ends[0]])} ({bs(ends[0])}) ... {fmt(by_b[ends[1]])} ({bs(ends[1])}); "
            "train to matched loss with trainer.stop_at",
        )
    return finding


CLAIMS = [
    (
        "Larger batches reach lower test accuracy at fixed epochs and lr",
        "Shen 2018; Keskar et al. 2017",
        claim_lower_accuracy,
    ),
    (
        "Larger batches reach lower test accuracy at equal optimizer steps and fixed lr",
        "Shallue et al. 2019 (budget framing)",
        lower_accuracy_at("equal steps"),
    ),
    (
        "Larger batches reach lower test accuracy at equal training time and fixed lr",
        "Shallue et al. 2019 (budget framing)",
        lower_accuracy_at("equal training time"),
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
    ("The normalized std of the gradient-sum norm grows with B", "Shen 2018", claim_std_grows),
    ("Large-batch minima are sharper", "Keskar et al. 2017", claim_sharper_minima),
]


def findings_table(sweep: Sweep) -> Table:
    rows = []
    for claim, source, measure in CLAIMS:
        f = measure(sweep)
        row = [claim, source, f.budget, f.n, f.effect, f.rule, f.verdict, f.evidence]
        rows.append(dict(zip(COLUMNS, row, strict=True)))
    return Table("findings", CAPTION, pd.DataFrame(rows, columns=COLUMNS))


def findings_section(sweep: Sweep) -> Section:
    return Section("Findings", [], [findings_table(sweep)])
