"""The null backend: runs nothing, counts what would have run.

Every operation returns correctly shaped (and dtyped) zero outputs, so that code above the HAL
runs end to end, and adds to :attr:`NullBackend.counts` the floating-point operations, the
bytes a straightforward implementation moves (inputs read once, outputs written once) and the
number of calls, per operation.  The customizer prices configurations with it.

It is exempt from the numeric comparison against NumPy (its outputs are zeros by design); the
backend suite checks its shapes, dtypes and counts instead.

FLOP conventions (a multiply-add is 2 FLOPs):

* ``matmul`` (m, k) @ (k, n): ``2 m k n``; ``correlate`` (n, m) x (l, m): ``2 n m l``;
* ``dense_forward``: ``2 n p q`` plus ``n q`` for the bias;
* ``gather_matmul``: ``2 n k q`` (every slot counted, padding included: an upper bound);
* ``omp_encode``: the correlation ``2 n m l`` and ``|x|^2`` (``2 n m``), then per iteration t
  (0-based) ``l`` (|c|) + ``2 t l`` (w @ U) + ``3 l`` (U_t and the update of c) + ``2 t + 8``
  scalars, and the back substitution ``k^2`` per sample: Batch-OMP's cost with every sample
  running all ``k`` iterations (an upper bound when ``tol`` stops samples early).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..backend import Backend, OMPWorkspace, SparseCodes

__all__ = ["NullBackend", "omp_flops"]


def omp_flops(n: int, m: int, l: int, k: int) -> int:
    """FLOPs of Batch-OMP for ``n`` samples (see the module docstring)."""
    k = min(k, l)
    per_iter = sum(l + 2 * t * l + 3 * l + 2 * t + 8 for t in range(k))
    return int(n * (2 * m * l + 2 * m + per_iter + k * k))


class NullBackend(Backend):
    """Counts FLOPs, bytes moved and calls per operation; computes nothing.

    Attributes
    ----------
    counts : dict
        ``{op: {"calls": int, "flops": int, "bytes": int}}`` since creation or :meth:`reset`.
    """

    name = "null"
    bit_identical = False
    rtol: Dict[str, float] = {}  # no numeric promise: outputs are zeros

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.counts: Dict[str, Dict[str, int]] = {}

    def reset(self) -> None:
        """Forget every count."""
        self.counts = {}

    @property
    def total_flops(self) -> int:
        return int(sum(c["flops"] for c in self.counts.values()))

    @property
    def total_bytes(self) -> int:
        return int(sum(c["bytes"] for c in self.counts.values()))

    def _count(self, op: str, flops: int, nbytes: int) -> None:
        c = self.counts.setdefault(op, {"calls": 0, "flops": 0, "bytes": 0})
        c["calls"] += 1
        c["flops"] += int(flops)
        c["bytes"] += int(nbytes)

    @staticmethod
    def _out(shape, dtype, out):
        if out is None:
            return np.zeros(shape, dtype)
        if out.shape != tuple(shape):
            raise ValueError(f"out has shape {out.shape}, expected {tuple(shape)}")
        out[...] = 0
        return out

    def matmul(self, a, b, out=None):
        (m, k), (k2, n) = a.shape, b.shape
        if k != k2:
            raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
        dt = np.result_type(a, b)
        self._count("matmul", 2 * m * k * n, a.nbytes + b.nbytes + m * n * dt.itemsize)
        return self._out((m, n), dt, out)

    def rows_matmul(self, A, B, out=None):
        """Counted as :meth:`matmul` (the same FLOPs and bytes)."""
        return self.matmul(A, B, out)

    def prepare_basis(self, D, G, Li):
        """NumPy's specification, its products counted here."""
        from .numpy.basis import BasisWorkspace
        return BasisWorkspace(self, D, G, Li)

    def correlate(self, X, D, out=None):
        (n, m), (l, m2) = X.shape, D.shape
        if m != m2:
            raise ValueError(f"correlate: X has {m} features, D has {m2}")
        dt = np.result_type(X, D)
        self._count("correlate", 2 * n * m * l, X.nbytes + D.nbytes + n * l * dt.itemsize)
        return self._out((n, l), dt, out)

    def prepare_omp(self, batch, m, l, k, dtype) -> OMPWorkspace:
        return OMPWorkspace(batch=max(int(batch), 1), m=m, l=l, k=int(min(k, l)),
                            dtype=np.dtype(dtype), block=1)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> SparseCodes:
        n, m = X.shape
        l = D.shape[0]
        k = int(min(k, l))
        it = X.itemsize
        self._count("omp_encode", omp_flops(n, m, l, k),
                    X.nbytes + D.nbytes + G.nbytes + n * k * (4 + it) + n * (4 + it))
        return SparseCodes(np.full((n, k), -1, np.int32), np.zeros((n, k), X.dtype), l,
                           np.zeros(n, np.int32), np.zeros(n, X.dtype))

    def dense_forward(self, X, W, b=None, out=None):
        (n, p), (p2, q) = X.shape, W.shape
        if p != p2:
            raise ValueError(f"dense_forward: X has {p} columns, W has {p2} rows")
        dt = np.result_type(X, W)
        extra = 0 if b is None else n * q
        self._count("dense_forward", 2 * n * p * q + extra,
                    X.nbytes + W.nbytes + (0 if b is None else b.nbytes) + n * q * dt.itemsize)
        return self._out((n, q), dt, out)

    def gather_matmul(self, indices, values, W, out=None):
        n, k = indices.shape
        q = W.shape[1]
        dt = np.result_type(values, W)
        self._count("gather_matmul", 2 * n * k * q,
                    indices.nbytes + values.nbytes + n * k * q * W.itemsize
                    + n * q * dt.itemsize)
        return self._out((n, q), dt, out)

    def summary(self) -> Dict[str, Dict[str, Optional[float]]]:
        """Per op: calls, GFLOP and MB in total and per call."""
        out = {}
        for op, c in self.counts.items():
            calls = max(c["calls"], 1)
            out[op] = {"calls": c["calls"], "gflop": c["flops"] / 1e9,
                       "gflop_per_call": c["flops"] / 1e9 / calls, "mbytes": c["bytes"] / 1e6}
        return out
