"""`python -m bsstudy [overrides]` trains one run; `-m` sweeps (Hydra multirun).

Exit codes: 0 when every run ended (completed or diverged); 1 when a run failed or a launcher's or sweeper's
setting is wrong (one line for a UsageError, the traceback with HYDRA_FULL_ERROR=1); 128 + the signal number when
SIGTERM or SIGINT stopped it, or arrived after the last job (while the end-of-sweep report is written: the report is
finished, the exit code still says the process was asked to stop). A sweep runs all its jobs even when some fail,
writes its report of what exists (also when a signal stops it), and then exits non-zero if any job did not end.
`--help`: bsstudy/conf/hydra/help/.
"""

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bsstudy import CONF_DIR, UsageError, UsageExit
from bsstudy.extras import require_launchers
from bsstudy.train.parallel import job_share
from bsstudy.train.run import FAILED_JOBS, job_failed, sweeper_objective, train
from bsstudy.train.signals import STOP, RunInterrupted

log = logging.getLogger(__name__)


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
        return job_failed(HydraConfig.get().runtime.output_dir, err)  # a sweep goes on with its other jobs
    return sweeper_objective(summary)


def cli() -> None:
    """The command: Hydra's run or sweep, then the report and the exit code of a sweep that ended early or
    with failed jobs."""
    from bsstudy.analysis.report.callback import finish_sweep  # the report is analysis: imported by the command only

    try:
        require_launchers(sys.argv[1:])
    except UsageError as err:
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(1) from None
    with STOP.installed():  # a signal between two jobs of a sweep stops the sweep before the next job
        try:
            main()
        except UsageExit as err:  # a UsageError inside Hydra's machinery (a launcher's or sweeper's setting)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise err.error from None
            sys.stderr.write(f"error: {err.error}\n")
            raise SystemExit(1) from None
        finally:
            unfinished = finish_sweep(FAILED_JOBS)
    if unfinished:
        sys.stderr.write(unfinished + "\n")
    if STOP.signum is not None:  # it came after the last job's last chunk, e.g. during the end-of-sweep report
        sys.stderr.write(f"{RunInterrupted(STOP.signum)} after the last job: what was complete is written\n")
        raise RunInterrupted(STOP.signum)
    if unfinished:
        raise SystemExit(1)


if __name__ == "__main__":
    cli()
