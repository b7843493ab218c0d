"""`python -m bsstudy.bench --json` is read by other tools: its rows must keep their format."""

import json

from bsstudy.bench import main

ROW_KEYS = {"what", "impl", "batch_size", "median_s", "min_s", "repeats"}


def test_bench_json_rows_cover_every_case_in_the_documented_format(capsys):
    main(["--quick", "--json", "--batch-sizes", "2", "64"])
    rows = json.loads(capsys.readouterr().out)
    assert all(set(row) == ROW_KEYS for row in rows)
    steps = {(r["impl"], r["batch_size"]) for r in rows if r["what"] == "step"}
    impls = {"raw", "fast", "bsstudy", "bsstudy_autograd", "bsstudy_update_norms", "tutorial"}
    assert steps == {(impl, b) for impl in impls for b in (2, 64)}
    assert {r["impl"] for r in rows if r["what"] == "eval"} == {"bsstudy", "bare"}
    assert all(0 < r["min_s"] <= r["median_s"] and r["repeats"] == 2 for r in rows)
