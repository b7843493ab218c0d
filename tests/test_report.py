"""The report: a real sweep through the CLI (its Hydra callback writes the report, its runs log to W&B
offline), hand-made sweeps whose numbers are known, robustness to broken runs, determinism, the offline
W&B report, and report.html as headless Chromium renders it."""

from __future__ import annotations

import base64
import csv
import errno
import html
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from bsstudy import OutputError
from bsstudy.analysis.report import build_report, document, training
from bsstudy.analysis.report.__main__ import main as report_main
from bsstudy.analysis.report.check import check_images, chromium, screenshot
from bsstudy.analysis.report.figures import errorbar, log_scale, new_figure, to_png
from bsstudy.analysis.report.findings import INCONCLUSIVE, NOT_MEASURED, SUPPORTED, TOO_FEW_SEEDS, kind_of
from bsstudy.analysis.report.runs import read_sweep
from bsstudy.analysis.report.uncertainty import (
    FRACTION,
    INTERVAL_METHOD,
    POSITIVE,
    UNBOUNDED,
    mean_ci,
    quantity_kind,
    summarize,
)
from bsstudy.analysis.report.wandb_report import build_wandb_report, push_payload, wandb_report, wandb_settings
from bsstudy.runfolder import is_whole
from bsstudy.train.run import best_on_validation
from bsstudy.train.wandb_files import log_run_files, wandb_group

from conftest import run_cli

BATCH_SIZES, SEEDS = (32, 128), (0, 1)


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory) -> Path:
    """2 batch sizes x 2 seeds, 2 epochs, 256 validation samples, update norms, W&B offline; the report is
    written by the callback."""
    cwd = tmp_path_factory.mktemp("cli")
    run_cli(
        [
            "-m",
            "data=synthetic",
            "data.val_size=256",
            "model.hidden_sizes=[16]",
            "trainer.max_epochs=2",
            "optim.lr=0.1",
            f"data.batch_size={','.join(map(str, BATCH_SIZES))}",
            f"seed={','.join(map(str, SEEDS))}",
            "probes=[update_norms]",
            "logger=wandb",
            "hydra.sweep.dir=sweep",
        ],
        cwd=cwd,
    )
    return cwd / "sweep"


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """mean -/+ t_{0.975, n-1} s / sqrt(n), s with n - 1 in the denominator."""
    n, mean = len(values), sum(values) / len(values)
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    return mean, mean - half, mean + half


def logit_t_interval(values: list[float]) -> tuple[float, float, float]:
    """The mean, and the t-interval of logit(values) taken back through the logistic function."""
    logits = [math.log(v / (1 - v)) for v in values]
    _, low, high = t_interval(logits)
    return sum(values) / len(values), 1 / (1 + math.exp(-low)), 1 / (1 + math.exp(-high))


def final_test_acc_by_run(sweep: Path) -> dict[tuple[int, int], float]:
    """(batch size, seed) -> last row's test_acc, read from each run's own files."""
    out = {}
    for run in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        out[(cfg["data"]["batch_size"], cfg["seed"])] = float(read_rows(run / "metrics.csv")[-1]["test_acc"])
    return out


def test_multirun_ends_with_report_from_the_callback(cli_sweep):
    report = cli_sweep / "report"
    for name in ("report.html", "report.md", "epochs.csv", "runs.csv", "tables/findings.csv"):
        assert (report / name).is_file(), name
    figures = {p.stem for p in (report / "figures").glob("*.png")}
    assert {"generalization_curves", "final_vs_batch_size", "update_norms", "update_norm_histograms"} <= figures
    assert "gradsum" not in " ".join(figures) and "landscape" not in figures  # no data, no section
    epochs = pd.read_csv(report / "epochs.csv")
    assert len(epochs) == len(BATCH_SIZES) * len(SEEDS) * 3  # epochs 0, 1, 2 of every run
    assert epochs.val_acc.notna().all() and "Selected on validation" in (report / "report.md").read_text()


def test_runs_table_gives_best_validation_epoch_and_test_accuracy_there(cli_sweep):
    runs = pd.read_csv(cli_sweep / "report" / "runs.csv").set_index("run")
    for run in runs.index:
        rows = pd.read_csv(cli_sweep / str(run) / "metrics.csv")
        best = rows.loc[rows.val_acc.idxmax()]  # the first epoch of highest validation accuracy
        assert runs.loc[run, "best_epoch"] == best.epoch and runs.loc[run, "selected_on"] == "val"
        assert runs.loc[run, "best_val_acc"] == best.val_acc
        assert runs.loc[run, "test_acc_at_best_val"] == best.test_acc


