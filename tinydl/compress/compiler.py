"""The layer compression compiler (SparseSep section 5): choose each layer's rank or sparsity.

For each compressible layer, largest first, a binary search finds the smallest rank (SVD, kernel
separation) or number of non-zeros per column (sparse dictionary) such that the **whole
network's** validation accuracy stays within the budget; no weight is retrained.  The budget is
spent in proportion to the layers' sizes: after the layers holding a fraction ``p`` of the
compressible parameters are done, the accuracy may have dropped by at most ``p * budget``
(unused budget carries over), so the largest layer cannot starve the others.

Methods:

* ``"svd"``: dense layers by truncated SVD (data-aware by default: fit to the layer's outputs on
  the validation inputs), convolutions by kernel separation (cross-channel or per-kernel,
  whichever stores less).
* ``"sparse"``: as ``"svd"``, then for dense layers also the sparse dictionary ``W ~ B S``
  (K-SVD with tinydl's OMP) with ``r`` in {r_svd, 2 r_svd} atoms and a searched ``k``; the
  smaller of the SVD and sparse forms is kept (the report says which).

Afterwards the model is checked against a memory and time target on a device profile
(:func:`hal.profile.load_profile`); if it misses, :class:`BudgetInfeasible` says the smallest
model that was reached.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

import numpy as np

from ..errors import BudgetInfeasible
from .conv import cross_channel_max_rank, kernel_max_rank, separate_cross_channel, separate_kernels
from .factorize import DenseFactorizer, SparseFactorizer, svd_max_rank
from .model import CompressedModel, make_layer
from .runtime import predict_peak_bytes

__all__ = ["compress_model", "CompressionReport", "LayerReport", "BudgetInfeasible",
           "predict_time", "METHODS"]

METHODS = ("svd", "sparse")


@dataclass
class LayerReport:
    """What the compiler did to one layer (kind before and after, bytes, FLOPs, method, rank)."""
    index: int
    kind: str
    shape: str
    choice: str
    bytes_before: int
    bytes_after: int
    flops_before: int
    flops_after: int
    accuracy_after: float


@dataclass
class CompressionReport:
    """What the compiler chose for each layer, and the totals.  ``text()`` renders a table."""

    method: str
    budget: float
    data_aware: bool
    accuracy_before: float
    accuracy_after: float
    bytes_before: int
    bytes_after: int
    flops_before: int
    flops_after: int
    layers: List[LayerReport] = field(default_factory=list)
    profile: Optional[str] = None
    predicted_time_s: Optional[float] = None
    predicted_peak_bytes: Optional[int] = None
    targets: dict = field(default_factory=dict)

    @property
    def memory_reduction(self) -> float:
        """Bytes before over bytes after."""
        return self.bytes_before / max(self.bytes_after, 1)

    @property
    def flops_reduction(self) -> float:
        """FLOPs per sample before over after."""
        return self.flops_before / max(self.flops_after, 1)

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict."""
        d = asdict(self)
        d["memory_reduction"] = self.memory_reduction
        d["flops_reduction"] = self.flops_reduction
        return d

    def text(self) -> str:
        """The report as a human-readable table (one line per layer)."""
        rows = [("layer", "kind", "shape", "choice", "bytes before", "bytes after",
                 "FLOPs before", "FLOPs after", "val acc")]
        for r in sorted(self.layers, key=lambda r: r.index):
            rows.append((str(r.index), r.kind, r.shape, r.choice, f"{r.bytes_before:,}",
                         f"{r.bytes_after:,}", f"{r.flops_before:,}", f"{r.flops_after:,}",
                         f"{100 * r.accuracy_after:.2f}%"))
        rows.append(("total", "", "", "", f"{self.bytes_before:,}", f"{self.bytes_after:,}",
                     f"{self.flops_before:,}", f"{self.flops_after:,}",
                     f"{100 * self.accuracy_after:.2f}%"))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w[i]) if i < 4 else c.rjust(w[i]) for i, c in enumerate(r))
                 for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        lines.append(f"method {self.method} ({'data-aware' if self.data_aware else 'weights only'}"
                     f"), budget {100 * self.budget:.2f} points: validation accuracy "
                     f"{100 * self.accuracy_before:.2f}% -> {100 * self.accuracy_after:.2f}%, "
                     f"memory {self.memory_reduction:.1f}x smaller, FLOPs "
                     f"{self.flops_reduction:.1f}x fewer")
        if self.profile:
            lines.append(f"on {self.profile}: predicted {self.predicted_time_s:.4g} s per batch, "
                         f"runtime peak {self.predicted_peak_bytes:,} bytes"
                         + (f"; targets {self.targets}" if self.targets else ""))
        return "\n".join(lines)


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


