"""The speed probe and the speed study's table: every number checked against the chunk file or hand-made runs."""

import csv
import json
import math

import numpy as np
import pytest

from bsstudy import ConfigError
from bsstudy.analysis.speed_table import format_speed_table, power_of_two_answer, power_of_two_comparisons, speed_rows
from bsstudy.resources import PROC_STATUS
from bsstudy.runfolder import read_metrics
from bsstudy.train.run import train

from conftest import compose_run, run_cli

TINY = ["data=synthetic", "model.hidden_sizes=[32]", "trainer.threads=1", "trainer.chunk_samples=256"]


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_time_s")} for r in rows]


def vm_hwm_bytes() -> int:
    line = next(x for x in PROC_STATUS.read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_speed_probe_does_not_change_the_training(tmp_path):
    overrides = [*TINY, "trainer.max_epochs=2", "data.batch_size=32"]
    train(compose_run(tmp_path / "plain", overrides))
    train(compose_run(tmp_path / "probed", [*overrides, "probes=[speed]"]))
    plain, probed = (read_metrics(tmp_path / name / "metrics.csv") for name in ("plain", "probed"))
    assert without_times(plain) == without_times(probed)


def test_speed_summary_is_the_quartiles_of_the_timed_chunks(tmp_path):
    spike = np.ones(2**26)  # 512 MiB touched before training: the run's peak must not include it
    hwm_before = vm_hwm_bytes()
    del spike
    summary = train(compose_run(tmp_path, [*TINY, "trainer.max_epochs=2", "data.batch_size=48", "probes=[speed]"]))
    speed = summary["probes"]["speed"]
    with (tmp_path / "probes" / "speed" / "chunks.csv").open() as f:
        chunks = list(csv.DictReader(f))
    # 2048 samples, B = 48: 43 steps per epoch, floor(256 / 48) = 5 steps per chunk -> 9 chunks per epoch
    assert [int(c["steps"]) for c in chunks] == ([5] * 8 + [3]) * 2
    assert sum(int(c["samples"]) for c in chunks) == 2 * 2048
    assert [c["warmup"] for c in chunks] == ["True"] * 2 + ["False"] * 16
    timed = chunks[2:]
    step_times = [float(c["seconds"]) / int(c["steps"]) for c in timed]
    rates = [int(c["samples"]) / float(c["seconds"]) for c in timed]
    assert speed["timed_chunks"] == 16
    q25, q50, q75 = np.percentile(step_times, [25, 50, 75])
    assert (speed["step_time_q25_s"], speed["step_time_median_s"], speed["step_time_q75_s"]) == pytest.approx(
        (q25, q50, q75), rel=1e-9
    )
    assert speed["samples_per_s_median"] == pytest.approx(float(np.median(rates)), rel=1e-9)
    assert speed["epoch_time_from_steps_s"] == pytest.approx(43 * q50, rel=1e-9)
    # every chunk lies inside its epoch: the epoch takes at least the sum of its chunks
    for epoch, measured in zip((1, 2), speed["epoch_times_s"], strict=True):
        assert measured >= sum(float(c["seconds"]) for c in chunks if c["epoch"] == str(epoch))
    assert speed["memory_kind"] == "rss" and speed["memory_peak_since"] == "train_start"
    assert 0 < speed["peak_memory_bytes"] < hwm_before - 256 * 2**20
    increase = speed["peak_memory_bytes"] - speed["memory_at_train_start_bytes"]
    assert speed["peak_memory_increase_bytes"] == increase and 0 <= increase < speed["peak_memory_bytes"]


def test_negative_warmup_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="probes.speed.warmup_chunks"):
        train(compose_run(tmp_path, [*TINY, "probes=[speed]", "probes.speed.warmup_chunks=-1"]))


