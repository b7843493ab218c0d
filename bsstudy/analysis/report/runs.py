"""A sweep folder (or one run folder) read into tables: one row per run with its status, one row per run
and epoch (the tidy table every figure is drawn from), and every file that could not be read.

Nothing here raises for one bad run: a missing or corrupt file becomes a row of `problems` (run, file,
error) and the run keeps the status its files allow. A run without summary.json is `running` (still
training, or killed); one whose summary.json cannot be parsed is `unreadable`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from bsstudy.runfolder import RunFolder, is_run_folder, run_folders

RUN_COLUMNS = [
    "run",
    "status",
    "batch_size",
    "seed",
    "variant",
    "effective_batch_size",
    "accumulate",
    "lr",
    "effective_lr",
    "lr_scaling",
    "optimizer",
    "dataset",
    "max_epochs",
    "epochs_completed",
    "epochs_trained",
    "final_test_acc",
    "final_train_acc",
    "final_gap",
    "final_test_loss",
    "final_train_loss",
    "final_val_acc",
    "n_val",
    "selected_on",
    "best_epoch",
    "best_val_acc",
    "test_acc_at_best_val",
    "train_time_s",
    "wall_time_s",
    "optimizer_steps",
    "probes",
    "pack_size",
    "error",
]
IDENTITY = ["run", "status", "batch_size", "seed", "variant", "effective_batch_size", "accumulate", "lr_scaling"]
NOT_A_VARIANT = ("seed", "data.batch_size", "data.root", "data.download", "resume", "trainer.progress_bar")
NOT_A_VARIANT_PREFIX = ("probes.", "logger.", "hydra.", "checkpoint.", "trainer.threads")


@dataclass
class Sweep:
    """Everything the report draws from. `summaries[run]` is the run's summary.json (probes' numbers)."""

    path: Path
    runs: pd.DataFrame
    epochs: pd.DataFrame
    problems: pd.DataFrame
    summaries: dict[str, dict] = field(default_factory=dict)
    probe_targets: dict[str, str] = field(default_factory=dict)  # probe name -> its class (`_target_`), from configs

    def run_dir(self, run: str) -> Path:
        return self.path if run == self.path.name and is_run_folder(self.path) else self.path / run

    def probe_dir(self, run: str, probe: str) -> Path:
        return RunFolder(self.run_dir(run)).probe_dir(probe)

    @property
    def completed(self) -> pd.DataFrame:
        return self.runs[self.runs.status == "completed"]

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(int(b) for b in self.runs.batch_size.dropna().unique())

    def problem(self, run: str, file: str, error: str) -> None:
        """Record a read error found after loading (a figure's input file)."""
        row = pd.DataFrame([{"run": run, "file": file, "error": error}])
        self.problems = pd.concat([self.problems, row], ignore_index=True) if len(self.problems) else row


def flatten(tree: dict) -> dict:
    """{"data.batch_size": 64, ...} from a nested dict (pandas.json_normalize); lists become their string form,
    an empty dict leaves no key."""
    (flat,) = pd.json_normalize(tree).to_dict(orient="records")
    return {k: str(v) if isinstance(v, list) else v for k, v in flat.items()}


def attempt(problems: list[dict], run: str, file: str, read: Callable):
    """read() or None, with any error kept as a problem of `run`."""
    try:
        return read()
    except Exception as err:  # a corrupt file must not stop the report of the other runs
        problems.append({"run": run, "file": file, "error": f"{type(err).__name__}: {err}"})
        return None


def read_config(run_dir: Path) -> dict:
    return flatten(OmegaConf.to_container(RunFolder(run_dir).config(), resolve=False))


def read_metrics_frame(path: Path) -> pd.DataFrame:
    """metrics.csv as numbers; a file cut short (header only, or a last row without its line end) is an error,
    so the run is listed among the problems instead of silently losing epochs."""
    text = path.read_text()
    if not text.endswith("\n"):
        raise ValueError("truncated: the last row is cut off (bsstudy writes whole files ending in a newline)")
    frame = pd.read_csv(path)
    if frame.empty:
        raise ValueError("no epoch rows (header only): the file was cut short")
    if "epoch" not in frame or "test_acc" not in frame:
        raise ValueError("no epoch/test_acc columns")
    return frame.apply(pd.to_numeric, errors="raise")


def status_of(summary: dict | None, summary_exists: bool) -> str:
    if summary is None:
        return "unreadable" if summary_exists else "running"
    return str(summary.get("status") or "unknown")


def run_record(name: str, config: dict, summary: dict | None, metrics: pd.DataFrame | None, status: str) -> dict:
    """One row of the runs table from what could be read (summary first, then config, then metrics.csv)."""
    s = summary or {}
    final = s.get("final") or (metrics.iloc[-1].to_dict() if metrics is not None and len(metrics) else {})
    best = s.get("best") or {}
    batch_size = s.get("batch_size", config.get("data.batch_size"))
    accumulate = s.get("accumulate", config.get("optim.accumulate", 1))
    return {
        "run": name,
        "status": status,
        "batch_size": batch_size,
        "seed": s.get("seed", config.get("seed")),
        "variant": "",
        "effective_batch_size": s.get("effective_batch_size", None if batch_size is None else batch_size * accumulate),
        "accumulate": accumulate,
        "lr": s.get("lr", config.get("optim.lr")),
        "effective_lr": s.get("effective_lr"),
        "lr_scaling": s.get("lr_scaling", config.get("optim.lr_scaling", "none")),
        "optimizer": s.get("optimizer", config.get("optim.name")),
        "dataset": s.get("dataset", config.get("data.name")),
        "max_epochs": config.get("trainer.max_epochs"),
        "epochs_completed": (completed := s.get("epochs_completed", int(final["epoch"]) if "epoch" in final else None)),
        "epochs_trained": s.get("epochs_trained", completed),  # with the part of an epoch a timer or target cut
        "final_test_acc": final.get("test_acc"),
        "final_train_acc": final.get("train_acc"),
        "final_gap": final.get("gap"),
        "final_test_loss": final.get("test_loss"),
        "final_train_loss": final.get("train_loss"),
        "final_val_acc": final.get("val_acc"),
        "n_val": s.get("n_val", config.get("data.val_size")),
        "selected_on": s.get("selected_on"),
        "best_epoch": best.get("epoch"),
        "best_val_acc": best.get("val_acc"),
        "test_acc_at_best_val": best.get("test_acc") if "val_acc" in best else None,  # old summaries: best on test
        "train_time_s": s.get("train_time_s", final.get("train_time_s")),
        "wall_time_s": s.get("wall_time_s"),
        "optimizer_steps": s.get("optimizer_steps", final.get("optimizer_steps")),
        "probes": ",".join(probe_names(config, s)),
        "pack_size": (s.get("packed") or {}).get("size", 1),  # runs trained together (hydra/launcher=packed)
        "error": s.get("error") or ("no summary.json: still running, or killed" if status == "running" else ""),
    }


def probe_names(config: dict, summary: dict) -> list[str]:
    """The probes a run was configured with (probes.<name>.* in its config), else those in its summary."""
    names = {k.split(".")[1] for k in config if k.startswith("probes.") and k.count(".") >= 2}
    return sorted(names or (summary.get("probes") or {}).keys())


def selection_line(runs: pd.DataFrame) -> str:
    """Which split selected (best epoch, time-to-accuracy target): validation, or nothing without one."""
    on_val = runs[runs.selected_on == "val"]
    if len(on_val) == len(runs):
        sizes = ", ".join(f"{int(n)}" for n in sorted(on_val.n_val.dropna().unique())) or "?"
        return (
            f"Selected on validation: the best epoch (best_val_acc, with the test accuracy at that epoch) and the "
            f"time-to-accuracy target read a seeded hold-out of {sizes} training samples (data.val_size); test "
            "accuracy is reported, never selected on."
        )
    if len(on_val) == 0:
        return (
            "Nothing selected: no validation split (data.val_size=0), so no best epoch and no default "
            "time-to-accuracy target; every accuracy shown is measured, none chosen."
        )
    return (
        f"Selected on validation in {len(on_val)} of {len(runs)} runs; the others have no validation split "
        "(data.val_size=0) and no best epoch."
    )


def variants(configs: dict[str, dict]) -> dict[str, str]:
    """Per run, the settings that vary across the sweep other than batch size and seed, as "k=v, ..."."""
    keys = sorted({k for c in configs.values() for k in c})
    varying = [
        k
        for k in keys
        if k not in NOT_A_VARIANT
        and not k.startswith(NOT_A_VARIANT_PREFIX)
        and len({json.dumps(c.get(k), default=str) for c in configs.values()}) > 1
    ]
    return {run: ", ".join(f"{k}={c.get(k)}" for k in varying) for run, c in configs.items()}


def variant_order(variant: str) -> tuple:
    """A sort key for a variant ("k=v, ..."): by key, then numbers as numbers (0.8 < 3.2 < 12.8), and a number
    before a text value of the same key.

    >>> sorted(["optim.lr=12.8", "optim.lr=3.2", "optim.lr=0.8"], key=variant_order)
    ['optim.lr=0.8', 'optim.lr=3.2', 'optim.lr=12.8']
    """
    key = []
    for part in variant.split(", ") if variant else []:
        name, _, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        key.append((name, 0, number, "") if math.isfinite(number) else (name, 1, 0.0, value))
    return tuple(key)


def sorted_variants(values) -> list[str]:
    """The distinct variants of `values`, in variant_order (the empty variant first)."""
    return sorted(set(values), key=variant_order)


def read_sweep(path: str | Path, summaries: dict[str, dict] | None = None) -> Sweep:
    """Read every run under `path` (a sweep folder, or one run folder). `summaries` overrides a run's
    summary.json (a run that is still writing it, e.g. when it logs to W&B)."""
    path = Path(path)
    records, frames, problems, configs, all_summaries = [], [], [], {}, {}
    for run_dir in run_folders(path):
        name = run_dir.name
        config = {}
        if RunFolder(run_dir).config_path.exists():
            config = attempt(problems, name, RunFolder.CONFIG, lambda d=run_dir: read_config(d)) or {}
        folder = RunFolder(run_dir)
        summary_path = folder.summary_path
        summary = (summaries or {}).get(name)
        if summary is None and summary_path.exists():
            summary = attempt(problems, name, "summary.json", lambda p=summary_path: json.loads(p.read_text()))
        metrics = None
        if folder.metrics_path.exists():
            metrics = attempt(problems, name, "metrics.csv", lambda p=folder.metrics_path: read_metrics_frame(p))
        status = status_of(summary, summary is not None or summary_path.exists())
        records.append(run_record(name, config, summary, metrics, status))
        configs[name] = config
        all_summaries[name] = summary or {}
        if metrics is not None:
            frames.append(metrics.assign(run=name))
    runs = pd.DataFrame(records, columns=RUN_COLUMNS)
    runs["variant"] = runs.run.map(variants(configs))
    identity = runs[IDENTITY]
    epochs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "epoch"])
    epochs = identity.merge(epochs.rename(columns={"batch_size": "epoch_batch_size"}), on="run", how="inner")
    problems_frame = pd.DataFrame(problems, columns=["run", "file", "error"])
    targets = probe_targets(configs, all_summaries)
    if any(
        path.glob("geometry/interpolation_*/interpolation.csv")
    ):  # `python -m bsstudy.analysis.geometry interpolate`
        targets.setdefault("interpolation", "bsstudy.probes.interpolation.Interpolation")  # or SweepInterpolation
    return Sweep(path, runs, epochs, problems_frame, all_summaries, targets)


