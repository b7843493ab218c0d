"""`make gpu-check`: does bsstudy's GPU side work, and how fast is it? One command, one table, minutes.

Checks, on one GPU (`--cpu`: the same checks on the CPU, a dry run of every code path here):

    step              per B: seconds per step of the eager fast step and of autograd + torch.optim.SGD,
                      interleaved in one process (bench.measure: every timing between two synchronizations),
                      their ratio, and how many reference runs (30 epochs of 60,000 samples) one run at a
                      time finishes per second
    speed probe       a 1-epoch run on data=synthetic with probes=[speed] through the real CLI: the probe's
                      device branch (torch.cuda.max_memory_allocated, synchronized chunk clocks)
    parallel launcher a 2-job synthetic sweep with hydra/launcher=parallel and n_jobs=2: on a GPU each job
                      claims a GPU of its own (bsstudy/train/parallel.py), so on one GPU the second waits for the
                      first; on the CPU each job gets its share of the threads
    estimate          the reference study's wall time: steps per epoch x fast-step time x 30 epochs, summed
                      over B = 2, 64, 256, 1024, x 3 seeds, one run at a time (training steps only: the
                      31 evaluations per run and start-up come on top)

    gradsum           update=true trials per second of the gradient-sum experiment (probes/gradsum.py), the
                      batched path (stacked weight copies, one vmapped step for all trials: the GPU default)
                      against one trial at a time with the fast step (the CPU default), at B = 1, 64, 1024

    packed launcher   a 4-run sweep (2 seeds x 2 lrs) with hydra/launcher=packed: one pack on the device
    packed            per B: 16 runs in one batched step (bsstudy/train/packed.py) against the same steps one run
                      at a time, in seconds per step of one run
    graph             per B: fast steps captured as one CUDA graph (bsstudy/train/cuda_graph.py) against
                      the eager fast step, in seconds per step; and whether replaying it gives the eager steps'
                      weights (graph_exactness: the same chunks both ways from the same start)
    graph run         a 1-epoch run with trainer.cuda_graph=true through the real CLI: captured, completed

DDP over GPUs is listed as "not checked" (it needs 2 GPUs), so the table shows what is missing. The step inputs
are random tensors of Fashion-MNIST's shape (784 features, 10 classes): a step's cost does not
depend on the values. Exit status 0 when every check passed, 1 otherwise or without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bsstudy.probes.speed import device_name
from bsstudy.tools.bench import STEPS_PER_REPEAT, Case, graphed_loop, measure, packed_loop, raw_loop
from bsstudy.train.cuda_graph import GraphedSteps
from bsstudy.train.data import TensorData, steps_per_epoch
from bsstudy.train.fast_step import fast_sgd_step
from bsstudy.train.net import MLP

REFERENCE_BATCH_SIZES = (2, 64, 256, 1024)
PACK_SIZE = 16  # runs per pack in the packed-runs row (issue 17's target: 16 packed runs at B=2 <= 0.25x)
REFERENCE_EPOCHS, REFERENCE_SEEDS, REFERENCE_TRAIN = 30, 3, 60_000  # Fashion-MNIST, experiment=generalization
INPUT_SIZE, NUM_CLASSES = 784, 10
GRAPH_TOLERANCE = 1e-5  # |weight difference| a replayed graph may show against eager steps (float32 rounding)
NO_GPU = "bsstudy.tools.gpu_check: torch sees no CUDA GPU here; run it on a GPU machine, or add --cpu for a CPU dry run"


def check_device(cpu: bool) -> torch.device:
    """cuda, or cpu with --cpu; without a GPU and without --cpu, exit 1 with one line."""
    if cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit(NO_GPU)
    return torch.device("cuda")


def random_data(device: torch.device, samples: int) -> TensorData:
    """`samples` random inputs of Fashion-MNIST's shape with labels 0..9, on `device`."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, INPUT_SIZE, generator=g)
    y = torch.arange(samples) % NUM_CLASSES
    return TensorData("random", x, y, x[:NUM_CLASSES], y[:NUM_CLASSES]).to(device)


def step_times(device: torch.device, batch_sizes: list[int], scale: float, repeats: int) -> dict[int, dict]:
    """Per B: {"fast_s", "autograd_s", "packed_s", "graphed_s"}, median seconds per step of one run over interleaved
    repeats (packed: one run's share of a step of PACK_SIZE packed runs; graphed: a chunk of them as one graph)."""
    steps = {b: max(2, round(STEPS_PER_REPEAT.get(b, 20) * scale)) for b in batch_sizes}
    data = random_data(device, max(steps[b] * b for b in batch_sizes))
    cases = []
    for b in batch_sizes:
        n = steps[b]
        cases += [Case("step", "fast", b, n, raw_loop(data, b, n, fast=True)),
                  Case("step", "autograd", b, n, raw_loop(data, b, n, fast=False)),
                  Case("step", "packed", b, n * PACK_SIZE, packed_loop(data, b, n, PACK_SIZE)),
                  Case("step", "graphed", b, n, graphed_loop(data, b, n))]  # fmt: skip
    rows = measure(cases, repeats, device)
    return {b: {f"{r['impl']}_s": r["median_s"] for r in rows if r["batch_size"] == b} for b in batch_sizes}


