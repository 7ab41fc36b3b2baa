"""The one exception type litcompress raises for bad user input."""


class ConfigError(ValueError):
    """A configuration value that cannot work, found before any long work starts.

    The message names the bad value and says how to fix it; ``train.py`` prints it as one paragraph
    instead of a traceback.
    """


class OutputError(RuntimeError):
    """Something the run made could not be written (a checkpoint): the run stops at once. The
    command exits with status 1."""


class ExportError(RuntimeError):
    """An export that could not be made or failed its parity check: the message says why and what
    to try instead. The ``litcompress`` command exits with status 1 on it."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name if it has none)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


class JobFailed(RuntimeError):
    """A job of a sweep stopped by a clear error (already logged): the job fails, the sweep goes
    on to the next one and its exit status says that jobs failed."""
