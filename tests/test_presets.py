"""Every experiment preset under bsstudy/conf/experiment/ composes, passes the config checks and builds its
probes: a preset a user copies is a working starting point."""

import pytest

from bsstudy import CONF_DIR
from bsstudy.train.probe import build_probe
from bsstudy.train.run import check_config, selected_probes

from conftest import compose_run

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_composes_and_passes_the_checks(tmp_path, preset):
    cfg = compose_run(tmp_path, [f"experiment={preset}"])
    check_config(cfg)
    for name, probe_cfg in selected_probes(cfg.probes).items():
        build_probe(name, probe_cfg, tmp_path / "probes" / name)  # each probe checks its settings when built


def test_a_preset_with_its_probes_left_out_keeps_no_probe(tmp_path, caplog):
    cfg = compose_run(tmp_path, ["experiment=keskar_sharpness", "probes=[]"])
    check_config(cfg)
    assert cfg.probes and selected_probes(cfg.probes) == {}  # the preset's settings stay, no probe is built
    assert "probes.sharpness has settings but is not among the selected probes" in caplog.text


def test_there_are_presets_to_check():
    assert {"generalization", "gradsum", "sharpness", "keskar_sharpness", "speed"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_debug_composes_with_every_preset(tmp_path, preset):
    cfg = compose_run(tmp_path, [f"experiment={preset}", "debug=default"])
    check_config(cfg)
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.detect_anomaly is True and cfg.data.train_size == 1100
