"""Errors of the learning stage."""

from smartset.errors import SmartsetError

__all__ = ["LearnError", "CheckpointError", "LeakageError", "NotFittedError"]


class LearnError(SmartsetError, ValueError):
    """Data or options a model cannot be trained or evaluated on; the message says why."""


class CheckpointError(SmartsetError, OSError):
    """A checkpoint that cannot be read, or does not fit the data it is used on."""


class LeakageError(LearnError):
    """Evaluating on samples the model was trained on (or on their duplicates)."""


class NotFittedError(SmartsetError, AttributeError):
    """A model used before ``fit``."""
