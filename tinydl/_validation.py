"""Input checks shared by every estimator: errors name the problem with numbers."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_array", "check_int", "check_float", "check_dtype", "SUPPORTED_DTYPES",
           "DICTIONARY_DTYPES", "storage_dtype",
           "InputTypeError", "reject_sparse"]

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class InputTypeError(TypeError, ValueError):
    """Input of a kind tinydl cannot compute with (complex numbers, strings, sparse matrices):
    a TypeError, and a ValueError as scikit-learn's conventions expect for some of them."""


def reject_sparse(X, name="X") -> None:
    """Raise :class:`InputTypeError` for a scipy.sparse matrix or array (without importing
    scipy): the estimators take dense arrays (or tinydl's own compact codes)."""
    if hasattr(X, "tocsr") and hasattr(X, "nnz") and hasattr(X, "toarray"):
        raise InputTypeError(f"{name} is a sparse matrix ({type(X).__name__}): sparse input is "
                             "not supported; pass a dense array (X.toarray())")


def check_array(X, name="X", dtype=None, ndim=2, allow_empty=False, n_features=None,
                owner=None):
    """Validate a sample matrix and return it as a C-contiguous float array.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    dtype : {None, float32, float64}
        Target dtype.  ``None`` keeps float32/float64 and converts integer and bool input to
        float64; float16 is converted to float32 (its 11-bit mantissa is too coarse to compute
        in, but its values are exact in float32).
    n_features : int, optional
        Required number of columns (e.g. what the estimator was fitted on).
    owner : str, optional
        The estimator's name, for scikit-learn's wording of a wrong number of features.

    Raises
    ------
    TypeError
        For complex, string or sparse input, or an object array whose items are not numbers
        (one of numbers is converted to float64).  Complex and sparse input raise
        :class:`InputTypeError`, also a ValueError.
    ValueError
        For the wrong number of dimensions, empty input, NaN or Inf, or the wrong number of
        features.  The message says which and where.
    """
    if (type(X) is np.ndarray and X.ndim == ndim == 2 and X.size and X.flags.c_contiguous
            and X.dtype in SUPPORTED_DTYPES and (dtype is None or X.dtype == dtype)
            and (n_features is None or X.shape[1] == n_features)):
        # fast path (one-sample prediction): already what the checks below would return;
        # only the finiteness test is left
        arr = X
    else:
        arr = _convert(X, name, dtype, ndim, allow_empty, n_features, owner)
    # NaN and Inf propagate through a sum: one reduction pass, where isfinite(X).all() writes
    # a boolean array the size of X (2x slower at m=5625).  The row sums come from a
    # matrix-vector product with ones (BLAS reads X once at full bandwidth: half the time of
    # arr.sum()'s pairwise reduction, measured at 1024 x 5625).  A sum that overflows (finite
    # values near the dtype's maximum) falls through to the exact check.
    if 0 < arr.size <= 4096:  # small (one sample): the exact test is cheaper than errstate
        total = 0.0 if np.isfinite(arr).all() else np.inf
    elif arr.size:
        with np.errstate(over="ignore", invalid="ignore"):
            if arr.ndim == 2 and arr.shape[1] > 1:
                total = (arr @ np.ones(arr.shape[1], arr.dtype)).sum()
            else:
                total = arr.sum()
    if arr.size and not np.isfinite(total) and not np.isfinite(arr).all():
        bad = ~np.isfinite(arr)
        first = np.argwhere(bad)[0]
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or Inf value(s); the first "
                         f"at index {tuple(int(i) for i in first)}")
    return arr


def _convert(X, name, dtype, ndim, allow_empty, n_features, owner):
    """:func:`check_array`'s type, shape and dtype checks and conversion."""
    reject_sparse(X, name)
    arr = np.asarray(X)
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must hold real numbers, got dtype object with an item that "
                            f"is not one ({exc})") from None
    if arr.dtype.kind == "c":
        raise InputTypeError(f"Complex data not supported: {name} must hold real numbers, got "
                             f"dtype {arr.dtype}")
    if arr.dtype.kind in "SUV" or arr.dtype.kind == "M" or arr.dtype.kind == "m":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        hint = (" (Reshape your data: a single sample with x.reshape(1, -1))"
                if arr.ndim == 1 else "")
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}{hint}")
    if not allow_empty and arr.size == 0:
        what = "sample(s)" if arr.shape[0] == 0 else "feature(s)"
        raise ValueError(f"{name} is empty: shape {arr.shape} (0 {what} (shape={arr.shape}) "
                         f"while a minimum of 1 is required)")
    if dtype is None:
        if arr.dtype in SUPPORTED_DTYPES:
            dtype = arr.dtype
        elif arr.dtype == np.float16:
            dtype = np.float32
        else:
            dtype = np.float64
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if n_features is not None and ndim == 2 and arr.shape[1] != n_features:
        if owner is not None:
            raise ValueError(f"{name} has {arr.shape[1]} features, but {owner} is expecting "
                             f"{n_features} features as input")
        raise ValueError(f"{name} has {arr.shape[1]} features, expected {n_features}")
    return arr


def check_int(value, name, low=None, high=None):
    """Return ``value`` as int, or raise naming the allowed range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        rng = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{name} must be in {rng}, got {value}")
    return value


def check_float(value, name, low=None, high=None, allow_none=False):
    """Return ``value`` as float, or raise naming the allowed (closed) range."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (low is not None and value < low) or \
            (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_dtype(value, name="dtype") -> np.dtype:
    """Return ``value`` as a NumPy dtype, float32 or float64, or raise naming both."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {value!r}") from None
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


#: the dictionary's storage dtypes (compute stays in the learner's dtype)
DICTIONARY_DTYPES = ("float32", "float64", "float16", "int8")


def storage_dtype(dictionary_dtype, dtype) -> str:
    """The name of the dtype a dictionary is stored in, for compute ``dtype``: narrower
    (``"float16"``, ``"int8"``) or the compute dtype itself (None, or its own name).

    Raises
    ------
    ValueError
        For a name not in :data:`DICTIONARY_DTYPES`, or a float other than the compute dtype
        (float32 atoms under float64 compute, or the reverse): the kernels keep atoms as
        they compute or narrower, so such a dictionary would be stored as computed while the
        file, the plan and the footprint named the other dtype.
    """
    dt = np.dtype(dtype).name
    dd = None if dictionary_dtype is None else str(getattr(dictionary_dtype, "name",
                                                           dictionary_dtype))
    if dd is not None and dd not in DICTIONARY_DTYPES:
        raise ValueError(f"dictionary_dtype must be one of {', '.join(DICTIONARY_DTYPES)} "
                         f"(or None: the compute dtype), got {dictionary_dtype!r}")
    if dd in ("float32", "float64") and dd != dt:
        raise ValueError(f"dictionary_dtype={dd!r} with compute dtype {dt} (the dtype "
                         "parameter, or the data's where it is None): a dictionary is stored in "
                         f"the compute dtype ({dt!r}, or None) or narrower ('float16', "
                         f"'int8'); for {dd} atoms compute in {dd} (dtype={dd!r})")
    return dd or dt
