"""The LightningModule that trains a network (train/net.py) with minibatch SGD.

One Lightning batch is a *chunk* of many optimizer steps run in a tight inner loop with manual
optimization: Lightning's per-batch machinery (hooks, progress bar, loop bookkeeping) then costs
once per chunk instead of once per tiny step, while every step still sees its own slice of the
epoch's seeded permutation. Chunks end on step boundaries, so epochs (and checkpoints) do too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from bsstudy.train.cuda_graph import STEPS_PER_GRAPH, GraphedSteps
from bsstudy.train.data import TensorData, epoch_permutation, steps_per_epoch
from bsstudy.train.fast_step import DeferredUpdates, fast_sgd_step, look_ahead_rows, plain_sgd


def effective_lr(lr: float, scaling: str, batch_size: int, base_batch_size: int) -> float:
    """eta_eff = eta (none), eta * B/B0 (linear, Goyal et al. 2017) or eta * sqrt(B/B0) (sqrt, Krizhevsky 2014)."""
    ratio = batch_size / base_batch_size
    return {"none": lr, "linear": lr * ratio, "sqrt": lr * math.sqrt(ratio)}[scaling]


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: the lr of optimizer step t (0-based) is eta_eff * min(1, (t + 1) / warmup_steps)."""
    return 1.0 if step >= warmup_steps else (step + 1) / warmup_steps


def value_at(schedule, epoch: int, default):
    """The value of a step schedule {from_epoch: value} during `epoch` (0-based): the value of the
    largest key <= epoch, or `default` before the first key. None is an empty schedule."""
    keys = [k for k in (schedule or {}) if k <= epoch]
    return schedule[max(keys)] if keys else default


def build_optimizer(params, cfg, lr: float) -> torch.optim.Optimizer:
    """SGD (optionally with momentum / weight decay) or Adam, from the `optim` config group."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch does: batch size B, effective batch k*B per optimizer step, steps, steps per chunk, lr."""

    batch_size: int
    samples_per_step: int
    steps: int
    steps_per_chunk: int
    lr: float


@dataclass
class EpochRecord:
    """What probes add to the epoch being trained: the one interface between StudyModule and the probes.

    - `columns`: extra columns of this epoch's metrics.csv row (`record.columns |= {...}` before the
      epoch's evaluation runs);
    - `probe_time_s`: time spent in probes' measurements this epoch, kept out of the training time
      (`Probe.timed` adds to it);
    - `update_sq_norms`: a [steps of the epoch, parameters] buffer a probe asks for with
      `track_update_norms`; every step then writes ||theta_{t+1} - theta_t||^2 per parameter into its row.
    """

    columns: dict = field(default_factory=dict)
    probe_time_s: float = 0.0
    update_sq_norms: torch.Tensor | None = None

    def start_epoch(self) -> None:
        """A new epoch: no columns, no probe time (a requested update-norm buffer stays: probes ask for it in
        their own on_train_epoch_start, which Lightning calls before the module's)."""
        self.columns, self.probe_time_s = {}, 0.0

    def track_update_norms(self, steps: int, n_params: int, device: torch.device) -> torch.Tensor:
        self.update_sq_norms = torch.zeros(steps, n_params, device=device)
        return self.update_sq_norms

    def take_update_norms(self) -> torch.Tensor:
        """The epoch's update-norm buffer; steps stop writing update norms until it is asked for again."""
        norms, self.update_sq_norms = self.update_sq_norms, None
        return norms

    def update_norms_of(self, step: int) -> torch.Tensor | None:
        return None if self.update_sq_norms is None else self.update_sq_norms[step]


