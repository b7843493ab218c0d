"""The reference sweep gives the numbers it gave before the codebase redesign (issue 14).

`tests/fixtures/reference/` holds the metrics.csv, summary numbers and probe files of a small reference
sweep (experiment=generalization on data=synthetic with 512 training samples, B = 2 and 64, 2 epochs, probes
update_norms and noise_scale) recorded at commit a8afa0b, before the redesign. A refactor that changes
what a run computes fails here. When a change is *meant* to change the numbers, regenerate the fixture and say
why in the commit:

    python tests/test_reference_unchanged.py --write

Tolerances: the fixture was written on an AMD EPYC CPU; another CPU (Intel Xeon in CI) may round a float
kernel differently, so losses and norms compare within a relative 1e-4 and accuracies within one sample.
A real change (data order, lr, a step skipped, a probe measuring elsewhere) moves them by far more.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "reference"
OVERRIDES = [
    "experiment=generalization",
    "data=synthetic",
    "data.n_train=512",
    "trainer.max_epochs=2",
    "probes=[update_norms,noise_scale]",
    "probes.noise_scale.small_batch=16",
    "probes.noise_scale.big_batch=256",
]
BATCH_SIZES = (2, 64)
SUMMARY_KEYS = ("status", "epochs_completed", "optimizer_steps", "samples_seen", "effective_lr", "n_train", "n_test")
RTOL = 1e-4


def run_reference(out: Path) -> dict[int, Path]:
    """Train the reference runs into out/B<batch size>/ and return their folders."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bsstudy.train.run import train

    from conftest import compose_run

    folders = {}
    for batch_size in BATCH_SIZES:
        folders[batch_size] = out / f"B{batch_size}"
        train(compose_run(folders[batch_size], [*OVERRIDES, f"data.batch_size={batch_size}"]))
    return folders


def measured_files(run_dir: Path) -> dict[str, str]:
    """The run's CSV files that hold what it measured: metrics.csv and every probe's CSV files."""
    files = {"metrics.csv": run_dir / "metrics.csv"}
    files |= {str(p.relative_to(run_dir)): p for p in sorted((run_dir / "probes").rglob("*.csv"))}
    return {name: path.read_text() for name, path in files.items()}


def summary_numbers(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {key: summary.get(key) for key in SUMMARY_KEYS} | {"probes": summary.get("probes")}


def write_fixture() -> None:
    import shutil
    import tempfile

    from bsstudy.resources import cpu_model

    with tempfile.TemporaryDirectory() as tmp:
        folders = run_reference(Path(tmp))
        shutil.rmtree(FIXTURE, ignore_errors=True)
        for batch_size, run_dir in folders.items():
            dest = FIXTURE / f"B{batch_size}"
            for name, text in measured_files(run_dir).items():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).write_text(text)
            (dest / "summary_numbers.json").write_text(json.dumps(summary_numbers(run_dir), indent=2) + "\n")
    (FIXTURE / "README.md").write_text(
        "Written by `python tests/test_reference_unchanged.py --write` (see that file), on "
        f"{cpu_model()}. Compared by tests/test_reference_unchanged.py.\n"
    )


def rows_of(csv_text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(csv_text)))


def same_number(column: str, expected: str, got: str, n_samples: int) -> bool:
    if expected == got:
        return True
    if expected == "" or got == "":
        return False
    a, b = float(expected), float(got)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if column.endswith("_acc") or column == "gap":
        return abs(a - b) <= 1.5 / n_samples  # one sample's worth of accuracy (two for the gap's two terms)
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-7)


def differences(name: str, expected: str, got: str, n_samples: int) -> list[str]:
    """Where two CSV texts differ beyond the tolerances; columns that time the machine are not compared."""
    want, have = rows_of(expected), rows_of(got)
    if len(want) != len(have):
        return [f"{name}: {len(have)} rows, expected {len(want)}"]
    found = []
    for i, (row_w, row_h) in enumerate(zip(want, have, strict=True)):
        timed = {c for c in row_w if c.endswith(("_time_s", "_seconds")) or c in ("wall_time_s", "time_s")}
        if set(row_w) - timed != set(row_h) - timed:
            found.append(f"{name} row {i}: columns {sorted(set(row_h) - timed)}, expected {sorted(set(row_w) - timed)}")
            continue
        for column in set(row_w) - timed:
            if not same_number(column, row_w[column], row_h[column], n_samples):
                found.append(f"{name} row {i} {column}: {row_h[column]}, expected {row_w[column]}")
    return found


def close(expected, got) -> bool:
    if isinstance(expected, dict) and isinstance(got, dict):
        return expected.keys() == got.keys() and all(close(expected[k], got[k]) for k in expected)
    if isinstance(expected, float) and isinstance(got, (int, float)):
        return math.isclose(expected, got, rel_tol=RTOL, abs_tol=1e-7) or (expected != expected and got != got)
    return expected == got


@pytest.mark.slow
def test_the_reference_sweep_gives_the_numbers_it_gave_before_the_redesign(tmp_path):
    folders = run_reference(tmp_path)
    found = []
    for batch_size, run_dir in folders.items():
        recorded = FIXTURE / f"B{batch_size}"
        got = measured_files(run_dir)
        wanted = {str(p.relative_to(recorded)): p.read_text() for p in sorted(recorded.rglob("*.csv"))}
        assert sorted(got) == sorted(wanted), f"B={batch_size}: files {sorted(got)}, expected {sorted(wanted)}"
        n_test = summary_numbers(run_dir)["n_test"]
        for name in wanted:
            found += [f"B={batch_size} {d}" for d in differences(name, wanted[name], got[name], n_test)]
        expected_summary = json.loads((recorded / "summary_numbers.json").read_text())
        if not close(expected_summary, summary_numbers(run_dir)):
            found.append(f"B={batch_size} summary: {summary_numbers(run_dir)}, expected {expected_summary}")
    assert not found, "\n".join(found[:20])


def test_the_comparison_finds_a_changed_number():
    text = "epoch,train_loss,test_acc,epoch_time_s\n0,2.30,0.10,1.0\n"
    assert differences("m", text, text.replace("0,2.30", "0,2.31"), 512)
    assert differences("m", text, text.replace("0.10,", "0.12,"), 512)
    assert not differences("m", text, text.replace("2.30", "2.3000001").replace("1.0", "9.0"), 512)
    assert differences("m", text, text.replace("test_acc", "test_accuracy"), 512)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_reference_unchanged.py --write   (regenerates tests/fixtures/reference/)")
    write_fixture()
