"""Finished runs as the geometry measures need them: the network with its final weights, and the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from bsstudy.runfolder import RunFolder, load_weights, run_folders
from bsstudy.train.data import TensorData, load_data
from bsstudy.train.net import MLP, build_net


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: DictConfig
    net: MLP
    data: TensorData

    @property
    def batch_size(self) -> int:
        return self.cfg.data.batch_size

    @property
    def seed(self) -> int:
        return self.cfg.seed


def load_run(run_dir: str | Path, checkpoint: str = "last.ckpt", geometry_bn: str | None = None) -> LoadedRun:
    """Rebuild a run's data and network from `<run>/.hydra/config.yaml` and load `checkpoints/<checkpoint>`;
    `geometry_bn` replaces the run's model.geometry_bn (the batch-norm convention of the geometry measures)."""
    run_dir = Path(run_dir)
    cfg = RunFolder(run_dir).config()
    if geometry_bn is not None:
        cfg.model.geometry_bn = geometry_bn
    data = load_data(cfg.data, cfg.seed)
    net = build_net(cfg.model, data.input_size, data.num_classes)
    load_weights(net, RunFolder(run_dir).checkpoints / checkpoint)
    return LoadedRun(run_dir, cfg, net.eval(), data)


def is_run_dir(path: str | Path) -> bool:
    """A run whose network can be rebuilt: it has its resolved config."""
    return RunFolder(path).config_path.is_file()


def rebuildable_runs(path: str | Path) -> list[Path]:
    """[path] for a run folder, its runs for a sweep folder (those with a resolved config), in job order."""
    runs = [run for run in run_folders(Path(path)) if is_run_dir(run)]
    if not runs:
        raise FileNotFoundError(f"{path} is no run and holds no runs (folders <n>/ with .hydra/config.yaml)")
    return runs


def pick_pair(sweep_dir: str | Path, batch_sizes: tuple[int, int] | None = None) -> tuple[Path, Path]:
    """Two runs of a sweep with batch sizes (B_a, B_b), by default its smallest and largest; with several
    seeds, the pair of the smallest seed that both batch sizes have."""
    runs = {}
    for run in rebuildable_runs(sweep_dir):
        cfg = RunFolder(run).config()
        runs.setdefault((cfg.data.batch_size, cfg.seed), run)
    available = sorted({b for b, _ in runs})
    b_a, b_b = batch_sizes or (available[0], available[-1])
    seeds = sorted({s for b, s in runs if b == b_a} & {s for b, s in runs if b == b_b})
    if b_a == b_b or not seeds:
        raise ValueError(f"{sweep_dir}: need two different batch sizes with a common seed; got {b_a} and {b_b}, "
                         f"the sweep has batch sizes {available}")  # fmt: skip
    return runs[(b_a, seeds[0])], runs[(b_b, seeds[0])]
