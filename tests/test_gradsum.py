"""The gradient-sum-norm experiment, checked against plain autograd loops and exact enumeration."""

import copy
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bsstudy import ConfigError
from bsstudy.model import MLP
from bsstudy.probes.gradsum import (
    fast_sgd_gradient_sum,
    frozen_gradient_sums,
    gradient_moments,
    loss_scale,
    power_law_fit,
    predicted_sq_norm,
    sgd_gradient_sums,
)
from bsstudy.run import train
from bsstudy.runfiles import read_metrics

from conftest import compose_run

LAST = ["layers.2.weight"]


def tiny_problem(trials=3, samples=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = MLP(5, [7, 6], 4)
    return net, torch.randn(trials, samples, 5, generator=g), torch.randint(0, 4, (trials, samples), generator=g)


def flat_grad(net, names, loss):
    params = dict(net.named_parameters())
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, [params[n] for n in names])])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("names", [LAST, None], ids=["last", "all"])
def test_frozen_sums_equal_the_sum_of_batch_gradients_from_autograd(reduction, names):
    net, x, y = tiny_problem()
    names = names or [n for n, _ in net.named_parameters()]
    cuts = [10, 12]  # B = 5 uses 10 of the 12 samples; B = 4 and 3 use all 12
    prefix = frozen_gradient_sums(net, names, x, y, cuts)
    for t, batch_size in itertools.product(range(len(x)), [3, 4, 5]):
        used = batch_size * (12 // batch_size)
        expected = 0
        for start in range(0, used, batch_size):
            xb, yb = x[t, start : start + batch_size], y[t, start : start + batch_size]
            expected = expected + flat_grad(net, names, F.nll_loss(net(xb), yb, reduction=reduction))
        got = loss_scale(batch_size, reduction) * prefix[t, cuts.index(used)]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def fast_sums(net, names, x, y, batch_size, reduction, sgd):
    return torch.stack(
        [fast_sgd_gradient_sum(net, names, xi, yi, batch_size, reduction, sgd) for xi, yi in zip(x, y, strict=True)]
    )


@pytest.mark.parametrize("sums", [sgd_gradient_sums, fast_sums], ids=["vmap", "fast_step"])
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 1e-2)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_update_sums_match_a_plain_sgd_loop_on_copies(sums, momentum, weight_decay, reduction):
    net, x, y = tiny_problem()
    names = [n for n, _ in net.named_parameters()]
    lr, batch_size = 0.1, 4
    # A momentum buffer as the run's optimizer would hold it after some steps.
    buffers = {n: 0.01 * torch.randn_like(p) for n, p in net.named_parameters()} if momentum else dict.fromkeys(names)
    sgd = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "buffers": buffers}
    got = sums(net, LAST, x, y, batch_size, reduction, sgd)
    for t in range(len(x)):
        copy_net = copy.deepcopy(net)
        optimizer = torch.optim.SGD(copy_net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        if momentum:
            for p, n in zip(copy_net.parameters(), names, strict=True):
                optimizer.state[p]["momentum_buffer"] = buffers[n].clone()
        expected = 0
        for start in range(0, 12, batch_size):
            xb, yb = x[t, start : start + batch_size], y[t, start : start + batch_size]
            optimizer.zero_grad()
            F.nll_loss(copy_net(xb), yb, reduction=reduction).backward()
            expected = expected + copy_net.layers[2].weight.grad.flatten().clone()
            optimizer.step()
        torch.testing.assert_close(got[t], expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(net.layers[2].weight, tiny_problem()[0].layers[2].weight)  # the run's weights are untouched


def test_gradient_moments_match_per_sample_autograd():
    net, x, y = tiny_problem(trials=1, samples=40)
    x, y = x[0], y[0]
    per_sample = torch.stack([flat_grad(net, LAST, F.nll_loss(net(x[j : j + 1]), y[j : j + 1])) for j in range(40)])
    g_sq, trace = gradient_moments(net, LAST, x, y)
    mean = per_sample.double().mean(0)
    assert g_sq == pytest.approx(mean.square().sum().item(), rel=1e-5)
    assert trace == pytest.approx((per_sample.double() - mean).square().sum(1).mean().item(), rel=1e-5)


@pytest.mark.parametrize("n,scale", [(1, 1.0), (2, 0.5), (3, 1.0)])
def test_predicted_norm_is_the_exact_mean_over_all_draws_without_replacement(n, scale):
    g = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.3
    mean = g.mean(0)
    g_sq, trace = mean.square().sum().item(), (g - mean).square().sum(1).mean().item()
    draws = [scale * g[list(s)].sum(0) for s in itertools.combinations(range(7), n)]
    exact = np.mean([d.square().sum().item() for d in draws])
    assert predicted_sq_norm(n, scale, g_sq, trace, n_train=7) == pytest.approx(exact, rel=1e-12)


def test_power_law_fit_recovers_the_exponent():
    batch_sizes = np.array([1, 2, 4, 8, 16, 32, 64])
    noise = np.exp(np.random.default_rng(0).normal(0, 0.05, len(batch_sizes)))
    fit = power_law_fit(batch_sizes, 3.0 * batch_sizes**0.5 * noise)
    assert fit["ci95"][0] < 0.5 < fit["ci95"][1] and abs(fit["k"] - 0.5) < 0.05
    exact = power_law_fit(batch_sizes, 2.0 * batch_sizes**-1.0)
    assert exact["k"] == pytest.approx(-1.0)


def gradsum_run(run_dir, *extra):
    overrides = ["data=synthetic", "model.hidden_sizes=[24]", "data.batch_size=256", "trainer.max_epochs=2"]
    return compose_run(run_dir, [*overrides, *extra])


PROBE = ["probes=[gradsum]", "probes.gradsum.at_epochs=[1,2]", "probes.gradsum.trials=6",
         "probes.gradsum.batch_sizes=[1,3,64,1024]", "probes.gradsum.trials_per_pass=4"]  # fmt: skip


@pytest.mark.parametrize("update", [False, True])
def test_gradsum_probe_writes_its_tables_reproducibly_and_leaves_training_alone(tmp_path, update):
    setting = f"probes.gradsum.update={str(update).lower()}"
    runs = {name: tmp_path / name for name in ("plain", "probe", "again")}
    train(gradsum_run(runs["plain"]))
    for name in ("probe", "again"):
        summary = train(gradsum_run(runs[name], *PROBE, setting))
    plain, probed = read_metrics(runs["plain"] / "metrics.csv"), read_metrics(runs["probe"] / "metrics.csv")
    untimed = [{k: v for k, v in row.items() if not k.endswith("_time_s")} for row in plain]
    assert untimed == [{k: row[k] for k in untimed[0]} for row in probed]
    assert all(row["probe_time_s"] > 0 for row in probed[1:])

    out = runs["probe"] / "probes" / "gradsum"
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 * 4 * 6 and set(trials["regime"]) == {1, 2}
    assert trials.equals(pd.read_csv(runs["again"] / "probes" / "gradsum" / "trials.csv"))
    table = pd.read_csv(out / "summary.csv")
    regime = table[table["regime"] == 2].set_index("batch_size")
    norms = trials[trials["regime"] == 2].groupby("batch_size")["norm"]
    np.testing.assert_allclose(regime["mean"], norms.mean(), rtol=1e-12)
    np.testing.assert_allclose(regime["std_rel"], norms.std() / norms.mean()[1024], rtol=1e-12)
    assert list(regime["steps"]) == [1024, 341, 16, 1]
    fit = json.loads((out / "fit.json").read_text())
    assert json.loads((runs["again"] / "probes" / "gradsum" / "fit.json").read_text()) == summary["probes"]["gradsum"]
    assert set(fit) == {"1", "2"}
    expected_k = np.polyfit(np.log([1, 3, 64, 1024]), np.log(regime["mean"].to_numpy()), 1)[0]
    assert fit["2"]["k"] == pytest.approx(expected_k, rel=1e-9)
    assert fit["2"]["settings"]["update"] is update


def test_frozen_common_samples_differ_from_independent_samples_only_in_the_draws(tmp_path):
    train(gradsum_run(tmp_path / "common", *PROBE))
    train(gradsum_run(tmp_path / "own", *PROBE, "probes.gradsum.common_samples=false"))
    common = pd.read_csv(tmp_path / "common" / "probes" / "gradsum" / "trials.csv")
    own = pd.read_csv(tmp_path / "own" / "probes" / "gradsum" / "trials.csv")
    # B = 1 and B = 64 use all 1024 samples: with common samples their sums differ by exactly the factor 64
    by_b = common[common["regime"] == 1].pivot(index="trial", columns="batch_size", values="norm")
    np.testing.assert_allclose(by_b[1], 64 * by_b[64], rtol=1e-4)
    assert not np.allclose(own[own["batch_size"] == 1]["norm"], common[common["batch_size"] == 1]["norm"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("probes.gradsum.at_epochs=[3]", "beyond trainer.max_epochs"),
        ("probes.gradsum.reduction=median", "probes.gradsum.reduction must be one of"),
        ("probes.gradsum.batch_sizes=[2048]", "at most probes.gradsum.samples"),
        ("probes.gradsum.params=[layers.9.weight]", "probes.gradsum.params must be"),
    ],
)
def test_bad_gradsum_settings_fail_before_training(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(gradsum_run(tmp_path, *PROBE, override))
    assert not (tmp_path / "probes" / "gradsum" / "trials.csv").exists()
