"""Optional features and the extra that installs each: a missing one stops the command with one line that
names it (`pip install 'bsstudy[wandb]'`), before anything runs."""

from __future__ import annotations

import importlib.util

from bsstudy import UsageError

# hydra/launcher=<name> -> (the plugin's module, the extra that installs it)
LAUNCHERS = {
    "parallel": ("hydra_plugins.hydra_joblib_launcher", "launchers"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "launchers"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
}


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def require(module: str, extra: str, feature: str) -> None:
    """UsageError naming `feature` and the extra when `module` cannot be imported."""
    if not is_installed(module):
        package = module.split(".")[-1]
        raise UsageError(f"{feature} needs {package}, which is not installed: pip install 'bsstudy[{extra}]'")


def require_launchers(argv: list[str]) -> None:
    """The plugin of every hydra/launcher=<name> on the command line."""
    for arg in argv:
        if arg.startswith("hydra/launcher="):
            name = arg.split("=", 1)[1]
            if name in LAUNCHERS:
                require(*LAUNCHERS[name], f"hydra/launcher={name}")
