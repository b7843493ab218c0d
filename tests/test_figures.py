"""Figures a reader of a paper can read (#25): few legend entries per panel, legends outside the data, an lr colour
bar for many lr series, every labelled line in a legend, accuracy axes fitted to the epochs after epoch 0, B_simple
marked on the batch-size axis, and wide tables that scroll in report.html. Checked on the matplotlib figures the
sections draw (to_png is wrapped to keep them), from a hand-made sweep of 9 lrs, 4 batch sizes and 3 seeds."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg

from bsstudy.analysis.report import budgets, cost, document, dynamics, figures, probes, training, tuned
from bsstudy.analysis.report.runs import read_sweep

LRS = [0.003125 * 2**i for i in range(9)]  # 0.003125 ... 0.8
GRID = {16: LRS[0:5], 64: LRS[2:7], 256: LRS[4:8], 1024: LRS[6:9]}  # 17 (lr, B) series, as in the tuned study
SEEDS = [0, 1, 2]
SECTIONS = [training, cost, dynamics, budgets, tuned, probes]


def accuracy(b: int, lr: float, seed: int, epoch: int) -> float:
    """0.1 at epoch 0, then rising towards ~0.85, a little better at an lr near 0.02 B / 16 (the linear rule)."""
    if epoch == 0:
        return 0.1
    mistuned = abs(math.log2(lr / (0.05 * b / 64)))
    return 0.86 - 0.004 * mistuned - 0.02 / epoch + 0.002 * seed - 0.001 * math.log2(b)


def write_lr_run(path, b: int, lr: float, seed: int, epochs: int = 4) -> None:
    (path / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "data": {"batch_size": b, "name": "synthetic", "val_size": 512},
              "optim": {"lr": lr, "lr_scaling": "none", "accumulate": 1, "name": "sgd"}}  # fmt: skip
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    steps = 4096 // b
    rows = []
    for e in range(epochs + 1):
        a = accuracy(b, lr, seed, e)
        rows.append({"epoch": e, "optimizer_steps": e * steps, "samples_seen": e * 4096, "lr": lr,
                     "train_acc": a + 0.01, "test_acc": a, "gap": 0.01, "val_acc": a + 0.001, "val_loss": 1 - a,
                     "train_loss": 1 - a, "test_loss": 1 - a, "train_time_s": e * (1 + 0.1 * steps / 16),
                     "noise_scale": np.nan if e == 0 else 40.0 * e * (1 + seed / 10) * lr * 10,
                     "update_norm_median": lr * (1 + e), "epoch_distance": lr * steps**0.5 * (1 + seed / 10),
                     "distance_from_init": lr * e, "weight_norm": 10 + lr * e})  # fmt: skip
    pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    (path / "probes" / "update_norms").mkdir(parents=True)
    norms = lr * np.exp(np.random.default_rng([b, seed]).normal(0, 0.3, steps))
    np.savez(path / "probes" / "update_norms" / f"epoch_{epochs:03d}.npz", total=norms)
    summary = {"status": "completed", "batch_size": b, "seed": seed, "lr": lr, "lr_scaling": "none", "accumulate": 1,
               "final": rows[-1], "epochs_completed": epochs, "probes": {"noise_scale": {}}}  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("lr_sweep")
    job = 0
    for b, lrs in GRID.items():
        for lr in lrs:
            for seed in SEEDS:
                write_lr_run(root / str(job), b, lr, seed)
                job += 1
    return read_sweep(root)


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the sections hand to to_png, by the order they were drawn."""
    kept = []

    def keep(fig, *args, **kwargs):
        kept.append(fig)
        return figures.to_png(fig, *args, **kwargs)

    for module in SECTIONS:
        monkeypatch.setattr(module, "to_png", keep)
    return kept


def legends_of(fig) -> list:
    return [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)


def legend_texts(fig) -> set[str]:
    return {t.get_text() for legend in legends_of(fig) for t in legend.get_texts()}


def colour_bars(fig) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if "learning rate" in ax.get_ylabel()]


def check_readable(fig) -> None:
    """At most MAX_LEGEND_ENTRIES entries per legend, no legend over an axes' data area, every labelled line
    (and every other labelled artist) in a legend."""
    renderer = FigureCanvasAgg(fig).get_renderer()  # to_png closed it: a canvas of its own to measure on
    fig.draw(renderer)
    texts = legend_texts(fig)
    plotting = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for legend in legends_of(fig):
        assert len(legend.get_texts()) <= figures.MAX_LEGEND_ENTRIES
        box = legend.get_window_extent(renderer)
        for ax in plotting:
            assert not box.overlaps(ax.get_window_extent(renderer)), f"legend over {ax.get_title()!r}"
    for ax in plotting:
        labelled = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
        labelled += ax.get_legend_handles_labels()[1]
        assert set(labelled) <= texts, set(labelled) - texts


