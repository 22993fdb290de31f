"""The forward kernels of the compressed model's layers (NumPy, into preallocated outputs).

Each ``_fw_<kind>(layer, x, out, arrays)`` writes ``layer``'s output for the batch ``x`` into
``out`` (or returns a view of ``x`` where the layer is a reshape); :data:`FORWARD` maps layer
kinds to them.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["FORWARD", "sparse_chunk", "conv_geom", "image_shape", "weight", "float_arrays",
           "SCALE_SUFFIX", "shift_by_columns"]

#: an int8 weight array ``name`` carries its per-output-channel scales as ``name + SCALE_SUFFIX``
SCALE_SUFFIX = "_scale"


def weight(a, name, dtype, indptr=None):
    """The weight ``a[name]`` in ``dtype``: as stored, or dequantized from int8.

    An int8 array ``q`` with scales ``s = a[name + "_scale"]`` holds ``q * s`` with one scale
    per output channel: per column of a 2-D (rows, cols) matrix, per filter (first axis) of a
    convolution, and per output column (``indptr``'s runs) of a sparse ``data`` vector.  The
    dequantized copy is a temporary of the array's size in ``dtype``.
    """
    w = a[name]
    if w.dtype != np.int8:
        return w
    s = np.asarray(a[name + SCALE_SUFFIX], dtype)
    out = w.astype(dtype)
    if w.ndim == 2:
        out *= s
    elif w.ndim == 4:
        out *= s[:, None, None, None]
    elif indptr is not None:
        out *= np.repeat(s, np.diff(indptr))
    else:
        raise ValueError(f"int8 array {name!r} of shape {w.shape}: no output-channel axis")
    return out


def image_shape(layer, s):
    """``(C, H, W)`` of a convolution or pooling layer's input of sample shape ``s``."""
    if len(s) != 3:
        raise ValueError(f"{layer.kind} layer needs (channels, height, width) input, got {s}")
    return s


def conv_geom(layer, s):
    """Geometry of a convolution on input of sample shape ``s``:
    ``(C, H, W, F, kh, kw, sh, sw, ph, pw, Ho, Wo)``."""
    c, h, w = image_shape(layer, s)
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


def _windows(xp, kh, kw, sh, sw):
    """Strided view (n, C, Ho, Wo, kh, kw) of the windows of ``xp`` (n, C, H, W)."""
    n, c, h, w = xp.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    s0, s1, s2, s3 = xp.strides
    return as_strided(xp, (n, c, ho, wo, kh, kw), (s0, s1, s2 * sh, s3 * sw, s2, s3),
                      writeable=False)


def float_arrays(a, dtype):
    """``a`` with every int8 weight dequantized to ``dtype`` and the scales dropped (for
    consumers, such as the ONNX export, that take float weights)."""
    out = {}
    for name, w in a.items():
        if name.endswith(SCALE_SUFFIX) and name[:-len(SCALE_SUFFIX)] in a:
            continue
        out[name] = weight(a, name, dtype, a.get("indptr")) if w.dtype == np.int8 else w
    return out


# -- forward ------------------------------------------------------------------------------------
def _fw_dense(layer, x, out, a):
    n = x.shape[0]
    np.matmul(x.reshape(n, -1), weight(a, "W", x.dtype), out=out)
    out += a["b"]
    return out


def _fw_factored(layer, x, out, a):
    n = x.shape[0]
    z = x.reshape(n, -1) @ weight(a, "U", x.dtype)
    np.matmul(z, weight(a, "V", x.dtype), out=out)
    out += a["b"]
    return out


#: bytes of gathered products the sparse product may hold at once (rows are chunked to fit)
SPARSE_CHUNK_BYTES = 1 << 20


def sparse_chunk(n, nnz, isz=4):
    """Rows per step of the sparse product, so that its temporary of ``n x nnz`` stays small."""
    return max(1, min(n, SPARSE_CHUNK_BYTES // max(1, nnz * isz)))


def _fw_sparse(layer, x, out, a):
    n = x.shape[0]
    z = x.reshape(n, -1) @ weight(a, "B", x.dtype)
    indptr = a["indptr"]
    data = weight(a, "data", x.dtype, indptr)
    idx = np.asarray(a["indices"], np.intp)
    # the sparse product z S, every output column in one pass: gather the atoms each column
    # uses, scale them, and sum each column's run (np.add.reduceat); rows go in chunks so the
    # gathered products stay under SPARSE_CHUNK_BYTES
    starts = indptr[:-1]
    nonempty = indptr[1:] > starts
    if not nonempty.all():  # reduceat would copy one element for an empty run: zero those
        out.fill(0)
    step = sparse_chunk(n, data.size, z.dtype.itemsize)
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


#: batches up to this size take the shifted-product path of a 1-D convolution
#: (:func:`shifted_conv`): no patch matrix, ``kw`` small products on strided views
SHIFT_MAX_BATCH = 8


def shifted_conv(layer, n, geom=None):
    """Whether :func:`_fw_conv` computes a batch of ``n`` by shifted products.

    A 1-D convolution (one input row, kernel height 1) on a small batch: the im2col patch
    matrix it would copy is ``kw`` times the input, and at batch 1 that copy, not the
    product, is most of the time.  Instead every tap of every filter meets the whole padded
    input in **one** product ``P = T x`` (T the (kw F, C) taps, tap-major), and the output
    is the sum over taps ``j`` of ``P``'s ``j``-th block shifted by ``j`` (one reduction over
    a strided view): two NumPy calls whatever the kernel width, where a product per tap
    cost ``kw`` calls, and on a narrow layer (a separated or reduced convolution) those
    calls' overhead was most of its time.
    """
    c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = geom or conv_geom(layer, layer.in_shape)
    return n <= SHIFT_MAX_BATCH and h == 1 and kh == 1 and ph == 0


def _taps(layer, a, dtype):
    """The convolution's taps as a (kw F, C) matrix, tap-major; kept on the layer while its
    weight array is the same object (a model's own arrays), rebuilt for arrays handed in
    (the runtime's, mapped one layer at a time, are not held past the call)."""
    Wst = a["W"]
    kept = layer.__dict__.get("_taps")
    if kept is not None and kept[0] is Wst and kept[1].dtype == dtype:
        return kept[1]
    W = weight(a, "W", dtype)
    f, c, _, kw = W.shape
    taps = np.ascontiguousarray(W[:, :, 0, :].transpose(2, 0, 1)).reshape(kw * f, c)
    if a is layer.arrays:
        layer._taps = (Wst, taps)
    return taps


def shift_by_columns(geom):
    """Whether the small-batch 1-D path copies the input's windows (``C kw`` rows, then one
    product with W as it is stored) rather than summing shifted tap products (``F kw``
    rows): each copies or adds ``kw`` values per output position and input (columns) or
    output (taps) channel, so the narrower side decides; a separated layer's narrow input
    (cross-channel: K channels into F) takes the columns, its narrow output (channel
    reduction: C into K) the taps."""
    c, f, kw = geom[0], geom[3], geom[5]
    return kw > 1 and c < f


def _fw_conv_shifted(layer, x, out, a, geom):
    n = x.shape[0]
    c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = geom
    y = out.reshape(n, f, wo)
    if shift_by_columns(geom):
        xp = _pad(x.reshape(n, c, 1, w), 0, pw)
        s0, s1, _, s3 = xp.strides
        cols = np.empty((n, c, kw, wo), x.dtype)
        np.copyto(cols, np.ndarray((n, c, kw, wo), xp.dtype, xp, 0, (s0, s1, s3, sw * s3)))
        del xp
        np.matmul(weight(a, "W", x.dtype).reshape(f, c * kw), cols.reshape(n, c * kw, wo),
                  out=y)
        del cols
        out += a["b"][:, None, None]
        return out
    taps = _taps(layer, a, x.dtype)
    xp = _pad(x.reshape(n, c, 1, w), 0, pw)[:, :, 0, :]  # (n, C, Wp)
    if kw == 1:
        np.matmul(taps, xp[:, :, 0:sw * (wo - 1) + 1:sw], out=y)
    else:
        P = np.matmul(taps, xp)  # (n, kw F, Wp): P[i, j F + g, t] = sum_c W[g, c, j] x[c, t]
        s0, s1, s2 = P.strides
        # y[i, g, t] = sum_j P[i, j F + g, j + sw t]
        np.sum(np.ndarray((n, kw, f, wo), P.dtype, P, 0, (s0, f * s1 + s2, s1, sw * s2)),
               axis=1, out=y)
        del P
    del xp, taps  # the bias add below holds NumPy's buffer (up to 8192 elements) instead
    out += a["b"][:, None, None]
    return out


def _fw_conv(layer, x, out, a):
    n = x.shape[0]
    geom = layer.__dict__.get("_geom") or conv_geom(layer, layer.in_shape)
    if shifted_conv(layer, n, geom):
        return _fw_conv_shifted(layer, x, out, a, geom)
    c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = geom
    xp = _pad(x.reshape(n, c, h, w), ph, pw)
    cols = np.empty((n, ho, wo, c, kh, kw), x.dtype)
    np.copyto(cols, _windows(xp, kh, kw, sh, sw).transpose(0, 2, 3, 1, 4, 5))
    del xp
    ym = cols.reshape(n * ho * wo, -1) @ weight(a, "W", x.dtype).reshape(f, -1).T
    del cols
    np.copyto(out, ym.reshape(n, ho, wo, f).transpose(0, 3, 1, 2))
    out += a["b"][:, None, None]
    return out


def _fw_kernel_sep(layer, x, out, a):
    n = x.shape[0]
    c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = conv_geom(layer, layer.in_shape)
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
    ho, wo = out.shape[2], out.shape[3]
    x4 = x.reshape(n, c, h, w)
    # one strided slice per window offset, reduced into ``out`` in place: kh * kw cheap
    # passes instead of a reduction over a 6-D strided view (10-20x slower at batch 1)
    first = True
    for i in range(kh):
        for j in range(kw):
            v = x4[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            if first:
                np.copyto(out, v)
                first = False
            elif layer.kind == "maxpool":
                np.maximum(out, v, out=out)
            else:
                out += v
    if layer.kind != "maxpool":
        out *= 1.0 / (kh * kw)
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


FORWARD = {"dense": _fw_dense, "factored": _fw_factored, "sparse_factored": _fw_sparse,
            "conv": _fw_conv, "kernel_separated": _fw_kernel_sep, "maxpool": _fw_pool,
            "avgpool": _fw_pool, "relu": _fw_act, "tanh": _fw_act, "sigmoid": _fw_act,
            "softmax": _fw_softmax, "flatten": lambda la, x, out, a: x.reshape(x.shape[0], -1)}
