"""Layers as explicit forward/backward pairs (no autograd graph).

Every layer follows the same life cycle (TFLite Micro's prepare/eval split):

* ``build(in_shape)`` -> per-sample output shape; ``param_shapes()`` names the parameters,
  which :class:`~tinydl.nn.network.Network` then places in one flat buffer and hands back as
  views through ``bind(params, grads)``;
* ``prepare(batch, dtype, rng)`` allocates every buffer the layer needs for up to ``batch``
  samples and returns them (so the network can count their bytes before training);
* ``forward(x, train)`` and ``backward(dy, need_dx)`` then work on slices of those buffers.
  ``forward`` caches what ``backward`` needs (said in each layer).  ``backward`` *adds nothing*:
  it overwrites the layer's gradient views, and may overwrite ``dy`` (it belongs to the layer
  after it and is dead once consumed).  Layers whose backward also overwrites their own
  forward output (an input of the layer after them) say so with ``keeps_output = False``.
* Layers with a weight (:class:`Dense`, and :class:`Conv2D` as a first layer) can leave their
  weight gradient pending: ``backward(dy, need_dx, defer_weight_grad=True)`` computes
  everything else and keeps the two GEMM operands (``pending_weight_grad()``), so that the
  optimizer can accumulate ``dW`` straight into its velocity after the divergence check
  (:meth:`tinydl.nn.network.Network.backward`).

Shapes: a batch is ``(n, *shape)``; images are channels-first ``(C, H, W)`` and 1-D signals
``(C, L)``, as in PyTorch, so weights map one-to-one onto ``torch.nn.Conv2d``/``Linear``
(``Dense`` stores ``W`` as ``(in, out)``, the transpose of ``Linear.weight``).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ..codes import SparseCodes

__all__ = ["Layer", "Dense", "ReLU", "Tanh", "Sigmoid", "Dropout"]



#: draws per block when filling weights with uniform numbers (:func:`fill_uniform`)
_INIT_BLOCK = 1024


def fill_uniform(a: np.ndarray, bound: float, rng) -> None:
    """``a[...] = rng.uniform(-bound, bound, a.shape)`` (the same numbers: the generator's
    doubles are drawn in order either way) a block of 1,024 at a time: one whole draw is a
    float64 temporary of ``a``'s size, twice the weights of a float32 layer, and at the first
    update of a small-memory learner it was its peak (80 KB at 80 x 128)."""
    flat = a.reshape(-1)  # a view: the parameters are contiguous views of the flat buffer
    for s in range(0, flat.size, _INIT_BLOCK):
        flat[s:s + _INIT_BLOCK] = rng.uniform(-bound, bound, min(_INIT_BLOCK, flat.size - s))


class Layer:
    """Base class: a layer without parameters that passes its input through."""

    kind = "layer"
    #: whether ``backward`` leaves the output of ``forward`` intact (the next layer may have
    #: deferred its weight gradient, which reads it)
    keeps_output = True
    #: whether ``forward`` may return its input itself (as this base class does): then the
    #: next layer's input belongs to the layer before
    may_return_input = True
    #: whether ``backward`` can defer the weight gradient (see :meth:`pending_weight_grad`)
    can_defer_weight_grad = False

    def __init__(self):
        self.in_shape: Tuple[int, ...] = ()
        self.out_shape: Tuple[int, ...] = ()
        self.backend = None
        self.p: Dict[str, np.ndarray] = {}
        self.g: Dict[str, np.ndarray] = {}
        self.ws: Dict[str, np.ndarray] = {}

    def config(self) -> dict:
        """Constructor arguments, JSON-serialisable (used by save/load)."""
        return {}

    def build(self, in_shape):
        """Fix the shapes for one sample of shape ``in_shape``; return the output's shape."""
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = self.in_shape
        return self.out_shape

    def param_shapes(self) -> List[Tuple[str, Tuple[int, ...]]]:
        """``(name, shape)`` of each parameter, in the flat buffer's order."""
        return []

    def init_params(self, rng) -> None:
        """Fill ``self.p`` (views into the flat buffer); PyTorch's default initialisation."""

    def bind(self, params, grads) -> None:
        """Take the views ``params`` and ``grads`` (name -> array) of the network's flat
        parameter and gradient buffers."""
        self.p, self.g = params, grads

    def prepare(self, batch, dtype, rng=None) -> Dict[str, np.ndarray]:
        """Allocate the workspaces for batches of up to ``batch`` samples (once, before the
        hot path); return them by name."""
        self.ws = {}
        return self.ws

    def forward(self, x, train=False):
        """Outputs (n, *out_shape) for inputs ``x`` (n, *in_shape); caches what backward
        needs."""
        return x

    def backward(self, dy, need_dx=True):
        """Gradients of the parameters (into ``self.g``) from ``dy`` (n, *out_shape); returns
        the input's gradient (n, *in_shape), or None when ``need_dx`` is False."""
        return dy

    def pending_weight_grad(self):
        """The weight gradient left by ``backward(..., defer_weight_grad=True)``: ``(a, b)``
        with ``dW = a @ b`` as a 2-D ``(rows, cols)`` matrix, W's layout (``W.reshape(rows,
        -1)``), and clears it; ``None`` if there is none."""
        op, self._pending = getattr(self, "_pending", None), None
        return op


