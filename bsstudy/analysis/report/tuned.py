"""The tuned study's analysis (experiment=tuned): steps to the target validation accuracy against B, the fit
S(B) = S_min (1 + B_crit / B) (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", eq. 2.11)
with a bootstrap interval for B_crit, B_simple at the target crossing, the best lr against the linear and
square-root rules, and the recommendation (the report's first section and `python -m bsstudy.analysis.recommend`).

Inputs, per run folder: summary.json (`target`: bsstudy/train/target.py; batch_size, lr, momentum, seed, status) and
probes/noise_scale/measurements.csv. The study's grid seed is seeds[0] of `<sweep>/tuned_selection.json`
(else the smallest seed); the best lr per B is chosen on the grid seed's runs with bsstudy/train/tuned.py's rule.

The fit: least squares in log space, log S = log S_min + log(1 + B_crit / B), over the per-B mean steps of the
selected lr's seeds (scipy.optimize.curve_fit on (log S_min, log B_crit), so both stay positive). Interval:
a percentile bootstrap over seeds: each resample draws, per B, as many runs as it has, with replacement, from
its seeds, and refits (the 2.5 and 97.5 percentiles of B_crit over BOOTSTRAP_SAMPLES resamples).
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy.optimize import OptimizeWarning, curve_fit

from bsstudy.analysis.report.document import Figure, Section, Table
from bsstudy.analysis.report.figures import batch_axis, batch_colours, errorbar, legend, log_scale, new_figure, to_png
from bsstudy.analysis.report.uncertainty import count_text, mean_ci, quantity_kind
from bsstudy.runfolder import RunFolder, run_folders
from bsstudy.streams import rng
from bsstudy.train.tuned import Candidate, best_attempt, candidate_from_summary, select_best, steps_to_target

BOOTSTRAP_SAMPLES = 1000
MIN_SEEDS = 2  # seeds per B below which no interval, and so no recommendation, can be given
MIN_BATCH_SIZES = 3  # batch sizes with a selected lr needed to fit two parameters and see the bend


# --- the table ---------------------------------------------------------------------------------------


def b_simple_at(run_dir: Path, steps: float | None) -> float:
    """B_simple (the smoothed noise_scale column) of the last measurement at or before `steps` (the target
    crossing), else the first one after it; NaN without measurements."""
    path = RunFolder(run_dir).probe_dir("noise_scale") / "measurements.csv"
    if steps is None or not path.exists():
        return math.nan
    rows = pd.read_csv(path)
    if rows.empty or "noise_scale" not in rows:
        return math.nan
    before = rows[rows.optimizer_steps <= steps]
    return float((before.iloc[-1] if len(before) else rows.iloc[0]).noise_scale)


def run_row(run_dir: Path, summary: dict) -> dict:
    target = summary.get("target") or {}
    candidate = candidate_from_summary(summary)
    return {
        "run": run_dir.name,
        "status": summary.get("status"),
        "batch_size": candidate.batch_size,
        "lr": candidate.lr,
        "momentum": candidate.momentum,
        "seed": summary.get("seed"),
        "reached": candidate.reached,
        "steps": steps_to_target(target) if candidate.reached else math.nan,  # interpolated (target.py)
        "check_steps": target.get("optimizer_steps") if candidate.reached else math.nan,
        "previous_check_steps": target.get("previous_check_steps") if candidate.reached else math.nan,
        "epochs": target.get("epochs") if candidate.reached else math.nan,
        "train_time_s": target.get("train_time_s") if candidate.reached else math.nan,
        "val_acc": target.get("val_acc") if candidate.reached else math.nan,
        "test_acc": target.get("test_acc") if candidate.reached else math.nan,
        "val_acc_target": target.get("val_acc_target"),
        "b_simple": b_simple_at(run_dir, steps_to_target(target)) if candidate.reached else math.nan,
    }


def tuned_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run of the study that has a summary with a target block (see run_row's columns)."""
    rows = []
    for folder in run_folders(Path(sweep_dir)):
        summary = RunFolder(folder).summary(strict=False)
        if summary is not None and summary.get("target") is not None and "batch_size" in summary:
            rows.append(run_row(folder, summary))
    return pd.DataFrame(rows)


def grid_seed(sweep_dir: str | Path, runs: pd.DataFrame) -> int:
    """The seed that ran the lr grid: seeds[0] of tuned_selection.json, else the smallest seed."""
    path = Path(sweep_dir) / "tuned_selection.json"
    try:
        return int(json.loads(path.read_text())["seeds"][0])
    except (OSError, ValueError, KeyError, IndexError):
        return int(runs.seed.min())


