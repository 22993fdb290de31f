"""The layer compression compiler (SparseSep section 5): choose each layer's form and size.

For each compressible layer, largest first, a binary search finds the smallest rank (SVD, kernel
separation, channel reduction) or number of non-zeros per column (sparse dictionary) such that
the **whole network** stays within the accuracy budget on the validation data; no weight is
retrained.  The budget is spent in proportion to the layers' sizes: after the layers holding a
fraction ``p`` of the compressible parameters are done, at most ``p * budget`` may have been
spent (unused budget carries over), so the largest layer cannot starve the others.  With
``allocate="flops"`` the layers go by FLOPs per sample instead (order and shares): for a
network whose time is in a few small convolutions and whose bytes are in a dense layer, the
budget then goes where the time is.

The criterion (``criterion``):

* ``"lost"`` (default): the fraction of validation samples the original model classifies
  correctly and the compressed one does not.  It bounds the accuracy drop (drop = lost -
  gained) and, unlike the drop, cannot be paid for by lucky flips the other way, which is
  what let a validation budget break on test data;
* ``"accuracy"``: the drop in validation accuracy itself;
* ``"paired"``: the drop too, (lost - gained) / n, but its margin (``confidence`` = z) is the
  paired (McNemar) standard error of that difference, from the lost and gained samples:
  ``(L - G) / n + z sqrt((L + G) / n - ((L - G) / n)^2) / sqrt(n)`` (:func:`paired_upper`).
  A network whose outputs carry components no fitting input spans (the Daily and Sports MLP:
  5,625 inputs, 1,083 fitting rows) flips some validation samples both ways under any
  low-rank form; "lost" counts only one way and so charges that symmetric noise to the
  budget, the paired bound counts it in the margin.

Forms (``method``), each fitted to the layer's outputs on ``X_fit`` (default ``X_val``) when
``data_aware``:

* ``"svd"``: dense layers by truncated SVD; convolutions by kernel separation (cross-channel
  or per-kernel) and, data-aware, by channel reduction (:func:`~.conv.reduce_channels`);
* ``"sparse"``: as ``"svd"``, plus the sparse dictionary ``W ~ B S`` (K-SVD with tinydl's OMP)
  with ``r`` in {r_svd, 2 r_svd} atoms and a searched ``k``;
* ``"auto"``: as ``"sparse"``, plus the plain (weights-only) SVD beside the data-aware one.

With ``refine`` > 0, a data-aware SVD rank whose plain factors fail gets its factors refined
towards the original network's outputs on ``X_fit`` (:mod:`.refine`, no labels) and checked
again; its rank is then the smallest passing one of the doubling grid 1, 2, 4, ... (a refined
form's pass is far from monotone in the rank, and each extra candidate checked on a small
validation set is one more chance to pass by luck); with ``refine_seeds`` > 1 it must pass
refined under that many seeds, and a layer whose inputs outnumber the fitting rows keeps its
input-side factor (:func:`~.search.refine_fixed`).

Each layer keeps the smallest form that passes (the report says which).  ``quantize="int8"``
stacks int8 weights with per-output-channel scales (:mod:`.quantize`) on every candidate
before it is checked, and on a layer no factorization pays for.

Afterwards the model is checked against a memory and time target on a device profile
(:func:`hal.profile.load_profile`); if it misses, :class:`BudgetInfeasible` says the smallest
model that was reached.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .._validation import check_int
from ..errors import BudgetInfeasible
from .conv import (
    conv_output_gram,
    cross_channel_max_rank,
    kernel_max_rank,
    reduce_channels,
    reduce_max_rank,
    separate_cross_channel,
    separate_kernels,
)
from .factorize import DenseFactorizer, SparseFactorizer, sparse_index_dtype, svd_max_rank
from .model import CompressedModel, make_layer
from .quantize import QUANTIZABLE, quantize_layer
from .report import CompressionReport, LayerReport
from .search import built as _built
from .search import form_search as _form_search
from .search import search as _search
from .targets import check_targets, predict_time

__all__ = ["compress_model", "CompressionReport", "LayerReport", "BudgetInfeasible",
           "predict_time", "METHODS", "CRITERIA", "QUANTIZE", "paired_upper", "wilson_upper"]

METHODS = ("svd", "sparse", "auto")
CRITERIA = ("flips", "lost", "accuracy", "paired")
QUANTIZE = (None, "int8")
ALLOCATE = ("bytes", "flops")

# -- helpers -----------------------------------------------------------------------------------
def _labels_to_index(model, y):
    y = np.asarray(y)
    classes = model.classes
    idx = np.searchsorted(classes, y) if np.all(classes[:-1] <= classes[1:]) else None
    if idx is None:
        lookup = {c: i for i, c in enumerate(classes.tolist())}
        bad = [v for v in y.tolist() if v not in lookup]
        if bad:
            raise ValueError(f"y holds label(s) {bad[:5]} not among the model's classes "
                             f"{classes.tolist()[:20]}")
        return np.array([lookup[v] for v in y.tolist()])
    idx = np.minimum(idx, len(classes) - 1)
    bad = classes[idx] != y
    if bad.any():
        raise ValueError(f"y holds label(s) {np.unique(y[bad])[:5].tolist()} not among the "
                         f"model's classes {classes.tolist()[:20]}")
    return idx


def _run(layers, x):
    for la in layers:
        out = np.empty((x.shape[0],) + la.out_shape, x.dtype)
        x = la.forward(x, out)
    return x.reshape(x.shape[0], -1)


def _acc(layers, x, yi):
    return float(np.mean(np.argmax(_run(layers, x), axis=1) == yi))


def wilson_upper(rate: float, n: int, z: float) -> float:
    """Wilson score upper limit of a binomial rate seen as ``rate`` on ``n`` samples."""
    if n <= 0:
        return 1.0
    z2 = z * z
    centre = rate + z2 / (2 * n)
    half = z * np.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n))
    return float(min(1.0, (centre + half) / (1 + z2 / n)))


def paired_upper(lost: int, gained: int, n: int, z: float) -> float:
    """Upper limit at ``z`` standard errors of the accuracy drop seen as ``lost`` samples
    right before and wrong after and ``gained`` the other way, out of ``n``: the mean of the
    per-sample differences d in {-1, 0, 1} plus z times their standard error (population
    variance over n, the paired / McNemar form)."""
    if n <= 0:
        return 1.0
    d = (lost - gained) / n
    var = max((lost + gained) / n - d * d, 0.0)
    return float(min(1.0, d + z * np.sqrt(var / n)))


# -- the compiler ----------------------------------------------------------------------------
class _Layer:
    """One layer's search context: its inputs (validation and fit) and the acceptance test."""

    def __init__(self, layer, x_val, x_fit, tail, ok_new, quantize, target=None):
        self.layer, self.x_val, self.x_fit, self.tail = layer, x_val, x_fit, tail
        self.ok_new, self.quantize, self.target = ok_new, quantize, target
        self.refine_kw = {}  # refine_layers' batch and lr
        self.refine_seeds = 1  # refinement seeds a refined form must pass under

    def finish(self, layers):
        layers = _built(layers, self.layer.in_shape)
        if self.quantize:
            layers = [quantize_layer(la) for la in layers]
        return layers

    def passes(self, layers):
        """Whether the network with ``layers`` in place of this layer is within budget."""
        new = self.finish(layers)
        return self.ok_new(np.argmax(_run(new + self.tail, self.x_val), axis=1))

    def ok_of(self, make):
        return lambda v: self.passes(make(v))


