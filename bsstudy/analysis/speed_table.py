"""The speed study's table: per batch size, step time, throughput, epoch time and peak memory with their
spreads, and a one-line answer to "is a power-of-two batch size faster?", computed from those numbers.

`speed_rows(sweep_dir)` reads the runs of a sweep that used the speed probe (their summary.json and
probes/speed/chunks.csv; runs with the same B, e.g. several seeds, are pooled chunk by chunk);
`format_speed_table(rows)` and `power_of_two_answer(rows)` print them. `experiment=speed` calls
them at the end of the sweep through the Hydra callback `SpeedTableCallback`, which also writes
`<sweep>/speed.csv` and `<sweep>/speed_table.txt`. For a finished sweep:
`python -m bsstudy.analysis.speed_table multirun/<date>/<time>`.

How the power-of-two answer is judged: every power of two P is compared with each batch size
within P/16 of it (`NEIGHBOUR_TOLERANCE`) that is not a power of two (15 and 17 for 16, 500 for
512, 1000 for 1024). A larger neighbour should process at least as many samples per second, and a
smaller one should take no longer per step. So P counts as faster than a larger neighbour if its
samples/s interquartile range lies wholly above the neighbour's, and slower if its step-time range
lies wholly above (the larger batch takes less time per step); faster than a smaller neighbour if
its step-time range lies wholly below, slower if its samples/s range lies wholly below; and "no
clear difference" otherwise.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
from hydra.experimental.callback import Callback

from bsstudy.runfolder import RunFolder, runs_of, write_table

log = logging.getLogger(__name__)

NEIGHBOUR_TOLERANCE = 1 / 16  # a neighbour of P is a non-power-of-two B with |B - P| <= P / 16 (15, 17 for 16)
ROW_KEYS = [
    "batch_size", "runs", "timed_chunks", "step_time_median_s", "step_time_q25_s", "step_time_q75_s",
    "samples_per_s_median", "samples_per_s_q25", "samples_per_s_q75", "epoch_time_s", "epoch_time_from_steps_s",
    "epoch_time_from_steps_q25_s", "epoch_time_from_steps_q75_s", "peak_memory_bytes", "peak_memory_min_bytes",
    "peak_memory_increase_bytes", "memory_kind", "device",
]  # fmt: skip


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def read_timed_chunks(run_dir: Path) -> list[dict]:
    """The chunks of one run that count (warm-up left out), numbers parsed."""
    with (RunFolder(run_dir).probe_dir("speed") / "chunks.csv").open(newline="") as f:
        return [
            {"step_time_s": float(r["step_time_s"]), "samples_per_s": float(r["samples_per_s"])}
            for r in csv.DictReader(f)
            if r["warmup"] == "False"
        ]


def speed_runs(sweep_dir: Path) -> list[tuple[dict, list[dict]]]:
    """(summary, timed chunks) of every run under `sweep_dir` that has the speed probe's results; a run whose
    summary.json cannot be read is left out with a warning (the report lists it among its problems)."""
    runs = []
    for run in runs_of(sweep_dir):
        try:
            summary = run.summary() or {}
        except (OSError, ValueError) as err:
            log.warning("speed table: %s left out: %s", run.path, err)
            continue
        if "speed" in (summary.get("probes") or {}) and (run.probe_dir("speed") / "chunks.csv").exists():
            runs.append((summary, read_timed_chunks(run.path)))
    return runs


def speed_rows(sweep_dir: str | Path) -> list[dict]:
    """One row per batch size (keys ROW_KEYS), sorted by B: quartiles over all timed chunks of its runs,
    the measured epoch time (median over runs), the warm epoch time = steps per epoch x step-time
    quartiles, and the peak memory (largest and smallest over runs)."""
    by_batch: dict[int, list[tuple[dict, list[dict]]]] = {}
    for summary, chunks in speed_runs(Path(sweep_dir)):
        by_batch.setdefault(summary["batch_size"], []).append((summary, chunks))
    rows = []
    for batch_size, runs in sorted(by_batch.items()):
        chunks = [c for _, run_chunks in runs for c in run_chunks]
        speeds = [s["probes"]["speed"] for s, _ in runs]
        step = np.percentile([c["step_time_s"] for c in chunks], [25, 50, 75]) if chunks else [None] * 3
        rate = np.percentile([c["samples_per_s"] for c in chunks], [25, 50, 75]) if chunks else [None] * 3
        steps_per_epoch = speeds[0]["steps_per_epoch"]
        epoch_times = [s["epoch_time_s"] for s in speeds if s["epoch_time_s"] is not None]
        rows.append(
            {
                "batch_size": batch_size,
                "runs": len(runs),
                "timed_chunks": len(chunks),
                "step_time_median_s": none_or_float(step[1]),
                "step_time_q25_s": none_or_float(step[0]),
                "step_time_q75_s": none_or_float(step[2]),
                "samples_per_s_median": none_or_float(rate[1]),
                "samples_per_s_q25": none_or_float(rate[0]),
                "samples_per_s_q75": none_or_float(rate[2]),
                "epoch_time_s": float(np.median(epoch_times)) if epoch_times else None,
                "epoch_time_from_steps_s": steps_per_epoch * step[1] if chunks else None,
                "epoch_time_from_steps_q25_s": steps_per_epoch * step[0] if chunks else None,
                "epoch_time_from_steps_q75_s": steps_per_epoch * step[2] if chunks else None,
                "peak_memory_bytes": max(s["peak_memory_bytes"] for s in speeds),
                "peak_memory_min_bytes": min(s["peak_memory_bytes"] for s in speeds),
                "peak_memory_increase_bytes": max_or_none([s.get("peak_memory_increase_bytes") for s in speeds]),
                "memory_kind": speeds[0]["memory_kind"],
                "device": speeds[0]["device"],
            }
        )
    return rows


def max_or_none(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def none_or_float(value) -> float | None:
    return None if value is None else float(value)


def power_of_two_comparisons(rows: list[dict]) -> list[dict]:
    """Each power of two P against each neighbour N (non-power, |N - P| <= P/16): verdict "faster",
    "slower" or "no clear difference" for P (rules in the module docstring), and the throughput ratio."""
    timed = [r for r in rows if r["timed_chunks"]]
    comparisons = []
    for p in (r for r in timed if is_power_of_two(r["batch_size"])):
        for n in timed:
            b = n["batch_size"]
            if is_power_of_two(b) or abs(b - p["batch_size"]) > NEIGHBOUR_TOLERANCE * p["batch_size"]:
                continue
            if b > p["batch_size"]:  # a larger batch should reach at least P's samples/s
                faster = p["samples_per_s_q25"] > n["samples_per_s_q75"]
                slower = p["step_time_q25_s"] > n["step_time_q75_s"]  # N takes more samples in less time
            else:  # a smaller batch should take no longer per step
                faster = p["step_time_q75_s"] < n["step_time_q25_s"]
                slower = p["samples_per_s_q75"] < n["samples_per_s_q25"]  # N gets more samples through
            verdict = "faster" if faster else "slower" if slower else "no clear difference"
            ratio = p["samples_per_s_median"] / n["samples_per_s_median"]
            comparisons.append(
                {"power": p["batch_size"], "neighbour": b, "verdict": verdict, "throughput_ratio": ratio}
            )
    return comparisons


def power_of_two_answer(rows: list[dict]) -> str:
    """One line: is a power-of-two batch size faster on this device, judged against its neighbours."""
    comparisons = power_of_two_comparisons(rows)
    if not comparisons:
        return "Power of two? Not measurable: the sweep has no power of two with a non-power neighbour within P/16."
    counts = {v: sum(c["verdict"] == v for c in comparisons) for v in ("faster", "slower", "no clear difference")}
    pairs = ", ".join(f"{c['power']} vs {c['neighbour']}: {c['verdict']} ({c['throughput_ratio']:.2f}x)"
                      for c in comparisons)  # fmt: skip
    if counts["faster"] > len(comparisons) / 2:
        verdict = "Yes, mostly"
    elif counts["faster"] == 0 and counts["slower"] == 0:
        verdict = "No"
    elif counts["faster"] == 0:
        verdict = "No; some powers of two were slower"
    else:
        verdict = "Mixed"
    median_ratio = float(np.median([c["throughput_ratio"] for c in comparisons]))
    return (
        f"Power of two faster on {rows[0]['device']}? {verdict}: faster in {counts['faster']}, slower in "
        f"{counts['slower']}, no clear difference (interquartile ranges overlap) in {counts['no clear difference']} "
        f"of {len(comparisons)} comparisons; median samples/s ratio power/neighbour {median_ratio:.3f} [{pairs}]"
    )


def format_speed_table(rows: list[dict]) -> str:
    """The table as text: one line per B (* = power of two), medians with [q25, q75]."""
    if not rows:
        return "speed table: no run with the speed probe's results found"
    kind = "GPU max allocated" if rows[0]["memory_kind"] == "cuda_max_allocated" else "peak RSS, whole process"
    lines = [
        f"speed per batch size on {rows[0]['device']} (median [q25, q75] over timed chunks of optimizer steps)",
        f"{'B':>6} {'ms per step':>26} {'samples/s':>28} {'epoch s':>8} {'warm epoch s':>22} "
        f"{'peak MiB':>9} {'+training MiB':>13} {'chunks':>6}",
    ]
    for r in rows:
        if not r["timed_chunks"]:
            lines.append(f"{r['batch_size']:>6} no timed chunks (lower probes.speed.warmup_chunks)")
            continue
        star = "*" if is_power_of_two(r["batch_size"]) else " "
        ms = {k: 1e3 * r[f"step_time_{k}_s"] for k in ("median", "q25", "q75")}
        step = f"{ms['median']:.3f} [{ms['q25']:.3f}, {ms['q75']:.3f}]"
        rate = f"{r['samples_per_s_median']:,.0f} [{r['samples_per_s_q25']:,.0f}, {r['samples_per_s_q75']:,.0f}]"
        warm = (f"{r['epoch_time_from_steps_s']:.2f} [{r['epoch_time_from_steps_q25_s']:.2f}, "
                f"{r['epoch_time_from_steps_q75_s']:.2f}]")  # fmt: skip
        lines.append(
            f"{r['batch_size']:>5}{star} {step:>26} {rate:>28} {r['epoch_time_s'] or float('nan'):>8.2f} {warm:>22} "
            f"{r['peak_memory_bytes'] / 2**20:>9.1f} {mebibytes(r['peak_memory_increase_bytes']):>13} "
            f"{r['timed_chunks']:>6}"
        )
    lines.append(
        f"* power of two. epoch s: measured, first epoch including warm-up; warm epoch s: steps per epoch x "
        f"step time. peak: {kind}, reset when each run's training starts; +training: the peak minus the "
        f"memory in use when training started (data and model loaded): what training adds, growing with B."
    )
    return "\n".join(lines)


def mebibytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def write_speed_csv(path: Path, rows: list[dict]) -> None:
    write_table(path, rows, ROW_KEYS)


def report_sweep(sweep_dir: Path) -> str:
    """Table + answer for one sweep, also written to <sweep>/speed_table.txt and <sweep>/speed.csv."""
    rows = speed_rows(sweep_dir)
    text = format_speed_table(rows) + "\n" + (power_of_two_answer(rows) if rows else "")
    if rows:
        write_speed_csv(sweep_dir / "speed.csv", rows)
        (sweep_dir / "speed_table.txt").write_text(text + "\n")
    return text


class SpeedTableCallback(Callback):
    """Hydra callback of `experiment=speed`: print the table when the whole sweep has finished."""

    def on_multirun_end(self, config, **kwargs) -> None:
        print(report_sweep(Path(config.hydra.sweep.dir)), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bsstudy.analysis.speed_table",
        description="The speed table of a finished experiment=speed sweep.",
    )
    parser.add_argument("sweep", type=Path, help="the sweep folder (multirun/<date>/<time>)")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"{args.sweep} is not a folder")
    print(report_sweep(args.sweep))


if __name__ == "__main__":
    main()
