"""The backend contract: a few coarse operations where the time goes.

Every backend implements the same small interface.  :class:`hal.backends.numpy.NumpyBackend`
is the *specification*: every other backend is tested against it, and most subclass it and
override only the operations they accelerate (a BLAS backend overrides the matrix products, the
multiprocessing backend shards the batched OMP encode across workers, ...).

Conventions (shared with :mod:`tinydl`): samples are rows.  A batch ``X`` has shape
``(n, m)``; a dictionary ``D`` holds its atoms as rows, shape ``(l, m)``; codes have shape
``(n, l)`` dense or ``(n, k)`` compact (indices and values).  The TinyDL paper writes the same
objects with samples as columns: its ``A`` (m x n) is our ``X.T``, its ``D`` (m x l) is our
``D.T`` and its ``C`` (l x n) is our dense codes transposed.

Hot paths follow TensorFlow Lite Micro's split: ``prepare_*`` checks shapes and allocates every
buffer once; the operations themselves then accept those buffers (``out=`` / ``ws=``) and
allocate nothing on the dense path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .codes import SparseCodes

__all__ = ["Backend", "BackendError", "BackendUnavailable", "OMPWorkspace", "SparseCodes"]


class BackendError(RuntimeError):
    """A backend failed while running an operation (a kernel build, a worker that died...)."""


class BackendUnavailable(BackendError):
    """The backend cannot run on this machine; the message says why."""


@dataclass
class OMPWorkspace:
    """Buffers for :meth:`Backend.omp_encode`, sized by :meth:`Backend.prepare_omp`.

    ``block`` is the number of rows every matrix product runs on.  Rows are copied into
    fixed-size, zero-padded blocks so that a sample's code does not depend on which other
    samples share its batch: BLAS picks different kernels (and rounding) for different row
    counts, and the streaming transform promises bit-identical results however a stream is
    split into batches.
    """

    batch: int
    m: int
    l: int
    k: int
    dtype: np.dtype
    block: int
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    #: set by an owner whose ``D`` never changes for this workspace's life (a prepared
    #: dictionary): the contiguous copy of ``D.T`` some backends keep (``arrays["DT"]``) is
    #: then filled on the first call only, not on every call
    fixed_D: bool = False
    dt_filled: bool = False
    #: the arrays every call writes before it reads them (the backend's pledge): their
    #: contents are dead between calls, so an owner may lend them out while no call runs
    #: (:meth:`scratch`; the learner's weight average keeps its stash there while the network
    #: trains)
    scratch_names: Tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        """Bytes held by the workspace's buffers."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def scratch(self) -> List[np.ndarray]:
        """The arrays named by :attr:`scratch_names`: free for an owner's use between calls
        (a call overwrites whatever they hold)."""
        return [self.arrays[n] for n in self.scratch_names if n in self.arrays]

    def fits(self, n: int, m: int, l: int, k: int, dtype) -> bool:
        """Whether this workspace can serve a call with these shapes."""
        return (n <= self.batch and m == self.m and l == self.l and k <= self.k
                and np.dtype(dtype) == self.dtype)


