"""What every figure shares: one colour per batch size (the same in all figures of a report), log-scale
batch-size axes with the sweep's batch sizes as ticks, seed bands, and PNG bytes out."""

from __future__ import annotations

import io
import weakref

import matplotlib

matplotlib.use("Agg")  # no display: the report is drawn into files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator  # noqa: E402

DPI = 110
BANDED = weakref.WeakSet()  # axes with seed bands: their limits follow the lines, the bands may run off the edge
LINESTYLES = ["-", "--", ":", "-."]
plt.rcParams.update({"figure.dpi": DPI, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9, "legend.fontsize": 8})


def batch_colours(batch_sizes: list[int]) -> dict[int, tuple]:
    """A colour per batch size, from small (dark blue) to large (yellow) on the viridis scale, by rank:
    the same mapping is passed to every figure of a report."""
    ordered = sorted(set(int(b) for b in batch_sizes))
    positions = np.linspace(0.0, 0.9, len(ordered)) if len(ordered) > 1 else [0.0]
    return {b: matplotlib.colormaps["viridis"](p) for b, p in zip(ordered, positions, strict=True)}


def hex_colour(colour) -> str:
    return matplotlib.colors.to_hex(colour)


def batch_axis(ax, batch_sizes, axis: str = "x") -> None:
    """Log2 axis with the given batch sizes as tick labels."""
    ticks = sorted(set(int(b) for b in batch_sizes))
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    which = ax.xaxis if axis == "x" else ax.yaxis
    set_scale("log", base=2)
    which.set_major_locator(FixedLocator(ticks))
    which.set_minor_locator(NullLocator())
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    (ax.set_xlim if axis == "x" else ax.set_ylim)(ticks[0] / 1.3, ticks[-1] * 1.3)


def log_scale(ax, axis: str = "y") -> None:
    """Log scale; to_png labels the minor ticks 2 and 5 of axes that span less than two decades."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def label_short_log_axes(ax) -> None:
    """On a log axis spanning less than two decades, ticks and labels at 1, 2 and 5 x 10^k too."""
    for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        batch_ticks = isinstance(axis.get_major_locator(), FixedLocator)  # batch_axis: the sweep's B only
        if axis.get_scale() == "log" and not batch_ticks and low > 0 and np.log10(high / low) < 2:
            axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


def band(ax, x, table, column: str, colour, label: str, linestyle: str = "-", marker: str | None = None) -> None:
    """The mean line of `column` in a `summarize` table and, where the interval is known, its 95% band
    (`<column>_mean`, `_ci_low`, `_ci_high`). The axis limits follow the lines (to_png), so a wide band runs
    off the edge rather than flattening the curves. The intervals of positive quantities (times, steps, losses,
    norms: the ones on log axes) are positive (uncertainty.py), so a log axis holds their whole band; one reaching
    zero (a value of 0 among the seeds) runs off the bottom."""
    mean, low, high = (table[f"{column}_{stat}"] for stat in ("mean", "ci_low", "ci_high"))
    ax.plot(x, mean, color=colour, label=label, linestyle=linestyle, marker=marker, markersize=3)
    low, high = np.asarray(low, float), np.asarray(high, float)
    if np.isfinite(low).any():
        ax.fill_between(
            x, np.maximum(low, 1e-300) if ax.get_yscale() == "log" else low, high, color=colour, alpha=0.2, linewidth=0
        )
        BANDED.add(ax)


def errorbar(ax, x, table, column: str, colour, label: str, marker: str = "o", linestyle: str = "-") -> None:
    """The means of `column` in a `summarize` table as points with 95% error bars where known, joined by a
    line. Set a log y scale before. The intervals of positive quantities are positive (uncertainty.py), so a log
    axis draws every bar whole; only an interval whose lower end is zero or below (a value of 0 among the seeds,
    or a quantity that is not positive) is drawn there without its lower half."""
    x, mean, low, high = (
        np.asarray(v, float) for v in (x, *(table[f"{column}_{s}"] for s in ("mean", "ci_low", "ci_high")))
    )
    unbounded = (ax.get_yscale() == "log") & np.isfinite(low) & (low <= 0)
    yerr = np.vstack([np.where(unbounded, np.nan, mean - low), high - mean])
    yerr = np.where(np.isfinite(yerr) | unbounded, yerr, 0.0)
    ax.errorbar(
        x, mean, yerr=yerr, color=colour, label=label, marker=marker, linestyle=linestyle, capsize=3, markersize=4
    )


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2, **kwargs):
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs)
    return fig, axes


def fit_to_lines(ax) -> None:
    """y limits that show every line with a 5% margin (on a log axis: of the log range), bands cut at the edges."""
    log = ax.get_yscale() == "log"
    y = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()] or [np.array([])])
    y = y[np.isfinite(y) & ((y > 0) if log else True)]
    if not len(y):
        return
    low, high = (np.log10(y.min()), np.log10(y.max())) if log else (y.min(), y.max())
    margin = 0.05 * (high - low) or (0.05 if log else 0.05 * abs(high) or 0.05)
    low, high = low - margin, high + margin
    ax.set_ylim(*((10**low, 10**high) if log else (low, high)))


def widen_flat_axis(ax) -> None:
    """A y range of one value (one point, or all equal) becomes a readable range around it."""
    low, high = ax.get_ylim()
    if ax.get_yscale() == "log" and low > 0 and high / low < 1.01:
        ax.set_ylim(low / 2, high * 2)
    elif ax.get_yscale() != "log" and high - low < 1e-9 * max(abs(low), abs(high), 1e-300):
        ax.set_ylim(low - (0.1 * abs(low) or 1), high + (0.1 * abs(high) or 1))


def to_png(fig, tight: bool = True) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata, so the same data gives the same file);
    tight=False for a figure made with layout="constrained" (e.g. one colour bar shared by its panels)."""
    for ax in fig.axes:
        if ax in BANDED:
            fit_to_lines(ax)
        widen_flat_axis(ax)
        label_short_log_axes(ax)
    if tight:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def curve_label(batch_size, variant: str, several_variants: bool) -> str:
    return f"B={batch_size:g}" + (f" ({variant})" if several_variants and variant else "")


def variant_styles(frame) -> dict[str, str]:
    return {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(sorted(frame.variant.unique()))}
