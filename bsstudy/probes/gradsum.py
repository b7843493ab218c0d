"""The gradient-sum-norm experiment: for a fixed budget of samples, does one large batch take a
larger or smaller total gradient step than many small ones? (Shen 2018, section 4.)

At each regime epoch (`at_epochs`), on a copy of the weights and SGD state, for each batch size B
and trial i: draw `samples` = m training samples, split them into n_B = floor(m / B) batches of B,
and record the norm of the sum of the n_B batch gradients of the measured parameters,

    S_B = sum_{s < n_B} grad L_s,   L_s = c_B sum_{j in batch s} l_j,   c_B = 1/B (mean) or 1 (sum),

along the n_B SGD steps they drive (`update: true`, the source's protocol, with the run's lr,
momentum and weight decay), or all at the frozen regime weights (`update: false`, an analytic
control). Trial i draws its samples from the stream `rng(seed, "gradsum", regime, B, i)`, or
`(regime, 0, i)` with `common_samples: true`, so that every B sees the same samples.

Beside S_B each trial also records the gradient of ONE sum-reduced batch, the first B samples of its
draw, at the regime weights: |sum_{j < B} g_j| (`single_batch_norm`), the reading under which sqrt(B)
holds while noise dominates (below B_simple = tr(Sigma) / |G|^2).

Frozen weights make S_B = c_B sum_{j < n} g_j with n = n_B B and g_j the per-sample gradients, so
one forward pass per trial serves every B: prefix sums of per-sample gradients at the few distinct
n. With the full-batch mean gradient G and the per-sample covariance Sigma over the N training
samples (measured here with torch.func), drawing n samples without replacement gives exactly

    E|S_B|^2 = c_B^2 (n^2 |G|^2 + n f_n tr(Sigma)),   f_n = (N - n) / (N - 1),

so mean reduction predicts a norm falling like 1/B, sum reduction one independent of B, and only a
single sum-reduced batch of B, with E = B^2 |G|^2 + B f_B tr(Sigma), grows like sqrt(B) while noise
dominates. These predictions of E|.|^2 are compared with the measured root mean square, and only for
`update: false`: along SGD steps the weights move and the model does not apply.

Files in <run>/probes/gradsum/: `trials.csv` (regime, batch_size, trial, norm, single_batch_norm),
`summary.csv` (one row per regime and B: mean, std, rms, mean_rel, the source's normalized std
std_norm = std_B mean_ref / mean_B, single_batch_mean, single_batch_rms, and for update=false the
predictions), `fit.json` (per regime: the exponent k of mean norm ~ B^k by log-log least squares, its
95% percentile-bootstrap interval over trials, the same for the single batch, |G|^2, tr(Sigma),
settings and seconds).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from torch.func import functional_call, grad, vmap

from bsstudy import ConfigError
from bsstudy.config import BOOL, POSITIVE_INT, Rule
from bsstudy.runfolder import write_json, write_table
from bsstudy.streams import rng
from bsstudy.train.fast_step import fast_sgd_step
from bsstudy.train.net import MLP
from bsstudy.train.probe import Probe

log = logging.getLogger(__name__)

REDUCTIONS = ("mean", "sum")
MOMENT_CHUNK_FLOATS = 2**25  # per-sample gradients held at once when measuring G and tr(Sigma)
BOOTSTRAP_RESAMPLES = 2000  # resamples of the trials for the exponent's percentile interval


def trial_indices(n_train: int, samples: int, seed: int, regime: int, batch_size: int, trial: int) -> np.ndarray:
    """The training samples of one trial, drawn without replacement from the stream
    rng(seed, "gradsum", regime, B, trial); B = 0 stands for "common to every batch size"."""
    return rng(seed, "gradsum", regime, batch_size, trial).choice(n_train, samples, replace=False)


def loss_scale(batch_size: int, reduction: str) -> float:
    """c_B: the factor of the summed per-sample losses in one batch's loss."""
    return 1.0 / batch_size if reduction == "mean" else 1.0


