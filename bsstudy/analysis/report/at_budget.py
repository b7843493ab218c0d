"""Reading runs at a stated budget: equal epochs, equal optimizer steps, equal training time.

A comparison at the final epoch gives B=2 500 times the updates of B=1024; one at equal steps gives B=1024
500 times the samples. Each budget answers a different question, so every comparison here names its budget:

- equal epochs: every run read at E, the last epoch all compared runs completed;
- equal steps: X = the fewest optimizer steps any compared run reached; each run read at its last
  evaluation at or before X (or its first after X, within READ_TOLERANCE: read_point);
- equal training time: the same with the cumulative training time (train_time_s, evaluation excluded).

metrics.csv has evaluations only at epoch ends, so a run whose last evaluation at or before X lies below
X / READ_TOLERANCE, and whose first evaluation after X lies beyond X * READ_TOLERANCE (B=2 on Fashion-MNIST:
30,000 steps per epoch against B=1024's 1,770 in 30 epochs, so its only evaluation before the budget is the
untrained step 0) is not comparable at that budget: it is named, never read at a point it did not reach.
The comparison is then repeated without the batch size that set the budget, at the larger budget the rest
share, until every batch size was compared or fewer than two are left (nested budgets: B=64, 256, 1024 at
1,770 steps; B=64 and 256 at 7,050; B=2 and 64 at 28,140).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bsstudy.analysis.report.runs import Sweep
from bsstudy.analysis.report.uncertainty import summarize

READ_TOLERANCE = 1.25  # a run is read at budget X only if its last evaluation at or before X is >= X / this
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


def read_point(run_epochs: pd.DataFrame, clock: str, budget: float) -> pd.Series | None:
    """The run's metrics.csv row to read at `budget`: its last evaluation at or before it if that lies within
    a factor READ_TOLERANCE below, else its first evaluation after it if that lies within READ_TOLERANCE above
    (training time varies between seeds, so the run that set the budget's own seeds end just past it);
    None if neither does."""
    ordered = run_epochs.sort_values(clock)
    before, after = ordered[ordered[clock] <= budget], ordered[ordered[clock] > budget]
    if len(before) and before[clock].iloc[-1] * READ_TOLERANCE >= budget:
        return before.iloc[-1]
    if len(after) and after[clock].iloc[0] <= budget * READ_TOLERANCE:
        return after.iloc[0]
    return None


def why_not_comparable(run_epochs: pd.DataFrame, clock: str, budget: float) -> str:
    """ "its evaluations nearest 1,770 are at 0 (untrained) and 30,000 (once per epoch), not within a factor 1.25"."""
    values = np.sort(run_epochs[clock].to_numpy(dtype=float))
    below, above = values[values <= budget], values[values > budget]
    near = [f"{below[-1]:,.4g}" + (" (untrained)" if below[-1] == 0 else "")] if len(below) else []
    near += [f"{above[0]:,.4g}"] if len(above) else []
    return (
        f"its evaluations nearest {budget:,.4g} are at {' and '.join(near)} (once per epoch), "
        f"not within a factor {READ_TOLERANCE}"
    )


def compare_at_budget(epochs: pd.DataFrame, clock: str) -> tuple[float, pd.DataFrame, dict[float, str], float]:
    """(X, readings, excluded, B that set X) for the runs in `epochs` (metrics.csv rows of one variant):
    X = min over runs of the largest `clock` each reached; a batch size with a run that has no read point
    (read_point) is excluded, with the reason."""
    reached = epochs.groupby("run")[clock].max()
    budget = float(reached.min())
    setter = float(epochs[epochs.run == reached.idxmin()].batch_size.iloc[0])
    rows, excluded = [], {}
    for (batch_size, _), e in epochs.groupby(["batch_size", "run"], sort=True):
        read = read_point(e, clock, budget)
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
