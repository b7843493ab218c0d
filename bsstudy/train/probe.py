"""The probe interface: a Probe is a Lightning callback that measures the training and never changes it.

A probe is one module in bsstudy/probes/ plus one config file, `bsstudy/conf/probes/<name>.yaml` (its `_target_` and its
settings, `probes.<name>.*`); select probes with `probes=[update_norms,...]`. Adding one edits nothing else:

- it declares its settings (`settings`, a table of config.Rule); `build_probe` checks them, naming
  `probes.<name>.<key>`, and builds it with `out_dir=<run>/probes/<name>` (its files go there); run.py puts it
  before the per-epoch evaluation;
- per step and per epoch it talks to the training only through `pl_module.record` (module.EpochRecord): the
  columns it adds to this epoch's metrics.csv row (`record.columns`), the time of its measurements
  (`with self.timed(pl_module):`, kept out of the training time) and, if it asks, every step's update norms;
- its headline numbers go into `self.summary` (JSON-able), written to summary.json under `probes.<name>`;
- a long measurement calls `self.check_stop()` between its evaluations (the geometry probes pass it to
  bsstudy/measures as `check`, called before every chunk), so a SIGTERM or Ctrl+C ends the run within seconds
  (`interrupted`, bsstudy/train/signals.py); a probe measuring at the end of training
  (`measures_at_train_end`) is measured again by resume=true, without training again (run.py);
- it declares what the report shows of it (class attributes below): the report finds the probes of a sweep in
  the runs' configs and shows each with the section its class names, or with the generic probe section
  (bsstudy/analysis/report/probes.py: its summary numbers per batch size and its `epoch_columns` against epochs).

docs/architecture.md ("Adding a probe") walks through a complete small example.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate

from bsstudy import ConfigError
from bsstudy.config import Rule, check_settings
from bsstudy.resources import synchronized_now
from bsstudy.train.signals import STOP

log = logging.getLogger(__name__)


class Probe(L.Callback):
    """Base of every probe: owns its output folder and declares what the report reads from it."""

    settings: ClassVar[dict[str, Rule]] = {}
    """Its settings (the keys of its yaml) and what each value must be; build_probe checks them, naming
    `probes.<name>.<key>`, and refuses a key not declared. Checks across keys stay in __init__."""
    epoch_columns: ClassVar[tuple[str, ...]] = ()
    """The columns it adds to metrics.csv (the generic section draws them against epochs)."""
    report_order: ClassVar[int] = 100
    """Where its section comes among the probes' sections (smaller first; ties by name)."""
    report_section: ClassVar[str | None] = None
    """"module:function" of the report section that shows its files (the function takes the Sweep and returns a
    Section or None); None: the generic probe section. Named as text, so training never imports the report."""
    measures_at_train_end: ClassVar[bool] = False
    """True for a probe that measures in `on_train_end` (the final weights). A run interrupted while it measured
    has completed its training: resume=true then runs its `on_train_end` again (run.py), without training."""
    check_stop: ClassVar[Callable[[], None]] = staticmethod(STOP.check)
    """Called between the evaluations of a long measurement: raises RunInterrupted once a stop signal has arrived
    (outside a run, where no handler is installed, it never does)."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.summary: dict = {}

    @contextmanager
    def timed(self, pl_module):
        """Count the time of a measurement as probe time, so the epoch's training time stays honest."""
        start = synchronized_now(pl_module.device)
        yield
        pl_module.record.probe_time_s += synchronized_now(pl_module.device) - start


class FinalWeightsProbe(Probe):
    """A probe that measures the final weights once, when training ends: `measure(net, data, seed)`
    returns its summary (and writes its files). A diverged run has no minimizer to measure."""

    measures_at_train_end = True

    def on_train_end(self, trainer, pl_module) -> None:
        if pl_module.diverged:
            self.summary = {"skipped": "the run diverged"}
            return
        self.summary = self.measure(pl_module.net, pl_module.data, pl_module.seed)

    def measure(self, net, data, seed: int) -> dict:
        raise NotImplementedError


def build_probe(name: str, probe_cfg, out_dir: Path) -> Probe:
    """Check the settings of probe `name` against what its class declares, then build it writing to `out_dir`;
    a ConfigError from its __init__ reaches the user as itself, not wrapped by Hydra."""
    check_settings(probe_cfg, get_class(probe_cfg._target_).settings, f"probes.{name}")
    try:
        return instantiate(probe_cfg, out_dir=out_dir)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


class TrainEnd(L.Callback):
    """The first callback of a run: notes that training has ended and the end-of-training hooks (the probes that
    measure the final weights) have begun. `fit` returning with `reached` False means Lightning skipped them: a
    resumed run whose checkpoint holds the end of its training has nothing to train (`measure_at_train_end`)."""

    def __init__(self):
        self.reached = False

    def on_train_end(self, trainer, pl_module) -> None:
        self.reached = True


def measure_at_train_end(trainer, pl_module, probes: dict[str, Probe]) -> list[str]:
    """Run the `on_train_end` of the probes that measure at the end of training (`measures_at_train_end`), as
    Lightning would have, after a `fit` that skipped it; returns their names. Lightning's teardown moved the
    network to the CPU: it goes back to the training device first (the data stayed there)."""
    pending = {name: probe for name, probe in probes.items() if probe.measures_at_train_end}
    if pending:
        log.info("resume=true: the training had ended; measuring %s again (no training)", ", ".join(pending))
        pl_module.to(trainer.strategy.root_device)
        for probe in pending.values():
            probe.on_train_end(trainer, pl_module)
    return list(pending)
