"""Sweep jobs side by side on one machine (`hydra/launcher=parallel`, hydra-joblib-launcher): each job's share.

With n jobs at a time, a job on the CPU gets cores // n torch threads (unless trainer.threads is set),
so n jobs fill the cores without oversubscribing them. On a machine with G GPUs each job gets a GPU
of its own: it starts looking at GPU (job number mod G) and takes the first one no other job of the
sweep holds (an flock on <sweep>/.gpu_locks/gpu<i>.lock, released when the job ends), waiting if all
are busy. A job's GPU is passed to Lightning as trainer.devices=[i] rather than via
CUDA_VISIBLE_DEVICES, because joblib reuses worker processes and a worker's CUDA is initialized by its
first job. The number of jobs, hydra.launcher.n_jobs, defaults to G, or 2 on a machine without GPUs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bsstudy.runfolder.identity import COMPOSED

log = logging.getLogger(__name__)

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
CPU_JOBS_WITHOUT_GPU = 2


def default_parallel_jobs() -> int:
    """hydra.launcher.n_jobs of the parallel preset: the number of GPUs, or 2 on a machine without GPUs."""
    return torch.cuda.device_count() or CPU_JOBS_WITHOUT_GPU


OmegaConf.register_new_resolver("bsstudy_parallel_jobs", default_parallel_jobs, replace=True)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(cores: int, jobs: int) -> int:
    """cores // jobs, at least 1: n jobs at a time share the cores without oversubscribing them."""
    return max(1, cores // jobs)


@contextmanager
def claimed_slot(lock_dir: Path, slots: int, preferred: int) -> Iterator[int]:
    """Hold one of `slots` slots (one lock file each) for the duration of the block: the first free one
    from `preferred` on (cyclically), or, if all are held, wait for `preferred`."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    order = [(preferred + k) % slots for k in range(slots)]
    locks = {i: FileLock(lock_dir / f"gpu{i}.lock") for i in order}
    slot = next((i for i in order if try_lock(locks[i])), None)
    if slot is None:
        locks[preferred].acquire()  # every GPU busy: wait for ours
        slot = preferred
    try:
        yield slot
    finally:
        locks[slot].release()


def try_lock(lock: FileLock) -> bool:
    try:
        lock.acquire(timeout=0)
        return True
    except Timeout:
        return False


def parallel_jobs() -> int | None:
    """Jobs at a time when this job was started by the joblib launcher of a sweep, else None."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.launcher.get("_target_") != JOBLIB_LAUNCHER:
        return None
    from joblib import effective_n_jobs

    return effective_n_jobs(hydra_cfg.launcher.n_jobs)  # n_jobs = -1 means one per core


SET_BY_LAUNCHER: dict[str, object] = {}  # key -> value the launcher gave the running job (summary.json `launcher`)


def set_by_launcher(cfg: DictConfig, key: str, value) -> None:
    """Set `key` (e.g. trainer.devices) for this job, remembering the composed value: Hydra saved .hydra/config.yaml
    before, so the run's own files say what was used (summary.json), and a resumed run that is given another
    GPU is still the same run (bsstudy/runfolder/identity.py compares the composed value)."""
    COMPOSED[key] = OmegaConf.select(cfg, key)
    OmegaConf.update(cfg, key, value)
    SET_BY_LAUNCHER[key] = value


def launcher_summary(cfg: DictConfig) -> dict:
    """summary.json's `launcher`: the sweep's launcher (null for a single run), jobs at a time, the torch threads
    and trainer.devices the run used, and which of them the launcher set."""
    hydra_cfg = HydraConfig.get()
    target = hydra_cfg.launcher.get("_target_") if hydra_cfg.mode == RunMode.MULTIRUN else None
    devices = cfg.trainer.devices
    return {
        "name": target.rsplit(".", 1)[-1] if target else None,
        "jobs_at_a_time": parallel_jobs() or 1,
        "threads": torch.get_num_threads(),
        "devices": OmegaConf.to_container(devices) if OmegaConf.is_config(devices) else devices,
        "set_by_launcher": {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
                            for k, v in SET_BY_LAUNCHER.items()},
    }  # fmt: skip


@contextmanager
def job_share(cfg: DictConfig) -> Iterator[None]:
    """`share` (below) with what it set forgotten when the job ends: joblib reuses a worker for the next job."""
    try:
        with share(cfg):
            yield
    finally:
        SET_BY_LAUNCHER.clear()
        COMPOSED.clear()


@contextmanager
def share(cfg: DictConfig) -> Iterator[None]:
    """Give this sweep job its share of the machine (module docstring) by setting trainer.threads or
    trainer.devices in `cfg`, for as long as the block runs; outside a parallel sweep, change nothing."""
    jobs = parallel_jobs()
    gpus = torch.cuda.device_count() if cfg.trainer.accelerator in ("gpu", "cuda") else 0
    if not jobs or jobs == 1:
        yield
    elif gpus and cfg.trainer.devices == 1 and cfg.trainer.strategy == "auto":
        hydra_cfg = HydraConfig.get()
        waited = time.perf_counter()
        lock_dir = Path(hydra_cfg.sweep.dir) / ".gpu_locks"
        with claimed_slot(lock_dir, gpus, hydra_cfg.job.num % gpus) as gpu:
            set_by_launcher(cfg, "trainer.devices", [gpu])
            log.info("parallel sweep: job %d runs on GPU %d (waited %.1f s)", hydra_cfg.job.num, gpu,
                     time.perf_counter() - waited)  # fmt: skip
            yield
    else:
        if cfg.trainer.threads is None:
            set_by_launcher(cfg, "trainer.threads", threads_per_job(available_cores(), jobs))
        log.info("parallel sweep: %d jobs at a time, %d torch threads each", jobs, cfg.trainer.threads)
        yield
