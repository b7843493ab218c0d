"""Every setting of a run, except the probes' own, checked in one place before any data is loaded.

A table of `Rule`s says what each key's value must be (type, range, choices, null allowed); one pass over the
config applies it, and the few checks that relate several keys are the small named functions below. Every error
is a one-line ConfigError naming the full key and what is allowed, e.g.
`data.batch_size must be a positive integer; got 0`. A probe checks its own settings with the same tools:

>>> from omegaconf import OmegaConf
>>> check_settings(OmegaConf.create({"every": 0}), {"every": Rule("int", min=1)}, "probes.speed")
Traceback (most recent call last):
...
bsstudy.ConfigError: probes.speed.every must be a positive integer; got 0
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig, ListConfig, OmegaConf

from bsstudy import ConfigError
from bsstudy.extras import require

# What the settings allow and imply, declared here once; the code imports them from here (this module
# imports nothing of bsstudy's code, so it sits below everything it checks).
DATASETS = ("mnist", "fashion_mnist", "kmnist", "digits", "synthetic")  # data.name (IDX files: train/data.py)
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed_everything's largest seed
FAST_STEP_MODES = ("auto", "on", "off")
MLP_TARGET = "bsstudy.train.net.MLP"  # model._target_ of the study's MLP, the one network with the fast step
MODELS = {MLP_TARGET: "mlp", "bsstudy.train.net.LeNet5": "cnn"}  # model._target_ -> its conf/model/<name>.yaml


def fast_step_blocker(optim_cfg, model_cfg, world_size: int = 1, precision="32-true") -> str | None:
    """Why the exact fast step cannot run with these settings (world_size: DDP processes; precision: Lightning's
    trainer.precision), or None if it can."""
    if str(precision) not in ("32", "32-true"):
        return f"trainer.precision={precision} (the fast step computes in float32, outside Lightning's autocast)"
    if world_size > 1:
        return f"trainer=ddp with {world_size} processes (the fast step does not all-reduce gradients)"
    if model_cfg.get("_target_", MLP_TARGET) != MLP_TARGET:
        return f"model={model_name(model_cfg)} (the fast step implements the MLP only)"
    if model_cfg.get("batch_norm", False):
        return "model.batch_norm=true (the fast step implements Linear + ReLU layers only)"
    if optim_cfg.name != "sgd":
        return f"optim.name={optim_cfg.name} (the fast step implements SGD only)"
    if optim_cfg.accumulate != 1:
        return f"optim.accumulate={optim_cfg.accumulate} (the fast step updates after every micro-batch)"
    return None


def model_name(model_cfg) -> str:
    """The name of the model's config file (mlp, cnn) or else its `_target_`."""
    target = model_cfg.get("_target_", MLP_TARGET)
    return MODELS.get(target, target)


LR_SCALINGS = ("none", "linear", "sqrt")
OPTIMIZERS = ("sgd", "adam")
GEOMETRY_BN = ("running", "batch")  # batch-norm conventions of the geometry measures (measures/objective.py)


def check_geometry_bn(value) -> str:
    """model.geometry_bn is one of GEOMETRY_BN."""
    if value not in GEOMETRY_BN:
        raise ConfigError(f"model.geometry_bn must be one of {list(GEOMETRY_BN)}; got {value!r}")
    return value


STOP_AT_KEYS = ("train_loss", "train_acc", "patience", "min_delta")
TARGET_KEYS = ("val_acc", "val_check_ratio", "max_steps")  # checked within the epoch (bsstudy/train/target.py)


def has_target(stop_at) -> bool:
    """Whether trainer.stop_at sets val_acc targets or a step budget (both are checked within the epoch)."""
    return stop_at.get("val_acc") is not None or stop_at.get("max_steps") is not None


# One run on several processes (trainer=ddp): which share of every batch each process takes.
# `data.batch_size` is always the *global* batch B: one optimizer step consumes B samples (times
# `optim.accumulate`) whatever the number of processes W = trainer.devices x trainer.num_nodes.
# Each process takes every W-th sample of the step (rank r: samples r, r + W, ...), so a process
# sees B / W samples per micro-batch, and B must be divisible by W. Every process scales its summed
# loss by W / n (n = samples of the whole step) and DDP averages the gradients over the W processes:
#
#     (1/W) sum_r (W/n) sum_{i in share r} grad l_i = (1/n) sum_{i in step} grad l_i,
#
# the gradient of the step's mean loss, the same as one process with batch B (exact also for a
# last step of an epoch whose n is not a multiple of W).
DDP_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true")