class StudyModule(L.LightningModule):
    """Trains `net` on `data` with batch size B (or a schedule of them), k-fold gradient accumulation
    and the lr of the `optim` config; `optimizer_steps` and `samples_seen` count what really happened."""

    def __init__(
        self,
        net: nn.Module,
        data: TensorData,
        optim_cfg,
        batch_size: int,
        drop_last: bool,
        chunk_samples: int,
        seed: int,
        fast_step: bool = False,
        batch_size_schedule: dict[int, int] | None = None,
        cuda_graph: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.net, self.data, self.optim_cfg, self.seed = net, data, optim_cfg, seed
        self.take_step = self.fast_step if fast_step else self.autograd_step
        self.deferred = DeferredUpdates()  # the fast step's pending updates, applied at the end of every chunk
        self.cuda_graph = (
            cuda_graph and fast_step
        )  # fast steps replayed from a CUDA graph (bsstudy/train/cuda_graph.py)
        self.graph_replays = 0
        self.graphed: GraphedSteps | None = None
        self.batch_size, self.batch_size_schedule = batch_size, batch_size_schedule
        self.drop_last, self.chunk_samples = drop_last, chunk_samples
        self.warmup_steps = round(optim_cfg.warmup_epochs * self.epoch_plan(0).steps)
        self.optimizer_steps = 0
        self.samples_seen = 0
        self.diverged = False
        self.world_size, self.rank = 1, 0  # DDP processes of the run and this one's rank; set in setup()
        self.record = EpochRecord()  # what probes add to the epoch (columns, probe time, update norms)

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """Batch size, steps and lr of `epoch` (0-based), from data.batch_size(_schedule) and the optim config.
        The lr is eta scaled for the epoch's effective batch (optim.lr_scaling) times optim.lr_schedule's factor."""
        batch_size = value_at(self.batch_size_schedule, epoch, self.batch_size)
        samples = batch_size * self.optim_cfg.accumulate
        cfg = self.optim_cfg
        lr = effective_lr(cfg.lr, cfg.lr_scaling, samples, cfg.base_batch_size) * value_at(cfg.lr_schedule, epoch, 1.0)
        steps = steps_per_epoch(self.data.n_train, samples, self.drop_last)
        return EpochPlan(batch_size, samples, steps, max(1, self.chunk_samples // samples), lr)

    def configure_optimizers(self):
        return build_optimizer(self.net.parameters(), self.optim_cfg, self.epoch_plan(0).lr)

    def setup(self, stage: str) -> None:
        self.data = self.data.to(self.device)
        self.world_size, self.rank = self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self):
        """One item per chunk of the epoch; reloaded every epoch (the Trainer is told), as B may change."""
        plan = self.epoch_plan(self.current_epoch)
        return range(math.ceil(plan.steps / plan.steps_per_chunk))

    def on_train_epoch_start(self) -> None:
        self.plan = self.epoch_plan(self.current_epoch)
        self.order = epoch_permutation(self.data.n_train, self.seed, self.current_epoch).to(self.device)
        self.epoch_loss_sum = torch.zeros((), device=self.device)
        self.epoch_samples = 0
        self.epoch_steps = 0
        self.record.start_epoch()

    def training_step(self, chunk: int, batch_idx: int) -> None:
        optimizer = self.optimizers().optimizer  # the raw optimizer: no per-step Lightning wrapper
        plan, weights = self.plan, [layer.weight for layer in self.net.layers]
        first, steps_before = chunk * plan.steps_per_chunk, self.optimizer_steps
        last, rows = min(first + plan.steps_per_chunk, plan.steps), plan.samples_per_step
        if self.cuda_graph and self.optimizer_steps >= self.warmup_steps and self.record.update_sq_norms is None:
            first = self.graphed_steps(optimizer, first, last)  # whole graphs; what is left runs step by step
        block = (
            self.deferred.block_steps(weights, rows, plain_sgd(optimizer)) if self.take_step == self.fast_step else 0
        )
        for step in range(first, last):
            if step == first or self.optimizer_steps < self.warmup_steps:  # the epoch's lr, or the warm-up's
                self.set_lr(optimizer, plan.lr * warmup_factor(self.optimizer_steps, self.warmup_steps))
            if (ahead := look_ahead_rows(self.order, step, first, last, block, rows)) is not None:
                self.deferred.start_block(weights, self.data.x_train[ahead])  # the first layer for the block at once
            indices = self.order[step * rows : (step + 1) * rows]
            self.take_step(optimizer, indices, self.record.update_norms_of(step))
        self.deferred.flush(weights)  # the weights are whole again before any hook or probe reads them
        self.count_lightning_steps(self.optimizer_steps - steps_before)
        diverged = not torch.isfinite(self.epoch_loss_sum)  # one check (one device sync) per chunk
        if self.trainer.strategy.reduce_boolean_decision(diverged, all=False):  # DDP: all stop if any diverged
            self.diverged = True
            self.trainer.should_stop = True

    def graphed_steps(self, optimizer: torch.optim.SGD, first: int, last: int) -> int:
        """Take steps first, first+1, ... of the chunk as replays of a CUDA graph of STEPS_PER_GRAPH steps
        (bsstudy/train/cuda_graph.py; captured anew when the lr or B changed); returns the first step not taken: the
        rest of the chunk (fewer steps than a graph holds, or the epoch's last step when it is short) runs
        step by step. Called past the lr warm-up (a constant lr), with no probe tracking every step."""
        plan, rows = self.plan, self.plan.samples_per_step
        whole_steps = min(last, self.data.n_train // rows)  # steps with all their rows
        graphs = max(0, whole_steps - first) // STEPS_PER_GRAPH
        if graphs == 0:
            return first
        self.set_lr(optimizer, plan.lr)
        if self.graphed is None or not self.graphed.fits(STEPS_PER_GRAPH, rows, plan.lr):
            self.graphed = None  # frees the old graph's memory first
            self.graphed = GraphedSteps(self.net.layers, optimizer, self.data, STEPS_PER_GRAPH, rows)
        for graph in range(graphs):
            start = (first + graph * STEPS_PER_GRAPH) * rows
            self.graph_replays += self.graphed.graph is not None  # else: the warm-up (and capture), or a CPU
            self.epoch_loss_sum += self.graphed(self.order[start : start + STEPS_PER_GRAPH * rows])
        self.count_steps(graphs * STEPS_PER_GRAPH, graphs * STEPS_PER_GRAPH * rows)
        return first + graphs * STEPS_PER_GRAPH

    def autograd_step(
        self, optimizer: torch.optim.Optimizer, indices: torch.Tensor, update_sq_norms: torch.Tensor | None = None
    ) -> None:
        """One optimizer step on the samples `indices`, as micro-batches of `batch_size` whose
        summed losses are divided by the step's sample count: the mean loss of the whole step.
        `update_sq_norms` (if given) receives ||theta_{t+1} - theta_t||^2 per parameter.
        Under DDP each process takes every world_size-th sample of the step and scales its loss by
        world_size / n; DDP's gradient average then equals the step's mean (bsstudy/config.py: world_size)."""
        before = [p.detach().clone() for p in self.net.parameters()] if update_sq_norms is not None else None
        n, batch_size = len(indices), self.plan.batch_size // self.world_size
        share, scale = indices[self.rank :: self.world_size], n / self.world_size
        for start in range(0, len(share), batch_size):
            micro = share[start : start + batch_size]
            loss_sum = F.nll_loss(self.net(self.data.x_train[micro]), self.data.y_train[micro], reduction="sum")
            if self.world_size > 1:
                self.manual_backward(loss_sum / scale)  # Lightning lets DDP all-reduce this backward's gradients
            else:
                (loss_sum / scale).backward()  # the same without the per-step hook calls of manual_backward
            self.epoch_loss_sum += loss_sum.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if before is not None:
            with torch.no_grad():
                change = torch._foreach_sub(list(self.net.parameters()), before)
                update_sq_norms.copy_(torch.stack(torch._foreach_norm(change)).square_())
        self.count_step(n)

    def fast_step(
        self, optimizer: torch.optim.Optimizer, indices: torch.Tensor, update_sq_norms: torch.Tensor | None = None
    ) -> None:
        """The same step as `autograd_step` (accumulate = 1, SGD) by the hand-written `fast_sgd_step`."""
        x, y = self.data.x_train[indices], self.data.y_train[indices]
        self.epoch_loss_sum += fast_sgd_step(self.net.layers, optimizer, x, y, update_sq_norms, deferred=self.deferred)
        self.count_step(len(indices))

    def count_lightning_steps(self, steps: int) -> None:
        """Tell Lightning about the optimizer steps of a chunk: the raw optimizer bypasses the wrapper that counts
        them, and `trainer.global_step` (which ModelCheckpoint compares to skip a save already made, and which
        +trainer.max_steps caps) would stay 0. It then equals `optimizer_steps`."""
        self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.increment_by(steps)

    def count_steps(self, steps: int, samples: int) -> None:
        """count_step for `steps` steps over `samples` samples in all."""
        self.optimizer_steps += steps
        self.epoch_steps += steps
        self.samples_seen += samples
        self.epoch_samples += samples

    def count_step(self, n: int) -> None:
        self.optimizer_steps += 1
        self.epoch_steps += 1
        self.samples_seen += n
        self.epoch_samples += n

    @staticmethod
    def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr

    def current_lr(self) -> float:
        return self.optimizers().optimizer.param_groups[0]["lr"]

    def running_train_loss(self) -> float:
        """Mean training loss over the samples of the epoch so far, at the weights of their step."""
        loss_sum = self.epoch_loss_sum
        if self.world_size > 1:  # each process summed its own share of the samples
            loss_sum = self.trainer.strategy.reduce(loss_sum.clone(), reduce_op="sum")
        return (loss_sum / max(self.epoch_samples, 1)).item()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bsstudy"] = {"optimizer_steps": self.optimizer_steps, "samples_seen": self.samples_seen}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.optimizer_steps = checkpoint["bsstudy"]["optimizer_steps"]
        self.samples_seen = checkpoint["bsstudy"]["samples_seen"]
