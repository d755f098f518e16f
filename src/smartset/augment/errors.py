"""The errors of the augmentation stage.

Each derives from :class:`smartset.errors.SmartsetError` and from the builtin it resembles,
so ``except ValueError`` keeps working for callers who do not know smartset.
"""

from __future__ import annotations

from smartset.errors import SmartsetError

__all__ = [
    "AugmentError",
    "AugmentParameterError",
    "UnknownNameError",
    "ConstraintError",
    "BatchShapeError",
    "PolicyFileError",
    "NotFittedError",
]


class AugmentError(SmartsetError):
    """Base class of the augmentation stage's errors."""


class AugmentParameterError(AugmentError, ValueError):
    """A transform parameter lies outside its allowed range or has the wrong form."""


class UnknownNameError(AugmentError, ValueError):
    """A transform, policy or constraint name is not registered; the message lists the valid ones."""


class ConstraintError(AugmentError, ValueError):
    """A policy uses a transform that a data set's domain constraints forbid."""


class BatchShapeError(AugmentError, ValueError):
    """Images of one batch differ in size, or a batch has the wrong number of dimensions."""


class PolicyFileError(AugmentError, ValueError):
    """A YAML or JSON policy file cannot be read as a policy."""


class NotFittedError(AugmentError, RuntimeError):
    """A stateful transform (featurewise normalisation, ZCA) was used before ``fit``."""
