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

from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from bsstudy import ConfigError

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


def launched_externally() -> bool:
    """True where a cluster (SLURM, torchrun) has started one process per device, not Lightning."""
    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()
