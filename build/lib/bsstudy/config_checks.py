"""Settings that used to reach torch (or train to "completed") unchecked; each check raises a ConfigError
naming the full key and what is allowed, before any data is loaded."""

from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig

from bsstudy import ConfigError, is_positive_int


def is_number(value) -> bool:
    """An int or float that is finite (not a bool, not inf, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_bool(key: str, value) -> bool:
    """true or false only: `resume=maybe` is not read as true."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    return value


def check_hidden_sizes(value) -> None:
    """model.hidden_sizes: a list of positive integers ([] is a linear model)."""
    if not isinstance(value, (list, ListConfig)) or not all(is_positive_int(h) for h in value):
        raise ConfigError(f"model.hidden_sizes must be a list of positive integers, e.g. [1024, 1024]; got {value!r}")


def check_optim_numbers(optim: DictConfig) -> None:
    """optim.lr > 0, momentum in [0, 1), weight_decay >= 0: finite numbers before any comparison."""
    if not (is_number(optim.lr) and optim.lr > 0):
        raise ConfigError(f"optim.lr must be a number > 0 and finite; got {optim.lr!r}")
    if not (is_number(optim.momentum) and 0 <= optim.momentum < 1):
        raise ConfigError(f"optim.momentum must be a number in [0, 1); got {optim.momentum!r}")
    if not (is_number(optim.weight_decay) and optim.weight_decay >= 0):
        raise ConfigError(f"optim.weight_decay must be a finite number >= 0; got {optim.weight_decay!r}")


def check_checkpoint_epochs(at_epochs, max_epochs) -> None:
    """checkpoint.at_epochs: epochs the run reaches (1 ... trainer.max_epochs)."""
    if not isinstance(at_epochs, (list, ListConfig)) or not all(is_positive_int(e) for e in at_epochs):
        raise ConfigError(f"checkpoint.at_epochs must be a list of positive integers; got {at_epochs!r}")
    if is_positive_int(max_epochs) and (beyond := [e for e in at_epochs if e > max_epochs]):
        raise ConfigError(
            f"checkpoint.at_epochs has epochs beyond trainer.max_epochs={max_epochs}: {beyond}; no checkpoint would "
            "be written there. Drop them or raise trainer.max_epochs"
        )


def check_config_holes(cfg: DictConfig) -> None:
    """The checks above, plus seed >= 0 (Lightning's seed_everything rejects a negative seed without the key)."""
    require_bool("resume", cfg.resume)
    check_hidden_sizes(cfg.model.hidden_sizes)
    check_optim_numbers(cfg.optim)
    check_checkpoint_epochs(cfg.checkpoint.at_epochs, cfg.trainer.max_epochs)
    if not (isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and cfg.seed >= 0):
        raise ConfigError(f"seed must be an integer >= 0; got {cfg.seed!r}")