def world_size(trainer_cfg) -> int:
    """W = processes of one run: trainer.devices x trainer.num_nodes under DDP, else 1."""
    if trainer_cfg.strategy not in DDP_STRATEGIES:
        return 1
    devices = trainer_cfg.devices
    return (len(devices) if not isinstance(devices, int) else devices) * trainer_cfg.num_nodes


def per_device_batch_size(batch_size: int, world: int) -> int:
    """B / W, the micro-batch of each process; a B not divisible by W is a ConfigError naming both."""
    if batch_size % world:
        raise ConfigError(
            f"data.batch_size ({batch_size}) must be divisible by the number of DDP processes, "
            f"trainer.devices x trainer.num_nodes = {world}: data.batch_size is the global batch, "
            f"split evenly over the processes"
        )
    return batch_size // world


def launched_externally() -> bool:
    """True where a cluster (SLURM, torchrun) has started one process per device, not Lightning."""
    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def is_number(value) -> bool:
    """An int or float that is finite (not a bool, not inf, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value) -> bool:
    """An int and not a bool, which Python counts as an int."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """What one setting's value must be.

    kind: "int", "number" (finite), "bool", "str", "choice" (one of `choices`), "list" (each item follows
    `each`), "schedule" ({epoch >= 0: value following `each`}), "mapping" (any {name: settings}) or "any"
    (a declared setting whose value its owner checks, e.g. against the model).
    min / max bound an int or number (`open_min` / `open_max`: the bound itself is not allowed); `nullable`:
    null is allowed too; `listable`: a non-empty list of such values too; `says` replaces the generated description
    where an error text is already known to users; `example` is appended as ", e.g. <example>".

    >>> Rule("number", min=0, max=1, open_min=True, nullable=True).error("trainer.stop_at.train_acc", 1.5)
    'trainer.stop_at.train_acc must be null or a number in (0, 1]; got 1.5'
    >>> Rule("int", min=1).error("data.batch_size", 64) is None
    True
    """

    kind: str
    min: float | None = None
    max: float | None = None
    open_min: bool = False
    open_max: bool = False
    choices: tuple = ()
    nullable: bool = False
    listable: bool = False
    each: Rule | None = None
    says: str | None = None
    example: str | None = None

    def error(self, key: str, value) -> str | None:
        """The one-line error for `value` at `key`, or None when the value is allowed."""
        if self.allows(value):
            return None
        example = f", e.g. {self.example}" if self.example else ""
        return f"{key} must be {self.describe()}{example}; got {value!r}"

    def allows(self, value) -> bool:
        if value is None:
            return self.nullable
        if self.listable and isinstance(value, (list, tuple, ListConfig)):
            return len(value) > 0 and all(v is not None and self.in_kind(v) and self.in_range(v) for v in value)
        return self.in_kind(value) and self.in_range(value)

    def in_kind(self, value) -> bool:
        if self.kind == "int":
            return is_int(value)
        if self.kind == "number":
            return is_number(value)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "list":
            return isinstance(value, (list, tuple, ListConfig)) and all(self.each.allows(v) for v in value)
        if self.kind == "schedule":
            return isinstance(value, (Mapping, DictConfig)) and all(
                is_int(k) and k >= 0 and self.each.allows(v) for k, v in value.items()
            )
        if self.kind == "mapping":
            return isinstance(value, (Mapping, DictConfig))
        if self.kind == "any":  # a setting whose values the probe checks itself (they depend on the model)
            return True
        raise ValueError(f"unknown Rule kind {self.kind!r}")

    def in_range(self, value) -> bool:
        if self.kind not in ("int", "number"):
            return True
        above = self.min is None or (value > self.min if self.open_min else value >= self.min)
        below = self.max is None or (value < self.max if self.open_max else value <= self.max)
        return above and below

    def describe(self) -> str:
        """What the value must be, in words: "a positive integer", "null or a number in (0, 1]", ..."""
        if self.says:
            return self.says
        value = self.describe_value()
        if self.listable:
            return f"{'null, ' if self.nullable else ''}{value} or a non-empty list of them"
        return f"null or {value}" if self.nullable else value

    def describe_value(self) -> str:
        if self.kind == "int" and self.min == 1 and self.max is None:
            return "a positive integer"
        if self.kind in ("int", "number"):
            return f"{'an integer' if self.kind == 'int' else 'a number'}{self.describe_range()}"
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        if self.kind in ("list", "schedule"):
            items = self.each.describe_value().replace("a positive integer", "positive integers")
            items = items.replace("a number", "numbers").replace("an integer", "integers")
            return f"a list of {items}" if self.kind == "list" else f"a mapping {{epoch >= 0: {items}}}"
        return {"bool": "true or false", "str": "a string", "mapping": "a mapping {name: settings}"}[self.kind]

    def describe_range(self) -> str:
        low, high = (bound(v) if v is not None else "" for v in (self.min, self.max))
        if self.min is not None and self.max is not None:
            return f" in {'(' if self.open_min else '['}{low}, {high}{')' if self.open_max else ']'}"
        if self.min is not None:
            return f" {'>' if self.open_min else '>='} {low}"
        if self.max is not None:
            return f" {'<' if self.open_max else '<='} {high}"
        return ""


def bound(value) -> str:
    """A range bound in words: an int in full (seed's 4294967295, not 4.29497e+09), a float as %g."""
    return str(value) if is_int(value) else f"{value:g}"


POSITIVE_INT = Rule("int", min=1)
BOOL = Rule("bool")
SAMPLES = Rule("int", min=1, nullable=True, says="null (all samples) or a positive integer")  # a subset size
FRACTION = Rule("number", min=0, max=1, open_min=True, open_max=True)

ROOT_RULES = {
    "seed": Rule("int", min=0, max=MAX_SEED),
    "resume": BOOL,
    "data": Rule("mapping"),
    "model": Rule("mapping"),
    "optim": Rule("mapping"),
    "trainer": Rule("mapping"),
    "logger": Rule("mapping"),
    "probes": Rule("mapping"),  # each probe checks its own settings when it is built
    "checkpoint": Rule("mapping"),
    "callbacks": Rule("mapping", nullable=True),
}
DATA_RULES = {
    "name": Rule("choice", choices=tuple(DATASETS)),
    "batch_size": POSITIVE_INT,
    "batch_size_schedule": Rule("schedule", each=POSITIVE_INT, nullable=True, example="{0: 1024, 10: 64}",
                                says="null or a mapping {epoch >= 0: batch size}"),
    "drop_last": BOOL,
    "root": Rule("str"),
    "download": BOOL,
    "check_known": BOOL,  # the IDX files hold the known split sizes and classes (train/data_checks.py)
    "val_size": Rule("int", min=0),  # its upper bound, the training set's size, is checked when the data is loaded
    "train_size": Rule("int", min=1, nullable=True),
    "test_size": Rule("int", min=1, nullable=True),
    "test_fraction": FRACTION,  # data=digits
    "n_train": POSITIVE_INT,  # data=synthetic: n_train ... class_sep
    "n_test": POSITIVE_INT,
    "input_size": POSITIVE_INT,
    "num_classes": POSITIVE_INT,
    "class_sep": Rule("number", min=0),
}  # fmt: skip
MODEL_RULES = {  # model._target_ -> the settings of that network; another _target_'s constructor checks its own
    "bsstudy.train.net.MLP": {
        "_target_": Rule("str"),
        "hidden_sizes": Rule("list", each=POSITIVE_INT, example="[1024, 1024]"),
        "batch_norm": BOOL,
        "geometry_bn": Rule("choice", choices=GEOMETRY_BN),
    },
    "bsstudy.train.net.LeNet5": {
        "_target_": Rule("str"),
        "channels": Rule("list", each=POSITIVE_INT, example="[6, 16]"),
        "hidden_sizes": Rule("list", each=POSITIVE_INT, example="[120, 84]"),
        "geometry_bn": Rule("choice", choices=GEOMETRY_BN),
    },
}
OPTIM_RULES = {
    "name": Rule("choice", choices=OPTIMIZERS),
    "lr": Rule("number", min=0, open_min=True, says="a number > 0 and finite"),
    "momentum": Rule("number", min=0, max=1, open_max=True),
    "weight_decay": Rule("number", min=0, says="a finite number >= 0"),
    "lr_scaling": Rule("choice", choices=LR_SCALINGS),
    "base_batch_size": POSITIVE_INT,
    "lr_schedule": Rule("schedule", each=Rule("number", min=0, open_min=True), nullable=True,
                        says="null or a mapping {epoch >= 0: factor > 0}", example="{10: 0.2, 20: 0.04}"),
    "warmup_epochs": Rule("number", min=0),
    "accumulate": POSITIVE_INT,
    "betas": Rule("list", each=Rule("number", min=0, max=1, open_max=True)),  # optim=adam
}  # fmt: skip
TRAINER_RULES = {  # bsstudy's own keys and the Trainer arguments it reads; trainer_arguments checks the others
    "max_epochs": POSITIVE_INT,
    "strategy": Rule("choice", choices=("auto", *DDP_STRATEGIES)),
    "num_nodes": POSITIVE_INT,
    "threads": Rule("int", min=1, nullable=True),
    "chunk_samples": POSITIVE_INT,
    "eval_chunk_size": POSITIVE_INT,
    "fast_step": Rule("choice", choices=FAST_STEP_MODES),
    "cuda_graph": BOOL,
    "progress_bar": BOOL,
    "stop_at": Rule("mapping"),
    "callbacks": Rule("mapping"),
}
STOP_AT_RULES = {
    "train_loss": Rule("number", min=0, open_min=True, nullable=True),
    "train_acc": Rule("number", min=0, max=1, open_min=True, nullable=True),
    "patience": Rule("int", min=1, nullable=True),
    "min_delta": Rule("number", min=0),
    "val_acc": Rule("number", min=0, max=1, open_min=True, nullable=True, listable=True),  # any order
    "val_check_ratio": Rule("number", min=1, open_min=True, nullable=True, says="null (1.1) or a number > 1"),
    "max_steps": Rule("int", min=1, nullable=True),
}
assert list(STOP_AT_RULES) == [*STOP_AT_KEYS, *TARGET_KEYS]  # the order of the "allowed:" list users know
CHECKPOINT_RULES = {
    "at_epochs": Rule("list", each=POSITIVE_INT),
    "save_last": BOOL,
}
GROUP_RULES = {  # the nodes whose every key is a setting of the table
    "data": DATA_RULES,
    "optim": OPTIM_RULES,
    "trainer.stop_at": STOP_AT_RULES,
    "checkpoint": CHECKPOINT_RULES,
}

# trainer.* keys that are bsstudy's own settings, and Trainer arguments that bsstudy sets itself
BSSTUDY_TRAINER_KEYS = (
    "threads", "chunk_samples", "eval_chunk_size", "fast_step", "cuda_graph", "progress_bar", "stop_at", "callbacks",
)  # fmt: skip
SET_BY_BSSTUDY = (
    "logger", "callbacks", "enable_progress_bar", "enable_model_summary", "num_sanity_val_steps", "log_every_n_steps",
    "reload_dataloaders_every_n_epochs", "limit_val_batches", "default_root_dir", "use_distributed_sampler",
    "enable_checkpointing",  # checkpoint.save_last and checkpoint.at_epochs say what is saved
)  # fmt: skip


def check_value(key: str, value, rule: Rule) -> None:
    """Raise ConfigError when `value`, the setting `key`, breaks `rule`."""
    if (message := rule.error(key, value)) is not None:
        raise ConfigError(message)


def full_key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def check_values(node, rules: dict[str, Rule], prefix: str) -> None:
    """Every key of `node` that has a rule follows it; keys without one are not looked at."""
    for key, value in node.items():
        if key in rules:
            check_value(full_key(prefix, key), value, rules[key])


def check_known(node, rules: dict[str, Rule], prefix: str) -> None:
    """Every key of `node` is one of `rules` (Hydra's `_target_` aside): a misspelled key is not ignored."""
    if unknown := sorted(set(node) - set(rules) - {"_target_"}):
        raise ConfigError(f"{full_key(prefix, unknown[0])} is not a setting; allowed: {', '.join(rules)}")


def check_settings(node, rules: dict[str, Rule], prefix: str) -> None:
    """`node` (the settings under `prefix`) holds only keys of `rules`, each with a value its rule allows;
    raises ConfigError("<prefix>.<key> must be ...; got ...") or ("<prefix>.<key> is not a setting; ...")."""
    check_known(node, rules, prefix)
    check_values(node, rules, prefix)


def node_at(cfg, path: str):
    for part in path.split("."):
        cfg = cfg[part]
    return cfg


def trainer_arguments(trainer_cfg: DictConfig) -> dict:
    """The Lightning Trainer arguments of the `trainer` group: every key that is not one of bsstudy's own
    settings passes through (precision, deterministic, max_time, ...); an unknown key is a ConfigError."""
    allowed = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", *SET_BY_BSSTUDY}
    arguments = {}
    for key, value in trainer_cfg.items():
        if key in BSSTUDY_TRAINER_KEYS:
            continue
        if key not in allowed:
            why = "is set by bsstudy" if key in SET_BY_BSSTUDY else "is no bsstudy setting and no Trainer argument"
            raise ConfigError(
                f"trainer.{key} {why}; trainer.* takes {sorted(BSSTUDY_TRAINER_KEYS)} and the arguments of "
                f"lightning.Trainer except {sorted(SET_BY_BSSTUDY)}"
            )
        arguments[key] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return arguments


def check_config(cfg: DictConfig) -> None:
    """Everything that can be checked before the data is loaded: the table in one pass, then the checks that
    relate several keys. Raises ConfigError naming the key."""
    check_settings(cfg, ROOT_RULES, "")
    check_values(cfg.trainer, TRAINER_RULES, "trainer")
    for path, rules in GROUP_RULES.items():
        check_settings(node_at(cfg, path), rules, path)
    trainer_arguments(cfg.trainer)
    check_model(cfg.model)
    check_callback_group(cfg.get("callbacks"))
    check_monitors(cfg)
    check_checkpoint_epochs(cfg.checkpoint.at_epochs, cfg.trainer.max_epochs)
    check_schedule_epochs(cfg.data.batch_size_schedule, cfg.trainer.max_epochs)
    check_adam_momentum(cfg.optim)
    check_distributed(cfg)
    check_fast_step_settings(cfg)
    if "wandb" in cfg.logger:
        require("wandb", "wandb", "logger=wandb")


def check_optim(optim: DictConfig) -> None:
    """The `optim` group alone: its table and the Adam/momentum rule."""
    check_settings(optim, OPTIM_RULES, "optim")
    check_adam_momentum(optim)


def check_model(model: DictConfig) -> None:
    """The `model` group: a built-in network's settings by its table (a config recorded before model._target_
    existed is the MLP); another network's `_target_` must name a class, whose constructor checks the rest."""
    target = model.get("_target_", MLP_TARGET)
    if target in MODEL_RULES:
        check_settings(model, MODEL_RULES[target], "model")
    elif not isinstance(target, str) or "." not in target:
        raise ConfigError(f"model._target_ must be the import path of a torch.nn.Module class; got {target!r}")


def check_callback_group(callbacks) -> None:
    """callbacks.<name>: each a Lightning callback config with a `_target_` (the `callbacks` group)."""
    for name, callback in (callbacks or {}).items():
        if not (isinstance(callback, (Mapping, DictConfig)) and "_target_" in callback):
            raise ConfigError(
                f"callbacks.{name} must be a callback config with a _target_ (callbacks=[early_stopping, ...]); "
                f"got {callback!r}"
            )


def check_monitors(cfg: DictConfig) -> None:
    """A callback that monitors a val_* column (EarlyStopping, ModelCheckpoint) needs a validation split: without
    one (data.val_size=0: the reference presets, data=synthetic) Lightning would stop the run after its first
    epoch for a missing metric."""
    given = {f"callbacks.{k}": v for k, v in (cfg.get("callbacks") or {}).items()}
    given |= {f"trainer.callbacks.{k}": v for k, v in (cfg.trainer.get("callbacks") or {}).items()}
    for key, callback in given.items():
        monitor = callback.get("monitor") if isinstance(callback, (Mapping, DictConfig)) else None
        if isinstance(monitor, str) and monitor.startswith("val_") and not cfg.data.val_size:
            raise ConfigError(
                f"{key}.monitor={monitor} needs a validation split, but data.val_size is {cfg.data.val_size}: "
                f"set data.val_size > 0, or monitor a train_* column (selecting on test_* is selecting on test)"
            )


def check_checkpoint_epochs(at_epochs, max_epochs: int) -> None:
    """checkpoint.at_epochs: epochs the run reaches (1 ... trainer.max_epochs)."""
    if beyond := [e for e in at_epochs if e > max_epochs]:
        raise ConfigError(
            f"checkpoint.at_epochs has epochs beyond trainer.max_epochs={max_epochs}: {beyond}; no checkpoint would "
            "be written there. Drop them or raise trainer.max_epochs"
        )


def check_schedule_epochs(schedule, max_epochs: int) -> None:
    """data.batch_size_schedule: switches at epochs the run reaches (0 ... trainer.max_epochs - 1; epochs count
    from 0), as checkpoint.at_epochs: a switch beyond them would never train, and the summary would still show it."""
    if beyond := sorted(e for e in (schedule or {}) if e >= max_epochs):
        raise ConfigError(
            f"data.batch_size_schedule has epochs beyond the last one, {max_epochs - 1} (epochs count from 0; "
            f"trainer.max_epochs={max_epochs}): {beyond}; no epoch would train with their batch size. Drop them or "
            "raise trainer.max_epochs"
        )


def check_adam_momentum(optim: DictConfig) -> None:
    if optim.name == "adam" and optim.momentum:
        raise ConfigError("optim.momentum is an SGD setting; Adam uses optim.betas. Leave optim.momentum at 0.")


def check_distributed(cfg: DictConfig) -> None:
    """trainer=ddp: devices given as a count or indices, every (scheduled) batch size divisible by the number of
    processes, no local -m sweep (Lightning would re-run it), and no within-epoch target (one process only)."""
    trainer = cfg.trainer
    if trainer.strategy == "auto":
        return
    devices = trainer.devices
    device_list = not isinstance(devices, (int, str)) and devices and all(is_int(d) and d >= 0 for d in devices)
    if not ((is_int(devices) and devices >= 1) or device_list):
        raise ConfigError(
            f"trainer.devices must be a positive integer or a list of device indices under trainer=ddp; got {devices!r}"
        )
    world = world_size(trainer)
    for batch_size in [cfg.data.batch_size, *(cfg.data.batch_size_schedule or {}).values()]:
        per_device_batch_size(batch_size, world)
    if world > 1 and HydraConfig.get().mode == RunMode.MULTIRUN and not launched_externally():
        raise ConfigError(
            "trainer=ddp inside a local -m sweep: Lightning starts the extra processes by re-running the "
            "command line, which would re-run the whole sweep. Run one command per run "
            "(python -m bsstudy trainer=ddp data.batch_size=...), or sweep with hydra/launcher=slurm, "
            "where SLURM starts one task per device"
        )
    if world > 1 and has_target(trainer.stop_at):
        raise ConfigError("trainer.stop_at.val_acc and trainer.stop_at.max_steps run in one process only (not DDP)")


def check_fast_step_settings(cfg: DictConfig) -> None:
    """trainer.fast_step=on and trainer.cuda_graph=true insist on the exact hand-written step: name what blocks it."""
    trainer = cfg.trainer
    blocker = (
        "trainer.fast_step=off"
        if trainer.fast_step == "off"
        else fast_step_blocker(cfg.optim, cfg.model, world_size(trainer), trainer.precision)
    )
    if trainer.fast_step == "on" and blocker:
        raise ConfigError(f"trainer.fast_step=on is not exact with {blocker}; use trainer.fast_step=auto or off")
    if trainer.get("cuda_graph") and blocker:
        raise ConfigError(f"trainer.cuda_graph=true captures the fast step, which {blocker} rules out; set it false")
    if trainer.get("cuda_graph") and trainer.deterministic:
        raise ConfigError(
            "trainer.cuda_graph=true cannot capture with trainer.deterministic=true (torch's deterministic "
            "scatter reads a value back to the host, which a capture forbids); set one of them false"
        )


def check_batch_size(cfg: DictConfig, n_train: int) -> None:
    """Once the data is loaded: every effective batch (accumulate x batch size, scheduled ones too) must fit in
    the training set."""
    for batch_size in [cfg.data.batch_size, *(cfg.data.batch_size_schedule or {}).values()]:
        if batch_size * cfg.optim.accumulate > n_train:
            raise ConfigError(
                f"data.batch_size ({batch_size}) x optim.accumulate ({cfg.optim.accumulate}) must be at most "
                f"the training set size, {n_train} for data={cfg.data.name}"
            )
