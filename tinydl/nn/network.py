"""A feed-forward network: layers in order, one flat parameter buffer, workspaces per batch.

All parameters live in one allocation (``params``, and ``grads`` beside it) with named views
per layer, so ``n_params`` is exact before training and the optimizer updates the whole model
with a handful of vector operations.  :meth:`Network.prepare` allocates every activation and
workspace buffer for a batch size once; :meth:`forward` / :meth:`backward` then allocate no
array data on the dense path.  :meth:`workspace_bytes` predicts those buffers' size for any
batch size without allocating them.

Deferred weight gradients (the fused momentum-SGD step, :meth:`Network.backward` with
``defer_weights=True``): the weight gradients of the large weights are not written to
``grads``; each layer keeps the two operands of its ``dW`` GEMM, and
:meth:`flush_weight_grads` later accumulates them into another buffer laid out as ``params``
(the optimizer's velocity, ``u_W = mu u_W + dW`` as one GEMM with ``beta = mu``).  Everything
else (bias gradients, input gradients) is computed as usual, so the divergence check can run
before any optimizer state is touched.
"""
from __future__ import annotations

import copy
import time
from typing import Dict, List, Sequence

import numpy as np

import hal

from ..codes import SparseCodes
from .infer import ROW_PRODUCTS, build_row_plan
from .layers import Dense, Layer

__all__ = ["Network"]


