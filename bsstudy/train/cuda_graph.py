"""Fast SGD steps captured as one CUDA graph and replayed (trainer.cuda_graph=true).

A small step on a GPU costs kernel launches, not arithmetic: at B=2 the MLP's fast step is a few dozen
kernels of microseconds each. Capturing STEPS_PER_GRAPH steps of the inner loop (for each step: gather the
batch, forward, backward, update) with `torch.cuda.graph` turns them into one launch, replayed with
`CUDAGraph.replay` (PyTorch's "CUDA Graphs" notes: https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs).

A graph keeps the tensor addresses and the Python numbers it was captured with, so:
- the steps' sample indices are copied into `indices` before each replay, the summed loss comes out of
  `loss`, and the weights and momentum buffers are the run's own tensors, updated in place;
- the lr and the shape (steps, rows) are part of the graph: `fits` says whether steps can replay it; a new lr
  (a schedule) or B takes a new capture. A graph holds STEPS_PER_GRAPH steps, whatever the chunk size: a chunk
  replays it as often as it holds it, and its other steps run one by one (StudyModule.graphed_steps);
- the first call runs its steps eagerly on the capture's stream (the warm-up the notes ask for: cuBLAS sets up
  its handle and workspace there, and the momentum buffers come into being), then the capture is recorded.

`run_steps` is the one body of both: the eager warm-up, the capture, and on a CPU (where there is nothing to
capture) every chunk, so the CPU tests check the static-buffer loop against the usual one; the capture
itself is checked on a GPU (tests/test_cuda_graph.py, make gpu-check).
"""

from __future__ import annotations

import torch
from torch import nn

from bsstudy.train.data import TensorData
from bsstudy.train.fast_step import fast_sgd_step

STEPS_PER_GRAPH = 256  # steps per captured graph (~30 kernels each), replayed as often as a chunk holds them
CAPTURE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}  # one per GPU: cuBLAS keeps a workspace per stream


def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream every warm-up and capture on `device` uses (PyTorch asks for a side stream, and one
    stream for both, so cuBLAS sets up its handle there before the capture)."""
    if device not in CAPTURE_STREAMS:
        CAPTURE_STREAMS[device] = torch.cuda.Stream(device)
    return CAPTURE_STREAMS[device]


class GraphedSteps:
    """`steps` fast SGD steps of `rows` samples each at the optimizer's current lr, on static buffers."""

    def __init__(self, layers: nn.ModuleList, optimizer: torch.optim.SGD, data: TensorData, steps: int, rows: int):
        self.layers, self.optimizer, self.data = layers, optimizer, data
        self.steps, self.rows, self.lr = steps, rows, optimizer.param_groups[0]["lr"]
        device = data.x_train.device
        self.indices = torch.zeros(steps * rows, dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)
        self.capture = device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream = capture_stream(device) if self.capture else None

    def fits(self, steps: int, rows: int, lr: float) -> bool:
        """Whether a chunk of `steps` steps of `rows` rows at `lr` is the one captured."""
        return (steps, rows, lr) == (self.steps, self.rows, self.lr)

    def run_steps(self) -> None:
        """The captured work: every step on its slice of `indices`; `loss` gets their summed loss."""
        self.loss.zero_()
        for step in range(self.steps):
            batch = self.indices[step * self.rows : (step + 1) * self.rows]
            self.loss += fast_sgd_step(self.layers, self.optimizer, self.data.x_train[batch], self.data.y_train[batch])

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        """Take the steps on the samples `indices` (steps * rows of them); returns their summed loss (a buffer
        that the next call overwrites)."""
        if indices.shape != self.indices.shape:  # copy_ would broadcast a short slice: steps on repeated samples
            raise ValueError(
                f"GraphedSteps takes {self.steps} x {self.rows} sample indices; got {tuple(indices.shape)}"
            )
        self.indices.copy_(indices)
        if not self.capture:
            self.run_steps()
        elif self.graph is not None:
            self.graph.replay()
        else:  # the warm-up: these steps eagerly on the capture's stream, then the capture (runs nothing)
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                self.run_steps()
            torch.cuda.current_stream().wait_stream(self.stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):  # records kernels without running them:
                self.run_steps()  # the weights and `loss` keep the warm-up's values
        return self.loss