def grid_candidates(runs: pd.DataFrame, seed: int) -> list[Candidate]:
    grid = runs[runs.seed == seed]
    return [
        Candidate(int(r.batch_size), float(r.lr), float(r.momentum), bool(r.reached),
                  None if not r.reached else float(r.steps), None if not r.reached else float(r.val_acc))
        for r in grid.itertuples()
    ]  # fmt: skip


def edge_of_grid(best_lr: float, grid_lrs) -> str | None:
    """'lowest' or 'highest' when the best lr is at that end of its grid (the optimum may lie beyond it),
    else None. A grid of one lr is all edge: 'lowest and highest'.

    >>> edge_of_grid(0.1, [0.05, 0.1, 0.2]), edge_of_grid(0.2, [0.05, 0.1, 0.2])
    (None, 'highest')
    """
    lrs = sorted(grid_lrs)
    if len(lrs) == 1:
        return "lowest and highest"
    if math.isclose(best_lr, lrs[0]):
        return "lowest"
    if math.isclose(best_lr, lrs[-1]):
        return "highest"
    return None


def per_batch_table(runs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per B: the selected lr (and momentum), its grid edge flag, and over the selected lr's seeds
    the mean and 95% t-interval of steps, epochs, train time and test accuracy to target, and B_simple."""
    candidates = grid_candidates(runs, seed)
    rows = []
    for b in sorted(runs.batch_size.unique()):
        mine = [c for c in candidates if c.batch_size == b]
        best = select_best(mine)
        row = {"batch_size": int(b), "grid_lrs": len(mine), "best_lr": math.nan, "momentum": math.nan, "edge": ""}
        if best is None:
            reached_any = runs[(runs.batch_size == b) & runs.reached]
            row["edge"] = "not reached" if reached_any.empty else "not reached by the grid seed"
            rows.append(row)
            continue
        edge = edge_of_grid(best.lr, [c.lr for c in mine if c.momentum == best.momentum])
        chosen = runs[(runs.batch_size == b) & np.isclose(runs.lr, best.lr) & np.isclose(runs.momentum, best.momentum)]
        row |= {"best_lr": best.lr, "momentum": best.momentum, "edge": f"at the {edge} lr" if edge else ""}
        row["seeds"] = int(chosen.seed.nunique())
        row["seeds_reached"] = int(chosen.reached.sum())
        for column in ("steps", "epochs", "train_time_s", "test_acc", "b_simple"):
            mean, low, high, _ = mean_ci(chosen[column].tolist(), quantity_kind(column))
            row |= {f"{column}_mean": mean, f"{column}_ci_low": low, f"{column}_ci_high": high}
        rows.append(row)
    return pd.DataFrame(rows)


def selected_runs(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The runs at each B's selected lr and momentum (all seeds)."""
    keep = np.zeros(len(runs), dtype=bool)
    for r in table.dropna(subset=["best_lr"]).itertuples():
        keep |= (
            (runs.batch_size == r.batch_size).to_numpy()
            & np.isclose(runs.lr, r.best_lr)
            & np.isclose(runs.momentum, r.momentum)
        )
    return runs[keep]


def seed_counts(sweep_dir: str | Path) -> tuple[tuple[int, int] | None, tuple[int, int] | None, str] | None:
    """The seeds behind the report's comparisons, for its header: ((fewest, most) seeds per selected condition
    or None when no B has a selection, the same for the grid's other conditions or None, the condition's name:
    "(B, lr)", or "(B, lr, momentum)" when momentum varies); None for a sweep that is no tuned study."""
    runs = tuned_runs(sweep_dir)
    if runs.empty:
        return None
    key = ["batch_size", "lr", "momentum"]
    chosen = selected_runs(runs, per_batch_table(runs, grid_seed(sweep_dir, runs)))
    rest = runs.drop(index=chosen.index)

    def fewest_most(frame):
        counts = frame.groupby(key).seed.nunique()
        return (int(counts.min()), int(counts.max())) if len(counts) else None

    condition = "(B, lr, momentum)" if runs.momentum.nunique() > 1 else "(B, lr)"
    return fewest_most(chosen), fewest_most(rest), condition


# --- the fit S(B) = S_min (1 + B_crit / B) -----------------------------------------------------------


def log_steps_model(batch_size, log_s_min, log_b_crit):
    """log S(B) = log S_min + log(1 + B_crit / B) (McCandlish et al. 2018, eq. 2.11)."""
    return log_s_min + np.log1p(np.exp(log_b_crit) / np.asarray(batch_size, dtype=float))


def fit_steps(batch_sizes, steps) -> tuple[float, float]:
    """(S_min, B_crit) of S(B) = S_min (1 + B_crit / B), least squares on log S; NaNs when it fails."""
    b, s = np.asarray(batch_sizes, dtype=float), np.asarray(steps, dtype=float)
    ok = np.isfinite(s) & (s > 0)
    if len(np.unique(b[ok])) < 2:
        return math.nan, math.nan
    start = (math.log(s[ok].min()), math.log(np.median(b[ok])))
    try:
        with warnings.catch_warnings():  # an exact fit (two batch sizes) has no covariance: not needed here
            warnings.simplefilter("ignore", OptimizeWarning)
            (log_s_min, log_b_crit), _ = curve_fit(log_steps_model, b[ok], np.log(s[ok]), p0=start, maxfev=10000)
    except (RuntimeError, ValueError):
        return math.nan, math.nan
    return float(math.exp(log_s_min)), float(math.exp(min(log_b_crit, 700.0)))


@dataclass(frozen=True)
class CriticalBatch:
    """The fit and its bootstrap interval; `why_not` says why B_crit cannot be told (empty when it can)."""

    s_min: float
    b_crit: float
    low: float
    high: float
    batch_sizes: tuple[int, ...]
    seeds_per_b: int
    why_not: str


def bootstrap_b_crit(steps_by_b: dict[int, list[float]], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """(2.5, 97.5) percentiles of B_crit refitted on resamples of the seeds of each B (with replacement).
    A loop, not scipy.stats.bootstrap: that draws all resamples of one B before the next, this draws per resample
    one B after another from the same stream, so scipy would resample other seeds and move the interval
    (e.g. [300.70, 312.17] -> [300.79, 312.08] on tests/test_tuned.py's constructed study)."""
    generator = rng(seed, "tuned_bootstrap")
    values = []
    b = sorted(steps_by_b)
    for _ in range(samples):
        means = [np.mean(generator.choice(steps_by_b[k], size=len(steps_by_b[k]), replace=True)) for k in b]
        values.append(fit_steps(b, means)[1])
    values = np.asarray(values)
    if not np.isfinite(values).all():
        return math.nan, math.inf  # some resamples have no finite fit: the interval is open
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def critical_batch(selected: pd.DataFrame) -> CriticalBatch:
    """B_crit from the selected lrs' runs, with the reason it cannot be told when the data do not support it:
    fewer than MIN_BATCH_SIZES batch sizes reached the target, fewer than MIN_SEEDS seeds reached it at some
    B, or the interval is not inside the measured batch sizes (the bend was not seen)."""
    reached = selected[selected.reached]
    steps_by_b = {int(b): g.steps.astype(float).tolist() for b, g in reached.groupby("batch_size")}
    batch_sizes = tuple(sorted(steps_by_b))
    seeds = min((len(v) for v in steps_by_b.values()), default=0)
    means = [float(np.mean(steps_by_b[b])) for b in batch_sizes]
    s_min, b_crit = fit_steps(batch_sizes, means) if len(batch_sizes) >= 2 else (math.nan, math.nan)
    if len(batch_sizes) < MIN_BATCH_SIZES:
        why = f"only {len(batch_sizes)} batch size(s) reached the target; the fit needs {MIN_BATCH_SIZES}"
        return CriticalBatch(s_min, b_crit, math.nan, math.nan, batch_sizes, seeds, why)
    if seeds < MIN_SEEDS:
        why = f"too few seeds: {seeds} at some batch size reached the target; an interval needs {MIN_SEEDS}"
        return CriticalBatch(s_min, b_crit, math.nan, math.nan, batch_sizes, seeds, why)
    low, high = bootstrap_b_crit(steps_by_b)
    why = ""
    if not (math.isfinite(b_crit) and math.isfinite(low) and math.isfinite(high)):
        why = "the fit fails on some resamples: the interval for B_crit is unbounded"
    elif low < batch_sizes[0] or high > batch_sizes[-1]:
        why = (
            f"the interval [{low:.3g}, {high:.3g}] reaches beyond the measured batch sizes "
            f"[{batch_sizes[0]}, {batch_sizes[-1]}]: the bend of the curve is not pinned down by the data"
        )
    return CriticalBatch(s_min, b_crit, low, high, batch_sizes, seeds, why)


# --- the recommendation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One line of the recommendation: the question, the answer (or "cannot tell: <why>") and its data; `label`
    the question in a few words, `next_step` the overrides that would decide a "cannot tell" (empty otherwise)."""

    question: str
    answer: str
    rests_on: str
    label: str = ""
    next_step: str = ""

    @property
    def told(self) -> bool:
        return not self.answer.startswith("cannot tell")


@dataclass(frozen=True)
class Settings:
    """What the study ran with, for the next steps' overrides: hydra.sweeper.* and trainer.max_epochs of its
    multirun.yaml (else what its runs show), and the best validation accuracy any run saw."""

    batch_sizes: tuple[int, ...] = ()
    lr_factors: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    max_epochs: int | None = None
    target: float | None = None
    best_val_acc: float | None = None


def study_settings(sweep_dir: str | Path, runs: pd.DataFrame) -> Settings:
    """Settings of the study in `sweep_dir` (multirun.yaml, written by the sweeper), with the runs' own batch sizes
    and seeds where it cannot be read."""
    config = None
    with contextlib.suppress(Exception):  # missing or unreadable: the runs say what they can
        config = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")

    def select(key, default):
        value = OmegaConf.select(config, key, default=None) if config is not None else None
        return default if value is None else value

    best = best_attempt(
        [candidate_from_summary(s) for f in run_folders(Path(sweep_dir))
         if (s := RunFolder(f).summary(strict=False)) is not None and "batch_size" in s]
    )  # fmt: skip
    targets = runs.val_acc_target.dropna().unique() if "val_acc_target" in runs else []
    return Settings(
        batch_sizes=tuple(int(b) for b in select("hydra.sweeper.batch_sizes", sorted(runs.batch_size.unique()))),
        lr_factors=tuple(float(f) for f in select("hydra.sweeper.lr_factors", [])),
        seeds=tuple(int(s) for s in select("hydra.sweeper.seeds", sorted(runs.seed.dropna().unique())) or [0]),
        max_epochs=select("trainer.max_epochs", None),
        target=float(targets[0]) if len(targets) else None,
        best_val_acc=None if best is None else best.best_val_acc,
    )


def number_list(values) -> str:
    """[0.125,0.25,1]: a list as an override writes it (no spaces, so the shell keeps it one word)."""
    return "[" + ",".join(f"{v:g}" for v in values) + "]"


def more_seeds(settings: Settings) -> str:
    """hydra.sweeper.seeds with seeds added up to 5 (or 2 more when there are already 5)."""
    seeds, n = list(settings.seeds), max(5, len(settings.seeds) + 2)
    extra = (s for s in range(10**6) if s not in seeds)
    return f"hydra.sweeper.seeds={number_list(seeds + [next(extra) for _ in range(n - len(seeds))])}"


def wider_grid(settings: Settings, edges: str) -> str:
    """hydra.sweeper.lr_factors with one more factor beyond each edge named in `edges` ("lowest", "highest")."""
    factors = sorted(settings.lr_factors)
    if not factors:
        return f"hydra.sweeper.lr_factors=[...] reaching beyond the grid's {edges} lr"
    ratio = factors[1] / factors[0] if len(factors) > 1 else 2.0
    lower = [factors[0] / ratio] if "lowest" in edges else []
    higher = [factors[-1] * ratio] if "highest" in edges else []
    return f"hydra.sweeper.lr_factors={number_list(lower + factors + higher)}"


def more_batch_sizes(settings: Settings, smaller: bool = False, larger: bool = True) -> str:
    """hydra.sweeper.batch_sizes with one more B, 4x beyond the smallest and/or the largest."""
    sizes = sorted(settings.batch_sizes)
    if not sizes:
        return "hydra.sweeper.batch_sizes=[...] with more batch sizes"
    low = [max(1, sizes[0] // 4)] if smaller and sizes[0] > 1 else []
    return f"hydra.sweeper.batch_sizes={number_list(low + sizes + ([sizes[-1] * 4] if larger else []))}"


def reach_target(settings: Settings) -> str:
    """What makes the target reachable: a lower target (below the best val_acc seen), or a longer budget."""
    if settings.best_val_acc is not None and math.isfinite(settings.best_val_acc):
        lower = f"trainer.stop_at.val_acc={math.floor(settings.best_val_acc * 20) / 20:g}"
    else:
        lower = "a lower trainer.stop_at.val_acc"
    longer = (
        f"trainer.max_epochs={2 * int(settings.max_epochs)}" if settings.max_epochs else "a larger trainer.max_epochs"
    )
    return f"{lower} (in a new hydra.sweep.dir), or {longer}"


def edges_of(edge_texts) -> str:
    """'lowest', 'highest' or 'lowest and highest' from table.edge texts ("at the lowest lr", ...)."""
    named = [e for e in ("lowest", "highest") if any(e in t for t in edge_texts)]
    return " and ".join(named) or "lowest and highest"


def interval_text(mean: float, low: float, high: float, unit: str = "") -> str:
    return f"{mean:.3g}{unit} [{low:.3g}, {high:.3g}]" if math.isfinite(low) else f"{mean:.3g}{unit} (no interval)"


def largest_useful_batch(
    fit: CriticalBatch, table: pd.DataFrame | None = None, settings: Settings | None = None
) -> Answer:
    """B_crit with its interval; cannot tell when the fit has no bend inside the data or when a fitted B's best lr
    is at the edge of its grid (its steps to target may be those of a mistuned lr, which moves the bend)."""
    settings = settings or Settings(batch_sizes=tuple(fit.batch_sizes))
    question = "Largest batch size before diminishing returns (B_crit of S(B) = S_min (1 + B_crit/B))"
    label = "Largest useful B (B_crit)"
    rests_on = (
        f"steps to target at the selected lr of B = {', '.join(map(str, fit.batch_sizes)) or 'none'}, "
        f"{fit.seeds_per_b} seed(s) each; 95% bootstrap interval over seeds"
    )
    estimate = f" (point estimate {fit.b_crit:.3g})" if math.isfinite(fit.b_crit) else ""
    if fit.why_not:
        unreached = table is not None and (table.edge.str.startswith("not reached")).any()
        if fit.why_not.startswith("only"):
            step = reach_target(settings) if unreached else more_batch_sizes(settings)
            return Answer(question, f"cannot tell: {fit.why_not}", rests_on, label, step)
        if fit.why_not.startswith("too few seeds"):
            return Answer(question, f"cannot tell: {fit.why_not}{estimate}", rests_on, label, more_seeds(settings))
        sizes = fit.batch_sizes
        smaller = math.isfinite(fit.low) and bool(sizes) and fit.low < sizes[0]
        larger = not (math.isfinite(fit.high) and bool(sizes) and fit.high <= sizes[-1])
        step = f"{more_batch_sizes(settings, smaller, larger)} {more_seeds(settings)}"
        return Answer(question, f"cannot tell: {fit.why_not}{estimate}", rests_on, label, step)
    if table is not None and len(at_edge := table[table.batch_size.isin(fit.batch_sizes) & (table.edge != "")]):
        named = ", ".join(f"B={int(r.batch_size)} {r.edge}" for r in at_edge.itertuples())
        return Answer(question, f"cannot tell: the fit uses an lr at the edge of its grid ({named}); widen the "
                      f"grid{estimate}", rests_on, label, wider_grid(settings, edges_of(at_edge.edge)))  # fmt: skip
    return Answer(
        question,
        f"B_crit = {interval_text(fit.b_crit, fit.low, fit.high)}: up to about this B, doubling the batch nearly "
        "halves the steps; beyond it, the steps fall by less and samples are wasted",
        rests_on,
        label,
    )


def fastest_batch(table: pd.DataFrame, settings: Settings | None = None) -> tuple[Answer, pd.Series | None]:
    """The B with the least mean training time to target; cannot tell with too few seeds, with an edge optimum,
    or when another B's interval overlaps its (then the tied ones are named)."""
    settings = settings or Settings(batch_sizes=tuple(int(b) for b in table.batch_size))
    question = "Batch size with the least wall time to target on this machine (training time, evaluation excluded)"
    label = "Fastest B (training time to target)"
    rows = table.dropna(subset=["train_time_s_mean"]) if "train_time_s_mean" in table else table.iloc[0:0]
    if rows.empty:
        return Answer(question, "cannot tell: no batch size reached the target", "no run reached it", label,
                      reach_target(settings)), None  # fmt: skip
    best = rows.loc[rows.train_time_s_mean.idxmin()]
    rests_on = (
        f"training time to target at the selected lr of B = {', '.join(str(int(b)) for b in rows.batch_size)}, "
        f"{count_text(int(rows.seeds_reached.min()), int(rows.seeds_reached.max()))} seeds each; 95% t-intervals"
    )
    if best.seeds_reached < MIN_SEEDS:
        return Answer(question, f"cannot tell: too few seeds at B={int(best.batch_size)} ({int(best.seeds_reached)})",
                      rests_on, label, more_seeds(settings)), best  # fmt: skip
    tied = [
        int(r.batch_size)
        for r in rows.itertuples()
        if r.batch_size != best.batch_size and r.train_time_s_ci_low <= best.train_time_s_ci_high
    ]
    time_text = interval_text(best.train_time_s_mean, best.train_time_s_ci_low, best.train_time_s_ci_high, " s")
    if tied:
        return Answer(
            question,
            f"cannot tell: B={int(best.batch_size)} ({time_text}) is fastest on average but its interval overlaps "
            f"that of B = {', '.join(map(str, tied))}",
            rests_on,
            label,
            more_seeds(settings),
        ), best
    if best.edge:
        return Answer(question, f"cannot tell: B={int(best.batch_size)} is fastest ({time_text}) but its best lr "
                      f"is {best.edge} of its grid; widen the grid", rests_on, label,
                      wider_grid(settings, edges_of([best.edge]))), best  # fmt: skip
    return Answer(question, f"B = {int(best.batch_size)}: {time_text} to target", rests_on, label), best


def lr_for(best: pd.Series | None, grid_ratio: float, settings: Settings | None = None) -> Answer:
    """The selected lr of the fastest B; its interval is the grid's resolution (the neighbouring grid points)."""
    settings = settings or Settings()
    question, label = "Learning rate to use with it", "Its lr"
    if best is None or not math.isfinite(best.best_lr):
        return Answer(question, "cannot tell: no batch size was selected", "no run reached the target", label,
                      reach_target(settings))  # fmt: skip
    rests_on = f"the lr grid of B={int(best.batch_size)} (factor {grid_ratio:.3g} between neighbours), grid seed only"
    lr = best.best_lr
    if best.edge:
        return Answer(question, f"cannot tell: lr {lr:.3g} is {best.edge} of the grid; the best may lie beyond it",
                      rests_on, label, wider_grid(settings, edges_of([best.edge])))  # fmt: skip
    momentum = f", momentum {best.momentum:g}" if best.momentum else ""
    return Answer(question, f"lr = {lr:.3g} (between {lr / grid_ratio:.3g} and {lr * grid_ratio:.3g}){momentum}",
                  rests_on, label)  # fmt: skip


def grid_ratio(runs: pd.DataFrame) -> float:
    """The factor between neighbouring lrs of a B's grid (the median over batch sizes); NaN with one lr."""
    ratios = []
    for _, group in runs.groupby(["batch_size", "momentum"]):
        lrs = np.unique(group.lr)
        if len(lrs) > 1:
            ratios.append(float(np.median(lrs[1:] / lrs[:-1])))
    return float(np.median(ratios)) if ratios else math.nan


@dataclass(frozen=True)
class TunedStudy:
    runs: pd.DataFrame
    table: pd.DataFrame
    fit: CriticalBatch
    answers: list[Answer]
    target: float | None
    sweep: str = ""  # the study's folder (hydra.sweep.dir), for the next steps' command
    settings: Settings = Settings()


def analyse(sweep_dir: str | Path) -> TunedStudy | None:
    """The whole analysis of a tuned study's folder; None when it holds no run with a val_acc target."""
    runs = tuned_runs(sweep_dir)
    if runs.empty:
        return None
    settings = study_settings(sweep_dir, runs)
    table = per_batch_table(runs, grid_seed(sweep_dir, runs))
    fit = critical_batch(selected_runs(runs, table))
    fastest, best = fastest_batch(table, settings)
    answers = [largest_useful_batch(fit, table, settings), fastest, lr_for(best, grid_ratio(runs), settings)]
    return TunedStudy(runs, table, fit, answers, settings.target, str(sweep_dir), settings)


def recommendation_lines(study: TunedStudy) -> list[str]:
    """The recommendation as short lines: per question the answer and what it rests on, or "cannot tell", why,
    and the next step (the overrides that would decide it); one line when no batch size reached the target."""
    target = f"val accuracy {study.target:g}" if study.target is not None else "the target"
    lines = [f"Recommendation (target: {target}; selected on validation, test accuracy only reported):"]
    rerun = (
        f"Next steps are overrides of the study's own command with hydra.sweep.dir={study.sweep or '<the sweep>'}: "
        "its finished runs are skipped."
    )
    if "best_lr" not in study.table or study.table.best_lr.isna().all():
        best = study.settings.best_val_acc
        seen = f" (the best val accuracy any run saw: {best:.3g})" if best is not None else ""
        lines.append(f"- No batch size reached {target}{seen}: nothing to recommend. Next: "
                     f"{reach_target(study.settings)}.")  # fmt: skip
        return [*lines, rerun]
    for a in study.answers:
        label = a.label or a.question
        if a.told:
            lines.append(f"- {label}: {a.answer}. Rests on: {a.rests_on}.")
        else:
            lines.append(f"- {label}: {a.answer}." + (f" Next: {a.next_step}." if a.next_step else ""))
    if any(a.next_step for a in study.answers):
        lines.append(rerun)
    return lines


# --- the report section ------------------------------------------------------------------------------


def steps_figure(study: TunedStudy) -> Figure:
    """Steps to target vs B (log-log): the selected lrs' means with 95% intervals, perfect scaling from the
    smallest B, the fitted S(B), B_crit with its interval, and B_simple at the target crossing."""
    table = study.table.dropna(subset=["steps_mean"]) if "steps_mean" in study.table else study.table.iloc[0:0]
    fig, axes = new_figure(1, width=7, height=4.2)
    ax = axes[0][0]
    log_scale(ax)
    batch_axis(ax, study.table.batch_size.tolist())
    if not table.empty:
        errorbar(ax, table.batch_size, table, "steps", "black", "steps to target (selected lr)")
        b0, s0 = float(table.batch_size.iloc[0]), float(table.steps_mean.iloc[0])
        ax.plot(table.batch_size, s0 * b0 / table.batch_size, color="grey", linestyle="--", label="perfect scaling")
    else:
        ax.text(0.5, 0.5, "no batch size reached the target", transform=ax.transAxes, ha="center", va="center")
    fit, b_crit_pair = study.fit, None
    if math.isfinite(fit.b_crit):
        grid = np.geomspace(study.table.batch_size.min(), study.table.batch_size.max(), 100)
        ax.plot(grid, fit.s_min * (1 + fit.b_crit / grid), color="tab:red", label=f"fit S(B): S_min={fit.s_min:.3g}")
        line = ax.axvline(fit.b_crit, color="tab:red", linestyle=":", linewidth=1.2, label=f"B_crit={fit.b_crit:.3g}")
        if math.isfinite(fit.low) and math.isfinite(fit.high):
            span = ax.axvspan(fit.low, fit.high, color="tab:red", alpha=0.1, label="_B_crit interval")
            line.set_label(f"B_crit={fit.b_crit:.3g} [{fit.low:.3g}, {fit.high:.3g}] (shaded: 95% bootstrap)")
            b_crit_pair = (line, span)  # one legend entry for the line and its interval
    b_simple = table.dropna(subset=["b_simple_mean"]) if "b_simple_mean" in table else table.iloc[0:0]
    if len(b_simple):  # B_simple is a batch size: marked on the B axis, one row per B it was measured at
        colours = batch_colours(study.table.batch_size.tolist())
        left, right = ax.get_xlim()
        for i, r in enumerate(b_simple.itertuples()):
            y = 0.05 + 0.06 * i
            low, high = r.b_simple_ci_low, r.b_simple_ci_high  # cut at the axis ends (a t-interval may reach < 0)
            low, high = (max(low, left), min(high, right)) if math.isfinite(low) else (r.b_simple_mean,) * 2
            ax.plot([low, high], [y, y], color=colours[int(r.batch_size)], linewidth=1.5,
                    transform=ax.get_xaxis_transform(), label="_nolegend_")  # fmt: skip
            ax.plot([r.b_simple_mean], [y], "x", color=colours[int(r.batch_size)], markersize=7, mew=2,
                    transform=ax.get_xaxis_transform(), label="_nolegend_")  # fmt: skip
            ax.annotate(f"runs of B={int(r.batch_size)}", (high, y), xycoords=ax.get_xaxis_transform(),
                        xytext=(5, 0), textcoords="offset points", fontsize=6, va="center",
                        color=colours[int(r.batch_size)])  # fmt: skip
        ax.plot([], [], "x", color="grey", mew=2, label="B_simple at the crossing, per B's runs (x: mean, bar: 95%)")
        median = float(np.median(b_simple.b_simple_mean))
        ax.axvline(median, color="tab:blue", linestyle="-.", linewidth=1.2, label=f"median B_simple {median:.3g}")
        ax.set_xlim(left, right)
    ax.set(xlabel="batch size B", ylabel="optimizer steps to target (log)",
           title=f"steps to val accuracy {study.target:g}" if study.target else "steps to target")  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    if b_crit_pair:
        handles = [b_crit_pair if h is b_crit_pair[0] else h for h in handles]
    legend(ax, below=True, handles=handles, labels=labels, ncols=2, bbox_to_anchor=(0.5, -0.14))
    caption = (
        "Optimizer steps to the target validation accuracy at each batch size's selected lr (mean over seeds, "
        "95% t-interval); dashed: perfect scaling from the smallest B (steps x B constant); red: S(B) = S_min "
        "(1 + B_crit/B) fitted in log space (McCandlish et al. 2018), its B_crit dotted, the bootstrap interval "
        "shaded; crosses near the B axis: the gradient noise scale B_simple (itself a batch size) measured at the "
        "target crossing in the runs of each B (mean over seeds, bar: 95% interval, colour: that B), their median "
        "dash-dotted; McCandlish et al. predict B_simple to be close to B_crit."
    )
    return Figure("tuned_steps_to_target", caption, to_png(fig))


def lr_figure(study: TunedStudy) -> Figure:
    """Best lr vs B with the linear and square-root rules through the smallest B's best lr; edge optima marked."""
    table = study.table.dropna(subset=["best_lr"])
    fig, axes = new_figure(1, width=6, height=3.8)
    ax = axes[0][0]
    log_scale(ax)
    batch_axis(ax, study.table.batch_size.tolist())
    grid = study.runs
    ax.scatter(grid.batch_size, grid.lr, marker="_", color="lightgrey", s=80, label="lr grid")
    if not table.empty:
        ax.plot(table.batch_size, table.best_lr, "o-", color="black", label="best lr (fewest steps)")
        edge = table[table.edge != ""]
        if len(edge):  # no legend entry for a mark that is not drawn
            ax.scatter(edge.batch_size, edge.best_lr, s=120, facecolors="none", edgecolors="tab:red",
                       label="at the edge of its grid")  # fmt: skip
        b0, lr0 = float(table.batch_size.iloc[0]), float(table.best_lr.iloc[0])
        b = study.table.batch_size.astype(float)
        ax.plot(b, lr0 * b / b0, "--", color="tab:orange", label="linear rule lr ~ B")
        ax.plot(b, lr0 * np.sqrt(b / b0), ":", color="tab:green", label="square-root rule lr ~ sqrt(B)")
    ax.set(xlabel="batch size B", ylabel="learning rate (log)", title="best lr vs batch size")
    legend(ax)
    caption = (
        "The lr with the fewest steps to target per batch size (grid seed, validation only), with the lr grid in "
        "grey and the linear and square-root scaling rules through the smallest B's best lr. A circled point is "
        "at the edge of its grid: the true optimum may lie beyond it."
    )
    return Figure("tuned_best_lr", caption, to_png(fig))


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    columns = ["batch_size", "best_lr", "momentum", "edge", "seeds", "seeds_reached"]
    columns += [f"{c}_{s}" for c in ("steps", "epochs", "train_time_s", "test_acc", "b_simple")
                for s in ("mean", "ci_low", "ci_high")]  # fmt: skip
    return table.reindex(columns=columns)


def recommendation_section(sweep) -> Section | None:
    """The recommendation of a tuned study (None for other sweeps): the report's first section."""
    study = analyse(sweep.path)
    if study is None:
        return None
    return Section("Recommendation", recommendation_lines(study))


def steps_to_target_section(sweep) -> Section | None:
    """Steps to target vs B with the S(B) fit and B_simple, best lr vs B, and the per-B table."""
    study = analyse(sweep.path)
    if study is None:
        return None
    fit = study.fit
    text = [
        "Each batch size was trained at every lr of its grid (the grid seed) until the target validation accuracy "
        "(checked within epochs on a geometric step schedule and at epoch ends, bsstudy/train/target.py) or the "
        "budget; steps to target are the crossing interpolated in log-steps between the last evaluation below the "
        "target and the first at or above it (runs recorded before that: the step of the first at or above). "
        "The lr with the fewest steps to target was then run with the other seeds. Budgets compared: steps (the "
        "figure), epochs (samples / training-set size) and training time on this machine (the table): a conclusion "
        "about one "
        "budget need not hold for another.",
        f"Fit S(B) = S_min (1 + B_crit/B): S_min = {fit.s_min:.4g} steps, B_crit = {fit.b_crit:.4g}"
        + (f" [{fit.low:.4g}, {fit.high:.4g}] (95% bootstrap over seeds)" if math.isfinite(fit.low) else "")
        + (f"; cannot tell B_crit: {fit.why_not}" if fit.why_not else "")
        + ".",
    ]
    caption = (
        "Per batch size: the selected lr (grid seed), whether it is at the grid's edge, and over the seeds at that "
        "lr the mean and 95% t-interval of optimizer steps, epochs and training time (s) to the target, the test "
        "accuracy at the crossing (reported, never selected on) and B_simple at the crossing."
    )
    return Section(
        "Steps to target (tuned lr per batch size)",
        text,
        [Table("tuned_per_batch_size", caption, display_table(study.table))],
        [steps_figure(study), lr_figure(study)],
    )
