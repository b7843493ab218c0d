"""Publish a sweep's report into the repository:
`python -m bsstudy.analysis.report <sweep> --publish docs/results/<study>`
(or `make publish SWEEP=<sweep> STUDY=<study>`).

Writes report.md, figures/*.png, tables/*.csv, runs.csv and epochs.csv (not report.html, which embeds every
figure, and not the run folders), and a README.md that says how the study was made: the command that ran
the sweep (from <sweep>/multirun.yaml, else rebuilt from the runs' .hydra/overrides.yaml), the seeds, the
library versions and the machine (summary.json), and how long it took. Paths on the machine that ran it
never reach the published files: the sweep's folder becomes `<sweep>`, and absolute paths in the command
become `<key>`.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from bsstudy.analysis.report.build import read_runs, report_folder, report_sections, write_report
from bsstudy.analysis.report.runs import Sweep
from bsstudy.resources import machine
from bsstudy.runfolder import RunFolder, run_folders

COPIED = ["report.md", "runs.csv", "epochs.csv"]  # plus figures/ and tables/
SWEEP_PLACEHOLDER = "<sweep>"


def sweep_overrides(sweep_dir: Path) -> tuple[list[str], str]:
    """(overrides, where they were read): hydra.overrides.task and .hydra (less hydra.mode) of multirun.yaml,
    else every key of the runs' .hydra/overrides.yaml with its values joined by commas (Hydra's sweep syntax)."""
    multirun = sweep_dir / "multirun.yaml"
    if multirun.exists():
        overrides = (yaml.safe_load(multirun.read_text()).get("hydra") or {}).get("overrides") or {}
        hydra = [o for o in overrides.get("hydra") or [] if not o.startswith("hydra.mode=")]
        return [*(overrides.get("task") or []), *hydra], "multirun.yaml"
    values: dict[str, list[str]] = {}
    for run in run_folders(sweep_dir):
        path = RunFolder(run).hydra_file("overrides.yaml")
        for override in yaml.safe_load(path.read_text()) or [] if path.exists() else []:
            key, _, value = str(override).partition("=")
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return [f"{k}={','.join(v)}" for k, v in values.items()], "the runs' .hydra/overrides.yaml"


def without_local_paths(override: str) -> str:
    """`data.root=/work/shared/data` -> `data.root=<data.root>`: a path of the machine that ran it."""
    key, _, value = override.partition("=")
    return f"{key}=<{key.lstrip('+~')}>" if value.startswith(("/", "~")) else override


def sweep_command(sweep_dir: Path) -> tuple[str, str]:
    """(`python -m bsstudy -m ...`, its source)."""
    overrides, source = sweep_overrides(sweep_dir)
    return "python -m bsstudy -m " + " ".join(shlex.quote(without_local_paths(o)) for o in overrides), source


def distinct(values: list) -> list[tuple[str, int]]:
    """Each distinct value (as sorted JSON) with the number of runs that have it, most common first."""
    return Counter(json.dumps(v, sort_keys=True) for v in values).most_common()


def run_times(sweep: Sweep) -> tuple[list[tuple[datetime, datetime]], str]:
    """Per run (start, end): finished_at - wall_time_s and finished_at from summary.json, else the
    modification times of .hydra/config.yaml (written when the job starts) and summary.json."""
    spans, from_files = [], False
    for run in sweep.runs.itertuples():
        summary, run_dir = sweep.summaries.get(run.run) or {}, sweep.run_dir(run.run)
        if summary.get("finished_at") and summary.get("wall_time_s") is not None:
            end = datetime.fromisoformat(summary["finished_at"])
            spans.append((end - timedelta(seconds=float(summary["wall_time_s"])), end))
        elif (folder := RunFolder(run_dir)).summary_path.exists() and folder.config_path.exists():
            from_files = True
            stamp = [p.stat().st_mtime for p in (folder.config_path, folder.summary_path)]
            spans.append(tuple(datetime.fromtimestamp(t, timezone.utc) for t in stamp))
    return spans, "file modification times" if from_files else "summary.json (finished_at, wall_time_s)"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds:,.0f} s)"


def duration_lines(sweep: Sweep) -> list[str]:
    wall = sweep.runs.wall_time_s.dropna()
    lines = [f"- sum of the runs' wall_time_s: {hours(float(wall.sum()))} over {len(wall)} runs"]
    spans, source = run_times(sweep)
    if spans:
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        lines.append(
            f"- first start to last end: {hours((end - start).total_seconds())}, "
            f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC (from {source})"
        )
    return lines


def describe_machine(machine: dict) -> str:
    """ "Intel Xeon ...; 2 logical CPUs; GPUs: none" from summary.json's machine."""
    gpus = ", ".join(machine.get("gpus") or []) or "none"
    return f"{machine.get('cpu', '?')}; {machine.get('cpu_count', '?')} logical CPUs; GPUs: {gpus}"


