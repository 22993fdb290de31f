"""The learner's predicted memory, buffer by buffer: what ``tinydl plan --explain`` itemizes.

:func:`plan_buffers` lists every buffer a :class:`~tinydl.learner.TinyDLClassifier` allocates
while it streams, each with its shape, dtype, bytes, the term of the paper's memory formula
``m*l + l*n + |param|`` it belongs to (``"m*l"``: the dictionary, ``"l*n"``: the stored codes,
``"|param|"``: the network's parameters, ``"overhead"``: everything the formula leaves out),
and its *phase*:

* ``"steady"``: allocated for the whole run (dictionary, Gram matrix and factor, the OMP
  workspace, the code window, the network and its training state);
* ``"stats"``: while the standardization statistics are fixed (the held-back rows, or with
  ``standardize="running"`` one chunk's scratch);
* ``"stream"``: while a chunk is read, standardized and coded, and the window's ordered copy
  the network retrains on;
* ``"rebuild"``: a rebuild from the raw reservoir (``rebuild="new-class"`` only).

The peak is the steady buffers plus the largest transient phase; :func:`total` computes it and
:func:`counted` returns the buffers whose bytes sum to it (the steady ones and the peak
phase's), so the itemization adds up to the plan's ``footprint_bytes`` exactly.

The transform's part mirrors :class:`~tinydl.transform.StreamingDictionary` (the dictionary
in its storage dtype, with a float32 scale per atom for int8; the Gram matrix and its
Cholesky factor; the scan buffers) and :meth:`hal.backends.numpy.NumpyBackend.prepare_omp`
(the OMP workspace for ``omp_batch`` rows); the network's
:meth:`tinydl.nn.MLPClassifier.footprint`.
"""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence

import numpy as np

from hal.backends.numpy.packed import LI_BLOCK

# the dictionary's storage dtypes and the rule pairing them with the compute dtype live with
# the parameter checks (imported on every fit; this module is the customizer's)
from ._validation import DICTIONARY_DTYPES, storage_dtype

__all__ = ["plan_buffers", "total", "counted", "parts", "format_buffers", "DICTIONARY_DTYPES",
           "dictionary_itemsize", "storage_dtype", "TERMS"]

TERMS = ("m*l", "l*n", "|param|", "overhead")
#: rows of the backend's product tiles (hal.backends.numpy.PRODUCT_ROWS)
_TILE = 16
#: rows of the projection-error scan block (tinydl._algorithm2._SCAN_ROWS)
_SCAN = 16
#: the NumPy backend's OMP cache (hal.backends.numpy.NumpyBackend.cache_bytes)
_CACHE = 5 * 2 ** 19
#: the learner's small Python objects and a checkpoint write's transient (measured, see
#: _buffers)
_OBJECTS = 28 * 1024
_CHECKPOINT = 24 * 1024
#: the learner's small objects fewer with the dense first-layer product (measured, _buffers)
_DENSE_FEWER = 6 * 1024
#: the small objects of each hidden layer past the first (its layer object, parameter and
#: gradient views, workspaces; Adafactor's bound views of its factored state): measured with
#: tracemalloc, an MLPClassifier on compact codes (l=80, k=15, 13 classes) trained 3 epochs,
#: peak less MLPClassifier.footprint, one layer more: (64) -> (64, 32) -> (64, 32, 16) and
#: (128) -> (128, 64): Adafactor +5.0 / +4.9 / +5.0 KB, Adam and SGD +3.1 / +3.0 / +3.2 KB
_LAYER_OBJECTS = {"adafactor": 5 * 1024 + 256, "adam": 3 * 1024 + 512, "sgd": 3 * 1024 + 512}


def dictionary_itemsize(dictionary_dtype, dtype="float32") -> int:
    """Bytes per stored dictionary value (None: the compute dtype)."""
    return np.dtype(dictionary_dtype or dtype).itemsize


