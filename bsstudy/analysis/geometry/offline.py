"""The geometry measures on the checkpoints of finished runs and sweeps (used by __main__.py and the
Hydra callback): each measure is the probe of the same name, configured by bsstudy/conf/probes/<name>.yaml
plus overrides, applied to the network rebuilt from a run folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bsstudy import CONF_DIR
from bsstudy.analysis.geometry.runs import load_run, pick_pair, rebuildable_runs
from bsstudy.runfolder import RunFolder
from bsstudy.train.probe import build_probe

log = logging.getLogger(__name__)

MEASURES = ("interpolate", "sharpness", "landscape", "hessian")


def probe_settings(name: str, overrides: list[str] | dict | None = None) -> DictConfig:
    """bsstudy/conf/probes/<name>.yaml with `key=value` overrides (or a mapping of them) applied."""
    settings = OmegaConf.load(CONF_DIR / "probes" / f"{name}.yaml")
    if isinstance(overrides, (list, tuple)):
        overrides = OmegaConf.from_dotlist(list(overrides))
    return OmegaConf.merge(settings, overrides or {})


def measure_run(name: str, run_dir: Path, overrides=None, device: str = "cpu", geometry_bn: str | None = None) -> dict:
    """Run the `name` probe on a finished run: files to <run>/probes/<name>/, numbers merged into its
    summary.json under probes.<name>. `geometry_bn` (running, batch) replaces the run's model.geometry_bn."""
    run = load_run(run_dir, geometry_bn=geometry_bn)
    probe = build_probe(name, probe_settings(name, overrides), RunFolder(run.run_dir).probe_dir(name))
    summary = probe.measure(run.net.to(device), run.data.to(device), run.seed)
    RunFolder(run.run_dir).merge_probe_summary(name, summary | {"source": "python -m bsstudy.analysis.geometry"})
    log.info("%s of %s: %s", name, run_dir, {k: v for k, v in summary.items() if isinstance(v, (int, float))})
    return summary


def measure_all(name: str, path: Path, overrides=None, device: str = "cpu", geometry_bn: str | None = None) -> None:
    """`measure_run` on a run folder, or on every run of a sweep folder."""
    for run_dir in rebuildable_runs(path):
        measure_run(name, run_dir, overrides, device, geometry_bn)


def same_network(net_a, net_b) -> bool:
    """The same class with parameters of the same names and shapes: a straight line between their weights exists."""
    shapes = [{name: p.shape for name, p in net.named_parameters()} for net in (net_a, net_b)]
    return type(net_a) is type(net_b) and shapes[0] == shapes[1]


def interpolate_runs(
    run_a: Path,
    run_b: Path,
    out_dir: Path | None = None,
    overrides=None,
    device: str = "cpu",
    geometry_bn: str | None = None,
) -> Path:
    """Interpolation from run_a (alpha = 0) to run_b (alpha = 1), on run_a's data, with run_a's model.geometry_bn
    or `geometry_bn`; returns the output folder, by default <common parent>/geometry/interpolation_<B_a>_<B_b>/."""
    a, b = load_run(run_a, geometry_bn=geometry_bn), load_run(run_b)
    if a.cfg.data.name != b.cfg.data.name or not same_network(a.net, b.net):
        raise ValueError(f"{run_a} and {run_b} differ in data set or model; interpolation needs the same network")
    if out_dir is None:
        parent = Path(os.path.commonpath([a.run_dir.resolve(), b.run_dir.resolve()]))
        out_dir = parent / "geometry" / f"interpolation_{a.batch_size}_{b.batch_size}"
    probe = build_probe("interpolation", probe_settings("interpolation", overrides), out_dir)
    meta = {"run_a": str(a.run_dir), "run_b": str(b.run_dir), "batch_size_a": a.batch_size,
            "batch_size_b": b.batch_size, "seed_a": a.seed, "seed_b": b.seed}  # fmt: skip
    summary = probe.measure(a.net.to(device), b.net.to(device), a.data.to(device), a.seed, meta)
    log.info("interpolation %s -> %s in %s: %s", run_a, run_b, out_dir, summary)
    return Path(out_dir)


def interpolate_sweep(
    sweep_dir: Path, batch_sizes=None, overrides=None, device: str = "cpu", geometry_bn: str | None = None
) -> Path:
    """The interpolation between two batch sizes of a sweep (default: its smallest and largest), written to
    <sweep>/geometry/interpolation_<B_a>_<B_b>/."""
    run_a, run_b = pick_pair(sweep_dir, tuple(batch_sizes) if batch_sizes else None)
    return interpolate_runs(run_a, run_b, None, overrides, device, geometry_bn)


class SweepInterpolation(Callback):
    """Hydra callback: when a multirun ends, interpolate between the smallest and largest batch size of the
    sweep (or `batch_sizes`), with `overrides` of bsstudy/conf/probes/interpolation.yaml. Enabled by
    experiment=sharpness; add it to any sweep with hydra.callbacks (see the README)."""

    def __init__(self, batch_sizes=None, overrides=None, device: str = "cpu"):
        self.batch_sizes, self.overrides, self.device = batch_sizes, overrides, device

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            out = interpolate_sweep(sweep_dir, self.batch_sizes, self.overrides, self.device)
            log.info("interpolation written to %s", out)
        except Exception:  # the sweep's runs are done and saved; say what failed and how to redo it
            log.exception(
                "interpolation of sweep %s failed; rerun with: python -m bsstudy.analysis.geometry interpolate %s",
                sweep_dir,
                sweep_dir,
            )
