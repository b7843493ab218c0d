"""bsstudy: which batch size should I use, and why does it change my results?"""

from contextlib import contextmanager
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


class MissingDataError(FileNotFoundError, DataError):
    """A data set's files are in none of the places looked in, nor downloaded: the message lists the places and the
    ways out. A FileNotFoundError too, for callers that then take other data (bsstudy/tools/bench.py)."""


class WriteError(OSError, UsageError):
    """A file could not be written (a full disk, a read-only folder): the message names the path and says that the
    file is as it was. An OSError too, with the errno of the failed write."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message alone, without "[Errno 28]"


class RunFolderError(UsageError):
    """The run folder holds something else than this run (another config, a finished run, another process)."""


class UsageExit(SystemExit):
    """A UsageError on its way out of Hydra's machinery. Hydra wraps what a launcher or sweeper of ours raises
    (an InstantiationException with its own traceback) and prints it; a SystemExit is no Exception, so it passes,
    and the CLI prints the error's one line (bsstudy/__main__.py: cli). Exit code 1."""

    def __init__(self, error: UsageError):
        super().__init__(1)
        self.error = error


@contextmanager
def usage_errors_exit():
    """Around code that Hydra calls (a Hydra plugin's __init__, setup, sweep): a UsageError raised inside leaves as
    UsageExit."""
    try:
        yield
    except UsageError as err:
        raise UsageExit(err) from err


class FolderError(UsageError):
    """A folder given to a command is missing or holds no runs: the message names it and what to give."""


class OutputError(UsageError):
    """A command cannot write its files (a full disk, a read-only folder): the message names the file, says what
    was left as it was, and the way out."""


def is_positive_int(value) -> bool:
    """An int >= 1 (and not a bool, which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
