"""A compressed model: a sequence of inference-only layers, each a few named arrays.

Every layer knows its per-sample output shape, the bytes of its arrays (what a device stores:
values, indices and pointers alike), its FLOPs per sample and the bytes of the temporaries its
``forward`` allocates for a batch (so :mod:`.runtime` can predict its peak before it runs).

Layer kinds
-----------
``dense``            ``y = x W + b``; W (m, n), b (n,)  (tinydl's layout: W is ``Linear.weight.T``)
``factored``         ``y = (x U) V + b``; U (m, r), V (r, n): a new r-unit linear layer (SVD)
``sparse_factored``  ``y = (x B) S + b``; B (m, r) dense, S (r, n) sparse, stored by output
                     column (CSC: ``data`` (nnz,), ``indices`` (nnz,) uint16/int32, ``indptr``
                     (n + 1,) int32)
``conv``             2-D cross-correlation, W (F, C, kh, kw), b (F,), stride and padding per axis
``kernel_separated`` each (f, c) kernel as r rank-1 pairs: vertical ``v`` (C, F*r, kh), then
                     horizontal ``h`` (F, C*r, kw)
``maxpool``, ``avgpool``, ``relu``, ``tanh``, ``sigmoid``, ``softmax``, ``flatten``

Cross-channel separation (Jaderberg et al.) needs no kind of its own: it is two ``conv`` layers,
(K, C, kh, 1) then (F, K, 1, kw).

Files: :func:`save_model` writes an uncompressed ``.npz`` through :func:`tinydl.io.save_npz`
(atomic, no pickle): arrays ``L<i>.<name>`` plus a JSON ``meta``; uncompressed members can be
memory-mapped one layer at a time (:mod:`.runtime`).
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..io import ModelFileError, array_digest, load_npz, save_npz, verify_digest

__all__ = ["CLayer", "CompressedModel", "from_network", "save_model", "load_model",
           "load_any_model", "FILE_KIND", "make_layer"]

FILE_KIND = "tinydl.compress.model"


def _windows(xp, kh, kw, sh, sw):
    """Strided view (n, C, Ho, Wo, kh, kw) of the windows of ``xp`` (n, C, H, W)."""
    n, c, h, w = xp.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    s0, s1, s2, s3 = xp.strides
    return as_strided(xp, (n, c, ho, wo, kh, kw), (s0, s1, s2 * sh, s3 * sw, s2, s3),
                      writeable=False)


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
        self.arrays = dict(arrays or {})
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


def _img(layer, s):
    if len(s) != 3:
        raise ValueError(f"{layer.kind} layer needs (channels, height, width) input, got {s}")
    return s


def _conv_geom(layer, s):
    c, h, w = _img(layer, s)
    sh, sw = layer.cfg.get("stride", (1, 1))
    ph, pw = layer.cfg.get("padding", (0, 0))
    if layer.kind == "conv":
        f, cw, kh, kw = layer.arrays["W"].shape
        if cw != c:
            raise ValueError(f"conv layer: W {layer.arrays['W'].shape} expects {cw} input "
                             f"channels, the input has {c} (input {s})")
    else:
        kh, kw = layer.arrays["v"].shape[2], layer.arrays["h"].shape[2]
        f = layer.arrays["h"].shape[0]
        if layer.arrays["v"].shape[0] != c:
            raise ValueError(f"kernel_separated layer: v {layer.arrays['v'].shape} expects "
                             f"{layer.arrays['v'].shape[0]} channels, the input has {c}")
    hp, wp = h + 2 * ph, w + 2 * pw
    if hp < kh or wp < kw:
        raise ValueError(f"{layer.kind} layer: kernel {(kh, kw)} does not fit the padded "
                         f"input {(hp, wp)}")
    return c, h, w, f, kh, kw, sh, sw, ph, pw, (hp - kh) // sh + 1, (wp - kw) // sw + 1


def _conv_shape(layer, s):
    g = _conv_geom(layer, s)
    if layer.arrays["b"].shape != (g[3],):
        raise ValueError(f"{layer.kind} layer: bias {layer.arrays['b'].shape}, expected "
                         f"({g[3]},)")
    return (g[3], g[10], g[11])


def _pool_shape(layer, s):
    c, h, w = _img(layer, s)
    kh, kw = layer.cfg["pool_size"]
    sh, sw = layer.cfg.get("stride", (kh, kw))
    if h < kh or w < kw:
        raise ValueError(f"{layer.kind} layer: window {(kh, kw)} larger than the input {s}")
    return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)


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


def _ws(layer, n, isz):
    a, k = layer.arrays, layer.kind
    if k == "factored":
        return n * a["U"].shape[1] * isz
    if k == "sparse_factored":
        # x B (n, r); the indices as intp (np.take converts them); the gathered products of
        # one chunk of rows (chunk, nnz)
        nnz = a["data"].size
        idx = nnz * np.dtype(np.intp).itemsize if a["indices"].dtype != np.intp else 0
        return n * a["B"].shape[1] * isz + idx + _sparse_chunk(n, nnz) * nnz * isz
    if k in ("conv", "kernel_separated"):
        c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = _conv_geom(layer, layer.in_shape)
        pad = n * c * (h + 2 * ph) * (w + 2 * pw) * isz if (ph or pw) else 0
        if k == "conv":
            return pad + n * ho * wo * (c * kh * kw + f) * isz
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


# -- forward ------------------------------------------------------------------------------------
def _fw_dense(layer, x, out, a):
    n = x.shape[0]
    np.matmul(x.reshape(n, -1), a["W"], out=out)
    out += a["b"]
    return out


def _fw_factored(layer, x, out, a):
    n = x.shape[0]
    z = x.reshape(n, -1) @ a["U"]
    np.matmul(z, a["V"], out=out)
    out += a["b"]
    return out


#: bytes of gathered products the sparse product may hold at once (rows are chunked to fit)
SPARSE_CHUNK_BYTES = 1 << 20


def _sparse_chunk(n, nnz, isz=4):
    return max(1, min(n, SPARSE_CHUNK_BYTES // max(1, nnz * isz)))


def _fw_sparse(layer, x, out, a):
    n = x.shape[0]
    z = x.reshape(n, -1) @ a["B"]
    indptr, data = a["indptr"], a["data"]
    idx = np.asarray(a["indices"], np.intp)
    # the sparse product z S, every output column in one pass: gather the atoms each column
    # uses, scale them, and sum each column's run (np.add.reduceat); rows go in chunks so the
    # gathered products stay under SPARSE_CHUNK_BYTES
    starts = indptr[:-1]
    nonempty = indptr[1:] > starts
    if not nonempty.all():  # reduceat would copy one element for an empty run: zero those
        out.fill(0)
    step = _sparse_chunk(n, data.size, z.dtype.itemsize)
    g_buf = np.empty((step, data.size), z.dtype)
    for s in range(0, n, step):
        e = min(n, s + step)
        g = g_buf[:e - s]
        np.take(z[s:e], idx, axis=1, out=g, mode="clip")  # "raise" would buffer `out`
        g *= data
        if nonempty.all():
            np.add.reduceat(g, starts, axis=1, out=out[s:e])
        elif g.shape[1]:
            out[s:e, nonempty] = np.add.reduceat(g, starts[nonempty], axis=1)
    out += a["b"]
    return out


def _pad(x, ph, pw):
    if not (ph or pw):
        return x
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def _fw_conv(layer, x, out, a):
    n = x.shape[0]
    c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = _conv_geom(layer, layer.in_shape)
    xp = _pad(x.reshape(n, c, h, w), ph, pw)
    cols = np.empty((n, ho, wo, c, kh, kw), x.dtype)
    np.copyto(cols, _windows(xp, kh, kw, sh, sw).transpose(0, 2, 3, 1, 4, 5))
    del xp
    ym = cols.reshape(n * ho * wo, -1) @ a["W"].reshape(f, -1).T
    del cols
    np.copyto(out, ym.reshape(n, ho, wo, f).transpose(0, 3, 1, 2))
    out += a["b"][:, None, None]
    return out


def _fw_kernel_sep(layer, x, out, a):
    n = x.shape[0]
    c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = _conv_geom(layer, layer.in_shape)
    v, hh = a["v"], a["h"]  # (C, F*r, kh), (F, C*r, kw)
    fr = v.shape[1]
    r = fr // f
    wp = w + 2 * pw
    xp = _pad(x.reshape(n, c, h, w), ph, pw)
    # vertical pass: every input channel through its F*r column filters (one batched GEMM)
    cols = np.empty((c, n, ho, wp, kh), x.dtype)
    np.copyto(cols, _windows(xp, kh, 1, sh, 1)[..., 0].transpose(1, 0, 2, 3, 4))
    del xp
    z = np.matmul(cols.reshape(c, n * ho * wp, kh), v.transpose(0, 2, 1))  # (C, n*Ho*Wp, F*r)
    del cols
    # horizontal pass: for each filter f, its C*r intermediate maps through row filters
    z6 = z.reshape(c, n, ho, wp, f, r)
    colsh = np.empty((f, n, ho, wo, c, r, kw), x.dtype)
    s = z6.strides
    win = as_strided(z6, (f, n, ho, wo, c, r, kw),
                     (s[4], s[1], s[2], s[3] * sw, s[0], s[5], s[3]), writeable=False)
    np.copyto(colsh, win)
    del z, z6, win
    y = np.matmul(colsh.reshape(f, n * ho * wo, c * r * kw), hh.reshape(f, c * r * kw, 1))
    del colsh
    np.copyto(out, y.reshape(f, n, ho, wo).transpose(1, 0, 2, 3))
    out += a["b"][:, None, None]
    return out


def _fw_pool(layer, x, out, a):
    n = x.shape[0]
    c, h, w = layer.in_shape
    kh, kw = layer.cfg["pool_size"]
    sh, sw = layer.cfg.get("stride", (kh, kw))
    win = _windows(x.reshape(n, c, h, w), kh, kw, sh, sw)
    if layer.kind == "maxpool":
        np.max(win, axis=(4, 5), out=out)
    else:
        np.mean(win, axis=(4, 5), out=out)
    return out


def _fw_act(layer, x, out, a):
    k = layer.kind
    if k == "relu":
        np.maximum(x, 0, out=out)
    elif k == "tanh":
        np.tanh(x, out=out)
    else:  # 1 / (1 + exp(-x)) through tanh: no overflow for large |x|
        np.multiply(x, 0.5, out=out)
        np.tanh(out, out=out)
        out += 1
        out *= 0.5
    return out


def _fw_softmax(layer, x, out, a):
    m = x.max(axis=1, keepdims=True)
    np.subtract(x, m, out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


_FORWARD = {"dense": _fw_dense, "factored": _fw_factored, "sparse_factored": _fw_sparse,
            "conv": _fw_conv, "kernel_separated": _fw_kernel_sep, "maxpool": _fw_pool,
            "avgpool": _fw_pool, "relu": _fw_act, "tanh": _fw_act, "sigmoid": _fw_act,
            "softmax": _fw_softmax, "flatten": lambda la, x, out, a: x.reshape(x.shape[0], -1)}
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
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None
        self.output_shape = shape
        return self

    def copy(self) -> "CompressedModel":
        layers = [CLayer(la.kind, dict(la.arrays), dict(la.cfg)) for la in self.layers]
        return CompressedModel(layers, self.input_shape, self.classes)

    @property
    def dtype(self):
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
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def summary(self) -> List[dict]:
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


# -- files -------------------------------------------------------------------------------------

def model_meta(model: CompressedModel) -> dict:
    return {"input_shape": list(model.input_shape),
            "layers": [{"kind": la.kind, "cfg": la.cfg, "arrays": sorted(la.arrays)}
                       for la in model.layers]}


def save_model(model: CompressedModel, path) -> None:
    """Write ``model`` to ``path`` (uncompressed ``.npz``, atomic; members can be mmapped)."""
    arrays = {f"L{i}.{name}": np.ascontiguousarray(a) for i, la in enumerate(model.layers)
              for name, a in la.arrays.items()}
    classes = model.classes if model.classes.dtype.kind != "O" else model.classes.astype(str)
    arrays["classes"] = classes
    arrays["meta"] = np.array(json.dumps(model_meta(model)))
    arrays["sha256"] = np.array(array_digest(arrays))
    save_npz(path, arrays, kind=FILE_KIND)


def model_from_arrays(meta: dict, get, classes, path="file") -> CompressedModel:
    try:
        layers = [CLayer(d["kind"], {name: get(f"L{i}.{name}") for name in d["arrays"]},
                         d["cfg"]) for i, d in enumerate(meta["layers"])]
        return CompressedModel(layers, meta["input_shape"], classes)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ModelFileError(f"{path}: malformed compressed model ({exc})") from None


def load_model(path) -> CompressedModel:
    """Read a file written by :func:`save_model` (checksum verified)."""
    data = load_npz(path, FILE_KIND, required=("meta", "classes", "sha256"))
    verify_digest(data, path)
    try:
        meta = json.loads(str(data["meta"]))
    except ValueError as exc:
        raise ModelFileError(f"{path}: malformed meta ({exc})") from None
    return model_from_arrays(meta, lambda k: data[k], data["classes"], path)


def load_any_model(path) -> CompressedModel:
    """A compressed model, a tinydl classifier (``.npz``) or an ONNX file, as layers."""
    import os
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".onnx":
        from .onnx_io import import_onnx
        return import_onnx(path)
    try:
        return load_model(path)
    except ModelFileError as exc:
        if "expected a" not in str(exc):
            raise
    from ..nn.classifier import NetworkClassifier
    return from_network(NetworkClassifier.load(path))  # the file names its class
