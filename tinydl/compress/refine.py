"""Label-free refinement of a factored dense layer: match the original network's outputs.

A truncated (data-aware) SVD keeps the directions of a layer's outputs with the most energy,
which is not what the network's decision needs: at a small rank the outputs the *later*
layers are sensitive to are lost first.  :func:`refine_factored` adjusts the factors ``U``,
``V`` and the bias ``b`` by a few Adam steps on minibatches of unlabelled fitting inputs so that
the whole network's final outputs (logits) match the original network's on those inputs
(knowledge distillation with the original as the teacher).  No label is used, the later
layers are kept fixed, and the result is checked by the compiler against its budget on the
validation data like any other candidate.

Only tails of dense, factored, ReLU and flatten layers are differentiated here (the MLPs);
for any other tail :func:`refinable` is False and the compiler keeps the plain factors.
"""
from __future__ import annotations

import numpy as np

from .kernels import weight

__all__ = ["refinable", "refine_factored", "TAIL_KINDS"]

#: layer kinds a refinement can differentiate through
TAIL_KINDS = ("dense", "factored", "relu", "flatten")


def refinable(tail) -> bool:
    """Whether every layer of ``tail`` is one :func:`refine_factored` can differentiate."""
    return all(la.kind in TAIL_KINDS for la in tail)


def _tail_forward(tail, h):
    """Outputs of ``tail`` on ``h`` (n, d) and what the backward pass needs."""
    cache = []
    for la in tail:
        if la.kind == "relu":
            mask = h > 0
            h = h * mask
            cache.append(mask)
            continue
        if la.kind == "flatten":
            cache.append(None)
            continue
        a = la.arrays
        if la.kind == "dense":
            W = weight(a, "W", h.dtype)
            cache.append((W,))
            h = h @ W + a["b"]
        else:
            U, V = weight(a, "U", h.dtype), weight(a, "V", h.dtype)
            cache.append((U, V))
            h = (h @ U) @ V + a["b"]
    return h, cache


def _tail_backward(tail, cache, g):
    for la, c in zip(reversed(tail), reversed(cache)):
        if la.kind == "relu":
            g = g * c
        elif la.kind == "dense":
            g = g @ c[0].T
        elif la.kind == "factored":
            g = (g @ c[1].T) @ c[0].T
    return g


def refine_factored(U, V, b, x_fit, tail, target, steps: int = 100, batch: int = 256,
                    lr: float = 1e-3, seed: int = 0):
    """Adam on ``(U, V, b)`` so that ``tail(pre(x U V + b))`` matches ``target``.

    Parameters
    ----------
    U : ndarray of shape (m, r)
    V : ndarray of shape (r, n)
    b : ndarray of shape (n,)
        The factored layer's starting point (e.g. a data-aware SVD).
    x_fit : ndarray of shape (n_samples, m)
        The layer's inputs on the fitting data (unlabelled).
    tail : list of CLayer
        The layers after this one (kinds in :data:`TAIL_KINDS`), kept fixed.
    target : ndarray of shape (n_samples, n_outputs)
        The original network's final outputs on the same samples.
    steps : int
        Adam steps (one minibatch each).
    batch : int
        Samples per minibatch (drawn without replacement, epoch by epoch, from ``seed``).
    lr : float
        Adam's step size.
    seed : int

    Returns
    -------
    U, V, b : ndarrays in the input dtypes
        The refined factors; the loss (mean squared output error) can only have been
        followed downhill on minibatches, so the caller checks the result.

    Raises
    ------
    ValueError
        For a tail kind it cannot differentiate or mismatched shapes.
    """
    if not refinable(tail):
        raise ValueError(f"cannot refine through layer kinds "
                         f"{sorted({la.kind for la in tail} - set(TAIL_KINDS))}")
    x_fit = np.asarray(x_fit).reshape(len(x_fit), -1)
    target = np.asarray(target).reshape(len(target), -1)
    if len(x_fit) != len(target) or x_fit.shape[1] != U.shape[0]:
        raise ValueError(f"x_fit {x_fit.shape} and target {target.shape} do not fit U "
                         f"{U.shape}")
    dt = U.dtype
    params = [np.array(U, np.float32), np.array(V, np.float32), np.array(b, np.float32)]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    rng = np.random.default_rng(seed)
    n = len(x_fit)
    batch = max(1, min(int(batch), n))
    order, pos = rng.permutation(n), 0
    for t in range(1, int(steps) + 1):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        idx = np.sort(order[pos:pos + batch])
        pos += batch
        x = np.asarray(x_fit[idx], np.float32)
        Uc, Vc, bc = params
        z = x @ Uc
        out, cache = _tail_forward(tail, z @ Vc + bc)
        # d/d(out) of the mean over samples of the summed squared output error
        g = (2.0 / len(x)) * (out - target[idx])
        g = _tail_backward(tail, cache, g)  # d/d(layer output)
        gV = z.T @ g
        gb = g.sum(axis=0)
        gU = x.T @ (g @ Vc.T)
        for p, gp, a1, a2 in zip(params, (gU, gV, gb), m1, m2):
            a1 *= b1
            a1 += (1 - b1) * gp
            a2 *= b2
            a2 += (1 - b2) * gp * gp
            p -= lr * (a1 / (1 - b1 ** t)) / (np.sqrt(a2 / (1 - b2 ** t)) + eps)
    return tuple(p.astype(dt) for p in params)
