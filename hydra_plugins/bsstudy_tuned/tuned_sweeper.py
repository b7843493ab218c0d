"""The sweeper of `experiment=tuned` (bsstudy/conf/hydra/sweeper/tuned.yaml): the lr grid per batch size, then
the selected lr of each batch size with the other seeds, in one `python -m bsstudy -m experiment=tuned` command.

Why a sweeper and not a driver script: phase 2 depends on phase 1's results, which Hydra's BasicSweeper cannot
express, and a sweeper keeps everything else of a bsstudy sweep as it is: the command, the launcher
(sequential, or hydra/launcher=parallel), the report callback at the end, and resuming. Modelled on Hydra
1.3's BasicSweeper: `setup` builds the launcher, `sweep` launches batches of jobs. Hydra instantiates only
sweepers in the `hydra_plugins` package, hence this module's place.

Resuming: the same command with `hydra.sweep.dir=<dir>` launches the same jobs with the same overrides; each
job finds its folder by its overrides (bsstudy/runfolder/identity.py: job_subdir) and, as the preset sets
resume=true, a completed run returns its summary without training and a killed one continues from its last
checkpoint. Phase 2 is chosen again from the phase-1 summaries, which give the same choice.
The first B's grid is launched alone: when none of its runs reaches the target, one warning says so at
once, with the best validation accuracy reached (and its lr) and the setting to change, instead of after
every B has trained to its budget; the line before phase 2 gives each unreached B's best accuracy.
Selection rules: bsstudy/train/tuned.py. `<sweep>/tuned_selection.json` records the grid and each B's choice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from bsstudy import ConfigError, usage_errors_exit
from bsstudy.runfolder import RunFolder, write_json
from bsstudy.train.tuned import (
    best_text,
    candidate_from_summary,
    check_grid,
    job_overrides,
    lr_grid,
    not_reached_warning,
    phase_two_summary,
    select_best,
)

log = logging.getLogger(__name__)


class TunedSweeper(Sweeper):
    """Phase 1: batch_sizes x lr grid x momenta with seeds[0]; phase 2: each B's selected lr with seeds[1:]."""

    def __init__(
        self,
        batch_sizes: list[int],
        lr_factors: list[float],
        base_lr: float,
        base_batch_size: int,
        seeds: list[int],
        momenta: list[float],
    ) -> None:
        super().__init__()
        self.batch_sizes, self.lr_factors = list(batch_sizes), list(lr_factors)
        self.base_lr, self.base_batch_size = base_lr, base_batch_size
        self.seeds, self.momenta = list(seeds), list(momenta)
        with usage_errors_exit():  # one line, not Hydra's InstantiationException around it
            check_grid(self.batch_sizes, self.lr_factors, base_lr, base_batch_size, self.seeds, self.momenta)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        if swept := [o.input_line for o in parser.parse_overrides(arguments) if o.is_sweep_override()]:
            with usage_errors_exit():
                raise ConfigError(
                    f"experiment=tuned makes its own grid; {swept[0]} sweeps a key: set hydra.sweeper.batch_sizes, "
                    "lr_factors, momenta or seeds instead, or give one value"
                )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        grid = [
            (b, lr, m)
            for b in self.batch_sizes
            for m in self.momenta
            for lr in lr_grid(b, self.base_lr, self.base_batch_size, self.lr_factors, m)
        ]
        first = [[*arguments, *job_overrides(b, lr, m, self.seeds[0])] for b, lr, m in grid]
        log.info("tuned study, phase 1: %d runs (batch sizes x lr grid x momenta)", len(first))
        # the first B's grid alone, so a target that it does not reach is said before the other B train in vain
        lead = sum(1 for b, _, _ in grid if b == self.batch_sizes[0])
        phase_one = list(self.launcher.launch(first[:lead], initial_job_idx=0))
        self.warn_if_not_reached(self.candidates(phase_one), self.batch_sizes[0])
        if lead < len(first):
            phase_one += list(self.launcher.launch(first[lead:], initial_job_idx=lead))
        candidates = self.candidates(phase_one)
        chosen = self.select(candidates)
        second = [
            [*arguments, *job_overrides(c.batch_size, c.lr, c.momentum, seed)]
            for c in chosen.values()
            if c is not None
            for seed in self.seeds[1:]
        ]
        self.write_selection(sweep_dir, grid, chosen)
        log.info("%s", phase_two_summary(chosen, candidates, self.target(), self.seeds[1:]))
        phase_two = self.launcher.launch(second, initial_job_idx=len(first)) if second else []
        return [phase_one, phase_two]

    def target(self) -> float | None:
        return OmegaConf.select(self.config, "trainer.stop_at.val_acc", default=None)

    def budget(self) -> str:
        """The runs' budget as set: "trainer.max_epochs=30, trainer.stop_at.max_steps=10000"."""
        keys = ("trainer.max_epochs", "trainer.stop_at.max_steps")
        return ", ".join(f"{k}={v}" for k in keys if (v := OmegaConf.select(self.config, k, default=None)) is not None)

    def warn_if_not_reached(self, candidates: list, batch_size: int) -> None:
        """One warning when no run of `batch_size`'s grid reached the target: the best accuracy and what to change."""
        mine = [c for c in candidates if c.batch_size == batch_size]
        target = self.target()
        if mine and target is not None and select_best(mine) is None:
            log.warning("%s", not_reached_warning(batch_size, mine, target, self.budget() or "the budget"))

    @staticmethod
    def candidates(results) -> list:
        """The Candidates of the phase-1 runs that left a summary."""
        found = []
        for result in results:
            summary = RunFolder(result.hydra_cfg.hydra.runtime.output_dir).summary(strict=False)
            if summary is not None and "batch_size" in summary:
                found.append(candidate_from_summary(summary))
        return found

    def select(self, candidates: list) -> dict:
        """{B: the selected Candidate, or None when no run of B reached the target} from the phase-1 runs."""
        chosen = {b: select_best([c for c in candidates if c.batch_size == b]) for b in self.batch_sizes}
        for b, c in chosen.items():
            best = best_text([x for x in candidates if x.batch_size == b])
            log.info(
                "B=%d: %s",
                b,
                f"lr {c.lr:g}, momentum {c.momentum:g}, {c.steps:.1f} steps" if c else f"not reached ({best})",
            )
        return chosen

    def write_selection(self, sweep_dir: Path, grid, chosen: dict) -> None:
        write_json(
            sweep_dir / "tuned_selection.json",
            {
                "grid": [{"batch_size": b, "lr": lr, "momentum": m} for b, lr, m in grid],
                "seeds": self.seeds,
                "selected": {
                    str(b): None if c is None else {"lr": c.lr, "momentum": c.momentum, "steps": c.steps}
                    for b, c in chosen.items()
                },
                "rule": "fewest steps to target (the crossing interpolated in log-steps) among seed-0 runs that "
                "reached it; ties: higher val_acc, smaller lr",
            },
        )
