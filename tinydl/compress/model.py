"""A compressed model: a sequence of inference-only layers, each a few named arrays.

Every layer knows its per-sample output shape, the bytes of its arrays (what a device stores:
values, indices and pointers alike), its FLOPs per sample and the bytes of the temporaries its
``forward`` allocates for a batch (so :mod:`.runtime` can predict its peak before it runs).

Layer kinds
-----------
``dense``            ``y = x W + b``; W (m, n), b (n,)  (tinydl's layout: W is ``Linear.weight.T``)
``factored``         ``y = (x U) V + b``; U (m, r), V (r, n): a new r-unit linear layer (SVD)
``sparse_factored``  ``y = (x B) S + b``; B (m, r) dense, S (r, n) sparse, stored by output
                     column (CSC: ``data`` (nnz,), ``indices`` (nnz,) uint8/uint16/int32, ``indptr``
                     (n + 1,) int32)
``conv``             2-D cross-correlation, W (F, C, kh, kw), b (F,), stride and padding per axis
``kernel_separated`` each (f, c) kernel as r rank-1 pairs: vertical ``v`` (C, F*r, kh), then
                     horizontal ``h`` (F, C*r, kw)
``maxpool``, ``avgpool``, ``relu``, ``tanh``, ``sigmoid``, ``softmax``, ``flatten``

Cross-channel separation (Jaderberg et al.) needs no kind of its own: it is two ``conv`` layers,
(K, C, kh, 1) then (F, K, 1, kw); so does the data-aware channel reduction of a convolution:
(K, C, kh, kw) then a 1 x 1 (F, K, 1, 1).

int8 weights (version 1 files, added without a new kind; readers that predate them refuse the
file only if they check dtypes, so check them): in a ``dense`` (W), ``factored`` (U, V),
``sparse_factored`` (B, data) or ``conv`` (W) layer, a weight array may be stored as **int8**
``q`` with a float32 array ``<name>_scale`` beside it holding one scale per output channel;
the weight is ``q * scale``, the scale indexed by the column of a 2-D array (``W[:, j]``,
``U[:, j]``, ``V[:, j]``, ``B[:, j]``), by the filter of a convolution (``W[f]``), and for a
sparse ``data`` vector by the output column j whose run ``indptr[j]:indptr[j + 1]`` holds the
value.  Biases stay float.  A C port computes ``y_j = s_j * sum_i x_i q_ij + b_j`` (one
multiply per output, the inner loop in integers times floats).

Files: :func:`save_model` writes an uncompressed ``.npz`` through :func:`tinydl.io.save_npz`
(atomic, no pickle): arrays ``L<i>.<name>`` plus a JSON ``meta``; uncompressed members can be
memory-mapped one layer at a time (:mod:`.runtime`).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .kernels import FORWARD as _FORWARD
from .kernels import SCALE_SUFFIX as _SCALE_SUFFIX
from .kernels import conv_geom as _conv_geom
from .kernels import image_shape as _img
from .kernels import shift_by_columns as _by_columns
from .kernels import shifted_conv as _shifted_conv
from .kernels import sparse_chunk as _sparse_chunk

__all__ = ["CLayer", "CompressedModel", "from_network", "FILE_KIND", "make_layer"]

FILE_KIND = "tinydl.compress.model"


class CLayer:
    """One inference layer: ``kind``, JSON ``cfg`` and weight ``arrays``.

    Parameters
    ----------
    kind : str
    arrays : dict of str to ndarray
    cfg : dict, optional
        Geometry (stride, padding, pool size); JSON-serialisable.
    """

    #: kinds whose forward may run in place on a runtime buffer
    ELEMENTWISE = ("relu", "tanh", "sigmoid")

    def __init__(self, kind: str, arrays: Optional[Dict[str, np.ndarray]] = None,
                 cfg: Optional[dict] = None):
        if kind not in _FORWARD:
            raise ValueError(f"unknown layer kind {kind!r}; known: {', '.join(sorted(_FORWARD))}")
        self.kind = kind
        # C order: a transposed or sliced array (a factorization's natural result) would
        # be copied, or multiplied outside BLAS, on every forward
        self.arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
        self.cfg = dict(cfg or {})
        self.in_shape: Tuple[int, ...] = ()
        self.out_shape: Tuple[int, ...] = ()

    def __repr__(self):
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.arrays.items())
        return f"CLayer({self.kind!r}, {shapes})"

    # -- geometry ----------------------------------------------------------------------
    def build(self, in_shape) -> Tuple[int, ...]:
        """Check the arrays against the per-sample input shape; return the output shape."""
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = _SHAPE[self.kind](self, self.in_shape)
        _check_scales(self)
        return self.out_shape

    @property
    def nbytes(self) -> int:
        """Bytes of every stored array (values, indices and pointers)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    @property
    def n_params(self) -> int:
        """Stored numbers (values, indices and pointers count one each)."""
        return int(sum(a.size for a in self.arrays.values()))

    def flops(self) -> int:
        """Floating-point operations for one sample (a multiply-add counts 2)."""
        return int(_FLOPS[self.kind](self))

    def workspace_bytes(self, n: int, itemsize: int) -> int:
        """Bytes of the temporaries :meth:`forward` allocates for a batch of ``n``."""
        return int(_WS[self.kind](self, n, itemsize))

    def check_finite(self, where: str = "") -> None:
        """Raise ValueError if a weight array holds NaN or Inf."""
        for name, a in self.arrays.items():
            if a.dtype.kind == "f":
                bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
                if bad:
                    raise ValueError(f"{where}{self.kind} layer: {name} {tuple(a.shape)} has {bad} "
                                     "NaN/Inf value(s); refusing to compress or run it")

    # -- computing ---------------------------------------------------------------------
    def forward(self, x, out, arrays=None):
        """Compute the layer on ``x`` (n, *in_shape) into ``out`` (n, *out_shape).

        ``arrays`` overrides :attr:`arrays` (the runtime passes the weights it has just mapped).
        Returns the output (``out``, or a view of ``x`` for ``flatten``).
        """
        return _FORWARD[self.kind](self, x, out, self.arrays if arrays is None else arrays)


