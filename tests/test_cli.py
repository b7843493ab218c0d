"""What `python -m bsstudy` prints, as a user sees it (HYDRA_FULL_ERROR unset): no noise from Lightning."""

from conftest import run_cli

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
