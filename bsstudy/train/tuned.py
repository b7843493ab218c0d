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

import math
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
    best_val_acc: float | None = None  # the highest validation accuracy the run saw (reached or not)


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
    seen = [v for v in ((summary.get("best") or {}).get("val_acc"), target.get("val_acc")) if is_number(v)]
    return Candidate(
        batch_size=int(summary["batch_size"]),
        lr=float(summary["lr"]),
        momentum=float(summary.get("momentum", 0.0) or 0.0),
        reached=reached,
        steps=steps_to_target(target) if reached else None,
        val_acc=target.get("val_acc") if reached else None,
        best_val_acc=max(seen) if seen else None,
    )


def steps_to_target(target: dict) -> float | None:
    """summary.json `target`'s steps to target: the interpolated crossing, else (a run recorded before it was
    interpolated) the step of the first check at or above the target."""
    steps = target.get("steps_interpolated")
    return steps if steps is not None else target.get("optimizer_steps")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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


# --- what the sweeper says when the target is not reached -------------------------------------------


def best_attempt(candidates: list[Candidate]) -> Candidate | None:
    """The run with the highest validation accuracy seen (ties: the smaller lr); None when no run has one."""
    seen = [c for c in candidates if c.best_val_acc is not None]
    return max(seen, key=lambda c: (c.best_val_acc, -c.lr)) if seen else None


def best_text(candidates: list[Candidate]) -> str:
    """ "best val_acc 0.457 at lr 0.05" (with the momentum when the grid has several), or why there is none."""
    best = best_attempt(candidates)
    if best is None:
        return "no validation accuracy recorded (failed or diverged runs)"
    momentum = f", momentum {best.momentum:g}" if len({c.momentum for c in candidates}) > 1 else ""
    return f"best val_acc {best.best_val_acc:.3g} at lr {best.lr:g}{momentum}"


def not_reached_warning(batch_size: int, candidates: list[Candidate], target: float, budget: str) -> str:
    """The sweeper's warning when no run of the first B's grid reached the target: the best accuracy reached (and
    at which lr), and the setting to change. `budget` names the runs' budget, e.g. "trainer.max_epochs=30".

    E.g. "B=16: no run of its lr grid (lr 0.1-0.2) reached val_acc 0.85 (best val_acc 0.64 at lr 0.2, the grid's
    highest lr). ... Change one of: trainer.stop_at.val_acc (...), the budget (now trainer.max_epochs=1), or ..."
    """
    lrs = sorted({c.lr for c in candidates})
    best = best_attempt(candidates)
    edge = ""
    if best is not None and len(lrs) > 1 and best.lr in (lrs[0], lrs[-1]):
        edge = ", the grid's lowest lr" if best.lr == lrs[0] else ", the grid's highest lr"
    span = f"lr {lrs[0]:g}-{lrs[-1]:g}" if len(lrs) > 1 else f"lr {lrs[0]:g}"
    reachable = f" (a target below {best.best_val_acc:.3g} is reachable)" if best is not None else ""
    grid = " (hydra.sweeper.lr_factors / base_lr: the best lr is at its edge)" if edge else ""
    grid = grid or " (hydra.sweeper.lr_factors)"
    return (
        f"B={batch_size}: no run of its lr grid ({span}) reached val_acc {target:g} ({best_text(candidates)}{edge}). "
        "The other batch sizes will likely end the same way, each run training to its budget. Change one of: "
        f"trainer.stop_at.val_acc{reachable}, the budget (now {budget}), or the lr grid{grid}. "
        "Stop (Ctrl-C) and rerun with the change."
    )


def phase_two_summary(chosen: dict, candidates: list[Candidate], target: float | None, seeds) -> str:
    """The sweeper's line before phase 2: its runs, and each B that has none with the best accuracy it reached.

    E.g. "tuned study, phase 2: 0 runs (each B's selected lr, seeds [1]); not reached val_acc 0.85: B=16 (best
    val_acc 0.61 at lr 0.1): lower trainer.stop_at.val_acc, or ..."
    """
    runs = sum(len(seeds) for c in chosen.values() if c is not None)
    line = f"tuned study, phase 2: {runs} runs (each B's selected lr, seeds {list(seeds)})"
    missing = [b for b, c in chosen.items() if c is None]
    if not missing:
        return line
    each = ", ".join(f"B={b} ({best_text([c for c in candidates if c.batch_size == b])})" for b in missing)
    goal = f" val_acc {target:g}" if target is not None else ""
    return (
        f"{line}; not reached{goal}: {each}: lower trainer.stop_at.val_acc, or raise trainer.max_epochs / "
        "trainer.stop_at.max_steps, or move the lr grid (hydra.sweeper.lr_factors)"
    )
