"""The hand-written fast SGD step must give the same training as autograd + torch.optim.SGD."""

import pytest
import torch
from omegaconf import OmegaConf

from bsstudy import ConfigError
from bsstudy.data import TensorData
from bsstudy.model import MLP, StudyModule
from bsstudy.run import train
from bsstudy.runfiles import read_metrics

from conftest import compose_run

OPTIM = {"name": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "lr_scaling": "none",
         "base_batch_size": 64, "warmup_epochs": 0, "accumulate": 1, "lr_schedule": None}  # fmt: skip


def trained(fast: bool, batch_size: int, steps: int, **optim) -> StudyModule:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2048, 20, generator=g), torch.randint(0, 10, (2048,), generator=g)
    torch.manual_seed(0)
    module = StudyModule(MLP(20, [64, 32], 10), TensorData("t", x, y, x, y), OmegaConf.create(OPTIM | optim),
                         batch_size, drop_last=False, chunk_samples=4096, seed=0, fast_step=fast)  # fmt: skip
    optimizer = module.configure_optimizers()
    module.on_train_epoch_start()
    for step in range(steps):
        module.take_step(optimizer, module.order[step * batch_size : (step + 1) * batch_size])
    return module


@pytest.mark.slow  # 300 single-sample steps, three times: 20-25 s at B=2 on 2 cores
@pytest.mark.parametrize("batch_size", [2, 64])
@pytest.mark.parametrize("optim", [{}, {"momentum": 0.9, "weight_decay": 5e-4}], ids=["plain", "momentum+wd"])
def test_fast_step_gives_the_same_parameters_as_autograd(batch_size, optim):
    steps = 300 if batch_size == 2 else 30
    slow, fast = trained(False, batch_size, steps, **optim), trained(True, batch_size, steps, **optim)
    for (name, p), q in zip(slow.net.named_parameters(), fast.net.parameters(), strict=True):
        # float32, same math in another summation order: differences stay at rounding level
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
        assert not torch.equal(p, trained(False, batch_size, 0, **optim).net.get_parameter(name))  # it did train
    torch.testing.assert_close(fast.epoch_loss_sum, slow.epoch_loss_sum, rtol=1e-5, atol=0)


def test_fast_step_gives_the_same_per_epoch_metrics(tmp_path):
    overrides = ["data=synthetic", "trainer.max_epochs=2", "data.batch_size=8"]
    fast = train(compose_run(tmp_path / "fast", [*overrides, "trainer.fast_step=on"]))
    slow = train(compose_run(tmp_path / "slow", [*overrides, "trainer.fast_step=off"]))
    assert fast["fast_step"] and not slow["fast_step"]
    rows = [read_metrics(tmp_path / name / "metrics.csv") for name in ("fast", "slow")]
    for a, b in zip(*rows, strict=True):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "train_loss_running"):
            expected = None if b[key] is None else pytest.approx(b[key], rel=1e-4, abs=1e-4)
            assert a[key] == expected, (a["epoch"], key)


@pytest.mark.parametrize(
    ("overrides", "uses_fast_step"),
    [([], True), (["optim=adam"], False), (["optim.accumulate=2"], False), (["trainer.fast_step=off"], False)],
)
def test_auto_uses_the_fast_step_only_where_it_is_exact(tmp_path, overrides, uses_fast_step):
    summary = train(compose_run(tmp_path, ["data=synthetic", "trainer.max_epochs=1", *overrides]))
    assert summary["fast_step"] is uses_fast_step


def test_forcing_the_fast_step_where_it_is_not_exact_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.fast_step=on is not exact with optim.name=adam"):
        train(compose_run(tmp_path, ["data=synthetic", "optim=adam", "trainer.fast_step=on"]))