def graph_exactness(device: torch.device, batch_size: int, steps: int = 16, chunks: int = 3) -> float:
    """Largest |difference| between the weights (and the summed losses) after `chunks` chunks of `steps` fast SGD
    steps with momentum and weight decay taken eagerly and the same chunks by GraphedSteps (the first eager on the
    capture's stream, where the momentum buffers come into being, the others replayed)."""
    data = random_data(device, steps * chunks * batch_size)
    torch.manual_seed(0)
    eager, replayed = (MLP(INPUT_SIZE, [1024, 1024], NUM_CLASSES).to(device) for _ in range(2))
    replayed.load_state_dict(eager.state_dict())
    optimizers = [
        torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4) for net in (eager, replayed)
    ]
    graphed = GraphedSteps(replayed.layers, optimizers[1], data, steps, batch_size)
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0)).to(device)
    losses = torch.zeros(2, device=device)
    for chunk in range(chunks):
        indices = order[chunk * steps * batch_size : (chunk + 1) * steps * batch_size]
        losses[1] += graphed(indices)
        for step in range(steps):
            batch = indices[step * batch_size : (step + 1) * batch_size]
            losses[0] += fast_sgd_step(eager.layers, optimizers[0], data.x_train[batch], data.y_train[batch])
    weights = max((p - q).abs().max().item() for p, q in zip(eager.parameters(), replayed.parameters(), strict=True))
    return max(weights, ((losses[0] - losses[1]).abs() / losses[0]).item())


def graph_run_check(device: torch.device, folder: Path, timeout: int) -> tuple[bool, str]:
    """A 1-epoch run at B=2 on 1024 samples (512 steps: two graphs of STEPS_PER_GRAPH steps, the first the warm-up
    and capture) with trainer.cuda_graph=true: completed, and on a GPU the graph was replayed once."""
    tiny = [a for a in tiny_run_args(device) if not a.startswith(("trainer.chunk_samples=", "data.n_train="))]
    args = [
        *tiny,
        "data.n_train=1024",
        "data.batch_size=2",
        "trainer.chunk_samples=1024",
        "trainer.cuda_graph=true",
        f"hydra.run.dir={folder}",
    ]
    proc = run_bsstudy(args, folder.parent, timeout)
    if proc.returncode != 0:
        return False, failure(proc)
    summary = json.loads((folder / "summary.json").read_text())
    replays = summary["cuda_graph_replays"]
    ok = summary["status"] == "completed" and replays == (1 if device.type == "cuda" else 0)
    return ok, f"{'ok' if ok else 'FAIL'}: {summary['status']}, graph replays: {replays}"


def reference_run_seconds(batch_size: int, step_s: float) -> float:
    """Training time of one reference run: ceil(60,000 / B) steps per epoch x step time x 30 epochs."""
    return steps_per_epoch(REFERENCE_TRAIN, batch_size, drop_last=False) * step_s * REFERENCE_EPOCHS


def reference_study_seconds(times: dict[int, dict]) -> float | None:
    """The 3-seed reference study one run at a time, from the fast step; None unless every reference B was timed."""
    if not all(b in times for b in REFERENCE_BATCH_SIZES):
        return None
    return REFERENCE_SEEDS * sum(reference_run_seconds(b, times[b]["fast_s"]) for b in REFERENCE_BATCH_SIZES)


