"""The gradient-noise-scale probe against gradients with a known mean and covariance."""

import pytest
import torch
import torch.nn.functional as F

from bsstudy.probes.noise_scale import batch_gradient_sq_norms, noise_scale_estimates
from bsstudy.runfolder import read_metrics
from bsstudy.train.net import MLP
from bsstudy.train.run import train

from conftest import compose_run


def test_two_batch_estimator_recovers_a_known_noise_scale():
    """Per-sample gradients g = G + eps, eps ~ N(0, diag(s)): |G|^2, tr(Sigma) = sum(s) and B_simple are known."""
    gen = torch.Generator().manual_seed(0)
    dim, b, big = 40, 8, 64
    mean, variances = 0.3 * torch.randn(dim, generator=gen), 2 * torch.rand(dim, generator=gen)
    small_sq, big_sq = [], []
    for _ in range(4000):
        samples = mean + torch.randn(big, dim, generator=gen) * variances.sqrt()
        batch_means = samples.reshape(big // b, b, dim).mean(1)
        small_sq.append(batch_means.square().sum(1).mean().item())
        big_sq.append(batch_means.mean(0).square().sum().item())
    g_sq, trace = noise_scale_estimates(sum(small_sq) / 4000, sum(big_sq) / 4000, b, big)
    assert g_sq == pytest.approx(mean.square().sum().item(), rel=0.05)
    assert trace == pytest.approx(variances.sum().item(), rel=0.03)
    assert trace / g_sq == pytest.approx((variances.sum() / mean.square().sum()).item(), rel=0.07)


def test_vmapped_batch_gradients_match_a_plain_autograd_loop():
    torch.manual_seed(0)
    net, x, y = MLP(6, [9], 4), torch.randn(32, 6), torch.randint(0, 4, (32,))
    grads = []
    for start in range(0, 32, 8):
        net.zero_grad()
        F.nll_loss(net(x[start : start + 8]), y[start : start + 8]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    grads = torch.stack(grads)
    small_sq, big_sq = batch_gradient_sq_norms(net, x, y, 8)
    assert small_sq == pytest.approx(grads.square().sum(1).mean().item(), rel=1e-5)
    assert big_sq == pytest.approx(grads.mean(0).square().sum().item(), rel=1e-5)


def test_noise_scale_probe_logs_per_epoch_and_does_not_change_the_training(tmp_path):
    overrides = ["data=synthetic", "trainer.max_epochs=2", "data.batch_size=16", "trainer.chunk_samples=512"]
    train(compose_run(tmp_path / "plain", overrides))
    probe = ["probes=[noise_scale]", "probes.noise_scale.small_batch=16", "probes.noise_scale.big_batch=256"]
    train(compose_run(tmp_path / "probed", [*overrides, *probe]))
    plain, probed = (read_metrics(tmp_path / name / "metrics.csv") for name in ("plain", "probed"))
    for a, b in zip(plain, probed, strict=True):
        assert {k: v for k, v in a.items() if not k.endswith("_time_s")} == {
            k: v for k, v in b.items() if k in a and not k.endswith("_time_s")
        }
    assert probed[-1]["noise_scale"] > 0 and probed[-1]["grad_trace_cov"] > 0
    measurements = read_metrics(tmp_path / "probed" / "probes" / "noise_scale" / "measurements.csv")
    assert [m["epoch"] for m in measurements] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert [m["optimizer_steps"] for m in measurements] == [32 * k for k in range(1, 9)]  # 4 chunks of 32 steps
