"""Sections about the loss geometry at the end of training: Keskar et al. (2017)'s sharpness and the
Hessian's top eigenvalue and trace against B, the interpolation between two minimizers, and Li et
al. (2018)'s filter-normalized landscapes side by side on one colour scale."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from bsstudy.analysis.report.document import Figure, Section, Table
from bsstudy.analysis.report.figures import (
    LINESTYLES,
    batch_axis,
    batch_colours,
    errorbar,
    legend,
    log_scale,
    new_figure,
    to_png,
)
from bsstudy.analysis.report.runs import Sweep, eps_values, probe_numbers, representative_runs
from bsstudy.analysis.report.uncertainty import summarize

MEASURED_POINT = ("train_loss", "grad_norm")  # whole-training-set loss and gradient norm where a probe measured


def measured_point_columns(frame: pd.DataFrame) -> list[str]:
    """train_loss and grad_norm, where the probe recorded them: geometry means little away from a minimum."""
    return [c for c in MEASURED_POINT if c in frame]


def sharpness_section(sweep: Sweep) -> Section | None:
    numbers, hessian = probe_numbers(sweep, "sharpness"), probe_numbers(sweep, "hessian")
    if numbers.empty and hessian.empty:
        return None
    figures, tables = [], []
    if not numbers.empty and eps_values(numbers):
        eps = eps_values(numbers)
        columns = [
            f"{kind}sharpness_eps_{e}" for e in eps for kind in ("", "random_") if f"{kind}sharpness_eps_{e}" in numbers
        ]
        table = summarize(numbers, ["variant", "batch_size"], [*columns, *measured_point_columns(numbers)])
        fig, axes = new_figure(len(eps))
        for ax, e in zip(axes[0], eps, strict=True):
            log_scale(ax)
            for i, (variant, t) in enumerate(table.groupby("variant")):
                for kind, label in (("", "max in the eps-box (L-BFGS-B)"), ("random_", "random points of the box")):
                    c = f"{kind}sharpness_eps_{e}"
                    if f"{c}_mean" in t:
                        errorbar(
                            ax,
                            t.batch_size,
                            t,
                            c,
                            "black" if not kind else "grey",
                            f"{label} {variant}".strip(),
                            linestyle=LINESTYLES[i % 4] if not kind else ":",
                        )
            batch_axis(ax, sweep.batch_sizes)
            ax.set(
                xlabel="batch size B (log)", ylabel="sharpness (% loss increase, log)", title=f"sharpness, eps = {e}"
            )
            legend(ax)
        figures.append(
            Figure(
                "sharpness",
                "Keskar et al.'s sharpness of the final weights against B: the largest "
                "relative loss increase in the eps-box, with the mean over random points of the box "
                "as a baseline (95% intervals over seeds; values at or below zero cannot appear on the log axis).",
                to_png(fig),
            )
        )
        tables.append(Table("sharpness", "Sharpness per batch size, with the training loss and gradient norm "
                            "(whole training set) at the measured weights.", table))  # fmt: skip
    if not hessian.empty and (columns := hessian_columns(hessian)):
        table = hessian_table(hessian, columns)
        fig, axes = new_figure(len(columns))
        for ax, c in zip(axes[0], columns, strict=True):
            for i, (variant, t) in enumerate(table.groupby("variant")):
                errorbar(
                    ax,
                    t.batch_size,
                    t,
                    c,
                    "black",
                    variant or c,
                    linestyle=LINESTYLES[i % 4],
                )
            batch_axis(ax, sweep.batch_sizes)
            ax.set(xlabel="batch size B (log)", ylabel=c.replace("_", " "), title=f"Hessian {c.replace('_', ' ')}")
        figures.append(
            Figure(
                "hessian",
                "Extreme eigenvalues (Lanczos: lambda_max the largest, lambda_abs_max the largest in magnitude, "
                "negative where negative curvature dominates) and trace (Hutchinson) of the Hessian of the "
                "training loss at the final weights, against B. The table gives each eigenvalue's largest "
                "relative residual ||H v - lambda v|| / |lambda| over the seeds.",
                to_png(fig),
            )
        )
        tables.append(Table("hessian", "Hessian per batch size.", table))
    return Section("Sharpness and curvature", [], tables, figures) if figures else None


HESSIAN_EIGENVALUES = ("lambda_max", "lambda_abs_max")


def hessian_columns(hessian: pd.DataFrame) -> list[str]:
    """The Hessian numbers to show: the Lanczos eigenvalues and the trace (summaries written before Lanczos
    have top_eigenvalue, the largest magnitude by power iteration, instead)."""
    eigenvalues = [c for c in HESSIAN_EIGENVALUES if c in hessian] or [c for c in ("top_eigenvalue",) if c in hessian]
    return [*eigenvalues, *(["trace"] if "trace" in hessian else [])]


def hessian_table(hessian: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean and interval per (variant, batch_size) of `columns` (over the converged runs) and of the training
    loss and gradient norm at the measured point, with, for each
    Lanczos eigenvalue, its largest relative residual over the seeds (`<eigenvalue>_relative_residual_max`)
    and the runs where it did not converge (`<eigenvalue>_not_converged`, NaN in the summary)."""
    by = ["variant", "batch_size"]
    table = summarize(hessian, by, [*columns, *measured_point_columns(hessian)])
    groups = hessian.groupby(by, dropna=False)
    for c in (c for c in columns if c in HESSIAN_EIGENVALUES):
        extra = groups[c].agg(lambda values: int(values.isna().sum())).rename(f"{c}_not_converged").to_frame()
        if f"{c}_relative_residual" in hessian:
            extra[f"{c}_relative_residual_max"] = groups[f"{c}_relative_residual"].max()
        table = table.merge(extra.reset_index(), on=by, how="left")
    return table


