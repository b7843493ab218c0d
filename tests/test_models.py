"""`model` builds any torch.nn.Module through its `_target_`: the MLP (with its fast step) and LeNet-5 (autograd)."""

import pytest
import torch
from omegaconf import OmegaConf

from bsstudy import ConfigError
from bsstudy.config import check_config, fast_step_blocker
from bsstudy.runfolder import RunFolder
from bsstudy.train.net import MLP, LeNet5, build_net
from bsstudy.train.run import train

from conftest import compose_run

CNN_RUN = [
    "model=cnn", "data=synthetic", "data.input_size=144", "data.n_train=256", "data.n_test=64", "data.val_size=64",
    "data.batch_size=32", "trainer.max_epochs=2", "trainer.threads=1",
]  # fmt: skip


def test_the_model_group_builds_the_class_its_target_names(tmp_path):
    assert isinstance(build_net(compose_run(tmp_path, []).model, 784, 10), MLP)
    cnn = build_net(compose_run(tmp_path, ["model=cnn"]).model, 784, 10)
    assert isinstance(cnn, LeNet5)
    assert cnn(torch.zeros(3, 784)).shape == (3, 10)
    # LeNet-5 on 28x28: 6x28x28 -> pool 14 -> 16x10x10 -> pool 5: 400 inputs to the first linear layer (LeCun 1998)
    assert cnn.layers[2].in_features == 16 * 5 * 5


def test_a_config_recorded_before_model_target_is_the_mlp():
    recorded = OmegaConf.create({"hidden_sizes": [8], "batch_norm": False, "geometry_bn": "running"})
    assert isinstance(build_net(recorded, 16, 3), MLP)


def test_the_cnn_refuses_inputs_that_are_no_square_image():
    with pytest.raises(ConfigError, match=r"model=cnn needs square images of at least 12x12 pixels.*32 inputs"):
        LeNet5(32, 10)


def test_a_key_of_another_model_is_refused_by_name(tmp_path):
    cfg = compose_run(tmp_path, ["model=cnn", "+model.batch_norm=true"])
    with pytest.raises(ConfigError, match=r"model\.batch_norm"):
        check_config(cfg)


def test_a_target_that_cannot_be_built_is_one_line(tmp_path):
    cfg = compose_run(tmp_path, ["model._target_=torch.nn.NoSuchNet"])
    with pytest.raises(ConfigError, match=r"^model\._target_=torch\.nn\.NoSuchNet cannot be built: "):
        build_net(cfg.model, 16, 3)


def test_the_fast_step_is_the_mlps_alone(tmp_path):
    cfg = compose_run(tmp_path, ["model=cnn"])
    assert fast_step_blocker(cfg.optim, cfg.model) == "model=cnn (the fast step implements the MLP only)"
    with pytest.raises(ConfigError, match=r"trainer\.fast_step=on.*model=cnn"):
        check_config(compose_run(tmp_path, ["model=cnn", "trainer.fast_step=on"]))


@pytest.mark.slow
def test_the_cnn_trains_with_the_per_epoch_probes(tmp_path):
    cfg = compose_run(tmp_path, [*CNN_RUN, "probes=[update_norms,weight_norm,noise_scale]",
                                 "probes.noise_scale.small_batch=16", "probes.noise_scale.big_batch=128"])  # fmt: skip
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["model"] == "cnn" and summary["fast_step"] is False
    rows = RunFolder(tmp_path).metrics()
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it learns
    assert {"epoch_distance", "weight_norm"} <= rows[-1].keys()
    update_norms = (tmp_path / "probes" / "update_norms" / "epoch_002.npz").exists()
    assert update_norms and (tmp_path / "probes" / "noise_scale" / "measurements.csv").exists()
