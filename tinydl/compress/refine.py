"""Label-free refinement of a factored dense layer: match the original network's outputs.

A truncated (data-aware) SVD keeps the directions of a layer's outputs with the most energy,
which is not what the network's decision needs: at a small rank the outputs the *later*
layers are sensitive to are lost first.  :func:`refine_factored` adjusts the factors ``U``,
``V`` and the bias ``b`` by a few Adam steps on minibatches of unlabelled fitting inputs so that
the whole network's final outputs (logits) match the original network's on those inputs
(knowledge distillation with the original as the teacher).  No label is used, the later
layers are kept fixed, and the result is checked by the compiler against its budget on the
validation data like any other candidate.  ``fixed`` names arrays left as they are (the
compiler keeps a factored layer's input-side ``U`` where the inputs outnumber the fitting
rows: there its gradient only spans those rows, and refining it overfits them).

Only tails of dense, factored, ReLU and flatten layers are differentiated here (the MLPs);
for any other tail :func:`refinable` is False and the compiler keeps the plain factors.
"""
from __future__ import annotations

import numpy as np

from .kernels import weight
from .model import make_layer

__all__ = ["refinable", "refine_factored", "refine_layers", "TAIL_KINDS", "REFINED_KINDS"]

#: layer kinds a refinement can differentiate through (the refined layers themselves:
#: ``factored`` and ``conv``)
TAIL_KINDS = ("dense", "factored", "sparse_factored", "relu", "flatten", "conv", "maxpool")
REFINED_KINDS = ("factored", "conv")


def refinable(tail) -> bool:
    """Whether every layer of ``tail`` is one :func:`refine_layers` can differentiate."""
    return all(la.kind in TAIL_KINDS for la in tail)


def _sparse_dense(a, dtype):
    """The sparse factor S (r, n_out) of a ``sparse_factored`` layer as a dense matrix."""
    indptr = a["indptr"]
    S = np.zeros((a["B"].shape[1], len(indptr) - 1), dtype)
    cols = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    np.add.at(S, (np.asarray(a["indices"], np.intp), cols), weight(a, "data", dtype, indptr))
    return S


