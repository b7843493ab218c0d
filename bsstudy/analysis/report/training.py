"""Sections about training itself: the runs and their status, the final numbers per batch size, the
reference study's main figure (accuracy and gap against epoch), accuracy against wall-clock time and
optimizer steps, and the effect of lr scaling and of gradient accumulation."""

from __future__ import annotations

import pandas as pd

from bsstudy.analysis.report.at_budget import final_epochs
from bsstudy.analysis.report.document import Figure, Section, Table
from bsstudy.analysis.report.figures import (
    LINESTYLES,
    LR_LINES,
    band,
    batch_axis,
    batch_colours,
    curve_label,
    errorbar,
    fit_y_from,
    legend,
    log_scale,
    lr_series,
    new_figure,
    to_png,
    variant_styles,
)
from bsstudy.analysis.report.runs import Sweep, completed_epochs, selection_line
from bsstudy.analysis.report.uncertainty import summarize

CURVES = [("test_acc", "test accuracy"), ("train_acc", "train accuracy"), ("gap", "gap = train acc - test acc")]
FINAL = ["final_test_acc", "final_train_acc", "final_gap", "final_test_loss", "train_time_per_epoch_s"]
SELECTED = ["best_val_acc", "test_acc_at_best_val"]  # at the epoch of highest val accuracy (data.val_size > 0)


def runs_section(sweep: Sweep) -> Section:
    """Every run with its status (failed, diverged and running ones included) and every unreadable file."""
    counts = sweep.runs.status.value_counts().sort_index()
    text = [
        f"{len(sweep.runs)} runs: " + ", ".join(f"{n} {status}" for status, n in counts.items()) + ". "
        "Only completed runs enter the figures and tables below; the others are listed here with their status.",
        selection_line(sweep.runs),
    ]
    columns = [
        "run",
        "status",
        "batch_size",
        "seed",
        "variant",
        "epochs_completed",
        "final_test_acc",
        "final_gap",
        "best_epoch",
        "best_val_acc",
        "test_acc_at_best_val",
        "wall_time_s",
        "probes",
        "error",
    ]
    runs = sweep.runs[columns].copy()
    runs["error"] = runs.error.fillna("").str.split("\n").str[0].str.slice(0, 160)
    tables = [Table("runs", "All runs of the sweep.", runs)]
    if len(sweep.problems):
        text.append(f"{len(sweep.problems)} file(s) could not be read; the rest of the report is drawn without them.")
        tables.append(Table("problems", "Files that could not be read.", sweep.problems))
    return Section("Runs", text, tables)


def final_table(sweep: Sweep) -> pd.DataFrame:
    runs = sweep.completed.assign(train_time_per_epoch_s=lambda r: r.train_time_s / r.epochs_trained)
    selected = SELECTED if runs.best_val_acc.notna().any() else []
    return summarize(runs, ["variant", "batch_size"], FINAL + selected)


