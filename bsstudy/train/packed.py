"""Packed runs: the runs of a sweep that differ only in seed and/or lr train in one process as one batched model.

`python -m bsstudy -m hydra/launcher=packed data.batch_size=2,64 seed=0,1,2 optim.lr=0.01,0.03` groups the jobs
that share every other setting into packs of up to `hydra.launcher.pack_size` (the launcher:
hydra_plugins/bsstudy_packed). A pack of K runs keeps the K MLPs as stacked tensors W_i [K, out, in],
b_i [K, out] and takes every step as one batched SGD step: bsstudy/train/fast_step.py's formulas with batched
matmuls (bmm, baddbmm), each run with its own samples (its seeded validation split and epoch order), its own
init and its own lr:

    z_i = h_{i-1} W_i^T + b_i,  dz_L = (softmax(z_L) - onehot(y)) / n,  dz_{i-1} = (dz_i W_i) * [z_{i-1} > 0]
    W_i -= lr_k dz_i^T h_{i-1},  b_i -= lr_k sum_rows(dz_i)        (momentum and weight decay as torch's SGD)

Each run's `nn.Linear` parameters are views of its slice of the stacked tensors, so everything that takes one
run's model uses the run's own StudyModule as a run alone does: the epoch's evaluation row (evaluate.epoch_row),
checkpoints (Lightning's format: a packed run resumes alone and a run alone resumes packed), summary.json.
Every run keeps its own run folder, identity and lock. Numbers equal those of the runs alone to float32 rounding
(the batched kernels sum in another order); tests/test_packed.py checks it.

Why packs: a step at B=2 is a few dozen kernel launches of a few microseconds on a GPU, so one run leaves the
device idle; K runs per launch do K times the work for about the same launch cost. On a CPU the step is bound by
memory traffic over the weights, which packing does not reduce: there a pack saves only the per-step overhead
(`make bench` measures both).

What packs do not do (the launcher runs such jobs one at a time, as the basic launcher does, and logs why):
probes, callbacks, the stop_at rules of EarlyStopping (train_loss, train_acc, patience), W&B, DDP, optimizers or
settings the fast step does not implement (`pack_blocker`). A val_acc target and a step budget (trainer.stop_at.val_acc,
max_steps: bsstudy/train/target.py) do pack: each run stops on its own and the others go on.
One Lightning Trainer trains one LightningModule, so the pack's loop is a plain loop over chunks like the
module's own (model.StudyModule.training_step), with its checkpoints in Lightning's format.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from bsstudy.config import check_batch_size, check_config, fast_step_blocker
from bsstudy.resources import synchronized_now
from bsstudy.runfolder import (
    EpochCSVLogger,
    RunFolder,
    checkpoint_names,
    resume_checkpoint,
    save_checkpoint_file,
    write_json,
)
from bsstudy.runfolder.identity import check_data_files, check_run_folder, locked_run_folder, record_identity
from bsstudy.train.data import epoch_permutation, load_data
from bsstudy.train.evaluate import epoch_row, log_epoch_line
from bsstudy.train.fast_step import DeferredUpdates, look_ahead_rows
from bsstudy.train.module import StudyModule, build_optimizer, warmup_factor
from bsstudy.train.net import MLP, build_net
from bsstudy.train.run import (
    build_summary,
    interrupting_signal,
    interruption_message,
    job_failed,
    requeued_by_slurm,
    resume_record,
)
from bsstudy.train.signals import STOP, RunInterrupted
from bsstudy.train.stopping import stopped
from bsstudy.train.target import ValTarget, target_callbacks

log = logging.getLogger(__name__)

PACK_KEYS = ("seed", "optim.lr")  # the settings in which the runs of one pack may differ


def pack_blocker(cfg: DictConfig) -> str | None:
    """Why the runs of this config cannot train packed (they then run one at a time), or None if they can."""
    trainer = cfg.trainer
    if trainer.fast_step == "off":
        return "trainer.fast_step=off (a pack takes the fast step's batched twin)"
    devices = trainer.devices if isinstance(trainer.devices, int) else len(trainer.devices or [0, 0])
    if devices != 1 or trainer.num_nodes != 1 or trainer.strategy != "auto":
        return (f"trainer.devices={trainer.devices}, num_nodes={trainer.num_nodes}, strategy={trainer.strategy} "
                "(a pack trains on one device)")  # fmt: skip
    if why := fast_step_blocker(cfg.optim, cfg.model, 1, trainer.precision):
        return why
    if probes := [name for name, p in (cfg.probes or {}).items() if "_target_" in p]:
        return f"probes={probes} (probes measure one run at a time)"
    if cfg.get("callbacks") or trainer.callbacks:
        return "Lightning callbacks (callbacks group or trainer.callbacks) need a Trainer of their own"
    if set_at := [k for k in ("train_loss", "train_acc", "patience") if trainer.stop_at.get(k) is not None]:
        return f"trainer.stop_at.{set_at[0]} is set (an EarlyStopping callback needs a Trainer of its own)"
    if extra := sorted(set(cfg.logger) - {"csv"}) or ([] if "csv" in cfg.logger else ["(no csv)"]):
        return f"logger={','.join(extra)} (a pack writes metrics.csv only; W&B: one run per process)"
    if trainer.accelerator not in ("cpu", "gpu", "cuda", "auto"):
        return f"trainer.accelerator={trainer.accelerator} (a pack runs on the CPU or a CUDA GPU)"
    if trainer.deterministic:
        return "trainer.deterministic is set (Lightning switches torch's deterministic algorithms on; a pack does not)"
    if extra := sorted(set(trainer) - set(PACKABLE_TRAINER_KEYS)):
        return f"trainer.{extra[0]} is set (a Trainer argument; packs use no Trainer)"
    return None


PACKABLE_TRAINER_KEYS = (
    *("accelerator", "devices", "strategy", "num_nodes", "max_epochs", "precision", "deterministic", "threads"),
    *("chunk_samples", "eval_chunk_size", "fast_step", "progress_bar", "stop_at", "callbacks"),
    "cuda_graph",  # a pack's batched step is its own answer to launch overhead: it runs uncaptured
)


def pack_device(trainer_cfg: DictConfig) -> torch.device:
    """The device of trainer.accelerator/devices: cpu, or the (first) GPU named; auto picks a GPU if there is one."""
    accelerator = trainer_cfg.accelerator
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    devices = trainer_cfg.devices
    index = devices[0] if OmegaConf.is_list(devices) or isinstance(devices, list) else 0
    return torch.device("cuda", int(index))


class PackedSGD:
    """K MLPs of the same shape as stacked tensors, stepped together by `step`; each net's parameters become views
    of its slice, so the nets stay usable one by one (evaluation, state_dict, load_state_dict)."""

    def __init__(self, nets: list[MLP], momentum: float, weight_decay: float):
        self.momentum, self.weight_decay = momentum, weight_decay
        n_layers = len(nets[0].layers)
        self.weights = [torch.stack([net.layers[i].weight.detach() for net in nets]) for i in range(n_layers)]
        self.biases = [torch.stack([net.layers[i].bias.detach() for net in nets]) for i in range(n_layers)]
        for k, net in enumerate(nets):
            for i, layer in enumerate(net.layers):
                layer.weight = nn.Parameter(self.weights[i][k], requires_grad=False)
                layer.bias = nn.Parameter(self.biases[i][k], requires_grad=False)
        # momentum buffers in nn.Module.parameters() order (w0, b0, w1, b1, ...); None until the first step
        self.buffers: list[torch.Tensor] | None = None
        self.deferred = DeferredUpdates()  # plain SGD with a few rows on a CPU: see fast_step.DeferredUpdates

    @property
    def plain(self) -> bool:
        """SGD without momentum and weight decay (fast_step.plain_sgd for the pack)."""
        return self.momentum == 0 and self.weight_decay == 0

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """One SGD step of every net k on its batch (x[k], y[k]) with lr[k]; returns the K summed NLL losses.
        Updates may be pending afterwards (`flush` applies them): call it before reading the weights."""
        plain = self.plain
        defer = self.deferred.prepare(self.weights, y.shape[1], plain)
        activations = [x]
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            ahead = self.deferred.first_layer_rows(y.shape[1]) if defer and i == 0 else None  # start_block's
            if ahead is None:
                z = torch.baddbmm(bias.unsqueeze(1), activations[-1], weight.transpose(1, 2))
            else:
                z = ahead + bias.unsqueeze(1)
            z = self.deferred.correct_forward(i, activations[-1], z) if defer else z
            activations.append(z.relu_() if i < len(self.weights) - 1 else z)
        logits = activations.pop()
        log_probs = torch.log_softmax(logits, dim=2)
        target = y.unsqueeze(2)
        loss_sums = -log_probs.gather(2, target).sum((1, 2))
        dz = log_probs.exp_()
        dz.scatter_add_(2, target, torch.full_like(target, -1, dtype=dz.dtype)).div_(y.shape[1])
        if self.momentum and self.buffers is None:
            self.buffers = [None] * (2 * len(self.weights))
        for i in range(len(self.weights) - 1, -1, -1):
            weight, bias, h = self.weights[i], self.biases[i], activations[i]
            dh = torch.bmm(dz, weight) if i > 0 else None  # with the weights before this step's update
            if defer and dh is not None:
                self.deferred.correct_backward(i, dz, dh)
            bias_grad = dz.sum(1)
            if defer:
                self.deferred.add(i, dz, h, lr.view(-1, 1, 1))
                bias.sub_(bias_grad * lr.view(-1, 1))
            elif plain:
                weight.baddbmm_((dz * lr.view(-1, 1, 1)).transpose(1, 2), h, alpha=-1.0)
                bias.sub_(bias_grad * lr.view(-1, 1))
            else:
                self.sgd_update(2 * i, weight, torch.bmm(dz.transpose(1, 2), h), lr.view(-1, 1, 1))
                self.sgd_update(2 * i + 1, bias, bias_grad, lr.view(-1, 1))
            if dh is not None:
                dz = dh.mul_(h > 0)
        if defer:
            self.deferred.rows += y.shape[1]
        return loss_sums

    def block_steps(self, n: int) -> int:
        """Steps of n rows per block of deferred updates (0: the updates are not deferred)."""
        return self.deferred.block_steps(self.weights, n, self.plain)

    def start_block(self, x: torch.Tensor) -> None:
        """The first layer's product for the rows x [K, rows, in] of the coming steps (DeferredUpdates.start_block)."""
        self.deferred.start_block(self.weights, x)

    def flush(self) -> None:
        """Apply the pending updates (fast_step.DeferredUpdates): the weights are whole again."""
        self.deferred.flush(self.weights)

    def sgd_update(self, index: int, param: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor) -> None:
        """torch.optim.SGD's update (dampening 0, no Nesterov), batched: g += wd p; buf = mu buf + g; p -= lr buf."""
        if self.weight_decay:
            grad = grad.add_(param, alpha=self.weight_decay)
        if self.momentum:
            if self.buffers[index] is None:
                self.buffers[index] = grad.clone()
            else:
                self.buffers[index].mul_(self.momentum).add_(grad)
            grad = self.buffers[index]
        param.sub_(grad * lr)


