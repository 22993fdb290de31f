"""Convolution kernel separation (SparseSep section 4.4).

A convolution W of shape (F, C, kh, kw) (F filters over C channels, PyTorch's layout) becomes:

* **per-kernel separation** (:func:`separate_kernels`): each kh x kw kernel
  ``K = sum_i s_i u_i v_i^T`` (its SVD) keeps r terms, i.e. r pairs of a vertical (kh x 1) and a
  horizontal (1 x kw) filter. Per output value that is ``r (kh + kw)`` multiply-adds per
  (filter, channel) instead of ``kh kw``, so it pays when ``r < kh kw / (kh + kw)`` (``d / 2``
  for a square d x d kernel): for 3 x 3 only r = 1 pays.
* **cross-channel separation** (:func:`separate_cross_channel`, Jaderberg et al. 2014): C -> K
  vertical filters (K, C, kh, 1), then K -> F horizontal filters (F, K, 1, kw), found by one SVD
  of W arranged as a (C kh) x (F kw) matrix. It stores ``K (C kh + F kw)`` numbers instead of
  ``F C kh kw`` and pays when ``K < F C kh kw / (C kh + F kw)`` (``N C d / (C + N)`` for d x d).

Both return :class:`~tinydl.compress.model.CLayer` objects that replace the convolution (same
stride and padding, same output).
"""
from __future__ import annotations

from typing import List

import numpy as np

from .factorize import FactorizationCostError
from .model import CLayer, make_layer

__all__ = ["kernel_max_rank", "cross_channel_max_rank", "separate_kernels",
           "separate_cross_channel"]