def curves_section(sweep: Sweep) -> Section | None:
    """Test accuracy, train accuracy and gap against epoch, one curve per batch size (mean and 95% band)."""
    epochs = completed_epochs(sweep)
    if epochs.empty:
        return None
    colours, styles = batch_colours(sweep.batch_sizes), variant_styles(epochs)
    several = len(styles) > 1
    curves = summarize(epochs, ["variant", "batch_size", "epoch"], [c for c, _ in CURVES])
    pairs = curves.groupby(["variant", "batch_size"])
    by_lr = lr_series(sweep.completed, sweep.batch_sizes, series=pairs.ngroups)
    fig, axes = new_figure(3, layout="constrained" if by_lr else None)
    for (variant, batch_size), c in pairs:
        for ax, (column, _) in zip(axes[0], CURVES, strict=True):
            if by_lr:
                band(ax, c.epoch, c, column, by_lr.colour(variant), "_nolegend_", by_lr.linestyle(batch_size))
            else:
                band(ax, c.epoch, c, column, colours[batch_size], curve_label(batch_size, variant, several),
                     styles[variant])  # fmt: skip
    for ax, (column, label) in zip(axes[0], CURVES, strict=True):
        ax.set(xlabel="epoch", ylabel=label, title=label)
        if column != "gap" and (curves.epoch > 0).any():
            fit_y_from(ax, 1)  # epoch 0 (chance accuracy) would squeeze the range where the curves differ
    if by_lr:
        by_lr.colourbar(fig, axes[0].tolist())
        by_lr.batch_legend(fig)
    else:
        legend(axes[0][-1])
    curves_fig = Figure(
        "generalization_curves",
        "Full-pass test accuracy, train accuracy and generalization gap after each epoch (epoch 0 = before "
        "training), one curve per batch size"
        + ("; colour: the lr (colour bar), line style: the batch size" if by_lr else "")
        + "; bands: 95% interval across seeds. The accuracy axes are fitted to epochs 1 and later: epoch 0 (chance "
        "accuracy) lies below them.",
        to_png(fig),
    )
    final = final_table(sweep)
    by_lr = lr_series(sweep.completed)
    fig, axes = new_figure(2, layout="constrained" if by_lr else None)
    for variant, f in final.groupby("variant"):
        for ax, column in zip(axes[0], ["final_test_acc", "final_gap"], strict=True):
            if by_lr:
                errorbar(ax, f.batch_size * by_lr.offset(variant), f, column, by_lr.colour(variant), "_nolegend_")
                continue
            errorbar(ax, f.batch_size, f, column, "black", variant or "all runs", linestyle=styles[variant])
            for b, m in zip(f.batch_size, f[f"{column}_mean"], strict=True):
                ax.plot([b], [m], "o", color=colours[b], markersize=7, zorder=3)
    for ax, label in zip(axes[0], ["final test accuracy", "final gap (train acc - test acc)"], strict=True):
        batch_axis(ax, sweep.batch_sizes)
        ax.set(xlabel="batch size B (log scale)", ylabel=label, title=f"{label} vs B")
    if by_lr:
        by_lr.colourbar(fig, axes[0].tolist())
    elif several:
        legend(axes[0][-1])
    epochs = final_epochs(sweep.completed)
    budget = f"at each run's {epochs}" if epochs.startswith("final") else f"at equal epochs ({epochs})"
    budget += ", not at equal steps or time (see Budgets)"
    final_fig = Figure(
        "final_vs_batch_size",
        f"Final test accuracy and gap against batch size, {budget}"
        + (LR_LINES if by_lr else "")
        + "; bars: 95% interval across seeds.",
        to_png(fig),
    )
    caption = f"Final numbers per batch size, {budget}: mean [95% interval] over n seeds" + (
        "; best_val_acc and test_acc_at_best_val at each run's epoch of highest validation accuracy."
        if "best_val_acc_mean" in final
        else "."
    )
    table = Table("final_by_batch_size", caption, final)
    return Section("Generalization: accuracy and gap per batch size", [], [table], [curves_fig, final_fig])


def cost_curves_section(sweep: Sweep) -> Section | None:
    """Test accuracy against cumulative training time and against optimizer steps (epoch 0 left out)."""
    epochs = completed_epochs(sweep)
    epochs = epochs[epochs.epoch > 0]
    if epochs.empty or "train_time_s" not in epochs:
        return None
    colours, styles = batch_colours(sweep.batch_sizes), variant_styles(epochs)
    curves = summarize(epochs, ["variant", "batch_size", "epoch"], ["test_acc", "train_time_s", "optimizer_steps"])
    pairs = curves.groupby(["variant", "batch_size"])
    by_lr = lr_series(sweep.completed, sweep.batch_sizes, series=pairs.ngroups)
    fig, axes = new_figure(2, layout="constrained" if by_lr else None)
    for ax in axes[0]:
        log_scale(ax, "x")
    for (variant, batch_size), c in pairs:
        label = curve_label(batch_size, variant, len(styles) > 1)
        for ax, x in zip(axes[0], ["train_time_s_mean", "optimizer_steps_mean"], strict=True):
            if by_lr:
                band(ax, c[x], c, "test_acc", by_lr.colour(variant), "_nolegend_", by_lr.linestyle(batch_size),
                     marker=by_lr.marker(batch_size))  # fmt: skip
            else:
                band(ax, c[x], c, "test_acc", colours[batch_size], label, styles[variant], marker="o")
    axes[0][0].set(
        xlabel="training time (s, cumulative, evaluation excluded; log)",
        ylabel="test accuracy",
        title="test accuracy vs wall-clock time",
    )
    axes[0][1].set(xlabel="optimizer steps (log)", ylabel="test accuracy", title="test accuracy vs optimizer steps")
    if by_lr:
        by_lr.colourbar(fig, axes[0].tolist())
        by_lr.batch_legend(fig, marker=True)
    else:
        legend(axes[0][-1])
    figure = Figure(
        "accuracy_vs_time_and_steps",
        "Test accuracy after each epoch against the training time and the optimizer steps it took (means over seeds"
        + ("; colour: the lr (colour bar), line style and marker: the batch size" if by_lr else "")
        + "); "
        "the Budgets section reads these curves at one common step or time budget.",
        to_png(fig),
    )
    return Section("Cost: accuracy against time and steps", [], [], [figure])


