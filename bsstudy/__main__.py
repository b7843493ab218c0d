"""`python -m bsstudy [overrides]` trains one run; `-m` sweeps (Hydra multirun)."""

import logging
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig

from bsstudy.parallel import job_share
from bsstudy.run import train

# An absolute path: Hydra reads a relative one as a Python package when `bsstudy` is the console script.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Train one run; the final validation accuracy is returned for Hydra sweepers that optimize (they
    select, so they never see test accuracy)."""
    with job_share(cfg):  # in a hydra/launcher=parallel sweep: this job's threads or GPU
        summary = train(cfg)
    return sweeper_objective(summary)


def sweeper_objective(summary: dict) -> float:
    """The final val_acc; NaN (with one warning) without a validation split or without a finished epoch."""
    value = (summary.get("final") or {}).get("val_acc")
    if value is None:
        log.warning("no validation accuracy (data.val_size=0?): returning NaN to the sweeper, never test accuracy")
        return math.nan
    return float(value)


if __name__ == "__main__":
    main()
