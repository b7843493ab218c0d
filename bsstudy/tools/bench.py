"""`make bench`: how fast is bsstudy's training loop and evaluation, next to plain PyTorch?

Every case is measured in one process, interleaved (repeat r: every case once), so the noise of
the machine hits all of them alike; warm-up is excluded; the table gives the median over
repeats, and each ratio both of the medians and of the fastest repeats: on a shared machine whose
speed wanders, the fastest repeat is the most faithful measure of what the code itself costs.
Step cases, in seconds per optimizer step at batch size B:

    raw               plain PyTorch: preloaded tensors, permutation slices, autograd + torch.optim.SGD
    fast              the bare hand-written fast step (bsstudy/train/fast_step.py) in the same plain loop
    bsstudy           bsstudy's real training loop end to end: a Lightning Trainer fitting StudyModule
                      (chunked manual optimization, fast step as selected by trainer.fast_step=auto)
    bsstudy_autograd  the same loop with trainer.fast_step=off: what the loop itself costs over `raw`
    bsstudy_update_norms  `bsstudy` with the update_norms probe: the probe's overhead
    packed            PACKED_RUNS runs (seeds) in one batched step (bsstudy/train/packed.py: hydra/launcher=packed),
                      in seconds per step of one run: packed / fast below 1 is what a pack saves
    graphed           (a GPU only) the fast steps of a repeat captured as one CUDA graph and replayed
                      (bsstudy/train/cuda_graph.py: trainer.cuda_graph=true)
    tutorial          torchvision dataset + per-item transforms + DataLoader + autograd (the usual tutorial)

Eval cases, in seconds per full evaluation (training set + test set):

    bsstudy           evaluate() on both sets (eval mode, inference mode, torchmetrics)
    bare              a bare inference-mode forward pass over the same samples in the same chunks

`--device cuda|cpu|auto` (auto: a GPU if there is one): on a GPU, kernels run asynchronously, so every
timing starts and ends with torch.cuda.synchronize (runfiles.synchronized_now) and the ratios mean the
same as on the CPU; `--device cuda` on a machine without CUDA is a one-line error.

`python -m bsstudy.tools.bench --json` prints the rows as JSON: {"what", "impl", "batch_size", "median_s",
"min_s", "repeats"}. Ratios below 1 mean faster than the reference.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bsstudy import CONF_DIR
from bsstudy.probes.speed import device_name
from bsstudy.probes.update_norms import UpdateNorms
from bsstudy.resources import synchronized_now
from bsstudy.train.cuda_graph import GraphedSteps
from bsstudy.train.data import TensorData, epoch_permutation, load_data
from bsstudy.train.evaluate import evaluate
from bsstudy.train.fast_step import DeferredUpdates, fast_sgd_step, look_ahead_rows
from bsstudy.train.module import StudyModule
from bsstudy.train.net import MLP
from bsstudy.train.packed import PackedSGD

CONF = CONF_DIR
STEPS_PER_REPEAT = {2: 400, 64: 60, 256: 16, 1024: 5}  # about 0.3-0.5 s per case and repeat: fine interleaving
TUTORIAL_BATCH_SIZES = (2, 64, 1024)
EVAL_CHUNK = 10_000
DEVICE_CHOICES = ("auto", "cpu", "cuda")
CPU = torch.device("cpu")
PACKED_RUNS = 4  # runs per pack in the `packed` case (gpu_check times 16)
STATS = ("median_s", "min_s")  # ratios are shown for both: medians, and fastest repeats (robust to a busy machine)


@dataclass
class Case:
    """One thing to time: `run()` does `units` units of work (steps or evaluations) and may return
    the seconds of the part that counts (the Lightning cases exclude Trainer set-up that way)."""

    what: str
    impl: str
    batch_size: int | None
    units: int
    run: Callable[[], float | None]


def load_bench_data() -> TensorData:
    """Fashion-MNIST (from data.root / $BSSTUDY_DATA, no download), else 784-feature synthetic data."""
    cfg = OmegaConf.load(CONF / "config.yaml").data
    cfg.merge_with({"name": "fashion_mnist", "download": False})
    try:
        return load_data(cfg, seed=0)
    except FileNotFoundError:
        synthetic = OmegaConf.load(CONF / "data" / "synthetic.yaml")
        synthetic.merge_with({"n_train": 60_000, "n_test": 10_000, "input_size": 784, "train_size": None,
                              "test_size": None})  # fmt: skip
        return load_data(synthetic, seed=0)


def sgd_config():
    """The study's optimizer settings, as in bsstudy/conf/optim/sgd.yaml."""
    return OmegaConf.load(CONF / "optim" / "sgd.yaml")