def measured_names(net: torch.nn.Module, params) -> list[str]:
    """Parameter names for `params`: "last" (the last layer's weight matrix), "all", or a list of names."""
    names = [name for name, _ in net.named_parameters()]
    if params == "last":
        return [[n for n in names if n.endswith("weight")][-1]]
    if params == "all":
        return names
    if isinstance(params, str) or not params or any(p not in names for p in params):
        raise ConfigError(f"probes.gradsum.params must be 'last', 'all' or a list of names from {names}; got {params}")
    return list(params)


def frozen_gradient_sums(
    net: torch.nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, cuts: list[int]
) -> torch.Tensor:
    """P_n = sum_{j < n} g_j for each n of the increasing `cuts`, g_j the flattened per-sample NLL gradient
    of the parameters `names` at the current weights; T trials at once: x [T, m, d], y [T, m] -> [T, len(cuts), P].
    The samples between two cuts go through one forward and backward pass, vmapped over the trials."""
    fixed = {k: v.detach() for k, v in net.named_parameters()}
    measured = {k: fixed.pop(k) for k in names}

    def summed_loss(measured, xb, yb):
        return F.nll_loss(functional_call(net, {**fixed, **measured}, (xb,)), yb, reduction="sum")

    block_gradients = vmap(grad(summed_loss), in_dims=(None, 0, 0))
    total, sums, start = 0, [], 0
    for end in cuts:
        grads = block_gradients(measured, x[:, start:end], y[:, start:end])
        total = total + torch.cat([grads[k].flatten(1) for k in names], dim=1)
        sums.append(total)
        start = end
    return torch.stack(sums, dim=1)


def single_batch_norms(
    net: torch.nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, batch_sizes: list[int]
) -> torch.Tensor:
    """|sum_{j < B} g_j| for each B of the increasing `batch_sizes`: the norm of the gradient of ONE batch
    of the first B samples of each trial with sum reduction, at the current weights; x [T, m, d] -> [T, len(B)].
    A pass of its own, so the gradient-sum column S_B is computed exactly as without it."""
    largest = batch_sizes[-1]
    return frozen_gradient_sums(net, names, x[:, :largest], y[:, :largest], batch_sizes).norm(dim=2)


