"""Mean and 95% confidence interval across seeds, each interval inside the range its quantity can take.

With n seeds x_1..x_n of one condition: mean m = sum x_i / n, and a Student-t interval computed on the
quantity's own scale y = g(x) and transformed back: g^-1(y_bar -+ t_{0.975, n-1} s_y / sqrt(n)), s_y the sample
standard deviation of the y_i (n - 1 in the denominator). The scale is the quantity's kind:

    fraction   (accuracies, rates: in [0, 1])           g = logit, so the interval lies in (0, 1)
    positive   (times, steps, losses, norms, B_simple)   g = log, so the interval lies above 0
    correlation (rank correlations: in [-1, 1])         g = artanh (Fisher z), so the interval lies in (-1, 1)
    unbounded  (slopes, differences, gaps, exponents)    g = identity: m -+ t s / sqrt(n), symmetric

so with two or three seeds an accuracy's interval is no longer [0.49, 1.11] nor a time's [-1.4, 7.0]. Where a
value lies on the range's edge (an accuracy of 1, a time of 0) g is infinite there: the interval is then the
plain t-interval, cut at the edge; a value outside the range (a "positive" column that went negative) gives the
plain interval uncut. The mean shown is the plain mean either way. With one seed there is no interval
(NaN): the report then says that differences smaller than the seed-to-seed spread cannot be read from it.
A table's kind per column follows its name (quantity_kind).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import special, stats

CONFIDENCE = 0.95
FRACTION, POSITIVE, UNBOUNDED, CORRELATION = "fraction", "positive", "unbounded", "correlation"
RANGES = {FRACTION: (0.0, 1.0), POSITIVE: (0.0, math.inf), UNBOUNDED: (-math.inf, math.inf), CORRELATION: (-1.0, 1.0)}
SCALES = {FRACTION: (special.logit, special.expit), POSITIVE: (np.log, np.exp), CORRELATION: (np.arctanh, np.tanh)}
FRACTION_NAME = re.compile(r"(^|_)(acc|rate|fraction)(_|$)")
POSITIVE_NAME = re.compile(
    r"(^|_)(time|s|steps|samples|epochs|loss|norm|distance|sharpness|noise_scale|b_simple|b_crit)(_|$)"
)
INTERVAL_METHOD = (
    "Each interval is a t-interval on the quantity's own scale, transformed back, so it stays in the quantity's "
    "range: accuracies and other fractions on the logit scale, times, steps, losses and norms on the log scale, "
    "slopes and differences as they are (where a value lies on the range's edge, an accuracy of 1 or a time of 0, "
    "the plain t-interval cut at the edge)."
)


def quantity_kind(column: str) -> str:
    """The kind of a table column from its name: *_acc*, *_rate* -> fraction; *_time*, *_s, steps, samples,
    epochs, loss, norm, distance, sharpness, noise_scale, b_simple -> positive; anything else -> unbounded."""
    if FRACTION_NAME.search(column):
        return FRACTION
    return POSITIVE if POSITIVE_NAME.search(column) else UNBOUNDED


def mean_ci(values, kind: str) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values, the interval on the scale of `kind` (FRACTION, POSITIVE,
    CORRELATION or UNBOUNDED; module docstring); low = high = NaN with fewer than two values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    edge_low, edge_high = RANGES[kind]
    if kind in SCALES and ((x > edge_low) & (x < edge_high)).all():
        if x.min() == x.max():  # no spread: the mean itself, not its round trip through the scale
            return mean, mean, mean, n
        forward, back = SCALES[kind]
        y = forward(x)
        half = t * float(y.std(ddof=1)) / math.sqrt(n)
        return mean, float(back(y.mean() - half)), float(back(y.mean() + half)), n
    half = t * float(x.std(ddof=1)) / math.sqrt(n)
    low, high = mean - half, mean + half
    if ((x >= edge_low) & (x <= edge_high)).all():  # on the edge: cut there (unbounded: nothing to cut)
        low, high = max(low, edge_low), min(high, edge_high)
    return mean, low, high, n


def side_of_zero(low: float, high: float) -> int:
    """+1 if the interval [low, high] lies wholly above 0, -1 if wholly below, 0 if it holds 0 or is undefined."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0


def summarize(frame: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """One row per group of `by`: n (runs with a value of the first column) and, per column c,
    c_mean, c_ci_low, c_ci_high, the interval on the scale of c's kind (quantity_kind(c)). Groups sorted by `by`."""
    names = [*by, "n", *(f"{c}_{s}" for c in columns for s in ("mean", "ci_low", "ci_high"))]
    if frame.empty:
        return pd.DataFrame(columns=names)
    kinds = {c: quantity_kind(c) for c in columns}
    cells = frame.groupby(by, sort=True, dropna=False)[columns].agg(
        lambda values: mean_ci(values.tolist(), kinds[values.name])
    )
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
            f"whose intervals overlap is not resolved by this sweep. {INTERVAL_METHOD}"
        )
    return (
        "One seed per condition: no interval can be given, and differences smaller than the seed-to-seed "
        "spread (unknown here; run e.g. seed=0,1,2) cannot be read from this report."
    )


def count_text(fewest: int, most: int) -> str:
    """ "3" or "2-3": a count that may differ between conditions."""
    return f"{fewest}" if fewest == most else f"{fewest}-{most}"


def selected_seed_caveat(selected: tuple[int, int] | None, others: tuple[int, int] | None, condition: str) -> str:
    """seed_caveat for a study that selects: `selected` = (fewest, most) seeds per selected `condition` (e.g.
    "(B, lr)"), None when nothing was selected; `others` the same for the conditions that only took part in the
    selection (the grid's other lrs), None when there are none.

    >>> selected_seed_caveat((3, 3), (1, 1), "(B, lr)")[:74]
    "Means over 3 seeds per selected (B, lr), 95% t-intervals; the grid's other"
    """
    rest = ""
    if others:
        rest = f"; the grid's other lrs: {count_text(*others)} seed{'s' * (others[1] > 1)} each"
        rest += " (they only select the lr: no interval)" if others[1] < 2 else ""
    if selected is None:
        grid = f"; the grid: {count_text(*others)} seed{'s' * (others[1] > 1)} per {condition}" if others else ""
        return (
            f"Nothing selected (no batch size reached the target){grid}: no interval can be given, and differences "
            "smaller than the seed-to-seed spread cannot be read from this report."
        )
    if selected[0] >= 2:
        return (
            f"Means over {count_text(*selected)} seeds per selected {condition}, 95% t-intervals{rest}. A difference "
            f"whose intervals overlap is not resolved by this sweep. {INTERVAL_METHOD}"
        )
    return (
        f"{count_text(*selected)} seed(s) per selected {condition}{rest}: where a condition has one seed no interval "
        "can be given, and differences smaller than the seed-to-seed spread cannot be read (run more seeds, e.g. "
        "hydra.sweeper.seeds=[0,1,2])."
    )