@pytest.mark.slow  # builds whole reports (several seconds)
def test_nine_lr_series_get_a_colour_bar_and_a_short_legend_outside_the_axes(lr_sweep, drawn):
    assert len(figures.variant_lrs(lr_sweep.completed)) == 9
    training.curves_section(lr_sweep)
    training.cost_curves_section(lr_sweep)
    cost.time_to_accuracy_section(lr_sweep, 0.8)
    dynamics.noise_scale_section(lr_sweep)
    budgets.budgets_section(lr_sweep)
    dynamics.update_norms_section(lr_sweep)
    probes.epoch_figure(lr_sweep, "weight_norm", ["weight_norm"])
    assert len(drawn) == 9  # generalization_curves, final_vs_batch_size, accuracy_vs_time_and_steps,
    # time_to_accuracy, noise_scale, budgets, update_norms, update_norm_histograms, weight_norm_epochs
    for fig in drawn:
        check_readable(fig)
        assert colour_bars(fig), "no lr colour bar"
        bar = next(ax for ax in fig.axes if "learning rate" in ax.get_ylabel())
        assert [float(t.get_text()) for t in bar.get_yticklabels()] == pytest.approx(LRS)
    lr_colours = {tuple(line.get_color()) for line in drawn[1].axes[0].get_lines() if len(line.get_xdata())}
    assert len(lr_colours) == 9  # final_vs_batch_size: one colour per lr, not black lines with recycled styles


def test_few_series_keep_their_batch_size_legend_outside_the_axes(lr_sweep, drawn):
    few = lr_sweep.completed[lr_sweep.completed.lr == LRS[4]]  # one lr: three batch sizes, no variants
    sweep = read_sweep(lr_sweep.path)
    sweep.runs = sweep.runs[sweep.runs.run.isin(few.run)]
    sweep.epochs = sweep.epochs[sweep.epochs.run.isin(few.run)]
    training.curves_section(sweep)
    curves = drawn[0]
    check_readable(curves)
    assert not colour_bars(curves)
    assert legend_texts(curves) == {"B=16", "B=64", "B=256"}


def test_accuracy_axes_are_fitted_to_the_epochs_after_epoch_0(lr_sweep, drawn):
    training.curves_section(lr_sweep)
    test_acc, train_acc, gap = drawn[0].axes[:3]
    means = lr_sweep.epochs[lr_sweep.epochs.epoch > 0].groupby(["variant", "batch_size", "epoch"]).mean(True)
    for ax, column in ((test_acc, "test_acc"), (train_acc, "train_acc")):
        low, high = ax.get_ylim()
        assert low > 0.1  # epoch 0's chance accuracy is below the axis
        assert low < means[column].min() and high > means[column].max()  # every mean after epoch 0 is inside
        assert high - low < 2 * (means[column].max() - means[column].min())  # and fills the panel
    assert gap.get_ylim()[0] <= 0.01  # the gap keeps its epoch 0


def test_b_simple_is_marked_at_its_batch_size_and_every_reference_line_has_a_legend_entry(drawn):
    from test_tuned import BATCH_SIZES, constructed_runs, noisy_steps

    runs = constructed_runs(lambda b: noisy_steps(b, 3, 0.05, 1))
    runs["b_simple"] = runs.batch_size.map({16: 120.0, 64: 180.0, 256: 260.0, 1024: 300.0, 4096: 320.0})
    runs["val_acc_target"] = 0.85
    table = tuned.per_batch_table(runs, 0)
    study = tuned.TunedStudy(runs, table, tuned.critical_batch(tuned.selected_runs(runs, table)), [], 0.85)
    tuned.steps_figure(study)
    fig = drawn[0]
    check_readable(fig)
    ax = fig.axes[0]
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x" and len(line.get_xdata())]
    assert sorted(float(line.get_xdata()[0]) for line in crosses) == pytest.approx([120, 180, 260, 300, 320])
    for line in crosses:  # on the B axis (axes-fraction height), not at some batch size's steps
        assert line.get_transform() == ax.get_xaxis_transform() and 0 < line.get_ydata()[0] < 0.5
    texts = legend_texts(fig)
    assert any(t.startswith("B_crit=") for t in texts) and any(t.startswith("median B_simple") for t in texts)
    assert len(BATCH_SIZES) == len(crosses)


def test_html_tables_scroll_sideways_inside_their_own_box():
    wide = pd.DataFrame({f"column_{i}": [1.5] for i in range(40)})
    page = document.render_html("t", [], [document.Section("s", [], [document.Table("wide", "", wide)])])
    assert '<div class="table-scroll"><table>' in page and page.count("<table>") == page.count('table-scroll">')
    assert ".table-scroll { overflow-x: auto;" in page


def test_a_colour_bar_keys_the_lr_on_a_log_scale():
    series = figures.LrSeries({"a": 0.01, "b": 0.1, "c": 1.0})
    assert isinstance(series.norm, matplotlib.colors.LogNorm)
    assert series.norm(0.1) == pytest.approx(0.5)
    assert series.offset("a") < 1 < series.offset("c")
