"""The `callbacks` config group (bsstudy/conf/callbacks/): Lightning callbacks that monitor metrics.csv's columns
through Lightning's own logging, on a tiny synthetic run each."""

import torch

from bsstudy import CONF_DIR
from bsstudy.config import check_config
from bsstudy.runfolder import read_metrics
from bsstudy.train.run import train

from conftest import compose_run

TINY = ["data=synthetic", "data.val_size=512", "model.hidden_sizes=[16]", "data.batch_size=32", "optim.lr=0.1"]
GROUP = sorted(p.stem for p in (CONF_DIR / "callbacks").glob("*.yaml"))


def test_every_file_of_the_group_composes_alone_and_all_together(tmp_path):
    assert {"early_stopping", "model_checkpoint", "rich_progress_bar", "timer"} <= set(GROUP)
    for names in [[name] for name in GROUP] + [GROUP]:
        cfg = compose_run(tmp_path, [*TINY, f"callbacks=[{','.join(names)}]"])
        assert sorted(cfg.callbacks) == sorted(names) and all("_target_" in cfg.callbacks[n] for n in names)
        check_config(cfg)
    assert compose_run(tmp_path, TINY).get("callbacks") is None  # none unless asked for


def test_early_stopping_on_val_acc_stops_on_a_plateau(tmp_path):
    # min_delta 1: no epoch improves val_acc by more than 1, so with patience 1 the second epoch stops the run
    overrides = ["callbacks=[early_stopping]", "callbacks.early_stopping.patience=1",
                 "callbacks.early_stopping.min_delta=1.0", "trainer.max_epochs=3"]  # fmt: skip
    summary = train(compose_run(tmp_path, [*TINY, *overrides]))
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.csv")] == [0, 1, 2]
    assert summary["stopped"] == "plateau: val_acc improved by no more than 1 in 1 epochs at epoch 2"


def test_model_checkpoint_keeps_the_best_val_acc_beside_bsstudys_checkpoints(tmp_path):
    train(compose_run(tmp_path, [*TINY, "callbacks=[model_checkpoint]", "trainer.max_epochs=3"]))
    rows = read_metrics(tmp_path / "metrics.csv")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt", "previous.ckpt"]
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    state = next(v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["best_model_score"].item() == max(r["val_acc"] for r in rows[1:])  # float64: exact


def test_timer_stops_when_its_duration_is_used_up(tmp_path):
    # checked before training (0 ms used: goes on) and after every epoch (more than 1 ms: stops)
    summary = train(compose_run(tmp_path, [*TINY, "callbacks=[timer]", "callbacks.timer.duration={milliseconds: 1}",
                                           "trainer.max_epochs=3"]))  # fmt: skip
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.csv")] == [0, 1]
    assert summary["stopped"] == "timer: 0:00:00.001000 of training at epoch 1"


def test_rich_progress_bar_replaces_the_tqdm_bar(tmp_path):
    summary = train(compose_run(tmp_path, [*TINY, "callbacks=[rich_progress_bar]", "trainer.progress_bar=true",
                                           "trainer.max_epochs=2"]))  # fmt: skip
    assert summary["status"] == "completed"


def test_monitoring_val_without_a_validation_split_fails_before_training(tmp_path):
    import pytest

    from bsstudy import ConfigError

    no_split = [t for t in TINY if not t.startswith("data.val_size")]
    with pytest.raises(ConfigError, match=r"^callbacks.model_checkpoint.monitor=val_acc needs a validation split"):
        check_config(compose_run(tmp_path, [*no_split, "callbacks=[model_checkpoint]"]))


def test_bf16_precision_runs_on_the_autograd_step(tmp_path):
    """The fast step computes in float32 outside Lightning's autocast: other precisions take the autograd step."""
    summary = train(compose_run(tmp_path, [*TINY, "trainer.precision=bf16-mixed", "trainer.max_epochs=1"]))
    assert summary["status"] == "completed" and summary["fast_step"] is False
