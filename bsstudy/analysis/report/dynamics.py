"""Sections about the training dynamics measured by probes: update norms and epoch distances
(Chang & Pathak 2020), the gradient-sum-norm experiment (Shen 2018) and the gradient noise scale
(McCandlish et al. 2018)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bsstudy.analysis.report.document import Figure, Section, Table
from bsstudy.analysis.report.figures import (
    band,
    batch_colours,
    curve_label,
    legend,
    log_scale,
    lr_series,
    new_figure,
    to_png,
    variant_styles,
)
from bsstudy.analysis.report.runs import Sweep, completed_epochs, normalized_std, read_gradsum, representative_runs
from bsstudy.analysis.report.uncertainty import summarize


def has_column(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].notna().any()


def distance_ratio(curves: pd.DataFrame) -> pd.DataFrame:
    """epoch_distance_mean of each B divided by that of the smallest B of the same variant and epoch."""
    smallest = curves.loc[
        curves.groupby(["variant", "epoch"]).batch_size.idxmin(), ["variant", "epoch", "epoch_distance_mean"]
    ]
    merged = curves.merge(smallest, on=["variant", "epoch"], suffixes=("", "_ref"))
    return merged.assign(ratio=merged.epoch_distance_mean / merged.epoch_distance_mean_ref)


def step_norm_histograms(sweep: Sweep, colours) -> bytes | None:
    """Histograms of the per-step update norms of the last epoch, one run per batch size, medians marked."""
    norms = {}
    for run in representative_runs(sweep, sweep.completed).itertuples():
        files = sorted((sweep.probe_dir(run.run, "update_norms")).glob("epoch_*.npz"))
        if not files:
            continue
        try:
            with np.load(files[-1]) as npz:
                norms[(run.batch_size, run.variant, files[-1].stem)] = np.asarray(npz["total"], float)
        except Exception as err:  # keep the other runs' histograms
            sweep.problem(run.run, str(files[-1].relative_to(sweep.run_dir(run.run))), f"{type(err).__name__}: {err}")
    norms = {k: v[np.isfinite(v) & (v > 0)] for k, v in norms.items()}
    norms = {k: v for k, v in norms.items() if len(v)}
    if not norms:
        return None
    every = np.concatenate(list(norms.values()))
    bins = np.geomspace(every.min(), every.max() * 1.0001, 60)
    by_lr = lr_series(sweep.completed, sweep.batch_sizes, series=len(norms))
    if by_lr:  # one panel per batch size, its runs coloured by lr
        sizes = sorted({b for b, _, _ in norms})
        fig, axes = new_figure(len(sizes), width=3.4, sharey=True, layout="constrained")
        panel = {b: axes[0][i] for i, b in enumerate(sizes)}
    else:
        fig, axes = new_figure(1, width=8.4)
    for (batch_size, variant, epoch), values in norms.items():
        median = float(np.median(values))
        ax = panel[batch_size] if by_lr else axes[0][0]
        colour = by_lr.colour(variant) if by_lr else colours[batch_size]
        label = (
            "_nolegend_" if by_lr else f"B={batch_size:g} {variant} ({epoch}, {len(values)} steps), median {median:.3g}"
        )
        ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5, color=colour, label=label)
        ax.axvline(median, color=colour, linestyle="--", linewidth=1)
    title = "per-step update norms, last epoch (dashed: medians)"
    for ax in axes[0]:
        ax.set(xscale="log", xlabel="update norm |theta_{t+1} - theta_t| (log)", ylabel="density", title=title)
    if by_lr:
        for b, ax in panel.items():
            ax.set_title(f"B={b:g}: {title}" if len(panel) == 1 else f"B={b:g} (dashed: medians)")
        by_lr.colourbar(fig, axes[0].tolist())
    else:
        legend(axes[0][0], below=True, ncols=1)
    return to_png(fig)


def update_norms_section(sweep: Sweep) -> Section | None:
    epochs = completed_epochs(sweep)
    if not has_column(epochs, "epoch_distance"):
        return None
    epochs = epochs[epochs.epoch > 0]
    colours, styles = batch_colours(sweep.batch_sizes), variant_styles(epochs)
    curves = summarize(epochs, ["variant", "batch_size", "epoch"], ["update_norm_median", "epoch_distance"])
    ratio = distance_ratio(curves)
    pairs = curves.groupby(["variant", "batch_size"])
    by_lr = lr_series(sweep.completed, sweep.batch_sizes, series=pairs.ngroups)
    fig, axes = new_figure(3, layout="constrained" if by_lr else None)
    for ax in axes[0]:
        log_scale(ax)
    for (variant, batch_size), c in pairs:
        label = "_nolegend_" if by_lr else curve_label(batch_size, variant, len(styles) > 1)
        colour = by_lr.colour(variant) if by_lr else colours[batch_size]
        style = by_lr.linestyle(batch_size) if by_lr else styles[variant]
        marker = by_lr.marker(batch_size) if by_lr else "o"
        for ax, column in zip(axes[0][:2], ["update_norm_median", "epoch_distance"], strict=True):
            band(ax, c.epoch, c, column, colour, label, style, marker=marker)
        r = ratio[(ratio.variant == variant) & (ratio.batch_size == batch_size)]
        axes[0][2].plot(r.epoch, r.ratio, color=colour, linestyle=style, marker=marker, markersize=3, label=label)
    if by_lr:
        by_lr.colourbar(fig, axes[0].tolist())
        by_lr.batch_legend(fig, marker=True)
    axes[0][0].set(xlabel="epoch", ylabel="median |theta_{t+1} - theta_t| (log)", title="median step norm per epoch")
    axes[0][1].set(xlabel="epoch", ylabel="|theta_end - theta_start| (log)", title="epoch distance")
    axes[0][2].set(xlabel="epoch", ylabel="ratio (log)", title=f"epoch distance / that of B={min(sweep.batch_sizes):g}")
    if not by_lr:
        legend(axes[0][-1])
    figures = [
        Figure(
            "update_norms",
            "Per epoch: the median update norm of one optimizer step, the distance "
            "travelled over the epoch, and that distance relative to the smallest batch size "
            "(means over seeds; bands: 95% intervals).",
            to_png(fig),
        )
    ]
    if histograms := step_norm_histograms(sweep, colours):
        figures.append(
            Figure(
                "update_norm_histograms",
                "Distribution of the per-step update norms of the last "
                "epoch, one run (smallest seed) per batch size; dashed lines: medians.",
                histograms,
            )
        )
    last = epochs[epochs.epoch == epochs.groupby("run").epoch.transform("max")]
    table = summarize(last, ["variant", "batch_size"], ["update_norm_median", "epoch_distance", "distance_from_init"])
    return Section(
        "Update norms and distance travelled",
        [],
        [Table("update_norms", "Last epoch, per batch size.", table)],
        figures,
    )


def gradsum_protocol(settings: dict) -> str:
    """One line that says which reading of the experiment a fit.json regime measured."""
    reduction = settings.get("reduction", "?")
    if settings.get("update", False):
        return f"SGD steps taken from the regime weights, {reduction} loss (the source's protocol)"
    control = f"frozen weights, {reduction} loss: an analytic control"
    if settings.get("common_samples", False):
        return control + " (common samples: every B sums the same per-sample gradients, k follows by algebra)"
    return control


def gradsum_figure(run, summary: pd.DataFrame, fit: dict) -> bytes:
    """Left: mean norm of the gradient sum (bars: std over trials) with its fit B^k, the single sum-reduced batch,
    and, for frozen weights only, the noise model's prediction against the measured rms. Right: the source's
    normalized std."""
    fig, axes = new_figure(2, width=5.2)
    left, right = axes[0]
    for i, regime in enumerate(sorted(summary.regime.unique())):
        s = summary[summary.regime == regime].sort_values("batch_size")
        f = fit.get(str(regime), {})
        k, (lo, hi) = f.get("k", np.nan), f.get("ci95", [np.nan, np.nan])
        colour = f"C{i}"
        left.errorbar(
            s.batch_size,
            s["mean"],
            yerr=s["std"],
            fmt="o",
            color=colour,
            capsize=2,
            markersize=3,
            label=f"epoch {regime}, sum of the n_B gradients: k = {k:.3f} [{lo:.3f}, {hi:.3f}]",
        )
        if "intercept" in f:
            left.plot(s.batch_size, np.exp(f["intercept"]) * s.batch_size**k, color=colour, linewidth=1)
        if has_column(s, "single_batch_mean"):
            single = f.get("single_batch", {})
            sk, (slo, shi) = single.get("k", np.nan), single.get("ci95", [np.nan, np.nan])
            left.plot(
                s.batch_size,
                s.single_batch_mean,
                "s:",
                color=colour,
                markerfacecolor="none",
                markersize=4,
                label=f"epoch {regime}, one sum-reduced batch of B: k = {sk:.3f} [{slo:.3f}, {shi:.3f}]",
            )
        if not f.get("settings", {}).get("update", True) and has_column(s, "predicted"):
            left.plot(s.batch_size, s["rms"], "x", color=colour, label=f"epoch {regime}, rms (frozen)")
            left.plot(
                s.batch_size,
                s["predicted"],
                "--",
                color=colour,
                linewidth=1,
                label=f"epoch {regime}, noise model, compare with the rms",
            )
        right.plot(s.batch_size, normalized_std(s), "o-", color=colour, markersize=3, label=f"epoch {regime}")
    b = np.array(sorted(summary.batch_size.unique()), float)
    first = summary[summary.batch_size == b[0]]["mean"].mean()
    left.plot(b, first * np.sqrt(b / b[0]), "k--", linewidth=1, label="sqrt(B) guide")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="batch size B (log)",
        ylabel="norm (log)",
        title="gradient-sum norm vs B (k: 95% bootstrap interval)",
    )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="batch size B (log)",
        ylabel="std_B * mean_1024 / mean_B (log)",
        title="normalized std (the source's)",
    )
    legend(left, below=True, fontsize=6, ncols=1)
    legend(right, below=True, ncols=1)
    return to_png(fig)


def gradsum_section(sweep: Sweep) -> Section | None:
    found = read_gradsum(sweep)
    if not found:
        return None
    figures, fits, rows, text = [], [], [], []
    for run, summary, fit in found[:4]:
        for regime in sorted(summary.regime.unique()):
            f = fit.get(str(regime), {})
            settings = f.get("settings", {})
            frozen = not settings.get("update", True)
            single = f.get("single_batch", {})
            low, high = f.get("ci95", [np.nan, np.nan])
            single_low, single_high = single.get("ci95", [np.nan, np.nan])
            fits.append(
                {
                    "run": run.run,
                    "batch_size": run.batch_size,
                    "seed": run.seed,
                    "regime": regime,
                    "protocol": gradsum_protocol(settings),
                    "trials": f.get("n_trials", settings.get("trials")),
                    "k_mean": f.get("k", np.nan),
                    "k_ci_low": low,
                    "k_ci_high": high,
                    "single_batch_k_mean": single.get("k", np.nan),
                    "single_batch_k_ci_low": single_low,
                    "single_batch_k_ci_high": single_high,
                    "noise_model_k": f.get("predicted_k", np.nan) if frozen else np.nan,
                }
            )
            s = summary[summary.regime == regime].sort_values("batch_size")
            columns = ["batch_size", "steps", "mean", "std", "std_norm", "rms", "single_batch_mean", "single_batch_rms"]
            shown = s.assign(std_norm=normalized_std(s))[[c for c in columns if c in s or c == "std_norm"]]
            if frozen and has_column(s, "predicted"):  # the noise model holds only at frozen weights; it predicts rms
                shown = shown.assign(
                    predicted_rms=s["predicted"], predicted_single_batch_rms=s.get("predicted_single_batch")
                )
            rows.append(pd.concat([pd.DataFrame({"run": run.run, "regime": regime}, index=shown.index), shown], axis=1))
        figures.append(
            Figure(
                f"gradsum_run_{run.run}",
                f"Run {run.run} (trained with B={run.batch_size:g}, seed {run.seed}). Left: mean norm of the sum of "
                "the n_B = 1024/B batch gradients (bars: std over trials) with its log-log fit B^k, the norm of one "
                "sum-reduced batch of B (squares) and a sqrt(B) guide; for frozen weights only, the noise model's "
                "prediction (dashed) against the measured rms (x). Right: the std rescaled as the source does, "
                "std_B * mean_1024 / mean_B.",
                gradsum_figure(run, summary, fit),
            )
        )
    text.append(
        "k is the exponent of mean norm ~ B^k (log-log least squares over the B grid); its interval is a 95% "
        "percentile bootstrap over trials. The single-batch column is the gradient of ONE batch of B samples with "
        "sum reduction at the regime weights, the reading under which the norm grows like sqrt(B) while gradient "
        "noise dominates. The noise model (|G|^2, tr Sigma) is shown only for frozen weights, where it predicts "
        "the rms exactly; along SGD steps it does not apply."
    )
    tables = [
        Table(
            "gradsum_fit",
            "Measured exponent k of mean norm ~ B^k (95% bootstrap interval over trials), the same "
            "for one sum-reduced batch, and the noise model's k (frozen control only).",
            pd.DataFrame(fits),
        ),
        Table(
            "gradsum_summary",
            "Per regime and B: the norms over trials, the source's normalized std, the single "
            "sum-reduced batch, and (frozen control only) the noise model's rms.",
            pd.concat(rows),
        ),
    ]
    return Section("Gradient-sum norm against batch size", text, tables, figures)


def noise_scale_section(sweep: Sweep) -> Section | None:
    epochs = completed_epochs(sweep)
    if not has_column(epochs, "noise_scale"):
        return None
    epochs = epochs[epochs.noise_scale.notna()]
    colours, styles = batch_colours(sweep.batch_sizes), variant_styles(epochs)
    curves = summarize(epochs, ["variant", "batch_size", "epoch"], ["noise_scale"])
    pairs = curves.groupby(["variant", "batch_size"])
    by_lr = lr_series(sweep.completed, sweep.batch_sizes, series=pairs.ngroups)
    fig, axes = new_figure(1, width=7, layout="constrained" if by_lr else None)
    ax = axes[0][0]
    log_scale(ax)
    for (variant, batch_size), c in pairs:
        if by_lr:
            band(ax, c.epoch, c, "noise_scale", by_lr.colour(variant), "_nolegend_", by_lr.linestyle(batch_size),
                 by_lr.marker(batch_size))  # fmt: skip
        else:
            label = f"B_simple, run with {curve_label(batch_size, variant, len(styles) > 1)}"
            band(ax, c.epoch, c, "noise_scale", colours[batch_size], label, styles[variant], "o")
    effective = sweep.completed.groupby("batch_size").effective_batch_size.first()
    for batch_size, b_eff in effective.items():
        ax.axhline(b_eff, color="grey" if by_lr else colours[batch_size], linestyle=":", linewidth=1.2)
        ax.annotate(  # right of the axes, where no curve and no title is
            f"B={b_eff:g}",
            (1.01, b_eff),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="dimgrey" if by_lr else colours[batch_size],
            ha="left",
            va="center",
            annotation_clip=False,
        )
    ax.plot([], [], color="grey", linestyle=":", linewidth=1.2, label="the sweep's batch sizes B (labelled right)")
    ax.set(xlabel="epoch", ylabel="B_simple = tr(Sigma)/|G|^2 (log)", title="gradient noise scale B_simple")
    if by_lr:
        by_lr.colourbar(fig, [ax], label="learning rate of the run (log)")
        by_lr.batch_legend(fig, marker=True, extra=ax.get_legend_handles_labels()[0])
    else:
        legend(ax, below=True)
    last = epochs[epochs.epoch == epochs.groupby("run").epoch.transform("max")]
    final = float(np.median(last.noise_scale))
    below = [f"{b:g}" for b in effective if b < final]
    above = [f"{b:g}" for b in effective if b >= final]
    text = [
        f"Median noise scale at the last epoch: {final:.4g}. Batch sizes below it (samples well used, a larger "
        f"batch would save steps): {', '.join(below) or 'none'}; at or above it (a larger batch mostly wastes "
        f"samples): {', '.join(above) or 'none'}."
    ]
    figure = Figure(
        "noise_scale",
        "The gradient noise scale B_simple measured during training (McCandlish et al. "
        "2018), one curve per run's batch size"
        + (" (line style and marker) and lr (colour bar)" if by_lr else "")
        + ", against the batch sizes of this sweep (dotted, labelled at the right).",
        to_png(fig),
    )
    return Section("Gradient noise scale", text, [], [figure])
