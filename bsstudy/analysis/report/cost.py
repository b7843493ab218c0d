"""Sections about cost: time-to-accuracy per batch size (Shallue et al. 2019, "Measuring the Effects of
Data Parallelism on Neural Network Training") and the speed and memory table of the `speed` probe with
the answer to "is a power-of-two batch size faster?"."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bsstudy.analysis.report.document import Figure, Section, Table
from bsstudy.analysis.report.figures import (
    LR_LINES,
    batch_axis,
    batch_colours,
    errorbar,
    legend,
    log_scale,
    lr_series,
    new_figure,
    to_png,
)
from bsstudy.analysis.report.runs import Sweep
from bsstudy.analysis.report.uncertainty import summarize
from bsstudy.analysis.speed_table import is_power_of_two, power_of_two_answer, power_of_two_comparisons, speed_rows

AUTO_TARGET_FRACTION = 0.98  # target_acc=None: 98% of the best val accuracy any run of the sweep reached


def auto_target(epochs: pd.DataFrame) -> float:
    """AUTO_TARGET_FRACTION x the best validation accuracy of the sweep, rounded down to 0.005."""
    return math.floor(AUTO_TARGET_FRACTION * float(epochs.val_acc.max()) * 200) / 200


def time_to_target(epochs: pd.DataFrame, target: float, column: str = "val_acc") -> pd.DataFrame:
    """Per run, the first epoch whose `column` (validation accuracy; test accuracy only without a validation
    split) reaches `target`, with the optimizer steps, samples and cumulative training time (evaluation
    excluded) it took; NaN and reached=False if it never does."""
    rows = []
    for (run, variant, batch_size), e in epochs.sort_values(["run", "epoch"]).groupby(
        ["run", "variant", "batch_size"], sort=False
    ):
        hit = e[e[column] >= target]
        first = hit.iloc[0] if len(hit) else None
        rows.append(
            {
                "run": run,
                "variant": variant,
                "batch_size": batch_size,
                "reached": first is not None,
                "epoch": np.nan if first is None else first.epoch,
                "steps": np.nan if first is None else first.optimizer_steps,
                "samples": np.nan if first is None else first.samples_seen,
                "time_s": np.nan if first is None else first.train_time_s,
            }
        )
    return pd.DataFrame(
        rows, columns=["run", "variant", "batch_size", "reached", "epoch", "steps", "samples", "time_s"]
    )


def time_to_accuracy_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per variant and B: runs that reached the target of all runs, and mean [95% interval] of steps,
    samples and seconds over the runs that reached it."""
    reached = per_run[per_run.reached]
    table = summarize(reached, ["variant", "batch_size"], ["steps", "samples", "time_s"]).drop(columns="n")
    counts = per_run.groupby(["variant", "batch_size"]).reached.agg(["sum", "count"]).reset_index()
    counts["reached"] = counts["sum"].astype(int).astype(str) + " of " + counts["count"].astype(str)
    return counts[["variant", "batch_size", "reached"]].merge(table, on=["variant", "batch_size"], how="left")


def time_to_accuracy_section(sweep: Sweep, target_acc: float | None) -> Section | None:
    """Steps and time to a target accuracy, measured on validation accuracy (test only when the sweep has no
    validation split and the target was given explicitly; the default target needs data.val_size > 0)."""
    epochs = sweep.epochs[(sweep.epochs.status == "completed")]
    if epochs.empty or len(sweep.batch_sizes) < 2 or "train_time_s" not in epochs:
        return None
    has_val = "val_acc" in epochs and epochs.val_acc.notna().all()
    if not has_val and target_acc is None:
        return Section(
            "Time to accuracy",
            [
                "Not computed: the default target (98% of the sweep's best validation accuracy) needs a "
                "validation split in every run (data.val_size > 0). Give a target with --target-acc to measure "
                "it on test accuracy instead."
            ],
        )
    measured_on, split = ("val_acc", "validation") if has_val else ("test_acc", "test")
    target = auto_target(epochs) if target_acc is None else target_acc
    how = (
        "given with --target-acc"
        if target_acc is not None
        else f"{AUTO_TARGET_FRACTION:.0%} of the best validation accuracy of the sweep; set it with --target-acc"
    )
    if not has_val:
        how += "; measured on test accuracy because the sweep has no validation split (data.val_size=0)"
    per_run = time_to_target(epochs, target, measured_on)
    table = time_to_accuracy_table(per_run)
    colours = batch_colours(sweep.batch_sizes)
    by_lr = lr_series(sweep.completed)
    fig, axes = new_figure(2, layout="constrained" if by_lr else None)
    for ax, column, label in zip(
        axes[0], ["steps", "time_s"], ["optimizer steps to target", "training time to target (s)"], strict=True
    ):
        log_scale(ax)
        for variant, t in table.groupby("variant"):
            ok = t[f"{column}_mean"].notna()
            if by_lr:
                errorbar(ax, t.batch_size[ok] * by_lr.offset(variant), t[ok], column, by_lr.colour(variant),
                         "_nolegend_")  # fmt: skip
                continue
            errorbar(ax, t.batch_size[ok], t[ok], column, "black", variant or "runs that reached it")
            for b, m in zip(t.batch_size[ok], t[f"{column}_mean"][ok], strict=True):
                ax.plot([b], [m], "o", color=colours[b], markersize=7, zorder=3)
        never = per_run[~per_run.reached]
        if len(never):  # at the top edge, whatever the scale: text does not move the axis limits
            for b in never.batch_size:
                ax.text(b, 0.95, "x", color="red", ha="center", va="center", transform=ax.get_xaxis_transform())
            ax.plot([], [], "x", color="red", label="never reached (x at the top edge)")
        batch_axis(ax, sweep.batch_sizes)
        ax.set(xlabel="batch size B (log)", ylabel=f"{label} (log)", title=label)
    if by_lr:
        by_lr.colourbar(fig, axes[0].tolist())
        if len(per_run[~per_run.reached]):
            fig.legend(*axes[0][-1].get_legend_handles_labels(), loc="outside lower center")
    else:
        legend(axes[0][-1])
    text = [
        f"Budget: a matched {split} accuracy (each batch size gets the steps and time it needs). "
        f"Target: {split} accuracy >= {target:.3f} ({how}). For each run, the first epoch whose full-pass {split} "
        "accuracy reaches it; steps and training time counted up to the end of that epoch. Where doubling B "
        "stops halving the steps, a larger batch stops saving steps (Shallue et al. 2019); the batch size with "
        "the lowest time to target is the fastest on this hardware.",
    ]
    if "pack_size" in sweep.runs and (sweep.runs.pack_size.fillna(1) > 1).any():
        sizes = ", ".join(sorted({str(int(k)) for k in sweep.runs.pack_size.fillna(1)}))
        text.append(
            f"Some runs trained in packs (hydra/launcher=packed; runs per pack: {sizes}): a packed run's training "
            "time is its pack's, shared by the runs trained with it. Compare times only between runs packed alike."
        )
    if (~per_run.reached).any():
        missing = ", ".join(
            f"run {r} (B={b})"
            for r, b in zip(per_run.run[~per_run.reached], per_run.batch_size[~per_run.reached], strict=True)
        )
        text.append(f"Never reached the target within their epochs (red x in the plots): {missing}.")
    figure = Figure(
        "time_to_accuracy",
        f"Optimizer steps and training time to reach {split} accuracy {target:.3f}, "
        "against batch size (mean and 95% interval over the seeds that reached it)" + (LR_LINES if by_lr else "") + ".",
        to_png(fig),
    )
    tables = [
        Table("time_to_accuracy", f"Time to {split} accuracy {target:.3f} per batch size.", table),
        Table("time_to_accuracy_runs", "Per run.", per_run),
    ]
    return Section("Time to accuracy", text, tables, [figure])


