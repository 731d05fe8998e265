"""The project's error family.

Every error a user can cause with bad input (a file, a config key, a checkpoint) is a ``CNNError``, which
is a ``ValueError``: callers that already catch ``ValueError`` keep working, and the command-line stages
turn a ``CNNError`` into one clear line and a non-zero exit instead of a traceback.
"""

from __future__ import annotations


class CNNError(ValueError):
    """Base class: bad input that the user can fix. The message names the file or key."""


class DataError(CNNError):
    """A data file is missing, truncated, corrupt or of another format (IDX, npz, manifest)."""


class CheckpointError(CNNError):
    """A checkpoint is not ours, is corrupt, or does not fit the architecture it is loaded into."""


class ConfigError(CNNError):
    """A configuration value is unknown, out of range or inconsistent with the data."""


class TrainingDivergedError(CNNError):
    """The loss became NaN or infinite; the message names the epoch and batch."""


class TrackingError(CNNError):
    """The MLflow tracking server cannot be reached or refuses the request."""
