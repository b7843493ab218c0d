"""`make gpu-check` (bsstudy/tools/gpu_check.py): without a GPU it says so; `--cpu` runs every check as a dry run."""

import pytest
import torch

from bsstudy.tools.gpu_check import NO_GPU, main, reference_study_seconds


def test_gpu_check_without_a_gpu_exits_1_with_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == NO_GPU and "\n" not in NO_GPU  # SystemExit(str) prints it and exits 1
    assert "--cpu" in NO_GPU


def test_reference_study_estimate_sums_steps_times_step_time_over_b_epochs_and_seeds():
    times = {b: {"fast_s": 1e-3, "autograd_s": 2e-3} for b in (2, 64, 256, 1024)}
    steps = 30_000 + 938 + 235 + 59  # ceil(60,000 / B)
    assert reference_study_seconds(times) == pytest.approx(3 * 30 * steps * 1e-3)
    assert reference_study_seconds({2: times[2]}) is None


@pytest.mark.slow  # a whole dry run of every check (about a minute alone on 2 cores)
def test_gpu_check_cpu_dry_run_passes_every_check_and_prints_one_table(capsys):
    # tiny settings: 2 steps per timing, one repeat; the speed run and the 2-job sweep start the real CLI
    args = ["--cpu", "--steps-scale", "0.01", "--repeats", "1", "--batch-sizes", "2", "64", "256", "1024"]
    assert main([*args, "--gradsum-trials", "2", "--gradsum-samples", "64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bsstudy gpu-check | ") and "CPU dry run" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    # header, 3 rows per B, gradsum at B = 1, 64, speed, parallel, packed, cuda_graph run, DDP, estimate
    assert len(table) == 1 + 3 * 4 + 2 + 6
    assert sum("eager fast step vs autograd step" in line for line in table) == 4
    graphs = [line for line in table if "CUDA-graph captured step vs eager" in line]  # uncaptured on the CPU
    assert len(graphs) == 4 and all("x; ok: " in line for line in graphs)
    graph_run = next(line for line in table if "trainer.cuda_graph=true" in line)
    assert "| ok: completed, graph replays: 0" in graph_run
    assert sum("16 packed runs vs one at a time" in line for line in table) == 4
    assert sum("trials/s: batched vs one at a time" in line for line in table) == 2
    speed = next(line for line in table if "speed probe" in line)
    assert "| ok: " in speed and "(rss, expected rss)" in speed
    parallel = next(line for line in table if "parallel launcher" in line)
    assert "| ok: " in parallel and parallel.count("2 jobs at a time") == 2
    assert " min (3 seeds x 30 epochs" in out
    packed = next(line for line in table if "packed launcher" in line)
    assert "| ok: " in packed and packed.count("completed on cpu") == 4