@dataclass
class Member:
    """One run of a pack: its resolved config, folder, module (parameters: views into the pack), and progress."""

    cfg: DictConfig
    run_dir: Path
    module: StudyModule | None = None
    logger: EpochCSVLogger | None = None
    target: ValTarget | None = None  # trainer.stop_at.val_acc / max_steps
    epoch_time: Callable[[], float] | None = None  # the pack's training time in the current epoch so far
    pack: PackedSGD | None = None
    index: int = 0  # its slice of the pack's tensors
    pack_info: dict = field(default_factory=dict)  # summary.json's `packed`
    train_time_s: float = 0.0
    start_epoch: int = 0
    optimizer_state: dict | None = None  # from a checkpoint, until the pack takes its momentum buffers
    lr: float = 0.0  # the lr of its last step (metrics.csv's lr column)
    status: str | None = None  # None while it trains
    started: float = 0.0
    log_path: str | None = None  # its log file, as Hydra set it up for the job (run_log_files)
    resumed: dict = field(default_factory=dict)  # summary.json's `resumed` (run.py: resume_record)

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)


def prepare_member(locks: ExitStack, cfg: DictConfig) -> Member | dict | float:
    """The task function the packed launcher runs for each job of a pack (inside Hydra's run_job, which writes
    <run>/.hydra/): lock the run folder for as long as `locks` is open and check what it holds, as a run alone does
    (bsstudy/train/run.py: train; build_member records the identity). Returns the Member to train, the summary of a run
    that has ended already, or NaN for a job that failed here (remembered for the sweep's exit code)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # its own paths, resolved now
        check_config(resolved)
        if requeued_by_slurm() and not resolved.resume:  # as a run alone: a requeued job continues its run
            resolved.resume = True
        locks.enter_context(locked_run_folder(run_dir))
        if (done := check_run_folder(resolved, run_dir)) is not None:
            return done
        return Member(resolved, run_dir, log_path=job_log_path())
    except Exception as err:
        return job_failed(run_dir, err)


def log_files() -> list[logging.FileHandler]:
    """The root logger's file handlers: the one Hydra's job logging opened for the job last set up."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def job_log_path() -> str | None:
    """The log file Hydra's job logging has just opened for this job (<run>/<job name>.log), if any."""
    files = log_files()
    return files[0].baseFilename if files else None