# -- shapes -----------------------------------------------------------------------------------
def _flat(shape):
    return int(np.prod(shape))


def _dense_shape(layer, s):
    a = layer.arrays
    m = _flat(s)
    if layer.kind == "dense":
        W = a["W"]
        if W.ndim != 2 or W.shape[0] != m:
            raise ValueError(f"dense layer: W {W.shape} does not take {m} inputs (input {s})")
        n = W.shape[1]
    elif layer.kind == "factored":
        U, V = a["U"], a["V"]
        if U.shape[0] != m or U.shape[1] != V.shape[0]:
            raise ValueError(f"factored layer: U {U.shape}, V {V.shape} do not chain from {m} "
                             "inputs")
        n = V.shape[1]
    else:
        B = a["B"]
        n = int(layer.cfg["n_out"])
        if B.shape[0] != m or a["indptr"].shape != (n + 1,):
            raise ValueError(f"sparse_factored layer: B {B.shape}, indptr "
                             f"{a['indptr'].shape} do not fit {m} inputs, {n} outputs")
        if a["indices"].size and int(a["indices"].max()) >= B.shape[1]:
            raise ValueError(f"sparse_factored layer: an index {int(a['indices'].max())} is "
                             f"outside the {B.shape[1]} atoms")
    if a["b"].shape != (n,):
        raise ValueError(f"{layer.kind} layer: bias {a['b'].shape}, expected ({n},)")
    return (n,)


def _conv_shape(layer, s):
    g = _conv_geom(layer, s)
    if layer.arrays["b"].shape != (g[3],):
        raise ValueError(f"{layer.kind} layer: bias {layer.arrays['b'].shape}, expected "
                         f"({g[3]},)")
    layer._geom = g  # the forward's geometry, worked out once (at batch 1 it is not free)
    return (g[3], g[10], g[11])


def _pool_shape(layer, s):
    c, h, w = _img(layer, s)
    kh, kw = layer.cfg["pool_size"]
    sh, sw = layer.cfg.get("stride", (kh, kw))
    if h < kh or w < kw:
        raise ValueError(f"{layer.kind} layer: window {(kh, kw)} larger than the input {s}")
    return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)


