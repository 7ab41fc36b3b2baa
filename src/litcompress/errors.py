"""The one exception type litcompress raises for bad user input."""


class ConfigError(ValueError):
    """A configuration value that cannot work, found before any long work starts.

    The message names the bad value and says how to fix it; ``train.py`` prints it as one paragraph
    instead of a traceback.
    """
