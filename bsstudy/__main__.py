"""`python -m bsstudy [overrides]` trains one run; `-m` sweeps (Hydra multirun).

Exit codes: 0 when every run ended (completed or diverged); 1 when a run failed (one line for a
UsageError, the traceback with HYDRA_FULL_ERROR=1); 128 + the signal number when SIGTERM or SIGINT
stopped it. A sweep runs all its jobs even when some fail, writes its report of what exists (also when a
signal stops it), and then exits non-zero if any job did not end.
"""

import logging
import math
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bsstudy import CONF_DIR, UsageError
from bsstudy.extras import require_launchers
from bsstudy.parallel import job_share
from bsstudy.run import train
from bsstudy.stop_signals import STOP

log = logging.getLogger(__name__)
FAILED_JOBS: list[str] = []  # "<run folder>: <error>" of this process's sweep jobs that raised


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Train one run; the final validation accuracy is returned for Hydra sweepers that optimize (they
    select, so they never see test accuracy)."""
    try:
        with job_share(cfg):  # in a hydra/launcher=parallel sweep: this job's threads or GPU
            summary = train(cfg)
    except Exception as err:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            if isinstance(err, UsageError) and os.environ.get("HYDRA_FULL_ERROR") != "1":
                sys.stderr.write(f"error: {err}\n")
                raise SystemExit(1) from None
            raise
        # a sweep goes on with its other jobs; cli() reports the failures when all have run
        folder = HydraConfig.get().runtime.output_dir
        FAILED_JOBS.append(f"{folder}: {type(err).__name__}: {err}".splitlines()[0])
        log.error("job failed (%s: %s); the sweep goes on. Details: %s/summary.json", type(err).__name__, err, folder)
        return float("nan")
    return sweeper_objective(summary)


def sweeper_objective(summary: dict) -> float:
    """The final val_acc; NaN (with one warning) without a validation split or without a finished epoch."""
    value = (summary.get("final") or {}).get("val_acc")
    if value is None:
        log.warning("no validation accuracy (data.val_size=0?): returning NaN to the sweeper, never test accuracy")
        return math.nan
    return float(value)


def cli() -> None:
    """The command: Hydra's run or sweep, then the report and the exit code of a sweep that ended early or
    with failed jobs."""
    from bsstudy.report.callback import finish_sweep  # the report is analysis: imported by the command only

    try:
        require_launchers(sys.argv[1:])
    except UsageError as err:
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(1) from None
    with STOP.installed():  # a signal between two jobs of a sweep stops the sweep before the next job
        try:
            main()
        finally:
            unfinished = finish_sweep(FAILED_JOBS)
    if unfinished:
        sys.stderr.write(unfinished + "\n")
        raise SystemExit(1)


if __name__ == "__main__":
    cli()