def bench_device(name: str) -> torch.device:
    """The device of `--device`: auto is cuda where torch sees a GPU, else cpu; cuda without one is an error."""
    if name not in DEVICE_CHOICES:
        raise SystemExit(f"bsstudy.tools.bench: --device must be one of {list(DEVICE_CHOICES)}; got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "bsstudy.tools.bench: --device cuda, but torch sees no CUDA GPU here (use --device cpu or auto)"
        )
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def new_net(data: TensorData) -> MLP:
    torch.manual_seed(0)
    return MLP(data.input_size, [1024, 1024], data.num_classes).to(data.x_train.device)


def raw_loop(data: TensorData, batch_size: int, steps: int, fast: bool) -> Callable[[], None]:
    """The plain loop: slices of a seeded permutation, autograd + SGD (or the bare fast step)."""
    net = new_net(data)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    order = epoch_permutation(data.n_train, 0, 0).to(data.x_train.device)
    deferred = DeferredUpdates()

    weights = [layer.weight for layer in net.layers]
    block = deferred.block_steps(weights, batch_size, plain=True) if fast else 0

    def run() -> None:
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            if (ahead := look_ahead_rows(order, step, 0, steps, block, batch_size)) is not None:  # as training_step
                deferred.start_block(weights, data.x_train[ahead])
            if fast:
                fast_sgd_step(net.layers, optimizer, data.x_train[idx], data.y_train[idx], deferred=deferred)
            else:
                loss = F.nll_loss(net(data.x_train[idx]), data.y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        deferred.flush([layer.weight for layer in net.layers])

    return run


def graphed_loop(data: TensorData, batch_size: int, steps: int) -> Callable[[], None]:
    """The fast steps of `raw_loop` as one chunk of `steps` steps on static buffers (bsstudy/train/cuda_graph.py):
    on a GPU captured once (at the first call, which runs eagerly) and replayed; on a CPU run uncaptured."""
    net = new_net(data)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    order = epoch_permutation(data.n_train, 0, 0).to(data.x_train.device)[: steps * batch_size]
    graphed = GraphedSteps(net.layers, optimizer, data, steps, batch_size)
    return lambda: graphed(order)


def packed_loop(data: TensorData, batch_size: int, steps: int, runs: int) -> Callable[[], None]:
    """`runs` nets, each with its own epoch order (seeds 0, 1, ...), stepped together by PackedSGD: a pack's
    training steps (bsstudy/train/packed.py) without its evaluation and files."""
    nets = [new_net(data) for _ in range(runs)]
    pack = PackedSGD(nets, momentum=0.0, weight_decay=0.0)
    order = torch.stack([epoch_permutation(data.n_train, seed, 0) for seed in range(runs)]).to(data.x_train.device)
    lr = torch.full((runs,), 0.01, device=data.x_train.device)

    block = pack.block_steps(batch_size)

    def run() -> None:
        for step in range(steps):
            idx = order[:, step * batch_size : (step + 1) * batch_size]
            if (ahead := look_ahead_rows(order, step, 0, steps, block, batch_size)) is not None:  # as train_epoch
                pack.start_block(data.x_train[ahead])
            pack.step(data.x_train[idx], data.y_train[idx], lr)
        pack.flush()

    return run


class EpochTimer(L.Callback):
    """Wall time of the training epoch alone (Trainer set-up and teardown excluded), synchronized on a GPU."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = synchronized_now(pl_module.device)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds = synchronized_now(pl_module.device) - self.start


def lightning_loop(
    data: TensorData, batch_size: int, steps: int, fast: bool, probe_dir: Path | None = None
) -> Callable[[], float]:
    """bsstudy's real loop: a Trainer fits StudyModule for one epoch of exactly `steps` steps
    (with the update_norms probe writing to `probe_dir`, if given)."""
    subset = TensorData(data.name, data.x_train[: steps * batch_size], data.y_train[: steps * batch_size],
                        data.x_test, data.y_test)  # fmt: skip
    accelerator = "gpu" if data.x_train.device.type == "cuda" else "cpu"
    chunk_samples = OmegaConf.load(CONF / "trainer" / "cpu.yaml").chunk_samples

    def run() -> float:
        module = StudyModule(new_net(data), subset, sgd_config(), batch_size, False, chunk_samples, 0, fast_step=fast)
        timer = EpochTimer()
        probes = [UpdateNorms(probe_dir)] if probe_dir else []
        trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=1, logger=False, callbacks=[*probes, timer],
                            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                            num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=1)  # fmt: skip
        trainer.fit(module)
        assert module.optimizer_steps == steps
        return timer.seconds

    return run


def tutorial_loop(root: Path, batch_size: int, steps: int, device: torch.device) -> Callable[[], None]:
    """The tutorial way: torchvision dataset, per-item ToTensor/Normalize/flatten, DataLoader, autograd
    (each batch copied to `device`)."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,)), transforms.Lambda(torch.flatten)]
    )
    if (root / "FashionMNIST").exists():
        dataset = datasets.FashionMNIST(str(root), train=True, transform=transform, download=False)
    else:
        dataset = datasets.FakeData(60_000, (1, 28, 28), 10, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    net = MLP(784, [1024, 1024], 10).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)

    def run() -> None:
        for step, (x, y) in enumerate(loader):
            if step == steps:
                break
            x, y = x.to(device), y.to(device)
            loss = F.nll_loss(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return run


def unpacked_fashion_mnist(into: Path) -> Path:
    """torchvision's FashionMNIST class only sees unpacked IDX files: gunzip ours into a temp root."""
    cfg = OmegaConf.load(CONF / "config.yaml").data
    source = Path(cfg.root) / "FashionMNIST" / "raw"
    if source.is_dir():
        (into / "FashionMNIST" / "raw").mkdir(parents=True)
        for gz in source.glob("*.gz"):
            with gzip.open(gz) as f_in, open(into / "FashionMNIST" / "raw" / gz.stem, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
    return into


def eval_cases(data: TensorData) -> list[Case]:
    net = new_net(data)
    both = [(data.x_train, data.y_train), (data.x_test, data.y_test)]

    def bsstudy_eval() -> None:
        for x, y in both:
            evaluate(net, x, y, EVAL_CHUNK, data.num_classes)

    @torch.inference_mode()
    def bare_forward() -> None:
        net.eval()
        for x, _ in both:
            for start in range(0, len(x), EVAL_CHUNK):
                net(x[start : start + EVAL_CHUNK])

    return [Case("eval", "bsstudy", None, 1, bsstudy_eval), Case("eval", "bare", None, 1, bare_forward)]


def step_cases(data: TensorData, tmp: Path, batch_sizes: list[int], scale: float) -> list[Case]:
    tutorial_root = unpacked_fashion_mnist(tmp / "torchvision")
    cases = []
    for b in batch_sizes:
        n = max(2, round(STEPS_PER_REPEAT.get(b, 20) * scale))
        cases += [
            Case("step", "raw", b, n, raw_loop(data, b, n, fast=False)),
            Case("step", "fast", b, n, raw_loop(data, b, n, fast=True)),
            Case("step", "bsstudy", b, n, lightning_loop(data, b, n, fast=True)),
            Case("step", "bsstudy_autograd", b, n, lightning_loop(data, b, n, fast=False)),
            Case("step", "bsstudy_update_norms", b, n, lightning_loop(data, b, n, True, tmp / "update_norms")),
            Case("step", "packed", b, n * PACKED_RUNS, packed_loop(data, b, n, PACKED_RUNS)),
        ]
        if data.x_train.device.type == "cuda":  # on a CPU there is nothing to capture
            cases.append(Case("step", "graphed", b, n, graphed_loop(data, b, n)))
        if b in TUTORIAL_BATCH_SIZES:
            cases.append(Case("step", "tutorial", b, n, tutorial_loop(tutorial_root, b, n, data.x_train.device)))
    return cases


def measure(cases: list[Case], repeats: int, device: torch.device = CPU) -> list[dict]:
    """Run every case once to warm up, then `repeats` interleaved rounds; seconds per unit, each timing
    between two synchronizations of `device` (a GPU's queued kernels count to the case that queued them)."""
    seconds: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    for round_ in range(repeats + 1):
        for i, case in enumerate(cases):
            start = synchronized_now(device)
            inner = case.run()
            elapsed = inner if inner is not None else synchronized_now(device) - start
            if round_ > 0:
                seconds[i].append(elapsed / case.units)
    return [
        {
            "what": c.what,
            "impl": c.impl,
            "batch_size": c.batch_size,
            "median_s": statistics.median(seconds[i]),
            "min_s": min(seconds[i]),
            "repeats": repeats,
        }  # fmt: skip
        for i, c in enumerate(cases)
    ]


def ratio(rows: list[dict], what: str, batch_size: int | None, impl: str, reference: str, stat: str) -> float | None:
    """impl / reference of statistic `stat` ("median_s" or "min_s") for one batch size."""
    value = {r["impl"]: r[stat] for r in rows if r["what"] == what and r["batch_size"] == batch_size}
    return value[impl] / value[reference] if impl in value and reference in value else None


def print_table(rows: list[dict], data: TensorData, device: torch.device = CPU) -> None:
    def fmt(value: float | None, spec: str) -> str:
        return format(value, spec) if value is not None else "-"

    print(f"bsstudy bench | device {device_name(device)} | torch {torch.__version__} | "
          f"data {data.name} ({data.n_train} train) | {rows[0]['repeats']} interleaved repeats")  # fmt: skip
    impls = ["raw", "fast", "bsstudy", "bsstudy_autograd", "tutorial", "bsstudy_update_norms", "packed", "graphed"]
    ratios = [
        ("bsstudy", "raw"),
        ("bsstudy_autograd", "raw"),
        ("tutorial", "bsstudy"),
        ("bsstudy_update_norms", "bsstudy"),
        ("packed", "fast"),
        ("graphed", "fast"),
    ]
    batch_sizes = sorted({r["batch_size"] for r in rows if r["what"] == "step"})
    print("\ntraining step, microseconds per optimizer step: median over repeats")
    print(f"{'B':>5} " + " ".join(f"{i:>20}" for i in impls))
    for b in batch_sizes:
        us = {r["impl"]: r["median_s"] * 1e6 for r in rows if r["what"] == "step" and r["batch_size"] == b}
        print(f"{b:>5} " + " ".join(f"{fmt(us.get(i), '20.1f'):>20}" for i in impls))
    print("\nratios impl / reference: of the medians | of the fastest repeats (robust to a busy machine)")
    print(f"{'B':>5} " + "".join(f"  {a}/{r}" for a, r in ratios))
    for b in batch_sizes:
        cells = [" | ".join(fmt(ratio(rows, "step", b, a, r, stat), ".2f") for stat in STATS) for a, r in ratios]
        print(f"{b:>5} " + "".join(f"  {c:>{len(a) + len(r) + 1}}" for c, (a, r) in zip(cells, ratios, strict=True)))
    print("targets: bsstudy/raw <= 0.5 at B=2, <= 0.8 at B=64, <= 1.0 at B=1024 (end to end, fast step);")
    print("         bsstudy_autograd/raw <= 1.10 at B=2 and B=64 (the loop's own overhead, same autograd step);")
    print("         bsstudy_update_norms/bsstudy <= 1.15 at B=2 (the update_norms probe's overhead)")
    print(f"packed/fast: one run's share of a step of {PACKED_RUNS} packed runs vs a step alone (no target on a CPU;")
    print("         on a GPU, make gpu-check: 16 packed runs <= 0.25x at B=2, <= 0.5x at B=64)")
    print("graphed/fast: fast steps replayed from one CUDA graph vs eager (a GPU only; target <= 0.5 at B=2)")
    ev = {r["impl"]: r["median_s"] for r in rows if r["what"] == "eval"}
    if ev:
        eval_ratio = " | ".join(f"{ratio(rows, 'eval', None, 'bsstudy', 'bare', stat):.2f}" for stat in STATS)
        print(f"\nper-epoch evaluation ({data.n_train + len(data.y_test)} samples): bsstudy {ev['bsstudy']:.3f} s, "
              f"bare forward {ev['bare']:.3f} s (medians), ratio {eval_ratio} (target <= 1.2)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved repeats after the warm-up round")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 64, 256, 1024])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda where torch sees a GPU)")
    parser.add_argument("--quick", action="store_true", help="few steps and 2 repeats: checks it runs, not speed")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one Trainer per repeat: no banners
    device = bench_device(args.device)
    repeats, scale = (2, 0.05) if args.quick else (args.repeats, 1.0)
    data = load_bench_data().to(device)
    with tempfile.TemporaryDirectory() as tmp:
        cases = step_cases(data, Path(tmp), args.batch_sizes, scale) + eval_cases(data)
        rows = measure(cases, repeats, device)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows, data, device)


if __name__ == "__main__":
    main()