def _conv_cols(la, x):
    """Padded input shape, the (n Ho Wo, C kh kw) patch rows and the geometry of a conv."""
    W = la.arrays["W"]
    f, c, kh, kw = W.shape
    sh, sw = la.cfg.get("stride", (1, 1))
    ph, pw = la.cfg.get("padding", (0, 0))
    n = x.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    cols = np.empty((n, ho, wo, c, kh, kw), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[..., i, j] = xp[:, :, i:i + sh * (ho - 1) + 1:sh,
                                 j:j + sw * (wo - 1) + 1:sw].transpose(0, 2, 3, 1)
    return xp.shape, cols.reshape(n * ho * wo, -1), (f, c, kh, kw, sh, sw, ph, pw, ho, wo)


def _forward(layers, h):
    """Outputs of ``layers`` on ``h`` (n, ...) and what the backward pass needs."""
    cache = []
    for la in layers:
        a, k, n = la.arrays, la.kind, h.shape[0]
        if k == "relu":
            mask = h > 0
            h = h * mask
            cache.append(mask)
        elif k == "flatten":
            cache.append(h.shape)
            h = h.reshape(n, -1)
        elif k == "dense":
            x2, W = h.reshape(n, -1), weight(a, "W", h.dtype)
            cache.append((h.shape, x2, W))
            h = x2 @ W + a["b"]
        elif k == "factored":
            x2, U, V = h.reshape(n, -1), weight(a, "U", h.dtype), weight(a, "V", h.dtype)
            z = x2 @ U
            cache.append((h.shape, x2, z, U, V))
            h = z @ V + a["b"]
        elif k == "sparse_factored":
            x2, B = h.reshape(n, -1), weight(a, "B", h.dtype)
            S = _sparse_dense(a, h.dtype)
            cache.append((h.shape, B, S))
            h = (x2 @ B) @ S + a["b"]
        elif k == "conv":
            shape, cols, g = _conv_cols(la, h)
            Wm = weight(a, "W", h.dtype).reshape(g[0], -1)
            cache.append((h.shape, shape, cols, Wm, g))
            h = ((cols @ Wm.T).reshape(n, g[8], g[9], g[0]).transpose(0, 3, 1, 2)
                 + a["b"][:, None, None])
        elif k == "maxpool":
            kh, kw = la.cfg["pool_size"]
            sh, sw = la.cfg.get("stride", (kh, kw))
            ho, wo = (h.shape[2] - kh) // sh + 1, (h.shape[3] - kw) // sw + 1
            views = [(i, j, h[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw])
                     for i in range(kh) for j in range(kw)]
            out = np.max([v for _, _, v in views], axis=0)
            cache.append((h.shape, [(i, j, v == out) for i, j, v in views], (sh, sw, ho, wo)))
            h = out
        else:
            raise ValueError(f"cannot differentiate a {k} layer")
    return h, cache


def _backward(layers, cache, g, grads=None):
    """Gradient of the loss at the input of ``layers`` from ``g`` at their output; with
    ``grads`` (a list), also every layer's parameter gradients, as dicts, in order."""
    for idx in range(len(layers) - 1, -1, -1):
        c, k = cache[idx], layers[idx].kind
        pg = {}
        if k == "relu":
            g = g * c
        elif k == "flatten":
            g = g.reshape(c)
        elif k == "dense":
            pg = {"W": c[1].T @ g, "b": g.sum(axis=0)}
            g = (g @ c[2].T).reshape(c[0])
        elif k == "factored":
            shape, x2, z, U, V = c
            gz = g @ V.T
            pg = {"U": x2.T @ gz, "V": z.T @ g, "b": g.sum(axis=0)}
            g = (gz @ U.T).reshape(shape)
        elif k == "sparse_factored":
            g = ((g @ c[2].T) @ c[1].T).reshape(c[0])
        elif k == "conv":
            shape, pshape, cols, Wm, (f, ch, kh, kw, sh, sw, ph, pw, ho, wo) = c
            g2 = g.transpose(0, 2, 3, 1).reshape(-1, f)
            pg = {"W": (g2.T @ cols).reshape(f, ch, kh, kw), "b": g2.sum(axis=0)}
            gc = (g2 @ Wm).reshape(shape[0], ho, wo, ch, kh, kw)
            gx = np.zeros(pshape, g.dtype)
            for i in range(kh):
                for j in range(kw):
                    gx[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += \
                        gc[..., i, j].transpose(0, 3, 1, 2)
            g = gx[:, :, ph:pshape[2] - ph, pw:pshape[3] - pw]
        else:  # maxpool: to every position that held its window's maximum
            shape, masks, (sh, sw, ho, wo) = c
            gx = np.zeros(shape, g.dtype)
            for i, j, mask in masks:
                gx[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += g * mask
            g = gx
        if grads is not None:
            grads.insert(0, pg)
    return g


def _fit_loss(layers, x_fit, target, chunk=256):
    """Mean over every fitting sample of the summed squared output error (in chunks)."""
    tot = 0.0
    for i in range(0, len(x_fit), chunk):
        out, _ = _forward(layers, np.asarray(x_fit[i:i + chunk], np.float32))
        tot += float(np.sum((out.reshape(len(out), -1) - target[i:i + chunk]) ** 2))
    return tot / max(len(x_fit), 1)


def refine_layers(new, x_fit, tail, target, steps: int = 100, batch: int = 256,
                  lr: float = 1e-3, seed: int = 0, keep_best: bool = True, fixed=()):
    """Adam on the arrays of ``new`` so that ``tail(new(x))`` matches ``target``.

    Parameters
    ----------
    new : list of CLayer
        The replacement layers to refine (kinds in :data:`REFINED_KINDS`, or parameterless
        kinds of :data:`TAIL_KINDS`), e.g. a data-aware SVD or a separated convolution.
    x_fit : ndarray of shape (n_samples, *input_shape)
        Their inputs on the fitting data (unlabelled).
    tail : list of CLayer
        The layers after them (kinds in :data:`TAIL_KINDS`), kept fixed.
    target : ndarray of shape (n_samples, n_outputs)
        The original network's final outputs on the same samples.
    steps : int
        Adam steps (one minibatch each).
    batch : int
        Samples per minibatch (drawn without replacement, epoch by epoch, from ``seed``).
    lr : float
        Adam's step size.
    seed : int
    fixed : tuple of str
        Names of arrays left as they are (e.g. ``("U",)``: only ``V`` and the bias of a
        factored layer move).
    keep_best : bool
        Return the arrays with the lowest loss on **all** of ``x_fit`` among the start and
        every ``max(1, steps // 6)``-th step (the last included), not the last step's: Adam at
        a step size that suits a small rank can overshoot at a large one (on the Daily and
        Sports MLP 300 steps at 3e-3 took rank 192's agreement with the original on its own
        fitting inputs from 100% to 69%).  Chosen on the fitting inputs only.

    Returns
    -------
    list of CLayer
        New layers (the inputs are not modified) with the refined arrays in their dtypes.
        The loss (mean over samples of the summed squared output error) is only followed
        downhill on minibatches, so the caller checks the result.

    Raises
    ------
    ValueError
        For a kind it cannot differentiate or refine, or mismatched sample counts.
    """
    bad = sorted(({la.kind for la in tail} - set(TAIL_KINDS))
                 | ({la.kind for la in new if la.arrays} - set(REFINED_KINDS)))
    if bad:
        raise ValueError(f"cannot refine through layer kinds {bad}")
    target = np.asarray(target).reshape(len(target), -1)
    if len(x_fit) != len(target):
        raise ValueError(f"x_fit has {len(x_fit)} samples, target {len(target)}")
    work = [make_layer(la.kind, **la.cfg, **{k: np.array(v, np.float32)
                                             for k, v in la.arrays.items()}) for la in new]
    params = [(i, name) for i, la in enumerate(work) for name in la.arrays
              if name not in fixed]
    m1 = [np.zeros_like(work[i].arrays[k]) for i, k in params]
    m2 = [np.zeros_like(work[i].arrays[k]) for i, k in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    rng = np.random.default_rng(seed)
    n = len(x_fit)
    batch = max(1, min(int(batch), n))
    order, pos = rng.permutation(n), 0
    layers = work + list(tail)
    every = max(1, int(steps) // 6)
    best = (_fit_loss(layers, x_fit, target), [dict(la.arrays) for la in new]) if keep_best \
        else None
    for t in range(1, int(steps) + 1):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        idx = np.sort(order[pos:pos + batch])
        pos += batch
        out, cache = _forward(layers, np.asarray(x_fit[idx], np.float32))
        # d/d(out) of the mean over samples of the summed squared output error
        d = (2.0 / len(idx)) * (out.reshape(len(idx), -1) - target[idx])
        grads = []
        _backward(layers, cache, d.reshape(out.shape), grads)
        for (i, k), a1, a2 in zip(params, m1, m2):
            gp = grads[i][k]
            a1 *= b1
            a1 += (1 - b1) * gp
            a2 *= b2
            a2 += (1 - b2) * gp * gp
            work[i].arrays[k] -= lr * (a1 / (1 - b1 ** t)) / (np.sqrt(a2 / (1 - b2 ** t)) + eps)
        if best is not None and (t % every == 0 or t == int(steps)):
            loss = _fit_loss(layers, x_fit, target)
            if loss < best[0]:
                best = (loss, [{k: w.arrays[k].copy() for k in la.arrays}
                               for la, w in zip(new, work)])
    final = best[1] if best is not None else [w.arrays for w in work]
    return [make_layer(la.kind, **la.cfg, **{k: a[k].astype(v.dtype)
                                             for k, v in la.arrays.items()})
            for la, a in zip(new, final)]


def refine_factored(U, V, b, x_fit, tail, target, steps: int = 100, batch: int = 256,
                    lr: float = 1e-3, seed: int = 0, keep_best: bool = True):
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
    keep_best : bool
        As in :func:`refine_layers`.

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
    x_fit = np.asarray(x_fit).reshape(len(x_fit), -1)
    if x_fit.shape[1] != U.shape[0]:
        raise ValueError(f"x_fit {x_fit.shape} does not fit U {U.shape}")
    la = refine_layers([make_layer("factored", U=U, V=V, b=np.asarray(b))], x_fit, tail,
                       target, steps=steps, batch=batch, lr=lr, seed=seed,
                       keep_best=keep_best)[0]
    return la.arrays["U"], la.arrays["V"], la.arrays["b"]
