"""Reading runs at a stated budget: equal epochs, equal optimizer steps, equal training time.

A comparison at the final epoch gives B=2 500 times the updates of B=1024; one at equal steps gives B=1024
500 times the samples. Each budget answers a different question, so every comparison here names its budget:

- equal epochs: every run read at E, the last epoch all compared runs completed;
- equal steps: X = the fewest optimizer steps any compared run reached; each run read at exactly X, by
  interpolating between the two evaluations that bracket X, linearly in log(steps) (read_at);
- equal training time: the same with the cumulative training time (train_time_s, evaluation excluded),
  interpolated linearly in time.

metrics.csv has evaluations only at epoch ends. A run whose evaluations bracketing X are the untrained one
(step 0, time 0) and its first (B=2 on Fashion-MNIST: 30,000 steps per epoch against B=1024's 1,770 in 30
epochs) is not comparable at that budget: log(0) has no interpolation, and the first epoch's curve is
nothing like a straight line in time; it is named, never read at a point it did not reach. Every run reached X
(X is the least any reached), so that is the only way a run is not comparable. The comparison is then repeated
without the batch size that set the budget, at the larger budget the rest share, until every batch size was
compared or fewer than two are left (nested budgets: B=64, 256, 1024 at 1,770 steps; B=64 and 256 at 7,050;
B=64 alone at 28,140, B=2's first evaluation after its untrained one being at 30,000).

Training time is measured on the machine the runs shared: timing_noise says why the times of a set of runs
are not comparable (runs trained several at a time, or in packs, or seconds per step that differ between
the seeds of one batch size by more than a factor TIME_SPREAD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bsstudy.analysis.report.runs import Sweep
from bsstudy.analysis.report.uncertainty import summarize

TIME_SPREAD = 1.25  # seconds per optimizer step that differ by more than this (max/min) between seeds: noisy timings
CLOCKS = {  # budget -> (metrics.csv column, unit)
    "equal epochs": ("epoch", "epochs"),
    "equal steps": ("optimizer_steps", "steps"),
    "equal training time": ("train_time_s", "s of training"),
}
METRICS = ["test_acc", "val_acc", "train_loss"]
READ_AT = {"epoch": "read_epoch", "optimizer_steps": "read_steps", "train_time_s": "read_time_s"}
COLUMNS = ["budget", "budget_value", "budget_unit", "variant", "batch_size", "comparable", "n"]


def describe(value: float, unit: str) -> str:
    """ "30 epochs", "1770 steps", "95.3 s of training"."""
    return f"{value:.4g} {unit}" if unit.startswith("s ") else f"{value:,.0f} {unit}"


def final_epochs(runs: pd.DataFrame) -> str:
    """The budget of "final" numbers: "30 epochs" when every run completed as many, else
    "final epoch (2-30 epochs)"."""
    done = pd.to_numeric(runs.epochs_completed).dropna()
    if done.empty:
        return "final epoch"
    low, high = int(done.min()), int(done.max())
    return f"{low} epochs" if low == high else f"final epoch ({low}-{high} epochs)"


@dataclass
class Comparison:
    """The runs of one variant read at one budget: `readings` has one row per comparable run (its metrics at
    its read point); `excluded[B]` says why batch size B is not comparable at this budget."""

    budget: str
    value: float
    unit: str
    variant: str
    readings: pd.DataFrame
    excluded: dict[float, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return describe(self.value, self.unit)

    @property
    def batch_sizes(self) -> list[float]:
        return sorted(self.readings.batch_size.unique())


LOG_CLOCKS = ("optimizer_steps",)  # interpolated linearly in log(clock); the others linearly in the clock
CLOCK_COLUMNS = ("epoch", "optimizer_steps", "train_time_s")  # interpolated linearly in the clock, like the clock


def read_at(run_epochs: pd.DataFrame, clock: str, budget: float) -> pd.Series | None:
    """The run's metrics at exactly `budget`: its evaluation there, else the interpolation between the two
    evaluations that bracket it (linear in log(clock) for the steps, in the clock for time and epochs; the
    clock columns linearly in the clock), `clock` = budget; None where no pair brackets it or the lower one
    is the untrained evaluation (clock 0)."""
    ordered = run_epochs.sort_values(clock, kind="stable")
    exact = ordered[ordered[clock] == budget]
    if len(exact):
        return exact.iloc[-1]
    before, after = ordered[ordered[clock] < budget], ordered[ordered[clock] > budget]
    if not len(before) or not len(after) or not before[clock].iloc[-1] > 0:
        return None
    low, high = before.iloc[-1], after.iloc[0]
    x0, x1 = float(low[clock]), float(high[clock])
    linear = (budget - x0) / (x1 - x0)
    weight = math.log(budget / x0) / math.log(x1 / x0) if clock in LOG_CLOCKS else linear
    read = low.copy()
    for column in ordered.select_dtypes("number").columns:
        w = linear if column in CLOCK_COLUMNS else weight
        read[column] = float(low[column]) + w * (float(high[column]) - float(low[column]))
    read[clock] = budget
    return read


def why_not_comparable(run_epochs: pd.DataFrame, clock: str, budget: float) -> str:
    """ "its evaluations bracketing 1,770 are at 0 (untrained) and 30,000 (once per epoch): no interpolation from
    the untrained point"."""
    values = np.sort(run_epochs[clock].to_numpy(dtype=float))
    below, above = values[values < budget], values[values > budget]
    if not len(above) or not len(below):
        return f"no pair of its evaluations brackets {budget:,.4g}"
    return (
        f"its evaluations bracketing {budget:,.4g} are at {below[-1]:,.4g}"
        + (" (untrained)" if below[-1] == 0 else "")
        + f" and {above[0]:,.4g} (once per epoch): no interpolation from the untrained point"
    )


