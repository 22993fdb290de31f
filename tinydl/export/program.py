"""The execution phase of a model as a list of ops the C export emits one call each.

An op is a dict: ``kind``, its weight matrices as :class:`Mat` (rows in the order the C
kernel reads them: one row per output unit, filter or atom), its other arrays and integers.

* a :class:`~tinydl.learner.TinyDLClassifier`: ``standardize`` (when on), ``omp`` on the
  learned atoms with the Gram matrix, ``gather`` (the first dense layer on the k-sparse code,
  the code scaled by the learner's ``sqrt(k / m)``), then ``dense`` and activations;
* a :class:`~tinydl.compress.CompressedModel` (``tinydl compress``): one op per layer
  (``dense``, ``factored``, ``sparse``, ``conv``, ``ksep``, ``maxpool``/``avgpool``, the
  activations, ``softmax``; ``flatten`` is a no-op on the flat C buffers).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

__all__ = ["Mat", "program_of", "forward_dense", "ELEMENTWISE"]

#: ops computed in place on their input buffer
ELEMENTWISE = ("relu", "tanh", "sigmoid", "softmax")


class Mat:
    """A weight matrix: float32 rows, or int8 rows times one float32 scale per row.

    ``ragged``: row ``o`` is ``values[indptr[o]:indptr[o + 1]]`` (a sparse layer's columns).
    """

    def __init__(self, f=None, q=None, s=None, indptr=None):
        self.f = None if f is None else np.ascontiguousarray(f, np.float32)
        self.q = None if q is None else np.ascontiguousarray(q, np.int8)
        self.s = None if s is None else np.ascontiguousarray(s, np.float32)
        self.indptr = indptr
        #: the per-channel scales index columns (the gathered first layer: atoms x units)
        self.by_column = False

    @property
    def shape(self):
        return (self.f if self.f is not None else self.q).shape

    @property
    def nbytes(self) -> int:
        if self.f is not None:
            return int(self.f.nbytes)
        return int(self.q.nbytes + self.s.nbytes)

    def row_of(self) -> np.ndarray:
        """The row index of every stored value (flattened order)."""
        v = self.f if self.f is not None else self.q
        if self.indptr is None:
            return np.repeat(np.arange(v.shape[0]), int(np.prod(v.shape[1:])))
        return np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    def dense(self) -> np.ndarray:
        """The values the C kernel multiplies by, as float32 (int8 dequantized)."""
        if self.f is not None:
            return self.f
        if self.by_column:
            return (self.q.astype(np.float32) * self.s[None, :]).astype(np.float32)
        scale = self.s[self.row_of()].reshape(self.q.shape)
        return (self.q.astype(np.float32) * scale).astype(np.float32)


def _rows(a) -> Mat:
    return Mat(f=np.asarray(a, np.float32))


def program_of(model) -> Dict:
    """``{"ops": [...], "n_features": m, "n_outputs": C, "classes": labels, "source": str}``
    for a fitted :class:`TinyDLClassifier` or a :class:`CompressedModel`."""
    from ..compress.model import CompressedModel
    from ..learner import TinyDLClassifier
    if isinstance(model, TinyDLClassifier):
        return _tinydl_program(model)
    if isinstance(model, CompressedModel):
        return _compressed_program(model)
    raise TypeError(f"cannot export a {type(model).__name__}: expected a fitted "
                    "TinyDLClassifier or a CompressedModel (tinydl compress)")


def _tinydl_program(clf) -> Dict:
    clf._check_fitted()
    if np.dtype(clf.dtype) != np.float32:
        raise ValueError(f"the C export computes in float32; this model is {clf.dtype} "
                         "(train with dtype='float32')")
    tr = clf.transform_
    n_atoms = int(tr.n_atoms_)
    m = int(clf.n_features_in_)
    ops: List[Dict] = []
    st = clf.standardizer_
    if st.enabled:
        ops.append({"kind": "standardize", "mean": np.asarray(st.mean_, np.float32),
                    "scale": np.asarray(st.scale_, np.float32), "n": m})
    tol = tr.tol
    k = int(min(clf.k, n_atoms)) if n_atoms else 0
    # the atoms the transform computes with: a dictionary stored as float16 or int8 decoded
    # (scale included; the raw int8 values gave other codes), sparse atoms made dense
    ops.append({"kind": "omp", "D": _rows(tr.dictionary_ if n_atoms else tr._D[:0]),
                "G": np.ascontiguousarray(tr._gram_matrix(), np.float32),
                "k": k, "l": n_atoms, "m": m,
                "tol2": -1.0 if tol is None else float(tol) ** 2})
    dense = [la for la in clf.network_.network_.layers if la.kind == "dense"]
    acts = [la.kind for la in clf.network_.network_.layers
            if la.kind not in ("dense", "dropout")]
    first = dense[0]
    ops.append({"kind": "gather", "W": _columns(np.asarray(first.p["W"])[:n_atoms]),
                "b": np.asarray(first.p["b"], np.float32), "n": int(first.units),
                "vscale": float(clf._code_scale)})
    for i, la in enumerate(dense[1:]):
        ops.append({"kind": acts[i], "n": int(dense[i].units)})
        ops.append({"kind": "dense", "W": _rows(np.asarray(la.p["W"]).T),
                    "b": np.asarray(la.p["b"], np.float32), "n": int(la.units)})
    return {"ops": ops, "n_features": m, "n_outputs": int(dense[-1].units),
            "classes": np.asarray(clf.classes_), "source": "TinyDLClassifier"}


def _columns(W) -> Mat:
    """The gathered first layer: W (atoms x units) as stored, its per-channel (unit) scales
    indexing columns (see :mod:`.quantize`)."""
    m = Mat(f=np.asarray(W, np.float32))
    m.by_column = True
    return m


def _weight(a, name, rows_first: bool) -> Mat:
    """Layer array ``a[name]`` as C rows: float32, or int8 with its per-output-channel
    ``<name>_scale`` (tinydl.compress stores int8 weights so).  ``rows_first``: the output
    channels are the array's first axis (a convolution's filters); else its last (columns of
    a (in, out) matrix), transposed here to one row per output."""
    w = np.asarray(a[name])
    if w.dtype == np.int8:
        s = np.asarray(a[name + "_scale"], np.float32)
        return Mat(q=w.reshape(w.shape[0], -1) if rows_first else w.T, s=s)
    w = w.astype(np.float32)
    return _rows(w.reshape(w.shape[0], -1) if rows_first else w.T)


def _compressed_program(cm) -> Dict:
    from ..compress.kernels import conv_geom
    cm.check_finite()
    ops: List[Dict] = []
    for la in cm.layers:
        a, k = la.arrays, la.kind
        n = int(np.prod(la.out_shape))
        if k == "dense":
            ops.append({"kind": "dense", "W": _weight(a, "W", False), "b": a["b"], "n": n})
        elif k == "factored":
            ops.append({"kind": "factored", "U": _weight(a, "U", False),
                        "V": _weight(a, "V", False), "b": a["b"], "n": n,
                        "r": int(a["U"].shape[1])})
        elif k == "sparse_factored":
            indptr = np.asarray(a["indptr"], np.int32)
            d = np.asarray(a["data"])
            data = Mat(q=d, s=a["data_scale"], indptr=indptr) if d.dtype == np.int8 else \
                Mat(f=d, indptr=indptr)
            ops.append({"kind": "sparse", "B": _weight(a, "B", False), "data": data,
                        "indptr": indptr, "indices": np.asarray(a["indices"]), "b": a["b"],
                        "n": n, "r": int(a["B"].shape[1])})
        elif k in ("conv", "kernel_separated"):
            g = conv_geom(la, la.in_shape)
            op = {"kind": "conv" if k == "conv" else "ksep", "geom": g, "b": a["b"], "n": n}
            if k == "conv":
                op["W"] = _weight(a, "W", True)
            else:
                v = np.asarray(a["v"])
                op["v"] = _rows(v.reshape(-1, v.shape[2]))
                op["h"] = _rows(np.asarray(a["h"]).reshape(g[3], -1))
                op["r"] = int(v.shape[1] // g[3])
            ops.append(op)
        elif k in ("maxpool", "avgpool"):
            c, h, w = la.in_shape
            kh, kw = la.cfg["pool_size"]
            sh, sw = la.cfg.get("stride", (kh, kw))
            ops.append({"kind": k, "geom": (c, h, w, kh, kw, sh, sw) + tuple(la.out_shape[1:]),
                        "n": n})
        elif k in ELEMENTWISE:
            ops.append({"kind": k, "n": n})
        elif k == "flatten":
            continue
        else:  # pragma: no cover - every kind of tinydl.compress is above
            raise ValueError(f"cannot export layer kind {k!r}")
    for op in ops:
        if "b" in op:
            op["b"] = np.ascontiguousarray(op["b"], np.float32)
    return {"ops": ops, "n_features": int(np.prod(cm.input_shape)),
            "n_outputs": int(np.prod(cm.output_shape)), "classes": np.asarray(cm.classes),
            "source": "CompressedModel"}


def forward_dense(ops, Z: np.ndarray, start: int = 0, stop: Optional[int] = None,
                  record=None) -> np.ndarray:
    """NumPy forward of the dense-input ops ``ops[start:stop]`` (after OMP: ``gather`` takes
    dense codes) on the rows of ``Z`` (float32).  ``record(i, op, x)`` sees each op's input."""
    x = np.asarray(Z, np.float32)
    for i, op in enumerate(ops[start:stop], start):
        if record is not None:
            record(i, op, x)
        k = op["kind"]
        if k == "gather":
            x = (x * np.float32(op["vscale"])) @ op["W"].dense() + op["b"]
        elif k == "dense":
            x = x @ op["W"].dense().T + op["b"]
        elif k == "factored":
            x = (x @ op["U"].dense().T) @ op["V"].dense().T + op["b"]
        elif k == "sparse":
            z = x @ op["B"].dense().T
            S = np.zeros((op["r"], op["n"]), np.float32)
            cols = op["data"].row_of()
            S[np.asarray(op["indices"], np.intp), cols] = op["data"].dense()
            x = z @ S + op["b"]
        elif k == "relu":
            x = np.maximum(x, 0)
        elif k == "tanh":
            x = np.tanh(x)
        elif k == "sigmoid":
            x = (np.tanh(x * np.float32(0.5)) + 1) * np.float32(0.5)
        elif k == "softmax":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            x = e / e.sum(axis=1, keepdims=True)
        else:
            raise ValueError(f"forward_dense: no dense-input reference for op {k!r}")
        x = np.asarray(x, np.float32)
    return x
