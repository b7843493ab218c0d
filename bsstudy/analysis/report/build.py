"""Sweep folder -> tables -> sections -> <sweep>/report/: report.html, report.md, figures/, tables/ and the
tidy tables epochs.csv (one row per run and epoch) and runs.csv (one row per run), also as parquet
when pyarrow is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from bsstudy import FolderError
from bsstudy.analysis.report import budgets, cost, training, tuned
from bsstudy.analysis.report.document import Section, write_documents
from bsstudy.analysis.report.findings import findings_section
from bsstudy.analysis.report.probes import probe_sections
from bsstudy.analysis.report.runs import Sweep, read_sweep
from bsstudy.analysis.report.uncertainty import seed_caveat
from bsstudy.runfolder import write_table


def seeds_per_condition(sweep: Sweep) -> int:
    """The fewest completed seeds behind any (variant, batch size) of the sweep (0 without completed runs)."""
    counts = sweep.completed.groupby(["variant", "batch_size"]).seed.nunique()
    return int(counts.min()) if len(counts) else 0


def report_sections(sweep: Sweep, target_acc: float | None = None) -> list[Section]:
    """Every section the sweep has data for, findings first and the list of runs (with every file that
    could not be read, also while drawing) second."""
    drawn = [
        training.curves_section(sweep),
        training.cost_curves_section(sweep),
        budgets.budgets_section(sweep),
        cost.time_to_accuracy_section(sweep, target_acc),
        tuned.steps_to_target_section(sweep),
        training.scaling_section(sweep),
        *probe_sections(sweep),  # each probe's own section, or the generic one (bsstudy/analysis/report/probes.py)
    ]
    findings = findings_section(sweep)
    recommendation = tuned.recommendation_section(sweep)  # a tuned study's answer comes first
    first = [recommendation] if recommendation is not None else []
    return [*first, findings, training.runs_section(sweep), *(s for s in drawn if s is not None)]


def intro(sweep: Sweep) -> list[str]:
    runs = sweep.runs
    datasets = ", ".join(sorted(runs.dataset.dropna().astype(str).unique())) or "unknown"
    variants = [v for v in sorted(runs.variant.unique()) if v]
    return [
        f"Sweep: {sweep.path.resolve()}. Data: {datasets}. Batch sizes: "
        f"{', '.join(f'{b:g}' for b in sweep.batch_sizes)}. Seeds: "
        f"{', '.join(str(s) for s in sorted(runs.seed.dropna().unique()))}."
        + (f" Also varied: {'; '.join(variants)}." if variants else ""),
        seed_caveat(seeds_per_condition(sweep)),
        "Accuracies are fractions in [0, 1], measured after each epoch on the whole training, validation (when "
        "data.val_size > 0) and test sets. "
        "Batch-size axes are logarithmic, and each batch size has the same colour in every figure.",
    ]


def write_tidy_table(frame: pd.DataFrame, path: Path) -> None:
    """CSV always; parquet beside it when pyarrow is installed."""
    write_table(path.with_suffix(".csv"), frame)
    if importlib.util.find_spec("pyarrow") is not None:
        frame.to_parquet(path.with_suffix(".parquet"), index=False)


def build_report(sweep_dir: str | Path, target_acc: float | None = None, out_dir: str | Path | None = None) -> Path:
    """Write the report of a sweep (or of one run folder) and return its folder (default <sweep>/report/)."""
    sweep = read_sweep(sweep_dir)
    if sweep.runs.empty:
        raise FolderError(f"{sweep_dir} holds no runs (folders with .hydra/config.yaml, summary.json or metrics.csv)")
    out = Path(out_dir) if out_dir else sweep.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections = report_sections(sweep, target_acc)
    write_tidy_table(sweep.epochs, out / "epochs")
    write_tidy_table(sweep.runs, out / "runs")
    write_documents(out, f"bsstudy report: {sweep.path.name}", intro(sweep), sections)
    return out