LINES_OF: ContextVar[str | None] = ContextVar("packed_lines_of", default=None)  # whose log file a line is for


@contextmanager
def lines_of(member: Member):
    """Log lines written inside are about `member`: they go to its log file only (PackLogFiles); to none for a
    member without one ("" names no file; None marks the pack's own lines)."""
    token = LINES_OF.set(member.log_path or "")
    try:
        yield
    finally:
        LINES_OF.reset(token)


def about_member(function):
    """`function(member, ...)` writes log lines about that member (lines_of)."""

    @functools.wraps(function)
    def about(member: Member, *args, **kwargs):
        with lines_of(member):
            return function(member, *args, **kwargs)

    return about


class PackLogFiles(logging.Handler):
    """While a pack trains, each run's own log file gets the lines about it (written inside `lines_of`) and the
    pack's own lines, as if it had run alone."""

    def __init__(self, paths: list[str], formatter: logging.Formatter | None, level: int):
        super().__init__(level)
        self.files = {path: logging.FileHandler(path, mode="a") for path in paths}
        for handler in self.files.values():
            handler.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        about = LINES_OF.get()
        for path, handler in self.files.items():
            if about is None or about == path:
                handler.handle(record)

    def close(self) -> None:
        for handler in self.files.values():
            handler.close()
        super().close()


