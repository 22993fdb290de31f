"""One-sample inference on buffers bound once: a network's forward pass for a device that
classifies each sample as it arrives.

:class:`Network.forward` on a batch walks the layers through their generic interface (the
workspace dictionaries, the backend's dispatch, the cached inputs for backward): a few
microseconds of Python per layer, which is most of the time of one small sample.
:class:`RowPlan` is that pass for exactly one sample, prepared once per network: each layer's
output buffer of shape ``(1, units)``, the weight and bias views, the activations applied in
place on those buffers, and, for compact-code input, the backend's sparse-layer plan bound to
the first layer's buffer (``sparse_product="gather"``) or, for the ``"dense"`` product, a
(1, n_in + 1) row the codes are put into as the batch path scatters them (its last column
takes the -1 padding) and the layer's one product.  A call then runs ~3 NumPy calls per
dense layer and allocates no array data.

Same results as the batch path, bit for bit, on the same one-row input: the plan makes the
calls the layers make for one row (the backend's ``dense_forward`` is ``numpy.matmul`` then
``+= b`` on one row for the NumPy, BLAS and native backends; other backends are called
through ``dense_forward`` itself; the first layer's gather is the same bound kernel).  Rows
of a multi-row batch may round differently in the dense layers (a BLAS ``?gemm`` where one
row takes ``?gemv``): within the backend's ``rtol``, not bit-identical.

Supported networks: a :class:`~tinydl.nn.layers.Dense` first layer, then dense layers,
element-wise activations (ReLU, tanh, sigmoid) and dropout (the identity at inference).
Anything else (convolutions) keeps the batch path: :func:`build_row_plan` returns None.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .layers import Dense, Dropout, ReLU, Sigmoid, Tanh

__all__ = ["ROW_PRODUCTS", "RowPlan", "build_row_plan", "layer_specs", "row_is_finite"]

#: the first layer's products for compact codes that :class:`RowPlan` runs ("auto", before
#: it has chosen one by timing, keeps the batch path)
ROW_PRODUCTS = ("gather", "dense")


def _relu(h):
    """ReLU in place (the batch path's ``maximum(x, 0)``: NaN stays NaN)."""
    np.maximum(h, 0, out=h)


def _backend_dense(be, h, W, b, y):
    """A dense layer through a backend's own ``dense_forward`` (one it overrides)."""
    be.dense_forward(h, W, b, out=y)


def row_is_finite(x: np.ndarray) -> bool:
    """Whether a C-contiguous float array (one sample) holds no NaN or Inf, in one BLAS pass
    and without an array-sized temporary: ``x . x`` is NaN or Inf when an entry is (with no
    floating-point warning: ``inf * inf`` and quiet NaNs raise no flag).  Only finite entries
    beyond ~1.8e19 (float32) overflow it (NumPy then warns once) and the exact test decides.
    (``x . 0`` cannot overflow but warns on every Inf; ``numpy.errstate`` costs more than
    the test.)"""
    v = x.reshape(-1)
    return math.isfinite(np.dot(v, v)) or bool(np.isfinite(v).all())


def _direct_dense(backend) -> bool:
    """Whether the backend's ``dense_forward`` on one row is ``numpy.matmul(x, W, out=y)``
    then ``y += b`` (NumPy's, and BLAS's and native's for a single row), so that the plan may
    make those two calls itself; a backend that overrides any part of that path is called
    through ``dense_forward``."""
    from hal.backends.numpy import NumpyBackend
    kind = type(backend)
    if kind.dense_forward is NumpyBackend.dense_forward:
        return kind.matmul is NumpyBackend.matmul
    try:
        from hal.backends.blas import BlasBackend
    except ImportError:  # pragma: no cover - hal.backends.blas imports nothing optional
        return False
    return (kind.dense_forward is BlasBackend.dense_forward
            and kind._small is BlasBackend._small)


class RowPlan:
    """A network's forward pass on one sample, bound to buffers allocated once.

    Parameters
    ----------
    network : Network
    sparse_input : bool
        Compact codes into the first layer (its ``sparse_product`` ``"gather"``: the
        backend's bound kernel; ``"dense"``: the codes scattered into a (1, n_in + 1) row
        whose last column takes the -1 padding, then the layer's product, as the batch path
        scatters them into its block), else a dense row.

    Attributes
    ----------
    out : ndarray of shape (1, n_outputs)
        The last layer's output buffer (what :meth:`run` and :meth:`run_codes` return).
    nbytes : int
        Bytes of the plan's buffers.
    """

    def __init__(self, network, sparse_input: bool):
        layers = network.layers
        dt = network.dtype
        be = network.backend
        first = layers[0]
        self.network = network
        self.params = network.params  # the array the views below belong to (a check)
        self.sparse_input = bool(sparse_input)
        self.n_in = first.n_in
        self.dtype = dt
        self._direct = direct = _direct_dense(be)
        self._backend = be
        # the calls after the first layer, each ``(function, arguments)`` on this plan's own
        # buffers (outputs passed positionally, the cheapest call NumPy offers; maximum, which
        # deprecates that, through _relu: NumPy 2.4 leaked ~100 bytes per call given its
        # ``out`` by ``**kw`` or functools.partial, measured)
        calls, bufs = [], []
        h = None  # the buffer holding the current activations
        self._gather = self._head = self._row = self._flat = self._pidx = None
        self.product = first.sparse_product if sparse_input else None
        for i, layer in enumerate(layers):
            if isinstance(layer, Dense):
                y = np.zeros((1, layer.units), dt)
                bufs.append(y)
                W, b = layer.p["W"], layer.p["b"]
                if i == 0 and sparse_input and self.product == "gather":
                    # the batch path's own bound kernel, on this plan's output row
                    self._gather = be.prepare_sparse_layer(W, b, y, layer.g["W"], layer.g["b"])
                elif i == 0 and sparse_input:
                    # "dense": the batch path's scatter block for one row (Dense._scatter),
                    # then the same product on its first n_in columns
                    self._row = np.zeros((1, self.n_in + 1), dt)
                    self._flat = self._row.reshape(-1)
                    self._head = (self._row[:, :self.n_in], W, b, y)
                elif i == 0:
                    self._head = (None, W, b, y)
                elif direct:
                    calls += [(np.matmul, (h, W, y)), (np.add, (y, b, y))]
                else:
                    calls.append((_backend_dense, (be, h, W, b, y)))
                h = y
            elif isinstance(layer, ReLU):
                calls.append((_relu, (h,)))
            elif isinstance(layer, (Tanh, Sigmoid)):
                calls.append((layer._f, (h, h)))
            elif isinstance(layer, Dropout):
                continue  # the identity at inference
            else:  # pragma: no cover - build_row_plan checked the kinds
                raise ValueError(f"no one-sample plan for a {layer.kind!r} layer")
        self._calls = tuple(calls)
        self.out = bufs[-1]
        self.nbytes = int(sum(b.nbytes for b in bufs)
                          + (0 if self._row is None else self._row.nbytes))

    def valid_for(self, network) -> bool:
        """Whether the plan still runs ``network`` (the same object, parameters and first
        layer product)."""
        return (self.network is network and self.params is network.params
                and (not self.sparse_input or network.layers[0].sparse_product == self.product))

    def _first(self, x) -> None:
        """The first dense layer on one row ``x`` (1, n_in), into its output buffer."""
        _, W, b, y = self._head
        if self._direct:
            np.matmul(x, W, y)
            np.add(y, b, y)
        else:
            self._backend.dense_forward(x, W, b, out=y)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs (1, n_outputs) for one dense sample ``x`` of shape (1, n_in) in the
        network's dtype, C-contiguous (not checked here); a view of :attr:`out`, overwritten
        by the next call."""
        self._first(x)
        for f, a in self._calls:
            f(*a)
        return self.out

    def run_codes(self, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Outputs (1, n_outputs) for one sample's compact codes (``indices`` int32 and
        ``values`` of the network's dtype, both (1, k) and C-contiguous; ``-1`` pads)."""
        if self._row is None:
            self._gather.forward(indices, values)
        else:
            flat, pidx = self._flat, self._pidx
            if pidx is None or pidx.shape != indices.shape:
                # once per code width: put converts other index dtypes into a temporary
                pidx = self._pidx = np.empty(indices.shape, np.intp)
            np.copyto(pidx, indices)
            flat.fill(0)
            # "wrap" sends the -1 padding to the extra last column, as Dense._scatter's
            # padded indices do
            np.put(flat, pidx, values, mode="wrap")
            self._first(self._head[0])
        for f, a in self._calls:
            f(*a)
        return self.out


def build_row_plan(network, sparse_input: bool) -> Optional[RowPlan]:
    """A :class:`RowPlan` for ``network``, or None when its layers are not all of the kinds
    the plan runs (a dense first layer, then dense, activation and dropout layers; for
    compact codes a first layer with ``sparse_product`` ``"gather"`` or ``"dense"``)."""
    layers = network.layers
    if not isinstance(layers[0], Dense) or network.input_shape != (layers[0].n_in,):
        return None
    if sparse_input and layers[0].sparse_product not in ROW_PRODUCTS:
        return None
    for layer in layers:
        if type(layer) not in (Dense, ReLU, Tanh, Sigmoid, Dropout):
            return None
    return RowPlan(network, sparse_input)


def layer_specs(network) -> Optional[list]:
    """The network's inference layers as a fused kernel takes them (the native backend's
    ``prepare_predict``): ``("dense", W, b)``, ``("relu",)``, ``("tanh",)``,
    ``("sigmoid",)`` in order, dropout left out (the identity at inference); None when a
    layer is of another kind or the first is not a dense layer fed compact codes by
    ``"gather"``."""
    layers = network.layers
    if not isinstance(layers[0], Dense) or layers[0].sparse_product != "gather":
        return None
    specs = []
    for layer in layers:
        kind = type(layer)
        if kind is Dense:
            specs.append(("dense", layer.p["W"], layer.p["b"]))
        elif kind in (ReLU, Tanh, Sigmoid):
            specs.append((layer.kind,))
        elif kind is not Dropout:
            return None
    return specs
