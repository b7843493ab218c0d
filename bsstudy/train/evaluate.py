"""Loss and accuracy on the *full* training, validation (when data.val_size > 0) and test sets, before
training and after every epoch.

The generalization gap is train accuracy - test accuracy, both measured with the same weights
in one full pass. The running mean of the training loss is logged too, but it mixes the weights
of every step of the epoch (early steps are worse), so it overstates the training loss and
would make the gap look smaller than it is, most of all for small batches that move far per epoch.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from bsstudy.resources import synchronized_now

log = logging.getLogger(__name__)


@torch.inference_mode()
def evaluate(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk_size: int, num_classes: int
) -> dict[str, float]:
    """Mean NLL loss and accuracy of `net` on (x, y), in eval mode, `chunk_size` samples per forward pass."""
    was_training = net.training
    net.eval()
    loss = MeanMetric().to(x.device)
    accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False).to(x.device)
    for start in range(0, len(y), chunk_size):
        log_probs = net(x[start : start + chunk_size])
        target = y[start : start + chunk_size]
        loss.update(F.nll_loss(log_probs, target), weight=len(target))
        accuracy.update(log_probs, target)
    net.train(was_training)
    mean_loss = loss.compute().item()
    # NaN outputs (a diverged net) have no prediction: argmax would give class 0 and a made-up accuracy
    return {"loss": mean_loss, "acc": accuracy.compute().item() if mean_loss == mean_loss else float("nan")}


def validation_columns(net: torch.nn.Module, data, chunk_size: int) -> dict[str, float]:
    """{"val_loss", "val_acc"} on the whole validation part; {} without one (data.val_size = 0)."""
    if data.n_val == 0:
        return {}
    val = evaluate(net, data.x_val, data.y_val, chunk_size, data.num_classes)
    return {"val_loss": val["loss"], "val_acc": val["acc"]}


def log_for_monitors(pl_module, row: dict) -> None:
    """The row's numeric columns through Lightning's logging (`log_dict`, per epoch), so that monitoring
    callbacks (trainer.stop_at's EarlyStopping, the `callbacks` group's EarlyStopping and ModelCheckpoint)
    find them in `trainer.callback_metrics` by metrics.csv's column names.

    Not sent to the loggers again (logger=False): metrics.csv has the row already. float64 with batch_size=1,
    so Lightning's epoch mean is the value itself, bit for bit, and a threshold at the next float of a target
    compares exactly (bsstudy/train/stopping.py)."""
    numbers = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in row.items() if isinstance(v, (int, float))}
    pl_module.log_dict(numbers, on_step=False, on_epoch=True, logger=False, batch_size=1)


def epoch_fraction(module, epoch: int) -> float | None:
    """The fraction of epoch `epoch` (1-based, as metrics.csv's row) that StudyModule `module` trained when training
    stopped within it (a +trainer.max_time timer, a step budget or target, +trainer.max_steps, divergence), as a
    share of the epoch's samples; None when the epoch was trained whole (and for epoch 0, before training)."""
    if epoch == 0:
        return None
    plan = module.epoch_plan(epoch - 1)
    if module.epoch_steps >= plan.steps:
        return None
    return module.epoch_samples / min(plan.steps * plan.samples_per_step, module.data.n_train)


def epoch_row(module, epoch: int, lr: float, train_time_s: float, chunk_size: int, extra: dict) -> dict:
    """metrics.csv's row after `epoch` epochs (0: before training) of the StudyModule `module`: full-pass loss and
    accuracy on the training, test (and validation) sets, the gap, the counters, `lr` (the last step's) and times.
    The row of an epoch that training left before its end has `epoch_fraction`, the part of it trained."""
    start = time.perf_counter()
    data = module.data
    train = evaluate(module.net, data.x_train, data.y_train, chunk_size, data.num_classes)
    test = evaluate(module.net, data.x_test, data.y_test, chunk_size, data.num_classes)
    cut = epoch_fraction(module, epoch)
    return {
        "epoch": epoch,
        **({"epoch_fraction": cut} if cut is not None else {}),
        "batch_size": module.epoch_plan(max(epoch - 1, 0)).batch_size,  # of the epoch that led here
        "optimizer_steps": module.optimizer_steps,
        "samples_seen": module.samples_seen,
        "lr": lr,
        "train_loss": train["loss"],
        "train_acc": train["acc"],
        "test_loss": test["loss"],
        "test_acc": test["acc"],
        "gap": train["acc"] - test["acc"],
        **validation_columns(module.net, data, chunk_size),
        "train_time_s": train_time_s,
        "eval_time_s": time.perf_counter() - start,
        **extra,
    }


def log_epoch_line(row: dict, max_epochs: int, prefix: str = "") -> None:
    """One log line per evaluated epoch (the console's view of metrics.csv)."""
    log.info(
        "%sepoch %d/%d%s | train loss %.4f acc %.2f%% |%s test loss %.4f acc %.2f%% | gap %+.2f pts | %.1f s",
        prefix,
        row["epoch"],
        max_epochs,
        f" (stopped at {100 * row['epoch_fraction']:.0f}% of it)" if "epoch_fraction" in row else "",
        row["train_loss"],
        100 * row["train_acc"],
        f" val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}% |" if "val_acc" in row else "",
        row["test_loss"],
        100 * row["test_acc"],
        100 * row["gap"],
        row["train_time_s"],
    )


class EpochEvaluation(L.Callback):
    """Writes one row per epoch to every logger: full-pass train/test (and val) loss and accuracy, the gap,
    the running training loss, lr, steps, samples and wall-clock time (epoch 0 = before training).

    Extra columns that probes put into `pl_module.record.columns` (module.EpochRecord) during the epoch join the row.
    """

    def __init__(self, eval_chunk_size: int):
        self.eval_chunk_size = eval_chunk_size
        self.train_time_s = 0.0  # cumulative training time, evaluation excluded; survives resume
        self.row: dict = {}  # the last row logged (ValTarget counts an epoch's row as an evaluation)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch == 0:  # a resumed run already has its epoch-0 row
            self.log_row(trainer, pl_module, epoch=0, extra={})

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self.epoch_start = synchronized_now(pl_module.device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        epoch_time = synchronized_now(pl_module.device) - self.epoch_start - pl_module.record.probe_time_s
        self.train_time_s += epoch_time
        extra = {
            "train_loss_running": pl_module.running_train_loss(),
            "epoch_time_s": epoch_time,
            "probe_time_s": pl_module.record.probe_time_s,
            **pl_module.record.columns,
        }
        self.log_row(trainer, pl_module, epoch=trainer.current_epoch + 1, extra=extra)

    def log_row(self, trainer: L.Trainer, pl_module, epoch: int, extra: dict) -> None:
        row = epoch_row(pl_module, epoch, pl_module.current_lr(), self.train_time_s, self.eval_chunk_size, extra)
        self.row = row
        log_epoch_line(row, trainer.max_epochs)  # first: on the console even when metrics.csv cannot be written
        for logger in trainer.loggers:
            logger.log_metrics(row, step=epoch)
        if epoch > 0:
            log_for_monitors(pl_module, row)

    def state_dict(self) -> dict:
        return {"train_time_s": self.train_time_s}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_time_s = state_dict["train_time_s"]
