"""One batch-norm convention (model.geometry_bn) for every geometry measure, and the noise scale with batch norm."""

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call

from bsstudy import ConfigError
from bsstudy.analysis.geometry.__main__ import main as geometry_main
from bsstudy.probes.hessian import Hessian
from bsstudy.probes.interpolation import Interpolation
from bsstudy.probes.landscape import Landscape
from bsstudy.probes.noise_scale import batch_gradient_sq_norms
from bsstudy.probes.sharpness import Sharpness
from bsstudy.runfolder import read_metrics
from bsstudy.train.data import TensorData
from bsstudy.train.net import MLP, build_net
from bsstudy.train.run import train

from conftest import compose_run


def trained_bn_net(seed: int, geometry_bn: str, x: torch.Tensor) -> MLP:
    """A batch-norm MLP whose running statistics differ from the batch statistics of x."""
    torch.manual_seed(seed)
    net = MLP(6, [8, 8], 3, batch_norm=True, geometry_bn=geometry_bn)
    with torch.no_grad():
        net.train()(3 * x[:20] + 1)  # one momentum update from shifted inputs
    return net.eval()


def direct_loss_function(net: MLP, geometry_bn: str, x: torch.Tensor, y: torch.Tensor):
    """(theta, f) with f(theta) the loss of `net` evaluated as the convention says, written out directly: eval
    mode (running), or the network in training mode on all of x at once (batch statistics), on a copy so that
    no running statistic of `net` moves."""
    net = copy.deepcopy(net).train(geometry_bn == "batch")
    names, params = zip(*net.named_parameters(), strict=True)

    def f(theta):
        pieces = theta.split([p.numel() for p in params])
        weights = {n: t.view_as(p) for n, t, p in zip(names, pieces, params, strict=True)}
        return F.nll_loss(functional_call(net, weights, (x,)), y)

    return torch.cat([p.detach().reshape(-1) for p in params]), f


def direct_loss(net: MLP, geometry_bn: str, x: torch.Tensor, y: torch.Tensor) -> float:
    theta, f = direct_loss_function(net, geometry_bn, x, y)
    with torch.no_grad():
        return f(theta).item()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return TensorData("toy", torch.randn(60, 6, generator=g), torch.randint(0, 3, (60,), generator=g),
                      torch.randn(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g))  # fmt: skip


@pytest.mark.slow  # every measure, twice
@pytest.mark.parametrize("geometry_bn", ["running", "batch"])
def test_every_geometry_measure_gives_the_loss_of_the_net_evaluated_under_the_convention(tmp_path, data, geometry_bn):
    net_a, net_b = trained_bn_net(1, geometry_bn, data.x_train), trained_bn_net(2, geometry_bn, data.x_train)
    expected_a, expected_b = (direct_loss(n, geometry_bn, data.x_train, data.y_train) for n in (net_a, net_b))
    other = "batch" if geometry_bn == "running" else "running"
    assert expected_a != pytest.approx(direct_loss(net_a, other, data.x_train, data.y_train), rel=1e-3)  # it matters
    state = copy.deepcopy(net_a.state_dict())
    common = {"train_samples": None, "chunk_size": 16}  # chunks of 16 do not split the batch statistics
    sharpness = Sharpness(tmp_path / "s", eps=[1e-3], iterations=2, subspace_dim=0, random_samples=2, **common)
    landscape = Landscape(tmp_path / "l", points=3, curve_points=3, test_samples=0, plot=False, **common)
    hessian = Hessian(tmp_path / "h", ncv=5, max_hvps=200, trace_max_samples=2, trace_min_samples=2, **common)
    interpolation = Interpolation(tmp_path / "i", points=2, alpha_min=0.0, alpha_max=1.0, test_samples=None, **common)
    summaries = {
        "sharpness": sharpness.measure(net_a, data, seed=0),
        "landscape": landscape.measure(net_a, data, seed=0),
        "hessian": hessian.measure(net_a, data, seed=0),
        "interpolation": interpolation.measure(net_a, net_b, data, seed=0, meta={}),
    }
    assert {name: s["geometry_bn"] for name, s in summaries.items()} == dict.fromkeys(summaries, geometry_bn)
    assert summaries["sharpness"]["loss"] == pytest.approx(expected_a, rel=1e-5)
    assert summaries["landscape"]["center_train_loss"] == pytest.approx(expected_a, rel=1e-5)
    # alpha = 0 and 1 are the two networks themselves, train and test, under the same convention
    assert summaries["interpolation"]["train_loss_a"] == pytest.approx(expected_a, rel=1e-5)
    assert summaries["interpolation"]["train_loss_b"] == pytest.approx(expected_b, rel=1e-5)
    table = pd.read_csv(tmp_path / "i" / "interpolation.csv")
    expected_test = [direct_loss(n, geometry_bn, data.x_test, data.y_test) for n in (net_a, net_b)]
    assert table.test_loss.tolist() == pytest.approx(expected_test, rel=1e-5)
    # the Hessian is that of the same function: its largest eigenvalue is the dense Hessian's (autograd)
    theta, f = direct_loss_function(net_a, geometry_bn, data.x_train, data.y_train)
    dense = torch.autograd.functional.hessian(f, theta).double()
    assert summaries["hessian"]["lambda_max"] == pytest.approx(torch.linalg.eigvalsh(dense).max().item(), rel=1e-3)
    assert all(torch.equal(state[k], v) for k, v in net_a.state_dict().items())  # the measured net is untouched


