"""`trainer.stop_at`: stop training at a training-loss or training-accuracy target, or on a plateau of the
training loss, so that runs of different batch sizes can be compared at matched training loss (Keskar et
al. 2017 train until the loss stops improving). trainer.max_epochs stays the cap.

The rules are Lightning EarlyStopping callbacks checked at the end of every training epoch. They read the
epoch's metrics.csv row (full-pass train_loss, train_acc, ...), which bsstudy/train/evaluate.py puts into
`trainer.callback_metrics`; Lightning runs monitoring callbacks after all others at the end of an epoch,
so they see the row of the epoch that just ended.

>>> from omegaconf import OmegaConf
>>> [cb.monitor for cb in stop_at_callbacks(OmegaConf.create({"train_loss": 0.3, "train_acc": None,
...                                                            "patience": None, "min_delta": 0.0}))]
['train_loss']
"""

from __future__ import annotations

import math
import sys
from datetime import timedelta

from lightning.pytorch.callbacks import EarlyStopping, Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from bsstudy.config import STOP_AT_KEYS

# their values are checked with the rest of the config (bsstudy/config.py)
NEVER = sys.maxsize  # a patience no run reaches: the threshold alone decides


def stop_at_callbacks(stop_at) -> list[EarlyStopping]:
    """One EarlyStopping on train_loss (its target and/or plateau), one on train_acc (its target), as set.

    EarlyStopping's threshold test is strict (loss < threshold); the threshold is the next float above the
    target (below, for accuracy), so that a loss equal to the target, or an accuracy of exactly 1.0, stops."""
    loss, acc, patience, min_delta = (stop_at.get(key) for key in STOP_AT_KEYS)
    callbacks = []
    if loss is not None or patience is not None:
        callbacks.append(
            EarlyStopping(
                "train_loss",
                mode="min",
                stopping_threshold=None if loss is None else math.nextafter(loss, math.inf),
                patience=NEVER if patience is None else patience,
                min_delta=min_delta,
                check_finite=False,  # a diverged run is stopped and labelled by the training step itself
                check_on_train_epoch_end=True,
            )
        )
    if acc is not None:
        callbacks.append(
            EarlyStopping(
                "train_acc",
                mode="max",
                stopping_threshold=math.nextafter(acc, -math.inf),
                patience=NEVER,
                check_finite=False,
                check_on_train_epoch_end=True,
            )
        )
    return callbacks


def stopped(trainer, diverged: bool, final: dict | None) -> dict:
    """Why training ended and in which epoch (metrics.csv's epoch of `final`, the last row): {"stopped": ...,
    "stopped_epoch": e}. Reads every EarlyStopping of the trainer, the user's own (trainer.callbacks, the callbacks
    group) too, then a Timer whose duration is used up, then +trainer.max_steps. A stop within an epoch says how
    many epochs were trained (its row's `epoch_fraction`)."""
    epoch = int(final["epoch"]) if final else 0
    if diverged:
        return {"stopped": "diverged", "stopped_epoch": epoch}
    for cb in trainer.callbacks if trainer else []:
        if not isinstance(cb, EarlyStopping) or cb.stopping_reason == EarlyStoppingReason.NOT_STOPPED:
            continue
        epoch = cb.stopped_epoch + 1  # Lightning counts epochs from 0; metrics.csv's row e follows epoch e - 1
        if cb.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD:
            reason = f"{cb.monitor} {'<=' if cb.mode == 'min' else '>='} {cb.stopping_threshold:.6g}"
        elif cb.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
            reason = f"plateau: {cb.monitor} improved by no more than {abs(cb.min_delta):g} in {cb.patience} epochs"
        else:
            reason = cb.stopping_reason_message or cb.stopping_reason.name.lower()
        return {"stopped": f"{reason} at epoch {epoch}", "stopped_epoch": epoch}
    where = at_epoch(final)
    for cb in trainer.callbacks if trainer else []:
        if isinstance(cb, Timer) and cb.time_remaining() is not None and cb.time_remaining() <= 0:
            return {"stopped": f"timer: {timedelta(seconds=cb._duration)} of training {where}", "stopped_epoch": epoch}
    if trainer is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return {"stopped": f"trainer.max_steps: {trainer.max_steps} optimizer steps {where}", "stopped_epoch": epoch}
    return {"stopped": "max_epochs", "stopped_epoch": epoch}


def at_epoch(final: dict | None) -> str:
    """ "at epoch 3" after a whole epoch; "within epoch 3 (2.45 epochs trained)" when its row has epoch_fraction."""
    epoch = int(final["epoch"]) if final else 0
    if final is None or final.get("epoch_fraction") is None:
        return f"at epoch {epoch}"
    return f"within epoch {epoch} ({epoch - 1 + final['epoch_fraction']:.3g} epochs trained)"