@contextmanager
def run_log_files(members: list[Member]):
    """Route the log lines to every member's log file while the pack trains. Hydra's job logging set up one
    file, the last job's; it is set aside meanwhile (and nothing changes without one: no Hydra logging)."""
    root = logging.getLogger()
    hydra_files = log_files()
    paths = [m.log_path for m in members if m.log_path]
    if not hydra_files or not paths:
        yield
        return
    handler = PackLogFiles(paths, hydra_files[0].formatter, hydra_files[0].level)
    for file in hydra_files:
        root.removeHandler(file)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for file in hydra_files:
            root.addHandler(file)


@about_member
def build_member(member: Member, device: torch.device) -> None:
    """The run's data, model and module exactly as a run alone builds them (bsstudy/train/run.py: fit_run), then its
    checkpoint with resume=true."""
    cfg = member.cfg
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    path = resume_checkpoint(member.folder.checkpoints) if cfg.resume else None
    member.resumed = resume_record(cfg.resume, path, member.run_dir)
    data = load_data(cfg.data, cfg.seed)
    check_data_files(member.run_dir, data.files, continuing=path is not None)
    record_identity(cfg, member.run_dir, data.files)
    check_batch_size(cfg, data.n_train)
    net = build_net(cfg.model, data.input_size, data.num_classes)
    member.module = StudyModule(
        net, data, cfg.optim, cfg.data.batch_size, cfg.data.drop_last, cfg.trainer.chunk_samples, cfg.seed,
        fast_step=True, batch_size_schedule=cfg.data.batch_size_schedule,
    )  # fmt: skip
    member.module.to(device)
    member.module.data = data.to(device)
    member.logger = EpochCSVLogger(member.run_dir)
    member.lr = member.module.epoch_plan(0).lr
    if targets := target_callbacks(cfg.trainer.stop_at, member.run_dir):
        member.target = targets[0]

        def trained_s() -> float:  # the run's training time so far
            return member.train_time_s + member.epoch_time()

        member.target.start(member.module, cfg.trainer.eval_chunk_size, trained_s)
    if path is not None:
        load_member_checkpoint(member, path)
        log.info("resume=true: %s continues from %s (epoch %d)", member.run_dir, path, member.start_epoch)