def sgd_gradient_sums(
    net: torch.nn.Module,
    names: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    reduction: str,
    sgd: dict,
) -> torch.Tensor:
    """S_B along n_B = m // B SGD steps from the current weights, one copy of the weights per trial:
    x [T, m, d], y [T, m] -> [T, P]. `sgd` holds lr, momentum, weight_decay and the momentum buffers
    (by parameter name, None before the first step); the step is PyTorch's SGD (no dampening, no Nesterov):
    d = g + wd theta, buf = mu buf + d, theta -= lr buf."""
    trials = len(x)
    params = {k: v.detach().expand(trials, *v.shape).clone() for k, v in net.named_parameters()}
    buffers = {k: None if b is None else b.expand(trials, *b.shape).clone() for k, b in sgd["buffers"].items()}
    scale = loss_scale(batch_size, reduction)

    def batch_loss(params, xb, yb):
        return scale * F.nll_loss(functional_call(net, params, (xb,)), yb, reduction="sum")

    batch_gradients = vmap(grad(batch_loss))
    total = 0
    for start in range(0, batch_size * (x.shape[1] // batch_size), batch_size):
        grads = batch_gradients(params, x[:, start : start + batch_size], y[:, start : start + batch_size])
        total = total + torch.cat([grads[k].flatten(1) for k in names], dim=1)
        for k, theta in params.items():
            step = grads[k] + sgd["weight_decay"] * theta if sgd["weight_decay"] else grads[k]
            if sgd["momentum"]:
                buffers[k] = step if buffers[k] is None else buffers[k].mul_(sgd["momentum"]).add_(step)
                step = buffers[k]
            theta.sub_(step, alpha=sgd["lr"])
    return total


def fast_sgd_gradient_sum(
    net: MLP, names: list[str], x: torch.Tensor, y: torch.Tensor, batch_size: int, reduction: str, sgd: dict
) -> torch.Tensor:
    """S_B of one trial, x [m, d] -> [P], as `sgd_gradient_sums` computes it, but with the exact hand-written
    SGD step of bsstudy/train/fast_step.py on one copy of the weights, which stays in cache: several times faster
    at small B than vmapped copies, which are bound by memory traffic. A sum-reduced batch loss is B times
    the mean one, so its SGD step is the mean step with lr B, weight decay wd / B and momentum buffer / B."""
    scale = batch_size if reduction == "sum" else 1
    trial_net = copy.deepcopy(net)
    params = dict(trial_net.named_parameters())
    optimizer = torch.optim.SGD(
        trial_net.parameters(), lr=sgd["lr"] * scale, momentum=sgd["momentum"], weight_decay=sgd["weight_decay"] / scale
    )
    for name, buffer in sgd["buffers"].items():
        if buffer is not None and sgd["momentum"]:
            optimizer.state[params[name]]["momentum_buffer"] = buffer / scale
    sums = {name.removeprefix("layers."): torch.zeros_like(params[name]) for name in names}
    for start in range(0, batch_size * (len(x) // batch_size), batch_size):
        fast_sgd_step(trial_net.layers, optimizer, x[start : start + batch_size], y[start : start + batch_size],
                      grad_sums=sums)  # fmt: skip
    return scale * torch.cat([sums[name.removeprefix("layers.")].flatten() for name in names])


@contextmanager
def one_cpu_thread():
    """torch on one intra-op thread inside the block, the run's count restored after. A small batch's
    products are too small to split: on the 2-core CPU, shared with other jobs, a B=1 trial (1024 steps)
    took 7.8 s wall and 1.0 s CPU on one thread against 98 s wall and 14.8 s CPU on two, whose threads
    wait for each other; at B=1024 one thread was as fast (1.0 s against 1.05 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


BATCHED_TRIALS = ("auto", "on", "off")


def batched(setting: str, device: torch.device) -> bool:
    """Whether update=true trials run as stacked copies of the weights (sgd_gradient_sums: one vmapped step for
    all trials of a pass) or one at a time with the fast step (fast_sgd_gradient_sum). auto: batched on a GPU,
    where one launch for T trials replaces T launches; one at a time on the CPU, where a single copy stays in
    cache (several times faster at small B). Both give the same numbers (tests/test_gradsum.py)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def trials_fitting_in_memory(net: torch.nn.Module, samples: int, trials: int, device: torch.device) -> int:
    """Trials per pass when probes.gradsum.trials_per_pass is null: on a GPU as many as half its free memory
    holds, counting per trial four copies of the weights (weights, gradients, momentum buffer, sum) and the
    activations of its samples in float32; 32 on the CPU (its trials run one at a time anyway)."""
    if device.type != "cuda":
        return min(trials, 32)
    free, _ = torch.cuda.mem_get_info(device)
    params = sum(p.numel() for p in net.parameters())
    widths = sum(m.out_features + m.in_features for m in net.modules() if isinstance(m, torch.nn.Linear))
    per_trial = 4 * (4 * params + samples * widths)
    return max(1, min(trials, free // 2 // per_trial))


def is_plain_mlp(net: torch.nn.Module) -> bool:
    """True if `net` is the study's MLP of Linear layers only, which the hand-written fast step handles."""
    return isinstance(net, MLP) and all(
        isinstance(m, (MLP, torch.nn.ModuleList, torch.nn.Linear)) for m in net.modules()
    )


def gradient_moments(net: torch.nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) of the per-sample gradients g_j over (x, y) at the current weights:
    G = mean_j g_j, tr(Sigma) = mean_j |g_j|^2 - |G|^2 (population covariance), via torch.func vmap(grad)."""
    fixed = {k: v.detach() for k, v in net.named_parameters()}
    measured = {k: fixed.pop(k) for k in names}

    def sample_loss(measured, xj, yj):
        return F.nll_loss(functional_call(net, {**fixed, **measured}, (xj[None],)), yj[None])

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    chunk = max(1, MOMENT_CHUNK_FLOATS // sum(p.numel() for p in measured.values()))
    g_sum, sq_sum = 0, 0
    for start in range(0, len(y), chunk):
        grads = per_sample(measured, x[start : start + chunk], y[start : start + chunk])
        flat = torch.cat([grads[k].flatten(1) for k in names], dim=1).double()
        g_sum, sq_sum = g_sum + flat.sum(0), sq_sum + flat.square().sum()
    mean = g_sum / len(y)
    g_sq = mean.square().sum().item()
    return g_sq, sq_sum.item() / len(y) - g_sq


def predicted_sq_norm(n: int, scale: float, g_sq: float, trace: float, n_train: int) -> float:
    """E|c sum_{j<n} g_j|^2 for n samples drawn without replacement from N:
    c^2 (n^2 |G|^2 + n (N-n)/(N-1) tr(Sigma))."""
    return scale**2 * (n**2 * g_sq + n * (n_train - n) / (n_train - 1) * trace)


def log_log_fits(batch_sizes: np.ndarray, means: np.ndarray) -> np.ndarray:
    """[k, log a] of mean ~ a B^k by least squares on log-log axes (numpy.polyfit of log mean against log B);
    `means` [..., len(B)] gives one fit per leading index, [2, ...]. A mean <= 0 or non-finite gives a
    non-finite fit (NaN), which is kept, not dropped."""
    u = np.log(np.asarray(batch_sizes, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(np.asarray(means, float))
    rows = v.reshape(-1, len(u))
    fits = np.full((2, len(rows)), math.nan)
    finite = np.isfinite(rows).all(axis=1)  # polyfit would make every fit NaN for one non-finite row
    if finite.any():
        fits[:, finite] = np.polyfit(u, rows[finite].T, 1)
    return fits.reshape(2, *v.shape[:-1])


def log_log_slopes(batch_sizes: np.ndarray, means: np.ndarray) -> np.ndarray:
    """k of mean ~ a B^k by least squares on log-log axes (log_log_fits), one per leading index of `means`."""
    return log_log_fits(batch_sizes, means)[0]


def power_law_fit(batch_sizes: np.ndarray, means: np.ndarray) -> dict:
    """k and log a of mean ~ a B^k by least squares on log-log axes (the point estimate; no interval)."""
    k, intercept = log_log_fits(batch_sizes, means)
    return {"k": float(k), "intercept": float(intercept)}


def bootstrap_exponent(
    batch_sizes: np.ndarray, norms: np.ndarray, generator: np.random.Generator, resamples: int, paired: bool
) -> dict:
    """k of mean norm ~ a B^k (log-log least squares over the per-B means of norms [len(B), T]) with its
    95% percentile bootstrap interval over trials (scipy.stats.bootstrap): each resample draws T trials with
    replacement within each B (the same trial indices for every B if `paired`, i.e. trial i of every B shares
    its samples), refits k, and the interval is the 2.5th and 97.5th percentiles (numpy.percentile) of the
    refitted k. A non-finite k in any resample makes the interval non-finite (shown, not dropped)."""
    k = float(log_log_slopes(batch_sizes, norms.mean(axis=1)))
    if norms.shape[1] < 2:  # every resample is the one trial (scipy.stats.bootstrap needs two)
        return {"k": k, "ci95": [k, k] if math.isfinite(k) else [math.nan, math.nan]}

    def exponent(*per_b: np.ndarray, axis: int = -1) -> np.ndarray:
        return log_log_slopes(batch_sizes, np.stack([norm.mean(axis=axis) for norm in per_b], axis=-1))

    with warnings.catch_warnings():  # a non-finite k: scipy warns of a degenerate interval, it is shown as NaN
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        slopes = stats.bootstrap(
            tuple(norms), exponent, n_resamples=resamples, paired=paired, method="percentile", rng=generator
        ).bootstrap_distribution
    # np.percentile as before: scipy's own interval reads the quantiles (1 - 0.95) / 2 = 0.025000000000000022 and
    # 0.975, which moves the interval's ends in their last digit
    low, high = np.percentile(slopes, [2.5, 97.5]) if np.isfinite(slopes).all() else (math.nan, math.nan)
    return {"k": k, "ci95": [float(low), float(high)]}


def rms(values) -> float:
    """Root mean square, sqrt(mean v^2): what the noise model's E|S|^2 predicts."""
    return float(np.sqrt(np.mean(np.square(values))))


def summarize(trials: pd.DataFrame, samples: int, reduction: str, prediction: tuple[float, float, int] | None):
    """One row per batch size: mean, std and rms of the norms; mean_rel = mean_B / mu_ref and the source's
    normalized std, std_norm = std_B mu_ref / mean_B (each B rescaled so that its mean equals mu_ref, the mean
    at B = samples, or at the largest B); mean and rms of the single-batch norms; and, if `prediction` =
    (|G|^2, tr Sigma, N) is given (frozen weights only), the rms the independent-draw model predicts for
    both (see the module docstring)."""
    by_b = trials.groupby("batch_size")
    table = by_b["norm"].agg(mean="mean", std="std", rms=rms).reset_index()
    reference = table["mean"][table["batch_size"] == min(samples, table["batch_size"].max())].item()
    table.insert(1, "steps", samples // table["batch_size"])
    table["mean_rel"] = table["mean"] / reference
    table["std_norm"] = table["std"] * reference / table["mean"]
    single = by_b["single_batch_norm"].agg(single_batch_mean="mean", single_batch_rms=rms).reset_index(drop=True)
    table = pd.concat([table, single], axis=1)
    if prediction is None:
        return table
    g_sq, trace, n_train = prediction
    table["predicted"] = [
        math.sqrt(predicted_sq_norm(b * (samples // b), loss_scale(b, reduction), g_sq, trace, n_train))
        for b in table["batch_size"]
    ]
    table["predicted_single_batch"] = [  # one sum-reduced batch: c = 1 whatever the reduction
        math.sqrt(predicted_sq_norm(b, 1.0, g_sq, trace, n_train)) for b in table["batch_size"]
    ]
    return table


def replace_regime(path, table: pd.DataFrame, regime: int) -> None:
    """Write `table` as the rows of `regime` in the CSV at `path`, keeping the other regimes' rows."""
    if path.exists():
        kept = pd.read_csv(path)
        table = pd.concat([kept[kept["regime"] != regime], table]).sort_values(["regime", "batch_size"], kind="stable")
    write_table(path, table)


class GradSum(Probe):
    """The gradient-sum-norm experiment at the end of each epoch of `at_epochs`, on copies of the weights."""

    report_section = "bsstudy.analysis.report.dynamics:gradsum_section"
    report_order = 20
    settings = {
        "at_epochs": Rule("list", each=POSITIVE_INT),
        "batch_sizes": Rule("list", each=POSITIVE_INT),
        "trials": POSITIVE_INT,
        "samples": POSITIVE_INT,
        "update": BOOL,
        "reduction": Rule("choice", choices=tuple(REDUCTIONS)),
        "common_samples": BOOL,
        "params": Rule("any"),  # 'last', 'all' or parameter names: checked against the model when training starts
        "trials_per_pass": Rule(
            "int", min=1, nullable=True, says="null (sized from free GPU memory) or a positive integer"
        ),
        "batched_trials": Rule("choice", choices=BATCHED_TRIALS),
    }

    def __init__(
        self,
        out_dir,
        at_epochs: list[int],
        batch_sizes: list[int],
        trials: int,
        samples: int,
        update: bool,
        reduction: str,
        common_samples: bool,
        params,
        trials_per_pass: int | None,
        batched_trials: str = "auto",
    ):
        super().__init__(out_dir)
        for key, values in (("at_epochs", at_epochs), ("batch_sizes", batch_sizes)):
            if not values:
                raise ConfigError(f"probes.gradsum.{key} must be a non-empty list of positive integers; got {values}")
        if max(batch_sizes) > samples:
            raise ConfigError(f"probes.gradsum.batch_sizes must be at most probes.gradsum.samples ({samples})")
        self.at_epochs, self.batch_sizes = sorted(set(at_epochs)), sorted(set(batch_sizes))
        self.trials, self.samples, self.trials_per_pass = trials, samples, trials_per_pass
        self.batched_trials = batched_trials
        self.update, self.reduction, self.common_samples, self.params = update, reduction, common_samples, params

    def on_train_start(self, trainer, pl_module) -> None:
        if max(self.at_epochs) > trainer.max_epochs:
            raise ConfigError(
                f"probes.gradsum.at_epochs {self.at_epochs} go beyond trainer.max_epochs ({trainer.max_epochs})"
            )
        if self.samples > pl_module.data.n_train:
            raise ConfigError(
                f"probes.gradsum.samples ({self.samples}) exceeds the training set ({pl_module.data.n_train})"
            )
        if self.update and not isinstance(pl_module.optimizers().optimizer, torch.optim.SGD):
            raise ConfigError(
                f"probes.gradsum.update=true takes SGD steps; the run uses optim.name={pl_module.optim_cfg.name}"
            )
        measured_names(pl_module.net, self.params)  # fails early on a bad name
        fit_path = self.out_dir / "fit.json"
        self.summary = json.loads(fit_path.read_text()) if fit_path.exists() else {}  # regimes done before a resume

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        regime = trainer.current_epoch + 1
        if regime in self.at_epochs and not pl_module.diverged:
            with self.timed(pl_module):
                self.run_regime(pl_module, regime)

    def run_regime(self, pl_module, regime: int) -> None:
        """Every batch size and trial at this regime's weights; writes trials.csv, summary.csv and fit.json."""
        started = time.perf_counter()
        net = copy.deepcopy(pl_module.net).eval()  # batch-norm layers, if any, use their running statistics
        names = measured_names(net, self.params)
        sgd = self.sgd_state(pl_module, names=[n for n, _ in net.named_parameters()])
        data = pl_module.data
        groups = [self.batch_sizes] if self.common_samples and not self.update else [[b] for b in self.batch_sizes]
        norms = {b: [] for b in self.batch_sizes}
        singles = {b: [] for b in self.batch_sizes}
        per_pass = self.trials_per_pass or trials_fitting_in_memory(net, self.samples, self.trials, pl_module.device)
        for done, group in enumerate(groups, 1):
            for first in range(0, self.trials, per_pass):
                self.check_stop()  # a stop signal ends the run between passes (the epoch and its probe run again)
                trials = range(first, min(first + per_pass, self.trials))
                key = 0 if self.common_samples else group[0]
                picked = [trial_indices(data.n_train, self.samples, pl_module.seed, regime, key, i) for i in trials]
                picked = torch.from_numpy(np.stack(picked)).to(pl_module.device)
                x, y = data.x_train[picked], data.y_train[picked]
                for b, values in self.group_norms(net, names, group, x, y, sgd):
                    norms[b].append(values.cpu())
                for b, values in zip(group, single_batch_norms(net, names, x, y, group).T, strict=True):
                    singles[b].append(values.cpu())
            batches = ",".join(map(str, group))
            elapsed = time.perf_counter() - started
            log.info("gradsum at epoch %d: B=%s done (%d/%d), %d trials, %.1f s", regime, batches, done, len(groups),
                     self.trials, elapsed)  # fmt: skip
        trials = pd.DataFrame(
            {
                "regime": regime,
                "batch_size": np.repeat(self.batch_sizes, self.trials),
                "trial": np.tile(np.arange(self.trials), len(self.batch_sizes)),
                "norm": torch.cat([torch.cat(norms[b]) for b in self.batch_sizes]).double().numpy(),
                "single_batch_norm": torch.cat([torch.cat(singles[b]) for b in self.batch_sizes]).double().numpy(),
            }
        )
        g_sq, trace = gradient_moments(net, names, data.x_train, data.y_train)
        prediction = None if self.update else (g_sq, trace, data.n_train)
        table = summarize(trials, self.samples, self.reduction, prediction)
        table.insert(0, "regime", regime)
        replace_regime(self.out_dir / "trials.csv", trials, regime)
        replace_regime(self.out_dir / "summary.csv", table, regime)
        self.summary[str(regime)] = self.fit(trials, table, pl_module.seed, regime) | {
            "grad_sq_norm": g_sq,
            "grad_trace_cov": trace,
            "lr": sgd["lr"],
            "settings": {
                "update": self.update,
                "common_samples": self.common_samples,
                "reduction": self.reduction,
                "params": names,
                "batch_sizes": self.batch_sizes,
                "trials": self.trials,
                "samples": self.samples,
            },  # fmt: skip
            "seconds": time.perf_counter() - started,
        }
        write_json(self.out_dir / "fit.json", self.summary)
        fit = self.summary[str(regime)]
        log.info("gradsum at epoch %d: mean norm ~ B^k, k = %.3f (95%% bootstrap CI %.3f to %.3f); single sum-reduced "
                 "batch k = %.3f (%.3f to %.3f)", regime, fit["k"], *fit["ci95"], fit["single_batch"]["k"],
                 *fit["single_batch"]["ci95"])  # fmt: skip

    def fit(self, trials: pd.DataFrame, table: pd.DataFrame, seed: int, regime: int) -> dict:
        """The exponents of fit.json: k of the gradient-sum column and of the single-batch column, each with its
        bootstrap interval over trials (resampling stream `gradsum_bootstrap`, keyed by regime); for frozen
        weights also the noise model's k and the log-log intercept of the main fit (for the report's line)."""
        batch_sizes = np.array(self.batch_sizes)
        generator = rng(seed, "gradsum_bootstrap", regime)
        paired = self.common_samples  # trial i of every B drew the same samples: resample trials jointly

        def by_b(column):
            return np.stack([trials.loc[trials["batch_size"] == b, column].to_numpy() for b in self.batch_sizes])

        main = bootstrap_exponent(batch_sizes, by_b("norm"), generator, BOOTSTRAP_RESAMPLES, paired)
        single = bootstrap_exponent(batch_sizes, by_b("single_batch_norm"), generator, BOOTSTRAP_RESAMPLES, paired)
        result = main | {
            "ci_method": f"percentile bootstrap over trials ({BOOTSTRAP_RESAMPLES} resamples)",
            "n_trials": self.trials,
            "intercept": power_law_fit(batch_sizes, table["mean"].to_numpy())["intercept"],
            "single_batch": single,
        }
        if not self.update:
            result["predicted_k"] = power_law_fit(batch_sizes, table["predicted"].to_numpy())["k"]
        return result

    def group_norms(self, net, names, group, x, y, sgd):
        """(B, norms of S_B for the T trials of x [T, m, d]) for each B of the group."""
        if self.update:
            (b,) = group
            if is_plain_mlp(net) and not batched(self.batched_trials, x.device):  # one trial at a time, fast step
                with one_cpu_thread() if x.device.type == "cpu" else nullcontext():
                    trials = zip(x, y, strict=True)
                    sums = torch.stack(
                        [fast_sgd_gradient_sum(net, names, xi, yi, b, self.reduction, sgd) for xi, yi in trials]
                    )
            else:
                sums = sgd_gradient_sums(net, names, x, y, b, self.reduction, sgd)
            yield b, sums.norm(dim=1)
            return
        cuts = sorted({b * (self.samples // b) for b in group})
        prefix = frozen_gradient_sums(net, names, x, y, cuts)
        for b in group:
            yield b, loss_scale(b, self.reduction) * prefix[:, cuts.index(b * (self.samples // b))].norm(dim=1)

    @staticmethod
    def sgd_state(pl_module, names: list[str]) -> dict:
        """lr, momentum, weight decay and momentum buffers (copies, by parameter name) of the run's optimizer."""
        optimizer = pl_module.optimizers().optimizer
        group = optimizer.param_groups[0]
        state = [optimizer.state.get(p, {}).get("momentum_buffer") for p in pl_module.net.parameters()]
        return {
            "lr": group["lr"],
            "momentum": group.get("momentum", 0.0),
            "weight_decay": group.get("weight_decay", 0.0),
            "buffers": {n: None if b is None else b.detach().clone() for n, b in zip(names, state, strict=True)},
        }