def test_final_table_is_mean_and_t_interval_over_seeds(cli_sweep):
    finals = final_test_acc_by_run(cli_sweep)
    table = {int(r["batch_size"]): r for r in read_rows(cli_sweep / "report" / "tables" / "final_by_batch_size.csv")}
    for batch_size in BATCH_SIZES:
        mean, low, high = logit_t_interval([finals[(batch_size, s)] for s in SEEDS])  # an accuracy: logit scale
        row = table[batch_size]
        assert int(row["n"]) == len(SEEDS)
        assert float(row["final_test_acc_mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["final_test_acc_ci_low"]) == pytest.approx(low, abs=1e-12)
        assert float(row["final_test_acc_ci_high"]) == pytest.approx(high, abs=1e-12)


def test_findings_with_two_seeds_say_too_few_and_still_show_the_numbers(cli_sweep):
    findings = {r["claim"]: r for r in read_rows(cli_sweep / "report" / "tables" / "findings.csv")}
    finals = final_test_acc_by_run(cli_sweep)
    diffs = [finals[(BATCH_SIZES[-1], s)] - finals[(BATCH_SIZES[0], s)] for s in SEEDS]
    lower = findings["Larger batches reach lower test accuracy at fixed epochs and lr"]
    assert kind_of(lower["verdict"]) == TOO_FEW_SEEDS and lower["n"] == f"{len(SEEDS)} seeds"
    # slope against log2 B with two batch sizes: the difference over log2(B_max / B_min)
    slope = float(lower["effect [95% interval]"].split()[0])
    assert slope == pytest.approx(np.mean(diffs) / math.log2(BATCH_SIZES[-1] / BATCH_SIZES[0]), abs=1e-3)
    for batch_size in BATCH_SIZES:
        assert f"B={batch_size}: {np.mean([finals[(batch_size, s)] for s in SEEDS]):.3g}" in lower["evidence"]
    assert findings["The gradient-sum norm grows like sqrt(B)"]["verdict"] == NOT_MEASURED
    assert findings["Large-batch minima are sharper"]["verdict"] == NOT_MEASURED
    steps = findings["Larger batches take smaller steps per update and travel less per epoch"]
    assert kind_of(steps["verdict"]) == TOO_FEW_SEEDS


def test_each_run_logs_its_metrics_and_probe_files_to_wandb(cli_sweep):
    for run in ("0", "3"):
        media = next((cli_sweep / run / "wandb").glob("offline-run-*")) / "files" / "media" / "table" / "files"
        # W&B names a logged table <key>_<step>_<hash>.table.json
        named = {p: str(p.relative_to(media)) for p in media.rglob("*.json")}
        tables = {re.sub(r"_\d+_[0-9a-f]+\.table\.json$", "", name): p for p, name in named.items()}
        assert {"metrics", "update_norms/epochs"} <= tables.keys()
        logged = json.loads(tables["metrics"].read_text())
        metrics = read_rows(cli_sweep / run / "metrics.csv")
        assert logged["columns"] == list(metrics[0]) and len(logged["data"]) == len(metrics)


def test_logging_run_files_never_raises(tmp_path, caplog):
    class Broken:
        def log(self, media):
            raise RuntimeError("W&B is down")

    (tmp_path / "metrics.csv").write_text("epoch,test_acc\n0,0.1\n")
    log_run_files(Broken(), tmp_path)  # a failing logger
    assert "could not log the files" in caplog.text


def test_offline_wandb_report_is_saved_as_json_with_sync_commands(cli_sweep, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: nothing to log in with
    result = wandb_report(cli_sweep)
    assert not result["online"]
    payload = json.loads(Path(result["json"]).read_text())
    assert payload["group"] == "sweep"  # run.py's group: named by the sweep folder (hydra.sweep.dir=sweep)
    grids = [b for b in payload["spec"]["blocks"] if b["type"] == "panel-grid"]
    runset = grids[0]["metadata"]["runSets"][0]
    assert runset["grouping"] == [{"name": "data.value.batch_size", "section": "config"}]
    assert runset["filters"]["filters"][0]["key"]["name"] == "group"
    assert runset["filters"]["filters"][0]["value"] == "sweep"
    metrics = [p["config"].get("metrics") for p in grids[0]["metadata"]["panelBankSectionConfig"]["panels"]]
    assert ["test_acc"] in metrics and ["gap"] in metrics
    assert len(grids[0]["metadata"]["customRunColors"]) == len(BATCH_SIZES)  # one colour per batch size
    markdown = [b["content"] for b in payload["spec"]["blocks"] if b["type"] == "markdown-block"]
    assert any("Larger batches reach lower test accuracy" in m for m in markdown)
    assert len(payload["offline_runs"]) == len(BATCH_SIZES) * len(SEEDS)
    assert result["sync"][0].startswith("wandb sync ") and "offline-run-" in result["sync"][0]


def media_panel_keys(payload: dict) -> list[str]:
    """The W&B keys the report's MediaBrowser panels show."""
    grids = [b for b in payload["spec"]["blocks"] if b["type"] == "panel-grid"]
    panels = [p for g in grids for p in g["metadata"]["panelBankSectionConfig"]["panels"]]
    return [k for p in panels if p["viewType"] == "Media Browser" for k in p["config"].get("mediaKeys", [])]


def test_the_wandb_reports_image_panels_name_the_keys_the_runs_log_their_images_under(cli_sweep, tmp_path):
    from PIL import Image

    sweep = shutil.copytree(cli_sweep, tmp_path / "sweep", ignore=shutil.ignore_patterns("report", "wandb"))
    for run in ("0", "1", "2", "3"):  # a probe image in every run, as the landscape probe draws one
        (sweep / run / "probes" / "landscape").mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(sweep / run / "probes" / "landscape" / "landscape.png")

    class Recorder:  # what log_run_files sends to the W&B run
        def log(self, media):
            self.images = sorted(k for k, v in media.items() if type(v).__name__ == "Image")

    recorder = Recorder()
    log_run_files(recorder, sweep / "0")
    payload = push_payload(build_wandb_report(read_sweep(sweep), "", "bsstudy", "sweep", online=False))
    assert media_panel_keys(payload) == recorder.images == ["files/landscape/landscape"]
    # without images, no image panels (a sweep's own figures are in report.html, which nothing logs)
    assert media_panel_keys(push_payload(build_wandb_report(read_sweep(cli_sweep), "", "bsstudy", "s", False))) == []


def test_the_wandb_group_is_named_by_the_sweep_not_by_its_path_on_the_machine(cli_sweep, tmp_path):
    assert wandb_group("/scratch/me/multirun/2026-12-08/04-30-00-123456") == "2026-12-08/04-30-00-123456"
    assert wandb_group("multirun/2026-12-08/04-30-00") == "2026-12-08/04-30-00"
    assert wandb_group("/home/me/outputs/2026-12-08/04-30-00") == "2026-12-08/04-30-00"  # a single run
    assert wandb_group("/scratch/me/bs_sweep") == wandb_group("bs_sweep") == "bs_sweep"
    # the report finds the group the runs logged to: Hydra's default folder, moved to another machine
    sweep = shutil.copytree(cli_sweep, tmp_path / "elsewhere" / "multirun" / "2026-12-08" / "04-30-00",
                            ignore=shutil.ignore_patterns("report", "wandb"))  # fmt: skip
    for hydra_file in sweep.glob("*/.hydra/hydra.yaml"):
        text = hydra_file.read_text().replace("dir: sweep\n", "dir: multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}\n")
        hydra_file.write_text(text)
    assert wandb_settings(read_sweep(sweep))[2] == "2026-12-08/04-30-00"
    for hydra_file in sweep.glob("*/.hydra/config.yaml"):  # logger.wandb.group, when set, is the group
        hydra_file.write_text(hydra_file.read_text().replace("group: null", "group: my-study"))
    assert wandb_settings(read_sweep(sweep))[2] == "my-study"


def test_wandb_runs_of_a_sweep_are_grouped_by_the_sweep_folders_name(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.loggers import WandbLogger
    from omegaconf import read_write

    from bsstudy.train.run import build_loggers

    from conftest import compose_run

    monkeypatch.setattr(WandbLogger, "log_hyperparams", lambda self, params: None)  # no W&B run is started
    cfg = compose_run(tmp_path / "0", ["data=synthetic", "logger=wandb"])
    with read_write(HydraConfig.get()):  # as Hydra sets it for a sweep's job
        HydraConfig.get().mode = RunMode.MULTIRUN
        HydraConfig.get().sweep.dir = str(tmp_path / "multirun" / "2026-12-08" / "04-30-00")
    wandb = next(logger for logger in build_loggers(cfg, tmp_path / "0") if isinstance(logger, WandbLogger))
    assert wandb._wandb_init["group"] == "2026-12-08/04-30-00" and wandb._wandb_init["name"] == "0"
    cfg.logger.wandb.group = "my-study"
    wandb = next(logger for logger in build_loggers(cfg, tmp_path / "0") if isinstance(logger, WandbLogger))
    assert wandb._wandb_init["group"] == "my-study"


def test_broken_runs_are_listed_and_the_rest_still_renders(cli_sweep, tmp_path):
    sweep = shutil.copytree(cli_sweep, tmp_path / "sweep", ignore=shutil.ignore_patterns("report", "wandb"))
    (sweep / "1" / "metrics.csv").write_bytes(b"\x00\x01 not a csv \xff")
    (sweep / "2" / "summary.json").unlink()  # still running, or killed
    summary = json.loads((sweep / "3" / "summary.json").read_text())
    (sweep / "3" / "summary.json").write_text(json.dumps(summary | {"status": "failed", "error": "RuntimeError: x"}))
    out = build_report(sweep)
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False).set_index("run")
    assert runs.loc[0, "status"] == "completed" and runs.loc[2, "status"] == "running"
    assert runs.loc[3, "status"] == "failed" and runs.loc[3, "error"] == "RuntimeError: x"
    problems = pd.read_csv(out / "tables" / "problems.csv")
    assert problems.run.astype(str).tolist() == ["1"] and problems.file.tolist() == ["metrics.csv"]
    assert (out / "figures" / "generalization_curves.png").is_file()
    html = (out / "report.html").read_text()
    assert "running" in html and "failed" in html and "metrics.csv" in html


def test_same_folder_gives_the_same_tables(cli_sweep, tmp_path):
    a, b = build_report(cli_sweep, out_dir=tmp_path / "a"), build_report(cli_sweep, out_dir=tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".csv", ".md", ".html"))
    assert len(files) > 5
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def chromium_missing() -> str | None:
    """Why the Chromium check cannot run here (None when it can): CI installs Chromium, a fresh machine may not."""
    try:
        chromium()
    except FileNotFoundError as err:
        return str(err)
    return None


@pytest.mark.skipif(chromium_missing() is not None, reason=f"{chromium_missing()} (CI installs it)")
def test_report_renders_in_chromium_with_every_figure(cli_sweep, tmp_path):
    html_path = cli_sweep / "report" / "report.html"
    images = check_images(html_path)
    assert len(images) == len(list((cli_sweep / "report" / "figures").glob("*.png")))
    assert all(i["ok"] and i["width"] > 100 for i in images)
    shot = screenshot(html_path, tmp_path / "shot.png", height=1200)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the check must catch a broken image: corrupt the first embedded PNG
    page = html_path.read_text()
    start = page.index("base64,") + len("base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(page[:start] + base64.b64encode(b"not a png").decode() + page[page.index('"', start) :])
    assert [i["ok"] for i in check_images(broken)].count(False) == 1


# Hand-made sweeps: the run files' contract (config, metrics.csv, summary.json) with known numbers.


def write_run(
    path: Path,
    batch_size: int,
    seed: int,
    test_acc: list[float],
    lr_scaling: str = "none",
    val_acc: list[float] | None = None,
    **probes,
):
    """A completed run with len(test_acc) - 1 epochs of `steps_per_epoch = 1024 / B` steps, 1 s each;
    with `val_acc`, also validation columns and the best epoch selected on them, as bsstudy.train.run writes."""
    (path / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "data": {"batch_size": batch_size, "name": "synthetic"},
        "optim": {"lr": 0.1, "lr_scaling": lr_scaling, "accumulate": 1, "name": "sgd"},
    }
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    steps = 1024 // batch_size
    rows = [
        {
            "epoch": e,
            "optimizer_steps": e * steps,
            "samples_seen": e * 1024,
            "train_acc": a + 0.05,
            "test_acc": a,
            "gap": 0.05,
            "train_loss": 1 - a,
            "test_loss": 1 - a,
            "train_time_s": float(e),
        }
        for e, a in enumerate(test_acc)
    ]
    for row, v in zip(rows, val_acc or [], strict=False):
        row |= {"val_acc": v, "val_loss": 1 - v}
    pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    summary = {
        "status": "completed",
        "batch_size": batch_size,
        "seed": seed,
        "lr_scaling": lr_scaling,
        "accumulate": 1,
        "final": rows[-1],
        "epochs_completed": len(rows) - 1,
        "probes": probes,
        **best_on_validation(rows),
    }
    (path / "summary.json").write_text(json.dumps(summary))


def test_findings_supported_and_not_supported_from_known_numbers(tmp_path):
    # small batch better by 0.05-0.06 in every seed; sharpness 10x at the large batch; lr scaling closes the gap
    final = {
        (32, "none"): [0.90, 0.91, 0.92],
        (256, "none"): [0.85, 0.86, 0.86],
        (32, "linear"): [0.90, 0.91, 0.92],
        (256, "linear"): [0.90, 0.92, 0.91],
    }
    job = 0
    for (batch_size, scaling), accs in final.items():
        for seed, acc in enumerate(accs):
            sharpness = (10.0 if batch_size == 256 else 1.0) * (1 + seed / 10)
            sharp = {"sharpness": {"sharpness_eps_0.001": sharpness, "train_loss": 0.05}}  # at matched loss
            write_run(tmp_path / str(job), batch_size, seed, [0.1, acc], scaling, **sharp)
            job += 1
    findings = {r["claim"]: r["verdict"] for r in read_rows(build_report(tmp_path) / "tables" / "findings.csv")}
    assert findings["Larger batches reach lower test accuracy at fixed epochs and lr"] == SUPPORTED
    assert findings["Scaling the lr with B narrows the test-accuracy gap between small and large batches"] == SUPPORTED
    assert findings["Large-batch minima are sharper"] == SUPPORTED
    assert findings["Larger batches take smaller steps per update and travel less per epoch"] == NOT_MEASURED


def test_no_resolved_difference_is_inconclusive(tmp_path):
    accs = [(32, 0, 0.90), (32, 1, 0.92), (32, 2, 0.91), (256, 0, 0.91), (256, 1, 0.90), (256, 2, 0.915)]
    for job, (batch_size, seed, acc) in enumerate(accs):
        write_run(tmp_path / str(job), batch_size, seed, [0.1, acc])
    findings = {r["claim"]: r["verdict"] for r in read_rows(build_report(tmp_path) / "tables" / "findings.csv")}
    # per-seed differences +0.01, -0.02, +0.005 (rank correlations +1, -1, +1): both intervals contain 0
    lower = findings["Larger batches reach lower test accuracy at fixed epochs and lr"]
    assert lower == f"{INCONCLUSIVE}: the slope's and the rank correlation's intervals contain 0"


def test_time_to_accuracy_counts_steps_to_the_first_epoch_at_target(tmp_path):
    write_run(tmp_path / "0", 32, 0, [0.1, 0.5, 0.8, 0.9])  # reaches 0.75 after epoch 2: 2 x 32 steps
    write_run(tmp_path / "1", 256, 0, [0.1, 0.4, 0.6, 0.7])  # never
    out = build_report(tmp_path, target_acc=0.75)
    table = pd.read_csv(out / "tables" / "time_to_accuracy.csv").set_index("batch_size")
    assert table.loc[32, "reached"] == "1 of 1" and table.loc[32, "steps_mean"] == 2 * 32
    assert table.loc[32, "time_s_mean"] == 2.0
    assert table.loc[256, "reached"] == "0 of 1" and math.isnan(table.loc[256, "steps_mean"])
    markdown = (out / "report.md").read_text()
    assert "Never reached the target" in markdown and "run 1 (B=256)" in markdown
    assert "One seed per condition" in markdown  # the one-seed caveat
    # no validation split: the explicit target is read on test, and the report says so
    assert "Target: test accuracy >= 0.750" in markdown and "no validation split (data.val_size=0)" in markdown
    assert "Nothing selected" in markdown


def test_time_to_accuracy_is_measured_on_validation_accuracy(tmp_path):
    # validation reaches 0.75 an epoch after test does in run 0; run 1 reaches it on test only
    write_run(tmp_path / "0", 32, 0, [0.1, 0.8, 0.85, 0.9], val_acc=[0.1, 0.7, 0.8, 0.85])
    write_run(tmp_path / "1", 256, 0, [0.1, 0.5, 0.8, 0.8], val_acc=[0.1, 0.5, 0.6, 0.7])
    out = build_report(tmp_path, target_acc=0.75)
    table = pd.read_csv(out / "tables" / "time_to_accuracy.csv").set_index("batch_size")
    assert table.loc[32, "steps_mean"] == 2 * 32 and table.loc[256, "reached"] == "0 of 1"
    assert "Target: validation accuracy >= 0.750 (given with --target-acc)" in (out / "report.md").read_text()


def test_default_target_is_98_percent_of_the_best_validation_accuracy(tmp_path):
    # best val 0.85 -> target floor(0.98 * 0.85 * 200) / 200 = 0.830; the best test accuracy (0.95) plays no part
    write_run(tmp_path / "0", 32, 0, [0.1, 0.9, 0.95], val_acc=[0.1, 0.84, 0.85])
    write_run(tmp_path / "1", 256, 0, [0.1, 0.9, 0.95], val_acc=[0.1, 0.80, 0.83])
    out = build_report(tmp_path)
    per_run = pd.read_csv(out / "tables" / "time_to_accuracy_runs.csv").set_index("run")
    assert per_run.loc[0, "epoch"] == 1 and per_run.loc[1, "epoch"] == 2
    assert "validation accuracy >= 0.830" in (out / "report.md").read_text()


def test_default_target_needs_a_validation_split(tmp_path):
    write_run(tmp_path / "0", 32, 0, [0.1, 0.8])
    write_run(tmp_path / "1", 256, 0, [0.1, 0.7])
    out = build_report(tmp_path)
    markdown = (out / "report.md").read_text()
    assert "Time to accuracy" in markdown and "needs a validation split in every run (data.val_size > 0)" in markdown
    assert not (out / "tables" / "time_to_accuracy.csv").exists()


def test_best_columns_come_from_the_best_validation_epoch_not_the_best_test_epoch(tmp_path):
    write_run(tmp_path / "0", 32, 0, [0.1, 0.7, 0.9], val_acc=[0.1, 0.8, 0.75])
    runs = pd.read_csv(build_report(tmp_path) / "runs.csv")
    assert (runs.best_epoch[0], runs.best_val_acc[0], runs.test_acc_at_best_val[0]) == (1, 0.8, 0.7)


def test_cli_rejects_a_target_outside_0_1(tmp_path):
    with pytest.raises(SystemExit):
        report_main([str(tmp_path), "--target-acc", "85"])


# Intervals that stay possible: each on the scale of its quantity (bsstudy/analysis/report/uncertainty.py).


def test_intervals_of_accuracies_times_and_steps_stay_in_their_range_with_two_seeds(tmp_path):
    # per B, seed 0 reaches the target after 1 epoch and ends at 0.90, seed 1 after 4 epochs and ends at 0.94: the
    # plain t-interval (t = 12.7) of the final accuracies reaches above 1, those of steps and time below 0
    job = 0
    for batch_size in (32, 128):
        for seed, accs in enumerate([[0.1, 0.9, 0.9, 0.9, 0.9], [0.1, 0.2, 0.3, 0.4, 0.94]]):
            write_run(tmp_path / str(job), batch_size, seed, accs)
            job += 1
    assert t_interval([0.9, 0.94])[2] > 1 and t_interval([1.0, 4.0])[1] < 0  # what the old intervals were
    out = build_report(tmp_path, target_acc=0.85)
    final = pd.read_csv(out / "tables" / "final_by_batch_size.csv")
    for column in ("final_test_acc", "final_train_acc"):
        low, mean, high = (final[f"{column}_{s}"] for s in ("ci_low", "mean", "ci_high"))
        assert ((low > 0) & (low < mean) & (mean < high) & (high < 1)).all(), column
    assert final.final_test_acc_ci_low.tolist() == pytest.approx([logit_t_interval([0.9, 0.94])[1]] * 2)
    reached = pd.read_csv(out / "tables" / "time_to_accuracy.csv")
    for column in ("steps", "time_s", "samples"):
        assert (reached[f"{column}_ci_low"] > 0).all() and (reached[f"{column}_ci_high"] > 0).all(), column
    # on the log scale: the t-interval of log(1 s), log(4 s) taken back
    assert reached.time_s_ci_low[0] == pytest.approx(math.exp(np.log(2) - stats.t.ppf(0.975, 1) * np.log(4) / 2))
    budgets = pd.read_csv(out / "tables" / "budgets.csv").dropna(subset=["test_acc_ci_low"])
    assert ((budgets.test_acc_ci_low > 0) & (budgets.test_acc_ci_high < 1)).all() and (
        budgets.train_loss_ci_low > 0
    ).all()
    assert INTERVAL_METHOD in (out / "report.md").read_text()
    assert html.escape(INTERVAL_METHOD) in (out / "report.html").read_text()


def test_the_interval_of_each_kind_of_quantity():
    t2 = stats.t.ppf(0.975, 1)
    assert mean_ci([0.9, 0.97], FRACTION)[1:3] == pytest.approx(logit_t_interval([0.9, 0.97])[1:])
    assert mean_ci([1.0, 4.0], POSITIVE)[1:3] == pytest.approx((2 * math.exp(-t2 * math.log(4) / 2),
                                                                2 * math.exp(t2 * math.log(4) / 2)))  # fmt: skip
    assert mean_ci([-1.0, 2.0], UNBOUNDED)[1:3] == pytest.approx(t_interval([-1.0, 2.0])[1:])  # symmetric, as before
    mean, low, high, n = mean_ci([0.8, 0.8, 0.8], FRACTION)
    assert low == mean == high and n == 3  # no spread: the mean itself, not its round trip through the logit
    # a value on the edge (an accuracy of 1, a time of 0): the plain interval, cut at the edge
    assert mean_ci([1.0, 0.9], FRACTION)[1:3] == pytest.approx((t_interval([1.0, 0.9])[1], 1.0))
    assert mean_ci([0.0, 3.0], POSITIVE)[1:3] == pytest.approx((0.0, t_interval([0.0, 3.0])[2]))
    assert mean_ci([-1.0, 3.0], POSITIVE)[1:3] == pytest.approx(t_interval([-1.0, 3.0])[1:])  # not positive: uncut
    assert math.isnan(mean_ci([0.5], FRACTION)[1])
    fractions = ["final_test_acc", "test_acc_at_best_val", "val_acc"]
    positive = ["train_time_s", "time_s", "optimizer_steps", "steps", "train_loss", "update_norm_median",
                "epoch_distance", "noise_scale", "b_simple", "sharpness_eps_0.001"]  # fmt: skip
    kinds = {c: FRACTION for c in fractions} | {c: POSITIVE for c in positive}
    kinds |= {c: UNBOUNDED for c in ("final_gap", "trace", "lambda_max")}
    assert {c: quantity_kind(c) for c in kinds} == kinds


def test_a_log_axis_draws_every_error_bar_whole():
    # two seeds of a time 1 s and 4 s apart: the plain interval [-16.6, 21.6] lost its lower half on a log axis
    table = summarize(pd.DataFrame({"batch_size": [32, 32, 64, 64], "time_s": [1.0, 4.0, 2.0, 2.5]}), ["batch_size"],
                      ["time_s"])  # fmt: skip
    fig, axes = new_figure()
    log_scale(axes[0][0])
    errorbar(axes[0][0], table.batch_size, table, "time_s", "black", "time")
    (bars,) = axes[0][0].containers[0].lines[2]
    ends = np.array([segment[:, 1] for segment in bars.get_segments()])
    assert len(ends) == 2 and np.isfinite(ends).all() and (ends > 0).all()
    np.testing.assert_allclose(np.sort(ends, axis=1), table[["time_s_ci_low", "time_s_ci_high"]].to_numpy())
    to_png(fig)


# Reports written whole: the previous report or none, never a mix or a cut file (bsstudy.runfolder.written_whole)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def two_runs_then_a_third(sweep: Path) -> tuple[Path, dict[str, bytes]]:
    """A report of 2 runs, then a third run in the sweep (so a new report differs in every file)."""
    write_run(sweep / "0", 32, 0, [0.1, 0.8, 0.9])
    write_run(sweep / "1", 256, 0, [0.1, 0.7, 0.85])
    out = build_report(sweep)
    assert is_whole(out)
    write_run(sweep / "2", 256, 1, [0.1, 0.72, 0.86])
    return out, files_of(out)


def full_disk_after(monkeypatch, writes: int, name: str = ".png.tmp"):
    """Path.write_bytes writes half of the `writes`-th file whose name ends in `name`, then the disk is full."""
    real, count = Path.write_bytes, [0]

    def write_bytes(path: Path, data: bytes) -> int:
        if path.name.endswith(name):
            count[0] += 1
            if count[0] == writes:
                real(path, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


@pytest.mark.slow  # builds whole reports (several seconds)
@pytest.mark.parametrize("failure", ["a section", "the Markdown", "a full disk at the third figure"])
def test_a_build_that_fails_midway_leaves_the_previous_report_whole(tmp_path, monkeypatch, failure):
    out, before = two_runs_then_a_third(tmp_path)
    if failure == "a section":
        monkeypatch.setattr(training, "scaling_section", lambda sweep: 1 / 0)
    elif failure == "the Markdown":  # report.html is written before report.md: was 3 runs beside 2
        monkeypatch.setattr(document, "render_markdown", lambda *args: 1 / 0)
    else:
        full_disk_after(monkeypatch, writes=3)
    with pytest.raises(ZeroDivisionError if "disk" not in failure else OutputError):
        build_report(tmp_path)
    assert files_of(out) == before and is_whole(out)  # every file as it was: none new, none cut, none gone
    assert not list(out.glob(".writing-*"))


@pytest.mark.slow  # builds whole reports (several seconds)
def test_a_full_disk_is_one_line_naming_the_file_and_the_way_out(tmp_path, monkeypatch, capsys):
    out, before = two_runs_then_a_third(tmp_path)
    full_disk_after(monkeypatch, writes=2)
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path)])
    assert exit_.value.code == 1
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and error.startswith("error: cannot write ") and "Traceback" not in error
    assert re.search(rf"{re.escape(str(out))}/figures/\w+\.png \(No space left on device\)", error)
    assert "is as it was" in error and "--out DIR" in error
    assert files_of(out) == before  # and no file cut short


@pytest.mark.slow  # builds whole reports (several seconds)
@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_report_folder_is_one_line_naming_it_and_the_way_out(tmp_path, monkeypatch, capsys, code):
    out, before = two_runs_then_a_third(tmp_path)
    out.chmod(0o555)
    try:
        if os.geteuid() == 0 or code == errno.EROFS:  # root writes through chmod; a read-only mount gives EROFS
            real = os.mkdir

            def mkdir(path, *args, **kwargs):
                if Path(path).is_relative_to(out):
                    raise OSError(code, os.strerror(code), str(path))
                return real(path, *args, **kwargs)

            monkeypatch.setattr(os, "mkdir", mkdir)
        with pytest.raises(SystemExit) as exit_:
            report_main([str(tmp_path)])
    finally:
        out.chmod(0o755)
    assert exit_.value.code == 1
    error = capsys.readouterr().err
    assert error == (
        f"error: cannot write {out} ({os.strerror(code)}): the report in {out} is as it was; write the report "
        "elsewhere with --out DIR\n"
    )
    assert files_of(out) == before
    report_main([str(tmp_path), "--out", str(tmp_path / "elsewhere")])  # the way out
    assert is_whole(tmp_path / "elsewhere")


@pytest.mark.slow  # builds whole reports (several seconds)
def test_a_new_report_replaces_the_old_ones_files_and_keeps_the_others(tmp_path):
    out, _ = two_runs_then_a_third(tmp_path)
    (out / "figures" / "gone.png").write_bytes(b"a figure the new report does not draw")
    (out / "wandb_report.json").write_text("{}\n")  # written by another command: not the report's
    killed = out / ".writing-999999999-x"  # the staging folder of a build that was killed (its process is gone)
    (killed / "figures").mkdir(parents=True)
    (killed / "report.html").write_text("<html>half")
    build_report(tmp_path)
    assert (
        is_whole(out) and "B=256" in (out / "report.md").read_text() and "2 of 2" not in (out / "report.md").read_text()
    )
    assert not (out / "figures" / "gone.png").exists() and not killed.exists()
    assert (out / "wandb_report.json").read_text() == "{}\n"
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    assert set(manifest) == {n for n in files_of(out) if n not in ("manifest.json", "wandb_report.json")}
    (out / "report.md").write_text("cut sh")
    assert not is_whole(out)  # a file that is not what the manifest says