def load_member_checkpoint(member: Member, path: Path) -> None:
    """Weights, momentum, counters and training time from a checkpoint (a pack's or a run alone's)."""
    checkpoint = torch.load(path, map_location=member.module.device, weights_only=False)
    member.module.load_state_dict(checkpoint["state_dict"])  # copies into the pack's views once they exist
    member.module.on_load_checkpoint(checkpoint)
    member.start_epoch = checkpoint["epoch"] + 1
    member.train_time_s = checkpoint["callbacks"]["EpochEvaluation"]["train_time_s"]
    if member.target is not None and "ValTarget" in checkpoint["callbacks"]:
        member.target.load_state_dict(checkpoint["callbacks"]["ValTarget"])
    member.optimizer_state = checkpoint["optimizer_states"][0]
    member.lr = member.optimizer_state["param_groups"][0]["lr"]


def momentum_buffers(members: list[Member]) -> list[torch.Tensor] | None:
    """The stacked momentum buffers of the members' checkpoints (torch SGD's state, by parameter index); None
    before the first step (a fresh run), and then for every member: they start at the same epoch."""
    states = [(m.optimizer_state or {}).get("state", {}) for m in members]
    if not all(states):
        return None
    n_params = len(list(members[0].module.net.parameters()))
    return [torch.stack([state[i]["momentum_buffer"] for state in states]) for i in range(n_params)]


def train_pack(members: list[Member], max_epochs: int, threads: int | None) -> None:
    """Train the members from their checkpoints to `max_epochs`; members at different epochs train as sub-packs.
    Every member ends with summary.json; a stop signal ends all of them `interrupted` and raises RunInterrupted."""
    if threads:
        torch.set_num_threads(threads)
    device = pack_device(members[0].cfg.trainer)
    for member in members:
        member.started = time.perf_counter()
    with run_log_files(members):
        try:
            STOP.check()  # a stop signal before this pack began: it does not start
            ready = []
            for member in members:
                try:
                    build_member(member, device)
                    ready.append(member)
                except Exception as err:
                    end_member(member, "failed", error=f"{type(err).__name__}: {err}", trace=traceback.format_exc())
            for start in sorted({m.start_epoch for m in ready}):
                sub_pack = [m for m in ready if m.start_epoch == start]
                try:
                    train_sub_pack(sub_pack, max_epochs, device)
                except Exception as err:
                    for member in sub_pack:
                        if member.status is None:
                            error, trace = f"{type(err).__name__}: {err}", traceback.format_exc()
                            end_member(member, "failed", error=error, trace=trace)
        except (SystemExit, KeyboardInterrupt) as err:  # as bsstudy/train/run.py: fit_run
            for member in members:
                if member.status is None:
                    end_member(member, "interrupted", error=interruption_message(err, epochs_completed(member)))
            if (signum := interrupting_signal(err)) is None:
                raise
            raise RunInterrupted(signum) from None


def epochs_completed(member: Member) -> int:
    rows = member.logger.rows if member.logger else []
    return int(rows[-1]["epoch"]) if rows else 0


def train_sub_pack(members: list[Member], max_epochs: int, device: torch.device) -> None:
    """Members that start at the same epoch, in lockstep: chunks of steps as in StudyModule.training_step, the
    divergence check after every chunk, the evaluation row and checkpoints after every epoch."""
    optim = members[0].cfg.optim
    pack = PackedSGD([m.module.net for m in members], optim.momentum or 0.0, optim.weight_decay or 0.0)
    pack.buffers = momentum_buffers(members)
    for k, member in enumerate(members):
        member.pack, member.index = pack, k
        member.pack_info = {
            "size": len(members),
            "runs": [str(m.run_dir) for m in members],
            "device": str(device),
            "times": "wall_time_s, train_time_s and epoch_time_s are the pack's: its runs trained together",
        }
    first = members[0].module
    x_all = torch.cat([m.module.data.x_train for m in members])  # run k's samples at rows k*n ... (k+1)*n - 1
    y_all = torch.cat([m.module.data.y_train for m in members])
    n = first.data.n_train
    restore = STOP.install()
    try:
        if members[0].start_epoch == 0:
            for member in members:
                log_row(member, 0, extra={})
        for epoch in range(members[0].start_epoch, max_epochs):
            if all(m.status is not None for m in members):
                return
            train_epoch(members, pack, x_all, y_all, n, epoch, device)
        for member in members:
            if member.status is None:
                end_member(member, "completed")
    finally:
        restore()