def _built(new_layers, in_shape):
    s = in_shape
    for la in new_layers:
        s = la.build(s)
    return new_layers


def _search(lo, hi, ok):
    """Smallest v in [lo, hi] with ok(v), assuming ok(hi) holds (ok is near-monotone, so
    only values actually tested are ever returned)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def predict_time(model: CompressedModel, profile, batch: int = 1,
                 backend: Optional[str] = None) -> float:
    """Seconds for one batch on ``profile`` by hal's cost model (products as GEMMs, the sparse
    product and element-wise layers as vector work)."""
    from hal.cost import choose_backend, matmul_cost, vector_cost
    from hal.profile import load_profile
    profile = load_profile(profile)
    be = choose_backend(profile, backend)
    dt = model.dtype
    n = int(batch)
    t = 0.0
    for la in model.layers:
        a, k = la.arrays, la.kind
        if k == "dense":
            t += matmul_cost(profile, be, n, *a["W"].shape, dt)[0]
        elif k == "factored":
            t += matmul_cost(profile, be, n, *a["U"].shape, dt)[0]
            t += matmul_cost(profile, be, n, *a["V"].shape, dt)[0]
        elif k == "sparse_factored":
            t += matmul_cost(profile, be, n, *a["B"].shape, dt)[0]
            nnz = a["data"].size
            t += vector_cost(profile, be, 2.0 * n * nnz, n * nnz * (dt.itemsize + 4), 3,
                             n * nnz, dt)
        elif k == "conv":
            f, c, kh, kw = a["W"].shape
            ho, wo = la.out_shape[1:]
            t += matmul_cost(profile, be, n * ho * wo, c * kh * kw, f, dt)[0]
        elif k == "kernel_separated":
            f = la.out_shape[0]
            c, fr, kh = a["v"].shape
            kw = a["h"].shape[2]
            ho, wo = la.out_shape[1:]
            wp = la.in_shape[2] + 2 * la.cfg.get("padding", (0, 0))[1]
            t += matmul_cost(profile, be, n * ho * wp, kh, fr, dt, calls=c)[0]
            t += matmul_cost(profile, be, n * ho * wo, (fr // f) * c * kw, 1, dt, calls=f)[0]
        elif k != "flatten":
            size = n * int(np.prod(la.out_shape))
            t += vector_cost(profile, be, la.flops() * n, 2 * size * dt.itemsize, 1, size, dt)
    return float(t)


# -- the compiler ----------------------------------------------------------------------------
def _dense_candidates(layer, x_in, data_aware, method, n_iter, ok_of, seed):
    """(bytes, choice, new_layers) for the cheapest passing form of a dense layer, or None."""
    W, b = layer.arrays["W"], layer.arrays["b"]
    m, n = W.shape
    isz = W.dtype.itemsize
    rmax = svd_max_rank(m, n)
    if rmax < 1:
        return None
    X = x_in.reshape(len(x_in), -1) if data_aware else None
    dec = DenseFactorizer(W, X)

    def svd_layer(r):
        U, V = dec.factors(r)
        return [make_layer("factored", U=U, V=V, b=b)]

    ok_svd = ok_of(svd_layer)
    best = None
    r_svd = None
    if ok_svd(rmax):
        r_svd = _search(1, rmax, ok_svd)
        lay = svd_layer(r_svd)
        best = (lay[0].nbytes, f"svd rank {r_svd}", lay)
    if method == "sparse":
        fac = SparseFactorizer(W, X, n_iter=n_iter, seed=seed, decomposition=dec)
        r0 = r_svd or rmax
        for r in sorted({r0, 2 * r0}):
            if m * r >= m * n:
                continue

            def sp_layer(k, r=r):
                f = fac.factors(r, k, check_cost=False)
                return [make_layer("sparse_factored", B=f.B, data=f.data, indices=f.indices,
                                   indptr=f.indptr, b=b, n_out=n)]
            ok_sp = ok_of(sp_layer)
            if not ok_sp(r):
                continue
            k = _search(1, r, ok_sp)
            lay = sp_layer(k)
            if lay[0].nbytes < m * n * isz and (best is None or lay[0].nbytes < best[0]):
                best = (lay[0].nbytes, f"sparse r={r} k={k} (nnz {lay[0].arrays['data'].size:,})",
                        lay)
    return best


def _conv_candidates(layer, ok_of):
    W, b = layer.arrays["W"], layer.arrays["b"]
    f, c, kh, kw = W.shape
    stride, padding = layer.cfg.get("stride", (1, 1)), layer.cfg.get("padding", (0, 0))
    best = None
    kmax = cross_channel_max_rank(f, c, kh, kw)
    if kmax >= 1:
        def cc(K):
            return separate_cross_channel(W, b, K, stride, padding)
        ok = ok_of(cc)
        if ok(kmax):
            K = _search(1, kmax, ok)
            lay = cc(K)
            best = (sum(la.nbytes for la in lay), f"cross-channel K={K}", lay)
    rmax = kernel_max_rank(kh, kw)
    if rmax >= 1:
        def pk(r):
            return [separate_kernels(W, b, r, stride, padding)]
        ok = ok_of(pk)
        if ok(rmax):
            r = _search(1, rmax, ok)
            lay = pk(r)
            if best is None or lay[0].nbytes < best[0]:
                best = (lay[0].nbytes, f"per-kernel r={r}", lay)
    return best


def compress_model(model: CompressedModel, X_val, y_val, max_accuracy_loss: float = 0.01,
                   method: str = "svd", data_aware: bool = True, profile=None,
                   max_memory: Optional[int] = None, max_time: Optional[float] = None,
                   batch: int = 1, n_iter: int = 6, seed: int = 0, log=None):
    """Compress ``model`` so that validation accuracy drops by at most ``max_accuracy_loss``.

    Parameters
    ----------
    model : CompressedModel
        The trained model (not modified).
    X_val : ndarray of shape (n_samples, n_features) or (n_samples, *input_shape)
        Validation inputs (keep them apart from the test set).
    y_val : ndarray of shape (n_samples,)
        Their labels (values of ``model.classes``).
    max_accuracy_loss : float in [0, 1]
        Budget in accuracy *points* as a fraction: 0.01 allows 90.0% -> 89.0%.
    method : {"svd", "sparse"}
    data_aware : bool
        Fit dense factorizations to the layers' outputs on ``X_val`` (else to W alone).
    profile : str or DeviceProfile, optional
        Device profile for the memory and time targets (e.g. ``"cortex-m3"``).
    max_memory : int, optional
        Bytes the compressed weights may take; default the profile's flash (if it has one)
        or its RAM.
    max_time : float, optional
        Seconds per batch of ``batch`` predicted on ``profile``.
    batch : int
        Batch size for the time and runtime-memory predictions.
    log : callable, optional
        Called with one line per decision.

    Returns
    -------
    model : CompressedModel
    report : CompressionReport

    Raises
    ------
    BudgetInfeasible
        If a memory or time target is missed (it carries the smallest model reached).
    ValueError
        For NaN weights or inputs, a bad budget or method, labels the model doesn't know.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    budget = float(max_accuracy_loss)
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"max_accuracy_loss must be in [0, 1] (a fraction: 0.01 = 1 point), "
                         f"got {max_accuracy_loss}")
    if max_time is not None and profile is None:
        raise ValueError("max_time needs a profile to predict the time on")
    model.check_finite()
    X = model._check_input(X_val)
    yi = _labels_to_index(model, y_val)
    if len(yi) != len(X):
        raise ValueError(f"X_val has {len(X)} samples but y_val has {len(yi)}")
    log = log or (lambda s: None)
    cur = model.copy()
    acc0 = _acc(cur.layers, X, yi)
    bytes0, flops0 = cur.nbytes, cur.flops()

    # compressible layers, largest first
    cand = [la for la in cur.layers
            if (la.kind == "dense" and svd_max_rank(*la.arrays["W"].shape) >= 1)
            or (la.kind == "conv" and (cross_channel_max_rank(*la.arrays["W"].shape) >= 1
                                       or kernel_max_rank(*la.arrays["W"].shape[2:]) >= 1))]
    cand.sort(key=lambda la: -la.nbytes)
    total = sum(la.nbytes for la in cand) or 1
    done = 0
    reports = []
    for layer in cand:
        idx = cur.layers.index(layer)
        done += layer.nbytes
        allowed = budget * done / total + 1e-9
        x_in = _run(cur.layers[:idx], X).reshape((len(X),) + layer.in_shape) if idx else X
        tail = cur.layers[idx + 1:]

        def ok_of(make, x_in=x_in, tail=tail, layer=layer, allowed=allowed):
            def ok(v):
                new = _built(make(v), layer.in_shape)
                return acc0 - _acc(new + tail, x_in, yi) <= allowed
            return ok

        if layer.kind == "dense":
            best = _dense_candidates(layer, x_in, data_aware, method, n_iter, ok_of, seed)
        else:
            best = _conv_candidates(layer, ok_of)
        before_b, before_f = layer.nbytes, layer.flops()
        shape = "x".join(str(s) for s in (layer.arrays["W"].shape))
        if best is None or best[0] >= before_b:
            choice, new = "kept", [layer]
        else:
            choice, new = best[1], _built(best[2], layer.in_shape)
        cur.layers[idx:idx + 1] = new
        acc = _acc(cur.layers, X, yi)
        reports.append(LayerReport(idx, layer.kind, shape, choice, before_b,
                                   sum(la.nbytes for la in new), before_f,
                                   sum(la.flops() for la in new), acc))
        log(f"layer {idx} ({layer.kind} {shape}): {choice}, {before_b:,} -> "
            f"{reports[-1].bytes_after:,} bytes, val acc {100 * acc:.2f}% "
            f"(allowed drop so far {100 * allowed:.2f} points)")
        # later layers' indices shift by the layers inserted
        for r in reports[:-1]:
            if r.index > idx:
                r.index += len(new) - 1
    cur.build()
    acc1 = _acc(cur.layers, X, yi)
    rep = CompressionReport(method, budget, bool(data_aware), acc0, acc1, bytes0, cur.nbytes,
                            flops0, cur.flops(), reports)
    if profile is not None or max_memory is not None:
        _check_targets(cur, rep, profile, max_memory, max_time, batch)
    return cur, rep


