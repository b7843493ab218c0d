"""Mean and 95% confidence interval across seeds.

With n seeds x_1..x_n of one condition: mean m = sum x_i / n, sample standard deviation s (n - 1 in the
denominator) and the Student-t interval m +- t_{0.975, n-1} s / sqrt(n). With one seed there is no
interval (NaN): the report then says that differences smaller than the seed-to-seed spread cannot be
read from it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def mean_ci(values) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values; low = high = NaN with fewer than two values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def side_of_zero(low: float, high: float) -> int:
    """+1 if the interval [low, high] lies wholly above 0, -1 if wholly below, 0 if it holds 0 or is undefined."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0


def summarize(frame: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """One row per group of `by`: n (runs with a value of the first column) and, per column c,
    c_mean, c_ci_low, c_ci_high. Groups sorted by `by`."""
    names = [*by, "n", *(f"{c}_{s}" for c in columns for s in ("mean", "ci_low", "ci_high"))]
    if frame.empty:
        return pd.DataFrame(columns=names)
    cells = frame.groupby(by, sort=True, dropna=False)[columns].agg(lambda values: mean_ci(values.tolist()))
    out = cells.index.to_frame(index=False)
    for i, column in enumerate(columns):
        mean, low, high, n = zip(*cells[column], strict=True)
        if i == 0:
            out["n"] = list(n)
        out[f"{column}_mean"], out[f"{column}_ci_low"], out[f"{column}_ci_high"] = mean, low, high
    return out[names]


def seed_caveat(seeds_per_condition: int) -> str:
    """What the reader may conclude given the number of seeds behind each mean."""
    if seeds_per_condition >= 2:
        return (
            f"Means over {seeds_per_condition} seeds with 95% t-intervals (bands in the plots); a difference "
            "whose intervals overlap is not resolved by this sweep."
        )
    return (
        "One seed per condition: no interval can be given, and differences smaller than the seed-to-seed "
        "spread (unknown here; run e.g. seed=0,1,2) cannot be read from this report."
    )