def train_epoch(members, pack: PackedSGD, x_all, y_all, n: int, epoch: int, device) -> None:
    plans = [m.module.epoch_plan(epoch) for m in members]
    plan, first = plans[0], members[0].module
    offsets = torch.arange(len(members)).view(-1, 1) * n
    order = (torch.stack([epoch_permutation(n, m.cfg.seed, epoch) for m in members]) + offsets).to(device)
    plan_lrs = torch.tensor([p.lr for p in plans], dtype=torch.float32, device=device)
    loss_sums = torch.zeros(len(members), device=device)
    for m in members:
        m.module.epoch_samples = m.module.epoch_steps = 0
        m.module.record.start_epoch()
    epoch_start = synchronized_now(device)
    paused = [0.0]  # the ends of runs that stopped within the epoch (their evaluation and checkpoints)

    def epoch_time() -> float:  # so far, without every run's target checks and ends: the pack waited for them
        waited = paused[0] + sum(m.module.record.probe_time_s for m in members)
        return synchronized_now(device) - epoch_start - waited

    for m in members:
        m.epoch_time = epoch_time
    lr, lr_factor = None, None
    chunks = math.ceil(plan.steps / plan.steps_per_chunk)
    rows, block = plan.samples_per_step, pack.block_steps(plan.samples_per_step)
    for chunk in range(chunks):
        STOP.check()
        steps = range(chunk * plan.steps_per_chunk, min((chunk + 1) * plan.steps_per_chunk, plan.steps))
        for step in steps:
            factor = warmup_factor(first.optimizer_steps + step - steps.start, first.warmup_steps)
            if factor != lr_factor:
                lr, lr_factor = plan_lrs * factor, factor
            if (ahead := look_ahead_rows(order, step, steps.start, steps.stop, block, rows)) is not None:
                pack.start_block(x_all[ahead])
            indices = order[:, step * rows : (step + 1) * rows]
            loss_sums += pack.step(x_all[indices], y_all[indices], lr)
        pack.flush()  # the weights are whole again before anything reads them
        samples = min(steps.stop * plan.samples_per_step, n) - steps.start * plan.samples_per_step
        for member, member_plan in zip(members, plans, strict=True):
            member.module.count_steps(len(steps), samples)
            member.lr = member_plan.lr * lr_factor
        finite = torch.isfinite(loss_sums).tolist()  # one device sync per chunk, as a run alone
        for k, member in enumerate(members):  # a run that stops ends its epoch here, as a run alone does
            if member.status is not None:
                continue
            if not finite[k]:
                member.module.diverged = True
            elif member.target is None or not target_reached(member):
                continue
            ending = synchronized_now(device)
            end_epoch(member, loss_sums[k], epoch, epoch_time())
            end_member(member, "diverged" if member.module.diverged else "completed")
            paused[0] += synchronized_now(device) - ending
        if all(m.status is not None for m in members):
            return
    elapsed = epoch_time()
    for k, member in enumerate(members):
        if member.status is None:
            end_epoch(member, loss_sums[k], epoch, elapsed)
            if member.target is not None and member.target.reached:  # seen by the epoch's row: it stops, as alone
                end_member(member, "completed")


@about_member
def target_reached(member: Member) -> bool:
    return member.target.after_chunk(member.module)


@about_member
def end_epoch(member: Member, loss_sum: torch.Tensor, epoch: int, epoch_time: float) -> None:
    """The epoch's row in metrics.csv, then its checkpoints (EpochEvaluation, then RunCheckpoints in a run alone)."""
    member.train_time_s += epoch_time
    member.module.epoch_loss_sum = loss_sum
    extra = {"train_loss_running": member.module.running_train_loss(), "epoch_time_s": epoch_time,
             "probe_time_s": member.module.record.probe_time_s}  # fmt: skip
    row = log_row(member, epoch + 1, extra)
    if member.target is not None:  # the row is an evaluation of the val_acc targets (before the checkpoint)
        member.target.epoch_end(member.module, row)
    cfg = member.cfg.checkpoint
    names = checkpoint_names(epoch + 1, cfg.at_epochs, cfg.save_last)
    checkpoint = member_checkpoint(member, epoch) if names else None
    for name in names:
        save_checkpoint_file(member.folder.checkpoints / name, lambda tmp: torch.save(checkpoint, tmp))


