"""bsstudy: which batch size should I use, and why does it change my results?"""

__version__ = "0.1.0"


class ConfigError(ValueError):
    """A setting is out of range; the message names the full config key and what is allowed."""


def is_positive_int(value) -> bool:
    """An int >= 1 (and not a bool, which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