def timing_noise(sweep: Sweep, runs: pd.DataFrame) -> str:
    """Why the training times of `runs` are not comparable, or "": runs that trained several at a time
    (summary.json launcher.jobs_at_a_time > 1) or in packs (packed.size > 1) shared the machine; else seconds
    per optimizer step (final train_time_s / optimizer_steps) that differ by more than a factor TIME_SPREAD
    between the runs of one batch size."""
    jobs = [((sweep.summaries.get(r) or {}).get("launcher") or {}).get("jobs_at_a_time") or 1 for r in runs.run]
    shared = sorted({int(j) for j in jobs if isinstance(j, (int, float)) and j > 1})
    if shared:
        at_once = "/".join(str(j) for j in shared)
        return f"runs trained {at_once} at a time on one machine (summary.json launcher.jobs_at_a_time)"
    if "pack_size" in runs and (pd.to_numeric(runs.pack_size).fillna(1) > 1).any():
        return "runs trained in packs (hydra/launcher=packed): a packed run's time is its pack's"
    per_step = pd.to_numeric(runs.train_time_s) / pd.to_numeric(runs.optimizer_steps)
    per_step = per_step.where(np.isfinite(per_step) & (per_step > 0))
    spread = per_step.groupby(runs.batch_size).agg(lambda v: v.max() / v.min() if v.notna().sum() >= 2 else 1.0)
    noisy = spread[spread > TIME_SPREAD]
    if noisy.empty:
        return ""
    worst = noisy.idxmax()
    return (
        f"seconds per step differ between seeds by up to x{noisy[worst]:.3g} (B={float(worst):g}; "
        f"TIME_SPREAD = {TIME_SPREAD})"
    )


def compare_at_budget(epochs: pd.DataFrame, clock: str) -> tuple[float, pd.DataFrame, dict[float, str], float]:
    """(X, readings, excluded, B that set X) for the runs in `epochs` (metrics.csv rows of one variant):
    X = min over runs of the largest `clock` each reached; a batch size with a run that cannot be read at X
    (read_at) is excluded, with the reason."""
    reached = epochs.groupby("run")[clock].max()
    budget = float(reached.min())
    setter = float(epochs[epochs.run == reached.idxmin()].batch_size.iloc[0])
    rows, excluded = [], {}
    for (batch_size, _), e in epochs.groupby(["batch_size", "run"], sort=True):
        read = read_at(e, clock, budget)
        if read is None:
            excluded.setdefault(float(batch_size), why_not_comparable(e, clock, budget))
        else:
            rows.append(read)
    readings = pd.DataFrame(rows, columns=epochs.columns)
    readings = readings[~readings.batch_size.astype(float).isin(excluded)]
    return budget, readings, excluded, setter


def nested_comparisons(epochs: pd.DataFrame, budget: str, variant: str) -> list[Comparison]:
    """The comparison at `budget` over all batch sizes; while some are not comparable, again without the
    batch size that set the budget (module docstring). Empty when the clock was not recorded."""
    clock, unit = CLOCKS[budget]
    if clock not in epochs or epochs[clock].isna().all():
        return []
    found, remaining = [], epochs[epochs[clock].notna()]
    while remaining.batch_size.nunique() >= 2:
        value, readings, excluded, setter = compare_at_budget(remaining, clock)
        if value <= 0:  # a run that never trained: no budget to compare at
            break
        found.append(Comparison(budget, value, unit, variant, readings, excluded))
        if not excluded:
            break
        remaining = remaining[remaining.batch_size != setter]
    return found


def comparisons(sweep: Sweep, runs: pd.DataFrame | None = None) -> list[Comparison]:
    """Every budget's nested comparisons, per variant, over the completed runs (or the given runs)."""
    runs = sweep.completed if runs is None else runs
    epochs = sweep.epochs[sweep.epochs.run.isin(runs.run)]
    return [
        c
        for variant, e in epochs.groupby("variant", sort=True)
        for budget in CLOCKS
        for c in nested_comparisons(e, budget, variant)
    ]


def budget_table(found: list[Comparison]) -> pd.DataFrame:
    """One row per budget, variant and batch size: mean [95% interval] over seeds of test_acc (val_acc when
    recorded) and train_loss at the budget, the mean read point, or comparable = "no: <why>"."""
    frames = []
    for c in found:
        metrics = [m for m in METRICS if m in c.readings and c.readings[m].notna().any()]
        table = summarize(c.readings, ["batch_size"], metrics)
        for clock, name in READ_AT.items():
            if clock in c.readings:
                table[name] = table.batch_size.map(c.readings.groupby("batch_size")[clock].mean())
        table["comparable"] = "yes" if len(table) >= 2 else "alone: no other batch size comparable at this budget"
        missing = pd.DataFrame(
            {"batch_size": list(c.excluded), "comparable": [f"no: {why}" for why in c.excluded.values()], "n": 0}
        )
        table = pd.concat([table, missing], ignore_index=True) if len(missing) else table
        frames.append(table.assign(budget=c.budget, budget_value=c.value, budget_unit=c.unit, variant=c.variant))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    return table[COLUMNS + [c for c in table.columns if c not in COLUMNS]]
