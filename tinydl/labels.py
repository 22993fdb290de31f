"""Class labels: the user's labels, and the indices into ``classes_`` that a learner holds.

:class:`~tinydl.learner.TinyDLClassifier` takes labels of every type scikit-learn accepts for
a classifier (integers, floats with integer values, strings, booleans) and keeps them, sorted,
in ``classes_``; internally (the window, the network, a checkpoint's stored labels) a label is
its index in ``classes_``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["label_classes", "check_labels", "label_index"]


def label_classes(classes) -> np.ndarray:
    """The sorted distinct labels, in the user's type (object arrays of strings as str).

    Raises
    ------
    ValueError
        For no labels, labels of mixed types (strings with numbers: no order between them) or
        a NaN label.
    """
    arr = np.asarray(classes)
    if arr.size == 0:
        raise ValueError("classes is empty: give every label the model will see")
    strings = _all_strings(arr, "classes")
    classes = np.unique(arr)
    if classes.dtype.kind == "f" and not np.isfinite(classes).all():
        raise ValueError(f"classes holds a non-finite label: {classes.tolist()[:10]}")
    return classes.astype(str) if strings else classes


def _all_strings(arr, name) -> bool:
    """Whether ``arr`` is an object array of strings only (kept as ``str``); raise if it
    mixes strings with other labels (NumPy cannot sort them)."""
    if arr.dtype.kind != "O":
        return False
    values = arr.ravel().tolist()
    kinds = {isinstance(v, str) for v in values}
    if len(kinds) > 1:
        types = sorted({type(v).__name__ for v in values})
        raise ValueError(f"{name} mixes label types ({', '.join(types)}): use one type")
    return False not in kinds


def check_labels(est, y, n) -> np.ndarray:
    """``y`` as a 1-D array of class labels (the classifiers' rules: a column vector is
    flattened with a DataConversionWarning, continuous floats are refused)."""
    from .nn.trainer import InputChecks
    y = InputChecks._check_y(est, y, len(y) if n is None and y is not None else n)
    return y.astype(str) if _all_strings(y, "y") else y


def label_index(classes: np.ndarray, y) -> np.ndarray:
    """Indices into ``classes`` of the labels ``y``; a label outside them is an error."""
    idx = np.searchsorted(classes, y)
    np.minimum(idx, len(classes) - 1, out=idx)
    bad = classes[idx] != y
    if bad.any():
        unknown = np.unique(y[bad])
        raise ValueError(f"y holds {unknown.size} label(s) outside classes "
                         f"{classes.tolist()}: {unknown[:5].tolist()}")
    return idx.astype(np.int64, copy=False)