def _check_scales(layer):
    """An int8 array needs float scales, one per output channel (see :func:`kernels.weight`)."""
    for name, w in layer.arrays.items():
        if w.dtype != np.int8:
            continue
        s = layer.arrays.get(name + _SCALE_SUFFIX)
        if w.ndim == 2:
            want = w.shape[1]
        elif w.ndim == 4:
            want = w.shape[0]
        elif name == "data" and "indptr" in layer.arrays:
            want = layer.arrays["indptr"].shape[0] - 1
        else:
            raise ValueError(f"{layer.kind} layer: int8 array {name} {w.shape} has no "
                             "output-channel axis")
        if s is None or s.shape != (want,) or s.dtype.kind != "f":
            got = "none" if s is None else f"{s.dtype} {s.shape}"
            raise ValueError(f"{layer.kind} layer: int8 array {name} {w.shape} needs float "
                             f"scales {name}{_SCALE_SUFFIX} of shape ({want},), got {got}")


_SHAPE = {"dense": _dense_shape, "factored": _dense_shape, "sparse_factored": _dense_shape,
          "conv": _conv_shape, "kernel_separated": _conv_shape,
          "maxpool": _pool_shape, "avgpool": _pool_shape,
          "relu": lambda la, s: s, "tanh": lambda la, s: s, "sigmoid": lambda la, s: s,
          "softmax": lambda la, s: s, "flatten": lambda la, s: (_flat(s),)}


# -- FLOPs and workspaces -----------------------------------------------------------------------
def _flops(layer):
    a, k = layer.arrays, layer.kind
    if k == "dense":
        return 2 * a["W"].size
    if k == "factored":
        return 2 * (a["U"].size + a["V"].size)
    if k == "sparse_factored":
        return 2 * (a["B"].size + a["data"].size)
    if k in ("conv", "kernel_separated"):
        c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = _conv_geom(layer, layer.in_shape)
        if k == "conv":
            return 2 * f * c * kh * kw * ho * wo
        r = a["v"].shape[1] // f
        wp = w + 2 * pw
        return 2 * (c * f * r * kh * ho * wp + f * c * r * kw * ho * wo)
    if k in ("maxpool", "avgpool"):
        kh, kw = layer.cfg["pool_size"]
        return _flat(layer.out_shape) * kh * kw
    if k == "flatten":
        return 0
    return _flat(layer.out_shape) * (1 if k == "relu" else 4)


#: elements of NumPy's casting buffer (NPY_BUFSIZE): ``astype`` from int8 holds one of these
#: in the target dtype while it converts
_CAST_BUFFER = 8192


def _deq(a, name, isz):
    """Bytes of the dequantized copy of ``a[name]`` if it is stored as int8 (else 0), with
    the casting buffer that is alive while the copy is made."""
    w = a.get(name)
    if w is None or w.dtype != np.int8:
        return 0
    return int(w.size) * isz + min(int(w.size), _CAST_BUFFER) * isz