class Network:
    """Layers applied in order to samples of shape ``input_shape``.

    Parameters
    ----------
    layers : sequence of Layer
    input_shape : tuple of int
        Shape of one sample, e.g. ``(520,)`` or ``(1, 8, 8)`` (channels first).
    dtype : {"float32", "float64"}
    backend : str or hal.Backend, optional
        Runs every matrix product (forward and backward); by default the one
        :func:`hal.select_backend` decides (``TINYDL_BACKEND``, else the fastest that runs
        here and keeps results independent of batch splits).
    seed : int
        Seeds the weight initialisation.
    """

    def __init__(self, layers: Sequence[Layer], input_shape, dtype="float32", backend=None,
                 seed=0):
        self.layers: List[Layer] = list(layers)
        if not self.layers:
            raise ValueError("a network needs at least one layer, got 0")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.dtype = np.dtype(dtype)
        self.backend = hal.get_backend(backend)
        shape = self.input_shape
        specs = []
        for layer in self.layers:
            shape = layer.build(shape)
            layer.backend = self.backend
            specs.append(layer.param_shapes())
        self.output_shape = shape
        self.n_params = int(sum(int(np.prod(s)) for spec in specs for _, s in spec))
        self.params = np.zeros(self.n_params, self.dtype)
        self.grads = np.zeros(self.n_params, self.dtype)
        self._views = []
        #: (start, shape) of each parameter tensor in the flat buffer, in order (read by
        #: optimizers whose state follows the shapes: optim.Adafactor)
        self.layout = []
        off = 0
        for layer, spec in zip(self.layers, specs):
            p, g = {}, {}
            for name, s in spec:
                size = int(np.prod(s))
                self.layout.append((off, tuple(int(d) for d in s)))
                p[name] = self.params[off:off + size].reshape(s)
                g[name] = self.grads[off:off + size].reshape(s)
                off += size
            layer.bind(p, g)
        self._defer = None  # the deferred-weight plan, built on first use
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.init_params(rng)
        self.rng = np.random.default_rng(rng.integers(2 ** 63))  # dropout's stream
        self.batch = 0
        self.sparse_input = False
        self.ws_nbytes = 0

    # -- buffers ----------------------------------------------------------------------
    def prepare(self, batch: int, sparse_input: bool = False) -> int:
        """Allocate every layer's buffers for up to ``batch`` samples; returns their bytes."""
        first = self.layers[0]
        if sparse_input and not isinstance(first, Dense):
            raise ValueError(f"compact codes need a dense first layer, got {first.kind!r}")
        if isinstance(first, Dense):
            first.sparse_input = bool(sparse_input)
        self._mark_dx()
        total = 0
        for layer in self.layers:
            total += sum(a.nbytes for a in layer.prepare(batch, self.dtype, self.rng).values())
        self.batch, self.sparse_input, self.ws_nbytes = int(batch), bool(sparse_input), total
        return total

    def _mark_dx(self) -> None:
        """Backward never asks the first layer for its input's gradient: its dense layers'
        ``needs_dx`` by position (the first one allocates no ``dx`` buffer)."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                layer.needs_dx = i > 0

    def ensure(self, batch: int, sparse_input: bool = False) -> None:
        if batch > self.batch or bool(sparse_input) and not self.sparse_input:
            self.prepare(max(batch, self.batch), sparse_input or self.sparse_input)

    def workspace_bytes(self, batch: int, sparse_input: bool = False) -> int:
        """Bytes :meth:`prepare` allocates for ``batch`` (linear in it: measured at sizes 1
        and 2 on a shadow copy, then extrapolated; nothing of size ``batch`` is allocated)."""
        self._mark_dx()

        def at(b):
            total = 0
            for layer in self.layers:
                saved = layer.ws
                if isinstance(layer, Dense) and layer is self.layers[0]:
                    flag, layer.sparse_input = layer.sparse_input, bool(sparse_input)
                total += sum(a.nbytes for a in layer.prepare(b, self.dtype, self.rng).values())
                if isinstance(layer, Dense) and layer is self.layers[0]:
                    layer.sparse_input = flag
                layer.ws = saved
            return total
        one, two = at(1), at(2)
        return one + (two - one) * (int(batch) - 1)

    # -- passes -----------------------------------------------------------------------
    def forward(self, x, train: bool = False):
        """Outputs for a batch ``x`` (n, *input_shape) or a
        :class:`~tinydl.codes.SparseCodes`, n <= batch.
        The result is a view of a workspace: copy it to keep it past the next call.

        One sample at inference (a C-contiguous (1, n_in) row of the network's dtype, or one
        row of compact codes) runs the network's :meth:`row_plan` when it has one: the same
        values, bit for bit, without the layers' generic dispatch (see
        :mod:`tinydl.nn.infer`); it needs no :meth:`prepare`."""
        if not train:
            if type(x) is np.ndarray:
                if x.shape[0] == 1 and x.ndim == 2 and x.dtype == self.dtype \
                        and x.flags.c_contiguous:
                    plan = self.row_plan(False)
                    if plan is not None and x.shape[1] == plan.n_in:
                        return plan.run(x)
            elif type(x) is SparseCodes and x.indices.shape[0] == 1 \
                    and getattr(self.layers[0], "sparse_product", None) in ROW_PRODUCTS:
                plan = self.row_plan(True)
                if plan is not None:
                    return plan.run_codes(x.indices, x.values)
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def row_plan(self, sparse_input: bool = False):
        """The one-sample forward pass bound to buffers of its own
        (:class:`~tinydl.nn.infer.RowPlan`), built on first use and kept; None when a layer
        is of a kind it does not run (convolutions)."""
        plans = self.__dict__.get("_row_plans")
        if plans is None:
            plans = self._row_plans = {}
        plan = plans.get(bool(sparse_input), False)
        if plan is False or (plan is not None and not plan.valid_for(self)):
            plan = plans[bool(sparse_input)] = build_row_plan(self, sparse_input)
        return plan

    def backward(self, dout, defer_weights: bool = False) -> None:
        """Write every parameter gradient into ``grads`` from ``dout`` = dL/d(outputs).

        With ``defer_weights``, the deferrable weights (:meth:`deferred_weights` of them; the
        rest of the buffer is :meth:`eager_ranges`) get no gradient in ``grads``: their
        layers keep the GEMM operands instead, for :meth:`flush_weight_grads` (or
        :meth:`discard_weight_grads`) before the next forward pass."""
        layers = self.layers
        deferred = self._plan()[0] if defer_weights else ()
        for i in range(len(layers) - 1, -1, -1):
            if i in deferred:
                dout = layers[i].backward(dout, need_dx=i > 0, defer_weight_grad=True)
            else:
                dout = layers[i].backward(dout, need_dx=i > 0)

    #: weights with fewer elements than this are never deferred: the passes saved (~0.4 ns
    #: per weight) do not pay for a ``gemm`` through cffi instead of ``numpy.matmul`` (~5 us
    #: more per call) and the split update's extra vector operations (measured: deferring
    #: every weight of the benchmark's [100, 64, 32, 19] MLP cost 30% at batch 32, a
    #: 1000 x 256 weight gained 15%)
    min_deferred_size = 65536

    def _plan(self):
        """``(indices, slots, eager)``: the layers whose weight gradient can be deferred, one
        ``(layer index, offset, rows, cols)`` per such weight (its place in the flat buffer,
        as a 2-D matrix), and the ``(start, stop)`` ranges of everything else, merged."""
        cached = getattr(self, "_defer", None)
        if cached is not None and cached[0] == self.min_deferred_size:
            return cached[1]
        slots, off, covered = [], 0, []
        for i, layer in enumerate(self.layers):
            for name, s in layer.param_shapes():
                size = int(np.prod(s))
                if name == "W" and size >= self.min_deferred_size and self._can_defer(i):
                    slots.append((i, off, int(s[0]), size // int(s[0])))
                    covered.append((off, off + size))
                off += size
        eager, start = [], 0
        for a, b in covered:
            if a > start:
                eager.append((start, a))
            start = b
        if start < self.n_params:
            eager.append((start, self.n_params))
        plan = (frozenset(i for i, *_ in slots), tuple(slots), tuple(eager))
        self._defer = (self.min_deferred_size, plan)
        return plan

    def _can_defer(self, i) -> bool:
        """Whether layer ``i`` can defer its weight gradient past the rest of the backward
        pass: it supports it, a convolution only as the first layer (no input gradient),
        and a dense layer's input (the output of the layers before it) survives the backward
        passes of those layers (no :attr:`~tinydl.nn.layers.Layer.keeps_output` ``False``:
        tanh and sigmoid reuse their output as scratch)."""
        layer = self.layers[i]
        if not layer.can_defer_weight_grad:
            return False
        if not isinstance(layer, Dense):
            return i == 0
        j = i - 1
        while j >= 0:  # the producer of the input, through layers that may pass it on
            if not self.layers[j].keeps_output:
                return False
            if not self.layers[j].may_return_input:
                break
            j -= 1
        return True

    def deferred_weights(self) -> int:
        """Number of weights :meth:`backward` defers when asked to (0: nothing to gain)."""
        return len(self._plan()[1])

    def eager_ranges(self):
        """``(start, stop)`` ranges of the flat buffer whose gradients :meth:`backward`
        writes even when deferring (biases, small or non-deferrable weights)."""
        return self._plan()[2]

    def flush_weight_grads(self, into, beta: float) -> None:
        """Accumulate the deferred weight gradients into ``into`` (a buffer laid out as
        ``params``): ``into_W = beta * into_W + dW``, one backend GEMM per weight."""
        slots, layers = self._plan()[1], self.layers
        for i, *_ in slots:  # all or nothing: ``into`` is optimizer state
            if getattr(layers[i], "_pending", None) is None:
                raise RuntimeError(f"layer {i} ({layers[i].kind}) has no pending weight "
                                   "gradient: call backward(dout, defer_weights=True) first")
        gemm = self.backend.gemm
        for i, off, rows, cols in slots:
            a, b = layers[i].pending_weight_grad()
            gemm(a, b, into[off:off + rows * cols].reshape(rows, cols), beta=beta)

    def discard_weight_grads(self) -> None:
        """Drop the deferred weight gradients (a diverged step)."""
        for i, *_ in self._plan()[1]:
            self.layers[i].pending_weight_grad()

    def bias_grads_finite(self) -> bool:
        """Whether every layer's bias gradient (the batch sum of its output gradient) is
        finite: a NaN or Inf anywhere in the backward pass shows up there."""
        for layer in self.layers:
            gb = layer.g.get("b")
            if gb is not None and not np.isfinite(np.dot(gb, gb)):
                return False
        return True

    def choose_sparse_product(self, sb: SparseCodes, repeats: int = 5) -> str:
        """Time the first layer's forward and weight-gradient products on ``sb`` both ways and
        keep the faster (both give the same result up to rounding).  The gradients are
        written to a copy: the layer's own are left as they were."""
        first = self.layers[0]
        best = {}
        saved = first.g["W"].copy(), first.g["b"].copy()
        dy = np.zeros((len(sb), first.units), self.dtype)
        for mode in ("gather", "dense"):
            first.sparse_product = mode
            first.forward(sb, train=True)
            first.backward(dy, need_dx=False)
            t0 = time.perf_counter()
            for _ in range(repeats):
                first.forward(sb, train=True)
                first.backward(dy, need_dx=False)
            best[mode] = time.perf_counter() - t0
        first.g["W"][...], first.g["b"][...] = saved
        first.sparse_product = min(best, key=best.get)
        return first.sparse_product

    # -- copies (copy.deepcopy, and pickle in third-party tools such as joblib) ---------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_row_plans", None)  # bound to this object's buffers: rebuilt on use
        layers = []
        for layer in self.layers:  # views would come back as independent arrays: drop them
            c = copy.copy(layer)
            # "_plan": a backend's prepared sparse-layer kernels, bound to these buffers (the
            # native one holds cffi pointers, which cannot be copied): made again on use
            c.__dict__ = {k: v for k, v in layer.__dict__.items()
                          if not isinstance(v, (np.ndarray, SparseCodes, dict))
                          and k not in ("_pending", "_plan")}
            c.p, c.g, c.ws = {}, {}, {}
            layers.append(c)
        state["layers"] = layers
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.params = np.array(self.params, copy=True)
        self.grads = np.zeros_like(self.params)
        off = 0
        for layer in self.layers:
            p, g = {}, {}
            for name, s in layer.param_shapes():
                size = int(np.prod(s))
                p[name] = self.params[off:off + size].reshape(s)
                g[name] = self.grads[off:off + size].reshape(s)
                off += size
            layer.bind(p, g)
        self.batch = 0  # workspaces are rebuilt on first use

    # -- accounting -------------------------------------------------------------------
    @property
    def param_bytes(self) -> int:
        return self.params.nbytes

    def summary(self) -> List[Dict]:
        """One row per layer: kind, output shape, parameter count."""
        return [{"kind": la.kind, "output_shape": la.out_shape,
                 "n_params": int(sum(v.size for v in la.p.values()))} for la in self.layers]
