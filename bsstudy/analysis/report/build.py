"""Sweep folder -> tables -> sections -> <sweep>/report/: report.html, report.md, figures/, tables/ and the
tidy tables epochs.csv (one row per run and epoch) and runs.csv (one row per run), also as parquet
when pyarrow is installed, and manifest.json (each file's size and sha256).

The report is written whole or not at all (bsstudy.runfolder.written_whole): its files go to a staging folder
first and are renamed into place together, manifest.json last. A build that fails (a section that raises, a
full disk, a read-only folder) or is killed leaves the previous report as it was, or none; a file that
cannot be written is one OutputError line naming it and the way out (--out DIR)."""

from __future__ import annotations

import errno
import importlib.util
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from bsstudy import FolderError, OutputError
from bsstudy.analysis.report import budgets, cost, training, tuned
from bsstudy.analysis.report.document import Section, write_documents
from bsstudy.analysis.report.findings import findings_section
from bsstudy.analysis.report.probes import probe_sections
from bsstudy.analysis.report.runs import Sweep, read_sweep, sorted_variants
from bsstudy.analysis.report.uncertainty import seed_caveat, selected_seed_caveat
from bsstudy.runfolder import MANIFEST, NotWritten, replace_atomically, write_table, written_whole


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


def header_seed_caveat(sweep: Sweep) -> str:
    """The header's seed line: for a tuned study, the seeds of the selected (B, lr) and of the grid's other lrs
    (what the report compares); else the fewest seeds behind any (variant, B)."""
    counts = tuned.seed_counts(sweep.path)
    if counts is not None:
        return selected_seed_caveat(*counts)
    return seed_caveat(seeds_per_condition(sweep))


def intro(sweep: Sweep) -> list[str]:
    runs = sweep.runs
    datasets = ", ".join(sorted(runs.dataset.dropna().astype(str).unique())) or "unknown"
    variants = [v for v in sorted_variants(runs.variant) if v]
    return [
        f"Sweep: {sweep.path.resolve()}. Data: {datasets}. Batch sizes: "
        f"{', '.join(f'{b:g}' for b in sweep.batch_sizes)}. Seeds: "
        f"{', '.join(str(s) for s in sorted(runs.seed.dropna().unique()))}."
        + (f" Also varied: {'; '.join(variants)}." if variants else ""),
        header_seed_caveat(sweep),
        "Accuracies are fractions in [0, 1], measured after each epoch on the whole training, validation (when "
        "data.val_size > 0) and test sets. "
        "Batch-size axes are logarithmic, and each batch size has the same colour in every figure.",
    ]


REPORT_FOLDERS = ("figures", "tables")  # the report's own: a file there that the new report lacks is removed
FULL = (errno.ENOSPC, errno.EDQUOT)


def write_tidy_table(frame: pd.DataFrame, path: Path) -> None:
    """CSV always; parquet beside it when pyarrow is installed."""
    write_table(path.with_suffix(".csv"), frame)
    if importlib.util.find_spec("pyarrow") is not None:
        replace_atomically(path.with_suffix(".parquet"), lambda tmp: frame.to_parquet(tmp, index=False))


def read_runs(sweep_dir: str | Path) -> Sweep:
    """The sweep (or one run folder); FolderError for a folder that is missing or holds no runs."""
    sweep = read_sweep(sweep_dir)
    if sweep.runs.empty:
        raise FolderError(f"{sweep_dir} holds no runs (folders with .hydra/config.yaml, summary.json or metrics.csv)")
    return sweep


def write_report(folder: Path, sweep: Sweep, sections: list[Section]) -> None:
    """Every file of the report into `folder`, as they are (report_folder makes them whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tidy_table(sweep.epochs, folder / "epochs")
    write_tidy_table(sweep.runs, folder / "runs")
    write_documents(folder, f"bsstudy report: {sweep.path.name}", intro(sweep), sections)


@contextmanager
def report_folder(out: Path, way_out: str = "--out DIR"):
    """written_whole(out) for a report (its figures/ and tables/ its own); a file it cannot write is an
    OutputError naming the file, what was left, and `way_out` (the option that writes elsewhere)."""
    try:
        with written_whole(out, owned=REPORT_FOLDERS) as stage:
            yield stage
    except NotWritten as err:
        raise OutputError(cannot_write(err, Path(out), way_out)) from err


def cannot_write(err: NotWritten, out: Path, way_out: str) -> str:
    left = (
        f"the report in {out} is as it was"
        if err.kept
        else f"{out} is left incomplete (no {MANIFEST}): write the report again"
    )
    hint = "free some space, or write the report elsewhere" if err.errno in FULL else "write the report elsewhere"
    return f"cannot write {err.filename} ({err.strerror}): {left}; {hint} with {way_out}"


def build_report(sweep_dir: str | Path, target_acc: float | None = None, out_dir: str | Path | None = None) -> Path:
    """Write the report of a sweep (or of one run folder), whole, and return its folder (default <sweep>/report/)."""
    sweep = read_runs(sweep_dir)
    out = Path(out_dir) if out_dir else sweep.path / "report"
    sections = report_sections(sweep, target_acc)
    with report_folder(out) as stage:
        write_report(stage, sweep, sections)
    return out
