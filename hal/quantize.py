"""int8 rows with one float32 scale per row, the clip factor chosen per row: the one rule of
the stored int8 dictionaries (:func:`hal.backends.numpy.stored.quantize`) and of the exported
int8 weights (:mod:`tinydl.export.quantize`, which passes its own error).

A row ``a`` is stored as ``q = clip(rint(a / s), -127, 127)`` (int8) and ``s = f max|a| / 127``
(float32; 1 for a zero row), ``a ~ s q``.  ``f = 1`` rounds every value to the nearest step
(error at most ``s / 2``), but spends the 127 steps on the row's largest value: a row with a
few outliers gets coarse steps for all the others.  A clip factor ``f < 1`` clips those few
and refines the steps of all the rest, so the clip factor is chosen per row among a list of
factors (:data:`CLIP_FACTORS`, or :data:`FINE_CLIP_FACTORS` for dictionary atoms; no data
looked at but the row itself, unless the caller gives an error of its own): the one with the
least error, by default the reconstruction error ``|a - s q|^2``; a tie keeps the larger
factor (the first in the list).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

__all__ = ["CLIP_FACTORS", "FINE_CLIP_FACTORS", "int8_rows", "clip_rows",
           "reconstruction_error"]

#: clip factors tried per row (fractions of the row's largest |value|), largest first: the
#: export's, whose error (outputs on up to 1024 calibration rows) costs a product per factor
CLIP_FACTORS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
#: the stored dictionaries' factors, 1 down to 1/2 in steps of 1/64: their error (the
#: reconstruction error of one atom) is cheap, and on atoms of raw samples the best factor is
#: close to 1 (measured on the Daily and Sports atoms: 0.95-1, where the coarse list has only
#: 1: max-abs)
FINE_CLIP_FACTORS = tuple(1 - j / 64 for j in range(33))


#: NumPy's ufunc buffer (elements) while the error widens ``a``
_BUFSIZE = 256


def int8_rows(a: np.ndarray, f: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """The rows of ``a`` (n, m) as int8 ``q`` (n, m) and float32 scales ``s`` (n,) at clip
    factor ``f``: ``s = f max|a_i| / 127`` rounded to float32 (1 for a zero row; rounded up
    where it would be subnormal, see below), ``q = clip(rint(a / s), -127, 127)`` (``a / s``
    in ``a``'s dtype, float32 or wider, with the float32 ``s``)."""
    a = np.asarray(a)
    # max |a| per row without an |a| temporary (a row's worth of bytes at every join of an
    # int8 dictionary; the same value: max(max a, -min a))
    if not a.size:
        amax = np.zeros(len(a))
    elif a.dtype.kind == "f":
        amax = np.maximum(a.max(axis=1), -a.min(axis=1)).astype(np.float64)
    else:  # integers, bools: -min would wrap (unsigned) or fail (bool)
        amax = np.max(np.abs(a), axis=1).astype(np.float64)
    top = amax * f
    s = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
    # a row below ~1.5e-36 in magnitude: its scale is subnormal (or 0) with few bits, and
    # top / s could pass 127.5 (more than half a step off) or divide by zero; there the scale
    # is rounded up to the next float32 whose 127 steps cover the clip level
    low = (top > 0) & (s < np.finfo(np.float32).tiny)
    if low.any():
        sl = np.maximum(s[low], np.float32(np.finfo(np.float32).smallest_subnormal))
        short = sl.astype(np.float64) * 127 < top[low]
        sl[short] = np.nextafter(sl[short], np.float32(np.inf))
        s[low] = sl
    # a / s rounded and clipped in place: one temporary of a's size, not three
    x = a / s[:, None]
    np.rint(x, out=x)
    np.clip(x, -127, 127, out=x)
    return x.astype(np.int8), s


def reconstruction_error(a: np.ndarray) -> Callable:
    """The default error of :func:`clip_rows`: ``|a_i - s_i q_i|^2`` per row (float64)."""
    a = np.asarray(a)

    def err(q, s):
        # one float64 temporary, and no float64 copy of ``a`` held across the factors:
        # (s q - a)^2 is (a - s q)^2 exactly (a float32 ``a`` is widened exactly by the
        # subtraction), so the values are those of the three-temporary expression
        t = q.astype(np.float64)
        t *= s[:, None].astype(np.float64)
        # NumPy's iterator widens a float32 ``a`` through a buffer of up to 8,192 values (a
        # row-sized float64 transient at these sizes): a small buffer keeps it to a few
        old = np.setbufsize(_BUFSIZE)
        try:
            np.subtract(t, a, out=t)
        finally:
            np.setbufsize(old)
        np.square(t, out=t)
        return t.sum(axis=1)

    return err


def clip_rows(a: np.ndarray, err: Optional[Callable] = None, quant: Callable = int8_rows,
              factors=CLIP_FACTORS) -> Tuple[np.ndarray, np.ndarray]:
    """Per row of ``a`` (n, m), the ``(q, s)`` of ``quant(a, f)`` whose ``err(q, s)`` (an (n,)
    array) is least over ``f`` in ``factors`` (largest first; strictly less to leave a larger
    factor).  ``err`` defaults to :func:`reconstruction_error`; ``quant`` to
    :func:`int8_rows` (the export's unit-norm atoms pass their own)."""
    if err is None:
        err = reconstruction_error(a)
    best_q, best_s = quant(a, factors[0])
    if not np.size(a):
        return best_q, best_s
    best_e = err(best_q, best_s)
    for f in factors[1:]:
        q, s = quant(a, f)
        e = err(q, s)
        better = e < best_e
        best_q[better], best_s[better], best_e[better] = q[better], s[better], e[better]
    return best_q, best_s