_ITEM = {"float64": 8, "float32": 4, "float16": 2, "int8": 1, "int16": 2, "int32": 4,
         "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4}


def _buf(name, shape, dtype, term, phase, note=""):
    # a tuple of plain integers: the customizer prices thousands of candidates
    n = _ITEM[dtype]
    for s in shape:
        n *= s
    return (name, shape, dtype, int(n), term, phase, note)


_FIELDS = ("name", "shape", "dtype", "bytes", "term", "phase", "note")


def _omp_rows(batch: int, l: int, k: int, itemsize: int, block: int = 64) -> int:
    per = (k + 1) * l * itemsize
    fit = max(1, int(_CACHE // per) // block) * block
    return max(2, max(1, min(batch, fit)))


def plan_buffers(*args, **kwargs) -> List[Dict]:
    """Every buffer of a streaming run (:func:`_buffers`'s arguments), see the module
    docstring.

    Returns
    -------
    list of dict
        ``name, shape, dtype, bytes, term, phase, note``.
    """
    return [dict(zip(_FIELDS, (b[0], [int(v) for v in b[1]]) + b[2:]))
            for b in _buffers(*args, **kwargs)]


def plan_total(*args, **kwargs) -> int:
    """:func:`total` of :func:`plan_buffers` (one pass, no dicts: the customizer's search)."""
    steady, phases = 0, {}
    for b in _buffers(*args, **kwargs):
        if b[5] == "steady":
            steady += b[3]
        else:
            phases[b[5]] = phases.get(b[5], 0) + b[3]
    return steady + max(phases.values(), default=0)


def _buffers(m: int, n_classes: int, l: int, k: int, hidden_layer_sizes: Sequence[int],
                 window: int, dtype="float32", batch_size: int = 64, chunk: int = 256,
                 n_standardize: int = 256, standardize="hold", rebuild: str = "never",
                 window_policy: str = "reservoir", dictionary_dtype: Optional[str] = None,
                 omp_batch: int = 256, dt_copy: bool = False,
                 alpha: float = 0.3, decode_rows: int = _TILE,
                 product_rows: int = _TILE, packed_gram: bool = False,
                 optimizer: str = "adam", sparse_product: str = "gather",
                 dictionary_nnz: Optional[int] = None, average: str = "off",
                 lend_scratch: bool = False) -> List[tuple]:
    """Every buffer of a streaming run, as tuples (see :func:`plan_buffers`).

    Parameters
    ----------
    m, n_classes, l, k, hidden_layer_sizes, window, batch_size, chunk
        The learner's settings (``chunk``: rows read at a time).
    dtype : {"float32", "float64"}
        Compute dtype.
    n_standardize : int
    standardize : {"hold", "running", "off"}
    rebuild : {"never", "new-class"}
        ``"new-class"`` keeps each stored sample's raw row.
    window_policy : {"reservoir", "sliding"}
    dictionary_dtype : {None, "float32", "float64", "float16", "int8"}
        Storage of the atoms (None: ``dtype``).
    omp_batch : int
        Rows of the OMP workspace.
    dt_copy : bool
        The backend keeps a contiguous copy of ``D.T`` for its products.
    alpha : float
        The Wp threshold (below ~0.14 the explicit residual's tiles are counted).
    decode_rows : int
        Atoms a stored dictionary decodes at a time (:func:`tinydl.lowmem.plan_backend`).
    product_rows : int
        Rows of the backend's product tiles, also the Wp test's block
        (:func:`tinydl.lowmem.plan_backend`).
    packed_gram : bool
        A stored dictionary's Li packed below G's diagonal while it fills, dropped when
        full (:mod:`hal.backends.numpy.packed`): no ``transform.Li``; G's diagonal and one
        (16, l) block of Li's rows (product_rows rows if fewer) instead.
    optimizer : {"adam", "adafactor", "sgd"}
        The network's optimizer (its state: :meth:`tinydl.nn.optim.Optimizer.state_bytes`).
    sparse_product : {"gather", "dense"}
        The first layer's product on compact codes: a (batch x k, units) gather scratch and
        the backend's scatter block, or the layer's own scatter block and index table.
    dictionary_nnz : int, optional
        int8 atoms kept as their ``dictionary_nnz`` largest entries
        (:class:`hal.backends.numpy.stored.SparseAtoms`): (l, nnz) uint16 columns and int8
        values instead of (l, m) int8, and the decode's scatter indices.
    average : {"off", "ema"}
        The learner's weight average: ``"ema"`` adds ``|param|`` float16 values, less what
        the OMP workspace's idle scratch holds (the learner lends it while it retrains).
    lend_scratch : bool
        Whether the stream is coded on NumPy's Batch-OMP, whose workspace lends its scratch
        (:data:`hal.backends.numpy.omp.OMP_SCRATCH`; :func:`tinydl.lowmem.lends_omp_scratch`
        says where); False prices the whole stash.

    Returns
    -------
    list of dict
        ``name, shape, dtype, bytes, term, phase, note``.
    """
    dt = _dtype_name(dtype)
    ddt = _dtype_name(dictionary_dtype or dt)
    it = _ITEM[dt]
    lb, kk = max(int(l), 2), max(min(int(k), int(l)), 1)
    m, chunk = int(m), int(chunk)
    slots = int(window)
    if window_policy == "reservoir":
        slots = max(1, int(window) // int(n_classes)) * int(n_classes)
    hidden = tuple(int(h) for h in hidden_layer_sizes)
    rt = int(product_rows)  # product tile rows (16 by default: _TILE, _SCAN)
    S = "steady"
    if dictionary_nnz:
        w = min(int(dictionary_nnz), m)
        out = [_buf("transform.D idx", (lb, w), "uint16", "m*l", S,
                    "sparse atoms: each one's largest entries' columns"),
               _buf("transform.D values", (lb, w), "int8", "m*l", S, "and their int8 values"),
               _buf("transform.scatter", (2, min(int(decode_rows), lb), w), "int64",
                    "overhead", S, "the decode's row and column indices")]
    else:
        out = [_buf("transform.D", (lb, m), ddt, "m*l", S, "the atoms, in their stored dtype")]
    if ddt == "int8":
        out.append(_buf("transform.D_scale", (lb,), "float32", "m*l", S,
                        "int8 atoms: value = scale * q"))
    packed = bool(packed_gram) and ddt != dt
    if packed:
        out += [_buf("transform.G", (lb, lb), dt, "overhead", S,
                     "Gram matrix D D^T, Li below its diagonal while D fills"),
                _buf("transform.Gdiag", (lb,), dt, "overhead", S, "G's diagonal (packed)"),
                _buf("basis.Li block", (min(LI_BLOCK, rt, lb), lb), dt, "overhead", S,
                     "packed Li's rows, a block at a time")]
    else:
        out += [_buf("transform.G", (lb, lb), dt, "overhead", S, "Gram matrix D D^T"),
                _buf("transform.Li", (lb, lb), dt, "overhead", S,
                     "inverse Cholesky factor of G: Wp from D a")]
    out += [_buf("basis.c,z", (2, rt, lb), dt, "overhead", S, "D a and Li D a"),
            # the row-independent products' tiles, grown to the widest operands: (16, m) in
            # and (16, l) out, and (16, m) out too where the Wp test takes the explicit
            # residual (alpha^2 below 2 x 0.01, hal.backends.numpy.basis); the in tile is
            # also the Wp test's padded rows and OMP's padded chunk rows (one tile, not
            # three: NumpyBackend.product_tiles)
            _buf("backend.tiles", (rt, m + (m if alpha * alpha < 0.02 else lb)), dt,
                 "overhead", S, "the row-independent product tiles (in, out)")]
    if ddt != dt:
        out.append(_buf("transform.decode", (min(int(decode_rows), lb), m), dt, "overhead", S,
                        "atoms decoded to the compute dtype a tile at a time"))
    if standardize != "off" and rebuild == "never" or rebuild == "new-class":
        out.append(_buf("standardizer.mean,scale", (2, m), dt, "overhead", S, ""))
    # the encode plan's OMP workspace (NumpyBackend.prepare_omp) for b rows
    b = _omp_rows(int(omp_batch), lb, kk, it)
    out += [_buf("omp.corr,abs", (2, b, lb), dt, "overhead", S, ""),
            _buf("omp.Y", (kk + 1, b, lb), dt, "overhead", S, ""),
            _buf("omp.state", (kk * kk + 6 * kk + 1 + 5, b), dt, "overhead", S,
                 "coef, u, ru, b, cj, nrho, gamma, vec, xx"),
            _buf("omp.index", (kk + 2, b), "int64", "overhead", S, "j, fj, rowoff"),
            _buf("omp.pad_out", (lb, rt), dt, "overhead", S, "")]
    if ddt == dt:
        # while the dictionary fills, the float dictionary's encode plan holds a contiguous
        # copy of G's leading (n, n) block (a view of G once it is full); a stored (float16
        # / int8) one reads the block in place (hal.backends.numpy.stored)
        out.append(_buf("omp.G", (lb, lb), dt, "overhead", S,
                        "the plan's contiguous Gram copy"))
    if dt_copy:
        out.append(_buf("omp.DT", (m, lb), dt, "overhead", S, "contiguous copy of D^T"))
    # the window: compact codes (the paper's l*n dense codes, stored as k indices + values),
    # the indices and labels in the narrowest integers that hold them (tinydl.window)
    out += [_buf("window.indices", (slots, kk), _index_dtype(int(l)), "l*n", S,
                 "compact codes"),
            _buf("window.values", (slots, kk), dt, "l*n", S, "compact codes"),
            _buf("window.labels", (slots,), _label_dtype(int(n_classes)), "overhead", S, "")]
    if rebuild == "new-class":
        out.append(_buf("window.raw", (slots, m), dt, "overhead", S,
                        "raw-sample reservoir a rebuild re-learns from"))
    net = _network_parts(int(l), kk, hidden, slots, int(n_classes), dt, int(batch_size),
                         str(optimizer), str(sparse_product))
    for key in ("parameters", "gradients", "optimizer", "activations", "batch", "labels"):
        out.append((f"network.{key}", (), dt, int(net[key]),
                    "|param|" if key == "parameters" else "overhead", S,
                    "MLPClassifier.footprint"))
    if average == "ema":
        # the weight average (TinyDLClassifier average="ema"): the averaged weights stay in
        # the parameter buffer, the training weights wait in the gradient buffer between
        # updates, and the average waits in float16 while they train: over the OMP
        # workspace's scratch first (hal.backends.numpy.omp.OMP_SCRATCH: Y, corr, abs and
        # u, idle while the network trains; the learner lends them, tinydl.marks), and
        # here for the rest
        lent = (((kk + 1) * b * lb + 2 * b * lb + kk * kk * b) * it // 2
                if lend_scratch else 0)
        out.append(_buf("network.average",
                        (max(0, int(net["parameters"]) // it - lent),), "float16", "overhead",
                        S, "the averaged weights' float16 stash while the network trains, "
                        "less what the OMP scratch holds"))
    out.append(("network.loss_curve", (), "object", _loss_curve_bytes(),
                "overhead", S, "the last passes' mean loss (Python floats)"))
    # the learner's small Python objects: array headers and views (each layer's parameter
    # and gradient views, the workspaces' slices), plans, dicts (measured with tracemalloc
    # in `tinydl fit` on UJIIndoorLoc's 256 KiB plan: 28 KB in 256 allocations under 500 B;
    # about as many whatever the sizes: negligible at m=5625, a tenth of a 256 KiB budget)
    # (the dense first-layer product makes no sparse-layer plan nor its views: measured
    # 6.1 KB fewer, the same 256 KiB-class plan streamed with either product)
    # (each hidden layer past the first adds its own: _LAYER_OBJECTS)
    out.append(("learner.objects", (), "object",
                _OBJECTS - (_DENSE_FEWER if sparse_product == "dense" else 0)
                + _LAYER_OBJECTS[str(optimizer)] * max(0, len(hidden) - 1), "overhead", S,
                "small Python objects: array headers, views, plans, dicts"))
    h1 = hidden[0] if hidden else int(n_classes)
    if sparse_product == "gather":
        out.append(_buf("backend.gather", (int(batch_size) * kk, h1), dt, "overhead", S,
                        "the sparse first layer's gather scratch"))
        # the sparse first layer's plan (hal.backend SparseLayerPlan): the block its
        # backward scatters a mini-batch's codes into, and the row offsets of that block
        out.append(_buf("backend.scatter", (int(batch_size), int(l) + 2), dt, "overhead", S,
                        "the sparse first layer's scatter block and row offsets"))
    else:
        # "dense": the layer's own scatter block is among its workspaces (network.
        # activations); its flat index table (batch, k) is made on first use
        out.append(_buf("network.scatter index", (int(batch_size), kk), "int64", "overhead",
                        S, "the dense first layer's flat scatter indices"))
    code = 4 + it
    # (stats) fixing the standardization (rebuild="never"; a rebuild fixes its own)
    if rebuild == "never" and standardize == "hold":
        held = 0 if chunk >= n_standardize else (2 * (n_standardize - 1) + chunk)
        out += [_buf("stats.read", (chunk, m), dt, "overhead", "stats", "the chunk read"),
                _buf("stats.held", (held, m), dt, "overhead", "stats",
                     "rows held back, and their concatenation with a chunk"),
                _buf("stats.deviations", (n_standardize, m), "float64", "overhead", "stats",
                     "fit_stats' float64 temporaries")]
    elif rebuild == "never" and standardize == "running":
        # the running moments live until the statistics are fixed (tinydl.warmup)
        out += [_buf("standardizer.moments", (2, m), "float64", "overhead", "stats",
                     "running mean and M2 of the warm-up rows"),
                _buf("stats.read", (chunk, m), dt, "overhead", "stats", "the chunk read"),
                _buf("stats.deviations", (chunk, m), dt, "overhead", "stats",
                     "the chunk's squared deviations")]
    # (stream) one chunk read, standardized and coded, then a retraining on views of the
    # window (no copy of it: CodeWindow.train_view) and the network's per-call buffers
    # (measured: 16 B a sample); a reservoir that has not filled every class's share passes
    # its occupied slots (8 B a slot), priced for "auto" too (it may resolve to a reservoir)
    rows = max(chunk, n_standardize) if (rebuild == "never" and standardize == "hold") \
        else chunk
    out += [_buf("stream.read", (chunk, m), dt, "overhead", "stream", "the chunk read"),
            _buf("stream.standardized", (rows, m), dt, "overhead", "stream", ""),
            _buf("stream.codes", (2 * rows, kk * code), "uint8", "overhead", "stream",
                 "the chunk's codes and their scaled copy")]
    if window_policy != "sliding":
        out.append(_buf("stream.window rows", (slots,), "int64", "overhead", "stream",
                        "a filling reservoir's occupied slots the network retrains on"))
    out.append(_buf("stream.training", (22 * 1024 + slots * 16,), "uint8",
                    "overhead", "stream", "the network's per-call buffers"))
    # (checkpoint) writing a checkpoint (tinydl.checkpoint, every 16 x n_batch samples in
    # `tinydl fit`, and at the end): the zip member and file buffers and the arrays' dicts
    # (measured: 21-25 KB from m=520 to m=5625); the arrays are written from their own
    # memory (a block of G or Li row by row, tinydl.io)
    out.append(_buf("checkpoint.write", (_CHECKPOINT,), "uint8", "overhead", "checkpoint",
                    "zip and file buffers, the state's dicts"))
    ob = max(int(omp_batch), 1)
    if chunk == 1 or ob == 1 or chunk % ob == 1:
        # a lone row is coded as a pair (its concatenation with itself), so that its code is
        # bit-identical to the same row's in any batch (hal.backends.numpy BatchOMP and its
        # stored-atom plan): with chunks of one row, or one-row OMP batches, every row
        out.append(_buf("stream.lone pair", (2, m), dt, "overhead", "stream",
                        "a lone row coded as a pair (bit-identical to any batch)"))
    if rebuild == "new-class":
        nb = min(n_standardize, slots)
        out += [_buf("rebuild.read", (chunk, m), dt, "overhead", "rebuild", ""),
                _buf("rebuild.block", (nb, m), "float64", "overhead", "rebuild",
                     "the statistics' deviations, then a gathered block and new codes"),
                _buf("rebuild.codes", (2 * slots, kk * code), "uint8", "overhead",
                     "rebuild", "")]
    return out


@functools.lru_cache(maxsize=None)
def _index_dtype(l: int) -> str:
    from .window import index_dtype
    return index_dtype(l).name


@functools.lru_cache(maxsize=None)
def _label_dtype(n_classes: int) -> str:
    from .window import label_dtype
    return label_dtype(n_classes).name


@functools.lru_cache(maxsize=None)
def _dtype_name(dtype) -> str:
    # the customizer prices ~10^5 options: np.dtype(...).name is a visible share of it
    return np.dtype(dtype).name


@functools.lru_cache(maxsize=None)
def _loss_curve_bytes() -> int:
    """The learner's bounded loss curve: a list of Python floats, an 8-byte pointer and a
    24-byte float object a pass (imported once: the customizer prices many candidates)."""
    from .learner import LOSS_CURVE_LEN
    return 32 * LOSS_CURVE_LEN


@functools.lru_cache(maxsize=1 << 16)
def _network_parts(l, k, hidden, window, n_classes, dtype, batch_size, optimizer="adam",
                   sparse_product="gather") -> Dict[str, int]:
    """The network's training footprint on compact codes
    (:meth:`tinydl.nn.MLPClassifier.footprint`), cached: the search asks for it often."""
    from .nn import MLPClassifier
    net = MLPClassifier(hidden_layer_sizes=hidden, batch_size=batch_size, dtype=dtype,
                        optimizer=optimizer, sparse_product=sparse_product)
    return dict(net.footprint(batch_size, l, n_classes, n_samples=window, sparse_k=k))


def _phase_bytes(buffers) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for b in buffers:
        out[b["phase"]] = out.get(b["phase"], 0) + b["bytes"]
    return out


def peak_phase(buffers) -> str:
    """The transient phase that sets the peak."""
    ph = _phase_bytes(buffers)
    trans = {k: v for k, v in ph.items() if k != "steady"}
    return max(trans, key=lambda k: (trans[k], k)) if trans else "steady"


def counted(buffers) -> List[Dict]:
    """The buffers alive at the peak: the steady ones and the peak phase's."""
    ph = peak_phase(buffers)
    return [b for b in buffers if b["phase"] in ("steady", ph)]


def total(buffers) -> int:
    """The predicted peak bytes."""
    return int(sum(b["bytes"] for b in counted(buffers)))


def parts(buffers) -> Dict[str, int]:
    """Bytes by part (the plan's ``footprint`` dict): the steady buffers grouped by their
    owner (``transform``, ``omp_workspace``, ``window``, ``raw_rows``, ``network``,
    ``standardizer``), the peak phase as ``transient``, and ``total``."""
    out = {"transform": 0, "omp_workspace": 0, "window": 0, "raw_rows": 0, "network": 0,
           "standardizer": 0, "backend": 0}
    for b in buffers:
        if b["phase"] != "steady":
            continue
        owner = b["name"].split(".")[0]
        key = {"omp": "omp_workspace"}.get(owner, owner)
        if b["name"].startswith("window.raw"):
            key = "raw_rows"
        out[key] = out.get(key, 0) + b["bytes"]
    ph = peak_phase(buffers)
    out["transient"] = int(sum(b["bytes"] for b in buffers if b["phase"] == ph))
    out["total"] = total(buffers)
    return out


def by_term(buffers) -> Dict[str, int]:
    """Counted bytes by formula term."""
    out = {t: 0 for t in TERMS}
    for b in counted(buffers):
        out[b["term"]] += b["bytes"]
    return out


def format_buffers(buffers) -> str:
    """The itemized footprint as a table (the counted buffers; the peak phase named)."""
    from .plan import _fmt_bytes
    ph = peak_phase(buffers)
    rows = counted(buffers)
    lines = [f"predicted footprint, buffer by buffer (steady, plus the peak phase '{ph}'):",
             f"  {'buffer':<24}{'shape':<18}{'dtype':<9}{'bytes':>11}  term"]
    for b in rows:
        shape = "x".join(map(str, b["shape"])) if b["shape"] else "-"
        lines.append(f"  {b['name']:<24}{shape:<18}{b['dtype']:<9}{b['bytes']:>11,}  "
                     f"{b['term']}")
    tot = total(buffers)
    terms = by_term(buffers)
    lines.append(f"  {'total':<51}{tot:>11,}  ({_fmt_bytes(tot)})")
    lines.append("  by term: " + ", ".join(f"{t} {terms[t]:,}" for t in TERMS))
    return "\n".join(lines)


def measured_buffers(learner) -> Dict[str, int]:
    """Bytes of the learner's live buffers, under the names :func:`plan_buffers` gives them
    (those that can be read off a learner after a run; transients cannot).

    Parameters
    ----------
    learner : TinyDLClassifier

    Returns
    -------
    dict
        Buffer name -> bytes.
    """
    out: Dict[str, int] = {}

    def put(name, *arrays):
        n = sum(int(a.nbytes) for a in arrays if isinstance(a, np.ndarray))
        if n:
            out[name] = out.get(name, 0) + n

    tr = getattr(learner, "transform_", None)
    d = getattr(tr, "__dict__", {})
    put("transform.D", d.get("_D"))
    put("transform.D_scale", d.get("_D_scale"))
    put("transform.G", d.get("_G"))
    put("transform.Li", d.get("_Li"))
    put("transform.Gdiag", d.get("_Gd"))
    bws = d.get("_bws")
    if bws is not None:
        put("basis.rows", getattr(bws, "_xb", None))  # None: the backend's shared tile
        put("basis.c,z", getattr(bws, "_cflat", None), getattr(bws, "_zflat", None))
        put("basis.Li block", getattr(getattr(bws, "packed", None), "_blk", None))
        plan = getattr(bws, "_plan", None)
        ws = getattr(plan, "_ws", None)
        arrays = getattr(ws, "arrays", {}) or {}
        put("omp.corr,abs", arrays.get("corr"), arrays.get("abs"))
        put("omp.Y", arrays.get("Y"))
        put("omp.state", *(arrays.get(k) for k in ("coef", "u", "ru", "b", "cj", "nrho",
                                                     "gamma", "vec", "xx", "ok", "act")))
        put("omp.index", *(arrays.get(k) for k in ("j", "fj", "rowoff")))
        put("omp.pad_in", arrays.get("pad_in"))
        put("omp.pad_out", arrays.get("pad_out"))
        put("omp.DT", arrays.get("DT"))
        pg = getattr(plan, "G", None)
        if isinstance(pg, np.ndarray) and not (isinstance(d.get("_G"), np.ndarray)
                                               and np.shares_memory(pg, d["_G"])):
            put("omp.G", pg)  # a copy of its own, not a view of the transform's G
    be = getattr(learner, "_backend_obj", None)
    bd = getattr(be, "__dict__", {})
    tiles = []
    for v in (bd.get("_tiles") or {}).values():
        tiles.extend(v if isinstance(v, (list, tuple)) else [v])
    put("backend.tiles", *tiles)
    put("backend.gather", bd.get("_gbuf"))
    st = getattr(learner, "standardizer_", None)
    if st is not None:
        put("standardizer.mean,scale", st.mean_, st.scale_)
        sd = st.__dict__
        put("standardizer.moments", sd.get("_mean"), sd.get("_m2"))
    win = getattr(learner, "window_", None)
    if win is not None:
        put("window.indices", win.indices)
        put("window.values", win.values)
        put("window.labels", win.labels)
        put("window.raw", win.raw)
    net = getattr(getattr(learner, "network_", None), "network_", None)
    if net is not None:
        put("network.parameters", getattr(net, "params", None))
        put("network.gradients", getattr(net, "grads", None))
        layers = getattr(net, "layers", None) or [None]
        put("network.scatter index", getattr(layers[0], "_flat", None))
    opt = getattr(getattr(learner, "network_", None), "optimizer_", None)
    state = getattr(opt, "state", None)
    if isinstance(state, dict):
        put("network.optimizer", *state.values())
    return out