class Backend:
    """The contract.  Subclasses set :attr:`name` and implement the operations.

    Operations
    ----------
    matmul(a, b, out=None)
        ``a @ b`` for 2-D arrays.
    correlate(X, D, out=None)
        ``X @ D.T``: the correlation of a batch (n, m) with a dictionary (l, m), shape (n, l).
    omp_encode(X, D, G, k, tol=None, ws=None)
        Batch-OMP of every row of ``X`` over ``D`` (Gram ``G = D @ D.T``), a
        :class:`~hal.codes.SparseCodes` with ``n_nonzero`` and ``residual_sq``.
    dense_forward(X, W, b, out=None)
        ``X @ W + b``: a dense layer, X (n, p), W (p, q), b (q,).
    gemm(a, b, out, alpha=1.0, beta=0.0)
        ``out[...] = alpha * (a @ b) + beta * out`` in place (BLAS's ``?gemm``); the trainer's
        fused momentum-SGD update accumulates weight gradients straight into the velocity
        with it (see :attr:`fused_gemm`).
    gather_matmul(indices, values, W, out=None)
        The k-sparse product ``codes @ W`` from compact codes: ``out[i] = sum_t values[i, t] *
        W[indices[i, t]]`` (padding indices ``-1`` contribute nothing).
    scatter_matmul(indices, values, dy, out, beta=0.0)
        Its transpose, the first layer's weight gradient from compact codes: ``out[...] =
        beta * out + codes.T @ dy``, out (rows, q), dy (n, q).
    rows_matmul(A, B, out=None)
        ``A @ B`` with each row's result independent of the other rows (a stream's split).
    prepare_encode(D, G, k, tol=None, mean=None, scale=None, width=None)
        A dictionary bound for repeated encodes into caller-owned codes (one sample at a time).
    prepare_basis(D, G, Li)
        The streaming transform's state: Algorithm 2 on a batch, the projection error.
    """

    #: registry name of the backend
    name: str = "abstract"
    #: whether results are bit-identical to the NumPy reference (else see :attr:`rtol`)
    bit_identical: bool = False
    #: relative tolerance against the NumPy reference, per dtype
    rtol: Dict[str, float] = {"float32": 1e-4, "float64": 1e-10}
    #: whether :meth:`gemm` runs as one in-place BLAS call (reading and writing ``out`` once,
    #: no temporary): only then does the trainer fold the weight gradients into the
    #: optimizer's velocity (a reference :meth:`gemm` that allocates would be no gain)
    fused_gemm: bool = False
    #: whether the execution phase (a fitted transform's encode, a learner's one-sample
    #: predict: per-row work) runs on the native backend's per-row kernels where they build
    #: (:func:`hal.execution.execution_backend`, the rule); False: on this backend's own
    compiled_execution: bool = False

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    # -- availability -------------------------------------------------------------------
    @classmethod
    def probe(cls) -> Optional[str]:
        """Return ``None`` if the backend can run here, else a one-line reason why not.

        Must not raise, and should be cheap: :func:`hal.available_backends` calls it for every
        registered backend.
        """
        return None

    # -- the contract -------------------------------------------------------------------
    def matmul(self, a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None):
        """``a @ b``.

        Parameters
        ----------
        a : ndarray of shape (n, p)
        b : ndarray of shape (p, q)
        out : ndarray of shape (n, q), optional

        Returns
        -------
        ndarray of shape (n, q)
        """
        raise NotImplementedError(f"backend {self.name!r} needs matmul")

    def correlate(self, X: np.ndarray, D: np.ndarray, out: Optional[np.ndarray] = None):
        """Each sample's correlation with every atom, ``X @ D.T``.

        Parameters
        ----------
        X : ndarray of shape (n, m)
        D : ndarray of shape (l, m)
        out : ndarray of shape (n, l), optional

        Returns
        -------
        ndarray of shape (n, l)
        """
        raise NotImplementedError(f"backend {self.name!r} needs correlate")

    def prepare_omp(self, batch: int, m: int, l: int, k: int, dtype) -> OMPWorkspace:
        """Allocate once what :meth:`omp_encode` needs for batches of up to ``batch`` samples
        of ``m`` features over ``l`` atoms with ``k`` non-zeros in ``dtype``.

        Returns
        -------
        OMPWorkspace
        """
        raise NotImplementedError(f"backend {self.name!r} needs prepare_omp")

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> SparseCodes:
        """Batch-OMP of every row of ``X`` on the atoms (rows) of ``D``.

        Parameters
        ----------
        X : ndarray of shape (n, m)
        D : ndarray of shape (l, m)
        G : ndarray of shape (l, l)
            ``D @ D.T``.
        k : int
            Most non-zeros per sample (clipped to ``l``).
        tol : float, optional
            Stop a sample once its relative residual is ``<= tol``.
        ws : OMPWorkspace, optional
            From :meth:`prepare_omp`.

        Returns
        -------
        SparseCodes
            ``indices`` and ``values`` (n, k), ``n_nonzero`` and ``residual_sq`` (n,).
        """
        raise NotImplementedError(f"backend {self.name!r} needs omp_encode")

    def rows_matmul(self, A, B, out=None):
        """``A @ B`` (A (n, p), B (p, q)) with each row's result independent of the other
        rows of ``A`` (see :meth:`hal.backends.numpy.NumpyBackend.rows_matmul`, the spec)."""
        raise NotImplementedError(f"backend {self.name!r} needs rows_matmul")

    def dense_forward(self, X, W, b=None, out=None):
        """A dense layer's forward pass, ``X @ W + b``.

        Parameters
        ----------
        X : ndarray of shape (n, p)
        W : ndarray of shape (p, q)
        b : ndarray of shape (q,), optional
        out : ndarray of shape (n, q), optional

        Returns
        -------
        ndarray of shape (n, q)
        """
        raise NotImplementedError(f"backend {self.name!r} needs dense_forward")

    def gather_matmul(self, indices, values, W, out=None):
        """Compact codes times ``W``: ``out[i] = sum_t values[i, t] * W[indices[i, t]]``.

        Parameters
        ----------
        indices : ndarray of shape (n, k), integer
            ``-1`` pads (contributes nothing); others must lie in ``[0, rows)``.
        values : ndarray of shape (n, k)
        W : ndarray of shape (rows, q)
        out : ndarray of shape (n, q), optional

        Returns
        -------
        ndarray of shape (n, q)

        Raises
        ------
        IndexError
            An index outside ``[-1, rows)`` (nothing is written).
        """
        raise NotImplementedError(f"backend {self.name!r} needs gather_matmul")

    def scatter_matmul(self, indices, values, dy, out, beta=0.0):
        """The transpose of :meth:`gather_matmul`: ``out[...] = beta * out + codes.T @ dy``.

        Parameters
        ----------
        indices, values : ndarray of shape (n, k)
        dy : ndarray of shape (n, q)
        out : ndarray of shape (rows, q)
        beta : float

        Returns
        -------
        out : ndarray of shape (rows, q)
        """
        raise NotImplementedError(f"backend {self.name!r} needs scatter_matmul")

    def prepare_sparse_layer(self, W, b, y, gW, gb) -> "SparseLayerPlan":
        """A dense layer fed compact codes, bound to its parameter, output and gradient arrays:
        ``plan.forward(indices, values)`` gives ``y[:n] = codes @ W + b`` and
        ``plan.backward(indices, values, dy)`` sets ``gW = codes.T @ dy``, ``gb = dy.sum(0)``.
        :class:`SparseLayerPlan` is the specification (the gather, then a scatter into a
        bound dense buffer and one :meth:`matmul`); ``native`` binds the arrays to one
        kernel call per pass."""
        return SparseLayerPlan(self, W, b, y, gW, gb)

    def prepare_encode(self, D, G, k, tol=None, mean=None, scale=None, width=None):
        """Bind a dictionary for repeated encodes into caller-owned codes: ``encode(X,
        indices, values)`` checks that ``X`` is finite, standardizes it with ``mean`` and
        ``scale`` (if given) and writes Batch-OMP's codes (``width`` columns, ``-1`` / ``0``
        past each code's non-zeros).  D (l, m) and G (l, l) are kept, not copied.  The
        specification is :class:`hal.backends.numpy.encode.EncodePlan` (over this backend's
        :meth:`omp_encode`); ``native`` runs a whole call in one kernel."""
        from .backends.numpy.encode import EncodePlan
        return EncodePlan(self, D, G, k, tol=tol, mean=mean, scale=scale, width=width)

    def prepare_basis(self, D, G, Li):
        """Bind the streaming transform's state arrays (D (lb, m); G = D D^T and Li, the
        inverse of G's Cholesky factor, (lb, lb)): a workspace with ``run`` (Algorithm 2 on a
        batch: the Wp tests, the joins, the OMP codes), ``wp`` (the projection error) and
        ``plan`` (the execution phase's encode plan).  The specification is
        :class:`hal.backends.numpy.basis.BasisWorkspace`; ``native`` runs a batch in one C
        call."""
        raise NotImplementedError(f"backend {self.name!r} needs prepare_basis")

    def gemm(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, alpha: float = 1.0,
             beta: float = 0.0) -> np.ndarray:
        """General matrix product accumulated in place: ``out[...] = alpha * (a @ b) + beta *
        out``.

        Parameters
        ----------
        a : ndarray of shape (m, k)
        b : ndarray of shape (k, n)
            Any strides (transposed views included); same float dtype as ``out``.
        out : ndarray of shape (m, n)
            Read (unless ``beta`` is 0: then, as in BLAS, its old contents, NaN included, are
            ignored) and overwritten.
        alpha, beta : float

        Returns
        -------
        out : ndarray of shape (m, n)
            The ``out`` given.

        Raises
        ------
        ValueError
            If the shapes do not match.
        """
        raise NotImplementedError(f"backend {self.name!r} needs gemm")

    # -- life cycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Release resources (worker processes, device contexts).  Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- copies: a backend is a shared compute resource, rebuilt from its options --------
    def __deepcopy__(self, memo):
        """A deep copy of an object that uses a backend shares the backend (it holds worker
        processes, device contexts or loaded libraries, never the caller's data)."""
        return self

    def __reduce__(self):
        """Pickled as its class and options; unpickling builds a fresh one (libraries,
        workers and contexts cannot travel between processes)."""
        return (_rebuild, (type(self), dict(self.options)))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<{type(self).__name__} {self.name}{(' ' + opts) if opts else ''}>"


