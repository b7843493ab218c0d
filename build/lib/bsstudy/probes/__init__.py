"""Probes: Lightning callbacks that measure the training and never change it.

A probe is one module here plus one config file, `bsstudy/conf/probes/<name>.yaml`, holding its
`_target_` and its settings (`probes.<name>.*`). Select probes with `probes=[update_norms,...]`.
run.py builds each one with `out_dir=<run>/probes/<name>`, where it writes its files, and puts
it before the per-epoch evaluation, so the columns it adds to `pl_module.epoch_extras` in
`on_train_epoch_end` join that epoch's row of metrics.csv. Its headline numbers go into
`self.summary` (a dict of JSON-able values), which run.py writes into `summary.json` under
`probes.<name>` when the run ends. Wrap costly measurements in `with self.timed(pl_module):` so
their time goes to metrics.csv's `probe_time_s`, not to the training time.
"""

from contextlib import contextmanager
from pathlib import Path

import lightning as L

from bsstudy.runfiles import synchronized_now


class Probe(L.Callback):
    """Base of every probe: owns its output folder."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.summary: dict = {}

    @contextmanager
    def timed(self, pl_module):
        """Count the time of a measurement as probe time, so the epoch's training time stays honest."""
        start = synchronized_now(pl_module.device)
        yield
        pl_module.epoch_probe_time_s += synchronized_now(pl_module.device) - start


class FinalWeightsProbe(Probe):
    """A probe that measures the final weights once, when training ends: `measure(net, data, seed)`
    returns its summary (and writes its files). A diverged run has no minimizer to measure."""

    def on_train_end(self, trainer, pl_module) -> None:
        if pl_module.diverged:
            self.summary = {"skipped": "the run diverged"}
            return
        self.summary = self.measure(pl_module.net, pl_module.data, pl_module.seed)

    def measure(self, net, data, seed: int) -> dict:
        raise NotImplementedError
