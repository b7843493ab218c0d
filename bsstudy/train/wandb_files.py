"""Log a run's own files to its W&B run when it ends: metrics.csv and every probe's CSV as W&B tables
(`files/metrics`, `files/<probe>/<file>`), every probe's PNG as an image (`files/<probe>/<file>`).

Training calls this with `logger=wandb`; it reads the run folder only (the csv module, no pandas or
matplotlib), so training never imports the analysis side. The W&B report of a whole sweep
(`python -m bsstudy.analysis.report.wandb_report <sweep>`, docs/reports.md) shows these images per run.

The runs of one sweep share a W&B group (`wandb_group`), named by the sweep, not by where it lies on the
machine that ran it: Hydra's default `multirun/<date>/<time>` is the group `<date>/<time>`.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from bsstudy.runfolder import RunFolder, parse_number

log = logging.getLogger(__name__)


def read_table(path: Path) -> tuple[list[str], list[list]]:
    """(columns, rows) of a CSV file, numbers parsed, empty cells None."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        columns = next(reader, [])
        return columns, [[parse_value(v) for v in row] for row in reader]


def parse_value(text: str):
    try:
        return parse_number(text)
    except ValueError:
        return text  # a text column (e.g. a regime's name)


def run_files(run_dir: Path) -> dict[str, Path]:
    """W&B key -> file: metrics.csv, then probes/<name>/*.csv and *.png in name order."""
    folder = RunFolder(run_dir)
    found = {"files/metrics": folder.metrics_path} if folder.metrics_path.exists() else {}
    for path in sorted((folder.path / folder.PROBES).glob("*/*")):
        if path.suffix in (".csv", ".png"):
            found[f"files/{path.parent.name}/{path.stem}"] = path
    return found


def wandb_group(folder: str | Path) -> str:
    """The W&B group of the runs of the sweep (or of the single run) in `folder`: the path below its last
    `multirun` (or `outputs`) folder, `<date>/<time>` for Hydra's default folders (/scratch/me/multirun/2026-12-08/
    04-30-00 -> 2026-12-08/04-30-00), else the folder's name (hydra.sweep.dir=/scratch/me/bs_sweep -> bs_sweep).
    `logger.wandb.group`, when set, is the group instead (run.py)."""
    parts = Path(folder).parts
    for root in ("multirun", "outputs"):
        below = [i for i, part in enumerate(parts[:-1]) if part == root]
        if below:
            return "/".join(parts[below[-1] + 1 :])
    return Path(folder).name or str(folder)


def logged_images(run_dir: str | Path) -> list[str]:
    """The W&B keys under which `log_run_files` logs the run's images (files/<probe>/<stem>)."""
    return [key for key, path in run_files(Path(run_dir)).items() if path.suffix == ".png"]


def log_run_files(experiment, run_dir: str | Path) -> None:
    """Log the run's tables and images to the W&B run `experiment`. Never raises: a failure is logged and
    the run's own files stay as they are."""
    try:
        import wandb

        media = {}
        for key, path in run_files(Path(run_dir)).items():
            if path.suffix == ".png":
                media[key] = wandb.Image(str(path))
            else:
                columns, rows = read_table(path)
                media[key] = wandb.Table(columns=columns, data=rows)
        if media:
            experiment.log(media)
    except Exception:
        log.exception("W&B: could not log the files of %s", run_dir)
