"""Hydra callback: write the report of a sweep when the whole multirun has ended.

Registered in bsstudy/conf/config.yaml under hydra.callbacks.report, so every `python -m bsstudy -m ...` ends
with <sweep>/report/. Hydra skips `on_multirun_end` when a job raises or a signal stops the sweep;
`python -m bsstudy` then calls `finish_sweep`, which writes the report of what exists and says which
runs did not end. A failure of the report is logged with the command to redo it and never raised:
the runs' files are already written and stay as they are. Switch it off with
`hydra.callbacks.report.enabled=false`; set the time-to-accuracy target (a validation accuracy; a test
accuracy only in a sweep without validation split) with `hydra.callbacks.report.target_acc=0.85`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bsstudy import UsageError
from bsstudy.analysis.report.build import build_report
from bsstudy.runfolder import is_whole, runs_of

log = logging.getLogger(__name__)
UNFINISHED_STATUSES = ("failed", "interrupted")  # a diverged run ended: its result is that it diverged
_sweep: dict = {}  # the sweep this process runs: {"dir": Path, "callback": ReportCallback, "reported": bool}


class ReportCallback(Callback):
    def __init__(self, enabled: bool = True, target_acc: float | None = None):
        self.enabled, self.target_acc = enabled, target_acc

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _sweep.update(dir=Path(config.hydra.sweep.dir), callback=self, reported=False)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self.write_report(Path(config.hydra.sweep.dir))
        _sweep["reported"] = True

    def write_report(self, sweep_dir: Path) -> None:
        if not self.enabled:
            return
        try:
            out = build_report(sweep_dir, self.target_acc)
            log.info("report: %s", out / "report.html")
        except UsageError as err:  # a full disk, a read-only folder, no runs: one line, and how to redo it
            log.error(
                "the report of %s failed: %s. The runs are kept; redo it with: python -m bsstudy.analysis.report %s",
                sweep_dir,
                err,
                sweep_dir,
            )
        except Exception:  # the sweep's results are on disk; say what failed and how to redo it
            log.exception(
                "the report of %s failed; the runs are kept. Redo it with: python -m bsstudy.analysis.report %s",
                sweep_dir,
                sweep_dir,
            )


def unfinished_runs(sweep_dir: Path) -> list[str]:
    """'<folder>: <status>' for every run of the sweep whose summary.json says it failed or was interrupted."""
    found = []
    for folder in runs_of(sweep_dir) if sweep_dir.is_dir() else []:
        try:
            status = (folder.summary() or {}).get("status")
        except (OSError, ValueError):
            continue  # no summary (yet): nothing to say about it here
        if status in UNFINISHED_STATUSES:
            found.append(f"{folder.path.resolve()}: {status}")
    return found


def finish_sweep(failed_jobs: list[str]) -> str | None:
    """After `python -m bsstudy -m ...` has returned or raised: write the report if Hydra skipped it, and return
    one message naming the runs that did not end (None when all ended, or when no sweep ran)."""
    if not _sweep:
        return None
    sweep_dir = _sweep["dir"]
    if not _sweep["reported"] and sweep_dir.is_dir() and runs_of(sweep_dir):  # no job started: nothing to report
        _sweep["callback"].write_report(sweep_dir)
        _sweep["reported"] = True
    known = {line.split(": ")[0] for line in failed_jobs}
    unfinished = failed_jobs + [line for line in unfinished_runs(sweep_dir) if line.split(": ")[0] not in known]
    if not unfinished:
        return None
    report = sweep_dir / "report"
    return (
        f"sweep {sweep_dir}: {len(unfinished)} run(s) did not end:\n  "
        + "\n  ".join(unfinished)
        + (f"\nthe report of what exists: {report / 'report.html'}" if is_whole(report) else "")
        + "\nfix what failed, then the same command with resume=true and hydra.sweep.dir continues the sweep"
    )
