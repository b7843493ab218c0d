"""The launcher of `hydra/launcher=packed` (bsstudy/conf/hydra/launcher/packed.yaml): the jobs of a sweep that
differ only in seed and/or lr train together, up to `pack_size` at a time, as one batched model
(bsstudy/train/packed.py). Jobs that cannot be packed (`pack_blocker`, or a pack of one) run one at a time as with
Hydra's basic launcher, whose `launch` this one follows. Hydra finds launchers only in the `hydra_plugins`
package, hence this module's place.
"""

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from bsstudy import ConfigError, is_positive_int, usage_errors_exit
from bsstudy.runfolder.identity import override_key
from bsstudy.train.packed import PACK_KEYS, Member, pack_blocker, prepare_member, train_pack
from bsstudy.train.run import job_failed, sweeper_objective
from bsstudy.train.signals import STOP

log = logging.getLogger(__name__)


@dataclass
class Job:
    idx: int
    overrides: list[str]
    cfg: DictConfig


def pack_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """What jobs of one pack share: their overrides without those of PACK_KEYS."""
    return tuple(sorted(o for o in overrides if override_key(o) not in PACK_KEYS))


def packs_of(jobs: list[Job], pack_size: int) -> list[list[Job]]:
    """The jobs grouped by `pack_key`, in the order of their first job, each group cut into packs of pack_size."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(pack_key(job.overrides), []).append(job)
    return [group[i : i + pack_size] for group in groups.values() for i in range(0, len(group), pack_size)]


def blocker(cfg: DictConfig) -> str | None:
    """pack_blocker, or the error a config too broken to judge raises: such jobs run alone and fail there, one by
    one, with the error a run alone gives."""
    try:
        return pack_blocker(cfg)
    except Exception as err:
        return f"the config cannot be read ({type(err).__name__}: {err})"


class PackedLauncher(Launcher):
    def __init__(self, pack_size: int) -> None:
        super().__init__()
        if not is_positive_int(pack_size):
            message = f"hydra.launcher.pack_size must be an integer >= 1 (runs per pack); got {pack_size!r}"
            with usage_errors_exit():  # one line, not Hydra's InstantiationException around it
                raise ConfigError(message)
        self.pack_size = pack_size

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [self.compose(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        returns: dict[int, JobReturn] = {}
        for pack in packs_of(jobs, self.pack_size):
            why = "a pack of one" if len(pack) == 1 else blocker(pack[0].cfg)
            if why:
                log.info("packed launcher: %d job(s) run one at a time: %s", len(pack), why)
                returns |= {job.idx: self.run_alone(job) for job in pack}
            else:
                returns |= self.run_pack(pack)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[job.idx] for job in jobs]

    def compose(self, idx: int, overrides: list[str]) -> Job:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = idx
        return Job(idx, overrides, cfg)

    def run(self, job: Job, task_function) -> JobReturn:
        log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
        return run_job(hydra_context=self.hydra_context, task_function=task_function, config=job.cfg,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")  # fmt: skip

    def run_alone(self, job: Job) -> JobReturn:
        return self.run(job, self.task_function)

    def run_pack(self, pack: list[Job]) -> dict[int, JobReturn]:
        """Prepare each job's run folder (held locked until the pack ends), train the members together, and give
        each job the value a run alone returns (bsstudy/__main__.py: main)."""
        STOP.check()  # a stop signal after the last pack: the next one does not start
        log.info("packed launcher: %d runs in one pack", len(pack))
        with ExitStack() as locks:
            returns = {job.idx: self.run(job, partial(prepare_member, locks)) for job in pack}
            members = {idx: r.return_value for idx, r in returns.items() if isinstance(r._return_value, Member)}
            for ret in returns.values():
                if isinstance(ret._return_value, dict):  # a run that had ended: its summary
                    ret.return_value = sweeper_objective(ret._return_value)
            if members:
                cfg = next(iter(members.values())).cfg
                train_pack(list(members.values()), cfg.trainer.max_epochs, cfg.trainer.threads)
            for idx, member in members.items():
                summary = member.folder.summary() or {}
                if summary.get("status") in ("completed", "diverged"):
                    returns[idx].return_value = sweeper_objective(summary)
                else:  # failed: as a run alone's job that raised (bsstudy/__main__.py: main)
                    returns[idx].return_value = job_failed(member.run_dir, RuntimeError(summary.get("error")))
                returns[idx].status = JobStatus.COMPLETED
        return returns
