"""The gradient-sum-norm experiment, checked against plain autograd loops and exact enumeration."""

import copy
import itertools
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bsstudy import CONF_DIR, ConfigError
from bsstudy.analysis.report.dynamics import gradsum_section
from bsstudy.analysis.report.runs import read_sweep
from bsstudy.probes.gradsum import (
    GradSum,
    bootstrap_exponent,
    fast_sgd_gradient_sum,
    frozen_gradient_sums,
    gradient_moments,
    log_log_slopes,
    loss_scale,
    power_law_fit,
    predicted_sq_norm,
    sgd_gradient_sums,
    single_batch_norms,
    summarize,
    trial_indices,
)
from bsstudy.runfolder import read_metrics
from bsstudy.train.net import MLP
from bsstudy.train.run import train

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
    assert abs(fit["k"] - 0.5) < 0.05
    exact = power_law_fit(batch_sizes, 2.0 * batch_sizes**-1.0)
    assert exact["k"] == pytest.approx(-1.0) and exact["intercept"] == pytest.approx(np.log(2.0))


GRID = np.array([1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256, 512, 1024])


@pytest.mark.parametrize("paired", [False, True], ids=["independent", "paired"])
def test_bootstrap_interval_covers_the_true_exponent_of_synthetic_power_laws(paired):
    # norms = 2 B^0.5 * lognormal(0, 0.5): E norm = 2 e^{0.125} B^0.5, so the means follow B^0.5 exactly
    generator = np.random.default_rng(7)
    repetitions, trials, covered, widths = 40, 12, 0, []
    for _ in range(repetitions):
        noise = np.exp(generator.normal(0, 0.5, (1, trials) if paired else (len(GRID), trials)))
        fit = bootstrap_exponent(GRID, 2.0 * GRID[:, None] ** 0.5 * noise, generator, 1000, paired)
        covered += fit["ci95"][0] <= 0.5 <= fit["ci95"][1]
        widths.append(fit["ci95"][1] - fit["ci95"][0])
    assert covered >= 0.85 * repetitions
    assert 0 < np.median(widths) < 0.2  # informative: an interval that covers everything would pass the line above


def test_bootstrap_interval_shrinks_with_more_trials_and_excludes_a_wrong_exponent():
    generator = np.random.default_rng(3)
    noisy = GRID[:, None] ** -0.8 * np.exp(generator.normal(0, 0.3, (len(GRID), 400)))
    fit = bootstrap_exponent(GRID, noisy, np.random.default_rng(0), 2000, paired=False)
    assert fit["ci95"][0] < -0.8 < fit["ci95"][1] and fit["ci95"][1] - fit["ci95"][0] < 0.05
    assert fit["k"] == pytest.approx(np.polyfit(np.log(GRID), np.log(noisy.mean(1)), 1)[0], rel=1e-12)


def test_bootstrap_interval_is_not_finite_when_a_norm_is_not():
    norms = np.ones((3, 5))
    norms[2, 1] = np.inf
    fit = bootstrap_exponent(np.array([1, 2, 4]), norms, np.random.default_rng(0), 200, paired=False)
    assert not np.isfinite(fit["k"]) and not np.isfinite(fit["ci95"]).any()


def test_log_log_slopes_are_the_least_squares_slopes_and_nan_only_where_a_mean_is_not_positive():
    means = np.exp(np.random.default_rng(2).normal(0, 1, (50, len(GRID))))
    u, v = np.log(GRID) - np.log(GRID).mean(), np.log(means)
    by_hand = (v - v.mean(axis=1, keepdims=True)) @ u / (u @ u)  # the closed form numpy.polyfit replaced
    np.testing.assert_allclose(log_log_slopes(GRID, means), by_hand, rtol=1e-12)
    means[3, 4], means[7, 0] = 0.0, np.nan
    slopes = log_log_slopes(GRID, means)
    assert np.isnan(slopes[[3, 7]]).all() and np.isfinite(np.delete(slopes, [3, 7])).all()


