"""The Budgets section: each batch size read at equal epochs, equal optimizer steps and equal training time
(the reading rules are in bsstudy/analysis/report/at_budget.py)."""

from __future__ import annotations

from bsstudy.analysis.report.at_budget import CLOCKS, Comparison, budget_table, comparisons, timing_noise
from bsstudy.analysis.report.document import Figure, Section, Table
from bsstudy.analysis.report.figures import (
    LINESTYLES,
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


def best_line(c: Comparison) -> str:
    """ "equal steps (1,770 steps): B=64 has the highest mean test accuracy (0.845)"."""
    means = c.readings.groupby("batch_size").test_acc.mean()
    best = means.idxmax()
    shown = ", ".join(f"B={b:g}" for b in c.batch_sizes)
    return f"{c.budget} ({c.label}; {shown}): B={best:g} has the highest mean test accuracy ({means[best]:.3f})"


def not_comparable_line(c: Comparison) -> str:
    return f"Not comparable at {c.budget} ({c.label}): " + "; ".join(
        f"B={b:g}: {why}" for b, why in sorted(c.excluded.items())
    )


def budget_dependence(found: list[Comparison]) -> list[str]:
    """A sentence per set of batch sizes compared at several budgets whose best batch size (by mean test
    accuracy) differs between the budgets."""
    by_set: dict[tuple, dict[str, float]] = {}
    for c in found:
        if len(c.batch_sizes) >= 2:
            best = c.readings.groupby("batch_size").test_acc.mean().idxmax()
            by_set.setdefault(tuple(c.batch_sizes), {}).setdefault(f"{c.budget} ({c.label})", best)
    return [
        f"Among B={', '.join(f'{b:g}' for b in sizes)} the best batch size depends on the budget: "
        + ", ".join(f"B={b:g} at {budget}" for budget, b in bests.items())
        + " (by mean; see the intervals in the table)."
        for sizes, bests in by_set.items()
        if len(set(bests.values())) > 1
    ]


def budget_figure(found: list[Comparison], batch_sizes: list[int], runs=None) -> Figure:
    """Per budget (columns): test accuracy and train loss against B at each nested budget. Variants that are lrs
    (more than a legend holds): one colour per lr (colour bar), the nested budgets of one lr by line style."""
    colours = batch_colours(batch_sizes)
    budgets = [b for b in CLOCKS if any(c.budget == b for c in found)]
    by_lr = lr_series(runs) if runs is not None else None
    several = len({c.variant for c in found}) > 1
    fig, axes = new_figure(len(budgets), 2, layout="constrained" if by_lr else None)
    for col, budget in enumerate(budgets):
        log_scale(axes[1][col])
        own = [c for c in found if c.budget == budget]
        nested: dict[str, int] = {}  # per variant, the comparisons drawn so far (the nested budgets)
        for c in (c for c in own if len(c.batch_sizes) >= 2):
            i = nested[c.variant] = nested.get(c.variant, -1) + 1
            table = summarize(c.readings, ["batch_size"], ["test_acc", "train_loss"])
            for row, metric in enumerate(["test_acc", "train_loss"]):
                ax = axes[row][col]
                if by_lr:
                    x = table.batch_size * by_lr.offset(c.variant)
                    errorbar(ax, x, table, metric, by_lr.colour(c.variant), "_nolegend_", linestyle=LINESTYLES[i % 4])
                    continue
                label = f"{c.label} ({c.variant})" if several and c.variant else c.label
                errorbar(ax, table.batch_size, table, metric, "black", label, linestyle=LINESTYLES[i % 4])
                for b, m in zip(table.batch_size, table[f"{metric}_mean"], strict=True):
                    ax.plot([b], [m], "o", color=colours[int(b)], markersize=6, zorder=3)
        drawn = {b for c in own if len(c.batch_sizes) >= 2 for b in c.batch_sizes}
        never = sorted(set(batch_sizes) - drawn)
        for row in range(2):
            ax = axes[row][col]
            for b in never:
                ax.text(b, 0.95, "x", color="red", ha="center", va="center", transform=ax.get_xaxis_transform())
            if never:
                ax.plot([], [], "x", color="red", label="not comparable (x)")
            batch_axis(ax, batch_sizes)
            ax.set(xlabel="batch size B (log)", title=budget)
        handles, labels = axes[0][col].get_legend_handles_labels()  # the same lines in both rows: one legend
        legend(axes[1][col], below=True, handles=handles, labels=labels, ncols=1, bbox_to_anchor=(0.5, -0.25))
        axes[0][col].set(ylabel="test accuracy")
        axes[1][col].set(ylabel="train loss (log)")
    if by_lr:
        by_lr.colourbar(fig, axes.ravel().tolist())
    lines = (
        "one colour per lr (colour bar), its points moved slightly sideways by lr; solid: the budget of all batch "
        "sizes, dashed, dotted: the nested budgets without the batch size that set the previous one"
        if by_lr
        else "one line per budget (legend)"
    )
    return Figure(
        "budgets",
        "Test accuracy and train loss against batch size at equal epochs, equal optimizer steps and equal training "
        f"time (columns); {lines}, mean and 95% interval over seeds; red x: a batch size not "
        "comparable at any of that column's budgets.",
        to_png(fig),
    )


def budgets_section(sweep: Sweep) -> Section | None:
    """The Budgets section: the budget table and figure, which batch size is best at each budget and what
    could not be compared."""
    if len(sweep.batch_sizes) < 2:
        return None
    found = comparisons(sweep)
    if not found:
        return None
    has_val = any("val_acc" in c.readings and c.readings.val_acc.notna().any() for c in found)
    text = [
        "A comparison of batch sizes holds at one budget. Equal epochs: every run read at the last epoch all "
        "compared runs completed (the usual 'final' numbers). Equal steps, equal training time: the fewest "
        "optimizer steps (training seconds, evaluation excluded) any compared run reached; each run read at exactly "
        "that budget, interpolated between the two evaluations that bracket it (linearly in log steps, or in time; "
        "evaluations are at epoch ends only). A batch size whose bracket starts at the untrained evaluation is not "
        "comparable; the comparison is then repeated without the batch size that set the budget.",
        "Accuracy shown: test (reported, never selected on)"
        + ("; val_acc is the validation split's, for reference." if has_val else "; the sweep has no validation split"),
        *(best_line(c) for c in found if c.readings.batch_size.nunique() >= 2),
        *(not_comparable_line(c) for c in found if c.excluded),
    ]
    text += budget_dependence(found)
    noise = timing_noise(sweep, sweep.completed) if any(c.budget == "equal training time" for c in found) else ""
    text += [f"Equal training time: timings noisy ({noise}); the findings call it not comparable."] if noise else []
    table = Table(
        "budgets",
        "Per budget and batch size: test accuracy"
        + (", validation accuracy" if has_val else "")
        + " and train loss at the budget (mean [95% interval] over n seeds), and where the runs were read "
        "(mean read_epoch, read_steps, read_time_s).",
        budget_table(found),
    )
    figure = budget_figure(found, sweep.batch_sizes, sweep.completed)
    return Section("Budgets: equal epochs, equal steps, equal training time", text, [table], [figure])
