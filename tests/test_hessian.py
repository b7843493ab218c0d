"""Lanczos (scipy eigsh over Hessian-vector products) against known spectra and the dense Hessian."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import grad, hessian, jvp

from bsstudy import CONF_DIR, ConfigError
from bsstudy.analysis.report.geometry import hessian_columns, hessian_table
from bsstudy.measures.hessian import hessian_extreme_eigenvalues, hessian_lambda_max_and_abs_max
from bsstudy.measures.objective import FlatModel, SubsetLoss
from bsstudy.train.net import MLP
from bsstudy.train.probe import build_probe


def quadratic_hvp(eigenvalues, seed=0):
    """The HVP of f(theta) = 0.5 theta^T A theta, A = Q diag(eigenvalues) Q^T (random orthogonal Q), taken by
    forward-over-reverse autodiff of f as any loss would be: its Hessian is A, so its spectrum is known."""
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    a = (q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T).float()

    def f(theta):
        return 0.5 * theta @ a @ theta

    theta = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1))
    return (lambda v: jvp(grad(f), (theta,), (v,))[1]), theta


def start(n, seed=3):
    return np.random.default_rng(seed).standard_normal(n)


def test_lanczos_finds_the_largest_and_the_largest_magnitude_eigenvalue_of_a_known_spectrum():
    # a saddle: the largest eigenvalue is 4, the largest in magnitude is -9, the bulk is in [-1, 1]
    eigenvalues = [4.0, -9.0, 2.5, *np.linspace(-1.0, 1.0, 117)]
    hvp, theta = quadratic_hvp(eigenvalues)
    both = hessian_lambda_max_and_abs_max(hvp, theta, start(120), k=2, tol=1e-5, ncv=20, max_hvps=400)
    top, magnitude = both["LA"], both["LM"]
    assert top["converged"] and magnitude["converged"]
    np.testing.assert_allclose(top["eigenvalues"], [4.0, 2.5], rtol=1e-5)
    np.testing.assert_allclose(magnitude["eigenvalues"], [-9.0, 4.0], rtol=1e-5)  # largest |lambda| first
    for result in (top, magnitude):
        # ||A v - lambda v|| is recomputed from one more product, not taken from ARPACK; float32 products
        assert max(result["relative_residuals"]) < 1e-4
        assert result["residual_hvps"] == 2 and 0 < result["hvps"] <= 400


def test_at_a_minimum_the_largest_eigenvalue_is_read_from_the_largest_magnitude_without_more_products():
    # positive dominant eigenvalues (9, 4): the k = 2 largest in magnitude are the 2 largest algebraic ones
    hvp, theta = quadratic_hvp([9.0, -3.0, 4.0, *np.linspace(-1.0, 1.0, 97)])
    both = hessian_lambda_max_and_abs_max(hvp, theta, start(100), k=2, tol=1e-5, ncv=20, max_hvps=400)
    direct = hessian_extreme_eigenvalues(hvp, theta, start(100), "LA", k=2, tol=1e-5, ncv=20, max_hvps=400)
    assert both["LA"]["read_from"] == "LM" and both["LA"]["hvps"] == 0
    np.testing.assert_allclose(both["LA"]["eigenvalues"], direct["eigenvalues"], rtol=1e-5)
    np.testing.assert_allclose(both["LA"]["eigenvalues"], [9.0, 4.0], rtol=1e-5)


def test_lanczos_reports_nan_and_not_converged_when_its_budget_runs_out():
    hvp, theta = quadratic_hvp([4.0, -9.0, *np.linspace(-1.0, 1.0, 98)])
    result = hessian_extreme_eigenvalues(hvp, theta, start(100), "LA", k=1, tol=1e-9, ncv=5, max_hvps=6)
    assert not result["converged"] and np.isnan(result["eigenvalues"][0]) and result["hvps"] == 6
    assert "max_hvps = 6" in result["message"]


@pytest.mark.parametrize("batch_norm,geometry_bn", [(False, "running"), (True, "running"), (True, "batch")])
def test_lanczos_on_a_tiny_mlp_matches_the_dense_hessian(batch_norm, geometry_bn):
    torch.manual_seed(0)
    net = MLP(5, [6], 3, batch_norm=batch_norm, geometry_bn=geometry_bn)
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    net.train()(x)  # running statistics away from their initial values
    loss = SubsetLoss(FlatModel(net), x, y, chunk_size=16)
    theta = loss.model.theta
    f = lambda t: F.nll_loss(loss.model(t, x), y)  # noqa: E731  (f on all 40 samples in one pass)
    # torch.func.hessian is the reference, except through batch statistics, where its mixed second derivatives
    # (BatchNorm weight x Linear weight) disagree with finite differences of the gradient (PyTorch 2.14; cf.
    # pytorch#196699) while reverse-over-reverse autograd agrees with them
    dense = (torch.autograd.functional.hessian(f, theta) if geometry_bn == "batch" else hessian(f)(theta)).double()
    spectrum = torch.linalg.eigvalsh((dense + dense.T) / 2)
    top, magnitude = (
        hessian_extreme_eigenvalues(
            lambda v: loss.hessian_vector_product(theta, v), theta, start(len(theta)), which, tol=1e-6, ncv=20
        )
        for which in ("LA", "LM")
    )
    assert top["eigenvalues"][0] == pytest.approx(spectrum.max().item(), rel=1e-4)
    assert magnitude["eigenvalues"][0] == pytest.approx(spectrum[spectrum.abs().argmax()].item(), rel=1e-4)
    assert top["relative_residuals"][0] < 1e-4 and magnitude["relative_residuals"][0] < 1e-4


@pytest.mark.parametrize(
    "key,value",
    [("tol", 0.0), ("tol", 1.5), ("k", 0), ("ncv", 1), ("max_hvps", 10), ("trace_rel_tol", -1.0)],
)
def test_bad_lanczos_settings_are_config_errors_naming_the_key(tmp_path, key, value):
    cfg = OmegaConf.load(CONF_DIR / "probes" / "hessian.yaml")
    cfg[key] = value
    with pytest.raises(ConfigError, match=rf"probes\.hessian\.{key}"):
        build_probe("hessian", cfg, tmp_path)


def test_hessian_report_table_shows_the_worst_residual_and_the_runs_that_did_not_converge():
    nan = float("nan")
    runs = pd.DataFrame({
        "variant": [""] * 4, "batch_size": [64, 64, 1024, 1024], "lambda_max": [10.0, 12.0, 30.0, nan],
        "lambda_max_relative_residual": [1e-4, 3e-4, 2e-4, nan], "lambda_abs_max": [10.0, 12.0, -40.0, 35.0],
        "lambda_abs_max_relative_residual": [1e-4, 3e-4, 5e-4, 1e-4], "trace": [100.0, 120.0, 300.0, 310.0],
    })  # fmt: skip
    assert hessian_columns(runs) == ["lambda_max", "lambda_abs_max", "trace"]
    assert hessian_columns(runs.drop(columns=["lambda_max", "lambda_abs_max"]).assign(top_eigenvalue=1.0)) == [
        "top_eigenvalue",
        "trace",
    ]  # summaries written before Lanczos
    table = hessian_table(runs, hessian_columns(runs)).set_index("batch_size")
    assert table.loc[64, "lambda_max_mean"] == 11.0 and table.loc[1024, "lambda_max_mean"] == 30.0
    assert table.loc[64, "lambda_max_not_converged"] == 0 and table.loc[1024, "lambda_max_not_converged"] == 1
    assert table.loc[64, "lambda_max_relative_residual_max"] == 3e-4
    assert table.loc[1024, "lambda_abs_max_relative_residual_max"] == 5e-4