def scaling_section(sweep: Sweep) -> Section | None:
    """Same batch sizes with and without lr scaling side by side; accumulation against one big batch."""
    epochs, runs = completed_epochs(sweep), sweep.completed
    scalings, accumulates = sorted(runs.lr_scaling.dropna().unique()), sorted(runs.accumulate.dropna().unique())
    if len(scalings) < 2 and len(accumulates) < 2:
        return None
    colours = batch_colours(sweep.batch_sizes)
    figures, tables = [], []
    if len(scalings) > 1:
        fig, axes = new_figure(len(scalings) + 1, sharey=True)
        curves = summarize(epochs, ["lr_scaling", "batch_size", "epoch"], ["test_acc"])
        for ax, scaling in zip(axes[0], scalings, strict=False):
            for batch_size, c in curves[curves.lr_scaling == scaling].groupby("batch_size"):
                band(
                    ax,
                    c.epoch,
                    c,
                    "test_acc",
                    colours[batch_size],
                    f"B={batch_size:g}",
                )
            ax.set(xlabel="epoch", ylabel="test accuracy", title=f"lr_scaling={scaling}")
        legend(axes[0][len(scalings) - 1])
        final = summarize(runs, ["lr_scaling", "batch_size"], ["final_test_acc"])
        for i, (scaling, f) in enumerate(final.groupby("lr_scaling")):
            errorbar(
                axes[0][-1],
                f.batch_size,
                f,
                "final_test_acc",
                "black",
                f"lr_scaling={scaling}",
                linestyle=LINESTYLES[i % 4],
            )
        batch_axis(axes[0][-1], sweep.batch_sizes)
        axes[0][-1].set(xlabel="batch size B (log)", title="final test accuracy")
        legend(axes[0][-1])
        figures.append(
            Figure(
                "lr_scaling",
                "Test accuracy per epoch with each lr-scaling rule (panels side by "
                "side, same batch sizes), and the final test accuracy of each rule against B.",
                to_png(fig),
            )
        )
        tables.append(
            Table(
                "lr_scaling",
                f"Final test accuracy ({final_epochs(runs)}) per lr-scaling rule and batch size.",
                final,
            )
        )
    if len(accumulates) > 1:
        fig, axes = new_figure(1)
        final = summarize(runs, ["accumulate", "effective_batch_size"], ["final_test_acc"])
        for i, (accumulate, f) in enumerate(final.groupby("accumulate")):
            errorbar(
                axes[0][0],
                f.effective_batch_size,
                f,
                "final_test_acc",
                f"C{i}",
                f"accumulate={accumulate:g}",
                marker="os^v"[i % 4],
            )
        batch_axis(axes[0][0], final.effective_batch_size.unique())
        axes[0][0].set(
            xlabel="effective batch size = accumulate x B (log)",
            ylabel="final test accuracy",
            title="gradient accumulation vs one big batch",
        )
        legend(axes[0][0])
        figures.append(
            Figure(
                "accumulation",
                "Final test accuracy against the effective batch size, per number of "
                "accumulated micro-batches: equal points mean accumulation reproduces one big batch.",
                to_png(fig),
            )
        )
        tables.append(
            Table(
                "accumulation",
                f"Final test accuracy ({final_epochs(runs)}) per accumulation and effective batch size.",
                final,
            )
        )
    return Section("Learning-rate scaling and gradient accumulation", [], tables, figures)