def probe_targets(configs: dict[str, dict], summaries: dict[str, dict]) -> dict[str, str]:
    """{probe name: the `_target_` its runs were configured with} over the sweep's run configs; a probe known
    only from a summary (a run folder without .hydra/) gets "bsstudy.probes.<name>" (its module, by convention)."""
    found = {}
    for summary in summaries.values():
        for name in summary.get("probes") or {}:
            found.setdefault(name, f"bsstudy.probes.{name}")
    for config in configs.values():
        for key, value in config.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "probes" and parts[2] == "_target_" and isinstance(value, str):
                found[parts[1]] = value
    return dict(sorted(found.items()))


SHARPNESS_KEY = re.compile(r"^sharpness_eps_(.+)$")


def completed_epochs(sweep: Sweep) -> pd.DataFrame:
    return sweep.epochs[sweep.epochs.status == "completed"]


def representative_runs(sweep: Sweep, runs: pd.DataFrame) -> pd.DataFrame:
    """One run per (variant, B): the one with the smallest seed (for per-run pictures)."""
    return runs.sort_values(["variant", "batch_size", "seed", "run"]).groupby(["variant", "batch_size"]).head(1)


def probe_numbers(sweep: Sweep, probe: str) -> pd.DataFrame:
    """One row per completed run with the probe's numeric summary entries (run, variant, batch_size, seed, ...)."""
    rows = []
    for run in sweep.completed.itertuples():
        numbers = (sweep.summaries.get(run.run, {}).get("probes") or {}).get(probe) or {}
        numbers = {k: v for k, v in numbers.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            rows.append(
                {"run": run.run, "variant": run.variant, "batch_size": run.batch_size, "seed": run.seed} | numbers
            )
    return pd.DataFrame(rows)


def eps_values(frame: pd.DataFrame) -> list[str]:
    return sorted((m.group(1) for c in frame.columns if (m := SHARPNESS_KEY.match(c))), key=float, reverse=True)


# The gradient-sum experiment's files, read by its section (dynamics.py) and its findings rows


def read_gradsum(sweep: Sweep, runs: pd.DataFrame | None = None) -> list[tuple[object, pd.DataFrame, dict]]:
    """(run row, summary.csv, fit.json) of every run of `runs` (default: the completed ones) with gradsum results;
    an unreadable pair becomes a problem of its run."""
    found = []
    for run in (sweep.completed if runs is None else runs).itertuples():
        folder = sweep.probe_dir(run.run, "gradsum")
        if not (folder / "summary.csv").exists():
            continue
        try:
            found.append((run, pd.read_csv(folder / "summary.csv"), json.loads((folder / "fit.json").read_text())))
        except Exception as err:
            sweep.problem(run.run, "probes/gradsum/summary.csv, fit.json", f"{type(err).__name__}: {err}")
    return found


def normalized_std(summary: pd.DataFrame) -> pd.Series:
    """The source's normalized std, sigma_B mu_ref / mu_B (mu_ref: the mean at the largest B); read from
    summary.csv's std_norm, or computed for files written before that column existed."""
    if "std_norm" in summary:
        return summary["std_norm"]
    reference = summary.loc[summary.batch_size.idxmax(), "mean"]
    return summary["std"] * reference / summary["mean"]
