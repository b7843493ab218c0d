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
    log, x_from = ax.get_yscale() == "log", FIT_Y_FROM_X.get(ax)
    lines = [line for line in ax.get_lines() if len(np.atleast_1d(line.get_ydata()))]
    y = np.concatenate([np.asarray(line.get_ydata(), float) for line in lines] or [np.array([])])
    if x_from is not None and lines:
        x = np.concatenate([np.asarray(line.get_xdata(), float) for line in lines])
        y = y[x >= x_from]
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
    """The figure as PNG bytes (no timestamp in the metadata, so the same data gives the same file), cut to a
    tight bounding box so a legend or label outside the axes is kept; tight=False, or a figure made with
    layout="constrained" (e.g. one colour bar shared by its panels), skips tight_layout."""
    for ax in fig.axes:
        if ax in BANDED or ax in FIT_Y_FROM_X:
            fit_to_lines(ax)
        widen_flat_axis(ax)
        label_short_log_axes(ax)
    if tight and fig.get_layout_engine() is None:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return buffer.getvalue()


def curve_label(batch_size, variant: str, several_variants: bool) -> str:
    return f"B={batch_size:g}" + (f" ({variant})" if several_variants and variant else "")


def variant_styles(frame) -> dict[str, str]:
    return {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(sorted(frame.variant.unique()))}


# --- legends and series many enough to need a colour map --------------------------------------------------

MAX_LEGEND_ENTRIES = 6  # more series than this in a panel: a colour bar (lr_series) instead of legend entries
LR_CMAP = "plasma"  # lr colour map: not viridis, which is the batch sizes'
MARKERS = ["o", "s", "^", "D", "v", "P"]
LR_LINES = "; one line per lr, coloured by the lr (colour bar), its points moved slightly sideways by lr"
FIT_Y_FROM_X = weakref.WeakKeyDictionary()  # axes whose y limits follow only the points at x >= this value


def legend(ax, below: bool = False, handles=None, labels=None, **kwargs):
    """The axes' legend (of `handles` and `labels`, else of its labelled artists) outside the data area, right
    of the axes or below it, so it never covers a curve; nothing when no artist has a label. to_png saves with a
    tight bounding box, so it is never cut off."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if below:
        place = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.18), "ncols": min(len(handles), 3)}
    else:
        place = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)}
    return ax.legend(handles, labels, borderaxespad=0.0, **(place | kwargs))


def fit_y_from(ax, x: float) -> None:
    """Let the y limits follow only the points at x >= `x` (e.g. the epochs after epoch 0): the earlier points
    run off the edge instead of squeezing the range where the curves differ."""
    FIT_Y_FROM_X[ax] = x


def variant_lrs(frame) -> dict[str, float] | None:
    """{variant: lr} when the variants of `frame` (a runs or epochs table with an `lr` column) are lrs: more
    than one variant, each with one lr, no two with the same; else None."""
    if "lr" not in frame or frame.variant.nunique() < 2:
        return None
    lrs = frame.dropna(subset=["lr"]).groupby("variant").lr.unique()
    if len(lrs) != frame.variant.nunique() or any(len(v) != 1 for v in lrs):
        return None
    found = {variant: float(v[0]) for variant, v in lrs.items()}
    return found if len(set(found.values())) == len(found) else None


class LrSeries:
    """Series told apart by their lr: a colour from a sequential map on a log scale of lr, keyed by a colour bar
    (no legend entry per lr); the batch size, where a panel holds several, by line style and marker with one
    legend entry per batch size."""

    def __init__(self, lrs: dict[str, float], batch_sizes=()):
        self.lrs = lrs
        values = sorted(set(lrs.values()))
        low, high = values[0], values[-1]
        if low == high:
            low, high = low / 2, high * 2
        self.norm = matplotlib.colors.LogNorm(low, high)
        self.cmap = matplotlib.colors.ListedColormap(matplotlib.colormaps[LR_CMAP](np.linspace(0.0, 0.85, 256)))
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))

    def colour(self, variant: str):
        return self.cmap(self.norm(self.lrs[variant]))

    def linestyle(self, batch_size) -> str:
        return LINESTYLES[self.batch_sizes.index(int(batch_size)) % len(LINESTYLES)]

    def marker(self, batch_size) -> str:
        return MARKERS[self.batch_sizes.index(int(batch_size)) % len(MARKERS)]

    def offset(self, variant: str) -> float:
        """A factor for the x positions (batch sizes) of one lr's points: the points of one B spread sideways by
        lr, a quarter of an octave in all, so that their error bars do not hide one another."""
        values = sorted(set(self.lrs.values()))
        rank = values.index(self.lrs[variant]) / (len(values) - 1) if len(values) > 1 else 0.5
        return float(2 ** (0.25 * (rank - 0.5)))

    def batch_legend(self, fig, marker: bool = False, extra=()):
        """A legend below the figure with one grey line per batch size in its line style (and marker), then the
        `extra` handles (e.g. reference lines)."""
        handles = [
            matplotlib.lines.Line2D([], [], color="grey", linestyle=self.linestyle(b),
                                    marker=self.marker(b) if marker else None, markersize=3, label=f"B={b:g}")
            for b in self.batch_sizes
        ]  # fmt: skip
        handles += list(extra)
        return fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))

    def colourbar(self, fig, axes, label: str = "learning rate (log)"):
        mappable = matplotlib.cm.ScalarMappable(norm=self.norm, cmap=self.cmap)
        bar = fig.colorbar(mappable, ax=axes, label=label, pad=0.02, fraction=0.05, aspect=30)
        values = sorted(set(self.lrs.values()))
        bar.set_ticks(values, labels=[f"{v:g}" for v in values])
        bar.minorticks_off()
        return bar


def lr_series(frame, batch_sizes=(), series: int | None = None) -> LrSeries | None:
    """LrSeries when the variants are lrs and the series (`series`, else the variants) are more than a legend
    holds (MAX_LEGEND_ENTRIES); else None (colour by batch size, a legend entry per series)."""
    lrs = variant_lrs(frame)
    count = len(lrs or {}) if series is None else series
    return LrSeries(lrs, batch_sizes) if lrs and count > MAX_LEGEND_ENTRIES else None
