"""Optional features name the extra that installs them, in one line, before anything runs."""

import pytest

from bsstudy import UsageError, extras
from bsstudy.train.run import check_config

from conftest import compose_run


@pytest.fixture
def nothing_optional_installed(monkeypatch):
    monkeypatch.setattr(extras, "is_installed", lambda module: not module.startswith(("wandb", "hydra_plugins")))


def test_logger_wandb_without_the_extra_names_it(tmp_path, nothing_optional_installed):
    with pytest.raises(UsageError, match=r"logger=wandb needs wandb, which is not installed: .*bsstudy\[wandb\]"):
        check_config(compose_run(tmp_path, ["data=synthetic", "logger=wandb"]))


@pytest.mark.parametrize("launcher", ["parallel", "slurm", "submitit_local"])
def test_a_launcher_without_the_extra_names_it(nothing_optional_installed, launcher):
    with pytest.raises(UsageError, match=rf"hydra/launcher={launcher} needs .*bsstudy\[launchers\]"):
        extras.require_launchers(["-m", f"hydra/launcher={launcher}", "data.batch_size=2,64"])


def test_installed_extras_pass_and_the_real_lookup_finds_them():
    assert extras.is_installed("wandb") and extras.is_installed("hydra_plugins.hydra_joblib_launcher")
    assert not extras.is_installed("no_such_package.sub")
    extras.require_launchers(["-m", "hydra/launcher=parallel"])  # the dev install has the launchers