def _smallest(best, cand):
    return cand if cand is not None and (best is None or cand[0] < best[0]) else best


def _dense_candidates(ctx, method, data_aware, n_iter, seed, quantize, shrinkage,
                      sparse_max_weights, refine=0):
    """(bytes, choice, new_layers) for the cheapest passing form of a dense layer, or None."""
    layer = ctx.layer
    W, b = layer.arrays["W"], layer.arrays["b"]
    m, n = W.shape
    rmax = svd_max_rank(m, n)
    if rmax < 1:
        return None
    X = ctx.x_fit.reshape(len(ctx.x_fit), -1) if data_aware else None
    decs = [("svd" if X is None else "data-aware svd",
             DenseFactorizer(W, X, shrinkage=shrinkage if X is not None else None))]
    if method == "auto" and X is not None:
        decs.append(("svd", DenseFactorizer(W)))
    best, r_first = None, None
    for label, dec in decs:
        def svd_layer(r, dec=dec):
            U, V = dec.factors(r)
            return [make_layer("factored", U=U, V=V, b=b)]
        found = _form_search(ctx, svd_layer, rmax, refine if label.startswith("data-aware") else 0,
                            seed)
        if found is None:
            continue
        r, new, refined = found
        r_first = r_first or r
        lay = ctx.finish(new)
        best = _smallest(best, (lay[0].nbytes, f"{label} rank {r}"
                                f"{' (refined)' if refined else ''}", lay))
    if method in ("sparse", "auto") and m * n <= sparse_max_weights:
        fac = SparseFactorizer(W, X, n_iter=n_iter, seed=seed, decomposition=decs[0][1])
        r0 = r_first or rmax
        isz = 1 if quantize else W.dtype.itemsize
        for r in sorted({r0, 2 * r0}):
            if r >= n:
                continue
            # the largest k whose stored bytes (B, values, indices, pointers; int8 scales)
            # still beat the best form so far: larger k cannot win, so is never coded
            per_value = isz + np.dtype(sparse_index_dtype(r)).itemsize
            fixed = m * r * isz + (n + 1) * 4 + (4 * (r + n) if quantize else 0)
            limit = best[0] if best is not None else m * n * W.dtype.itemsize
            k_max = min(r, (limit - 1 - fixed) // (n * per_value))
            if k_max < 1:
                continue

            def sp_layer(k, r=r):
                f = fac.factors(r, k, check_cost=False)
                return [make_layer("sparse_factored", B=f.B, data=f.data, indices=f.indices,
                                   indptr=f.indptr, b=b, n_out=n)]
            ok = ctx.ok_of(sp_layer)
            if not ok(k_max):
                continue
            k = _search(1, k_max, ok)
            lay = ctx.finish(sp_layer(k))
            best = _smallest(best, (lay[0].nbytes, f"{'data-aware ' if X is not None else ''}"
                                    f"sparse r={r} k={k} (nnz {lay[0].arrays['data'].size:,})",
                                    lay))
    return best


def _conv_candidates(ctx, data_aware, refine=0, seed=0):
    layer = ctx.layer
    W, b = layer.arrays["W"], layer.arrays["b"]
    f, c, kh, kw = W.shape
    stride, padding = layer.cfg.get("stride", (1, 1)), layer.cfg.get("padding", (0, 0))
    best = None
    forms = [("cross-channel K", cross_channel_max_rank(f, c, kh, kw),
              lambda K: separate_cross_channel(W, b, K, stride, padding)),
             ("per-kernel r", kernel_max_rank(kh, kw),
              lambda r: [separate_kernels(W, b, r, stride, padding)])]
    if data_aware:
        gram = conv_output_gram(W, ctx.x_fit, stride, padding)
        forms.append(("data-aware channel reduction K", reduce_max_rank(f, c, kh, kw),
                      lambda K: reduce_channels(W, b, K, gram, stride, padding)))
    for label, vmax, make in forms:
        if vmax < 1:
            continue
        # refined: the forms made of plain convolutions (not the per-kernel one)
        found = _form_search(ctx, make, vmax, 0 if label.startswith("per-kernel") else refine, seed)
        if found is not None:
            v, new, refined = found
            lay = ctx.finish(new)
            best = _smallest(best, (sum(la.nbytes for la in lay),
                                    f"{label}={v}{' (refined)' if refined else ''}", lay))
    return best


def compress_model(model: CompressedModel, X_val, y_val, max_accuracy_loss: float = 0.01,
                   method: str = "svd", data_aware: bool = True, profile=None,
                   max_memory: Optional[int] = None, max_time: Optional[float] = None,
                   batch: int = 1, n_iter: int = 6, seed: int = 0, log=None,
                   quantize: Optional[str] = None, criterion: str = "lost", X_fit=None,
                   shrinkage=None, sparse_max_weights: int = 4_000_000,
                   confidence: float = 0.0, refine: int = 0, allocate: str = "bytes",
                   refine_batch: int = 256, refine_lr: float = 1e-3, refine_seeds: int = 1):
    """Compress ``model`` so that it loses at most ``max_accuracy_loss`` on validation data.

    Parameters
    ----------
    model : CompressedModel
        The trained model (not modified).
    X_val : ndarray of shape (n_samples, n_features) or (n_samples, *input_shape)
        Validation inputs the search checks candidates on (keep them apart from the test set).
    y_val : ndarray of shape (n_samples,)
        Their labels (values of ``model.classes``).
    max_accuracy_loss : float in [0, 1]
        Budget in accuracy *points* as a fraction: 0.01 allows 90.0% -> 89.0%.
    method : {"svd", "sparse", "auto"}
        The forms tried per layer (module docstring).
    data_aware : bool
        Fit the factorizations to the layers' outputs on ``X_fit`` (else to W alone).
    profile : str or DeviceProfile, optional
        Device profile for the memory and time targets (e.g. ``"cortex-m3"``).
    max_memory : int, optional
        Bytes the compressed weights may take; default the profile's flash (if it has one)
        or its RAM.
    max_time : float, optional
        Seconds per batch of ``batch`` predicted on ``profile``.
    batch : int
        Batch size for the time and runtime-memory predictions.
    n_iter : int
        K-SVD iterations of the sparse dictionary.
    seed : int
    log : callable, optional
        Called with one line per decision.
    quantize : {None, "int8"}
        Stack int8 weights (per-output-channel scales) on every form the search checks.
    criterion : {"lost", "flips", "accuracy", "paired"}
        What the budget bounds on validation (module docstring).
    shrinkage : float or "ledoit-wolf", optional
        Shrink the fitting inputs' second moment towards the identity
        (:class:`~.factorize.DenseFactorizer`); None fits the outputs on ``X_fit`` as they are.
    sparse_max_weights : int
        The sparse dictionary is tried on dense layers of at most this many weights: K-SVD's
        cost grows with the layer (a 5625 x 2000 layer takes minutes per searched ``k``).
    X_fit : ndarray of shape (n_fit, n_features), optional
        Unlabelled inputs the data-aware forms are fitted to (default ``X_val``).  Inputs
        apart from ``X_val`` keep the search's validation accuracy an unbiased estimate.
    confidence : float
        With ``criterion`` "lost" or "flips": bound the Wilson upper confidence limit of the
        rate at ``confidence`` standard errors (1.0: one-sided 84%) instead of the rate seen
        on the validation samples, so that a small validation set buys a margin; with
        "paired": the drop plus ``confidence`` paired standard errors.  0 (the default): the
        rate (drop) itself.

    refine : int
        Adam steps (minibatches of 256 fitting inputs) of label-free refinement
        (:mod:`.refine`) of a data-aware SVD rank whose plain factors miss the budget: the
        factors are moved towards reproducing the original network's outputs on ``X_fit``
        and checked again.  Dense layers whose later layers are all dense, factored, ReLU or
        flatten; 0 (the default): off.
    refine_batch : int
        Fitting inputs per refinement step.
    refine_lr : float
        Adam's step size in the refinement.
    refine_seeds : int
        A refined form passes only if it passes refined under each of the seeds ``seed``,
        ``seed + 1``, ... (this many); the form kept is ``seed``'s.  A refined form's verdict
        varies with the refinement's draw, and one draw's pass can be luck.
    allocate : {"bytes", "flops"}
        What orders the layers (largest first) and shares the budget among them: their
        stored bytes (the default) or their FLOPs per sample (module docstring).

    Returns
    -------
    model : CompressedModel
    report : CompressionReport

    Raises
    ------
    BudgetInfeasible
        If a memory or time target is missed (it carries the smallest model reached).
    ValueError
        For NaN weights or inputs, a bad budget, method, criterion or quantization, labels
        the model doesn't know.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if confidence and criterion == "accuracy":
        raise ValueError("confidence needs criterion 'lost', 'flips' or 'paired'")
    if not 0.0 <= float(confidence) <= 10.0:
        raise ValueError(f"confidence must be in [0, 10] standard errors, got {confidence}")
    if allocate not in ALLOCATE:
        raise ValueError(f"allocate must be one of {ALLOCATE}, got {allocate!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    budget = float(max_accuracy_loss)
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"max_accuracy_loss must be in [0, 1] (a fraction: 0.01 = 1 point), "
                         f"got {max_accuracy_loss}")
    if max_time is not None and profile is None:
        raise ValueError("max_time needs a profile to predict the time on")
    for name, v in (("max_memory", max_memory), ("max_time", max_time)):
        if v is not None and not (isinstance(v, (int, float, np.integer, np.floating))
                                  and np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number (or None), got {v!r}")
    check_int(batch, "batch", low=1)
    check_int(n_iter, "n_iter", low=1)
    if not isinstance(model, CompressedModel):
        raise TypeError(f"model must be a CompressedModel (tinydl.compress.from_network of a "
                        f"fitted network), got {type(model).__name__}")
    model.check_finite()
    X = model._check_input(X_val)
    if np.ndim(y_val) != 1:
        raise ValueError(f"y_val should be one label per sample, shape (n,), got shape "
                         f"{np.shape(y_val)}")
    yi = _labels_to_index(model, y_val)
    if len(yi) != len(X):
        raise ValueError(f"X_val has {len(X)} samples but y_val has {len(yi)}")
    if not len(X):
        raise ValueError("X_val is empty: compression is judged on validation samples")
    Xf = X if X_fit is None else model._check_input(X_fit)
    if not len(Xf):
        raise ValueError("X_fit is empty: the data-aware forms are fitted to its samples")
    refine = int(refine)
    if refine < 0:
        raise ValueError(f"refine must be a number of steps >= 0, got {refine}")
    if not 1 <= int(refine_seeds) <= 100:
        raise ValueError(f"refine_seeds must be in [1, 100], got {refine_seeds}")
    if int(refine_batch) < 1 or not 0.0 < float(refine_lr) < 1.0:
        raise ValueError(f"refine_batch must be >= 1 and refine_lr in (0, 1), got "
                         f"{refine_batch} and {refine_lr}")
    log = log or (lambda s: None)
    cur = model.copy()
    pred0 = np.argmax(_run(cur.layers, X), axis=1)
    right0 = pred0 == yi
    acc0 = float(right0.mean())

    def spent(pred):
        right = pred == yi
        if criterion == "paired":
            return paired_upper(int(np.sum(right0 & ~right)), int(np.sum(~right0 & right)),
                                len(yi), confidence)
        if criterion == "flips":
            rate = float(np.mean(pred != pred0))
        elif criterion == "lost":
            rate = float(np.mean(right0 & ~right))
        else:
            return acc0 - float(right.mean())
        return wilson_upper(rate, len(yi), confidence) if confidence else rate

    bytes0, flops0 = cur.nbytes, cur.flops()
    # the refinement's teacher: the original network's outputs on the fitting inputs
    target = _run(cur.layers, Xf) if refine and data_aware else None

    def compressible(la):
        if la.kind == "dense":
            return svd_max_rank(*la.arrays["W"].shape) >= 1 or bool(quantize)
        if la.kind == "conv":
            f, c, kh, kw = la.arrays["W"].shape
            return (cross_channel_max_rank(f, c, kh, kw) >= 1 or kernel_max_rank(kh, kw) >= 1
                    or (data_aware and reduce_max_rank(f, c, kh, kw) >= 1) or bool(quantize))
        return False

    # compressible layers, largest first
    def size(la):
        return la.flops() if allocate == "flops" else la.nbytes
    cand = sorted((la for la in cur.layers if compressible(la)), key=lambda la: -size(la))
    total = sum(size(la) for la in cand) or 1
    done = 0
    reports = []
    for layer in cand:
        idx = cur.layers.index(layer)
        done += size(layer)
        allowed = budget * done / total + 1e-9
        x_val = _run(cur.layers[:idx], X).reshape((len(X),) + layer.in_shape) if idx else X
        x_fit = (_run(cur.layers[:idx], Xf).reshape((len(Xf),) + layer.in_shape) if idx
                 else Xf) if data_aware else None
        ctx = _Layer(layer, x_val, x_fit, cur.layers[idx + 1:],
                     lambda pred, allowed=allowed: spent(pred) <= allowed, quantize, target)
        ctx.refine_kw = dict(batch=int(refine_batch), lr=float(refine_lr))
        ctx.refine_seeds = int(refine_seeds)
        if layer.kind == "dense":
            best = _dense_candidates(ctx, method, data_aware, n_iter, seed, quantize, shrinkage,
                                    sparse_max_weights, refine)
        else:
            best = _conv_candidates(ctx, data_aware, refine, seed)
        if quantize and layer.kind in QUANTIZABLE:
            q = ctx.finish([layer])
            if ctx.ok_new(np.argmax(_run(q + ctx.tail, x_val), axis=1)):
                best = _smallest(best, (q[0].nbytes, f"kept ({quantize})", q))
        before_b, before_f = layer.nbytes, layer.flops()
        shape = "x".join(str(s) for s in (layer.arrays["W"].shape))
        if best is None or best[0] >= before_b:
            choice, new = "kept", [layer]
        else:
            choice, new = best[1] + (f" + {quantize}" if quantize and "kept" not in best[1]
                                     else ""), best[2]
        cur.layers[idx:idx + 1] = new
        acc = _acc(cur.layers, X, yi)
        reports.append(LayerReport(idx, layer.kind, shape, choice, before_b,
                                   sum(la.nbytes for la in new), before_f,
                                   sum(la.flops() for la in new), acc))
        log(f"layer {idx} ({layer.kind} {shape}): {choice}, {before_b:,} -> "
            f"{reports[-1].bytes_after:,} bytes, val acc {100 * acc:.2f}% "
            f"(allowed {criterion} so far {100 * allowed:.2f} points)")
        # later layers' indices shift by the layers inserted
        for r in reports[:-1]:
            if r.index > idx:
                r.index += len(new) - 1
    cur.build()
    pred1 = np.argmax(_run(cur.layers, X), axis=1)
    rep = CompressionReport(method, budget, bool(data_aware), acc0, float(np.mean(pred1 == yi)),
                            bytes0, cur.nbytes, flops0, cur.flops(), reports,
                            criterion=criterion, quantize=quantize,
                            val_lost=float(np.mean(right0 & (pred1 != yi))),
                            val_flips=float(np.mean(pred1 != pred0)),
                            val_gained=float(np.mean(~right0 & (pred1 == yi))),
                            confidence=float(confidence))
    if profile is not None or max_memory is not None:
        check_targets(cur, rep, profile, max_memory, max_time, batch)
    return cur, rep
