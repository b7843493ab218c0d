import math

import pytest
import torch
from omegaconf import OmegaConf

from bsstudy import ConfigError
from bsstudy.config import check_optim
from bsstudy.train.data import TensorData
from bsstudy.train.module import StudyModule, effective_lr, warmup_factor
from bsstudy.train.net import MLP

OPTIM = {
    "name": "sgd",
    "lr": 0.05,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "lr_scaling": "none",
    "base_batch_size": 64,
    "warmup_epochs": 0,
    "accumulate": 1,
    "lr_schedule": None,
    "betas": [0.9, 0.999],
}


def tiny_data(n=64, features=5, classes=3):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)
    return TensorData("tiny", x, y, x[:8], y[:8])


def tiny_module(batch_size, accumulate=1, **optim):
    torch.manual_seed(0)
    data = tiny_data()
    cfg = OmegaConf.create(OPTIM | {"accumulate": accumulate} | optim)
    module = StudyModule(
        MLP(data.input_size, [7], data.num_classes), data, cfg, batch_size, drop_last=False, chunk_samples=1024, seed=0
    )
    module.on_train_epoch_start()
    return module


def test_mlp_has_the_study_architecture():
    net = MLP(784, [1024, 1024], 10)
    assert [(layer.in_features, layer.out_features) for layer in net.layers] == [(784, 1024), (1024, 1024), (1024, 10)]
    log_probs = net(torch.randn(3, 784))
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(3))  # log-softmax output


def test_effective_lr_scalings():
    # linear: eta * B/B0 ; sqrt: eta * sqrt(B/B0)
    assert effective_lr(0.01, "none", 1024, 64) == 0.01
    assert effective_lr(0.01, "linear", 1024, 64) == pytest.approx(0.16)
    assert effective_lr(0.01, "sqrt", 1024, 64) == pytest.approx(0.04)


def test_warmup_rises_linearly_then_stays():
    assert [warmup_factor(t, 4) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_accumulation_equals_one_big_batch(momentum):
    """k micro-batches of B averaged into one step == one step with batch k*B, on the same samples."""
    indices = torch.arange(32)
    accumulated, big = tiny_module(batch_size=8, accumulate=4, momentum=momentum), tiny_module(32, momentum=momentum)
    for module in (accumulated, big):
        optimizer = module.configure_optimizers()
        for _ in range(3):
            module.autograd_step(optimizer, indices)
    for p, q in zip(accumulated.net.parameters(), big.net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)  # float32: only summation order differs
    assert accumulated.optimizer_steps == big.optimizer_steps == 3
    assert accumulated.epoch_plan(0).samples_per_step == 32


def test_one_step_is_sgd_on_the_batch_mean_loss():
    """theta' = theta - lr * grad(mean NLL over the batch), computed independently."""
    module = tiny_module(batch_size=16)
    reference = MLP(5, [7], 3)
    reference.load_state_dict(module.net.state_dict())
    indices = torch.arange(16)
    torch.nn.functional.nll_loss(reference(module.data.x_train[indices]), module.data.y_train[indices]).backward()
    module.autograd_step(module.configure_optimizers(), indices)
    for p, q in zip(module.net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, (q - 0.05 * q.grad).detach())


def test_last_partial_step_keeps_the_remaining_samples():
    module = tiny_module(batch_size=24)  # 64 samples: steps of 24, 24, 16
    assert module.epoch_plan(0).steps == math.ceil(64 / 24) == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lr": 0}, r"optim.lr must be a number > 0 and finite; got 0"),
        ({"lr": -1.0}, r"optim.lr must be a number > 0"),
        ({"lr_scaling": "cubic"}, r"optim.lr_scaling must be one of \['none', 'linear', 'sqrt'\]; got 'cubic'"),
        ({"accumulate": 0}, r"optim.accumulate must be a positive integer"),
        ({"name": "rmsprop"}, r"optim.name must be one of \['sgd', 'adam'\]"),
        ({"name": "adam", "momentum": 0.9}, r"optim.momentum is an SGD setting"),
        ({"momentum": 1.5}, r"optim.momentum must be a number in \[0, 1\); got 1.5"),
    ],
)
def test_bad_optim_settings_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        check_optim(OmegaConf.create(OPTIM | override))