SPEED_COLUMNS = [
    "batch_size",
    "runs",
    "timed_chunks",
    "step_time_median_s",
    "step_time_q25_s",
    "step_time_q75_s",
    "samples_per_s_median",
    "samples_per_s_q25",
    "samples_per_s_q75",
    "epoch_time_s",
    "peak_memory_bytes",
    "memory_kind",
    "device",
]


def speed_section(sweep: Sweep) -> Section | None:
    """The speed probe's per-B table (bsstudy.analysis.speed_table) with its spreads and the power-of-two answer."""
    if not any("speed" in (s.get("probes") or {}) for s in sweep.summaries.values()):
        return None
    try:
        rows = [r for r in speed_rows(sweep.path) if r["timed_chunks"]]
    except Exception as err:  # the speed table reads the run files itself; keep the rest of the report
        sweep.problem("(speed table)", "*/summary.json, probes/speed/chunks.csv", f"{type(err).__name__}: {err}")
        return None
    if not rows:
        return None
    frame = pd.DataFrame(rows)[SPEED_COLUMNS]
    colours = batch_colours(sorted(set(sweep.batch_sizes) | set(frame.batch_size)))
    fig, axes = new_figure(3)
    panels = [("samples_per_s", "samples per second"), ("step_time", "seconds per optimizer step")]
    for ax, (key, label) in zip(axes[0], panels, strict=False):
        suffix = "_s" if key == "step_time" else ""
        low, mid, high = (frame[f"{key}_{q}{suffix}"] for q in ("q25", "median", "q75"))
        ax.plot(frame.batch_size, mid, color="grey", linewidth=1)
        for b, lo, m, hi in zip(frame.batch_size, low, mid, high, strict=True):
            filled = is_power_of_two(b)
            ax.errorbar(
                [b],
                [m],
                yerr=[[m - lo], [hi - m]],
                fmt="o",
                color=colours[b],
                capsize=3,
                markerfacecolor=colours[b] if filled else "white",
            )
        batch_axis(ax, frame.batch_size)
        log_scale(ax)
        ax.set(xlabel="batch size B (log)", ylabel=f"{label} (log)", title=f"{label} (median, IQR)")
        ax.tick_params(axis="x", labelrotation=60)
    axes[0][2].bar(range(len(frame)), frame.peak_memory_bytes / 2**20, color=[colours[b] for b in frame.batch_size])
    axes[0][2].set_xticks(range(len(frame)), [str(b) for b in frame.batch_size], rotation=60)
    axes[0][2].set(xlabel="batch size B", ylabel="MiB", title=f"peak memory ({frame.memory_kind.iloc[0]})")
    comparisons = pd.DataFrame(
        power_of_two_comparisons(rows), columns=["power", "neighbour", "verdict", "throughput_ratio"]
    )
    text = [
        power_of_two_answer(rows),
        "Filled markers: powers of two; bars: interquartile range over timed chunks "
        "of optimizer steps (warm-up excluded). A power of two counts as faster or slower than a neighbour only "
        "where their interquartile ranges do not overlap.",
    ]
    figure = Figure("speed", "Throughput, step time and peak memory per batch size.", to_png(fig))
    tables = [Table("speed", f"Speed per batch size on {frame.device.iloc[0]}: medians and quartiles.", frame)]
    if len(comparisons):
        tables.append(Table("power_of_two", "Each power of two against its non-power neighbours.", comparisons))
    return Section("Speed and memory per batch size", text, tables, [figure])
