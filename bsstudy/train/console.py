"""What a run prints on the terminal: Lightning's start-up noise filtered out, and a progress bar in optimizer steps.

Lightning prints, for every Trainer, a banner ("GPU available: False, used: False", "TPU available: ..."), an advert
("💡 Tip: For seamless cloud logging ... litlogger"), a deprecation warning from inside itself (torch's `LeafSpec`)
and "`Trainer.fit` stopped: `max_epochs=30` reached." (bsstudy's epoch lines say as much): five lines per run, 45
in a sweep of nine. `quiet_lightning` drops exactly those; every other log line and warning of Lightning stays.

One Lightning batch is a chunk of many optimizer steps (bsstudy/train/module.py), so Lightning's own bar would
count chunks (`7/7 0.22it/s` for 860 steps) under 0-based epochs. `StepProgressBar` (tqdm, the default) and
`StepRichProgressBar` (callbacks=[rich_progress_bar]) count the epoch's optimizer steps and name the epoch as the
epoch lines do, 1-based: "Epoch 3/30 | 430/860 [..., 1234.5 steps/s]".
"""

from __future__ import annotations

import logging
import re
import warnings

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

# Lightning's info lines that say nothing about this run (matched from their start)
NOISE = re.compile(r"GPU available: |TPU available: |💡 Tip: |`Trainer\.fit` stopped: `max_epochs=\d+` reached\.$")
# the loggers Lightning's rank_zero_info writes through (lightning_utilities' own until Lightning replaces it)
RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)
# warnings raised inside Lightning that its users can do nothing about (matched from the message's start)
NOISE_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)  # lightning 2.6 with torch >= 2.10


class LightningNoise(logging.Filter):
    """Drops Lightning's banner, adverts and the max_epochs line (NOISE); lets every other record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return NOISE.match(record.getMessage()) is None


NOISE_FILTER = LightningNoise()


def quiet_lightning() -> None:
    """Filter Lightning's noise (NOISE, NOISE_WARNINGS) in this process. Idempotent; called before every Trainer."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if NOISE_FILTER not in logger.filters:
            logger.addFilter(NOISE_FILTER)
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)  # an equal filter already there is moved, not doubled


def steps_done(steps: int, steps_per_chunk: int, chunks_done: int) -> int:
    """Optimizer steps of an epoch of `steps` steps taken after `chunks_done` chunks of `steps_per_chunk`.

    >>> [steps_done(86, 10, c) for c in (1, 8, 9)]
    [10, 80, 86]
    """
    return min(chunks_done * steps_per_chunk, steps)


def epoch_description(epoch: int, max_epochs: int | None) -> str:
    """The bar's name of 0-based `epoch`, 1-based as the epoch lines (`epoch 3/30 | train loss ...`).

    >>> epoch_description(0, 30), epoch_description(29, 30), epoch_description(4, -1)
    ('Epoch 1/30', 'Epoch 30/30', 'Epoch 5')
    """
    return f"Epoch {epoch + 1}" + (f"/{max_epochs}" if max_epochs is not None and max_epochs > 0 else "")


class StepCounting:
    """What both bars share: the epoch's total and position in optimizer steps (StudyModule.epoch_plan), its name
    1-based. Lightning calls the progress bar's on_train_epoch_start before the module's, so the plan is read here."""

    def epoch_in_steps(self, trainer, pl_module) -> tuple[int, str]:
        self.plan = pl_module.epoch_plan(trainer.current_epoch)
        return self.plan.steps, epoch_description(trainer.current_epoch, trainer.max_epochs)

    def steps_after(self, batch_idx: int) -> int:
        return steps_done(self.plan.steps, self.plan.steps_per_chunk, batch_idx + 1)

    def get_metrics(self, trainer, pl_module) -> dict:
        return {}  # Lightning's v_num (a logger version) means nothing here; the epoch lines carry the metrics


class StepProgressBar(StepCounting, TQDMProgressBar):
    """Lightning's tqdm bar, in optimizer steps with 1-based epochs (trainer.progress_bar=true, the default)."""

    def init_train_tqdm(self) -> Tqdm:
        bar = super().init_train_tqdm()
        bar.unit = "step"  # the rate reads "steps/s"
        return bar

    def on_train_epoch_start(self, trainer, pl_module, *_) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        total, description = self.epoch_in_steps(trainer, pl_module)
        self.train_progress_bar.reset(total=total)
        self.train_progress_bar.initial = 0
        self.train_progress_bar.set_description(description)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        bar, chunks = self.train_progress_bar, batch_idx + 1
        if bar is not None and not bar.disable and self._should_update(chunks, trainer.num_training_batches):
            bar.n = self.steps_after(batch_idx)
            bar.refresh()


class StepRichProgressBar(StepCounting, RichProgressBar):
    """Lightning's RichProgressBar, in optimizer steps with 1-based epochs (callbacks=[rich_progress_bar])."""

    @property
    def total_train_batches(self) -> int | float:
        plan = getattr(self, "plan", None)
        return plan.steps if plan is not None else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return epoch_description(current_epoch, self.trainer.max_epochs)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_in_steps(trainer, pl_module)  # the plan, before Lightning's bar reads total_train_batches
        super().on_train_epoch_start(trainer, pl_module)

    def _update(self, progress_bar_id, current: int, visible: bool = True, hard: bool = False) -> None:
        if progress_bar_id is not None and progress_bar_id == self.train_progress_bar_id:
            current = self.steps_after(current - 1)  # Lightning passes the chunks done
        super()._update(progress_bar_id, current, visible, hard)