def kernel_max_rank(kh: int, kw: int) -> int:
    """Largest per-kernel rank r with ``r (kh + kw) < kh kw`` (0 if none pays)."""
    return max(0, (kh * kw - 1) // (kh + kw))


def cross_channel_max_rank(f: int, c: int, kh: int, kw: int) -> int:
    """Largest K with ``K (C kh + F kw) < F C kh kw`` (0 if none pays)."""
    return max(0, (f * c * kh * kw - 1) // (c * kh + f * kw))


def _check_W(W):
    W = np.asarray(W)
    if W.ndim != 4:
        raise ValueError(f"a convolution weight must be (F, C, kh, kw), got shape {W.shape}")
    bad = W.size - int(np.count_nonzero(np.isfinite(W)))
    if bad:
        raise ValueError(f"convolution weight {W.shape} has {bad} NaN/Inf value(s)")
    return W


def separate_kernels(W, b, rank: int, stride=(1, 1), padding=(0, 0)) -> CLayer:
    """Per-kernel separation into ``rank`` rank-1 (vertical, horizontal) pairs.

    Parameters
    ----------
    W : ndarray of shape (F, C, kh, kw)
    b : ndarray of shape (F,)
    rank : int
    stride, padding : (int, int)

    Returns
    -------
    CLayer
        A ``kernel_separated`` layer: ``v`` (C, F*rank, kh), ``h`` (F, C*rank, kw), ``b``.

    Raises
    ------
    FactorizationCostError
        If ``rank (kh + kw) >= kh kw``.
    """
    W = _check_W(W)
    f, c, kh, kw = W.shape
    r = int(rank)
    if r < 1:
        raise ValueError(f"rank must be >= 1, got {r}")
    if r * (kh + kw) >= kh * kw:
        raise FactorizationCostError(
            f"rank {r} per {kh}x{kw} kernel would cost {r * (kh + kw)} multiply-adds per output "
            f"and kernel, not fewer than the original {kh * kw}; ranks below "
            f"{kh * kw / (kh + kw):.2f} pay")
    U, s, Vt = np.linalg.svd(W.astype(np.float64))  # batched over (F, C)
    root = np.sqrt(s[..., :r])  # split each singular value evenly between the two filters
    vert = U[..., :, :r] * root[..., None, :]  # (F, C, kh, r)
    horz = Vt[..., :r, :] * root[..., :, None]  # (F, C, r, kw)
    v = vert.transpose(1, 0, 3, 2).reshape(c, f * r, kh)  # v[c, f*r + i]
    h = horz.reshape(f, c * r, kw)  # h[f, c*r + i]
    return make_layer("kernel_separated", v=v.astype(W.dtype), h=h.astype(W.dtype),
                      b=np.asarray(b, W.dtype).copy(), stride=list(stride),
                      padding=list(padding))


def separate_cross_channel(W, b, rank: int, stride=(1, 1), padding=(0, 0)) -> List[CLayer]:
    """Cross-channel separation: C -> ``rank`` vertical filters, ``rank`` -> F horizontal.

    Parameters
    ----------
    W : ndarray of shape (F, C, kh, kw)
    b : ndarray of shape (F,)
    rank : int
        K, the number of intermediate channels.
    stride, padding : (int, int)

    Returns
    -------
    list of CLayer
        Two ``conv`` layers: (K, C, kh, 1) with stride (sh, 1) and padding (ph, 0), then
        (F, K, 1, kw) with stride (1, sw), padding (0, pw) and the bias.

    Raises
    ------
    FactorizationCostError
        If ``K (C kh + F kw) >= F C kh kw``.
    """
    W = _check_W(W)
    f, c, kh, kw = W.shape
    K = int(rank)
    if K < 1:
        raise ValueError(f"rank must be >= 1, got {K}")
    cost, orig = K * (c * kh + f * kw), f * c * kh * kw
    if cost >= orig:
        raise FactorizationCostError(
            f"rank {K} would cost {cost:,} parameters, not fewer than the original {orig:,} "
            f"({f}x{c}x{kh}x{kw}); ranks below {orig / (c * kh + f * kw):.1f} pay")
    M = W.astype(np.float64).transpose(1, 2, 0, 3).reshape(c * kh, f * kw)  # M[(c,i),(f,j)]
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    root = np.sqrt(s[:K])
    A = U[:, :K] * root  # (C kh, K)
    Bt = Vt[:K] * root[:, None]  # (K, F kw)
    vert = A.T.reshape(K, c, kh)[..., None]  # (K, C, kh, 1)
    horz = Bt.reshape(K, f, kw).transpose(1, 0, 2)[:, :, None, :]  # (F, K, 1, kw)
    sh, sw = stride
    ph, pw = padding
    return [make_layer("conv", W=vert.astype(W.dtype), b=np.zeros(K, W.dtype),
                       stride=[sh, 1], padding=[ph, 0]),
            make_layer("conv", W=horz.astype(W.dtype), b=np.asarray(b, W.dtype).copy(),
                       stride=[1, sw], padding=[0, pw])]


def reduce_max_rank(f: int, c: int, kh: int, kw: int) -> int:
    """Largest K with ``K (C kh kw + F) < F C kh kw`` (0 if none pays)."""
    return max(0, (f * c * kh * kw - 1) // (c * kh * kw + f))


def conv_output_gram(W, x, stride=(1, 1), padding=(0, 0), batch: int = 64) -> np.ndarray:
    """``Y^T Y`` (F, F) of the convolution's outputs (bias excluded) on the inputs ``x``.

    Parameters
    ----------
    W : ndarray of shape (F, C, kh, kw)
    x : ndarray of shape (n_samples, C, H, W)
        The layer's inputs; every output position of every sample is one row of Y.
    batch : int
        Samples convolved at a time (the Gram is summed, so memory stays small).
    """
    W = _check_W(W)
    x = np.asarray(x)
    f = W.shape[0]
    layer = make_layer("conv", W=np.asarray(W, np.float32), b=np.zeros(f, np.float32),
                       stride=list(stride), padding=list(padding))
    layer.build(x.shape[1:])
    G = np.zeros((f, f))
    for s in range(0, len(x), batch):
        xb = np.asarray(x[s:s + batch], np.float32)
        out = np.empty((len(xb),) + layer.out_shape, np.float32)
        Y = layer.forward(xb, out).transpose(0, 2, 3, 1).reshape(-1, f).astype(np.float64)
        G += Y.T @ Y
    return G


def reduce_channels(W, b, rank: int, gram, stride=(1, 1), padding=(0, 0)) -> List[CLayer]:
    """Data-aware channel reduction: the convolution's outputs projected on their top ``rank``
    principal directions (of ``gram``, from :func:`conv_output_gram` on the validation inputs).

    The layer W (F, C, kh, kw) becomes a (K, C, kh, kw) convolution with W's filters mixed by
    the K directions, then a 1 x 1 (F, K, 1, 1) convolution back to F channels and the bias:
    the data-aware SVD of W read as a (C kh kw) x F matrix, whose rows are the patches.

    Returns
    -------
    list of CLayer
        Two ``conv`` layers.

    Raises
    ------
    FactorizationCostError
        If ``K (C kh kw + F) >= F C kh kw``.
    """
    from .factorize import DenseFactorizer
    W = _check_W(W)
    f, c, kh, kw = W.shape
    K = int(rank)
    Wmat = W.reshape(f, -1).T  # (C kh kw, F): the patch rows times Wmat are the outputs
    U, V = DenseFactorizer(Wmat, gram=gram).factors(K)
    first = np.ascontiguousarray(U.T).reshape(K, c, kh, kw)
    second = np.ascontiguousarray(V.T)[:, :, None, None]  # (F, K, 1, 1)
    return [make_layer("conv", W=first.astype(W.dtype), b=np.zeros(K, W.dtype),
                       stride=list(stride), padding=list(padding)),
            make_layer("conv", W=second.astype(W.dtype), b=np.asarray(b, W.dtype).copy(),
                       stride=[1, 1], padding=[0, 0])]