def run_bsstudy(args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """`python -m bsstudy <args>` as a user runs it (no W&B login, no report at the end of a sweep)."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "bsstudy", *args, "trainer.progress_bar=false",
               "hydra.callbacks.report.enabled=false"]  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def tiny_run_args(device: torch.device) -> list[str]:
    """A 1-epoch run on 512 synthetic samples in chunks of 128, on the device of the check."""
    trainer = "gpu" if device.type == "cuda" else "cpu"
    return [
        f"trainer={trainer}",
        "data=synthetic",
        "data.n_train=512",
        "trainer.max_epochs=1",
        "trainer.chunk_samples=128",
        "trainer.threads=1",
    ]


def failure(proc: subprocess.CompletedProcess) -> str:
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return f"FAIL: bsstudy exited {proc.returncode}: {last[:200]}"


def speed_probe_check(device: torch.device, folder: Path, timeout: int) -> tuple[bool, str]:
    """A 1-epoch run with probes=[speed]; passes when the probe measured steps and the device's peak memory."""
    args = [*tiny_run_args(device), "probes=[speed]", "probes.speed.warmup_chunks=1", f"hydra.run.dir={folder}"]
    proc = run_bsstudy(args, folder.parent, timeout)
    if proc.returncode != 0:
        return False, failure(proc)
    speed = json.loads((folder / "summary.json").read_text())["probes"]["speed"]
    expected_kind = "cuda_max_allocated" if device.type == "cuda" else "rss"
    ok = speed["memory_kind"] == expected_kind and speed["step_time_median_s"] is not None
    step_us, peak_mib = speed["step_time_median_s"] * 1e6, speed["peak_memory_bytes"] / 2**20
    return ok, (f"{'ok' if ok else 'FAIL'}: {speed['device']}, step {step_us:.0f} us, "
                f"peak {peak_mib:.1f} MiB ({speed['memory_kind']}, expected {expected_kind})")  # fmt: skip


def parallel_check(device: torch.device, folder: Path, timeout: int) -> tuple[bool, str]:
    """A 2-job sweep (B = 8, 32) with the parallel launcher; on a GPU both jobs must run on a GPU they claimed."""
    args = ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *tiny_run_args(device),
            "data.batch_size=8,32", f"hydra.sweep.dir={folder}"]  # fmt: skip
    if device.type == "cpu":
        args.remove("trainer.threads=1")  # the launcher gives each job its share of the cores
    proc = run_bsstudy(args, folder.parent, timeout)
    if proc.returncode != 0:
        return False, failure(proc)
    jobs = [json.loads(path.read_text()) for path in sorted(folder.glob("*/summary.json"))]
    claims = [line.split("parallel sweep: ", 1)[1] for path in sorted(folder.glob("*/*.log"))
              for line in path.read_text().splitlines() if "parallel sweep: " in line]  # fmt: skip
    on_device = all(job["device"].startswith(device.type) and job["status"] == "completed" for job in jobs)
    ok = len(jobs) == 2 and on_device and len(claims) == 2
    where = ", ".join(f"B={job['batch_size']} on {job['device']} ({job['threads']} threads)" for job in jobs)
    return ok, f"{'ok' if ok else 'FAIL'}: {where}; " + "; ".join(claims)


def packed_check(device: torch.device, folder: Path, timeout: int) -> tuple[bool, str]:
    """A 4-run sweep (2 seeds x 2 lrs) with hydra/launcher=packed: one pack, every run completed on the device."""
    args = ["-m", "hydra/launcher=packed", *tiny_run_args(device), "data.batch_size=8", "seed=0,1",
            "optim.lr=0.01,0.02", f"hydra.sweep.dir={folder}"]  # fmt: skip
    proc = run_bsstudy(args, folder.parent, timeout)
    if proc.returncode != 0:
        return False, failure(proc)
    jobs = [json.loads(path.read_text()) for path in sorted(folder.glob("*/summary.json"))]
    ok = len(jobs) == 4 and all(
        job["status"] == "completed" and (job.get("packed") or {}).get("size") == 4
        and job["device"].startswith(device.type) for job in jobs
    )  # fmt: skip
    return ok, f"{'ok' if ok else 'FAIL'}: " + ", ".join(f"{j['status']} on {j['device']}" for j in jobs)


GRADSUM_BATCH_SIZES = (1, 64, 1024)


def gradsum_trial_rates(device: torch.device, trials: int, samples: int) -> dict[int, tuple[float, float]]:
    """{B: (trials/s batched, trials/s one at a time)} for update=true gradient sums over `samples` samples on the
    reference MLP (784-1024-1024-10, mean loss, last layer measured), random data of Fashion-MNIST's shape."""
    from bsstudy.probes.gradsum import fast_sgd_gradient_sum, sgd_gradient_sums
    from bsstudy.resources import synchronized_now

    torch.manual_seed(0)
    net = MLP(784, [1024, 1024], 10).to(device)
    names = ["layers.2.weight"]
    sgd = {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "buffers": dict.fromkeys(dict(net.named_parameters()))}
    x = torch.randn(trials, samples, 784, device=device)
    y = torch.randint(0, 10, (trials, samples), device=device)
    rates = {}
    for b in (b for b in GRADSUM_BATCH_SIZES if b <= samples):
        start = synchronized_now(device)
        sgd_gradient_sums(net, names, x, y, b, "mean", sgd)
        batched = synchronized_now(device) - start
        start = synchronized_now(device)
        for xi, yi in zip(x, y, strict=True):
            fast_sgd_gradient_sum(net, names, xi, yi, b, "mean", sgd)
        single = synchronized_now(device) - start
        rates[b] = (trials / batched, trials / single)
    return rates