def _check_targets(model, rep, profile, max_memory, max_time, batch):
    problems = []
    isz = model.dtype.itemsize
    where = ""
    if profile is not None:
        from hal.profile import load_profile
        prof = load_profile(profile)
        where = f" on {prof.tag}"
        flash = prof.memory.flash_bytes
        xip = flash > 0  # weights stay in flash; only activations take RAM
        peak = predict_peak_bytes(model.layers, model.input_shape, batch, isz,
                                  load_weights=not xip)
        rep.profile = prof.tag
        rep.predicted_peak_bytes = peak
        rep.predicted_time_s = predict_time(model, prof, batch)
        if max_memory is None:
            max_memory = flash if xip else prof.memory.capacity_bytes
        cap = prof.memory.capacity_bytes
        rep.targets["ram_bytes"] = cap
        if peak > cap:
            problems.append(f"the runtime needs {peak:,} bytes of RAM at batch {batch} "
                            f"(capacity {cap:,})")
        if max_time is not None:
            rep.targets["time_s"] = float(max_time)
            if rep.predicted_time_s > max_time:
                problems.append(f"a batch of {batch} takes {rep.predicted_time_s:.4g} s "
                                f"(target {max_time:.4g} s)")
    if max_memory is not None:
        rep.targets["model_bytes"] = int(max_memory)
        if model.nbytes > max_memory:
            problems.append(f"the weights take {model.nbytes:,} bytes (target {int(max_memory):,})")
    if problems:
        raise BudgetInfeasible(
            f"target not met{where} within a {100 * rep.budget:.2f}-point accuracy budget: "
            + "; ".join(problems) + f". The smallest model reached stores {model.nbytes:,} "
            f"bytes ({rep.memory_reduction:.1f}x smaller than {rep.bytes_before:,}) at "
            f"validation accuracy {100 * rep.accuracy_after:.2f}%",
            model=model, report=rep)