class Dense(Layer):
    """``y = x @ W + b``, W (in, out), b (out,).  Caches its input ``x`` for ``dW = x.T dy``.

    A :class:`~tinydl.codes.SparseCodes` input takes the sparse product
    ``backend.gather_matmul`` (the k rows of W each code names) when
    ``sparse_product="gather"``, or is scattered into a dense workspace and multiplied when
    ``"dense"``.  The backward pass takes ``dW = codes.T @ dy``
    from the compact codes through the backend's sparse-layer plan
    (:meth:`hal.Backend.prepare_sparse_layer`: one kernel on ``native``, a scatter and one
    GEMM in the specification).
    """

    kind = "dense"
    can_defer_weight_grad = True
    may_return_input = False

    def __init__(self, units: int):
        super().__init__()
        self.units = int(units)
        self.sparse_product = "dense"
        self._x = None
        self._flat = None

    def config(self):
        return {"units": self.units}

    def build(self, in_shape):
        self.in_shape = tuple(int(s) for s in in_shape)
        self.n_in = int(np.prod(self.in_shape))
        self.out_shape = (self.units,)
        return self.out_shape

    def param_shapes(self):
        return [("W", (self.n_in, self.units)), ("b", (self.units,))]

    def init_params(self, rng):
        bound = 1.0 / np.sqrt(self.n_in)  # torch.nn.Linear: U(-1/sqrt(in), 1/sqrt(in))
        fill_uniform(self.p["W"], bound, rng)
        fill_uniform(self.p["b"], bound, rng)

    #: whether backward is asked for the input's gradient (a network's first layer is not:
    #: its ``dx`` buffer, batch x inputs, is then not allocated)
    needs_dx = True

    def prepare(self, batch, dtype, rng=None):
        self.ws = {"y": np.empty((batch, self.units), dtype)}
        if self.needs_dx:
            self.ws["dx"] = np.empty((batch, self.n_in), dtype)
        # compact codes are scattered into a dense block only by the "dense" product (and
        # "auto"'s timing of it): the "gather" product reads them as they are
        if self.sparse_input and self.sparse_product != "gather":
            self._scatter_block(batch, dtype)
        return self.ws

    def _scatter_block(self, batch, dtype) -> None:
        """The workspace compact codes are scattered into: ``codes`` (batch, n_in + 1), one
        dummy column absorbing the -1 padding, and ``rowoff``, the flat offset of each of its
        rows, so that one np.put scatters a whole batch (put_along_axis builds index tuples
        in Python and cost ~1.7x more)."""
        self.ws["codes"] = np.zeros((batch, self.n_in + 1), dtype)
        self.ws["rowoff"] = np.arange(batch, dtype=np.intp)[:, None] * (self.n_in + 1)

    sparse_input = False

    def _sparse_plan(self):
        """The backend's sparse-layer plan for the current arrays (made again if the
        parameters, gradients, workspace or backend were rebound)."""
        plan = getattr(self, "_plan", None)
        if plan is None or plan[0] is not self.backend or plan[1] is not self.p["W"] \
                or plan[2] is not self.g["W"] or plan[3] is not self.ws["y"]:
            made = self.backend.prepare_sparse_layer(self.p["W"], self.p["b"], self.ws["y"],
                                                     self.g["W"], self.g["b"])
            plan = self._plan = (self.backend, self.p["W"], self.g["W"], self.ws["y"], made)
        return plan[4]

    def _scatter(self, sb: SparseCodes):
        n = len(sb)
        pidx = sb.padded_indices()
        if "codes" not in self.ws:  # a "gather" layer asked to scatter (a deferred dW)
            self._scatter_block(self.ws["y"].shape[0], self.ws["y"].dtype)
        dense = self.ws["codes"][:n]
        dense.fill(0)
        flat = getattr(self, "_flat", None)
        if flat is None or flat.shape[0] < n or flat.shape[1] != pidx.shape[1]:
            # once per code width k (bytes: batch * k * 8, next to the (batch, l) codes)
            flat = self._flat = np.empty((self.ws["codes"].shape[0], pidx.shape[1]),
                                         np.intp)
        f = flat[:n]
        np.add(self.ws["rowoff"][:n], pidx, out=f)
        np.put(dense.reshape(-1), f, sb.values, mode="clip")
        return dense[:, :self.n_in]

    def forward(self, x, train=False):
        be = self.backend
        if isinstance(x, SparseCodes):
            n = len(x)
            y = self.ws["y"][:n]
            if self.sparse_product == "gather":
                self._sparse_plan().forward(x.indices, x.values)
                self._x = x
            else:
                self._x = self._scatter(x)
                be.dense_forward(self._x, self.p["W"], self.p["b"], out=y)
            return y
        n = x.shape[0]
        x2 = x.reshape(n, self.n_in)
        y = self.ws["y"][:n]
        be.dense_forward(x2, self.p["W"], self.p["b"], out=y)
        self._x = x2
        return y

    def backward(self, dy, need_dx=True, defer_weight_grad=False):
        """``defer_weight_grad``: leave ``dW = x.T @ dy`` to the caller
        (:meth:`pending_weight_grad`); ``x`` (this layer's input) and ``dy`` must then stay
        untouched until it is consumed."""
        be = self.backend
        x = self._x
        if isinstance(x, SparseCodes) and not defer_weight_grad:
            # dW = codes.T @ dy straight from the compact codes (n k q multiply-adds), and db
            self._sparse_plan().backward(x.indices, x.values, dy)
        else:
            if isinstance(x, SparseCodes):
                x = self._scatter(x)
            if defer_weight_grad:
                self._pending = (x.T, dy)
            else:
                be.matmul(x.T, dy, out=self.g["W"])
            np.sum(dy, axis=0, out=self.g["b"])
        if not need_dx:
            return None
        n = dy.shape[0]
        if "dx" not in self.ws:  # asked although prepared without it
            self.ws["dx"] = np.empty((self.ws["y"].shape[0], self.n_in), dy.dtype)
        dx = self.ws["dx"][:n]
        be.matmul(dy, self.p["W"].T, out=dx)
        return dx.reshape((n,) + self.in_shape)


