"""The W&B side of the report.

Per run, training logs the run's own files (bsstudy/train/wandb_files.py); this module is the sweep's side.

Per sweep (`python -m bsstudy.analysis.report.wandb_report <sweep>`, `make wandb-report SWEEP=...`): a W&B
Report (wandb-workspaces Reports API) over the sweep's W&B group, with the findings table and
panels whose runs are grouped by batch size (seeds averaged, one colour per batch size as in the
HTML report). Online (an API key in $WANDB_API_KEY or ~/.netrc, and WANDB_MODE not offline/disabled)
it is saved to W&B and its URL printed. Offline it builds the same report object, writes what it
would push to <sweep>/report/wandb_report.json and prints the `wandb sync` commands; it never
prompts for a login and never waits on the network.
"""

from __future__ import annotations

import argparse
import json
import logging
import netrc
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

from bsstudy import OutputError, UsageError
from bsstudy.analysis.report.document import markdown_table
from bsstudy.analysis.report.figures import batch_colours, hex_colour
from bsstudy.analysis.report.findings import findings_table
from bsstudy.analysis.report.runs import Sweep, read_sweep
from bsstudy.extras import require
from bsstudy.runfolder import RunFolder, replace_atomically
from bsstudy.train.wandb_files import logged_images, wandb_group

log = logging.getLogger(__name__)

BATCH_SIZE_KEY = "data.batch_size"
CURVES = ["test_acc", "train_acc", "gap", "test_loss", "train_loss"]
PROBE_CURVES = ["update_norm_median", "epoch_distance", "noise_scale"]


def first_run_config(sweep: Sweep, name: str) -> dict:
    for run in sweep.runs.run:
        path = RunFolder(sweep.run_dir(run)).hydra_file(name)
        if path.exists():
            return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {}


def wandb_settings(sweep: Sweep) -> tuple[str, str, str]:
    """(entity, project, group) the sweep's runs logged to. The group is logger.wandb.group or, as run.py
    sets it, named by the sweep folder as Hydra saw it (wandb_files.wandb_group: multirun/<date>/<time> ->
    <date>/<time>)."""
    config, hydra = first_run_config(sweep, "config.yaml"), first_run_config(sweep, "hydra.yaml").get("hydra", {})
    wandb_cfg = (config.get("logger") or {}).get("wandb") or {}
    group = wandb_cfg.get("group")
    if not group:
        configured = str((hydra.get("sweep") or {}).get("dir", sweep.path))
        group = wandb_group(sweep.path.resolve() if "${" in configured else configured)
    entity = os.environ.get("WANDB_ENTITY") or wandb_cfg.get("entity") or ""
    project = os.environ.get("WANDB_PROJECT") or wandb_cfg.get("project") or "bsstudy"
    return entity, project, group