def test_a_bad_geometry_bn_is_a_config_error_naming_the_key():
    cfg = OmegaConf.create({"hidden_sizes": [4], "batch_norm": True, "geometry_bn": "train"})
    with pytest.raises(ConfigError, match=r"model\.geometry_bn must be one of \['running', 'batch'\]; got 'train'"):
        build_net(cfg, 6, 3)
    with pytest.raises(SystemExit):  # the offline command's --geometry-bn takes the same two values
        geometry_main(["hessian", "some_run", "--geometry-bn", "train"])


def test_noise_scale_with_batch_norm_takes_eval_mode_gradients_and_leaves_the_net_as_it_was():
    torch.manual_seed(0)
    net, x, y = MLP(6, [9], 4, batch_norm=True), torch.randn(32, 6), torch.randint(0, 4, (32,))
    net.train()(x)  # running statistics that differ from every batch's own
    state = copy.deepcopy(net.state_dict())
    reference = copy.deepcopy(net).eval()
    grads = []
    for start in range(0, 32, 8):  # per batch of 8: the gradient of the eval-mode loss, by plain autograd
        reference.zero_grad()
        F.nll_loss(reference(x[start : start + 8]), y[start : start + 8]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in reference.parameters()]))
    grads = torch.stack(grads)
    small_sq, big_sq = batch_gradient_sq_norms(net, x, y, 8)
    assert small_sq == pytest.approx(grads.square().sum(1).mean().item(), rel=1e-5)
    assert big_sq == pytest.approx(grads.mean(0).square().sum().item(), rel=1e-5)
    assert net.training and all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_noise_scale_probe_runs_with_keskar_f1_and_does_not_change_the_training(tmp_path):
    overrides = ["data=synthetic", "model=keskar_f1", "model.hidden_sizes=[16,16]", "trainer.max_epochs=1",
                 "data.batch_size=32", "trainer.chunk_samples=512"]  # fmt: skip
    train(compose_run(tmp_path / "plain", overrides))
    probe = ["probes=[noise_scale]", "probes.noise_scale.small_batch=16", "probes.noise_scale.big_batch=256"]
    summary = train(compose_run(tmp_path / "probed", [*overrides, *probe]))
    assert summary["status"] == "completed", summary.get("error")
    plain, probed = (read_metrics(tmp_path / name / "metrics.csv") for name in ("plain", "probed"))
    for a, b in zip(plain, probed, strict=True):
        assert {k: v for k, v in a.items() if not k.endswith("_time_s")} == {
            k: v for k, v in b.items() if k in a and not k.endswith("_time_s")
        }
    assert probed[-1]["noise_scale"] > 0 and probed[-1]["grad_sq_norm"] > 0
    assert summary["probes"]["noise_scale"]["batch_norm"].startswith("eval mode")
