"""The end of `make bench` (`python -m bsstudy.tools.bench_sweep`): a small reference sweep run in parallel
(n jobs x cores/n threads) against sequentially (1 job x all cores), wall time of the whole command, on this machine.

Both variants run the real CLI (`python -m bsstudy -m ...`, the parallel one with
`hydra/launcher=parallel`), interleaved over repeats so that a machine whose speed wanders hits both
alike; the table gives the median and fastest wall time of each and the ratio parallel / sequential
(below 1: the parallel launcher saves time). It also reports how far apart the two variants' per-run
metrics are (wall-clock columns aside): identical with equal thread counts; with different ones torch
sums in another order, and at small B the last-bit differences grow along the trajectory (3% in one
metric after 2 epochs at B=2 here). The default sweep is the reference study's batch sizes on a
6,000-sample subset of Fashion-MNIST for 2 epochs (784-feature synthetic data where Fashion-MNIST is
absent); `--sweep` replaces it. `--json` prints the rows: {"impl", "jobs", "threads", "median_s",
"min_s", "repeats", "metrics_max_rel_diff"}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from bsstudy import CONF_DIR
from bsstudy.runfolder import RunFolder, run_folders
from bsstudy.train.parallel import available_cores, threads_per_job

CONF = CONF_DIR
COMMON = ["trainer.progress_bar=false", "checkpoint.save_last=false"]
REFERENCE = ["data.batch_size=2,64,256,1024", "data.train_size=6000", "trainer.max_epochs=2"]
QUICK = ["data=synthetic", "data.batch_size=16,64", "model.hidden_sizes=[32]", "trainer.max_epochs=1"]


def default_data() -> list[str]:
    """Fashion-MNIST where its files are (data.root / $BSSTUDY_DATA), else synthetic data of the same shape."""
    root = Path(OmegaConf.load(CONF / "config.yaml").data.root)  # resolves ${oc.env:BSSTUDY_DATA,./data}
    if (root / "FashionMNIST" / "raw").is_dir():
        return ["data=fashion_mnist", "data.download=false"]
    return ["data=synthetic", "data.input_size=784", "data.n_train=6000", "data.n_test=1000"]


def sweep_command(sweep: list[str], sweep_dir: Path, jobs: int, threads: int) -> list[str]:
    """The CLI of one variant: the sequential sweep with `threads` threads, or `jobs` parallel jobs."""
    launcher = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    return [sys.executable, "-m", "bsstudy", "-m", *launcher, *sweep, *COMMON, f"trainer.threads={threads}",
            f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip


def run_sweep(command: list[str], cwd: Path) -> float:
    """Wall time of the whole command, start-up and every job included."""
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdin=subprocess.DEVNULL, capture_output=True,
                   env={**os.environ, "HYDRA_FULL_ERROR": "1"})  # fmt: skip
    return time.perf_counter() - start


def run_metrics(sweep_dir: Path) -> list[list[dict]]:
    """Every run's metrics.csv without the wall-clock columns, in job order."""
    return [
        [{k: v for k, v in row.items() if not k.endswith("_time_s")} for row in RunFolder(d).metrics()]
        for d in run_folders(sweep_dir)
    ]


def max_relative_difference(runs_a: list[list[dict]], runs_b: list[list[dict]]) -> float:
    """max |a - b| / max(|a|, |b|) over every number of every row of every run (0: identical; inf: the runs'
    rows or columns differ)."""
    if [[sorted(r) for r in run] for run in runs_a] != [[sorted(r) for r in run] for run in runs_b]:
        return float("inf")
    worst = 0.0
    for run_a, run_b in zip(runs_a, runs_b, strict=True):
        for row_a, row_b in zip(run_a, run_b, strict=True):
            for key, a in row_a.items():
                b = row_b[key]
                if (a is None) != (b is None):
                    return float("inf")
                if a != b:
                    worst = max(worst, abs(a - b) / max(abs(a), abs(b)))
    return worst


def measure(sweep: list[str], jobs: int, repeats: int, tmp: Path) -> list[dict]:
    """Interleaved repeats of the sequential (1 job x all cores) and parallel (jobs x cores/jobs) sweep."""
    cores = available_cores()
    variants = {"sequential": (1, cores), "parallel": (jobs, threads_per_job(cores, jobs))}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, (n_jobs, threads) in variants.items():
            sweep_dir = tmp / f"{name}_{repeat}"
            seconds[name].append(run_sweep(sweep_command(sweep, sweep_dir, n_jobs, threads), tmp))
    difference = max_relative_difference(run_metrics(tmp / "sequential_0"), run_metrics(tmp / "parallel_0"))
    return [
        {
            "impl": name,
            "jobs": n_jobs,
            "threads": threads,
            "median_s": statistics.median(seconds[name]),
            "min_s": min(seconds[name]),
            "repeats": repeats,
            "metrics_max_rel_diff": difference,
        }  # fmt: skip
        for name, (n_jobs, threads) in variants.items()
    ]


def print_table(rows: list[dict], sweep: list[str]) -> None:
    by_impl = {r["impl"]: r for r in rows}
    print(f"bsstudy sweep bench | {available_cores()} cores | sweep: {' '.join(sweep)} | {rows[0]['repeats']} repeats")
    print(f"{'variant':>12} {'jobs':>5} {'threads':>8} {'median s':>10} {'fastest s':>10}")
    for r in rows:
        print(f"{r['impl']:>12} {r['jobs']:>5} {r['threads']:>8} {r['median_s']:>10.1f} {r['min_s']:>10.1f}")
    seq, par = by_impl["sequential"], by_impl["parallel"]
    print(f"parallel / sequential wall time: {par['median_s'] / seq['median_s']:.2f} (medians) | "
          f"{par['min_s'] / seq['min_s']:.2f} (fastest); per-run metrics differ by at most "
          f"{rows[0]['metrics_max_rel_diff']:.1e} (relative)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs (threads per job: cores // jobs)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of both variants")
    parser.add_argument("--sweep", nargs="+", help="overrides of the swept command (default: the reference sweep)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    parser.add_argument("--quick", action="store_true", help="a tiny synthetic sweep, once: checks it runs")
    args = parser.parse_args(argv)
    sweep = QUICK if args.quick else args.sweep or [*default_data(), *REFERENCE]
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(sweep, args.jobs, 1 if args.quick else args.repeats, Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows, sweep)


if __name__ == "__main__":
    main()