def has_api_key() -> bool:
    """An API key in the environment or ~/.netrc for the W&B host, looked up without prompting."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def is_online(force_offline: bool = False) -> bool:
    return (
        not force_offline
        and os.environ.get("WANDB_MODE", "online") not in ("offline", "disabled", "dryrun")
        and has_api_key()
    )


def build_wandb_report(sweep: Sweep, entity: str, project: str, group: str, online: bool):
    """The Report object: the findings, then one panel grid per topic over the group's runs grouped by B."""
    import wandb_workspaces.reports.v2 as wr

    runset_entity = entity if online else ""  # offline: no project lookup (it would need the network)
    runset = wr.Runset(
        entity=runset_entity,
        project=project,
        name="runs by batch size",
        filters=f"Metric('Group') == '{group}'",
        groupby=[f"config.{BATCH_SIZE_KEY}"],
    )
    colours = {
        wr.RunsetGroup(runset.name, (wr.RunsetGroupKey(wr.Config(BATCH_SIZE_KEY), str(b)),)): hex_colour(c)
        for b, c in batch_colours(sweep.batch_sizes).items()
    }

    def line(metric: str, log_y: bool = False):
        return wr.LinePlot(
            title=metric, x="epoch", y=[metric], log_y=log_y, groupby_aggfunc="mean", groupby_rangefunc="stderr"
        )

    present = [m for m in PROBE_CURVES if m in sweep.epochs and sweep.epochs[m].notna().any()]
    has_val = "val_acc" in sweep.epochs and sweep.epochs.val_acc.notna().any()
    curves = [*CURVES, "val_acc", "val_loss"] if has_val else CURVES
    images = sorted({key for run in sweep.runs.run for key in logged_images(sweep.run_dir(run))})
    blocks = [
        wr.H1(f"Batch-size study: {group}"),
        wr.P(
            f"{len(sweep.runs)} runs, batch sizes {', '.join(f'{b:g}' for b in sweep.batch_sizes)}; curves are "
            "means over seeds with standard-error bands, one colour per batch size. Made by "
            "python -m bsstudy.analysis.report.wandb_report; the full report is <sweep>/report/report.html."
        ),
        wr.H2("Findings"),
        wr.MarkdownBlock(markdown_table(findings_table(sweep))),
        wr.H2("Accuracy and gap per epoch, grouped by batch size"),
        wr.PanelGrid(runsets=[runset], panels=[line(m) for m in curves], custom_run_colors=colours),
    ]
    if present:
        blocks += [
            wr.H2("Probes"),
            wr.PanelGrid(runsets=[runset], panels=[line(m, log_y=True) for m in present], custom_run_colors=colours),
        ]
    if images:  # the keys the runs log their probes' images under (bsstudy/train/wandb_files.py)
        blocks += [
            wr.H2("Probe images of each run"),
            wr.P("The sweep's own figures (all runs together) are in <sweep>/report/report.html."),
            wr.PanelGrid(
                runsets=[runset],
                panels=[
                    wr.MediaBrowser(title=key.removeprefix("files/"), media_keys=[key], num_columns=1) for key in images
                ],
            ),
        ]
    return wr.Report(
        project=project,
        entity=entity,
        title=f"bsstudy: {group}"[:128],
        description=f"Batch-size sweep {group}",
        blocks=blocks,
    )


def push_payload(report) -> dict:
    """What Report.save() sends to W&B (its upsertView variables), without sending it."""
    model = report._to_model()
    return {
        "entityName": model.project.entity_name,
        "projectName": model.project.name,
        "displayName": model.display_name,
        "description": model.description,
        "type": "runs",
        "spec": json.loads(model.spec.model_dump_json(by_alias=True, exclude_none=True)),
    }


def offline_runs(sweep: Sweep) -> list[Path]:
    return sorted(p for run in sweep.runs.run for p in (sweep.run_dir(run) / "wandb").glob("offline-run-*"))


def wandb_report(sweep_dir: str | Path, force_offline: bool = False) -> dict:
    """Build the sweep's W&B report; save it online, else write <sweep>/report/wandb_report.json.
    Returns {"online": bool, "url" or "json": ..., "sync": [commands]}."""
    require("wandb_workspaces", "wandb", "The W&B report")
    sweep = read_sweep(sweep_dir)
    entity, project, group = wandb_settings(sweep)
    online = is_online(force_offline)
    if online and not entity:
        import wandb

        entity = wandb.Api().default_entity
    report = build_wandb_report(sweep, entity, project, group, online)
    if online:
        report.save()
        return {"online": True, "url": report.url, "sync": []}
    out = sweep.path / "report" / "wandb_report.json"
    payload = push_payload(report) | {"group": group, "offline_runs": [str(p) for p in offline_runs(sweep)]}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(out, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n"))
    except OSError as err:  # a full disk, a read-only folder: the file is as it was (replace_atomically)
        why = (err.__cause__ if isinstance(err.__cause__, OSError) else err).strerror or err
        raise OutputError(
            f"cannot write {out} ({why}): it is as it was; free some space, or make its folder writable"
        ) from err
    runs = offline_runs(sweep)
    sync = ([f"wandb sync {' '.join(str(p) for p in runs)}"] if runs else []) + [
        f"python -m bsstudy.analysis.report.wandb_report {sweep.path}   # online, after `wandb login`"
    ]
    return {"online": False, "json": str(out), "sync": sync}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bsstudy.analysis.report.wandb_report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("sweep", type=Path, help="a multirun folder whose runs used logger=wandb")
    parser.add_argument("--offline", action="store_true", help="do not push, even with an API key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = wandb_report(args.sweep, args.offline)
    except UsageError as err:  # no such folder, a full disk: one line, no traceback
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(1 if isinstance(err, OutputError) else 2) from None
    if result["online"]:
        print(f"W&B report: {result['url']}")
    else:
        print(f"offline: the W&B report is in {result['json']}; to publish it, run:")
        print("\n".join(f"  {c}" for c in result["sync"]))


if __name__ == "__main__":
    main()
