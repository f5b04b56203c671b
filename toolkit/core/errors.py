"""Typed errors. Every message says what went wrong, on which file, and what to do.

The CLI prints `str(err)` on one line and exits with `err.exit_code`; library code never
calls sys.exit.
"""
from __future__ import annotations


class OptkitError(Exception):
    """Base of every error optkit raises on purpose."""

    exit_code = 2

    def __init__(self, message: str):
        # One line: users and CI logs read the last line.
        super().__init__(" ".join(str(message).split()))


class ConfigError(OptkitError):
    """A recipe, device profile or option is invalid."""


class UnsafeCheckpoint(OptkitError):
    """The checkpoint carries code (pickled module, TorchScript) and --trust-checkpoint was not given."""


class CheckpointError(OptkitError):
    """The checkpoint cannot be read or does not match its factory."""


class DataError(OptkitError):
    """The data file breaks the .npz contract or does not fit the model."""


class UnsupportedError(OptkitError):
    """The request is valid but optkit does not support it for this model or format."""


class StepNotNeeded(OptkitError):
    """A conditional pass (QAT, int8 remedies) has nothing to do in this run: the step is planned as skipped, with the reason."""


class BackendUnavailable(OptkitError):
    """A runtime cannot run on this host; the message names what is missing."""

    exit_code = 4


class GateFailed(OptkitError):
    """No candidate met the device budgets and gates, or a verification failed."""

    exit_code = 3


class OutputError(OptkitError):
    """The output folder cannot be used (not empty, locked, unwritable, a link)."""


class HistoryError(OptkitError):
    """The bench history database is locked by another writer, corrupt, or refused the rows."""


class CacheError(OptkitError):
    """A cache entry is corrupt or was made by other library versions."""


class RemoteError(OptkitError):
    """A device reached over SSH (--measure-on / --on) could not be used: unreachable, refused the key, an
    unknown host key, the connection dropped, no Python or runtime there. The message names the host."""

    exit_code = 4  # like BackendUnavailable: the target cannot run it now; nothing about the input is wrong