def _ws(layer, n, isz):
    a, k = layer.arrays, layer.kind
    if k == "dense":
        return _deq(a, "W", isz)
    if k == "factored":
        # z = x U (n, r) lives on while V's dequantized copy is made; U's is gone by then
        return n * a["U"].shape[1] * isz + max(_deq(a, "U", isz), _deq(a, "V", isz))
    if k == "sparse_factored":
        # x B (n, r); the indices as intp (np.take converts them); the gathered products of
        # one chunk of rows (chunk, nnz); int8 factors add their dequantized copies (the
        # values' scales are expanded to one per value while they are applied)
        nnz = a["data"].size
        z = n * a["B"].shape[1] * isz
        idx = nnz * np.dtype(np.intp).itemsize if a["indices"].dtype != np.intp else 0
        dq = _deq(a, "data", isz)
        loop = z + dq + idx + _sparse_chunk(n, nnz) * nnz * isz
        return max(loop, z + _deq(a, "B", isz), z + 2 * dq)
    if k in ("conv", "kernel_separated"):
        c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = _conv_geom(layer, layer.in_shape)
        pad = n * c * (h + 2 * ph) * (w + 2 * pw) * isz if (ph or pw) else 0
        if k == "conv" and _shifted_conv(layer, n):
            geom = (c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo)
            bias = min(n * f * wo, _CAST_BUFFER) * isz  # the broadcast bias add's buffer
            if _by_columns(geom):
                # the padded copy while the windows (n, C kw, Wo) are copied; then the
                # windows beside an int8 W's dequantized copy (and its casting buffer)
                cols = n * c * kw * wo * isz
                return max(pad + cols, cols + _deq(a, "W", isz), bias)
            # the taps re-laid (kw F, C) (rebuilt for weights handed in, as the runtime's
            # are; a model's own are kept on the layer), the padded copy and the product of
            # every tap with it (n, kw F, Wp) beside the output, and the sum over the taps'
            # strided view buffering up to NPY_BUFSIZE elements; then, those freed, the
            # bias add's buffer.  An int8 W's dequantized copy lives while the taps are
            # made from it (with one tap, a 1 x 1 convolution, the taps are a view of it,
            # so it lives until the bias add; no product nor sum: the output is used)
            dq = _deq(a, "W", isz)
            if kw == 1:
                wcopy = int(a["W"].size) * isz if dq else 0
                return max(dq, wcopy + pad, bias)
            taps = kw * f * c * isz
            prods = taps + pad + (n * kw * f * (w + 2 * pw) + min(n * kw * f * wo,
                                                                   _CAST_BUFFER)) * isz
            return max(dq, dq and dq - min(int(a["W"].size), _CAST_BUFFER) * isz + taps,
                       prods, bias)
        if k == "conv":
            # the padded copy is freed before the product: (padded + columns), then
            # (columns + product + W's dequantized copy)
            cols, ym = n * ho * wo * c * kh * kw * isz, n * ho * wo * f * isz
            return max(pad + cols, cols + ym + _deq(a, "W", isz))
        r = a["v"].shape[1] // f
        wp = w + 2 * pw
        cols_v = c * n * ho * wp * kh
        z = c * n * ho * wp * f * r
        cols_h = f * n * ho * wo * c * r * kw
        # the vertical columns are freed before the horizontal ones are built
        return pad + (max(cols_v, cols_h) + z + f * n * ho * wo) * isz
    if k == "softmax":
        return 2 * n * isz
    return 0


_FLOPS = {k: _flops for k in _FORWARD}
_WS = {k: _ws for k in _FORWARD}


def make_layer(kind: str, **arrays_and_cfg) -> CLayer:
    """Convenience: arrays are the ndarray keyword arguments, the rest is ``cfg``."""
    arrays = {k: v for k, v in arrays_and_cfg.items() if isinstance(v, np.ndarray)}
    cfg = {k: v for k, v in arrays_and_cfg.items() if not isinstance(v, np.ndarray)}
    return CLayer(kind, arrays, cfg)


