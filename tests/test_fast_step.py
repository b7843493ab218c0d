"""The hand-written fast SGD step must give the same training as autograd + torch.optim.SGD."""

import pytest
import torch
from omegaconf import OmegaConf

from bsstudy import ConfigError
from bsstudy.runfolder import read_metrics
from bsstudy.train.data import TensorData
from bsstudy.train.module import StudyModule
from bsstudy.train.net import MLP
from bsstudy.train.run import train

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
    module.deferred.flush([layer.weight for layer in module.net.layers])  # as at the end of every chunk
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


@pytest.fixture
def update_kernel(monkeypatch, tmp_path):
    """Set fast_step.UPDATE_KERNEL for one test, with an empty cache of measured choices."""
    from bsstudy.train import fast_step

    monkeypatch.setattr(fast_step, "KERNEL_CHOICES", {})
    monkeypatch.setenv("BSSTUDY_CACHE", str(tmp_path))
    return lambda kernel: monkeypatch.setattr(fast_step, "UPDATE_KERNEL", kernel)


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_rank1_and_addmm_kernels_give_the_same_update(update_kernel, rows):
    from bsstudy.train.fast_step import subtract_outer

    g = torch.Generator().manual_seed(rows)
    weight, dz, h = (
        torch.randn(64, 48, generator=g),
        torch.randn(rows, 64, generator=g),
        torch.randn(rows, 48, generator=g),
    )
    updated = {}
    for kernel in ("rank1", "addmm"):
        update_kernel(kernel)
        updated[kernel] = weight.clone()
        norm = subtract_outer(updated[kernel], dz, h, 0.1, track=True)
        torch.testing.assert_close(norm, torch.mm(dz.t(), h).square().sum())  # ||dz^T h||_F^2 via the Gram matrices
    torch.testing.assert_close(updated["rank1"], updated["addmm"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(updated["addmm"], weight - 0.1 * dz.t() @ h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", ["rank1", "addmm"])
def test_fast_step_with_either_kernel_gives_the_same_parameters_as_autograd(update_kernel, kernel):
    update_kernel(kernel)
    slow, fast = trained(False, 2, 40), trained(True, 2, 40)
    for (name, p), q in zip(slow.net.named_parameters(), fast.net.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_the_kernel_is_measured_once_per_shape_and_rows_then_cached(update_kernel, monkeypatch):
    from bsstudy.train import fast_step

    measured = []
    monkeypatch.setattr(fast_step, "faster_update_kernel", lambda w, n: measured.append((tuple(w.shape), n)) or "rank1")
    weight = torch.zeros(16, 8)
    assert [fast_step.update_kernel(weight, n) for n in (2, 2, 3, 2)] == ["rank1"] * 4
    assert measured == [((16, 8), 2), ((16, 8), 3)]
    threads, cache = torch.get_num_threads(), fast_step.KERNEL_CHOICES
    assert cache == {("cpu", (16, 8), 2, threads): "rank1", ("cpu", (16, 8), 3, threads): "rank1"}
    assert fast_step.update_kernel(weight, fast_step.RANK1_CANDIDATE_MAX_ROWS + 1) == "addmm"  # never measured
    update_kernel("addmm")
    assert fast_step.update_kernel(weight, 2) == "addmm"  # the override wins over the cache
    assert len(measured) == 2


def test_the_first_measurement_on_a_machine_is_kept_for_later_runs(update_kernel, monkeypatch, tmp_path):
    """Later processes (an empty in-process cache) reuse the stored choice instead of measuring again, so the
    same config gives the same numbers on the same machine; a corrupt store is measured over."""
    from bsstudy.train import fast_step

    weight, picks = torch.zeros(16, 8), iter(["rank1", "addmm"])
    monkeypatch.setattr(fast_step, "faster_update_kernel", lambda w, n: next(picks))
    assert fast_step.update_kernel(weight, 2) == "rank1"
    monkeypatch.setattr(fast_step, "KERNEL_CHOICES", {})  # a new process
    assert fast_step.update_kernel(weight, 2) == "rank1"  # stored, not measured ("addmm" would be next)
    (tmp_path / "update_kernels.json").write_text("{not json")
    monkeypatch.setattr(fast_step, "KERNEL_CHOICES", {})
    assert fast_step.update_kernel(weight, 2) == "addmm"


def test_the_measurement_names_one_of_the_two_kernels():
    from bsstudy.train.fast_step import faster_update_kernel

    assert faster_update_kernel(torch.zeros(32, 16), 2, trials=2) in ("rank1", "addmm")


def test_an_unknown_forced_kernel_is_an_error(update_kernel):
    from bsstudy.train.fast_step import update_kernel as choose

    update_kernel("gemv")
    with pytest.raises(ValueError, match=r"UPDATE_KERNEL must be one of \['auto', 'rank1', 'addmm'\]; got 'gemv'"):
        choose(torch.zeros(4, 4), 2)


@pytest.mark.parametrize("look_ahead", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, 8])
def test_deferred_updates_give_the_steps_of_immediate_ones(rows, look_ahead):
    """Updates kept as factors (DeferredUpdates, the CPU's path for a few rows) against applied at once: the same
    losses at every step, the same weights and the same update norms (written when the updates are applied) after a
    flush, also when a step does not fit the pending rows.
    With `look_ahead`, blocks of steps take their first layer's product from start_block (as the training loop
    does), including blocks shorter than the capacity and steps past a block's rows (they compute their own)."""
    from bsstudy.train.fast_step import DeferredUpdates, fast_sgd_step

    torch.manual_seed(0)
    deferred_net, immediate_net = MLP(20, [64, 32], 10), MLP(20, [64, 32], 10)
    immediate_net.load_state_dict(deferred_net.state_dict())
    optimizers = [torch.optim.SGD(n.parameters(), lr=0.1) for n in (deferred_net, immediate_net)]
    deferred = DeferredUpdates(capacity=12)  # not a multiple of every row count: flushes fall between steps
    weights = [layer.weight for layer in deferred_net.layers]
    block = deferred.block_steps(weights, rows, plain=True)
    xs, ys = torch.randn(40, rows, 20), torch.randint(0, 10, (40, rows))
    norms, expected_norms = torch.full((40, 6), -1.0), torch.full((40, 6), -1.0)
    for step in range(40):
        if look_ahead and step % block == 0:
            deferred.start_block(weights, xs[step : step + max(1, block - step % 3)].reshape(-1, 20))
        loss = fast_sgd_step(deferred_net.layers, optimizers[0], xs[step], ys[step], norms[step], deferred=deferred)
        expected = fast_sgd_step(immediate_net.layers, optimizers[1], xs[step], ys[step], expected_norms[step])
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert deferred.rows > 0  # updates were still pending: the losses above came from the factors
    deferred.flush(weights)
    for p, q in zip(deferred_net.parameters(), immediate_net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert (expected_norms > 0).all()
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-9)


def test_deferred_update_norms_of_steps_of_different_row_counts():
    """Pending steps of 1, 3 and 2 rows: their norms are read one step at a time, and equal immediate ones."""
    from bsstudy.train.fast_step import DeferredUpdates, fast_sgd_step

    torch.manual_seed(0)
    deferred_net, immediate_net = MLP(20, [64, 32], 10), MLP(20, [64, 32], 10)
    immediate_net.load_state_dict(deferred_net.state_dict())
    optimizers = [torch.optim.SGD(n.parameters(), lr=0.1) for n in (deferred_net, immediate_net)]
    deferred = DeferredUpdates(capacity=32)
    norms, expected_norms = torch.zeros(3, 6), torch.zeros(3, 6)
    for step, rows in enumerate((1, 3, 2)):
        x, y = torch.randn(rows, 20), torch.randint(0, 10, (rows,))
        fast_sgd_step(deferred_net.layers, optimizers[0], x, y, norms[step], deferred=deferred)
        fast_sgd_step(immediate_net.layers, optimizers[1], x, y, expected_norms[step])
    assert (norms == 0).all()  # not written before the updates are applied
    deferred.flush([layer.weight for layer in deferred_net.layers])
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-9)


def test_a_look_ahead_block_is_used_and_dropped_when_the_weights_change():
    """start_block's rows are handed out in order, none past the block; applying the updates drops the block
    (its product was of the weights before)."""
    from bsstudy.train.fast_step import DeferredUpdates

    weights = [torch.randn(5, 4)]
    deferred = DeferredUpdates(capacity=4)
    x = torch.randn(4, 4)
    deferred.start_block(weights, x)
    torch.testing.assert_close(deferred.first_layer_rows(2), x[:2] @ weights[0].t())
    torch.testing.assert_close(deferred.first_layer_rows(2), x[2:] @ weights[0].t())
    assert deferred.first_layer_rows(1) is None
    deferred.start_block(weights, x)
    deferred.flush(weights)
    assert deferred.first_layer_rows(1) is None
    assert deferred.block_steps(weights, 2, plain=True) == 2
    assert deferred.block_steps(weights, 2, plain=False) == 0
