"""The tuned study (`experiment=tuned`): per batch size B, the learning rate that reaches a target validation
accuracy in the fewest steps, then that lr with more seeds (Shallue et al. 2019 tune the lr, and momentum,
per B and count steps to a target validation error).

Phase 1, the grid: for every B, lrs eta_k = base_lr * (1 - momentum) * (B / base_batch_size) * f_k for the
factors f_k (log-spaced, centred on 1: the linear-scaling rule, Goyal et al. 2017; (1 - momentum) keeps the
effective step eta / (1 - momentum) of the grid's centre the same for every momentum), for every momentum
of the grid, with the first seed. Phase 2: the selected (lr, momentum) of each B with the other seeds.

Selection (validation only, `select_best`): among the phase-1 runs of one B that reached the target, the
fewest optimizer steps to target (bsstudy/train/target.py: summary.json `target.steps_interpolated`, the
crossing interpolated in log-steps between evaluations; `optimizer_steps`, the step of the first evaluation
at or above it, for runs recorded before interpolation); a tie (the same steps) goes to the higher
validation accuracy at the crossing, then to the smaller lr. When no run of a B reached the target, B has
no selection and no phase 2: the report says "not reached". The selection run's seed is one of the seeds
reported; it was picked for being fast, so its steps are biased low, and the other seeds are not.

The runner of the two phases is hydra_plugins/bsstudy_tuned/tuned_sweeper.py (a Hydra sweeper, so the study
is one `python -m bsstudy -m experiment=tuned` command); this module holds what it and the report share.
"""

from __future__ import annotations

from dataclasses import dataclass

from bsstudy import ConfigError, is_positive_int


@dataclass(frozen=True)
class Candidate:
    """One phase-1 run as the selection sees it."""

    batch_size: int
    lr: float
    momentum: float
    reached: bool
    steps: float | None  # optimizer steps to target: the crossing interpolated in log-steps (target.py)
    val_acc: float | None  # at that check


def lr_text(lr: float) -> str:
    """The lr as it is written in a job's override: 4 significant digits, so a resumed sweep names it the same."""
    return f"{lr:.4g}"


def lr_grid(batch_size: int, base_lr: float, base_batch_size: int, factors, momentum: float = 0.0) -> list[float]:
    """eta_k = base_lr * (1 - momentum) * B / base_batch_size * f_k, rounded as written in the overrides."""
    centre = base_lr * (1 - momentum) * batch_size / base_batch_size
    return [float(lr_text(centre * f)) for f in factors]


def check_grid(batch_sizes, lr_factors, base_lr, base_batch_size, seeds, momenta) -> None:
    """hydra.sweeper.* of the tuned sweeper; raises ConfigError naming the key and what is allowed."""
    if not batch_sizes or not all(is_positive_int(b) for b in batch_sizes):
        raise ConfigError(f"hydra.sweeper.batch_sizes must be a list of positive integers; got {batch_sizes!r}")
    if not lr_factors or not all(isinstance(f, (int, float)) and f > 0 for f in lr_factors):
        raise ConfigError(f"hydra.sweeper.lr_factors must be a list of numbers > 0; got {lr_factors!r}")
    if not (isinstance(base_lr, (int, float)) and base_lr > 0):
        raise ConfigError(f"hydra.sweeper.base_lr must be a number > 0; got {base_lr!r}")
    if not is_positive_int(base_batch_size):
        raise ConfigError(f"hydra.sweeper.base_batch_size must be a positive integer; got {base_batch_size!r}")
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"hydra.sweeper.seeds must be a list of distinct integers >= 0; got {seeds!r}")
    if not momenta or not all(isinstance(m, (int, float)) and 0 <= m < 1 for m in momenta):
        raise ConfigError(f"hydra.sweeper.momenta must be a list of numbers in [0, 1); got {momenta!r}")


def job_overrides(batch_size: int, lr: float, momentum: float, seed: int) -> list[str]:
    """The overrides that make one run of the study (added to the command's own)."""
    return [f"data.batch_size={batch_size}", f"optim.lr={lr_text(lr)}", f"optim.momentum={momentum:g}", f"seed={seed}"]


def candidate_from_summary(summary: dict) -> Candidate:
    """A Candidate from a run's summary.json (a failed or diverged run has not reached the target)."""
    target = summary.get("target") or {}
    reached = bool(target.get("reached")) and summary.get("status") == "completed"
    return Candidate(
        batch_size=int(summary["batch_size"]),
        lr=float(summary["lr"]),
        momentum=float(summary.get("momentum", 0.0) or 0.0),
        reached=reached,
        steps=steps_to_target(target) if reached else None,
        val_acc=target.get("val_acc") if reached else None,
    )


def steps_to_target(target: dict) -> float | None:
    """summary.json `target`'s steps to target: the interpolated crossing, else (a run recorded before it was
    interpolated) the step of the first check at or above the target."""
    steps = target.get("steps_interpolated")
    return steps if steps is not None else target.get("optimizer_steps")


def select_best(candidates: list[Candidate]) -> Candidate | None:
    """The fewest steps to target among those that reached it; ties: higher val_acc at the crossing, then the
    smaller lr. None when none reached the target.

    >>> a = Candidate(64, 0.1, 0.0, True, 500, 0.86)
    >>> b = Candidate(64, 0.2, 0.0, True, 500, 0.87)
    >>> select_best([a, b, Candidate(64, 0.4, 0.0, False, None, None)]).lr
    0.2
    """
    reached = [c for c in candidates if c.reached]
    if not reached:
        return None
    return min(reached, key=lambda c: (c.steps, -c.val_acc, c.lr))
