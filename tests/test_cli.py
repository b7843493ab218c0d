"""What `python -m bsstudy` prints, as a user sees it (HYDRA_FULL_ERROR unset): no noise from Lightning, a usage
error as its one line without a traceback and a non-zero exit, its own --help, and a README hint that works."""

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

AS_A_USER = {"HYDRA_FULL_ERROR": None}
TINY = ["data=synthetic", "model.hidden_sizes=[16]", "trainer.max_epochs=1", "trainer.threads=1"]
LIGHTNING_NOISE = ("GPU available:", "TPU available:", "litlogger", "💡 Tip", "LeafSpec", "`max_epochs=1` reached")


def output_of(proc) -> str:
    return proc.stdout + proc.stderr


def test_a_run_prints_no_lightning_banner_advert_or_deprecation_warning(tmp_path):
    proc = run_cli([*TINY, "hydra.run.dir=run"], tmp_path, env=AS_A_USER)
    found = [line for line in output_of(proc).splitlines() if any(noise in line for noise in LIGHTNING_NOISE)]
    assert found == []
    assert "epoch 1/1 | train loss" in output_of(proc)  # bsstudy's own lines stay


def assert_one_error(proc, first_line: str) -> None:
    """Exit 1, stderr is the error (its first line `first_line`) and nothing else: no traceback anywhere."""
    assert proc.returncode == 1, output_of(proc)[-3000:]
    assert "Traceback" not in output_of(proc) and "Error executing job" not in output_of(proc), output_of(proc)
    assert proc.stderr.startswith(f"error: {first_line}"), proc.stderr


@pytest.mark.parametrize(
    "root, state",
    [
        ("missing", "(no such folder)"),  # a data folder that is not there
        ("a_file", "is a file, not a folder"),  # data.root given as a file
        ("empty", ""),  # the folder is there, the files are not (the usual first offline failure)
    ],
)
def test_missing_data_is_one_error_with_its_ways_out_not_a_traceback(tmp_path, root, state):
    if root == "a_file":
        (tmp_path / root).write_text("not a folder")
    elif root == "empty":
        (tmp_path / root / "FashionMNIST" / "raw").mkdir(parents=True)
    args = ["data=fashion_mnist", f"data.root={tmp_path / root}", "data.download=false", "hydra.run.dir=run"]
    proc = run_cli(args, tmp_path, check=False, env=AS_A_USER)
    assert_one_error(proc, "data=fashion_mnist: cannot find train-images-idx3-ubyte")
    assert f"  - {tmp_path / root / 'FashionMNIST' / 'raw'}" in proc.stderr and state in proc.stderr
    assert "Ways out:" in proc.stderr and "data=digits" in proc.stderr


def test_a_bad_pack_size_is_one_line_and_no_sweep_starts(tmp_path):
    args = ["-m", "hydra/launcher=packed", "hydra.launcher.pack_size=0", *TINY, "seed=0,1", "hydra.sweep.dir=sweep"]
    proc = run_cli(args, tmp_path, check=False, env=AS_A_USER)
    assert_one_error(proc, "hydra.launcher.pack_size must be an integer >= 1 (runs per pack); got 0")
    assert proc.stderr.count("\n") == 1 and "report" not in output_of(proc)
    assert not (tmp_path / "sweep").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (it answers every write: disk full)")
def test_a_full_disk_during_a_run_is_one_line_naming_the_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv.tmp").symlink_to("/dev/full")  # metrics.csv's next write meets a full disk
    proc = run_cli([*TINY, f"hydra.run.dir={run}"], tmp_path, check=False, env=AS_A_USER)
    path = run / "metrics.csv"
    assert_one_error(proc, f"could not write {path} (No space left on device); metrics.csv is as it was\n")
    assert proc.stderr.count("\n") == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and str(path) in summary["error"]


def test_help_is_bsstudys_own_with_its_groups_and_examples(tmp_path):
    proc = run_cli(["--help"], tmp_path, env=AS_A_USER)
    assert "powered by Hydra" not in proc.stdout and "Powered by Hydra" not in proc.stdout
    assert proc.stdout.startswith("bsstudy: which batch size should I use")
    assert "data: digits, fashion_mnist, kmnist, mnist, synthetic" in proc.stdout  # the config groups
    for example in ("python -m bsstudy -m data.batch_size=2,64,256,1024", "python -m bsstudy -m experiment=tuned",
                    "data=fashion_mnist data.root=../shared/data data.download=false"):  # fmt: skip
        assert example in proc.stdout


def offline_hints() -> set[str]:
    """The ARGS="..." that the README and the Makefile give for a study offline."""
    texts = [(ROOT / name).read_text() for name in ("README.md", "Makefile")]
    return {hint for text in texts for hint in re.findall(r'ARGS="(data=fashion_mnist[^"]*)"', text)}


def test_the_offline_hint_of_the_readme_and_makefile_works_as_written(tmp_path, shared_data):
    hints = offline_hints()
    assert len(hints) == 1, hints  # one hint, the same everywhere
    project = tmp_path / "project"  # the hint's ../shared/data, seen from a project root beside it
    project.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)
    tiny = ["data.train_size=500", "data.val_size=100", "data.test_size=200", "trainer.max_epochs=1",
            "trainer.threads=1", "hydra.run.dir=run"]  # fmt: skip
    proc = run_cli([*hints.pop().split(), *tiny], project, env={"BSSTUDY_DATA": None})  # as a fresh shell has it
    assert json.loads((project / "run" / "summary.json").read_text())["status"] == "completed", proc.stderr
