"""Publishing a sweep's report (`python -m bsstudy.analysis.report <sweep> --publish DIR`): a tiny real sweep through
the CLI, published into a docs-like folder: the report's Markdown, figures and CSV tables with relative paths
only, a README with the command that made the sweep, the seeds, versions, machine and duration; no
report.html and no run folders."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bsstudy.analysis.report.__main__ import main as report_main
from bsstudy.analysis.report.publish import sweep_overrides, without_local_paths
from bsstudy.resources import cpu_model, library_versions

from conftest import run_cli

TASK = ["data=synthetic", "data.val_size=256", "model.hidden_sizes=[16]", "trainer.max_epochs=2",
        "data.batch_size=32,128", "seed=0,1"]  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, Path]:
    """(sweep, published folder): 2 batch sizes x 2 seeds, 2 epochs, written under an absolute path."""
    root = tmp_path_factory.mktemp("publish")
    sweep = root / "multirun" / "tiny"
    run_cli(["-m", *TASK, f"data.root={root / 'data'}", f"hydra.sweep.dir={sweep}",
             "hydra.callbacks.report.enabled=false"], cwd=root)  # fmt: skip
    report_main([str(sweep), "--publish", str(root / "docs" / "results" / "tiny")])
    return sweep, root / "docs" / "results" / "tiny"


def test_publish_writes_markdown_figures_and_csv_tables_not_html_or_runs(published):
    _, out = published
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"README.md", "report.md", "runs.csv", "epochs.csv", "tables/budgets.csv", "tables/findings.csv"} <= names
    assert "figures/budgets.png" in names
    assert not any(n.endswith((".html", ".parquet", ".ckpt", "summary.json", "metrics.csv")) for n in names)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text())
    assert links and all(link.startswith("figures/") and (out / link).is_file() for link in links)


def test_published_files_hold_no_path_of_the_machine_that_ran_it(published):
    sweep, out = published
    local = str(sweep.parents[1])
    for path in out.rglob("*"):
        if path.suffix in (".md", ".csv"):
            assert local not in path.read_text(), path
    assert "Sweep: <sweep>." in (out / "report.md").read_text()


def test_the_readme_gives_the_command_seeds_versions_machine_and_duration(published):
    _, out = published
    readme = (out / "README.md").read_text()
    command = "python -m bsstudy -m data=synthetic data.val_size=256 'model.hidden_sizes=[16]' trainer.max_epochs=2 "
    command += "data.batch_size=32,128 seed=0,1 'data.root=<data.root>' trainer.progress_bar=false "
    command += "'hydra.sweep.dir=<hydra.sweep.dir>' hydra.callbacks.report.enabled=false"  # task, then hydra overrides
    assert f"```bash\n{command}\n```" in readme
    assert "From multirun.yaml" in readme and "Seeds: 0, 1." in readme and "Runs: 4 (4 completed)" in readme
    assert f"torch {library_versions()['torch']}" in readme
    assert f"- {cpu_model()}; " in readme and "(4 runs)" in readme
    assert re.search(r"sum of the runs' wall_time_s: [0-9.]+ h", readme)
    assert "first start to last end" in readme and "from summary.json (finished_at, wall_time_s)" in readme


def test_without_multirun_yaml_the_command_is_rebuilt_from_the_runs_overrides(published, tmp_path):
    sweep, _ = published
    copy = shutil.copytree(sweep, tmp_path / "sweep", ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "multirun.yaml").unlink()
    overrides, source = sweep_overrides(copy)
    assert source == "the runs' .hydra/overrides.yaml"
    assert "data.batch_size=32,128" in overrides and "seed=0,1" in overrides
    assert without_local_paths("data.root=/somewhere/data") == "data.root=<data.root>"
    assert without_local_paths("data.batch_size=32,128") == "data.batch_size=32,128"
