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

__all__ = ["plan_buffers", "total", "counted", "parts", "format_buffers", "DICTIONARY_DTYPES",
           "dictionary_itemsize", "TERMS"]

#: the dictionary's storage dtypes (compute stays in the learner's dtype)
DICTIONARY_DTYPES = ("float32", "float64", "float16", "int8")
TERMS = ("m*l", "l*n", "|param|", "overhead")
#: rows of the backend's product tiles (hal.backends.numpy.PRODUCT_ROWS)
_TILE = 16
#: rows of the projection-error scan block (tinydl._algorithm2._SCAN_ROWS)
_SCAN = 16
#: the NumPy backend's OMP cache (hal.backends.numpy.NumpyBackend.cache_bytes)
_CACHE = 5 * 2 ** 19


def dictionary_itemsize(dictionary_dtype, dtype="float32") -> int:
    """Bytes per stored dictionary value (None: the compute dtype)."""
    return np.dtype(dictionary_dtype or dtype).itemsize


def _buf(name, shape, dtype, term, phase, note=""):
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return dict(name=name, shape=list(shape), dtype=np.dtype(dtype).name, bytes=int(nbytes),
                term=term, phase=phase, note=note)


def _omp_rows(batch: int, l: int, k: int, itemsize: int, block: int = 64) -> int:
    per = (k + 1) * l * itemsize
    fit = max(1, int(_CACHE // per) // block) * block
    return max(2, max(1, min(batch, fit)))


def plan_buffers(m: int, n_classes: int, l: int, k: int, hidden_layer_sizes: Sequence[int],
                 window: int, dtype="float32", batch_size: int = 64, chunk: int = 256,
                 n_standardize: int = 256, standardize="hold", rebuild: str = "never",
                 window_policy: str = "reservoir", dictionary_dtype: Optional[str] = None,
                 omp_batch: int = 256, dt_copy: bool = False) -> List[Dict]:
    """Every buffer of a streaming run, see the module docstring.

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

    Returns
    -------
    list of dict
        ``name, shape, dtype, bytes, term, phase, note``.
    """
    dt = np.dtype(dtype)
    ddt = np.dtype(dictionary_dtype or dt)
    lb, kk = max(int(l), 2), max(min(int(k), int(l)), 1)
    slots = int(window)
    if window_policy == "reservoir":
        slots = max(1, int(window) // int(n_classes)) * int(n_classes)
    S = "steady"
    out = [_buf("transform.D (atoms)", (lb, m), ddt, "m*l", S, "the dictionary, stored dtype")]
    if ddt == np.int8:
        out.append(_buf("transform.D_scale (per-atom)", (lb,), np.float32, "m*l", S,
                        "int8 atoms: value = scale * q"))
    out += [_buf("transform.G (Gram)", (lb, lb), dt, "overhead", S, "D D^T for Batch-OMP"),
            _buf("transform.L (Cholesky)", (lb, lb), dt, "overhead", S,
                 "G = L L^T: the projection error from D a"),
            _buf("transform.scan", (_SCAN, lb), dt, "overhead", S, "D a of a scan block"),
            _buf("transform.rowbuf", (_SCAN, m), dt, "overhead", S, "padded scan rows"),
            _buf("backend.tiles", (2 * _TILE, m), dt, "overhead", S,
                 "the product tiles (in and out)")]
    if ddt != dt:
        out.append(_buf("transform.decode tile", (_TILE, m), dt, "overhead", S,
                        "atoms decoded to the compute dtype a tile at a time"))
    if standardize != "off":
        out.append(_buf("standardizer.mean,scale", (2, m), dt, "overhead", S, ""))
    if standardize == "running":
        out.append(_buf("standardizer.moments", (2, m), np.float64, "overhead", S,
                        "running mean and M2 of the warm-up rows"))
    # the OMP workspace (NumpyBackend.prepare_omp) for b rows
    b = _omp_rows(int(omp_batch), lb, kk, dt.itemsize)
    out += [_buf("omp.corr,abs", (2, b, lb), dt, "overhead", S, ""),
            _buf("omp.Y", (kk + 1, b, lb), dt, "overhead", S, ""),
            _buf("omp.small", (kk * kk + 5 * kk + kk + 1 + 6, b), dt, "overhead", S,
                 "coef, u, ru, b, cj, nrho, gamma, vec, xx"),
            _buf("omp.index", (kk + 2, b), np.intp, "overhead", S, "j, fj, rowoff"),
            _buf("omp.pad_in,pad_out", (_TILE * (m + lb),), dt, "overhead", S, ""),
            _buf("omp.Gn", (lb, lb), dt, "overhead", S, "contiguous Gram copy")]
    if dt_copy:
        out.append(_buf("omp.DT", (m, lb), dt, "overhead", S, "contiguous copy of D^T"))
    # the window: compact codes (the paper's l*n dense codes, stored as k indices + values)
    out += [_buf("window.indices", (slots, kk), np.int32, "l*n", S, "compact codes"),
            _buf("window.values", (slots, kk), dt, "l*n", S, "compact codes"),
            _buf("window.labels", (slots,), np.int64, "overhead", S, "")]
    if rebuild == "new-class":
        out.append(_buf("window.raw (reservoir)", (slots, m), dt, "overhead", S,
                        "raw rows a rebuild re-learns from"))
    net = _network_parts(int(l), kk, tuple(int(h) for h in hidden_layer_sizes), slots,
                         int(n_classes), dt.name, int(batch_size))
    for key in ("parameters", "gradients", "optimizer", "activations", "batch", "labels"):
        out.append(dict(name=f"network.{key}", shape=[], dtype=dt.name, bytes=int(net[key]),
                        term="|param|" if key == "parameters" else "overhead", phase=S,
                        note="MLPClassifier.footprint"))
    code = 4 + dt.itemsize
    # (stats) fixing the standardization
    if standardize == "hold":
        held = 0 if chunk >= n_standardize else (2 * (n_standardize - 1) + chunk)
        out += [_buf("stats.read chunk", (chunk, m), dt, "overhead", "stats", ""),
                _buf("stats.held rows", (held, m), dt, "overhead", "stats",
                     "held back, and their concatenation with a chunk"),
                _buf("stats.deviations", (n_standardize, m), np.float64, "overhead", "stats",
                     "fit_stats' float64 temporaries")]
    elif standardize == "running":
        out += [_buf("stats.read chunk", (chunk, m), dt, "overhead", "stats", ""),
                _buf("stats.chunk deviations", (chunk, m), dt, "overhead", "stats", "")]
    # (stream) one chunk read, standardized, coded; the window's ordered copy at retraining
    rows = max(chunk, n_standardize) if standardize == "hold" else chunk
    out += [_buf("stream.read chunk", (chunk, m), dt, "overhead", "stream", ""),
            _buf("stream.standardized", (rows, m), dt, "overhead", "stream", ""),
            _buf("stream.codes", (2 * rows, kk), np.dtype(f"V{code}"), "overhead", "stream",
                 "the chunk's codes and their scaled copy"),
            _buf("stream.window copy", (slots, kk * code + 8), np.uint8, "overhead", "stream",
                 "the ordered window the network retrains on")]
    if rebuild == "new-class":
        nb = min(n_standardize, slots)
        out += [_buf("rebuild.read chunk", (chunk, m), dt, "overhead", "rebuild", ""),
                _buf("rebuild.block", (nb, m), np.float64, "overhead", "rebuild",
                     "the statistics' deviations, then a gathered block and new codes"),
                _buf("rebuild.codes", (2 * slots, kk), np.dtype(f"V{code}"), "overhead",
                     "rebuild", "")]
    return out


@functools.lru_cache(maxsize=4096)
def _network_parts(l, k, hidden, window, n_classes, dtype, batch_size) -> Dict[str, int]:
    """The network's training footprint on compact codes
    (:meth:`tinydl.nn.MLPClassifier.footprint`), cached: the search asks for it often."""
    from .nn import MLPClassifier
    # the learner's default optimizer (Adam: two state buffers per parameter)
    net = MLPClassifier(hidden_layer_sizes=hidden, batch_size=batch_size, dtype=dtype,
                        optimizer="adam")
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
             f"  {'buffer':<32}{'shape':<18}{'dtype':<9}{'bytes':>11}  term"]
    for b in rows:
        shape = "x".join(map(str, b["shape"])) if b["shape"] else "-"
        dtn = b["dtype"] if not b["dtype"].startswith("void") else "code"
        lines.append(f"  {b['name']:<32}{shape:<18}{dtn:<9}{b['bytes']:>11,}  {b['term']}")
    tot = total(buffers)
    terms = by_term(buffers)
    lines.append(f"  {'total':<59}{tot:>11,}  ({_fmt_bytes(tot)})")
    lines.append("  by term: " + ", ".join(f"{t} {terms[t]:,}" for t in TERMS))
    return "\n".join(lines)
