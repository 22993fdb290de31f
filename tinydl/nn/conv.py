"""Convolution and pooling layers (channels first, as in PyTorch): :class:`Conv2D`,
:class:`Conv1D`, :class:`MaxPool2D`, :class:`MaxPool1D`.  They follow the life cycle of
:mod:`tinydl.nn.layers`; a convolution's products are one GEMM over im2col windows (strided
views, no copy until the product), run by the layer's backend.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .layers import Layer, fill_uniform

__all__ = ["Conv2D", "Conv1D", "MaxPool2D", "MaxPool1D"]


def _windows(xp, kh, kw, stride):
    """Strided view (n, C, Ho, Wo, kh, kw) of the windows of ``xp`` (n, C, H, W)."""
    n, c, h, w = xp.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    s0, s1, s2, s3 = xp.strides
    return as_strided(xp, (n, c, ho, wo, kh, kw),
                      (s0, s1, s2 * stride, s3 * stride, s2, s3), writeable=False)


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as ``torch.nn.Conv2d``) by im2col and one GEMM.

    Input (C, H, W), output (F, Ho, Wo); weight (F, C, kh, kw), bias (F,).  Caches the
    im2col matrix (n*Ho*Wo, C*kh*kw) for ``dW = dy.T @ cols``.  The weight gradient can be
    deferred only without an input gradient (a first layer): ``d(cols)`` reuses ``cols``.
    """

    kind = "conv2d"
    can_defer_weight_grad = True
    may_return_input = False

    def __init__(self, filters: int, kernel_size, stride: int = 1, padding: int = 0):
        super().__init__()
        self.filters = int(filters)
        ks = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        self.kernel_size = (int(ks[0]), int(ks[1]))
        self.stride, self.padding = int(stride), int(padding)

    def config(self):
        return {"filters": self.filters, "kernel_size": list(self.kernel_size),
                "stride": self.stride, "padding": self.padding}

    def _geometry(self, in_shape):
        """(C, H, W) of the input image and the (rows, columns) padding."""
        if len(in_shape) != 3:
            raise ValueError(f"conv2d needs input (channels, height, width), got {in_shape}")
        return tuple(in_shape), (self.padding, self.padding)

    def build(self, in_shape):
        self.in_shape = tuple(int(s) for s in in_shape)
        (c, h, w), (ph, pw) = self._geometry(self.in_shape)
        kh, kw = self.kernel_size
        hp, wp = h + 2 * ph, w + 2 * pw
        if hp < kh or wp < kw or self.stride < 1:
            raise ValueError(f"{self.kind}: kernel {self.kernel_size} (stride {self.stride}) "
                             f"does not fit the padded input {(hp, wp)} (input {self.in_shape})")
        self.c, self.h, self.w, self.ph, self.pw = c, h, w, ph, pw
        self.ho, self.wo = (hp - kh) // self.stride + 1, (wp - kw) // self.stride + 1
        self.out_shape = self._out_shape()
        return self.out_shape

    def _out_shape(self):
        return (self.filters, self.ho, self.wo)

    def param_shapes(self):
        return [("W", (self.filters, self.c) + self.kernel_size), ("b", (self.filters,))]

    def init_params(self, rng):
        fan_in = self.c * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / np.sqrt(fan_in)  # torch's default (kaiming_uniform with a=sqrt(5))
        fill_uniform(self.p["W"], bound, rng)
        fill_uniform(self.p["b"], bound, rng)

    def prepare(self, batch, dtype, rng=None):
        kh, kw = self.kernel_size
        rows, ckk = batch * self.ho * self.wo, self.c * kh * kw
        # backward reuses "ym" for dy in (n, Ho, Wo, F) order, "cols" for d(cols) (the cached
        # cols are dead once dW is computed) and "xp" for the padded input gradient
        self.ws = {"cols": np.empty((rows, ckk), dtype),
                   "ym": np.empty((rows, self.filters), dtype),
                   "y": np.empty((batch, self.filters, self.ho, self.wo), dtype),
                   "xp": np.zeros((batch, self.c, self.h + 2 * self.ph, self.w + 2 * self.pw),
                                  dtype)}
        if self.ph or self.pw:  # the input gradient, cut out of the padded one
            self.ws["dx"] = np.empty((batch, self.c, self.h, self.w), dtype)
        return self.ws

    def forward(self, x, train=False):
        n = x.shape[0]
        kh, kw = self.kernel_size
        ph, pw = self.ph, self.pw
        xp = self.ws["xp"][:n]
        if ph or pw:
            xp.fill(0)  # the border may hold the last backward's gradients
        xp[:, :, ph:ph + self.h, pw:pw + self.w] = x.reshape((n, self.c, self.h, self.w))
        rows = n * self.ho * self.wo
        cols = self.ws["cols"][:rows]
        np.copyto(cols.reshape(n, self.ho, self.wo, self.c, kh, kw),
                  _windows(xp, kh, kw, self.stride).transpose(0, 2, 3, 1, 4, 5))
        ym = self.ws["ym"][:rows]
        self.backend.matmul(cols, self.p["W"].reshape(self.filters, -1).T, out=ym)
        y = self.ws["y"][:n]
        np.copyto(y, ym.reshape(n, self.ho, self.wo, self.filters).transpose(0, 3, 1, 2))
        y += self.p["b"][:, None, None]
        self._n = n
        return y.reshape((n,) + self.out_shape)

    def backward(self, dy, need_dx=True, defer_weight_grad=False):
        """``defer_weight_grad`` (only with ``need_dx=False``): leave ``dW = dy.T @ cols``
        to the caller (:meth:`pending_weight_grad`)."""
        n = self._n
        kh, kw = self.kernel_size
        s, ph, pw = self.stride, self.ph, self.pw
        rows = n * self.ho * self.wo
        dy4 = dy.reshape(n, self.filters, self.ho, self.wo)
        dym = self.ws["ym"][:rows]
        np.copyto(dym.reshape(n, self.ho, self.wo, self.filters), dy4.transpose(0, 2, 3, 1))
        cols = self.ws["cols"][:rows]
        be = self.backend
        if defer_weight_grad:
            if need_dx:
                raise ValueError(f"{self.kind}: the weight gradient can be deferred only "
                                 "without an input gradient (d(cols) overwrites cols)")
            self._pending = (dym.T, cols)
        else:
            be.matmul(dym.T, cols, out=self.g["W"].reshape(self.filters, -1))
        np.sum(dy4, axis=(0, 2, 3), out=self.g["b"])
        if not need_dx:
            return None
        be.matmul(dym, self.p["W"].reshape(self.filters, -1), out=cols)  # d(cols)
        dc = cols.reshape(n, self.ho, self.wo, self.c, kh, kw)
        # col2im: sum every window's gradient back onto the (padded) input
        dxp = self.ws["xp"][:n]
        dxp.fill(0)
        for i in range(kh):
            for j in range(kw):
                dxp[:, :, i:i + s * (self.ho - 1) + 1:s, j:j + s * (self.wo - 1) + 1:s] += \
                    dc[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        dx = dxp[:, :, ph:ph + self.h, pw:pw + self.w]
        if ph or pw:  # a contiguous gradient for the layer before
            out = self.ws["dx"][:n]
            np.copyto(out, dx)
            dx = out
        return dx.reshape((n,) + self.in_shape)


class Conv1D(Conv2D):
    """1-D convolution (as ``torch.nn.Conv1d``): input (C, L), weight (F, C, k), output
    (F, Lo).  Runs as a :class:`Conv2D` with a (1, k) kernel over a (C, 1, L) image."""

    kind = "conv1d"

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(filters, (1, int(np.ravel(kernel_size)[-1])), stride, padding)

    def config(self):
        return {"filters": self.filters, "kernel_size": self.kernel_size[1],
                "stride": self.stride, "padding": self.padding}

    def _geometry(self, in_shape):
        if len(in_shape) != 2:
            raise ValueError(f"conv1d needs input (channels, length), got {in_shape}")
        return (in_shape[0], 1, in_shape[1]), (0, self.padding)

    def _out_shape(self):
        return (self.filters, self.wo)

    def param_shapes(self):
        return [("W", (self.filters, self.c, self.kernel_size[1])), ("b", (self.filters,))]


class MaxPool2D(Layer):
    """Max pooling over (kh, kw) windows with stride ``stride`` (default: the window), no
    padding, as ``torch.nn.MaxPool2d``.  Caches the arg-max of each window."""

    kind = "maxpool2d"
    may_return_input = False

    def __init__(self, pool_size, stride: Optional[int] = None):
        super().__init__()
        ps = (pool_size, pool_size) if np.isscalar(pool_size) else pool_size
        self.pool_size = (int(ps[0]), int(ps[1]))
        self.stride = int(stride) if stride is not None else self.pool_size[1]

    def config(self):
        return {"pool_size": list(self.pool_size), "stride": self.stride}

    def _img_shape(self, in_shape):
        return tuple(in_shape)

    def build(self, in_shape):
        self.in_shape = tuple(int(s) for s in in_shape)
        self.c, self.h, self.w = self._img_shape(self.in_shape)
        kh, kw = self.pool_size
        if self.h < kh or self.w < kw:
            raise ValueError(f"{self.kind}: window {self.pool_size} is larger than the input "
                             f"{self.in_shape}")
        self.ho, self.wo = (self.h - kh) // self.stride + 1, (self.w - kw) // self.stride + 1
        self.out_shape = self._out_shape()
        return self.out_shape

    def _out_shape(self):
        return (self.c, self.ho, self.wo)

    def prepare(self, batch, dtype, rng=None):
        kk = self.pool_size[0] * self.pool_size[1]
        win = (batch, self.c, self.ho, self.wo, kk)
        self.ws = {"win": np.empty(win, dtype), "arg": np.empty(win[:4], np.intp),
                   "y": np.empty(win[:4], dtype),
                   "dx": np.empty((batch, self.c, self.h, self.w), dtype)}
        return self.ws

    def forward(self, x, train=False):
        n = x.shape[0]
        kh, kw = self.pool_size
        x4 = x.reshape(n, self.c, self.h, self.w)
        win = self.ws["win"][:n]
        np.copyto(win.reshape(n, self.c, self.ho, self.wo, kh, kw),
                  _windows(x4, kh, kw, self.stride))
        y = self.ws["y"][:n]
        np.max(win, axis=4, out=y)
        if train:
            np.argmax(win, axis=4, out=self.ws["arg"][:n])
        self._n = n
        return y.reshape((n,) + self.out_shape)

    def backward(self, dy, need_dx=True):
        n = self._n
        kh, kw = self.pool_size
        s = self.stride
        win = self.ws["win"][:n]  # dead after forward: it holds the window gradients now
        win.fill(0)
        np.put_along_axis(win, self.ws["arg"][:n, ..., None],
                          dy.reshape(n, self.c, self.ho, self.wo, 1), axis=4)
        dw = win.reshape(n, self.c, self.ho, self.wo, kh, kw)
        dx = self.ws["dx"][:n]
        dx.fill(0)
        for i in range(kh):
            for j in range(kw):
                dx[:, :, i:i + s * (self.ho - 1) + 1:s, j:j + s * (self.wo - 1) + 1:s] += \
                    dw[..., i, j]
        return dx.reshape((n,) + self.in_shape)


class MaxPool1D(MaxPool2D):
    """Max pooling over 1-D signals (C, L), as ``torch.nn.MaxPool1d``."""

    kind = "maxpool1d"

    def __init__(self, pool_size: int, stride: Optional[int] = None):
        super().__init__((1, int(np.ravel(pool_size)[-1])), stride)

    def config(self):
        return {"pool_size": self.pool_size[1], "stride": self.stride}

    def _img_shape(self, in_shape):
        if len(in_shape) != 2:
            raise ValueError(f"maxpool1d needs input (channels, length), got {in_shape}")
        return (in_shape[0], 1, in_shape[1])

    def _out_shape(self):
        return (self.c, self.wo)