@pytest.mark.parametrize("paired", [False, True], ids=["independent", "paired"])
def test_bootstrap_interval_is_exactly_the_loop_over_the_same_resamples(paired):
    norms = GRID[:, None] ** 0.5 * np.exp(np.random.default_rng(4).normal(0, 0.3, (len(GRID), 9)))
    generator = np.random.default_rng(11)  # the loop scipy.stats.bootstrap replaced, with the same draws
    shared = generator.integers(0, 9, (500, 9)) if paired else None
    means = np.stack([row[shared if paired else generator.integers(0, 9, (500, 9))].mean(axis=1) for row in norms], 1)
    by_hand = np.percentile(log_log_slopes(GRID, means), [2.5, 97.5]).tolist()
    assert bootstrap_exponent(GRID, norms, np.random.default_rng(11), 500, paired)["ci95"] == by_hand
    one = bootstrap_exponent(GRID, norms[:, :1], np.random.default_rng(0), 500, paired)  # one trial: no spread
    assert one["ci95"] == [one["k"], one["k"]]


def test_normalized_std_is_the_sources_sigma_b_times_mu_1024_over_mu_b():
    norms = {1: [10.0, 14.0, 12.0], 8: [3.0, 5.0, 4.5], 1024: [0.5, 0.7, 0.6]}
    trials = pd.DataFrame(
        [(b, i, v, 2 * v) for b, values in norms.items() for i, v in enumerate(values)],
        columns=["batch_size", "trial", "norm", "single_batch_norm"],
    )
    table = summarize(trials, samples=1024, reduction="mean", prediction=None).set_index("batch_size")
    mu_1024 = np.mean(norms[1024])
    for b, values in norms.items():
        sigma_b, mu_b = np.std(values, ddof=1), np.mean(values)
        # std_norm = sigma_B * mu_1024 / mu_B: each B rescaled so that its mean equals the mean at B = 1024
        assert table.loc[b, "std_norm"] == pytest.approx(sigma_b * mu_1024 / mu_b, rel=1e-12)
        assert table.loc[b, "mean_rel"] == pytest.approx(mu_b / mu_1024, rel=1e-12)
        assert table.loc[b, "rms"] == pytest.approx(np.sqrt(np.mean(np.square(values))), rel=1e-12)
        assert table.loc[b, "single_batch_mean"] == pytest.approx(2 * mu_b, rel=1e-12)
    assert "std_rel" not in table and "predicted" not in table  # no noise model without frozen weights


def probe_defaults() -> dict:
    """bsstudy/conf/probes/gradsum.yaml as plain values (what `probes=[gradsum]` gives)."""
    values = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "probes" / "gradsum.yaml"))
    return {k: v for k, v in values.items() if k != "_target_"}