def table_rows(device: torch.device, times: dict[int, dict], checks: dict[str, tuple[bool, str]],
               gradsum: dict[int, tuple[float, float]], exactness: dict[int, float]) -> list[tuple]:  # fmt: skip
    """(check, B, result) rows of the table, the missing pieces included."""
    rows = []
    for b, t in times.items():
        runs_per_s, ratio = 1 / reference_run_seconds(b, t["fast_s"]), t["fast_s"] / t["autograd_s"]
        rows.append(("eager fast step vs autograd step", b,
                     f"{t['fast_s'] * 1e6:.1f} vs {t['autograd_s'] * 1e6:.1f} us/step: {ratio:.2f}x; "
                     f"one run at a time: {runs_per_s:.3g} runs/s ({3600 * runs_per_s:.3g} runs/h)"))  # fmt: skip
        packed = t["packed_s"] / t["fast_s"]
        rows.append((f"{PACK_SIZE} packed runs vs one at a time (per run-step)", b,
                     f"{t['packed_s'] * 1e6:.1f} vs {t['fast_s'] * 1e6:.1f} us: {packed:.2f}x; "
                     f"{1 / t['packed_s']:.3g} vs {1 / t['fast_s']:.3g} run-steps/s"))  # fmt: skip
        graphed, diff = t["graphed_s"] / t["fast_s"], exactness[b]
        rows.append(("CUDA-graph captured step vs eager (and max |weight diff|, rel. loss diff after 48 steps)", b,
                     f"{t['graphed_s'] * 1e6:.1f} vs {t['fast_s'] * 1e6:.1f} us/step: {graphed:.2f}x; "
                     f"{'ok' if diff <= GRAPH_TOLERANCE else 'FAIL'}: {diff:.2g}"))  # fmt: skip
    for b, (batched, single) in gradsum.items():
        rows.append(("gradsum update=true trials/s: batched vs one at a time", b,
                     f"{batched:.3g} vs {single:.3g} trials/s: {batched / single:.2f}x"))  # fmt: skip
    rows.append(("speed probe, 1 epoch data=synthetic", 64, checks["speed"][1]))
    rows.append(("parallel launcher, 2 jobs n_jobs=2", "8, 32", checks["parallel"][1]))
    rows.append(("packed launcher, 2 seeds x 2 lrs in one pack", 8, checks["packed"][1]))
    rows.append(("trainer.cuda_graph=true, 1 epoch data=synthetic", 2, checks["graph"][1]))
    rows.append(("DDP on GPUs", "-", "not checked here (needs 2 GPUs; tests/test_ddp.py runs it on CPU processes)"))
    study = reference_study_seconds(times)
    estimate = (f"{study / 60:.1f} min ({REFERENCE_SEEDS} seeds x {REFERENCE_EPOCHS} epochs, one run at a time, "
                "fast-step training only)" if study is not None else "needs B = 2, 64, 256, 1024 timed")  # fmt: skip
    rows.append(("reference study wall time (estimate)", "2, 64, 256, 1024", estimate))
    return rows


def print_table(device: torch.device, rows: list[tuple]) -> None:
    print(f"bsstudy gpu-check | {device_name(device)} | torch {torch.__version__}"
          + (" | CPU dry run (--cpu): not GPU numbers" if device.type == "cpu" else ""))  # fmt: skip
    print("| check | B | result |\n|---|---|---|")
    for check, b, result in rows:
        print(f"| {check} | {b} | {result} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run every check on the CPU (a dry run, not GPU numbers)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(REFERENCE_BATCH_SIZES))
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of the step timings")
    parser.add_argument(
        "--steps-scale", type=float, default=1.0, help="x the steps per timing (bench.STEPS_PER_REPEAT)"
    )
    parser.add_argument("--timeout", type=int, default=120, help="seconds allowed to each bsstudy run")
    parser.add_argument("--gradsum-trials", type=int, default=64, help="trials per gradsum timing")
    parser.add_argument("--gradsum-samples", type=int, default=1024, help="samples per gradsum trial")
    args = parser.parse_args(argv)
    device = check_device(args.cpu)
    times = step_times(device, args.batch_sizes, args.steps_scale, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        checks = {"speed": speed_probe_check(device, Path(tmp) / "speed", args.timeout),
                  "parallel": parallel_check(device, Path(tmp) / "parallel", args.timeout),
                  "packed": packed_check(device, Path(tmp) / "packed", args.timeout),
                  "graph": graph_run_check(device, Path(tmp) / "graph", args.timeout)}  # fmt: skip
    gradsum = gradsum_trial_rates(device, args.gradsum_trials, args.gradsum_samples)
    exactness = {b: graph_exactness(device, b) for b in args.batch_sizes}
    print_table(device, table_rows(device, times, checks, gradsum, exactness))
    exact = all(diff <= GRAPH_TOLERANCE for diff in exactness.values())
    return 0 if exact and all(ok for ok, _ in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
