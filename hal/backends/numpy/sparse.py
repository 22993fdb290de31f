"""The NumPy specification of the k-sparse products: a compact code's gather into W's rows
(a layer's forward pass) and its transpose, the scatter (the weight gradient)."""
from __future__ import annotations

import numpy as np

from ...backend import check_code_indices

__all__ = ["SparseProducts"]


class SparseProducts:
    """Mixin of :class:`~hal.backends.numpy.NumpyBackend`: ``gather_matmul`` and
    ``scatter_matmul`` (over ``self.matmul``)."""

    def gather_matmul(self, indices, values, W, out=None):
        """``out[i] = sum_t values[i, t] * W[indices[i, t]]`` (index ``-1``: nothing).

        One gather of the ``n k`` rows of W and one batched ``(1, k) @ (k, q)`` product per
        sample (a Python loop over the ``k`` slots cost ~6-10x more).  Each sample's row is
        computed on its own, so results do not depend on the batch split.
        """
        n, k = indices.shape
        q = W.shape[1]
        dt = np.result_type(values, W)
        if out is None:
            out = np.empty((n, q), dt)
        if n == 0 or k == 0 or q == 0:
            out[...] = 0
            return out
        check_code_indices(indices, W.shape[0])
        # the padding's index is clipped to row 0 and its value zeroed: it adds 0 * W[0]
        v = np.where(indices >= 0, values, 0).astype(dt, copy=False)
        W = W.astype(dt, copy=False)
        rows = self._gather_scratch(n * k, q, dt)
        np.take(W, indices.reshape(-1), axis=0, out=rows, mode="clip")
        if out.dtype == dt:
            np.matmul(v[:, None, :], rows.reshape(n, k, q), out=out[:, None, :])
        else:
            out[...] = np.matmul(v[:, None, :], rows.reshape(n, k, q))[:, 0]
        return out

    def scatter_matmul(self, indices, values, dy, out, beta=0.0):
        """``out[...] = beta * out + codes.T @ dy``: the transpose of :meth:`gather_matmul`
        (the weight gradient of a layer fed compact codes), indices/values (n, k), dy (n, q),
        out (rows, q).  The reference scatters the codes into a dense (n, rows) matrix and
        runs one product (it allocates)."""
        n, k = indices.shape
        rows = out.shape[0]
        check_code_indices(indices, rows)
        dense = np.zeros((n, rows + 1), out.dtype)  # column `rows` absorbs the -1 padding
        # add.at: an index repeated within a sample adds up, as in gather_matmul
        np.add.at(dense, (np.repeat(np.arange(n), k),
                          np.where(indices >= 0, indices, rows).reshape(-1)),
                  values.astype(out.dtype, copy=False).reshape(-1))
        prod = self.matmul(dense[:, :rows].T, dy.astype(out.dtype, copy=False))
        if beta == 0.0:
            out[...] = prod
        else:
            if beta != 1.0:
                out *= beta
            out += prod
        return out

    def _gather_scratch(self, rows, q, dt):
        """A reused (rows, q) buffer: a fresh one per call of this size (~160 KB at the
        trainer's sizes) comes from mmap and costs page faults every mini-batch."""
        buf = getattr(self, "_gbuf", None)
        need = rows * q
        if buf is None or buf.dtype != dt or buf.size < need:
            buf = np.empty(max(need, 1), dt)
            self._gbuf = buf
        return buf[:need].reshape(rows, q)
