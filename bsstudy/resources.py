"""What a run costs and what ran it: synchronized clocks, peak memory, library versions, the machine.

Measured at run time, never assumed: a constant measured on one CPU kind can be wrong on another."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

PROC_STATUS = Path("/proc/self/status")  # Linux: the process's current and peak resident set size


def synchronized_now(device: torch.device) -> float:
    """perf_counter after every queued GPU kernel has finished (on the CPU: at once); kernels run
    asynchronously, so an unsynchronized clock would measure their launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def proc_status_bytes(field: str) -> int | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM; reported in kB) in bytes, or None off Linux."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, kind): torch.cuda.max_memory_allocated on a GPU, else the process's peak RSS (VmHWM, which
    the speed probe can reset; ru_maxrss off Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    if (peak := proc_status_bytes("VmHWM")) is not None:
        return peak, "rss"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss"  # Linux reports KiB


def library_versions() -> dict[str, str]:
    names = ["bsstudy", "torch", "lightning", "torchmetrics", "hydra-core", "omegaconf", "numpy", "wandb"]
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor(), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What ran the run, for published results: CPU model and logical CPUs, and the GPUs torch sees."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = [torch.cuda.get_device_name(i) for i in range(count)]
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpus": gpus}
