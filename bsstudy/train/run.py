"""One run: validate the config, build data, model, callbacks, loggers and trainer, fit, write the run files."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from bsstudy import RunFolderError, WriteError
from bsstudy.config import check_batch_size, check_config, fast_step_blocker, model_name, trainer_arguments, world_size
from bsstudy.resources import library_versions, machine, peak_memory
from bsstudy.runfolder import RunCheckpoints, RunFolder, resume_checkpoint, write_json
from bsstudy.runfolder.identity import check_data_files, check_run_folder, locked_run_folder, record_identity
from bsstudy.train.console import StepProgressBar, quiet_lightning
from bsstudy.train.data import load_data
from bsstudy.train.evaluate import EpochEvaluation
from bsstudy.train.module import StudyModule
from bsstudy.train.net import build_net
from bsstudy.train.parallel import launcher_summary
from bsstudy.train.probe import TrainEnd, build_probe, measure_at_train_end
from bsstudy.train.signals import STOP, RunInterrupted, StopAtChunkBoundary
from bsstudy.train.stopping import stop_at_callbacks, stopped
from bsstudy.train.target import target_callbacks
from bsstudy.train.wandb_files import log_run_files, wandb_group

log = logging.getLogger(__name__)
FAILED_JOBS: list[str] = []  # "<run folder>: <error>" of this process's sweep jobs that raised (cli() reports them)


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    """Instantiate every logger of the `logger` group; W&B runs of one sweep share a group: logger.wandb.group, else
    named by the sweep folder (wandb_files.wandb_group: multirun/<date>/<time> -> <date>/<time>)."""
    loggers = []
    for name, logger_cfg in cfg.logger.items():
        if name == "wandb":
            hydra_cfg = HydraConfig.get()
            sweep = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else str(run_dir)
            logger = instantiate(logger_cfg, group=logger_cfg.group or wandb_group(sweep), name=run_dir.name)
        else:
            logger = instantiate(logger_cfg)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        loggers.append(logger)
    return loggers


def selected_probes(probes_cfg: DictConfig) -> dict[str, DictConfig]:
    """probes.<name> entries that are probes (have a `_target_`, from the probes group). A preset's settings
    for a probe the user then left out (`experiment=keskar_sharpness probes=[]`) are not a probe: skipped."""
    selected = {name: p for name, p in probes_cfg.items() if "_target_" in p}
    for name in probes_cfg.keys() - selected.keys():
        log.warning("probes.%s has settings but is not among the selected probes; ignored", name)
    return selected


def train(cfg: DictConfig) -> dict:
    """Train one run as configured and return its summary (also written to <run>/summary.json).
    The run folder is locked while it trains and must hold nothing or this same run (bsstudy/runfolder/identity.py)."""
    STOP.check()  # a stop signal before this job of a sweep began: it does not start
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if requeued_by_slurm() and not cfg.resume:  # preempted or timed out, requeued by submitit: continue the run
        log.info("SLURM requeued this job (SLURM_RESTART_COUNT=%s): resume=true", os.environ["SLURM_RESTART_COUNT"])
        cfg.resume = True
    if rank_zero_only.rank != 0:  # DDP: rank 0 holds and checks the folder; the others train alongside it
        return fit_run(cfg, run_dir)
    with locked_run_folder(run_dir):
        if (done := check_run_folder(cfg, run_dir)) is not None:
            return done
        return fit_run(cfg, run_dir)  # records the run's identity once its data is loaded


def requeued_by_slurm() -> bool:
    """SLURM counts the restarts of a requeued job in SLURM_RESTART_COUNT (absent or 0 on its first start)."""
    return os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")


def fit_run(cfg: DictConfig, run_dir: Path) -> dict:
    """Fit the run in `run_dir` (from checkpoints/last.ckpt with resume=true) and write its summary. A refusal
    (RunFolderError: the checkpoints cannot be read, the data files are not the run's) leaves the folder as it was."""
    summary_path = RunFolder(run_dir).summary_path
    started = time.perf_counter()
    module = trainer = summary = None
    resumed, train_end, probes_by_name = {}, TrainEnd(), {}
    restore_signal_handlers = STOP.install()
    try:
        check_config(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        ckpt_path = resume_checkpoint(RunFolder(run_dir).checkpoints) if cfg.resume else None
        resumed = resume_record(cfg.resume, ckpt_path, run_dir)
        if ckpt_path is not None:
            log.info("resume=true: continuing from %s", ckpt_path)
        data = load_data(cfg.data, cfg.seed)
        if rank_zero_only.rank == 0:  # DDP: rank 0 holds the folder
            check_data_files(run_dir, data.files, continuing=ckpt_path is not None)
            record_identity(cfg, run_dir, data.files)
        check_batch_size(cfg, data.n_train)
        net = build_net(cfg.model, data.input_size, data.num_classes)
        module = StudyModule(
            net,
            data,
            cfg.optim,
            cfg.data.batch_size,
            cfg.data.drop_last,
            cfg.trainer.chunk_samples,
            cfg.seed,
            fast_step=cfg.trainer.fast_step != "off"
            and fast_step_blocker(cfg.optim, cfg.model, world_size(cfg.trainer), cfg.trainer.precision) is None,
            batch_size_schedule=cfg.data.batch_size_schedule,
            cuda_graph=bool(cfg.trainer.get("cuda_graph")),
        )
        # under DDP only rank 0 measures and writes files; the other processes train alongside it
        is_rank_zero = rank_zero_only.rank == 0
        selected = selected_probes(cfg.probes)
        targets = target_callbacks(cfg.trainer.stop_at, run_dir) if is_rank_zero else []
        probes = (
            [build_probe(name, p, RunFolder(run_dir).probe_dir(name)) for name, p in selected.items()]
            if is_rank_zero
            else []
        )
        probes_by_name = dict(zip(selected, probes, strict=False))
        callbacks = [
            train_end,  # first: notes that the end-of-training hooks have begun
            *probes,  # before the evaluation: their epoch columns join its metrics.csv row
            EpochEvaluation(cfg.trainer.eval_chunk_size),
            *targets,  # val_acc within the epoch (after the probes: their chunk-end measurements are not in its time)
            *stop_at_callbacks(cfg.trainer.stop_at),  # EarlyStopping: reads the evaluation's row of this epoch
            *(instantiate(c) for c in cfg.trainer.callbacks.values()),  # the user's own, e.g. EarlyStopping
            *(instantiate(c) for c in (cfg.get("callbacks") or {}).values()),  # the callbacks group
            RunCheckpoints(RunFolder(run_dir).checkpoints, list(cfg.checkpoint.at_epochs), cfg.checkpoint.save_last),
            StopAtChunkBoundary(STOP),
        ]
        if cfg.trainer.progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(StepProgressBar())  # in optimizer steps (a rich_progress_bar callback is one already)
        quiet_lightning()  # no banner, adverts or deprecation warnings from inside Lightning (train/console.py)
        loggers = build_loggers(cfg, run_dir)
        trainer = L.Trainer(
            **trainer_arguments(cfg.trainer),  # accelerator, devices, strategy, num_nodes, max_epochs, and any other
            use_distributed_sampler=False,  # every DDP process walks all chunks and takes its share of each step
            logger=loggers,
            callbacks=callbacks,
            enable_progress_bar=cfg.trainer.progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,  # nothing is logged per batch; this only silences Lightning's warning
            reload_dataloaders_every_n_epochs=1,  # the number of chunks changes with a batch-size schedule
            limit_val_batches=0,
            default_root_dir=run_dir,
        )
        STOP.check()
        trainer.fit(module, ckpt_path=ckpt_path)
        if not train_end.reached:  # resumed after its training ended (its final-weights probes were interrupted)
            train_end.reached = True  # an interruption from here on is one during the end-of-training probes
            measure_at_train_end(trainer, module, probes_by_name)
            earlier = (RunFolder(run_dir).summary() or {}).get("probes") or {}  # what the interrupted start measured
            for name, probe in probes_by_name.items():
                probe.summary = probe.summary or earlier.get(name, {})
        status = "diverged" if module.diverged else "completed"
        summary = build_summary(cfg, run_dir, module, status, time.perf_counter() - started) | resumed
        summary |= stopped(trainer, module.diverged, summary["final"])
        for target in targets:
            summary["target"] = target.summary
            summary |= target.stopped(module.optimizer_steps) or {}
        summary["probes"] = {
            name: probe.summary for name, probe in zip(selected, probes, strict=False) if probe.summary
        }
    except (SystemExit, KeyboardInterrupt) as err:  # a stop signal, Lightning's SIGTERMException, a 2nd Ctrl+C
        summary = build_summary(cfg, run_dir, module, "interrupted", time.perf_counter() - started) | resumed
        during = [n for n, p in probes_by_name.items() if p.measures_at_train_end] if train_end.reached else []
        summary["error"] = interruption_message(err, summary["epochs_completed"], during)
        if during:  # the probes that measured before it (the resume that measures the others keeps these)
            summary["probes"] = {name: probe.summary for name, probe in probes_by_name.items() if probe.summary}
        if rank_zero_only.rank == 0:
            write_json(summary_path, summary)
        log.error("%s: %s", run_dir, summary["error"])
        if (signum := interrupting_signal(err)) is None:
            raise  # not a signal of ours: the exit goes on as it was asked for
        raise RunInterrupted(signum) from None
    except RunFolderError:
        raise  # the folder holds a run this start must not touch: its summary stays
    except Exception as err:
        summary = build_summary(cfg, run_dir, module, "failed", time.perf_counter() - started) | resumed
        summary["error"] = f"{type(err).__name__}: {err}"
        summary["traceback"] = traceback.format_exc()
        if rank_zero_only.rank == 0:
            write_failed_summary(summary_path, summary, err)
        raise
    finally:
        restore_signal_handlers()
        for logger in trainer.loggers if trainer and summary else []:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update({k: v for k, v in summary.items() if k != "traceback"})
                log_run_files(logger.experiment, run_dir)  # its metrics and probe files as W&B tables and images
                logger.experiment.finish()
    if rank_zero_only.rank == 0:
        write_json(summary_path, summary)
    log.info("%s: %s; summary in %s", status, run_dir, summary_path)
    return summary


def resume_record(resume: bool, checkpoint: Path | None, run_dir: Path) -> dict:
    """summary.json's `resumed`: whether this start continued from a checkpoint. resume=true with none to continue
    from (a new or empty folder, a run that failed before training) starts the run fresh: said in a warning and in
    `resumed_reason`, as the user expected a continuation."""
    if checkpoint is not None:
        return {"resumed": True, "resumed_from": str(checkpoint)}
    if not resume:
        return {"resumed": False}
    reason = f"resume=true, but {run_dir} holds no checkpoint to continue from: the run started fresh"
    log.warning("%s", reason)
    return {"resumed": False, "resumed_reason": reason}


def write_failed_summary(path: Path, summary: dict, err: Exception) -> None:
    """summary.json of a run that raised `err`. When it cannot be written either (the full disk that failed the run):
    after a failed write, one WriteError naming both files; after any other error, one log line, and `err` goes on."""
    try:
        write_json(path, summary)
    except WriteError as write_err:
        if isinstance(err, WriteError):
            raise WriteError(write_err.errno, f"{err}; {write_err}") from err
        log.error("%s", write_err)


def job_failed(folder: str | Path, err: Exception) -> float:
    """A sweep job that raised: remember it for the sweep's exit code, log one line, return NaN to the sweeper."""
    FAILED_JOBS.append(f"{folder}: {type(err).__name__}: {err}".splitlines()[0])
    log.error("job failed (%s: %s); the sweep goes on. Details: %s/summary.json", type(err).__name__, err, folder)
    return float("nan")


def sweeper_objective(summary: dict) -> float:
    """The final val_acc; NaN (with one warning) without a validation split or without a finished epoch."""
    value = (summary.get("final") or {}).get("val_acc")
    if value is None:
        log.warning("no validation accuracy (data.val_size=0?): returning NaN to the sweeper, never test accuracy")
        return math.nan
    return float(value)


def interrupting_signal(err: BaseException) -> int | None:
    """The signal behind an interruption: ours names it; Lightning's SIGTERMException is SIGTERM; a
    KeyboardInterrupt is Ctrl+C; any other exit (Lightning's after a second Ctrl+C, submitit's after it
    requeued a timed-out job) is the signal received, if any, else None."""
    if isinstance(err, RunInterrupted):
        return err.signum
    if isinstance(err, SIGTERMException):
        return signal.SIGTERM
    return signal.SIGINT if isinstance(err, KeyboardInterrupt) else STOP.signum


def interruption_message(err: BaseException, epochs_completed: int, during: list[str] | None = None) -> str:
    """summary.json's `error` of an interrupted run. `during`: the end-of-training probes it was measuring, after
    its training had ended (resume=true then measures them again, and trains no more)."""
    signum = interrupting_signal(err)
    cause = signal.Signals(signum).name if signum is not None else f"an exit request ({err!r})"
    if during:
        return (
            f"interrupted by {cause} during the end-of-training probes ({', '.join(during)}), after {epochs_completed} "
            "completed epochs (the whole training); resume=true (same run folder) measures them again without training"
        )
    return (
        f"interrupted by {cause} after {epochs_completed} completed epochs; resume=true (same run folder) continues "
        f"from the end of epoch {epochs_completed}"
    )


def build_summary(
    cfg: DictConfig,
    run_dir: Path,
    module: StudyModule | None,
    status: str,
    wall_time_s: float,
    launcher: dict | None = None,
) -> dict:
    """What a reader wants first: status, final and best metrics, cost, and what exactly was run. `launcher`:
    summary.json's `launcher` when the caller knows it (packed runs), else read from Hydra's config."""
    rows = RunFolder(run_dir).metrics()
    summary = {
        "status": status,
        **epochs_trained(rows),
        "final": rows[-1] if rows else None,
        **best_on_validation(rows),
        "wall_time_s": wall_time_s,
        "train_time_s": rows[-1]["train_time_s"] if rows else None,
        "dataset": cfg.data.name,
        "batch_size": cfg.data.batch_size,
        "batch_size_schedule": OmegaConf.to_container(cfg.data.batch_size_schedule)
        if OmegaConf.is_config(cfg.data.batch_size_schedule)
        else cfg.data.batch_size_schedule,  # as given, also when it is not a mapping (the summary of that error)
        "accumulate": cfg.optim.accumulate,
        "drop_last": cfg.data.drop_last,
        "seed": cfg.seed,
        "model": model_name(cfg.model),
        "optimizer": cfg.optim.name,
        "lr": cfg.optim.lr,
        "momentum": cfg.optim.get("momentum"),
        "lr_scaling": cfg.optim.lr_scaling,
        "versions": library_versions(),
        "machine": machine(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # with wall_time_s: when it ran
        "run_dir": str(run_dir),
    }
    if module is not None:
        summary |= {
            "effective_batch_size": module.epoch_plan(0).samples_per_step,
            "effective_lr": module.epoch_plan(0).lr,
            "world_size": world_size(cfg.trainer),  # DDP processes; data.batch_size is their global batch
            "per_device_batch_size": cfg.data.batch_size // world_size(cfg.trainer),
            "fast_step": module.take_step == module.fast_step,
            "cuda_graph_replays": module.graph_replays,  # replays of a CUDA graph of cuda_graph.STEPS_PER_GRAPH steps
            "optimizer_steps": module.optimizer_steps,
            "steps_per_epoch": module.epoch_plan(0).steps,
            "samples_seen": module.samples_seen,
            "n_train": module.data.n_train,
            "n_val": module.data.n_val,
            "n_test": len(module.data.y_test),
            "device": str(module.device),
            "threads": torch.get_num_threads(),  # torch CPU threads (a parallel sweep gives each job its share)
            "launcher": launcher or launcher_summary(cfg),  # what a parallel sweep set after Hydra saved the config
            "peak_memory_bytes": peak_memory(module.device)[0],
        }
    return summary


def epochs_trained(rows: list[dict]) -> dict:
    """`epochs_completed`: the whole epochs trained; `epochs_trained`: with the part of an epoch that training left
    before its end (a timer, a step budget or target, divergence: its metrics.csv row has `epoch_fraction`), e.g.
    2 and 2.45 for a run stopped by +trainer.max_time at 45% of its third epoch."""
    last = rows[-1] if rows else {"epoch": 0}
    fraction = last.get("epoch_fraction")
    completed = int(last["epoch"]) - (fraction is not None)
    return {"epochs_completed": completed, "epochs_trained": round(completed + (fraction or 0.0), 6)}


def best_on_validation(rows: list[dict]) -> dict:
    """The epoch selected on validation: highest val_acc (the first such epoch on a tie; NaN never wins),
    with the test accuracy reported at that epoch. Without val_acc (data.val_size=0) nothing is selected."""
    scored = [r for r in rows if isinstance(r.get("val_acc"), (int, float)) and r["val_acc"] == r["val_acc"]]
    if not scored:
        reason = "no validation split (data.val_size=0)" if rows else "no epoch was evaluated"
        return {"best": None, "selected_on": None, "selected_on_reason": f"{reason}: nothing is selected"}
    best = max(scored, key=lambda r: r["val_acc"])
    return {
        "best": {"epoch": int(best["epoch"]), "val_acc": best["val_acc"], "test_acc": best["test_acc"]},
        "selected_on": "val",
    }
