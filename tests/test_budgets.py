"""Batch sizes compared at equal epochs, equal optimizer steps and equal training time (analysis/report/budgets.py)
on hand-made sweeps whose answer is known: an ordering that flips between equal epochs and equal training
time, and batch sizes that share no evaluated step budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bsstudy.analysis.report.at_budget import TIME_SPREAD, budget_table, comparisons, read_at
from bsstudy.analysis.report.budgets import budgets_section
from bsstudy.analysis.report.findings import (
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_MEASURED,
    NOT_SUPPORTED,
    SUPPORTED,
    findings_table,
    kind_of,
)
from bsstudy.analysis.report.runs import read_sweep

AT_EPOCHS = "Larger batches reach lower test accuracy at fixed epochs and lr"
AT_STEPS = "Larger batches reach lower test accuracy at equal optimizer steps and fixed lr"
AT_TIME = "Larger batches reach lower test accuracy at equal training time and fixed lr"


def write_run(path: Path, batch_size: int, seed: int, accuracies: list[float], steps_per_epoch: int,
              seconds_per_epoch: float | None, **summary_extra) -> None:  # fmt: skip
    """A completed run whose epoch e (0 = untrained) has test accuracy accuracies[e], e * steps_per_epoch
    optimizer steps and e * seconds_per_epoch seconds of training (no train_time_s column when None)."""
    (path / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "data": {"batch_size": batch_size, "name": "synthetic"},
              "optim": {"lr": 0.01, "lr_scaling": "none", "accumulate": 1, "name": "sgd"}}  # fmt: skip
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    rows = []
    for epoch, acc in enumerate(accuracies):
        row = {"epoch": epoch, "optimizer_steps": epoch * steps_per_epoch, "test_acc": acc, "train_loss": 1 - acc}
        if seconds_per_epoch is not None:
            row["train_time_s"] = epoch * seconds_per_epoch
        rows.append(row)
    pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    summary = {"status": "completed", "batch_size": batch_size, "seed": seed, "lr_scaling": "none",
               "accumulate": 1, "final": rows[-1], "epochs_completed": len(rows) - 1,
               "optimizer_steps": rows[-1]["optimizer_steps"], **summary_extra}  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))


def make_sweep(path: Path, runs: dict[int, tuple[list[float], int, float | None]], seeds: int = 3,
               slower: float = 1.0, **summary_extra) -> Path:  # fmt: skip
    """runs[B] = (test accuracy per epoch, steps per epoch, seconds per epoch); seed s adds 0.002 s to every
    accuracy, so seeds differ without changing any ordering, and its epochs take slower**s times as long."""
    job = 0
    for batch_size, (accuracies, steps, seconds) in runs.items():
        for seed in range(seeds):
            per_epoch = None if seconds is None else seconds * slower**seed
            accs = [a + 0.002 * seed for a in accuracies]
            write_run(path / str(job), batch_size, seed, accs, steps, per_epoch, **summary_extra)
            job += 1
    return path


# B=32 learns more per epoch, B=512 runs an epoch in half the time: the ordering flips with the budget.
FLIP = {
    32: ([0.1, 0.5, 0.7, 0.8, 0.85], 100, 2.0),
    512: ([0.1, 0.6, 0.7, 0.73, 0.75], 7, 1.0),
}


def findings(path: Path) -> dict[str, dict]:
    return {row["claim"]: row for row in findings_table(read_sweep(path)).frame.to_dict("records")}


def test_the_ordering_flips_between_equal_epochs_and_equal_training_time(tmp_path):
    rows = findings(make_sweep(tmp_path, FLIP))
    assert rows[AT_EPOCHS]["verdict"] == SUPPORTED and rows[AT_EPOCHS]["budget"] == "4 epochs"
    # at 4 s of training: B=32 read after 2 epochs (0.7), B=512 after 4 (0.75): larger is better
    assert kind_of(rows[AT_TIME]["verdict"]) == NOT_SUPPORTED and rows[AT_TIME]["budget"] == "4 s of training"
    section = budgets_section(read_sweep(tmp_path))
    text = " ".join(section.text)
    assert "depends on the budget: B=32 at equal epochs (4 epochs), B=512 at equal training time" in text


def test_batch_sizes_without_a_common_step_budget_are_not_comparable_not_read_untrained(tmp_path):
    rows = findings(make_sweep(tmp_path, FLIP))
    # B=512 reaches 28 steps; B=32's evaluations bracketing it are 0 (untrained) and 100: no interpolation from 0
    assert kind_of(rows[AT_STEPS]["verdict"]) == NOT_COMPARABLE and rows[AT_STEPS]["budget"] == "28 steps"
    evidence = rows[AT_STEPS]["evidence"]
    assert "0 (untrained) and 100 (once per epoch): no interpolation from the untrained point" in evidence
    text = " ".join(budgets_section(read_sweep(tmp_path)).text)
    assert "Not comparable at equal steps (28 steps): B=32" in text


def test_a_batch_size_off_the_budget_is_left_out_and_the_rest_compared_then_a_larger_budget(tmp_path):
    sweep = make_sweep(
        tmp_path,
        {
            2: ([0.1, 0.9, 0.92], 1000, None),  # evaluated at 0, 1000, 2000 steps
            64: ([0.1, 0.6, 0.7, 0.75, 0.78, 0.8], 40, None),  # 0, 40, ..., 200
            128: ([0.1, 0.5, 0.6, 0.65, 0.68, 0.7], 20, None),  # 0, 20, ..., 100: sets the budget
        },
    )
    table = budget_table(comparisons(read_sweep(sweep)))
    steps = table[table.budget == "equal steps"]
    first = steps[steps.budget_value == 100].set_index("batch_size")
    assert first.loc[128, "comparable"] == "yes" and first.loc[128, "read_steps"] == 100
    # B=64 read at exactly 100 steps, between its evaluations at 80 (0.7) and 120 (0.75), linearly in log steps
    assert first.loc[64, "comparable"] == "yes" and first.loc[64, "read_steps"] == 100
    between = 0.7 + 0.05 * math.log(100 / 80) / math.log(120 / 80)
    assert first.loc[64, "test_acc_mean"] == pytest.approx(between + 0.002)  # mean over seeds 0, 1, 2
    assert first.loc[64, "read_epoch"] == pytest.approx(2.5)
    assert first.loc[2, "comparable"].startswith("no: ") and "(untrained)" in first.loc[2, "comparable"]
    # without B=128 the budget is B=64's 200 steps; B=2 is still off it (0 and 1000), so B=64 stands alone
    second = steps[steps.budget_value == 200].set_index("batch_size")
    assert second.loc[64, "comparable"].startswith("alone") and second.loc[2, "comparable"].startswith("no: ")
    assert set(table.budget) == {"equal epochs", "equal steps"}  # no train_time_s column: no time budget
    rows = findings(sweep)
    assert kind_of(rows[AT_TIME]["verdict"]) == NOT_MEASURED
    assert "B=2 not comparable at 100 steps" in rows[AT_STEPS]["evidence"]
    assert "test accuracy at 100 steps, mean over seeds: B=64: 0.73, B=128: 0.702" in rows[AT_STEPS]["evidence"]


@pytest.mark.parametrize(
    ("clock", "budget", "expected"),
    [
        ("train_time_s", 100.0, 0.6),  # an evaluation at the budget: read as it is
        ("train_time_s", 110.0, 0.6 + 0.2 * 10 / 50),  # between 100 s (0.6) and 150 s (0.8), linearly in time
        ("optimizer_steps", 110.0, 0.6 + 0.2 * math.log(1.1) / math.log(1.5)),  # linearly in log steps
        ("train_time_s", 300.0, None),  # nothing at or after the budget: no bracket
        ("train_time_s", 25.0, None),  # between the untrained evaluation and the first: not read
        ("optimizer_steps", 25.0, None),
    ],
)
def test_read_at_interpolates_between_the_two_evaluations_that_bracket_the_budget(clock, budget, expected):
    run = pd.DataFrame({"epoch": [0, 1, 2, 3], "train_time_s": [0.0, 50.0, 100.0, 150.0],
                        "optimizer_steps": [0, 50, 100, 150], "test_acc": [0.1, 0.4, 0.6, 0.8]})  # fmt: skip
    read = read_at(run, clock, budget)
    if expected is None:
        assert read is None
    else:
        assert read.test_acc == pytest.approx(expected) and read[clock] == budget


def test_the_reference_study_nests_its_step_budgets_down_to_b2_against_b64(tmp_path):
    """Fashion-MNIST without a validation split, 30 epochs: ceil(60000 / B) steps per epoch."""
    accuracies = [0.1 + 0.02 * e for e in range(31)]
    runs = {b: (accuracies, -(-60000 // b), None) for b in (2, 64, 256, 1024)}
    found = [c for c in comparisons(read_sweep(make_sweep(tmp_path, runs, seeds=1))) if c.budget == "equal steps"]
    assert [(c.value, c.batch_sizes, sorted(c.excluded)) for c in found] == [
        (1770, [64, 256, 1024], [2]),  # B=64 read between epochs 1 and 2 (938, 1,876 steps), B=256 between 7 and 8
        (7050, [64, 256], [2]),
        (28140, [64], [2]),  # B=2's evaluations are at 0 (untrained) and 30,000: never read at a shared budget
    ]
    assert found[0].readings.set_index("batch_size").optimizer_steps.to_dict() == {64: 1770, 256: 1770, 1024: 1770}


def test_equal_time_on_a_shared_machine_is_not_comparable_timings_noisy(tmp_path):
    launcher = {"name": "JoblibLauncher", "jobs_at_a_time": 2, "threads": 1}
    rows = findings(make_sweep(tmp_path, FLIP, launcher=launcher))
    assert rows[AT_TIME]["verdict"] == (
        f"{NOT_COMPARABLE}: timings noisy: runs trained 2 at a time on one machine (summary.json "
        "launcher.jobs_at_a_time)"
    )
    assert rows[AT_TIME]["evidence"].startswith(f"read as they are: {NOT_SUPPORTED}")
    assert kind_of(rows[AT_EPOCHS]["verdict"]) == SUPPORTED  # epochs and steps do not depend on the clock
    assert "timings noisy" in " ".join(budgets_section(read_sweep(tmp_path)).text)


def test_equal_time_with_seconds_per_step_spread_across_seeds_is_not_comparable(tmp_path):
    # seed s's epochs take 1.2**s as long: seeds 0 and 2 differ by 1.44 > TIME_SPREAD
    rows = findings(make_sweep(tmp_path, FLIP, slower=1.2))
    assert rows[AT_TIME]["verdict"].startswith(f"{NOT_COMPARABLE}: timings noisy: seconds per step differ")
    assert f"TIME_SPREAD = {TIME_SPREAD}" in rows[AT_TIME]["verdict"] and "x1.44" in rows[AT_TIME]["verdict"]
    assert kind_of(rows[AT_TIME]["verdict"]) != INCONCLUSIVE
