"""Steps to val_acc targets (bsstudy/train/target.py): the crossing interpolated in log-steps over every
evaluation (in-epoch checks and epoch ends), several targets from one run, the stop at the highest, resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import bsstudy.train.target as target_module
from bsstudy.train.target import ValTarget, crossing, target_callbacks, target_list

from conftest import compose_run


def evaluations(*pairs):
    """(steps, val_acc) pairs as evaluations, each with a test accuracy of val_acc - 0.01."""
    return [{"optimizer_steps": s, "val_acc": a, "test_acc": a - 0.01} for s, a in pairs]


def log_interpolated(s0, a0, s1, a1, t):
    return math.exp(math.log(s0) + (t - a0) / (a1 - a0) * (math.log(s1) - math.log(s0)))


def test_a_crossing_between_two_checks_is_interpolated_in_log_steps():
    c = crossing(evaluations((100, 0.80), (110, 0.84), (121, 0.88), (133, 0.90)), 0.85)
    assert c["check_steps"] == 121 and c["previous_check_steps"] == 110
    assert c["steps_interpolated"] == pytest.approx(log_interpolated(110, 0.84, 121, 0.88, 0.85))
    assert 110 < c["steps_interpolated"] < 121 and c["resolution"] == pytest.approx(1.1)
    assert (c["val_acc"], c["val_acc_below"], c["test_acc"]) == (0.88, 0.84, pytest.approx(0.87))


def test_a_crossing_at_an_evaluation_exactly_at_the_target_is_that_step():
    assert crossing(evaluations((100, 0.80), (110, 0.85)), 0.85)["steps_interpolated"] == pytest.approx(110)


def test_a_crossing_seen_only_at_an_epoch_end_counts_there():
    # checks at 196 and 227 are below; the epoch end at step 215 is the first at or above
    rows = evaluations((196, 0.84), (215, 0.86), (227, 0.855))
    c = crossing(rows, 0.85)
    assert c["check_steps"] == 215 and c["previous_check_steps"] == 196
    assert 196 < c["steps_interpolated"] < 215 and c["resolution"] == pytest.approx(215 / 196)


def test_a_crossing_at_the_first_evaluation_is_counted_at_that_step():
    c = crossing(evaluations((0, 0.1), (1, 0.9), (2, 0.95)), 0.85)  # step 0 (before training) does not count
    assert c["steps_interpolated"] == 1 and c["check_steps"] == 1 and c["previous_check_steps"] == 0
    assert c["resolution"] is None and c["val_acc_below"] is None


def test_a_target_never_reached_has_no_crossing():
    assert crossing(evaluations((1, 0.5), (2, 0.6), (3, 0.84)), 0.85) is None
    assert crossing([], 0.85) is None


def test_the_first_upward_crossing_of_a_non_monotone_sequence_counts():
    c = crossing(evaluations((10, 0.80), (11, 0.84), (13, 0.83), (15, 0.87), (17, 0.84), (19, 0.89)), 0.85)
    assert (c["previous_check_steps"], c["check_steps"]) == (13, 15)
    assert c["steps_interpolated"] == pytest.approx(log_interpolated(13, 0.83, 15, 0.87, 0.85))


def test_nan_accuracies_of_a_diverged_net_do_not_count():
    assert crossing(evaluations((10, 0.8), (11, math.nan), (12, 0.9)), 0.85)["previous_check_steps"] == 10


def test_targets_are_taken_ascending_once_and_the_config_accepts_a_list(tmp_path):
    assert target_list([0.88, 0.85, 0.87, 0.85]) == [0.85, 0.87, 0.88] and target_list(0.85) == [0.85]
    cfg = compose_run(tmp_path, ["data=synthetic", "trainer.stop_at.val_acc=[0.88,0.85,0.87]"])
    (callback,) = target_callbacks(cfg.trainer.stop_at, tmp_path)
    assert callback.targets == [0.85, 0.87, 0.88] and callback.val_acc == 0.88


# --- ValTarget on scripted accuracies (no training) ----------------------------------------------------


class ScriptedRun:
    """A stand-in for StudyModule: `evaluate` answers from `accuracies` by the current step."""

    def __init__(self, accuracies: dict[int, float]):
        self.accuracies = accuracies
        self.optimizer_steps = self.samples_seen = 0
        self.diverged = False
        self.device = torch.device("cpu")
        self.record = SimpleNamespace(probe_time_s=0.0)
        self.data = SimpleNamespace(n_train=100, n_val=10, num_classes=2, x_val="val", y_val=None, x_test="test",
                                    y_test=None)  # fmt: skip
        self.net = None

    def evaluate(self, net, x, y, chunk_size, num_classes):
        acc = self.accuracies[max(s for s in self.accuracies if s <= self.optimizer_steps)]
        return {"loss": 1 - acc, "acc": acc if x == "val" else acc - 0.01}

    def to(self, steps: int) -> None:
        self.optimizer_steps, self.samples_seen = steps, 10 * steps

    def epoch_row(self) -> dict:
        val = self.evaluate(None, "val", None, 0, 0)
        return {"optimizer_steps": self.optimizer_steps, "samples_seen": self.samples_seen, "train_time_s": 1.0,
                "val_loss": val["loss"], "val_acc": val["acc"], "test_acc": val["acc"] - 0.01}  # fmt: skip


def scripted_target(tmp_path, monkeypatch, accuracies, val_acc, ratio=2.0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    run = ScriptedRun(accuracies)
    monkeypatch.setattr(target_module, "evaluate", run.evaluate)
    callback = ValTarget(tmp_path, val_acc, ratio, None)
    callback.start(run, 10, lambda: 0.5)
    return callback, run


def test_every_target_is_recorded_and_the_run_stops_at_the_highest(tmp_path, monkeypatch):
    # ratio 2: checks at 1, 2, 4, 8, 16; accuracies rise by step
    callback, run = scripted_target(tmp_path, monkeypatch, {0: 0.5, 3: 0.86, 6: 0.875, 12: 0.9}, [0.88, 0.85, 0.87])
    stops = []
    for steps in range(1, 17):
        run.to(steps)
        stops.append(callback.after_chunk(run))
    assert stops.index(True) == 15  # step 16: the first check at or above 0.88
    by_target = {c["target"]: c for c in callback.summary["crossings"]}
    assert [by_target[t]["check_steps"] for t in (0.85, 0.87, 0.88)] == [4, 8, 16]
    summary = callback.summary
    assert summary["val_acc_target"] == 0.88 and summary["val_acc_targets"] == [0.85, 0.87, 0.88]
    assert summary["reached"] and summary["optimizer_steps"] == summary["check_steps"] == 16
    assert summary["steps_interpolated"] == pytest.approx(log_interpolated(8, 0.875, 16, 0.9, 0.88))
    assert summary["test_acc"] == pytest.approx(0.89) and summary["checks"] == 5
    rows = target_module.read_metrics(tmp_path / "target.csv")
    assert [r["optimizer_steps"] for r in rows] == [1, 2, 4, 8, 16] and {r["epoch_end"] for r in rows} == {0}
    assert [r["test_acc"] is not None for r in rows] == [False, False, True, True, True]  # where a target is new
    assert callback.stopped(16) == {"stopped": "val_acc >= 0.88 at step 16"}


def test_an_epoch_end_evaluation_counts_and_stops_the_run(tmp_path, monkeypatch):
    # checks at 1, 2, 4, 8; the epoch ends at step 6, already at the target: counted there, not at 8
    callback, run = scripted_target(tmp_path, monkeypatch, {0: 0.5, 5: 0.9}, 0.85)
    for steps in range(1, 7):
        run.to(steps)
        assert not callback.after_chunk(run)
    assert callback.epoch_end(run, run.epoch_row())
    summary = callback.summary
    assert summary["optimizer_steps"] == 6 and summary["previous_check_steps"] == 4 and summary["evaluations"] == 4
    assert summary["checks"] == 3 and 4 < summary["steps_interpolated"] < 6
    rows = target_module.read_metrics(tmp_path / "target.csv")
    assert rows[-1]["epoch_end"] == 1 and rows[-1]["reached"] == 1
    assert not callback.epoch_end(run, run.epoch_row())  # the same step again is not a second evaluation


def test_an_epoch_end_at_a_checks_step_is_not_counted_twice(tmp_path, monkeypatch):
    callback, run = scripted_target(tmp_path, monkeypatch, {0: 0.5}, 0.85)
    for steps in range(1, 5):
        run.to(steps)
        callback.after_chunk(run)
    assert not callback.epoch_end(run, run.epoch_row()) and callback.summary["evaluations"] == 3  # 1, 2, 4


def test_resume_from_state_dict_gives_the_same_crossings(tmp_path, monkeypatch):
    accuracies = {0: 0.5, 3: 0.84, 7: 0.86, 14: 0.9}
    whole, run = scripted_target(tmp_path / "whole", monkeypatch, accuracies, [0.85, 0.88])
    for steps in range(1, 17):
        run.to(steps)
        whole.after_chunk(run)
    first, run = scripted_target(tmp_path / "resumed", monkeypatch, accuracies, [0.85, 0.88])
    for steps in range(1, 7):
        run.to(steps)
        first.after_chunk(run)
    first.epoch_end(run, run.epoch_row())
    state = first.state_dict()
    whole_state = whole.state_dict()
    resumed, run = scripted_target(tmp_path / "resumed", monkeypatch, accuracies, [0.85, 0.88])
    resumed.load_state_dict(state)
    run.to(6)
    for steps in range(7, 17):
        run.to(steps)
        resumed.after_chunk(run)
    assert [c["check_steps"] for c in resumed.summary["crossings"]] == [8, 16]
    assert resumed.summary["crossings"][0]["previous_check_steps"] == 6  # the epoch end before the resume
    assert whole_state["due"] == resumed.state_dict()["due"]


def test_a_checkpoint_from_before_evaluations_were_kept_resumes_from_target_csv(tmp_path, monkeypatch):
    callback, run = scripted_target(tmp_path, monkeypatch, {0: 0.5, 5: 0.9}, 0.85)
    for steps in range(1, 5):
        run.to(steps)
        callback.after_chunk(run)
    old = {"due": 8, "previous_check": 4, "checks": 3, "summary": {"val_acc_target": 0.85, "reached": False}}
    resumed, run = scripted_target(tmp_path, monkeypatch, {0: 0.5, 5: 0.9}, 0.85)
    resumed.load_state_dict(old)
    run.to(8)
    assert resumed.after_chunk(run)
    assert resumed.summary["previous_check_steps"] == 4 and resumed.summary["check_steps"] == 8
