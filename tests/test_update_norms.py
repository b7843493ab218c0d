"""The update-norm probe: every number checked against parameter differences computed here."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bsstudy.runfolder import read_metrics
from bsstudy.train.data import TensorData
from bsstudy.train.module import StudyModule
from bsstudy.train.net import MLP
from bsstudy.train.run import train

from conftest import compose_run

OPTIM = {"name": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "lr_scaling": "none",
         "base_batch_size": 64, "warmup_epochs": 0, "accumulate": 1, "lr_schedule": None}  # fmt: skip


def module_for(batch_size: int, fast: bool, **optim) -> StudyModule:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 20, generator=g), torch.randint(0, 10, (512,), generator=g)
    torch.manual_seed(0)
    module = StudyModule(MLP(20, [96, 80], 10), TensorData("t", x, y, x, y), OmegaConf.create(OPTIM | optim),
                         batch_size, drop_last=False, chunk_samples=4096, seed=0, fast_step=fast)  # fmt: skip
    module.on_train_epoch_start()
    return module


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "autograd"])
@pytest.mark.parametrize("batch_size", [2, 16, 128])  # fast step: rank-1 updates, Gram norms, explicit products
@pytest.mark.parametrize("optim", [{}, {"momentum": 0.9, "weight_decay": 1e-3}], ids=["plain", "momentum+wd"])
def test_step_norms_equal_the_parameter_change_of_each_step(fast, batch_size, optim):
    module = module_for(batch_size, fast, **optim)
    optimizer = module.configure_optimizers()
    for step in range(3):
        before = [p.detach().clone() for p in module.net.parameters()]
        reported = torch.zeros(6)
        module.take_step(optimizer, module.order[step * batch_size : (step + 1) * batch_size], reported)
        module.deferred.flush([layer.weight for layer in module.net.layers])  # as at the end of every chunk
        # ||theta_{t+1} - theta_t||^2 of each parameter tensor
        after = list(module.net.parameters())
        expected = torch.stack([(p.detach() - b).square().sum() for p, b in zip(after, before, strict=True)])
        torch.testing.assert_close(reported, expected, rtol=2e-3, atol=1e-12)  # float32 cancellation in p - b


def test_epoch_distance_equals_the_distance_between_checkpoints(tmp_path):
    train(compose_run(tmp_path, ["data=synthetic", "trainer.max_epochs=2", "probes=[update_norms]",
                                 "checkpoint.at_epochs=[1,2]"]))  # fmt: skip
    theta = {
        e: torch.cat([v.reshape(-1) for v in torch.load(tmp_path / "checkpoints" / f"epoch={e}.ckpt",
                                                         weights_only=False)["state_dict"].values()])
        for e in (1, 2)
    }  # fmt: skip
    theta0 = torch.load(tmp_path / "probes" / "update_norms" / "theta0.pt")
    rows = read_metrics(tmp_path / "probes" / "update_norms" / "epochs.csv")
    assert rows[1]["epoch_distance"] == pytest.approx(torch.linalg.vector_norm(theta[2] - theta[1]).item(), rel=1e-5)
    assert rows[1]["distance_from_init"] == pytest.approx(torch.linalg.vector_norm(theta[2] - theta0).item(), rel=1e-5)
    steps = np.load(tmp_path / "probes" / "update_norms" / "epoch_002.npz")
    assert len(steps["total"]) == rows[1]["steps"] == 32  # 2048 samples / B=64
    assert rows[1]["update_norm_median"] == pytest.approx(float(np.median(steps["total"])), rel=1e-6)
    # the per-layer norms add up: total^2 = sum of layer^2
    np.testing.assert_allclose(steps["total"] ** 2, sum(steps[f"layer_{i}"] ** 2 for i in range(3)), rtol=1e-5)


@pytest.mark.parametrize("fast_step", ["on", "off"])
def test_update_norm_probe_does_not_change_the_training(tmp_path, fast_step):
    overrides = ["data=synthetic", "trainer.max_epochs=2", "data.batch_size=8", f"trainer.fast_step={fast_step}"]
    train(compose_run(tmp_path / "plain", overrides))
    train(compose_run(tmp_path / "probed", [*overrides, "probes=[update_norms]"]))
    plain, probed = (read_metrics(tmp_path / name / "metrics.csv") for name in ("plain", "probed"))
    for a, b in zip(plain, probed, strict=True):
        assert {k: v for k, v in a.items() if not k.endswith("_time_s")} == {
            k: v for k, v in b.items() if k in a and not k.endswith("_time_s")
        }
    assert probed[-1]["epoch_distance"] > 0
