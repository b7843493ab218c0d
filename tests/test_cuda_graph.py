"""trainer.cuda_graph (train/cuda_graph.py): a chunk of fast steps on static buffers, captured as one CUDA graph.

On a CPU there is nothing to capture, and the same static-buffer loop (`GraphedSteps.run_steps`) runs every
chunk: these tests check it, with everything around it (whole chunks only, after the warm-up, a new graph when the
lr changes, the loss and step counts), against the usual loop. The capture itself runs on a GPU only
(`test_captured_chunks_replay_the_eager_steps`, and `make gpu-check`).
"""

from __future__ import annotations

import pytest
import torch

from bsstudy import ConfigError
from bsstudy.config import check_config
from bsstudy.runfolder import read_metrics
from bsstudy.train.cuda_graph import GraphedSteps
from bsstudy.train.data import TensorData
from bsstudy.train.run import train
from tests.conftest import compose_run

# 3 epochs of 1001 samples at B=8 (126 steps, the last of 1 sample): chunks of 12 steps and a last one of 6, graphs
# of 5 steps (STEPS_PER_GRAPH, patched) replayed twice per chunk and once in the last (whose short step runs alone);
# a warm-up of half an epoch and an lr schedule make the graph's lr change twice
SMALL = ["data=synthetic", "data.n_train=1001", "model.hidden_sizes=[32,32]", "data.batch_size=8",
         "trainer.chunk_samples=96", "trainer.max_epochs=3", "optim.warmup_epochs=0.5", "optim.lr_schedule={2: 0.5}",
         "trainer.threads=1"]  # fmt: skip
COMPARED = ("optimizer_steps", "samples_seen", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
            "train_loss_running")  # fmt: skip


def trained(tmp_path, name: str, overrides: list[str]) -> tuple[dict, list[dict]]:
    summary = train(compose_run(tmp_path / name, [*SMALL, *overrides]))
    return summary, read_metrics(tmp_path / name / "metrics.csv")


def assert_same_rows(rows: list[dict], expected: list[dict], rel: float) -> None:
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        for key in COMPARED:
            value = None if want[key] is None else pytest.approx(want[key], rel=rel, abs=rel)
            assert row[key] == value, (row["epoch"], key)


def test_chunks_on_static_buffers_give_the_steps_of_the_usual_loop(tmp_path, monkeypatch):
    import bsstudy.train.module

    built, replays = [], []

    class Counted(GraphedSteps):
        def __call__(self, indices):
            replays.append(len(indices))
            return super().__call__(indices)

    monkeypatch.setattr(bsstudy.train.module, "STEPS_PER_GRAPH", 5)
    monkeypatch.setattr(bsstudy.train.module, "GraphedSteps", lambda *a: built.append(a[3:]) or Counted(*a))
    graphed, rows = trained(tmp_path, "graphed", ["trainer.cuda_graph=true"])
    usual, usual_rows = trained(tmp_path, "usual", [])
    assert_same_rows(rows, usual_rows, rel=1e-5)  # the usual loop defers updates at B=8: rounding differs
    assert graphed["optimizer_steps"] == usual["optimizer_steps"] == 3 * 126
    assert graphed["samples_seen"] == usual["samples_seen"] == 3 * 1001
    assert graphed["cuda_graph_replays"] == 0  # nothing is captured on a CPU
    # one set of buffers per (steps, rows) and lr: the lr after the warm-up, then half of it from epoch 2
    assert built == [(5, 8), (5, 8)]
    # epoch 0 from step 72 (the first chunk after the warm-up's 63 steps): 4 chunks x 2 + 1; epochs 1, 2: 10 x 2 + 1
    assert replays == [5 * 8] * (9 + 21 + 21)


def test_graphed_steps_refuse_indices_of_another_shape():
    from bsstudy.train.net import MLP

    data = TensorData("t", torch.randn(20, 4), torch.arange(20) % 3, torch.randn(3, 4), torch.arange(3))
    net = MLP(4, [8], 3)
    graphed = GraphedSteps(net.layers, torch.optim.SGD(net.parameters(), lr=0.1), data, 2, 4)
    with pytest.raises(ValueError, match=r"takes 2 x 4 sample indices; got \(7,\)"):
        graphed(torch.arange(7))
    assert graphed(torch.arange(8)).item() > 0


def test_cuda_graph_needs_the_fast_step(tmp_path):
    for overrides, named in (
        (["trainer.fast_step=off"], "trainer.fast_step=off"),
        (["optim=adam"], "optim.name=adam"),
        (["optim.accumulate=2"], "accumulate"),
    ):
        cfg = compose_run(tmp_path, ["data=synthetic", "trainer.cuda_graph=true", *overrides])
        with pytest.raises(ConfigError, match=r"trainer\.cuda_graph=true captures the fast step, which .*") as error:
            check_config(cfg)
        assert named in str(error.value)
    cfg = compose_run(tmp_path, ["data=synthetic", "trainer.cuda_graph=true", "trainer.deterministic=true"])
    with pytest.raises(ConfigError, match=r"trainer\.cuda_graph=true cannot capture with trainer\.deterministic"):
        check_config(cfg)
    cfg = compose_run(tmp_path, ["data=synthetic", "trainer.cuda_graph=yes"])
    with pytest.raises(ConfigError, match=r"trainer\.cuda_graph"):
        check_config(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="graph capture needs a CUDA GPU (make gpu-check runs it)")
def test_captured_chunks_replay_the_eager_steps(tmp_path, monkeypatch):
    import bsstudy.train.module

    monkeypatch.setattr(bsstudy.train.module, "STEPS_PER_GRAPH", 5)
    gpu = ["trainer=gpu", "trainer.chunk_samples=96", "trainer.eval_chunk_size=1000", "optim.momentum=0.9"]
    graphed, rows = trained(tmp_path, "graphed", [*gpu, "trainer.cuda_graph=true"])
    eager, eager_rows = trained(tmp_path, "eager", gpu)
    assert graphed["cuda_graph_replays"] > 0 and eager["cuda_graph_replays"] == 0
    assert_same_rows(rows, eager_rows, rel=1e-6)  # the same kernels, replayed
