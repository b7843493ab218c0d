"""One run on several processes (trainer=ddp): which share of every batch each process takes.

`data.batch_size` is always the *global* batch B: one optimizer step consumes B samples (times
`optim.accumulate`) whatever the number of processes W = trainer.devices x trainer.num_nodes.
Each process takes every W-th sample of the step (rank r: samples r, r + W, ...), so a process
sees B / W samples per micro-batch, and B must be divisible by W. Every process scales its summed
loss by W / n (n = samples of the whole step) and DDP averages the gradients over the W processes:

    (1/W) sum_r (W/n) sum_{i in share r} grad l_i = (1/n) sum_{i in step} grad l_i,

the gradient of the step's mean loss, the same as one process with batch B (exact also for a
last step of an epoch whose n is not a multiple of W).
"""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from bsstudy import ConfigError, is_positive_int

DDP_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true")


def world_size(trainer_cfg) -> int:
    """W = processes of one run: trainer.devices x trainer.num_nodes under DDP, else 1."""
    if trainer_cfg.strategy not in DDP_STRATEGIES:
        return 1
    devices = trainer_cfg.devices
    return (len(devices) if not isinstance(devices, int) else devices) * trainer_cfg.num_nodes


def per_device_batch_size(batch_size: int, world: int) -> int:
    """B / W, the micro-batch of each process; a B not divisible by W is a ConfigError naming both."""
    if batch_size % world:
        raise ConfigError(
            f"data.batch_size ({batch_size}) must be divisible by the number of DDP processes, "
            f"trainer.devices x trainer.num_nodes = {world}: data.batch_size is the global batch, "
            f"split evenly over the processes"
        )
    return batch_size // world


def check_distributed_config(cfg) -> None:
    """trainer.strategy / devices / num_nodes, and every (scheduled) batch size divisible by W."""
    trainer = cfg.trainer
    if trainer.strategy not in ("auto", *DDP_STRATEGIES):
        raise ConfigError(f"trainer.strategy must be one of {['auto', *DDP_STRATEGIES]}; got {trainer.strategy!r}")
    if not is_positive_int(trainer.num_nodes):
        raise ConfigError(f"trainer.num_nodes must be a positive integer; got {trainer.num_nodes!r}")
    if trainer.strategy == "auto":
        return
    devices = trainer.devices
    device_list = (
        not isinstance(devices, (int, str)) and devices and all(isinstance(d, int) and d >= 0 for d in devices)
    )
    if not (is_positive_int(devices) or device_list):
        raise ConfigError(
            f"trainer.devices must be a positive integer or a list of device indices under trainer=ddp; got {devices!r}"
        )
    world = world_size(trainer)
    for batch_size in [cfg.data.batch_size, *(cfg.data.batch_size_schedule or {}).values()]:
        per_device_batch_size(batch_size, world)
    if world > 1 and HydraConfig.get().mode == RunMode.MULTIRUN and not launched_externally():
        raise ConfigError(
            "trainer=ddp inside a local -m sweep: Lightning starts the extra processes by re-running the "
            "command line, which would re-run the whole sweep. Run one command per run "
            "(python -m bsstudy trainer=ddp data.batch_size=...), or sweep with hydra/launcher=slurm, "
            "where SLURM starts one task per device"
        )


def launched_externally() -> bool:
    """True where a cluster (SLURM, torchrun) has started one process per device, not Lightning."""
    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()