def _rebuild(cls, options):
    """Unpickle a backend: ``cls(**options)``."""
    return cls(**options)


class SparseLayerPlan:
    """The specification of :meth:`Backend.prepare_sparse_layer`: a dense layer fed compact
    codes, bound to W (rows, q), b (q,), the output workspace y (batch, q) and the gradients
    gW (rows, q), gb (q,).

    ``forward`` is :meth:`Backend.gather_matmul` plus the bias.  ``backward`` scatters the
    codes into a dense (batch, rows + 1) buffer allocated here once (column ``rows`` absorbs
    the ``-1`` padding; an index repeated within a sample adds up, as in
    :meth:`Backend.gather_matmul`) and runs one :meth:`Backend.matmul`,
    ``gW = dense.T @ dy``: the product
    the backend is fastest at, with no allocation per call.
    """

    def __init__(self, backend, W, b, y, gW, gb):
        self.backend, self.W, self.b, self.y, self.gW, self.gb = backend, W, b, y, gW, gb
        rows, batch = W.shape[0], y.shape[0]
        self._codes = np.zeros((batch, rows + 1), W.dtype)
        self._rowoff = np.arange(batch, dtype=np.intp)[:, None] * (rows + 1)
        self._flat = None

    def forward(self, indices, values):
        """``y[:n] = codes @ W + b`` for codes (n, k); returns that view."""
        n = indices.shape[0]
        y = self.backend.gather_matmul(indices, values, self.W, out=self.y[:n])
        y += self.b
        return y

    def backward(self, indices, values, dy):
        """``gW = codes.T @ dy`` and ``gb = dy.sum(0)`` for codes (n, k), dy (n, q)."""
        n, k = indices.shape
        rows = self.W.shape[0]
        check_code_indices(indices, rows)
        dense = self._codes[:n]
        dense.fill(0)
        flat = self._flat
        if flat is None or flat.shape[1] != k:
            flat = self._flat = np.empty((self._codes.shape[0], k), np.intp)
        f = flat[:n]
        np.copyto(f, indices, casting="unsafe")
        f[indices < 0] = rows
        f += self._rowoff[:n]
        np.add.at(dense.reshape(-1), f, values)  # a repeated index adds up
        self.backend.matmul(dense[:, :rows].T, dy, out=self.gW)
        np.sum(dy, axis=0, out=self.gb)


def check_code_indices(indices: np.ndarray, rows: int) -> None:
    """Raise IndexError unless every compact-code index lies in ``[-1, rows)`` (``-1`` pads):
    the one message every backend's k-sparse products give, before anything is written."""
    if indices.size and (int(indices.max()) >= rows or int(indices.min()) < -1):
        raise IndexError(f"code indices must lie in [-1, {rows}), got "
                         f"[{int(indices.min())}, {int(indices.max())}]")
