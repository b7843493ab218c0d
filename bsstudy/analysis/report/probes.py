"""The sections of a sweep's probes, found from the probes its runs were configured with.

Each probe class names its report section (`Probe.report_section`, "module:function"); a probe that names
none gets the generic section below: its summary numbers (summary.json probes.<name>) per batch size, mean
[95% interval] over seeds, its `epoch_columns` against epochs, and the files it wrote. So a new probe appears
in the report without any edit here (bsstudy/train/probe.py).
"""

from __future__ import annotations

import importlib

from bsstudy.analysis.report.document import Figure, Section, Table
from bsstudy.analysis.report.figures import (
    band,
    batch_colours,
    curve_label,
    legend,
    lr_series,
    new_figure,
    to_png,
    variant_styles,
)
from bsstudy.analysis.report.runs import Sweep, completed_epochs, probe_numbers
from bsstudy.analysis.report.uncertainty import summarize

IDENTITY = ["run", "variant", "batch_size", "seed"]


def probe_class(target: str):
    """The Probe subclass a `_target_` names (or the one defined in a module that `target` names), or None when
    it cannot be imported (a probe since removed, a package not installed here)."""
    from bsstudy.train.probe import Probe

    def is_probe(c) -> bool:
        return isinstance(c, type) and issubclass(c, Probe)

    module, _, name = target.rpartition(".")
    try:  # a class path: bsstudy.probes.noise_scale.NoiseScale
        found = getattr(importlib.import_module(module), name, None)
        if is_probe(found):
            return found
    except ImportError:
        pass
    try:  # a module path: bsstudy.probes.noise_scale, the one Probe subclass defined there
        found = importlib.import_module(target)
    except ImportError:
        return None
    own = [c for c in vars(found).values() if is_probe(c) and c.__module__ == found.__name__]
    return own[0] if len(own) == 1 else None


def custom_section(spec: str):
    """The section function a probe names ("module:function"), or None when it cannot be found."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def probe_sections(sweep: Sweep) -> list[Section]:
    """One section per probe in the sweep, in the probes' `report_order` (probes that share a section, sharpness
    and hessian, share it once). A probe whose class or section cannot be found gets the generic section, and
    the report's problems list says why."""
    probes = {name: probe_class(target) for name, target in sweep.probe_targets.items()}
    order = sorted(probes, key=lambda name: (getattr(probes[name], "report_order", 100), name))
    sections, shown = [], set()
    for name in order:
        probe, target = probes[name], sweep.probe_targets[name]
        spec = getattr(probe, "report_section", None)
        if probe is None:
            sweep.problem("", f"probes.{name}", f"its class {target} cannot be imported here: generic section")
        if spec is not None and spec in shown:
            continue
        shown.add(spec or name)
        function = custom_section(spec) if spec else None
        if spec and function is None:
            sweep.problem("", f"probes.{name}", f"its report_section {spec} cannot be found: generic section")
        section = function(sweep) if function else generic_section(sweep, name, probe)
        if section is not None:
            sections.append(section)
    return sections


def first_line(probe) -> str:
    doc = (getattr(probe, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def summary_table(sweep: Sweep, name: str) -> Table | None:
    numbers = probe_numbers(sweep, name)
    columns = [c for c in numbers.columns if c not in IDENTITY]
    if numbers.empty or not columns:
        return None
    table = summarize(numbers, ["variant", "batch_size"], columns)
    caption = f"summary.json probes.{name}: mean [95% interval] over seeds per batch size."
    return Table(f"{name}_summary", caption, table)


def epoch_figure(sweep: Sweep, name: str, columns: list[str]) -> Figure | None:
    epochs = completed_epochs(sweep)
    columns = [c for c in columns if c in epochs and epochs[c].notna().any()]
    if not columns:
        return None
    colours, styles = batch_colours(sweep.batch_sizes), variant_styles(epochs)
    curves = summarize(epochs, ["variant", "batch_size", "epoch"], columns)
    pairs = curves.groupby(["variant", "batch_size"])
    by_lr = lr_series(sweep.completed, sweep.batch_sizes, series=pairs.ngroups)
    fig, axes = new_figure(len(columns), layout="constrained" if by_lr else None)
    for ax, column in zip(axes[0], columns, strict=True):
        for (variant, batch_size), c in pairs:
            if by_lr:
                band(ax, c.epoch, c, column, by_lr.colour(variant), "_nolegend_", by_lr.linestyle(batch_size))
            else:
                label = curve_label(batch_size, variant, len(styles) > 1)
                band(ax, c.epoch, c, column, colours[batch_size], label, styles[variant])
        ax.set(xlabel="epoch", ylabel=column, title=column)
    if by_lr:
        by_lr.colourbar(fig, axes[0].tolist())
        by_lr.batch_legend(fig)
    else:
        legend(axes[0][-1], fontsize=7)
    caption = f"Probe {name}: its metrics.csv columns per epoch, mean and 95% band over seeds per batch size."
    return Figure(f"{name}_epochs", caption, to_png(fig))


def files_line(sweep: Sweep, name: str) -> str:
    """The files the probe wrote, as found in the first run that has its folder."""
    for run in sweep.runs.run:
        folder = sweep.probe_dir(run, name)
        if folder.is_dir():
            files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
            return f"Files in <run>/probes/{name}/: {', '.join(files) or 'none'}."
    return f"No run has a probes/{name}/ folder."


def generic_section(sweep: Sweep, name: str, probe) -> Section | None:
    table = summary_table(sweep, name)
    figure = epoch_figure(sweep, name, list(getattr(probe, "epoch_columns", ())))
    if table is None and figure is None:
        return None
    known = first_line(probe) if probe is not None else "its class cannot be imported here"
    text = [f"Probe `{name}`: {known}", files_line(sweep, name)]
    return Section(f"Probe: {name}", text, [table] if table is not None else [], [figure] if figure else [])
