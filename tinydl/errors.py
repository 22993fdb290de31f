"""Every public exception and warning of tinydl, each defined once.

The modules that raise them re-export them under their old names (``tinydl.io.ModelFileError``,
``tinydl.nn.NotFittedError``, ``tinydl.customize.BudgetInfeasible`` ...), so ``except``
clauses written against those keep working; they are the same classes.
"""
from __future__ import annotations

import sys

__all__ = ["NotFittedError", "ModelFileError", "DataError", "DivergenceError",
           "BudgetInfeasible", "FactorizationCostError", "DataConversionWarning",
           "not_fitted_error"]


class NotFittedError(ValueError, AttributeError):
    """An estimator is used before it has seen data (``fit``, or enough of a stream).

    A ``ValueError``, and an ``AttributeError`` as in scikit-learn.  Raised by the transform
    (no sample yet, or its standardization still buffering), the networks and the learner.
    """


class ModelFileError(ValueError):
    """A model, transform or checkpoint file is missing, damaged or of the wrong kind."""


class DataError(ValueError):
    """A data file is missing, damaged, or does not hold what tinydl needs."""


class DivergenceError(ValueError):
    """Training produced a non-finite loss or gradient; the weights were left at the last
    finite step."""


class BudgetInfeasible(ValueError):
    """No configuration meets the budget.

    Raised by the customizer (:func:`tinydl.customize.plan`: no candidate fits the memory,
    time, rate, energy or error budget) and by the compression compiler
    (:func:`tinydl.compress.compress_model`: the memory or time target cannot be met within
    the accuracy budget).  The message names the smallest budget that would work.

    Attributes
    ----------
    smallest : dict
        Customizer: the smallest ``memory_bytes``, ``time_per_sample`` (seconds),
        ``seconds_per_sample`` (with updates) and ``energy_per_sample`` (joules) any candidate
        reaches.  Empty for the compiler.
    needs : dict
        Customizer: for each budget that ruled candidates out (``memory``, ``time``, ``rate``,
        ``energy``, ``error``), the least it would have to allow for some candidate to fit
        with the other budgets as given; absent where relaxing it alone is not enough.
    model : CompressedModel or None
        Compiler: the smallest model reached (within the accuracy budget).
    report : CompressionReport or None
        Compiler: the report of that model.
    """

    def __init__(self, message, smallest=None, needs=None, model=None, report=None):
        super().__init__(message)
        self.smallest = dict(smallest or {})
        self.needs = dict(needs or {})
        self.model, self.report = model, report


class FactorizationCostError(ValueError):
    """A factorization would store as much as (or more than) the layer it replaces."""


class DataConversionWarning(UserWarning):
    """``y`` was given as a column vector and was flattened."""


_SK_NOT_FITTED = None


def not_fitted_error(message: str) -> NotFittedError:
    """A :class:`NotFittedError` carrying ``message``.

    When scikit-learn is already loaded the exception is also an instance of
    ``sklearn.exceptions.NotFittedError`` (scikit-learn is never imported just for this).

    Parameters
    ----------
    message : str

    Returns
    -------
    NotFittedError
    """
    global _SK_NOT_FITTED
    sk = sys.modules.get("sklearn.exceptions")
    if sk is None:
        return NotFittedError(message)
    if _SK_NOT_FITTED is None:
        _SK_NOT_FITTED = type("NotFittedError", (NotFittedError, sk.NotFittedError), {})
    return _SK_NOT_FITTED(message)
