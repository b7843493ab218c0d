"""An exact, hand-written SGD step for the MLP: forward, backward and update in one pass, no autograd.

For an MLP with ReLU hidden layers, log-softmax output and mean NLL loss over the n samples of
the step, backpropagation is (z_i = h_{i-1} W_i^T + b_i, h_i = relu(z_i), h_0 = x):

    dz_L = (softmax(z_L) - onehot(y)) / n
    dW_i = dz_i^T h_{i-1},   db_i = sum_rows(dz_i),   dz_{i-1} = (dz_i W_i) * [z_{i-1} > 0]

and SGD (PyTorch's convention, dampening 0, no Nesterov) is

    g_i = dW_i + wd W_i,   buf_i = mu buf_i + g_i (buf_i = g_i at the first step),   W_i -= lr buf_i

Without momentum the update is applied in place, one `addmm_` per layer (or, for a few rows on
a CPU where that is faster, a few rank-1 `addr_`: `update_kernel` measures which), so no gradient
tensor is ever written and re-read, and autograd's bookkeeping and the optimizer's separate pass
disappear. dz_{i-1} is computed before W_i changes. For a few rows on a CPU, where a step's cost is
the memory traffic over the weights, the updates are kept as low-rank factors and applied every
DEFERRED_ROWS rows instead (`DeferredUpdates`): half the passes over the weights per step.
The result is the same as the autograd path up to float32 rounding (summation order differs);
tests/test_fast_step.py checks it.
Momentum buffers live in the torch optimizer's own state, so checkpoints and resume are shared
with the autograd path.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from torch import nn


@torch.no_grad()
def fast_sgd_step(
    layers: nn.ModuleList,
    optimizer: torch.optim.SGD,
    x: torch.Tensor,
    y: torch.Tensor,
    update_sq_norms: torch.Tensor | None = None,
    grad_sums: dict[str, torch.Tensor] | None = None,
    deferred: DeferredUpdates | None = None,
) -> torch.Tensor:
    """One SGD step of the MLP `layers` on the batch (x, y) with the optimizer's lr, momentum and
    weight decay; returns the summed NLL loss of the batch (before the step) as a 0-d tensor.

    If `update_sq_norms` is given (one entry per parameter, in `parameters()` order), it receives
    ||theta_{t+1} - theta_t||^2 of every parameter, computed from the update itself.
    If `grad_sums` is given ({"<i>.weight" or "<i>.bias": tensor} for layer i), the loss gradient of
    each of those parameters is added to its tensor (the gradient-sum-norm experiment).
    If `deferred` is given, plain SGD updates of a few rows on a CPU are kept there as factors
    (`DeferredUpdates`); the caller applies them with `deferred.flush(weights)` before it reads the weights, and
    only then are such a step's `update_sq_norms` written.
    """
    group = optimizer.param_groups[0]
    lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
    track = update_sq_norms is not None
    weights = [layer.weight for layer in layers]
    defer = deferred is not None and deferred.prepare(weights, len(y), plain_sgd(optimizer))
    activations = [x]
    for i, layer in enumerate(layers[:-1]):
        ahead = deferred.first_layer_rows(len(y)) if defer and i == 0 else None  # x W_0^T of start_block
        if ahead is None:
            z = torch.addmm(layer.bias, activations[-1], layer.weight.t())
        else:
            z = torch.add(ahead, layer.bias)
        activations.append(torch.relu_(deferred.correct_forward(i, activations[-1], z) if defer else z))
    logits = torch.addmm(layers[-1].bias, activations[-1], layers[-1].weight.t())
    if defer:
        logits = deferred.correct_forward(len(layers) - 1, activations[-1], logits)
    log_probs = torch.log_softmax(logits, dim=1)
    target = y.unsqueeze(1)
    loss_sum = -log_probs.gather(1, target).sum()
    dz = log_probs.exp_()
    dz.scatter_add_(1, target, torch.full_like(target, -1, dtype=dz.dtype)).div_(len(y))
    sq_norms = [None] * (2 * len(layers))
    for i in range(len(layers) - 1, -1, -1):
        layer, h = layers[i], activations[i]
        dh = dz.mm(layer.weight) if i > 0 else None  # with the weights before this step's update
        if defer and dh is not None:
            deferred.correct_backward(i, dz, dh)
        bias_grad = dz.sum(0)
        if grad_sums is not None:
            if (weight_sum := grad_sums.get(f"{i}.weight")) is not None:
                weight_sum.addmm_(dz.t(), h)
            if (bias_sum := grad_sums.get(f"{i}.bias")) is not None:
                bias_sum.add_(bias_grad)
        if defer:  # with `track`, the norms come from the factors when they are applied (DeferredUpdates.track)
            deferred.add(i, dz, h, lr)
            layer.bias.add_(bias_grad, alpha=-lr)
        elif momentum == 0 and weight_decay == 0:
            sq_norms[2 * i] = subtract_outer(layer.weight, dz, h, lr, track)
            layer.bias.add_(bias_grad, alpha=-lr)
            sq_norms[2 * i + 1] = torch.dot(bias_grad, bias_grad) if track else None
        else:
            sq_norms[2 * i] = sgd_update(
                optimizer, layer.weight, torch.mm(dz.t(), h), lr, momentum, weight_decay, track
            )
            sq_norms[2 * i + 1] = sgd_update(optimizer, layer.bias, bias_grad, lr, momentum, weight_decay, track)
        if dh is not None:
            dz = dh.mul_(h > 0)
    if defer:
        if track:
            deferred.track(update_sq_norms, len(y))
        deferred.rows += len(y)
    elif track:  # the per-parameter norms are of the steps before the lr: one multiply for all of them
        torch.stack(sq_norms, out=update_sq_norms).mul_(lr**2)
    return loss_sum


def look_ahead_rows(
    order: torch.Tensor, step: int, first: int, last: int, block: int, rows: int
) -> torch.Tensor | None:
    """The sample indices of the block of deferred updates that starts at `step` (blocks of `block` steps of `rows`
    rows from step `first` on, none past step `last`), for DeferredUpdates.start_block; None if no block starts
    here. `order` is an epoch's sample order ([samples], or a pack's [K, samples])."""
    if not block or (step - first) % block:
        return None
    return order[..., step * rows : min(step + block, last) * rows]


def plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """SGD without momentum and weight decay: its updates are products dz^T h that `DeferredUpdates` can keep."""
    group = optimizer.param_groups[0]
    return isinstance(optimizer, torch.optim.SGD) and group["momentum"] == 0 and group["weight_decay"] == 0


DEFERRED_ROWS = 32  # update rows kept per layer before they are applied (16 steps at B=2)
DEFERRED_MAX_BATCH = 8  # above this the extra matmuls cost more than the weight passes they save


class DeferredUpdates:
    """Plain SGD updates W_i -= lr dz_i^T h_i of a few rows, kept as factors and applied in one matmul when
    DEFERRED_ROWS rows have gathered (or on `flush`).

    With pending rows A_i = [lr dz_i of each step] and H_i = [h_i of each step], the weights in effect are
    W_i - A_i^T H_i, so the step's forward and backward use

        z_i = h W_i^T - (h H_i^T) A_i,        dh = dz W_i - (dz A_i^T) H_i

    which read W_i once each, as before, plus the small factors. What it saves: the update's read and write
    of W_i at every step, half the step's memory traffic over the weights, which is what a step of a few rows
    costs on a CPU. The result is the same SGD up to float32 rounding (tests/test_fast_step.py). Only on a
    CPU and for batches of at most DEFERRED_MAX_BATCH rows: on a GPU the step costs kernel launches, not
    memory traffic, and the factors would add launches. Works on one net's weights ([out, in]) and on a
    pack's stacked weights ([K, out, in], bsstudy/train/packed.py) alike. `start_block` applies the pending updates and
    computes the first layer's product for the next steps at once (the look-ahead).
    """

    def __init__(self, capacity: int = DEFERRED_ROWS):
        self.capacity, self.rows = capacity, 0
        self.factors: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (A_i, H_i) per layer
        self.ahead: torch.Tensor | None = None  # x W_0^T of the block's coming rows (start_block)
        self.ahead_used = 0
        self.tracked: list[tuple[torch.Tensor, int, int]] = []  # (update_sq_norms row, first pending row, rows)

    def takes(self, weights: list[torch.Tensor], n: int, plain: bool) -> bool:
        """Whether steps of n rows on these weights defer their updates (plain SGD, a CPU, a few rows)."""
        return plain and weights[0].device.type == "cpu" and n <= min(DEFERRED_MAX_BATCH, self.capacity)

    def block_steps(self, weights: list[torch.Tensor], n: int, plain: bool) -> int:
        """How many steps of n rows a block holds between two applications of the updates (0: no deferral)."""
        return self.capacity // n if self.takes(weights, n, plain) else 0

    def start_block(self, weights: list[torch.Tensor], x: torch.Tensor) -> None:
        """Apply the pending updates, then compute the first layer's x W_0^T for all rows x of the block's
        coming steps (at most `capacity` rows, in the order the steps will take them) in one matmul.

        The input of the first layer does not depend on the weights, and W_0 in memory stays the same until
        the next application; each step then takes its rows of the product instead of reading W_0 again, and
        the pending updates' part is corrected as for any layer (`correct_forward`). At a few rows per step
        this saves a third of the memory traffic over the weights per step.
        """
        self.flush(weights)
        self.ahead, self.ahead_used = torch.matmul(x, weights[0].transpose(-1, -2)), 0

    def first_layer_rows(self, n: int) -> torch.Tensor | None:
        """The next n rows of the block's x W_0^T (start_block), or None when there is no such block."""
        if self.ahead is None or self.ahead_used + n > self.ahead.shape[-2]:
            return None
        self.ahead_used += n
        return self.ahead.narrow(-2, self.ahead_used - n, n)

    def prepare(self, weights: list[torch.Tensor], n: int, plain: bool) -> bool:
        """Whether this step of n rows defers its updates; makes room first (or applies all pending updates
        when it does not defer)."""
        takes = self.takes(weights, n, plain)
        if not takes or self.rows + n > self.capacity:
            self.flush(weights)
        if takes and self.factors is None:
            lead = weights[0].shape[:-2]  # (), or (K,) for a pack
            self.factors = [
                (w.new_empty(*lead, self.capacity, w.shape[-2]), w.new_empty(*lead, self.capacity, w.shape[-1]))
                for w in weights
            ]
        return takes

    def pending(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, hs = self.factors[i]
        return a.narrow(-2, 0, self.rows), hs.narrow(-2, 0, self.rows)

    def correct_forward(self, i: int, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """z -= (h H_i^T) A_i: the pending updates' part of h W_i^T."""
        if self.rows:
            a, hs = self.pending(i)
            subtract_product(z, torch.matmul(h, hs.transpose(-1, -2)), a)
        return z

    def correct_backward(self, i: int, dz: torch.Tensor, dh: torch.Tensor) -> None:
        """dh -= (dz A_i^T) H_i: the pending updates' part of dz W_i."""
        if self.rows:
            a, hs = self.pending(i)
            subtract_product(dh, torch.matmul(dz, a.transpose(-1, -2)), hs)

    def add(self, i: int, dz: torch.Tensor, h: torch.Tensor, lr) -> None:
        """Keep layer i's update of this step (lr: a float, or a pack's [K, 1, 1] tensor)."""
        n = h.shape[-2]
        torch.mul(dz, lr, out=self.factors[i][0].narrow(-2, self.rows, n))
        self.factors[i][1].narrow(-2, self.rows, n).copy_(h)

    def track(self, update_sq_norms: torch.Tensor, n: int) -> None:
        """The step of n rows just kept writes ||theta_{t+1} - theta_t||^2 per parameter into `update_sq_norms`
        when the updates are applied (`tracked_norms`; one net only)."""
        self.tracked.append((update_sq_norms, self.rows, n))

    def tracked_norms(self, start: int, steps: int, n: int) -> torch.Tensor:
        """[steps, 2 x layers] squared update norms (w0, b0, w1, ...) of `steps` steps of n rows each from pending
        row `start` on, read from the factors in a few batched products instead of a dozen small ones per step.
        A step's rows A_s = lr dz_s, H_s = h_s update W by A_s^T H_s, so ||A_s^T H_s||_F^2 = sum((A_s A_s^T) *
        (H_s H_s^T)); its bias update is the column sums of A_s, of squared norm sum(A_s A_s^T)."""
        norms = []
        for a, hs in self.factors:
            a = a.narrow(-2, start, steps * n).reshape(steps, n, -1)
            hs = hs.narrow(-2, start, steps * n).reshape(steps, n, -1)
            gram_a = torch.bmm(a, a.transpose(1, 2))
            norms += [(gram_a * torch.bmm(hs, hs.transpose(1, 2))).sum((1, 2)), gram_a.sum((1, 2))]
        return torch.stack(norms, dim=1)

    def write_tracked_norms(self) -> None:
        """Write the update norms of the tracked pending steps (all of one row count, in a row: the training loop's
        steps; else one at a time)."""
        first_start, first_n = self.tracked[0][1], self.tracked[0][2]
        uniform = all(
            start == first_start + k * first_n and n == first_n for k, (_, start, n) in enumerate(self.tracked)
        )
        if uniform:
            norms = self.tracked_norms(first_start, len(self.tracked), first_n)
            for (target, _, _), row in zip(self.tracked, norms, strict=True):
                target.copy_(row)
        else:
            for target, start, n in self.tracked:
                target.copy_(self.tracked_norms(start, 1, n)[0])
        self.tracked = []

    @torch.no_grad()
    def flush(self, weights: list[torch.Tensor]) -> None:
        """Apply every pending update to the weights: W_i -= A_i^T H_i."""
        if self.tracked:
            self.write_tracked_norms()
        if self.rows:
            for i, weight in enumerate(weights):
                a, hs = self.pending(i)
                subtract_product(weight, a.transpose(-1, -2), hs)
        self.rows, self.ahead = 0, None  # a block's x W_0^T was of the weights before


def subtract_product(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    """out -= left @ right in place: addmm_ for matrices, baddbmm_ for a pack's batches of them."""
    if out.dim() == 2:
        out.addmm_(left, right, alpha=-1.0)
    else:
        out.baddbmm_(left, right, alpha=-1.0)


GRAM_MAX_ROWS = 64  # above this, materializing dz^T h (it replaces addmm_, so costs only memory) is cheaper
UPDATE_KERNELS = ("auto", "rank1", "addmm")
UPDATE_KERNEL = "auto"  # "rank1" or "addmm" force one kernel everywhere (tests, benchmarks)
RANK1_CANDIDATE_MAX_ROWS = 8  # the rank-1 loop costs n addr_ passes over W: past a few rows it never wins
KERNEL_TRIALS = 5  # interleaved timings per kernel; the fastest counts (robust to other processes)
KERNEL_CHOICES: dict[tuple, str] = {}  # (device, weight shape, n, threads) -> "rank1" or "addmm", this process


def subtract_outer(
    weight: torch.Tensor, dz: torch.Tensor, h: torch.Tensor, lr: float, track: bool
) -> torch.Tensor | None:
    """weight -= lr * dz^T h, in place; with `track`, return ||dz^T h||_F^2 (the lr is applied by the caller).

    The product goes into the weights either as one `addmm_` or as n rank-1 `addr_` updates, whichever
    `update_kernel` finds faster for this shape. The norm of a product of n rows comes from two n x n
    Gram matrices, ||dz^T h||_F^2 = sum((dz dz^T) * (h h^T)), for small n.
    """
    n = len(h)
    if track and n > GRAM_MAX_ROWS:
        update = torch.mm(dz.t(), h)
        weight.add_(update, alpha=-lr)
        return torch.dot(update.view(-1), update.view(-1))
    if update_kernel(weight, n) == "rank1":
        subtract_rank1(weight, dz, h, lr)
    else:
        weight.addmm_(dz.t(), h, alpha=-lr)
    return torch.dot(dz.mm(dz.t()).view(-1), h.mm(h.t()).view(-1)) if track else None


def subtract_rank1(weight: torch.Tensor, dz: torch.Tensor, h: torch.Tensor, lr: float) -> None:
    """weight -= lr * sum_k dz_k^T h_k, one rank-1 `addr_` per row: the same update as one addmm_."""
    for dz_row, h_row in zip(dz, h, strict=True):
        weight.addr_(dz_row, h_row, alpha=-lr)


def update_kernel(weight: torch.Tensor, n: int) -> str:
    """The kernel ("rank1" or "addmm") for weight -= lr dz^T h with n rows: UPDATE_KERNEL if forced, else measured.

    The choice used to be a constant, RANK1_MAX_ROWS = 4, measured on a 2-core AMD EPYC with MKL, where
    addmm_ with an inner dimension of 2-4 was about 3x slower than that many addr_. On a 2-core Intel
    Xeon the opposite holds (two addr_ 221 us, one addmm_ 150 us at B=2; issue 17), and even on the EPYC
    the winner moves with the thread count. So on the CPU, for n <= RANK1_CANDIDATE_MAX_ROWS, both kernels
    are timed on scratch tensors and the faster is kept. The two kernels round differently, so the first
    measurement on a machine is stored (kernel_cache_path(), keyed by CPU model, shape, n and threads) and
    every later run there uses it: the same config and seed give the same numbers on the same machine.
    On a GPU one addmm_ launch beats n launches: no measurement.
    """
    if UPDATE_KERNEL != "auto":
        if UPDATE_KERNEL not in UPDATE_KERNELS:
            raise ValueError(f"fast_step.UPDATE_KERNEL must be one of {list(UPDATE_KERNELS)}; got {UPDATE_KERNEL!r}")
        return UPDATE_KERNEL
    if weight.device.type != "cpu" or n > RANK1_CANDIDATE_MAX_ROWS:
        return "addmm"
    key = (str(weight.device), tuple(weight.shape), n, torch.get_num_threads())
    if key not in KERNEL_CHOICES:
        KERNEL_CHOICES[key] = stored_kernel_choice(key, lambda: faster_update_kernel(weight, n))
    return KERNEL_CHOICES[key]


def kernel_cache_path() -> Path:
    """The machine's stored kernel choices: $BSSTUDY_CACHE/update_kernels.json, else under $XDG_CACHE_HOME/bsstudy
    or ~/.cache/bsstudy."""
    root = (
        os.environ.get("BSSTUDY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bsstudy"
    )
    return Path(root) / "update_kernels.json"


def stored_kernel_choice(key: tuple, measure) -> str:
    """The choice stored for `key` on this machine, else `measure()`, stored for the next runs. Under a file lock,
    so that jobs of a parallel sweep that measure at the same time all keep the first stored choice."""
    from filelock import FileLock

    from bsstudy.resources import cpu_model
    from bsstudy.runfolder import write_json

    path, name = kernel_cache_path(), "|".join(map(str, (cpu_model(), *key)))
    stored = read_choices(path)
    if name in stored:
        return stored[name]
    choice = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=30):
            stored = read_choices(path)
            choice = stored.setdefault(name, choice)
            write_json(path, stored)
    except OSError:  # a read-only home: this process keeps its own measurement
        pass
    return choice


def read_choices(path: Path) -> dict[str, str]:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in stored.items() if v in ("rank1", "addmm")} if isinstance(stored, dict) else {}


def faster_update_kernel(weight: torch.Tensor, n: int, trials: int = KERNEL_TRIALS) -> str:
    """Time both kernels on scratch tensors of the shape of `weight` with n rows (a warm-up call each,
    then `trials` interleaved calls) and name the one with the faster best time: on a shared machine
    the fastest call is the least disturbed. CPU only: the kernels run synchronously, so perf_counter
    measures them (torch.utils.benchmark.Timer would add its own threading setup to each call)."""
    own = torch.Generator(weight.device).manual_seed(0)  # not the global RNG: the run's streams stay untouched
    scratch, dz, h = (
        torch.randn(shape, generator=own, dtype=weight.dtype, device=weight.device)
        for shape in (weight.shape, (n, weight.shape[0]), (n, weight.shape[1]))
    )
    kernels = {
        "rank1": lambda: subtract_rank1(scratch, dz, h, 1e-3),
        "addmm": lambda: scratch.addmm_(dz.t(), h, alpha=-1e-3),
    }
    best = dict.fromkeys(kernels, float("inf"))
    for trial in range(trials + 1):
        for name, kernel in kernels.items():
            start = time.perf_counter()
            kernel()
            if trial > 0:
                best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=best.get)


def sgd_update(
    optimizer: torch.optim.SGD,
    param: torch.Tensor,
    grad: torch.Tensor,
    lr: float,
    momentum: float,
    weight_decay: float,
    track: bool = False,
) -> torch.Tensor | None:
    """torch.optim.SGD's update of one parameter, momentum buffer kept in the optimizer's state;
    with `track`, return the squared norm of the step before the lr, ||step||^2."""
    if weight_decay:
        grad = grad.add_(param, alpha=weight_decay)
    if momentum:
        state = optimizer.state[param]
        buffer = state.get("momentum_buffer")
        if buffer is None:
            state["momentum_buffer"] = buffer = grad.clone()
        else:
            buffer.mul_(momentum).add_(grad)
        grad = buffer
    param.add_(grad, alpha=-lr)
    return torch.dot(grad.view(-1), grad.view(-1)) if track else None