class _Activation(Layer):
    """Element-wise activation.  Caches its output ``y``; the derivative is written from it."""

    may_return_input = False

    def prepare(self, batch, dtype, rng=None):
        self.ws = {"y": np.empty((batch,) + self.out_shape, dtype)}
        return self.ws

    def forward(self, x, train=False):
        y = self.ws["y"][:x.shape[0]]
        self._f(x, y)
        self._y = y
        return y


class ReLU(_Activation):
    """``max(x, 0)``, elementwise (output shape = input shape)."""

    kind = "relu"

    def prepare(self, batch, dtype, rng=None):
        super().prepare(batch, dtype)
        self.ws["mask"] = np.empty((batch,) + self.out_shape, bool)
        return self.ws

    def _f(self, x, y):
        np.maximum(x, 0, out=y)

    def backward(self, dy, need_dx=True):
        # dy times the boolean mask of the units that were on: NumPy casts the mask through
        # its fixed 8192-element ufunc buffer (no array-sized allocation).  copyto(dy, 0,
        # where=off) needs no cast but branches on every element: ~20x slower on ReLU's
        # random masks (0.54 ms against 0.03 ms at 128 x 1024, measured).  A NaN or Inf in
        # dy where the unit was off gives NaN (rather than 0): it only makes the trainer's
        # divergence check see it.
        keep = self.ws["mask"][:dy.shape[0]]
        np.greater(self._y, 0, out=keep)
        np.multiply(dy, keep, out=dy)
        return dy


class Tanh(_Activation):
    """``tanh(x)``, elementwise (output shape = input shape)."""

    kind = "tanh"
    keeps_output = False  # backward reuses y as scratch

    def _f(self, x, y):
        np.tanh(x, out=y)

    def backward(self, dy, need_dx=True):
        # d tanh = 1 - y^2, applied as dy - dy*y*y without a temporary
        y = self._y
        t = self.ws["y"][:dy.shape[0]]  # y is dead after this: reuse it
        np.multiply(y, y, out=t)
        np.multiply(t, dy, out=t)
        np.subtract(dy, t, out=dy)
        return dy


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``, elementwise (output shape = input shape)."""

    kind = "sigmoid"
    keeps_output = False  # backward reuses y as scratch

    def _f(self, x, y):
        # 1 / (1 + exp(-x)) through tanh: no overflow warning for large |x|
        np.multiply(x, 0.5, out=y)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5

    def backward(self, dy, need_dx=True):
        y = self._y
        np.multiply(dy, y, out=dy)
        np.subtract(1, y, out=y)  # y is dead after this
        np.multiply(dy, y, out=dy)
        return dy


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``rate`` and scale the
    rest by ``1 / (1 - rate)``; the identity at inference.  Caches the kept mask."""

    kind = "dropout"

    def __init__(self, rate: float):
        super().__init__()
        self.rate = float(rate)

    def config(self):
        return {"rate": self.rate}

    def prepare(self, batch, dtype, rng=None):
        shape = (batch,) + self.out_shape
        self.rng = rng
        self.ws = {"y": np.empty(shape, dtype), "keep": np.empty(shape, dtype)}
        return self.ws

    def forward(self, x, train=False):
        if not train or self.rate == 0.0:
            self._active = False
            return x
        n = x.shape[0]
        keep, y = self.ws["keep"][:n], self.ws["y"][:n]
        # keep = [u >= rate] / (1 - rate) for u ~ U[0, 1), in float arithmetic only (floor of
        # u + 1 - rate): no boolean mask, so no casting buffer in the products
        self.rng.random(out=keep, dtype=keep.dtype)
        keep += 1.0 - self.rate
        np.floor(keep, out=keep)
        keep *= 1.0 / (1.0 - self.rate)
        np.multiply(x, keep, out=y)
        self._active = True
        return y

    def backward(self, dy, need_dx=True):
        if self._active:
            np.multiply(dy, self.ws["keep"][:dy.shape[0]], out=dy)
        return dy
