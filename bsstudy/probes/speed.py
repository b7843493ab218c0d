"""Speed and memory of the training: seconds per optimizer step, samples per second, time per epoch, peak memory.

One Lightning batch is a chunk of many optimizer steps (bsstudy/train/module.py). The probe times every
chunk with time.perf_counter from on_train_batch_start to on_train_batch_end, on a GPU after
torch.cuda.synchronize (kernels run asynchronously, so an unsynchronized clock measures launches),
and divides by the steps and samples the chunk took: step time = seconds / steps, throughput =
samples / seconds. The first `warmup_chunks` chunks of the run (allocator, caches, BLAS set-up)
are recorded but not counted. The headline numbers are the median and quartiles over the timed
chunks; the time per epoch is measured between the epoch's first and last hook (synchronized).

Peak memory, reset when training starts, so that runs sharing one process (a sequential sweep, a
joblib worker) are each measured on their own: on a GPU torch.cuda.max_memory_allocated; on the
CPU the process's peak resident set size (VmHWM, reset by writing 5 to /proc/self/clear_refs on
Linux). The CPU number is the whole process: the data set held in memory, the model, the
activations of one step, and memory an earlier run of the same process freed but the allocator
kept; `peak_memory_increase_bytes` (peak minus the memory in use when training started) is the
part training itself added, the one that grows with B.

Files: <run>/probes/speed/chunks.csv (epoch, chunk, steps, samples, seconds, step_time_s,
samples_per_s, warmup). bsstudy/analysis/speed_table.py turns the runs of a sweep into the per-B table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from bsstudy.config import Rule
from bsstudy.resources import cpu_model, peak_memory, proc_status_bytes, synchronized_now
from bsstudy.runfolder import write_table
from bsstudy.train.probe import Probe

log = logging.getLogger(__name__)

CHUNK_COLUMNS = ["epoch", "chunk", "steps", "samples", "seconds", "step_time_s", "samples_per_s", "warmup"]
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> bool:
    """Restart the peak-memory count; False where the OS does not allow it (the peak is then since process start)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        CLEAR_REFS.write_text("5")  # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def current_memory(device: torch.device) -> int | None:
    """Memory in use now: torch.cuda.memory_allocated on a GPU, else the resident set size (VmRSS)."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else proc_status_bytes("VmRSS")


def device_name(device: torch.device) -> str:
    """What the numbers hold for: the GPU's name, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    return f"{cpu_model()} (cpu, {torch.get_num_threads()} threads)"


def quartiles(values: list[float]) -> tuple[float, float, float] | tuple[None, None, None]:
    """(q25, median, q75) with linear interpolation between order statistics; Nones for no values."""
    if not values:
        return None, None, None
    q25, median, q75 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(q25), float(median), float(q75)


def write_chunks_csv(path: Path, rows: list[dict]) -> None:
    write_table(path, rows, CHUNK_COLUMNS)


class Speed(Probe):
    """Per-chunk step time and throughput, epoch time and peak memory; headline numbers in summary.json."""

    report_section = "bsstudy.analysis.report.cost:speed_section"
    report_order = 70
    settings = {"warmup_chunks": Rule("int", min=0)}

    def __init__(self, out_dir: str | Path, warmup_chunks: int = 2):
        super().__init__(out_dir)
        self.warmup_chunks = warmup_chunks
        self.rows: list[dict] = []
        self.epoch_times_s: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.peak_reset = reset_peak_memory(pl_module.device)
        self.memory_at_start = current_memory(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start = synchronized_now(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.before = (pl_module.epoch_steps, pl_module.epoch_samples)
        self.chunk_start = synchronized_now(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        seconds = synchronized_now(pl_module.device) - self.chunk_start
        steps, samples = pl_module.epoch_steps - self.before[0], pl_module.epoch_samples - self.before[1]
        self.rows.append(
            {
                "epoch": trainer.current_epoch + 1,
                "chunk": batch_idx,
                "steps": steps,
                "samples": samples,
                "seconds": seconds,
                "step_time_s": seconds / steps,
                "samples_per_s": samples / seconds,
                "warmup": len(self.rows) < self.warmup_chunks,
            }
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = synchronized_now(pl_module.device) - self.epoch_start - pl_module.record.probe_time_s
        self.epoch_times_s.append(seconds)
        write_chunks_csv(self.out_dir / "chunks.csv", self.rows)

    def on_train_end(self, trainer, pl_module) -> None:
        timed = [r for r in self.rows if not r["warmup"]]
        if not timed:
            log.warning("probes.speed: all %d chunks were warm-up; lower probes.speed.warmup_chunks", len(self.rows))
        step_q25, step_median, step_q75 = quartiles([r["step_time_s"] for r in timed])
        rate_q25, rate_median, rate_q75 = quartiles([r["samples_per_s"] for r in timed])
        memory, kind = peak_memory(pl_module.device)
        steps_per_epoch = pl_module.epoch_plan(0).steps
        self.summary = {
            "step_time_median_s": step_median,
            "step_time_q25_s": step_q25,
            "step_time_q75_s": step_q75,
            "samples_per_s_median": rate_median,
            "samples_per_s_q25": rate_q25,
            "samples_per_s_q75": rate_q75,
            "epoch_time_s": float(np.median(self.epoch_times_s)) if self.epoch_times_s else None,
            "epoch_times_s": self.epoch_times_s,  # every epoch measured (the first includes the warm-up)
            "epoch_time_from_steps_s": steps_per_epoch * step_median if timed else None,  # a warm epoch
            "steps_per_epoch": steps_per_epoch,
            "peak_memory_bytes": memory,
            "memory_kind": kind,
            # what training added to the memory in use when it started (data and model are loaded by then)
            "memory_at_train_start_bytes": self.memory_at_start,
            "peak_memory_increase_bytes": memory - self.memory_at_start if self.memory_at_start is not None else None,
            "memory_peak_since": "train_start" if self.peak_reset else "process_start",
            "device": device_name(pl_module.device),
            "device_type": pl_module.device.type,
            "timed_chunks": len(timed),
            "warmup_chunks": self.warmup_chunks,
        }