def machine_lines(sweep: Sweep) -> list[str]:
    """The machine (summary.json machine), torch device and threads, and platform, each with its run count."""
    summaries = [s for s in sweep.summaries.values() if s]
    machines = [s["machine"] for s in summaries if s.get("machine")]
    lines = [f"- {describe_machine(json.loads(v))} ({n} runs)" for v, n in distinct(machines)]
    if not machines:
        lines = [
            "- not recorded in the run folders (written before summary.json had `machine`); this report was "
            f"published on {describe_machine(machine())}, which ran the study only if it was run here"
        ]
    devices = distinct([f"{s.get('device', '?')}, {s.get('threads', '?')} torch threads" for s in summaries])
    platforms = distinct([(s.get("versions") or {}).get("platform", "?") for s in summaries])
    return [
        *lines,
        *(f"- device {json.loads(v)} ({n} runs)" for v, n in devices),
        *(f"- platform {json.loads(v)} ({n} runs)" for v, n in platforms),
    ]


def version_lines(sweep: Sweep) -> list[str]:
    found = distinct([s.get("versions") for s in sweep.summaries.values() if s and s.get("versions")])
    if not found:
        return ["not recorded (no summary.json with versions)"]
    lines = []
    for value, n in found:
        versions = {k: v for k, v in json.loads(value).items() if k != "platform"}
        prefix = f"{n} runs: " if len(found) > 1 else ""
        lines.append(prefix + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


def study_readme(sweep: Sweep, study: str) -> str:
    """README.md of a published study: what it is, the command, seeds, versions, machine and duration."""
    command, source = sweep_command(sweep.path)
    runs = sweep.runs
    statuses = ", ".join(f"{n} {s}" for s, n in runs.status.value_counts().sort_index().items())
    seeds = ", ".join(f"{s:g}" for s in sorted(runs.seed.dropna().unique()))
    datasets = ", ".join(sorted(runs.dataset.dropna().astype(str).unique())) or "unknown"
    parts = [
        f"# {study}",
        f"The report: [report.md](report.md) (figures in `figures/`, every table as CSV in `tables/`, one row per "
        "run in `runs.csv`, one per run and epoch in `epochs.csv`). Written by `python -m bsstudy.analysis.report "
        f"<sweep> --publish docs/results/{study}`; `{SWEEP_PLACEHOLDER}` stands for the sweep's folder.",
        f"Data: {datasets}. Batch sizes: {', '.join(f'{b:g}' for b in sweep.batch_sizes)}. Seeds: {seeds}. "
        f"Runs: {len(runs)} ({statuses}).",
        "## Command",
        f"From {source}; a path of the machine that ran it is shown as `<key>` (set your own, e.g. "
        "`data.root=<folder with FashionMNIST/raw>`):",
        f"```bash\n{command}\n```",
        "## Library versions",
        *version_lines(sweep),
        "## Machine",
        "\n".join(machine_lines(sweep)),
        "## Duration",
        "\n".join(duration_lines(sweep)),
    ]
    return "\n\n".join(parts) + "\n"


def local_roots(sweep: Sweep) -> list[tuple[str, str]]:
    """(path, replacement) for the paths of this machine that may appear in the report, longest first."""
    sweep_paths = {str(sweep.path), str(sweep.path.resolve())}
    others = {str(Path.home()), str(Path.cwd()), str(sweep.path.resolve().parent)}
    found = [(p, SWEEP_PLACEHOLDER) for p in sweep_paths] + [(p, "<local>") for p in others if len(p) > 1]
    return sorted(found, key=lambda pair: -len(pair[0]))


def relative_text(text: str, roots: list[tuple[str, str]]) -> str:
    for path, replacement in roots:
        text = text.replace(path, replacement)
    return text


def publish(sweep_dir: str | Path, dest: str | Path, target_acc: float | None = None) -> Path:
    """Write the published study into `dest`, whole (its figures/ and tables/ are replaced, manifest.json last;
    build.report_folder), and return it."""
    sweep, dest = read_runs(sweep_dir), Path(dest)
    roots = local_roots(sweep)
    sections = report_sections(sweep, target_acc)
    with report_folder(dest, "--publish DIR") as stage:
        built = stage / ".report"  # the whole report, of which the published files are copied with relative paths
        write_report(built, sweep, sections)
        shutil.copytree(built / "figures", stage / "figures")
        (stage / "tables").mkdir()
        for source in [*(built / name for name in COPIED), *sorted((built / "tables").glob("*.csv"))]:
            (stage / source.relative_to(built)).write_text(relative_text(source.read_text(), roots))
        shutil.rmtree(built)
        (stage / "README.md").write_text(relative_text(study_readme(sweep, dest.name), roots))
    return dest
