"""The terminal of a run (bsstudy/train/console.py): Lightning's noise filtered, its real messages kept, and a
progress bar in optimizer steps with 1-based epochs."""

import logging
import warnings

import pytest
from lightning.pytorch.callbacks import RichProgressBar

from bsstudy.train.console import StepProgressBar, epoch_description, quiet_lightning, steps_done
from bsstudy.train.run import train

from conftest import compose_run

# 2048 samples at B=24: 86 steps per epoch (the last one short); 256 samples per chunk: 10 steps, 9 chunks
SYNTH = ["data=synthetic", "model.hidden_sizes=[16]", "data.batch_size=24", "trainer.chunk_samples=256",
         "trainer.max_epochs=2", "trainer.progress_bar=true"]  # fmt: skip
STEPS_AFTER_EACH_CHUNK = [10, 20, 30, 40, 50, 60, 70, 80, 86]


def test_lightnings_banner_adverts_and_leafspec_warning_are_dropped_and_its_real_messages_kept(caplog, monkeypatch):
    quiet_lightning()
    # lightning.pytorch stops propagating to the root logger when it is imported while the root has no handler
    # (its own __init__), which depends on the tests that ran before: let caplog's root handler see it here
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=lightning.name):
        for line in ("GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
                     "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](...)",
                     "`Trainer.fit` stopped: `max_epochs=30` reached.",  # fmt: skip
                     "Time limit reached. Elapsed time is 0:01:00. Signaling Trainer to stop.",
                     "`Trainer.fit` stopped: `max_steps=304` reached."):  # fmt: skip
            lightning.info(line)
    assert [r.getMessage() for r in caplog.records] == [
        "Time limit reached. Elapsed time is 0:01:00. Signaling Trainer to stop.",
        "`Trainer.fit` stopped: `max_steps=304` reached.",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()  # its filters go before "always"
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ... instead.", FutureWarning, stacklevel=1)
        warnings.warn("The dataloader does not have many workers", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["The dataloader does not have many workers"]


def test_the_bar_counts_optimizer_steps_of_the_epoch_and_names_it_1_based():
    assert [steps_done(86, 10, chunks) for chunks in range(1, 10)] == STEPS_AFTER_EACH_CHUNK
    assert steps_done(860, 123, 7) == 860  # 7 chunks of an epoch of 860 steps: the bar ends at 860/860, not 7/7
    assert [epoch_description(e, 30) for e in (0, 2, 29)] == ["Epoch 1/30", "Epoch 3/30", "Epoch 30/30"]
    assert epoch_description(0, -1) == "Epoch 1"  # max_epochs=-1 (no cap): no total


def test_a_run_shows_its_bar_in_steps_and_progress_bar_false_shows_none(tmp_path, monkeypatch):
    seen = []
    batch_end = StepProgressBar.on_train_batch_end

    def record(self, trainer, *args):
        batch_end(self, trainer, *args)
        bar = self.train_progress_bar
        seen.append((bar.desc.rstrip(": "), bar.n, bar.total, bar.unit))

    monkeypatch.setattr(StepProgressBar, "on_train_batch_end", record)
    train(compose_run(tmp_path / "bar", SYNTH))
    assert seen == [(f"Epoch {epoch}/2", n, 86, "step") for epoch in (1, 2) for n in STEPS_AFTER_EACH_CHUNK]

    seen.clear()
    train(compose_run(tmp_path / "no_bar", [*SYNTH, "trainer.progress_bar=false"]))
    assert seen == []


def test_the_rich_bar_of_the_callbacks_group_counts_steps_too(tmp_path, monkeypatch):
    pytest.importorskip("rich")
    seen = []
    update = RichProgressBar._update

    def record(self, progress_bar_id, current, *args, **kwargs):
        update(self, progress_bar_id, current, *args, **kwargs)
        if progress_bar_id is not None and progress_bar_id == self.train_progress_bar_id:
            task = self.progress.tasks[progress_bar_id]
            seen.append((task.description.strip(), task.completed, task.total))

    monkeypatch.setattr(RichProgressBar, "_update", record)
    train(compose_run(tmp_path, [*SYNTH, "callbacks=[rich_progress_bar]", "trainer.max_epochs=1"]))
    assert seen[0][0] == "Epoch 1/1"
    assert [(completed, total) for _, completed, total in seen] == [(n, 86) for n in STEPS_AFTER_EACH_CHUNK]