def interpolation_folders(sweep: Sweep) -> list[Path]:
    found = sorted(sweep.path.glob("geometry/interpolation_*/interpolation.csv"))
    found += sorted(sweep.path.glob("*/probes/interpolation/interpolation.csv"))
    found += sorted(sweep.path.glob("probes/interpolation/interpolation.csv"))
    return [p.parent for p in found]


def interpolation_section(sweep: Sweep) -> Section | None:
    curves = []
    for folder in interpolation_folders(sweep):
        try:
            curves.append(
                (folder, pd.read_csv(folder / "interpolation.csv"), json.loads((folder / "meta.json").read_text()))
            )
        except Exception as err:
            sweep.problem(
                str(folder.relative_to(sweep.path)), "interpolation.csv, meta.json", f"{type(err).__name__}: {err}"
            )
    if not curves:
        return None
    colours = batch_colours(sweep.batch_sizes)
    fig, axes = new_figure(min(len(curves), 3), nrows=(len(curves) + 2) // 3, width=4.6)
    for ax, (folder, table, meta) in zip(axes.flat, curves, strict=False):
        ax.plot(table.alpha, table.train_loss, "-", color="black", label="train loss")
        ax.plot(table.alpha, table.test_loss, "--", color="black", label="test loss")
        for alpha, key in ((0.0, "batch_size_a"), (1.0, "batch_size_b")):
            b = meta.get(key)
            ax.axvline(alpha, color=colours.get(b, "grey"), linewidth=2, alpha=0.8)
            ax.annotate(
                f"B={b}",
                (alpha, 1.0),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="bottom",
                color=colours.get(b, "grey"),
                fontsize=8,
            )
        ax.set(yscale="log", xlabel="alpha: (1 - alpha) theta_a + alpha theta_b", ylabel="loss (log)")
        ax.set_title(folder.name if folder.name != "interpolation" else folder.parents[1].name, pad=14)
        legend(ax)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    figure = Figure(
        "interpolation",
        "Train and test loss along the straight line between two final weights "
        "(alpha = 0: the first run, 1: the second; coloured lines mark each run's batch size).",
        to_png(fig),
    )
    return Section("Interpolation between minimizers", [], [], [figure])


def landscape_section(sweep: Sweep) -> Section | None:
    grids = []
    for run in representative_runs(sweep, sweep.completed).itertuples():
        path = sweep.probe_dir(run.run, "landscape") / "landscape.npz"
        if not path.exists():
            continue
        try:
            with np.load(path) as npz:
                grids.append((run, npz["alphas"], npz["betas"], np.asarray(npz["train_loss"], float)))
        except Exception as err:
            sweep.problem(run.run, "probes/landscape/landscape.npz", f"{type(err).__name__}: {err}")
    if not grids:
        return None
    finite = np.concatenate([g[3][np.isfinite(g[3])] for g in grids])
    low, high = max(float(finite.min()), 1e-6), float(finite.max())
    levels = np.geomspace(low, high, 21) if high > 10 * low else np.linspace(low, high, 21)
    norm = matplotlib.colors.LogNorm(low, high) if high > 10 * low else matplotlib.colors.Normalize(low, high)
    fig, axes = new_figure(len(grids), width=3.6, height=3.4, layout="constrained")
    for ax, (run, alphas, betas, loss) in zip(axes[0], grids, strict=True):
        filled = ax.contourf(alphas, betas, np.clip(loss.T, low, high), levels=levels, norm=norm, cmap="magma")
        ax.plot([0], [0], "w+", markersize=10)
        ax.set(
            xlabel="alpha (direction 1)",
            ylabel="beta (direction 2)",
            aspect="equal",
            title=f"B={run.batch_size:g} (run {run.run}){' ' + run.variant if run.variant else ''}",
        )
        ax.grid(False)
    fig.colorbar(filled, ax=list(axes[0]), label="train loss (one scale for all panels)", shrink=0.9)
    figure = Figure(
        "landscape",
        "Filter-normalized 2-D loss landscapes around the final weights (Li et al. "
        "2018), one run per batch size, one shared colour scale; + marks the minimizer.",
        to_png(fig, tight=False),
    )
    return Section("Loss landscapes", [], [], [figure])
