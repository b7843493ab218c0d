"""A probe is one module + one config file: the example probe (weight_norm) runs, measures what it says, and
appears in the report through the generic probe section, with no other file naming it."""

import subprocess

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from bsstudy import ConfigError
from bsstudy.analysis.report import build_report
from bsstudy.config import check_settings
from bsstudy.probes.weight_norm import WeightNorm, weight_norm
from bsstudy.runfolder import RunFolder
from bsstudy.train.module import EpochRecord
from bsstudy.train.probe import build_probe
from bsstudy.train.run import train

from conftest import ROOT, compose_run

TINY = ["data=synthetic", "model.hidden_sizes=[16]", "trainer.max_epochs=2", "probes=[weight_norm]"]


def test_the_example_probe_is_named_only_by_its_module_its_config_and_its_tests():
    files = subprocess.run(
        ["git", "grep", "--untracked", "-l", "weight_norm", "--", "bsstudy", "hydra_plugins"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(files) == ["bsstudy/conf/probes/weight_norm.yaml", "bsstudy/probes/weight_norm.py"]


def test_the_example_probe_measures_the_weight_norm_and_appears_in_the_report(tmp_path):
    for batch_size in (16, 64):
        train(compose_run(tmp_path / f"B{batch_size}", [*TINY, f"data.batch_size={batch_size}"]))
    run = RunFolder(tmp_path / "B16")
    metrics = run.metrics()
    assert [r["epoch"] for r in metrics] == [0, 1, 2] and metrics[0].get("weight_norm") is None
    epochs_csv = (run.probe_dir("weight_norm") / "epochs.csv").read_text().splitlines()
    assert epochs_csv[0].startswith("epoch,weight_norm,norm_") and len(epochs_csv) == 4
    final = run.summary()["probes"]["weight_norm"]
    assert final["final_weight_norm"] == pytest.approx(metrics[-1]["weight_norm"])
    net = torch.load(run.checkpoints / "last.ckpt", weights_only=False)["state_dict"]
    by_hand = torch.cat([v.flatten() for k, v in net.items() if k.startswith("net.")]).norm().item()
    assert final["final_weight_norm"] == pytest.approx(by_hand, rel=1e-6)

    report = (build_report(tmp_path) / "report.md").read_text()
    assert "## Probe: weight_norm" in report
    assert "final_weight_norm" in report and "Files in <run>/probes/weight_norm/: epochs.csv" in report
    assert (tmp_path / "report" / "figures" / "weight_norm_epochs.png").stat().st_size > 1000


def test_a_probe_talks_to_the_training_through_the_epoch_record():
    net = torch.nn.Linear(3, 2)
    record = EpochRecord()
    record.columns |= {"a": 1.0}
    record.track_update_norms(4, 2, torch.device("cpu"))
    record.start_epoch()
    assert record.columns == {} and record.probe_time_s == 0.0 and record.update_norms_of(3) is not None
    assert record.take_update_norms().shape == (4, 2) and record.update_norms_of(0) is None
    assert weight_norm(net) == pytest.approx(torch.cat([net.weight.flatten(), net.bias]).norm().item())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"per_layer": "yes"}, r"^probes.weight_norm.per_layer must be true or false; got 'yes'$"),
        ({"per_layr": True}, r"^probes.weight_norm.per_layr is not a setting; allowed: per_layer$"),
    ],
)
def test_a_probe_declares_its_settings_and_a_bad_one_is_named(tmp_path, settings, message):
    cfg = OmegaConf.create({"_target_": "bsstudy.probes.weight_norm.WeightNorm", **settings})
    with pytest.raises(ConfigError, match=message):
        build_probe("weight_norm", cfg, tmp_path)
    assert isinstance(build_probe("weight_norm", OmegaConf.create({"_target_": cfg._target_}), tmp_path), WeightNorm)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "bsstudy" / "conf" / "probes").glob("*.yaml")))
def test_every_probe_config_holds_only_settings_its_class_declares(name, tmp_path):
    cfg = OmegaConf.load(ROOT / "bsstudy" / "conf" / "probes" / f"{name}.yaml")
    declared = get_class(cfg._target_).settings
    assert set(cfg) - {"_target_"} == set(declared), f"{name}.yaml and {cfg._target_}.settings differ"
    check_settings(cfg, declared, f"probes.{name}")  # the shipped defaults pass their own rules