def write_run(run_dir, batch_size: int, step_times_ms: list[float], memory: int) -> None:
    """A hand-made run folder of the speed probe: one timed chunk of 10 steps per step time."""
    (run_dir / "probes" / "speed").mkdir(parents=True)
    speed = {"steps_per_epoch": 100, "epoch_time_s": 1.0, "peak_memory_bytes": memory, "memory_kind": "rss",
             "device": "test-cpu"}  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps({"batch_size": batch_size, "probes": {"speed": speed}}))
    with (run_dir / "probes" / "speed" / "chunks.csv").open("w") as f:
        f.write("epoch,chunk,steps,samples,seconds,step_time_s,samples_per_s,warmup\n")
        f.write(f"1,0,10,{10 * batch_size},1.0,0.1,{batch_size * 10},True\n")  # warm-up: must be ignored
        for i, ms in enumerate(step_times_ms, start=1):
            f.write(f"1,{i},10,{10 * batch_size},{ms / 100},{ms / 1e3},{batch_size * 1e3 / ms},False\n")


def test_speed_table_pools_runs_and_judges_powers_of_two_against_neighbours(tmp_path):
    write_run(tmp_path / "0", 15, [1.0, 1.1, 1.2], 100)
    write_run(tmp_path / "1", 16, [0.5, 0.6, 0.7], 100)  # faster per step than 15, more samples/s than 17
    write_run(tmp_path / "2", 17, [2.0, 2.1, 2.2], 100)
    write_run(tmp_path / "3", 32, [1.0, 1.5, 2.0], 300)
    write_run(tmp_path / "4", 33, [1.4, 1.5, 1.6], 200)  # ranges overlap with 32's
    write_run(tmp_path / "5", 33, [1.45, 1.55], 400)  # a second run of B = 33 (another seed): pooled
    write_run(tmp_path / "6", 100, [3.0, 3.0, 3.0], 100)  # no power of two within 5%: not compared
    rows = speed_rows(tmp_path)
    assert [r["batch_size"] for r in rows] == [15, 16, 17, 32, 33, 100]
    b33 = rows[4]
    assert b33["runs"] == 2 and b33["timed_chunks"] == 5
    pooled_ms = [1.4, 1.5, 1.6, 1.45, 1.55]
    assert b33["step_time_median_s"] == pytest.approx(np.median(pooled_ms) / 1e3)
    assert b33["step_time_q25_s"] == pytest.approx(np.percentile(pooled_ms, 25) / 1e3)
    assert b33["samples_per_s_q75"] == pytest.approx(np.percentile([33e3 / ms for ms in pooled_ms], 75))
    assert (b33["peak_memory_bytes"], b33["peak_memory_min_bytes"]) == (400, 200)
    assert b33["epoch_time_from_steps_s"] == pytest.approx(100 * np.median(pooled_ms) / 1e3)
    verdicts = {(c["power"], c["neighbour"]): c["verdict"] for c in power_of_two_comparisons(rows)}
    assert verdicts == {(16, 15): "faster", (16, 17): "faster", (32, 33): "no clear difference"}
    ratio = {(c["power"], c["neighbour"]): c["throughput_ratio"] for c in power_of_two_comparisons(rows)}
    assert ratio[(16, 17)] == pytest.approx((16e3 / 0.6) / (17e3 / 2.1))
    answer = power_of_two_answer(rows)
    assert answer.startswith("Power of two faster on test-cpu? Yes, mostly: faster in 2, slower in 0")
    table = format_speed_table(rows)
    assert "   16* " in table and "   15  " in table and "0.600 [0.550, 0.650]" in table


def test_a_slower_power_of_two_is_reported_as_such(tmp_path):
    write_run(tmp_path / "0", 500, [10.0, 10.1, 10.2], 1)
    write_run(tmp_path / "1", 512, [20.0, 20.1, 20.2], 1)  # fewer samples/s than the smaller 500
    rows = speed_rows(tmp_path)
    assert [c["verdict"] for c in power_of_two_comparisons(rows)] == ["slower"]
    assert "No; some powers of two were slower" in power_of_two_answer(rows)


def test_experiment_speed_prints_the_table_at_the_end_of_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "experiment=speed", *TINY, "data.batch_size=16,17", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert "speed per batch size on" in proc.stdout and "Power of two faster on" in proc.stdout
    with (sweep / "speed.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["batch_size"]) for r in rows] == [16, 17]
    # 2048 samples: floor(256 / B) = 16 (or 15) steps per chunk -> 8 (or 9) chunks, 2 of them warm-up
    assert [int(r["timed_chunks"]) for r in rows] == [math.ceil(128 / 16) - 2, math.ceil(121 / 15) - 2]
