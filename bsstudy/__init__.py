"""bsstudy: which batch size should I use, and why does it change my results?"""

from pathlib import Path

__version__ = "0.1.0"
CONF_DIR = Path(__file__).resolve().parent / "conf"  # the config tree, shipped inside the package


class UsageError(ValueError):
    """Something the user can fix (a setting, a data file, a run folder): the CLI prints its one-line
    message without a traceback (HYDRA_FULL_ERROR=1 shows it)."""


class ConfigError(UsageError):
    """A setting is out of range; the message names the full config key and what is allowed."""


class DataError(UsageError):
    """A data file is missing, corrupt or inconsistent; the message names the file and the way out."""


class RunFolderError(UsageError):
    """The run folder holds something else than this run (another config, a finished run, another process)."""


class FolderError(UsageError):
    """A folder given to a command is missing or holds no runs: the message names it and what to give."""


class OutputError(UsageError):
    """A command cannot write its files (a full disk, a read-only folder): the message names the file, says what
    was left as it was, and the way out."""


def is_positive_int(value) -> bool:
    """An int >= 1 (and not a bool, which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
