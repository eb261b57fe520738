"""Errors the user can act on.

Every exception raised for bad input derives from ``PbpError``. Its message is
one line that names the input and says what was expected; the CLI prints it
without a traceback and exits with a non-zero status.
"""


class PbpError(Exception):
    """Bad input or an impossible request; the message is meant for the user."""


class DataError(PbpError):
    """A data file or data set that is missing, corrupt or inconsistent."""


class ModelFileError(PbpError):
    """A model file that cannot be read or does not fit the request."""


class ConfigError(PbpError, ValueError):
    """An option or parameter with an impossible value."""


class InputError(DataError, ValueError):
    """Arrays given to the Python API with a wrong shape, type or values (NaN, labels).

    Also a ``ValueError``: what scikit-learn's conventions ask an estimator to raise.
    """


def install_hint(extra: str) -> str:
    """How to install an optional extra: from the project's folder (it is not on an index)."""
    return f"pip install -e '.[{extra}]'"
