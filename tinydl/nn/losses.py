"""Losses: value and gradient with respect to the network's outputs, in one call.

Both take integer targets ``t`` (n,) in ``[0, n_classes)`` and average over the batch.

* ``cross_entropy``: softmax then negative log-likelihood,
  ``L = -(1/n) sum_i log softmax(z_i)[t_i]``, ``dL/dz = (softmax(z) - onehot(t)) / n``.
* ``l2`` (the TinyDL paper's): squared error to one-hot targets on the raw outputs,
  ``L = (1/2n) sum_i ||z_i - onehot(t_i)||^2``, ``dL/dz = (z - onehot(t)) / n``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Loss", "CrossEntropyLoss", "L2Loss", "LOSSES", "softmax"]


def softmax(z, out=None):
    """Row-wise softmax of ``z`` (n, c), shifted by the row max so exp never overflows."""
    out = np.subtract(z, z.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


class Loss:
    """Holds its buffers for a batch size (``prepare``); ``__call__`` returns the loss and a
    view of the gradient buffer."""

    name = "abstract"

    def prepare(self, batch, n_classes, dtype):
        """Allocate the workspace for batches of up to ``batch`` rows and ``n_out`` outputs."""
        self.n_classes = n_classes
        self.ws = {"grad": np.empty((batch, n_classes), dtype),
                   "flat": np.empty(batch, np.intp), "rows": np.arange(batch) * n_classes,
                   "picked": np.empty(batch, dtype), "red": np.empty((batch, 1), dtype)}
        return self.ws

    def _flat(self, t):
        # flat positions i * n_classes + t_i of the targets in the (n, c) gradient
        n = t.shape[0]
        flat = self.ws["flat"][:n]
        np.add(self.ws["rows"][:n], t, out=flat)
        return flat

    def __call__(self, z, t):
        raise NotImplementedError


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on the outputs, mean over the batch."""
    name = "cross_entropy"

    def __call__(self, z, t):
        n = z.shape[0]
        g = self.ws["grad"][:n]
        red = self.ws["red"][:n]
        np.max(z, axis=1, keepdims=True, out=red)
        np.subtract(z, red, out=g)
        np.exp(g, out=g)
        np.sum(g, axis=1, keepdims=True, out=red)
        g /= red
        flat = self._flat(t)
        picked = self.ws["picked"][:n]
        np.take(g.reshape(-1), flat, out=picked)
        # log p of the targets; a tiny floor keeps a confident miss finite (it is rounding)
        loss = -float(np.log(np.maximum(picked, np.finfo(g.dtype).tiny, out=picked)).sum()) / n
        np.take(g.reshape(-1), flat, out=picked)
        picked -= 1
        np.put(g.reshape(-1), flat, picked)
        g *= 1.0 / n
        return loss, g


class L2Loss(Loss):
    """Half the squared distance to the one-hot targets, mean over the batch (the paper's)."""
    name = "l2"

    def __call__(self, z, t):
        n = z.shape[0]
        g = self.ws["grad"][:n]
        np.copyto(g, z)
        flat = self._flat(t)
        picked = self.ws["picked"][:n]
        np.take(g.reshape(-1), flat, out=picked)
        picked -= 1
        np.put(g.reshape(-1), flat, picked)
        gf = g.reshape(-1)
        loss = 0.5 * float(np.dot(gf, gf)) / n
        g *= 1.0 / n
        return loss, g


LOSSES = {"cross_entropy": CrossEntropyLoss, "l2": L2Loss}
