"""The tuned study: the val_acc target within epochs, the lr selection, the S(B) fit, the edge-of-grid flag, the
recommendation ("cannot tell" included), and the whole study on synthetic data resuming after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from bsstudy import ConfigError
from bsstudy.analysis.report.tuned import (
    critical_batch,
    edge_of_grid,
    fastest_batch,
    fit_steps,
    largest_useful_batch,
    lr_for,
    per_batch_table,
    selected_runs,
)
from bsstudy.config import STOP_AT_RULES, check_settings
from bsstudy.train.target import next_check_step
from bsstudy.train.tuned import Candidate, lr_grid, select_best

from conftest import ROOT, compose_run

# --- the target and the selection -------------------------------------------------------------------


def test_checks_follow_a_geometric_schedule_with_ratio_and_at_least_one_step():
    # next = max(s + 1, ceil(1.1 s)): every step up to 10, then about 10% apart
    assert [next_check_step(s, 1.1) for s in (1, 5, 10, 11, 100, 1000)] == [2, 6, 11, 13, 110, 1100]


@pytest.mark.parametrize(
    "key, value, message",
    [("val_acc", 1.5, "trainer.stop_at.val_acc"), ("val_acc", [], "non-empty list"),
     ("val_acc", [0.85, 1.5], r"null, a number in \(0, 1\] or a non-empty list of them; got \[0.85, 1.5\]"),
     ("val_check_ratio", 1.0, "trainer.stop_at.val_check_ratio"), ("max_steps", 0, "trainer.stop_at.max_steps")],
)  # fmt: skip
def test_bad_target_settings_are_config_errors_naming_the_key(key, value, message):
    stop_at = {"val_acc": 0.85, "val_check_ratio": 1.1, "max_steps": None} | {key: value}
    with pytest.raises(ConfigError, match=message):
        check_settings(stop_at, STOP_AT_RULES, "trainer.stop_at")


def test_lr_grid_is_centred_on_the_linear_rule_and_keeps_the_effective_step_under_momentum():
    assert lr_grid(256, 0.1, 64, [0.5, 1, 2]) == [0.2, 0.4, 0.8]  # 0.1 * 256 / 64 = 0.4 in the middle
    assert lr_grid(64, 0.1, 64, [1], momentum=0.9) == [0.01]  # eta / (1 - m) = 0.1, as without momentum


def test_selection_takes_fewest_steps_then_higher_val_acc_then_smaller_lr_and_none_when_none_reached():
    fast = Candidate(64, 0.2, 0.0, True, 400, 0.851)
    tie_better_val = Candidate(64, 0.4, 0.0, True, 400, 0.86)
    tie_same_val = Candidate(64, 0.1, 0.0, True, 400, 0.86)
    slow = Candidate(64, 0.05, 0.0, True, 900, 0.9)
    assert select_best([slow, fast, tie_better_val, tie_same_val]) == tie_same_val
    assert select_best([Candidate(64, 0.1, 0.0, False, None, None)]) is None


def test_val_target_stops_within_the_epoch_and_records_the_crossing(tmp_path):
    # B=16 on 1536 training samples: 96 steps per epoch, chunks of 4 steps; the target stops the run mid-epoch
    run_dir = tmp_path / "run"
    overrides = ["data=synthetic", "data.val_size=512", "data.batch_size=16", "optim.lr=0.1", "trainer.max_epochs=5",
                 "trainer.chunk_samples=64", "trainer.stop_at.val_acc=0.3"]  # fmt: skip
    from bsstudy.train.run import train

    summary = train(compose_run(run_dir, overrides))
    checks = pd.read_csv(run_dir / "target.csv")
    target = summary["target"]
    assert target["reached"] and summary["stopped"] == f"val_acc >= 0.3 at step {target['optimizer_steps']}"
    assert summary["optimizer_steps"] == target["optimizer_steps"]  # stopped at the check that saw the target
    assert target["optimizer_steps"] % 96 != 0 or target["optimizer_steps"] < 96 * 5  # not only at an epoch end
    assert (checks.val_acc.iloc[:-1] < 0.3).all() and checks.val_acc.iloc[-1] >= 0.3
    steps = checks.optimizer_steps.tolist()
    assert all(b >= next_check_step(a, 1.1) for a, b in zip(steps, steps[1:], strict=False))  # the schedule
    assert all(b - next_check_step(a, 1.1) < 4 for a, b in zip(steps, steps[1:], strict=False))  # <= one chunk late
    assert target["previous_check_steps"] == steps[-2] and target["check_steps"] == steps[-1]
    assert steps[-2] < target["steps_interpolated"] <= steps[-1]  # interpolated in log-steps between them
    assert target["resolution"] == pytest.approx(steps[-1] / steps[-2])
    assert {96 * e for e in range(1, steps[-1] // 96 + 1)} <= set(steps)  # every epoch end counts (96, 192, ...)
    assert target["evaluations"] == len(steps) and target["checks"] == int((checks.epoch_end == 0).sum())
    assert 0 < target["train_time_s"] <= summary["train_time_s"] + 1e-9


# --- the fit, the edge flag and the recommendation --------------------------------------------------

S_MIN, B_CRIT = 400.0, 300.0
BATCH_SIZES = [16, 64, 256, 1024, 4096]


def noisy_steps(batch_size: int, seeds: int, noise: float, seed: int) -> list[float]:
    """S(B) = S_min (1 + B_crit / B) times log-normal noise of sd `noise`."""
    generator = np.random.default_rng([seed, batch_size])
    return list(S_MIN * (1 + B_CRIT / batch_size) * np.exp(generator.normal(0, noise, seeds)))


def test_fit_recovers_b_crit_from_noisy_steps():
    b = [b for b in BATCH_SIZES for _ in range(3)]
    s = [x for bs in BATCH_SIZES for x in noisy_steps(bs, 3, 0.05, 0)]
    s_min, b_crit = fit_steps(b, s)
    assert abs(b_crit / B_CRIT - 1) < 0.15 and abs(s_min / S_MIN - 1) < 0.1


def constructed_runs(steps_of, lrs=(0.05, 0.1, 0.2), best=0.1, seeds=(0, 1, 2), time_per_step=None) -> pd.DataFrame:
    """Runs as tuned_runs reads them: every B has the lr grid `lrs` on seed 0, where `best` is fastest (others
    take twice the steps), and `best` again on the other seeds."""
    time_per_step = time_per_step or (lambda b: 0.001 * b**0.5)
    rows = []
    for b in BATCH_SIZES:
        steps = steps_of(b)
        for lr in lrs:
            for i, seed in enumerate(seeds if lr == best else seeds[:1]):
                s = steps[i] * (1 if lr == best else 2)
                rows.append({"batch_size": b, "lr": lr, "momentum": 0.0, "seed": seed, "reached": True, "steps": s,
                             "epochs": s * b / 50000, "train_time_s": s * time_per_step(b), "val_acc": 0.86,
                             "test_acc": 0.85, "b_simple": 250.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_edge_of_grid_flags_the_lowest_and_the_highest_lr_and_nothing_inside():
    assert edge_of_grid(0.05, [0.05, 0.1, 0.2]) == "lowest"
    assert edge_of_grid(0.2, [0.05, 0.1, 0.2]) == "highest"
    assert edge_of_grid(0.1, [0.05, 0.1, 0.2]) is None
    table = per_batch_table(constructed_runs(lambda b: noisy_steps(b, 3, 0.02, 1), best=0.2), seed=0)
    assert (table.edge == "at the highest lr").all()


def test_recommendation_answers_when_the_bend_is_inside_the_data_and_the_seeds_agree():
    runs = constructed_runs(lambda b: noisy_steps(b, 3, 0.02, 2))
    table = per_batch_table(runs, seed=0)
    fit = critical_batch(selected_runs(runs, table))
    assert not fit.why_not and abs(fit.b_crit / B_CRIT - 1) < 0.15 and fit.low < fit.b_crit < fit.high
    assert largest_useful_batch(fit).told
    # time per step ~ sqrt(B) and steps ~ 1 + 300/B: time is least at B=256 (B=64 and 1024 are clearly slower)
    fastest, best = fastest_batch(table)
    assert fastest.told and fastest.answer.startswith("B = 256")
    answer = lr_for(best, grid_ratio=2.0)
    assert answer.told and answer.answer.startswith("lr = 0.1 (between 0.05 and 0.2)")


def test_recommendation_cannot_tell_with_one_seed():
    runs = constructed_runs(lambda b: noisy_steps(b, 1, 0.02, 3), seeds=(0,))
    table = per_batch_table(runs, seed=0)
    fit = critical_batch(selected_runs(runs, table))
    assert "too few seeds" in largest_useful_batch(fit).answer and not largest_useful_batch(fit).told
    fastest, _ = fastest_batch(table)
    assert fastest.answer.startswith("cannot tell: too few seeds")


def test_recommendation_cannot_tell_b_crit_when_steps_scale_perfectly_over_the_whole_range():
    # S = S_min (1 + 10^6 / B): no bend inside 16 ... 4096, so B_crit's interval reaches beyond the data
    runs = constructed_runs(lambda b: list(400 * (1 + 1e6 / b) * np.exp([0.0, 0.03, -0.03])))
    table = per_batch_table(runs, seed=0)
    answer = largest_useful_batch(critical_batch(selected_runs(runs, table)))
    assert answer.answer.startswith("cannot tell") and ("beyond the measured" in answer.answer
                                                        or "unbounded" in answer.answer)  # fmt: skip


def test_recommendation_cannot_tell_the_lr_when_it_is_at_the_grids_edge():
    runs = constructed_runs(lambda b: noisy_steps(b, 3, 0.02, 4), best=0.05)
    table = per_batch_table(runs, seed=0)
    fastest, best = fastest_batch(table)
    assert lr_for(best, 2.0).answer.startswith("cannot tell: lr 0.05 is at the lowest lr")
    assert not fastest.told


# --- the whole study, killed and resumed -------------------------------------------------------------

STUDY = [
    "-m", "experiment=tuned", "data=synthetic", "data.val_size=512",
    "hydra.sweeper.batch_sizes=[16,64]", "hydra.sweeper.lr_factors=[1,2]", "hydra.sweeper.seeds=[0,1]",
    "trainer.stop_at.val_acc=0.3", "trainer.max_epochs=2", "trainer.chunk_samples=256", "trainer.progress_bar=false",
]  # fmt: skip


def summaries(sweep):
    return {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/summary.json")}


@pytest.mark.slow
def test_tiny_tuned_study_resumes_after_a_kill_skipping_finished_runs_and_writes_the_report(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "bsstudy", *STUDY, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(summaries(sweep)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)  # a hard kill mid-study: no clean-up, no report
    first.wait()
    done_before = summaries(sweep)
    assert 2 <= len(done_before) < 6 and not (sweep / "report").exists()

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    after = summaries(sweep)
    assert len(after) == 6  # 2 B x 2 lrs on seed 0, then each B's selected lr on seed 1
    assert all(after[run] == mtime for run, mtime in done_before.items())  # finished runs were not redone
    assert (second.stdout + second.stderr).count("nothing to do") >= len(done_before)
    selection = json.loads((sweep / "tuned_selection.json").read_text())
    assert set(selection["selected"]) == {"16", "64"}
    report = (sweep / "report" / "report.md").read_text()
    assert "## Recommendation" in report and "## Steps to target" in report
    assert math.isfinite(json.loads((sweep / "0" / "summary.json").read_text())["target"]["train_time_s"] or 0)


def test_a_run_recorded_before_the_target_settings_existed_is_the_same_run_when_they_are_null():
    from bsstudy.runfolder.identity import differing_keys

    recorded = {"trainer.max_epochs": 30}
    assert differing_keys(recorded, recorded | {"trainer.stop_at.val_acc": None}) == []
    assert differing_keys(recorded, recorded | {"trainer.stop_at.val_acc": 0.85}) == [
        "trainer.stop_at.val_acc: '(absent)' -> 0.85"
    ]


def test_b_crit_cannot_be_told_when_a_fitted_batch_size_has_its_best_lr_at_the_grid_edge():
    runs = constructed_runs(lambda b: noisy_steps(b, 3, 0.02, 2))
    table = per_batch_table(runs, seed=0)
    fit = critical_batch(selected_runs(runs, table))
    assert largest_useful_batch(fit, table).told
    table.loc[table.batch_size == table.batch_size.max(), "edge"] = "at the lowest lr"
    answer = largest_useful_batch(fit, table)
    assert not answer.told and "edge of its grid" in answer.answer and "at the lowest lr" in answer.answer


# --- the study's messages and the report's header (issue #25) ----------------------------------------


def not_reached(b, lr, acc):
    return Candidate(b, lr, 0.0, False, None, None, acc)


def test_a_grid_that_does_not_reach_the_target_says_the_best_accuracy_its_lr_and_what_to_change():
    from bsstudy.train.tuned import not_reached_warning

    grid = [not_reached(16, 0.025, 0.41), not_reached(16, 0.05, 0.486)]
    text = not_reached_warning(16, grid, 0.99, "trainer.max_epochs=1")
    assert "reached val_acc 0.99" in text and "best val_acc 0.486 at lr 0.05, the grid's highest lr" in text
    assert "trainer.stop_at.val_acc" in text and "trainer.max_epochs=1" in text and "hydra.sweeper.lr_factors" in text
    inside = not_reached_warning(16, [*grid, not_reached(16, 0.1, 0.3)], 0.99, "trainer.max_epochs=1")
    assert "at its edge" not in inside and "highest lr" not in inside
    diverged = not_reached_warning(16, [Candidate(16, 0.1, 0.0, False, None, None)], 0.9, "the budget")
    assert "no validation accuracy recorded" in diverged


def test_the_line_before_phase_two_gives_each_unreached_batch_sizes_best_accuracy():
    from bsstudy.train.tuned import phase_two_summary

    reached = Candidate(64, 0.2, 0.0, True, 300, 0.9, 0.91)
    line = phase_two_summary({16: None, 64: reached}, [not_reached(16, 0.05, 0.486), reached], 0.9, [1, 2])
    assert line.startswith("tuned study, phase 2: 2 runs") and "B=16 (best val_acc 0.486 at lr 0.05)" in line
    assert "B=64" not in line and "trainer.stop_at.val_acc" in line
    assert phase_two_summary({64: reached}, [reached], 0.9, [1]).endswith("seeds [1])")


def test_a_candidate_keeps_the_best_validation_accuracy_of_a_run_that_did_not_reach_the_target():
    from bsstudy.train.tuned import candidate_from_summary

    summary = {"batch_size": 16, "lr": 0.05, "status": "completed", "best": {"val_acc": 0.486},
               "target": {"reached": False, "val_acc_target": 0.99}}  # fmt: skip
    assert candidate_from_summary(summary).best_val_acc == 0.486 and not candidate_from_summary(summary).reached


def test_the_figures_of_a_study_where_nothing_reached_the_target_draw_without_a_legend_warning():
    import warnings

    from bsstudy.analysis.report.tuned import CriticalBatch, TunedStudy, lr_figure, steps_figure

    runs = constructed_runs(lambda b: [100.0], seeds=(0,))
    runs["reached"] = False
    table = per_batch_table(runs, seed=0)
    fit = CriticalBatch(math.nan, math.nan, math.nan, math.nan, (), 0, "none reached")
    study = TunedStudy(runs, table, fit, [], 0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found" would raise here
        assert steps_figure(study).png and lr_figure(study).png


def test_the_header_counts_the_seeds_of_the_selected_conditions_and_of_the_grids_other_lrs():
    from bsstudy.analysis.report.uncertainty import selected_seed_caveat

    text = selected_seed_caveat((3, 3), (1, 1), "(B, lr)")
    assert text.startswith("Means over 3 seeds per selected (B, lr)") and "the grid's other lrs: 1 seed each" in text
    assert "One seed per condition" not in text
    assert selected_seed_caveat((2, 3), None, "(B, lr)").startswith("Means over 2-3 seeds per selected (B, lr)")
    assert "no interval" in selected_seed_caveat((1, 1), (1, 1), "(B, lr)")
    assert selected_seed_caveat(None, (1, 1), "(B, lr)").startswith("Nothing selected")


def test_seed_counts_of_a_tuned_sweep_folder(tmp_path):
    from bsstudy.analysis.report.tuned import seed_counts

    for i, r in enumerate(constructed_runs(lambda b: [100.0, 110.0, 90.0]).itertuples()):
        target = {"reached": True, "optimizer_steps": int(r.steps), "val_acc": 0.86, "val_acc_target": 0.85}
        summary = {"batch_size": r.batch_size, "lr": r.lr, "momentum": 0.0, "seed": r.seed, "status": "completed",
                   "target": target}  # fmt: skip
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "summary.json").write_text(json.dumps(summary))
    assert seed_counts(tmp_path) == ((3, 3), (1, 1), "(B, lr)")


def test_also_varied_sorts_numbers_as_numbers():
    from bsstudy.analysis.report.runs import sorted_variants

    lrs = ["optim.lr=0.8", "optim.lr=1.6", "optim.lr=12.8", "optim.lr=3.2", "optim.lr=6.4", "optim.lr=0.8", ""]
    assert sorted_variants(lrs) == ["", "optim.lr=0.8", "optim.lr=1.6", "optim.lr=3.2", "optim.lr=6.4",
                                    "optim.lr=12.8"]  # fmt: skip
    two = ["a=10, b=x", "a=9, b=y", "a=9, b=10", "a=9, b=2"]
    assert sorted_variants(two) == ["a=9, b=2", "a=9, b=10", "a=9, b=y", "a=10, b=x"]


def test_cannot_tell_comes_with_the_overrides_that_would_decide_it():
    from bsstudy.analysis.report.tuned import Settings

    settings = Settings(batch_sizes=(16, 64), lr_factors=(1.0, 2.0), seeds=(0, 1), max_epochs=2, best_val_acc=0.486)
    one_seed = constructed_runs(lambda b: noisy_steps(b, 1, 0.02, 3), seeds=(0,))
    table = per_batch_table(one_seed, seed=0)
    fit = critical_batch(selected_runs(one_seed, table))
    assert largest_useful_batch(fit, table, settings).next_step == "hydra.sweeper.seeds=[0,1,2,3,4]"
    assert fastest_batch(table, settings)[0].next_step == "hydra.sweeper.seeds=[0,1,2,3,4]"
    edge = constructed_runs(lambda b: noisy_steps(b, 3, 0.02, 4), best=0.2)
    _, best = fastest_batch(per_batch_table(edge, seed=0), settings)
    assert lr_for(best, 2.0, settings).next_step == "hydra.sweeper.lr_factors=[1,2,4]"  # one more beyond the top
    two = critical_batch(selected_runs(one_seed[one_seed.batch_size <= 64], table[table.batch_size <= 64]))
    assert largest_useful_batch(two, table[table.batch_size <= 64], settings).next_step == (
        "hydra.sweeper.batch_sizes=[16,64,256]"
    )
    nothing = per_batch_table(one_seed.assign(reached=False), seed=0)
    assert fastest_batch(nothing, settings)[0].next_step == (
        "trainer.stop_at.val_acc=0.45 (in a new hydra.sweep.dir), or trainer.max_epochs=4"
    )
    told = largest_useful_batch(
        critical_batch(
            selected_runs(
                constructed_runs(lambda b: noisy_steps(b, 3, 0.02, 2)),
                per_batch_table(constructed_runs(lambda b: noisy_steps(b, 3, 0.02, 2)), 0),
            )
        )
    )
    assert told.told and told.next_step == ""


def test_a_small_studys_recommendation_is_a_short_line_per_point_each_with_its_next_step():
    from bsstudy.analysis.report.tuned import Settings, TunedStudy, recommendation_lines

    settings = Settings(batch_sizes=(16, 64), lr_factors=(1.0, 2.0), seeds=(0, 1, 2), max_epochs=2, target=0.3)
    runs = constructed_runs(lambda b: noisy_steps(b, 3, 0.3, 5), best=0.2).query("batch_size <= 64")
    table = per_batch_table(runs, seed=0)
    fit = critical_batch(selected_runs(runs, table))
    fastest, best = fastest_batch(table, settings)
    answers = [largest_useful_batch(fit, table, settings), fastest, lr_for(best, 2.0, settings)]
    lines = recommendation_lines(TunedStudy(runs, table, fit, answers, 0.3, "/sweeps/tuned", settings))
    points = [line for line in lines if line.startswith("- ")]
    assert len(points) == 3 and all(len(line) < 200 and "Next: hydra.sweeper." in line for line in points)
    assert "Rests on" not in " ".join(points)  # a cannot-tell line names its next step, not its data
    assert lines[-1].startswith(
        "Next steps are overrides of the study's own command with hydra.sweep.dir=/sweeps/tuned"
    )
    nothing = per_batch_table(runs.assign(reached=False), seed=0)
    unreached = Settings(max_epochs=2, best_val_acc=0.486)
    study = TunedStudy(runs, nothing, fit, [fastest_batch(nothing, unreached)[0]], 0.99, "/s", unreached)
    lines = recommendation_lines(study)
    assert (
        len(lines) == 3
        and "No batch size reached val accuracy 0.99 (the best val accuracy any run saw: 0.486)" in (lines[1])
    )


def test_the_report_headers_also_varied_list_sorts_lrs_as_numbers(tmp_path):
    import yaml
    from test_report import write_run

    from bsstudy.analysis.report.build import intro, read_runs

    for job, lr in enumerate([0.8, 1.6, 12.8, 3.2, 6.4]):
        write_run(tmp_path / str(job), 64, 0, [0.1, 0.5])
        config_path = tmp_path / str(job) / ".hydra" / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["optim"]["lr"] = lr
        config_path.write_text(yaml.safe_dump(config))
    header = intro(read_runs(tmp_path))[0]
    assert "Also varied: optim.lr=0.8; optim.lr=1.6; optim.lr=3.2; optim.lr=6.4; optim.lr=12.8." in header
