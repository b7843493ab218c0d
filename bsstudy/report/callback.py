"""Hydra callback: write the report of a sweep when the whole multirun has ended.

Registered in conf/config.yaml under hydra.callbacks.report, so every `python -m bsstudy -m ...` ends
with <sweep>/report/. A failure of the report is logged with the command to redo it and never raised:
the runs' files are already written and stay as they are. Switch it off with
`hydra.callbacks.report.enabled=false`; set the time-to-accuracy target (a validation accuracy; a test
accuracy only in a sweep without validation split) with `hydra.callbacks.report.target_acc=0.85`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bsstudy.report.build import build_report

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    def __init__(self, enabled: bool = True, target_acc: float | None = None):
        self.enabled, self.target_acc = enabled, target_acc

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            out = build_report(sweep_dir, self.target_acc)
            log.info("report: %s", out / "report.html")
        except Exception:  # the sweep's results are on disk; say what failed and how to redo it
            log.exception(
                "the report of %s failed; the runs are kept. Redo it with: python -m bsstudy.report %s",
                sweep_dir,
                sweep_dir,
            )
