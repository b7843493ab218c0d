"""`python -m bsstudy.tools.bench --json` is read by other tools: its rows must keep their format."""

import json

import pytest

from bsstudy.tools.bench import main

ROW_KEYS = {"what", "impl", "batch_size", "median_s", "min_s", "repeats"}


@pytest.mark.slow  # runs the quick benchmark: about 35 s on 2 busy cores
def test_bench_json_rows_cover_every_case_in_the_documented_format(capsys):
    main(["--quick", "--json", "--device", "cpu", "--batch-sizes", "2", "64"])
    rows = json.loads(capsys.readouterr().out)
    assert all(set(row) == ROW_KEYS for row in rows)
    steps = {(r["impl"], r["batch_size"]) for r in rows if r["what"] == "step"}
    impls = {"raw", "fast", "bsstudy", "bsstudy_autograd", "bsstudy_update_norms", "tutorial", "packed"}
    assert steps == {(impl, b) for impl in impls for b in (2, 64)}
    assert {r["impl"] for r in rows if r["what"] == "eval"} == {"bsstudy", "bare"}
    assert all(0 < r["min_s"] <= r["median_s"] and r["repeats"] == 2 for r in rows)


def test_bench_table_prints_times_and_both_kinds_of_ratio(capsys):
    import torch

    from bsstudy.tools.bench import print_table
    from bsstudy.train.data import TensorData

    rows = [{"what": "step", "impl": impl, "batch_size": 2, "median_s": s, "min_s": s / 2, "repeats": 3}
            for impl, s in (("raw", 4e-3), ("bsstudy", 1e-3))]  # fmt: skip
    rows += [{"what": "eval", "impl": impl, "batch_size": None, "median_s": s, "min_s": s, "repeats": 3}
             for impl, s in (("bsstudy", 2.2), ("bare", 2.0))]  # fmt: skip
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    print_table(rows, TensorData("t", x, y, x, y))
    out = capsys.readouterr().out
    assert "4000.0" in out and "1000.0" in out  # microseconds per step
    assert "0.25 | 0.25" in out  # bsstudy/raw of medians | of fastest repeats
    assert "ratio 1.10 | 1.10" in out


def test_bench_device_cuda_without_a_gpu_is_a_one_line_error_naming_the_flag(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cuda"])
    message = str(exit_.value.code)
    assert "--device cuda" in message and "\n" not in message


def test_bench_device_auto_is_the_cpu_without_a_gpu_and_unknown_names_are_errors(monkeypatch):
    import torch

    from bsstudy.tools.bench import bench_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_device("auto") == bench_device("cpu") == torch.device("cpu")
    with pytest.raises(SystemExit, match=r"--device must be one of \['auto', 'cpu', 'cuda'\]; got 'tpu'"):
        bench_device("tpu")


def test_measure_gives_seconds_per_unit_on_the_cpu_path():
    import time

    import torch

    from bsstudy.tools.bench import Case, measure

    rows = measure([Case("step", "sleep", 2, 4, lambda: time.sleep(0.004)),
                    Case("step", "timed", 2, 2, lambda: 0.01)], repeats=2, device=torch.device("cpu"))  # fmt: skip
    assert rows[0]["min_s"] >= 0.001  # 4 ms over 4 units
    assert rows[1]["median_s"] == rows[1]["min_s"] == 0.005  # a case's own seconds win over the clock
