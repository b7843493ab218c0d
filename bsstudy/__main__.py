"""`python -m bsstudy [overrides]` trains one run; `-m` sweeps (Hydra multirun)."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from bsstudy.parallel import job_share
from bsstudy.run import train

# An absolute path: Hydra reads a relative one as a Python package when `bsstudy` is the console script.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Train one run; the final test accuracy is returned for Hydra sweepers that optimize."""
    with job_share(cfg):  # in a hydra/launcher=parallel sweep: this job's threads or GPU
        summary = train(cfg)
    return summary["final"]["test_acc"] if summary.get("final") else float("nan")


if __name__ == "__main__":
    main()
