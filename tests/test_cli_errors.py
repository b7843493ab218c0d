"""The analysis commands answer a wrong folder with a usage error naming it, not a traceback."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module,args,folder",
    [
        ("bsstudy.analysis.report", [], "empty"),  # no runs inside
        ("bsstudy.analysis.report", [], "missing"),  # no such folder
        ("bsstudy.analysis.report", ["--publish", "{tmp}/published"], "missing"),
        ("bsstudy.analysis.report.wandb_report", [], "missing"),
        ("bsstudy.analysis.recommend", [], "missing"),
        ("bsstudy.analysis.geometry", ["hessian"], "empty"),
        ("bsstudy.analysis.geometry", ["interpolate"], "missing"),  # no such folder
        ("bsstudy.analysis.speed_table", [], "missing"),
    ],
)
def test_analysis_commands_reject_a_folder_without_runs(tmp_path, module, args, folder):
    path = tmp_path / folder
    if folder == "empty":
        path.mkdir()
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", module, *args, str(path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr and "Traceback" not in proc.stderr
    if module.startswith(("bsstudy.analysis.report", "bsstudy.analysis.recommend")):  # one line, no usage text
        assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (tmp_path / "published").exists()  # nothing written for a folder that is not there
