"""Exceptions raised by edgecompress.

Every error names the offending thing (file, layer, key, value) so the user can fix it without
reading our source. They subclass the built-in exception a caller would naturally catch.
"""

from __future__ import annotations


class EdgecompressError(Exception):
    """Base class of every error raised on purpose by edgecompress."""


class UnknownNameError(EdgecompressError, ValueError):
    """A name (model, dataset, method, quantizer, ...) that no registry knows."""


class DataError(EdgecompressError, ValueError):
    """A dataset file that is missing, truncated, corrupt or of the wrong shape."""


class DataNotFoundError(DataError, FileNotFoundError):
    """Dataset files are not where they were expected (downloads are never attempted)."""


class CheckpointError(EdgecompressError, ValueError):
    """A checkpoint that is corrupt, from another format, or does not match the model."""


class RecipeError(EdgecompressError, ValueError):
    """A recipe (YAML experiment description) with unknown keys or invalid values."""


class ScheduleError(EdgecompressError, ValueError):
    """A schedule of a trained parameter (mu, beta, lambda, theta) that cannot be built or run:
    an unknown kind or key, a missing end value, a ramp longer than the run."""


class ConversionError(EdgecompressError, ValueError):
    """A model conversion that cannot be done (unsupported layer, bad option)."""


class ModelConfigError(EdgecompressError, ValueError):
    """A model option whose value the model cannot be built with (an image size the patch does
    not divide, a head count that does not divide the width, an unknown size or pooling)."""


class ModelFileError(EdgecompressError, ValueError):
    """A frozen-model file that is truncated, corrupt, from a newer format or inconsistent."""


class PruningError(EdgecompressError, ValueError):
    """A pruning request that cannot be done: a bad regularizer parameter (lambda, alpha, M), an
    unknown group kind, a mask for an unknown layer, a threshold removing every filter of a
    layer."""


class RobustnessError(EdgecompressError, ValueError):
    """A robustness evaluation that cannot be run: a corruption severity outside its family's
    range, a model that is not an image classifier, a dataset without raw pixels."""


class MeaninglessInputWarning(UserWarning):
    """A compressed layer whose input quantizer throws its input away (e.g. sign() of inputs that
    are never negative, after a ReLU: every input sign is +1)."""


class WeakConversionWarning(UserWarning):
    """A conversion whose layers keep little of the source weights (e.g. a low-rank TT-SVD of
    untrained random weights, whose cores are too small to train)."""


class CausalInputError(EdgecompressError, ValueError):
    """Data a causal-direction test cannot use: NaN or infinite values, a constant column,
    mismatched lengths, too few samples, a column that is not one-dimensional or not numeric."""