@about_member
def log_row(member: Member, epoch: int, extra: dict) -> dict:
    cfg = member.cfg.trainer
    row = epoch_row(member.module, epoch, member.lr, member.train_time_s, cfg.eval_chunk_size, extra)
    log_epoch_line(row, cfg.max_epochs, prefix=f"{member.run_dir.name}: ")  # first, as a run alone (evaluate.py)
    member.logger.log_metrics(row, step=epoch)
    return row


def member_checkpoint(member: Member, epoch: int) -> dict:
    """The run's checkpoint after `epoch` + 1 epochs in the format of Lightning's (what RunCheckpoints writes),
    so that a run alone resumes from it: weights, optimizer state, counters, loop progress and training time."""
    module = member.module
    optimizer = build_optimizer(module.net.parameters(), member.cfg.optim, member.lr)
    for param, buffer in zip(module.net.parameters(), member.pack.buffers or [], strict=False):
        if buffer is not None:
            optimizer.state[param]["momentum_buffer"] = buffer[member.index].clone()
    return {
        "epoch": epoch,
        "global_step": module.optimizer_steps,
        "pytorch-lightning_version": L.__version__,
        "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "loops": loop_state(module, epoch),
        "callbacks": {"EpochEvaluation": {"train_time_s": member.train_time_s}}
        | ({"ValTarget": member.target.state_dict()} if member.target else {}),
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "bsstudy": {"optimizer_steps": module.optimizer_steps, "samples_seen": module.samples_seen},
    }


@functools.cache
def loop_template() -> L.Trainer:
    """A Trainer that never trains: its loops write the progress counters of `loop_state` (its start-up lines,
    "GPU available: ...", are not logged)."""
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)  # fmt: skip
    finally:
        quiet.setLevel(level)


def loop_state(module: StudyModule, epoch: int) -> dict:
    """Lightning's loop progress at the end of `epoch` (0-based), as its own loops report it: Lightning restores
    the epoch and step counters of a resumed run from it."""
    trainer = loop_template()
    batches = [math.ceil(p.steps / p.steps_per_chunk) for p in map(module.epoch_plan, range(epoch + 1))]
    loop = trainer.fit_loop
    for tracker in (loop.epoch_progress.total, loop.epoch_progress.current):
        tracker.ready = tracker.started = tracker.processed = epoch + 1
        tracker.completed = epoch  # saved during the epoch's end, before Lightning counts it completed
    batch_progress = loop.epoch_loop.batch_progress
    for tracker, count in ((batch_progress.total, sum(batches)), (batch_progress.current, batches[-1])):
        tracker.ready = tracker.started = tracker.processed = tracker.completed = count
    batch_progress.is_last_batch = True
    loop.epoch_loop._batches_that_stepped = sum(batches)
    steps = loop.epoch_loop.manual_optimization.optim_step_progress
    for tracker in (steps.total, steps.current):
        tracker.ready = tracker.completed = module.optimizer_steps
    return {
        "fit_loop": loop.state_dict(),
        "validate_loop": trainer.validate_loop.state_dict(),
        "test_loop": trainer.test_loop.state_dict(),
        "predict_loop": trainer.predict_loop.state_dict(),
    }


@about_member
def end_member(member: Member, status: str, error: str | None = None, trace: str | None = None) -> None:
    """Write the member's summary.json (bsstudy/train/run.py: build_summary) with what the pack adds."""
    member.status = status
    launcher = {"name": "PackedLauncher", "jobs_at_a_time": 1, "threads": torch.get_num_threads(),
                "devices": str(member.module.device) if member.module else None, "set_by_launcher": {}}  # fmt: skip
    wall_time_s = time.perf_counter() - member.started
    summary = build_summary(member.cfg, member.run_dir, member.module, status, wall_time_s, launcher) | member.resumed
    if member.module is not None and status in ("completed", "diverged"):  # what a run alone adds when it ends
        summary |= stopped(None, status == "diverged", summary["final"])
        if member.target is not None:
            summary["target"] = member.target.summary
            summary |= member.target.stopped(member.module.optimizer_steps) or {}
        summary["probes"] = {}
    summary["packed"] = member.pack_info
    if error:
        summary["error"] = error
    if trace:
        summary["traceback"] = trace
    write_json(member.folder.summary_path, summary)
    log.info("%s: %s; summary in %s", status, member.run_dir, member.folder.summary_path)
    if status == "failed":
        log.error("%s: %s", member.run_dir, error)
