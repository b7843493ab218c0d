"""bsstudy: which batch size should I use, and why does it change my results?"""

__version__ = "0.1.0"


class ConfigError(ValueError):
    """A setting is out of range; the message names the full config key and what is allowed."""