def fake_run(net, x, y, seed=3, lr=0.05):
    """What GradSum.run_regime reads from the LightningModule: the net, its data, seed and SGD optimizer."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    data = SimpleNamespace(x_train=x, y_train=y, n_train=len(y))
    return SimpleNamespace(
        net=net,
        data=data,
        seed=seed,
        device=torch.device("cpu"),
        optimizers=lambda: SimpleNamespace(optimizer=optimizer),
    )


def test_default_gradsum_matches_a_plain_autograd_sgd_loop_on_copies(tmp_path):
    defaults = probe_defaults()
    assert (defaults["update"], defaults["reduction"], defaults["params"]) == (True, "mean", "last")
    assert defaults["common_samples"] is False and defaults["batch_sizes"] == GRID.tolist()
    net, x, y = tiny_problem(trials=1, samples=200, seed=4)
    run, regime, samples, lr = fake_run(net, x[0], y[0]), 2, 24, 0.05
    settings = defaults | {"batch_sizes": [1, 3, 5, 8, 24], "trials": 3, "samples": samples, "trials_per_pass": 2}
    GradSum(tmp_path, **settings).run_regime(run, regime)
    trials = pd.read_csv(tmp_path / "trials.csv").set_index(["batch_size", "trial"])
    for batch_size, trial in itertools.product(settings["batch_sizes"], range(3)):
        picked = torch.from_numpy(trial_indices(200, samples, run.seed, regime, batch_size, trial))
        xs, ys = x[0][picked], y[0][picked]
        copy_net = copy.deepcopy(net)
        optimizer = torch.optim.SGD(copy_net.parameters(), lr=lr)
        expected = 0
        for start in range(0, batch_size * (samples // batch_size), batch_size):  # n_B = m // B steps
            optimizer.zero_grad()
            F.nll_loss(copy_net(xs[start : start + batch_size]), ys[start : start + batch_size]).backward()
            expected = expected + copy_net.layers[-1].weight.grad.clone()
            optimizer.step()
        assert trials.loc[(batch_size, trial), "norm"] == pytest.approx(expected.norm().item(), rel=1e-5)
        # the single sum-reduced batch: the first B samples of the trial's draw, at the regime weights
        single = flat_grad(net, LAST, F.nll_loss(net(xs[:batch_size]), ys[:batch_size], reduction="sum"))
        assert trials.loc[(batch_size, trial), "single_batch_norm"] == pytest.approx(single.norm().item(), rel=1e-5)
    assert torch.equal(net.layers[2].weight, tiny_problem(seed=4)[0].layers[2].weight)  # the run's weights untouched
    fit = json.loads((tmp_path / "fit.json").read_text())[str(regime)]
    assert fit["ci_method"] == "percentile bootstrap over trials (2000 resamples)" and fit["n_trials"] == 3
    assert fit["ci95"][0] <= fit["k"] <= fit["ci95"][1] and set(fit["single_batch"]) == {"k", "ci95"}
    assert "predicted_k" not in fit and fit["settings"]["update"] is True


@pytest.mark.parametrize("batch_sizes", [[4], [1, 2, 6]])
def test_single_batch_column_is_the_norm_of_one_sum_reduced_batch_gradient(batch_sizes):
    net, x, y = tiny_problem(trials=2, samples=8)
    got = single_batch_norms(net, LAST, x, y, batch_sizes)
    for t, (i, b) in itertools.product(range(2), enumerate(batch_sizes)):
        expected = flat_grad(net, LAST, F.nll_loss(net(x[t, :b]), y[t, :b], reduction="sum")).norm()
        torch.testing.assert_close(got[t, i], expected, rtol=1e-5, atol=1e-6)


def test_measuring_the_single_batch_leaves_the_gradient_sum_column_unchanged(tmp_path, monkeypatch):
    net, x, y = tiny_problem(trials=1, samples=100, seed=5)
    settings = probe_defaults() | {"batch_sizes": [1, 2, 10], "trials": 2, "samples": 10, "trials_per_pass": 2}
    GradSum(tmp_path / "with", **settings).run_regime(fake_run(net, x[0], y[0]), 1)
    zeros = lambda net, names, x, y, group: torch.zeros(len(x), len(group))  # noqa: E731
    monkeypatch.setattr("bsstudy.probes.gradsum.single_batch_norms", zeros)
    GradSum(tmp_path / "without", **settings).run_regime(fake_run(net, x[0], y[0]), 1)
    with_single, without = (pd.read_csv(tmp_path / name / "trials.csv") for name in ("with", "without"))
    assert with_single["norm"].equals(without["norm"]) and (with_single["single_batch_norm"] > 0).all()


def gradsum_run(run_dir, *extra):
    overrides = ["data=synthetic", "model.hidden_sizes=[24]", "data.batch_size=256", "trainer.max_epochs=2"]
    return compose_run(run_dir, [*overrides, *extra])


PROBE = ["probes=[gradsum]", "probes.gradsum.at_epochs=[1,2]", "probes.gradsum.trials=6",
         "probes.gradsum.batch_sizes=[1,3,64,1024]", "probes.gradsum.trials_per_pass=4"]  # fmt: skip


def test_batched_trials_give_the_numbers_of_trials_one_at_a_time(tmp_path):
    """update=true on stacked weight copies (the GPU path, forced here on the CPU) against one trial at a time
    with the fast step (the CPU path); trials_per_pass=null sizes the passes (32 on the CPU)."""
    norms = {}
    for mode in ("on", "off"):
        train(gradsum_run(tmp_path / mode, *PROBE, "probes.gradsum.update=true", "probes.gradsum.at_epochs=[1]",
                          f"probes.gradsum.batched_trials={mode}", "probes.gradsum.trials_per_pass=null"))  # fmt: skip
        norms[mode] = pd.read_csv(tmp_path / mode / "probes" / "gradsum" / "trials.csv")
    assert len(norms["on"]) == 4 * 6
    np.testing.assert_allclose(norms["on"]["norm"], norms["off"]["norm"], rtol=1e-4)
    assert norms["on"][["batch_size", "trial"]].equals(norms["off"][["batch_size", "trial"]])


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
    assert list(trials.columns) == ["regime", "batch_size", "trial", "norm", "single_batch_norm"]
    assert trials.equals(pd.read_csv(runs["again"] / "probes" / "gradsum" / "trials.csv"))
    table = pd.read_csv(out / "summary.csv")
    regime = table[table["regime"] == 2].set_index("batch_size")
    norms = trials[trials["regime"] == 2].groupby("batch_size")["norm"]
    np.testing.assert_allclose(regime["mean"], norms.mean(), rtol=1e-12)
    np.testing.assert_allclose(regime["std_norm"], norms.std() * norms.mean()[1024] / norms.mean(), rtol=1e-12)
    assert list(regime["steps"]) == [1024, 341, 16, 1]
    assert ("predicted" in table) is not update and ("predicted_single_batch" in table) is not update
    fit = json.loads((out / "fit.json").read_text())
    assert json.loads((runs["again"] / "probes" / "gradsum" / "fit.json").read_text()) == summary["probes"]["gradsum"]
    assert set(fit) == {"1", "2"}
    expected_k = np.polyfit(np.log([1, 3, 64, 1024]), np.log(regime["mean"].to_numpy()), 1)[0]
    assert fit["2"]["k"] == pytest.approx(expected_k, rel=1e-9)
    single_k = np.polyfit(np.log([1, 3, 64, 1024]), np.log(regime["single_batch_mean"].to_numpy()), 1)[0]
    assert fit["2"]["single_batch"]["k"] == pytest.approx(single_k, rel=1e-9)
    assert fit["2"]["settings"]["update"] is update and ("predicted_k" in fit["2"]) is not update
    keys = {"k", "ci95", "ci_method", "n_trials", "single_batch", "settings", "grad_sq_norm", "grad_trace_cov", "lr"}
    assert keys | {"seconds"} <= set(fit["2"])
    section = gradsum_section(read_sweep(runs["probe"]))
    fits, rows = (table.frame for table in section.tables)
    assert list(fits["k_mean"]) == [fit[r]["k"] for r in "12"]
    assert list(fits["k_ci_high"]) == [fit[r]["ci95"][1] for r in "12"]
    assert list(fits["single_batch_k_mean"]) == [fit["1"]["single_batch"]["k"], fit["2"]["single_batch"]["k"]]
    assert bool(fits["noise_model_k"].notna().all()) is not update and ("predicted_rms" in rows) is not update
    np.testing.assert_allclose(rows[rows["regime"] == 2]["std_norm"], regime["std_norm"], rtol=1e-12)
    settings = {"update", "common_samples", "reduction", "params", "batch_sizes", "trials", "samples"}
    assert set(fit["2"]["settings"]) == settings


def test_frozen_common_samples_differ_from_independent_samples_only_in_the_draws(tmp_path):
    frozen = [*PROBE, "probes.gradsum.update=false"]
    train(gradsum_run(tmp_path / "common", *frozen, "probes.gradsum.common_samples=true"))
    train(gradsum_run(tmp_path / "own", *frozen, "probes.gradsum.common_samples=false"))
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


def test_a_stop_signal_ends_the_measurement_between_passes_and_writes_nothing(tmp_path, monkeypatch):
    """The probe asks for the stop between passes of trials (Probe.check_stop: STOP.check raises RunInterrupted),
    so a SIGTERM during its minutes-long measurement ends the run within one pass, before any file is written."""
    net, x, y = tiny_problem(trials=1, samples=200, seed=4)
    settings = probe_defaults() | {"batch_sizes": [1, 8], "trials": 4, "samples": 24, "trials_per_pass": 2}
    probe = GradSum(tmp_path, **settings)
    calls = []

    def stop_at_the_second_pass():
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit(143)

    monkeypatch.setattr(probe, "check_stop", stop_at_the_second_pass)
    with pytest.raises(SystemExit):
        probe.run_regime(fake_run(net, x[0], y[0]), 2)
    assert len(calls) == 2 and not (tmp_path / "trials.csv").exists() and not (tmp_path / "fit.json").exists()
