"""Loss-geometry measures against closed forms, the probes against the training, the CLI end to end."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bsstudy.analysis.geometry.__main__ import main as geometry_main
from bsstudy.measures.hessian import hessian_trace_hutchinson
from bsstudy.measures.interpolation import interpolate
from bsstudy.measures.landscape import filter_normalized_direction
from bsstudy.measures.objective import FlatModel, SubsetLoss
from bsstudy.measures.sharpness import sharpness_eps_box
from bsstudy.runfolder import load_weights, read_metrics
from bsstudy.train.data import load_data
from bsstudy.train.net import MLP, build_net
from bsstudy.train.run import train

from conftest import compose_run, run_cli


def symmetric_matrix(eigenvalues, seed=0) -> torch.Tensor:
    """Q diag(eigenvalues) Q^T with a random orthogonal Q."""
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float32)) @ q.T


def test_hutchinson_trace_is_within_four_standard_errors_of_the_trace():
    a = symmetric_matrix(list(np.linspace(-1.0, 3.0, 200)), seed=2)
    samples = 400
    # Var(v^T A v) for Rademacher v = 2 (||A||_F^2 - sum_i A_ii^2), so the mean of n has sd sqrt(Var / n)
    tolerance = 4 * np.sqrt(2 * (a.square().sum() - a.diagonal().square().sum()).item() / samples)
    result = hessian_trace_hutchinson(lambda v: a @ v, 200, torch.Generator().manual_seed(3), max_samples=samples,
                                      min_samples=samples, rel_tol=1e-12)  # fmt: skip
    assert result["samples"] == samples
    assert abs(result["trace"] - a.trace().item()) <= tolerance
    assert result["stderr"] == pytest.approx(tolerance / 4, rel=0.2)  # the reported error matches the theory


def quadratic(a: torch.Tensor):
    """f(w) = 0.5 w^T A w with gradient A w."""
    return lambda w: (0.5 * (w @ a @ w).item(), a @ w)


def box_corner_maximum(f, x: torch.Tensor, lift: torch.Tensor, half: torch.Tensor) -> float:
    """max over the 2^p corners of the box |y_i| <= half_i of f(x + lift y): a convex f peaks at a corner."""
    return max(f(x + lift @ (torch.tensor(signs, dtype=x.dtype) * half))[0]
               for signs in itertools.product((-1.0, 1.0), repeat=len(half)))  # fmt: skip


@pytest.mark.parametrize("eps", [1e-3, 0.2])
def test_full_space_sharpness_of_a_convex_quadratic_is_its_best_box_corner(eps):
    g = torch.Generator().manual_seed(4)
    m = torch.rand(5, 5, generator=g, dtype=torch.float64)
    a = m @ m.T + torch.eye(5, dtype=torch.float64)  # positive definite with positive entries
    x = torch.rand(5, generator=g, dtype=torch.float64) + 0.5  # positive: f grows towards the all-plus corner
    f = quadratic(a)
    best = box_corner_maximum(f, x, torch.eye(5, dtype=torch.float64), eps * (x.abs() + 1))
    result = sharpness_eps_box(f, x, eps, iterations=10)
    # phi = (max f(x + z) - f(x)) / (1 + f(x)) x 100
    assert result["sharpness"] == pytest.approx((best - f(x)[0]) / (1 + f(x)[0]) * 100, rel=1e-9)
    assert result["iterations"] <= 10 and result["max_iterations"] == 10


def test_subspace_sharpness_uses_the_box_of_the_pseudo_inverse():
    g = torch.Generator().manual_seed(5)
    a = torch.rand(8, 8, generator=g, dtype=torch.float64)
    a = a @ a.T
    x = torch.rand(8, generator=g, dtype=torch.float64) + 0.5
    lift = torch.rand(8, 3, generator=g, dtype=torch.float64)  # positive columns: f grows with every y_i
    eps = 0.05
    # C_eps = {y : |y_i| <= eps (|(A^+ x)_i| + 1)}, A^+ from numpy's SVD-based pinv
    half = eps * (torch.from_numpy(np.linalg.pinv(lift.numpy()) @ x.numpy()).abs() + 1)
    f = quadratic(a)
    best = box_corner_maximum(f, x, lift, half)
    result = sharpness_eps_box(f, x, eps, iterations=10, subspace=lift)
    assert result["dimension"] == 3
    assert result["sharpness"] == pytest.approx((best - f(x)[0]) / (1 + f(x)[0]) * 100, rel=1e-6)


def test_filter_normalized_rows_have_the_norms_of_the_weight_rows():
    net = MLP(6, [9, 7], 4, batch_norm=True)
    params = dict(net.named_parameters())
    direction = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    for name, weight in params.items():
        if weight.dim() == 2:
            torch.testing.assert_close(direction[name].norm(dim=1), weight.detach().norm(dim=1), rtol=1e-6, atol=0)
            assert not torch.allclose(direction[name], weight)  # a random direction, not the weights
        else:  # biases and batch-norm scale and shift stay put
            assert torch.count_nonzero(direction[name]) == 0
    with_biases = filter_normalized_direction(params, torch.Generator().manual_seed(0), include_biases=True)
    torch.testing.assert_close(with_biases["layers.0.bias"], params["layers.0.bias"].detach())
    again = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    assert all(torch.equal(direction[n], again[n]) for n in params)  # the same seed, the same direction


def test_interpolation_endpoints_and_midpoint_are_the_networks_own_losses():
    torch.manual_seed(0)
    net_a, net_b, net_mid = MLP(6, [9], 3), MLP(6, [9], 3), MLP(6, [9], 3)
    with torch.no_grad():
        for p_mid, p_a, p_b in zip(net_mid.parameters(), net_a.parameters(), net_b.parameters(), strict=True):
            p_mid.copy_((p_a + p_b) / 2)
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    loss = SubsetLoss(FlatModel(net_a), x, y, chunk_size=16)  # chunks of 16, 16, 16, 2
    theta_b = loss.model.flatten(dict(net_b.named_parameters())).detach()
    rows = interpolate(lambda t, _: {"train_loss": loss.loss(t)}, loss.model.theta, theta_b, np.array([0.0, 0.5, 1.0]))
    with torch.no_grad():
        expected = [F.nll_loss(net(x), y).item() for net in (net_a, net_mid, net_b)]
    np.testing.assert_allclose([r["train_loss"] for r in rows], expected, rtol=1e-6)
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]


def tiny(overrides: list[str]) -> list[str]:
    return ["data=synthetic", "trainer.max_epochs=2", "model.hidden_sizes=[16]", "data.batch_size=32", *overrides]


SMALL_PROBES = [
    "probes.sharpness.iterations=2",
    "probes.sharpness.subspace_dim=4",
    "probes.landscape.points=3",
    "probes.landscape.curve_points=3",
    "probes.hessian.ncv=5",
    "probes.hessian.max_hvps=100",
    "probes.hessian.trace_max_samples=5",
]


def test_geometry_probes_do_not_change_the_training(tmp_path):
    train(compose_run(tmp_path / "plain", tiny([])))
    probed = tiny(["probes=[sharpness,landscape,hessian,interpolation]", *SMALL_PROBES,
                   f"probes.interpolation.other={tmp_path / 'plain'}", "probes.interpolation.points=4"])  # fmt: skip
    summary = train(compose_run(tmp_path / "probed", probed))
    plain, with_probes = (read_metrics(tmp_path / name / "metrics.csv") for name in ("plain", "probed"))
    for a, b in zip(plain, with_probes, strict=True):
        assert {k: v for k, v in a.items() if not k.endswith("_time_s")} == {
            k: v for k, v in b.items() if not k.endswith("_time_s")
        }
    sharpness, hessian = summary["probes"]["sharpness"], summary["probes"]["hessian"]
    assert sharpness["sharpness_eps_0.001"] > 0 and "random_sharpness_eps_0.0005" in sharpness
    assert sharpness["sharpness_eps_0.001"] >= sharpness["random_sharpness_eps_0.001"]  # the max beats the mean
    assert np.isfinite(hessian["lambda_max"]) and np.isfinite(hessian["trace"])
    assert hessian["top_eigenvalue"] == hessian["lambda_abs_max"] and hessian["geometry_bn"] == "none"
    grid = np.load(tmp_path / "probed" / "probes" / "landscape" / "landscape.npz")
    assert grid["train_loss"].shape == (3, 3) and grid["curve_train_loss"].shape == (3,)
    # the centre of the grid is the trained network: its loss on the same samples (all 2048 here)
    assert grid["train_loss"][1, 1] == pytest.approx(with_probes[-1]["train_loss"], rel=1e-5)
    table = pd.read_csv(tmp_path / "probed" / "probes" / "interpolation" / "interpolation.csv")
    assert table.alpha.tolist() == [-1.0, 0.0, 1.0, 2.0]
    assert table.train_loss[1] == pytest.approx(with_probes[-1]["train_loss"], rel=1e-5)  # alpha 0 = this run
    assert table.test_loss[2] == pytest.approx(plain[-1]["test_loss"], rel=1e-5)  # alpha 1 = the other run
    interpolation = summary["probes"]["interpolation"]
    assert interpolation["train_loss"] == pytest.approx(with_probes[-1]["train_loss"], rel=1e-5)
    assert interpolation["other_train_loss"] == pytest.approx(plain[-1]["train_loss"], rel=1e-5)


def full_batch_gradient_norm(net, x, y) -> float:
    """||grad_theta mean_i NLL(net(x_i), y_i)||_2 by one plain autograd pass over all samples."""
    net.zero_grad()
    F.nll_loss(net(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()]).norm().item()


def test_geometry_probes_record_the_train_loss_and_gradient_norm_where_they_measure(tmp_path):
    overrides = tiny(["probes=[sharpness,landscape,hessian]", *SMALL_PROBES, "probes.sharpness.train_samples=256",
                      "probes.hessian.train_samples=256", "probes.landscape.train_samples=256",
                      "probes.sharpness.chunk_size=500", "probes.hessian.chunk_size=500",
                      "probes.landscape.chunk_size=500"])  # fmt: skip
    cfg = compose_run(tmp_path, overrides)
    summary = train(cfg)
    last = read_metrics(tmp_path / "metrics.csv")[-1]
    data = load_data(cfg.data, cfg.seed)
    net = load_weights(build_net(cfg.model, data.input_size, data.num_classes), tmp_path / "checkpoints" / "last.ckpt")
    expected = full_batch_gradient_norm(net.eval(), data.x_train, data.y_train)
    assert expected > 1e-3  # two epochs of SGD: not a stationary point, so a zero would be caught
    for name in ("sharpness", "landscape", "hessian"):
        numbers = summary["probes"][name]
        # measured on all 2048 training samples in chunks of 500, whatever the probe's own subset (256)
        assert numbers["train_loss"] == pytest.approx(last["train_loss"], rel=1e-5), name
        assert numbers["grad_norm"] == pytest.approx(expected, rel=1e-4), name
    for name in ("sharpness", "hessian"):  # their own files carry the same numbers
        written = json.loads((tmp_path / "probes" / name / f"{name}.json").read_text())["summary"]
        assert written["grad_norm"] == summary["probes"][name]["grad_norm"]
    grid = np.load(tmp_path / "probes" / "landscape" / "landscape.npz")
    assert float(grid["point_grad_norm"]) == summary["probes"]["landscape"]["grad_norm"]


def test_sweep_gets_its_interpolation_and_the_cli_measures_its_runs(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(["-m", "experiment=sharpness", "probes=[]", *tiny([]), "data.batch_size=16,256",
             "model.batch_norm=true", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)  # fmt: skip
    out = sweep / "geometry" / "interpolation_16_256"  # the Hydra callback: smallest and largest batch size
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["batch_size_a"], meta["batch_size_b"]) == (16, 256)
    assert len(pd.read_csv(out / "interpolation.csv")) == 31
    geometry_main(["interpolate", str(sweep), "--batch-sizes", "256", "16", "points=5", "alpha_min=0.0"])
    table = pd.read_csv(sweep / "geometry" / "interpolation_256_16" / "interpolation.csv")
    assert table.alpha.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    geometry_main(["hessian", str(sweep), "ncv=5", "max_hvps=100", "trace_max_samples=3"])
    for run in ("0", "1"):
        summary = json.loads((sweep / run / "summary.json").read_text())
        assert summary["status"] == "completed" and np.isfinite(summary["probes"]["hessian"]["trace"])
        train_loss = read_metrics(sweep / run / "metrics.csv")[-1]["train_loss"]
        assert summary["probes"]["hessian"]["train_loss"] == pytest.approx(train_loss, rel=1e-5)
        assert (sweep / run / "probes" / "hessian" / "hessian.json").is_file()


def test_report_shows_the_train_loss_and_gradient_norm_beside_the_sharpness(tmp_path):
    from test_report import write_run

    from bsstudy.analysis.report import build_report

    for job, (batch_size, seed) in enumerate(itertools.product((32, 256), (0, 1))):
        point = {"train_loss": 0.1 * (1 + job), "grad_norm": 0.01 * (1 + job)}
        write_run(tmp_path / str(job), batch_size, seed, [0.1, 0.8], sharpness={"sharpness_eps_0.001": 1.0, **point})
    table = pd.read_csv(build_report(tmp_path) / "tables" / "sharpness.csv").set_index("batch_size")
    assert table.loc[32, "train_loss_mean"] == pytest.approx(0.15)  # jobs 0 and 1: (0.1 + 0.2) / 2
    assert table.loc[256, "grad_norm_mean"] == pytest.approx(0.035)  # jobs 2 and 3: (0.03 + 0.04) / 2