class CompressedModel:
    """Layers applied in order to samples of shape ``input_shape``.

    Parameters
    ----------
    layers : sequence of CLayer
    input_shape : tuple of int
        One sample's shape, e.g. ``(64,)`` or ``(1, 8, 8)`` (channels first).
    classes : ndarray of shape (n_classes,), optional
        Labels of the output units (``predict`` returns them).
    """

    def __init__(self, layers: Sequence[CLayer], input_shape, classes=None):
        self.layers: List[CLayer] = list(layers)
        if not self.layers:
            raise ValueError("a model needs at least one layer, got 0")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.build()
        n_out = _flat(self.output_shape)
        self.classes = np.arange(n_out) if classes is None else np.asarray(classes)
        if self.classes.shape != (n_out,):
            raise ValueError(f"class labels of shape {self.classes.shape} for {n_out} outputs")

    def build(self):
        """Compute every layer's input and output shape from ``input_shape``."""
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None
        self.output_shape = shape
        return self

    def copy(self) -> "CompressedModel":
        """A model with copies of the layers (arrays shared until replaced)."""
        layers = [CLayer(la.kind, dict(la.arrays), dict(la.cfg)) for la in self.layers]
        return CompressedModel(layers, self.input_shape, self.classes)

    @property
    def dtype(self):
        """The dtype of the weights."""
        for la in self.layers:
            for a in la.arrays.values():
                if a.dtype.kind == "f":
                    return a.dtype
        return np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of every stored array of every layer."""
        return int(sum(la.nbytes for la in self.layers))

    def flops(self) -> int:
        """FLOPs per sample."""
        return int(sum(la.flops() for la in self.layers))

    def check_finite(self) -> None:
        """Raise ``ValueError`` naming the first layer with a NaN or Inf weight."""
        for i, la in enumerate(self.layers):
            la.check_finite(f"layer {i} ")

    # -- inference ------------------------------------------------------------------------
    def _check_input(self, X):
        X = np.asarray(X)
        if X.ndim == 1 + len(self.input_shape) and X.shape[1:] == self.input_shape:
            pass
        elif X.ndim == 2 and X.shape[1] == _flat(self.input_shape):
            X = X.reshape((X.shape[0],) + self.input_shape)
        else:
            raise ValueError(f"X has shape {X.shape}; the model takes samples of shape "
                             f"{self.input_shape} ({_flat(self.input_shape)} features)")
        if X.dtype != self.dtype:
            X = X.astype(self.dtype)
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or Inf")
        return X

    def forward_range(self, x, start=0, stop=None):
        """Run layers ``start:stop`` on ``x`` (n, *shape before ``start``); a new array."""
        stop = len(self.layers) if stop is None else stop
        for la in self.layers[start:stop]:
            out = np.empty((x.shape[0],) + la.out_shape, x.dtype)
            x = la.forward(x, out)
        return np.array(x, copy=True) if start == stop else x

    def decision_function(self, X, batch_size: int = 1024):
        """Raw outputs, shape (n_samples, n_outputs)."""
        X = self._check_input(X)
        outs = [self.forward_range(X[s:s + batch_size]).reshape(len(X[s:s + batch_size]), -1)
                for s in range(0, X.shape[0], batch_size)]
        return np.concatenate(outs) if outs else np.empty((0, _flat(self.output_shape)))

    def predict(self, X):
        """Labels, shape (n_samples,)."""
        return self.classes[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X, y) -> float:
        """Mean accuracy on ``(X, y)``; ``X`` of shape (n_samples, *input_shape) or flat."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def summary(self) -> List[dict]:
        """One dict per layer: index, kind, output shape, bytes, FLOPs."""
        return [{"index": i, "kind": la.kind, "output_shape": la.out_shape, "bytes": la.nbytes,
                 "flops": la.flops()} for i, la in enumerate(self.layers)]


# -- from tinydl.nn ----------------------------------------------------------------------------
def from_network(network, classes=None) -> CompressedModel:
    """Convert a trained :class:`tinydl.nn.Network` (or a fitted classifier) into layers.

    Dropout is dropped (the identity at inference); 1-D convolutions and pools become 2-D ones
    over (C, 1, L) images, with a leading reshape-free flatten where a dense layer follows a
    convolution.
    """
    if hasattr(network, "network_"):
        classes = network.classes_ if classes is None else classes
        network = network.network_
    if getattr(network, "input_shape", None) is None or not getattr(network, "layers", None):
        from ..errors import NotFittedError
        raise NotFittedError(f"this {type(network).__name__} has no trained layers: fit it "
                             "before compressing it")
    in_shape = tuple(network.input_shape)
    one_d = len(in_shape) == 2
    layers: List[CLayer] = []
    shape = in_shape
    for la in network.layers:
        k = la.kind
        if k == "dense":
            if len(shape) > 1:
                layers.append(CLayer("flatten"))
            layers.append(make_layer("dense", W=np.array(la.p["W"]), b=np.array(la.p["b"])))
        elif k in ("conv2d", "conv1d"):
            W = np.array(la.p["W"])
            if k == "conv1d":
                W = W[:, :, None, :]
            layers.append(make_layer("conv", W=W, b=np.array(la.p["b"]),
                                     stride=[1, la.stride] if k == "conv1d" else [la.stride] * 2,
                                     padding=[la.ph, la.pw]))
        elif k in ("maxpool2d", "maxpool1d"):
            layers.append(make_layer("maxpool", pool_size=list(la.pool_size),
                                     stride=[1 if k == "maxpool1d" else la.stride, la.stride]))
        elif k in ("relu", "tanh", "sigmoid"):
            layers.append(CLayer(k))
        elif k == "dropout":
            continue
        else:
            raise ValueError(f"cannot convert layer kind {k!r}")
        shape = la.out_shape
    if one_d:
        in_shape = (in_shape[0], 1, in_shape[1])
    return CompressedModel(layers, in_shape, classes)
