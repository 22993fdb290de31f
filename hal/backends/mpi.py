"""The MPI backend: a batch's rows sharded across MPI ranks (SPMD), through mpi4py.

SPMD semantics, unlike the other backends: **every operation is collective** over the
backend's communicator.  Every rank calls it in the same order with the same inputs (the whole
batch) and every rank gets the same whole result.  Inside, rows are split into contiguous shards
that start on multiples of ``block`` (as the multiprocessing backend does), each rank computes
its shard with :class:`~hal.backends.numpy.NumpyBackend`, and the shards are exchanged with
``MPI_Allgatherv``.  So, as for multiprocessing, **omp_encode and gather_matmul are
bit-identical to NumPy** (with one BLAS thread per rank and the same NumPy/BLAS build on every
rank); the plain products (matmul, correlate, dense_forward) agree within ``rtol * (|A| @ |B|)``,
rtol 1e-5 (float32) / 1e-13 (float64), because OpenBLAS picks kernels by row count.

Batches of fewer than ``min_rows`` rows (default ``2 * block``) are computed by rank 0 alone and
broadcast: every rank then holds rank 0's bits, so a decision taken on such a result (the
streaming transform's projection-error test) is rank 0's on every rank.  Those calls are
bit-identical to NumPy.

With ``collective=False`` (or outside :meth:`MPIBackend.collective_section` when so built) the
backend is plain NumPy in the calling process: no communication, so one rank alone may call it
(``tinydl.distributed`` uses this for prediction while training stays collective).

Data travels only through buffer (upper-case) mpi4py calls on NumPy arrays: nothing is pickled.

Failures: every wait has a deadline, ``timeout`` seconds (default ``TINYDL_MPI_TIMEOUT`` or 30).
While waiting a rank answers liveness checks from its peers; when the deadline passes it checks
which peers still answer and stops the whole job (``MPI_Abort``) with one line on stderr naming
the rank(s) that did not, instead of hanging.

Availability (:meth:`MPIBackend.probe`): mpi4py installed and this process launched by mpiexec
with at least two ranks, decided from environment variables (``PMI_SIZE``,
``OMPI_COMM_WORLD_SIZE``, ``MPI_LOCALNRANKS``, ``PMIX_SIZE``...) without importing mpi4py, so
``import hal`` and the registry's probes never load MPI.
"""
from __future__ import annotations

import contextlib
import importlib.util
import warnings
from typing import Optional

import numpy as np

from ..backend import SparseCodes
from ..mpi import (  # noqa: F401
    MPIComm,
    _exit_if_orphaned,
    _import_mpi,
    default_timeout,
    launched_rank,
    launched_size,
)
from ._sharded import ShardedRows
from .numpy import NumpyBackend

__all__ = ["MPIBackend", "MPIComm", "launched_size", "launched_rank", "default_timeout"]


class MPIBackend(ShardedRows, NumpyBackend):
    """NumPy backend sharding each batch's rows over MPI ranks (SPMD: calls are collective).

    Parameters
    ----------
    comm : mpi4py communicator or MPIComm, optional
        Default ``MPI.COMM_WORLD`` (duplicated, so the backend's messages never meet the
        caller's).  Building the backend is itself collective over ``comm``.
    block, batch : int
        As for :class:`~hal.backends.numpy.NumpyBackend`; must be equal on every rank.
    min_rows : int, optional
        Batches with fewer rows are computed by rank 0 and broadcast (default ``2 * block``).
    timeout : float, optional
        Seconds a rank waits for its peers before it stops the job naming the silent ranks
        (default ``TINYDL_MPI_TIMEOUT`` or 30).
    collective : bool, default=True
        False: every operation runs locally as NumPy (no communication) until
        :meth:`collective_section` switches collectives on for a block of code.

    Tolerance: omp_encode and gather_matmul bit-identical to NumPy; products within 1e-5
    (float32) / 1e-13 (float64) of ``|A| @ |B|`` (bit-identical below ``min_rows`` rows).
    """

    name = "mpi"
    bit_identical = False
    #: the execution phase (per-row, never sharded) on the native per-row kernels where
    #: they build, as the blas backend's (hal.execution): the same codes as one process
    compiled_execution = True
    #: the operations whose results are bit-identical to NumPy's
    bit_identical_ops = ("omp_encode", "gather_matmul")
    rtol = {"float32": 1e-5, "float64": 1e-13}

    def __init__(self, comm=None, block: int = 64, batch: int = 256,
                 min_rows: Optional[int] = None, timeout: Optional[float] = None,
                 collective: bool = True, **options) -> None:
        super().__init__(block=block, batch=batch, **options)
        self.mpi = comm if isinstance(comm, MPIComm) else MPIComm(comm, timeout)
        self.rank, self.size = self.mpi.rank, self.mpi.size
        self._init_sharding(min_rows)
        self.collective = bool(collective)
        self.options.update(ranks=self.size, min_rows=self.min_rows)

    @classmethod
    def probe(cls) -> Optional[str]:
        if importlib.util.find_spec("mpi4py") is None:
            return "mpi4py is not installed (pip install 'tinydl[mpi]')"
        size = launched_size()
        if size is None:
            return ("not launched by mpiexec (no PMI_SIZE, OMPI_COMM_WORLD_SIZE or PMIX_SIZE "
                    "in the environment): run under `mpiexec -n N`")
        if size < 2:
            return f"launched by mpiexec with {size} rank; the mpi backend needs at least 2"
        return None

    @contextlib.contextmanager
    def collective_section(self):
        """Make operations collective for a block of code (every rank must enter it)."""
        before = self.collective
        self.collective = True
        try:
            yield self
        finally:
            self.collective = before

    @contextlib.contextmanager
    def _local_section(self):
        """This rank's own share of an operation: the NumPy code it runs calls back into
        ``self.matmul`` (``_rows_matmul``), which must then stay local."""
        before = self.collective
        self.collective = False
        try:
            yield
        finally:
            self.collective = before

    # -- helpers ------------------------------------------------------------------------
    def _mode(self, n: int) -> str:
        """"local" (no communication), "root" (rank 0 computes, broadcasts) or "shard"."""
        if not self.collective or self.size == 1:
            return "local"
        return "root" if self._local(n) else "shard"

    def _mine(self, n: int):
        sh = self.mpi.shards(n, self.block)
        return sh[self.rank], [e - s for s, e in sh]

    def _rowwise(self, op: str, n: int, shape, dtype, compute, out):
        """Run ``compute(s, e, out_slice)`` on this rank's rows and assemble the result."""
        mode = self._mode(n)
        res = out if (out is not None and out.flags.c_contiguous and out.shape == shape
                      and out.dtype == dtype) else np.empty(shape, dtype)
        if mode == "root":
            if self.rank == 0:
                with self._local_section():
                    compute(0, n, res)
            self.mpi.bcast(res, 0, f"mpi backend {op} (broadcast from rank 0)")
        else:
            (s, e), counts = self._mine(n)
            if e > s:
                with self._local_section():
                    compute(s, e, res[s:e])
            self.mpi.allgather_rows(res, counts, f"mpi backend {op} ({n} rows)")
        if out is not None and res is not out:
            if out.shape != res.shape:
                raise ValueError(f"out has shape {out.shape}, expected {res.shape}")
            out[...] = res
            return out
        return res

    # -- the contract -------------------------------------------------------------------
    def matmul(self, a, b, out=None):
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] \
                or self._mode(a.shape[0]) == "local":
            return super().matmul(a, b, out=out)
        shape, dt = (a.shape[0], b.shape[1]), np.result_type(a, b)
        return self._rowwise("matmul", a.shape[0], shape, dt,
                             lambda s, e, o: np.matmul(a[s:e], b, out=o), out)

    def correlate(self, X, D, out=None):
        return self.matmul(X, D.T, out=out)

    def dense_forward(self, X, W, b=None, out=None):
        if self._mode(X.shape[0]) == "local":
            return super().dense_forward(X, W, b, out=out)
        shape, dt = (X.shape[0], W.shape[1]), np.result_type(X, W)
        return self._rowwise(
            "dense_forward", X.shape[0], shape, dt,
            lambda s, e, o: NumpyBackend.dense_forward(self, X[s:e], W, b, out=o), out)

    def gather_matmul(self, indices, values, W, out=None):
        n = indices.shape[0]
        if self._mode(n) == "local":
            return super().gather_matmul(indices, values, W, out=out)
        shape, dt = (n, W.shape[1]), np.result_type(values, W)
        return self._rowwise(
            "gather_matmul", n, shape, dt,
            lambda s, e, o: NumpyBackend.gather_matmul(self, indices[s:e], values[s:e], W,
                                                       out=o), out)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> SparseCodes:
        from .numpy.omp import check_tol
        check_tol(tol)  # here: a worker's error would come back as a BackendError
        n = X.shape[0]
        mode = self._mode(n)
        if mode == "local":
            return super().omp_encode(X, D, G, k, tol=tol, ws=ws)
        k = int(min(k, D.shape[0]))
        res = SparseCodes(np.full((n, k), -1, np.int32), np.zeros((n, k), X.dtype),
                          D.shape[0], np.zeros(n, np.int32), np.zeros(n, X.dtype))
        parts = (res.indices, res.values, res.n_nonzero, res.residual_sq)
        if mode == "root":
            (s, e), counts = (0, n if self.rank == 0 else 0), None
        else:
            (s, e), counts = self._mine(n)
        if e > s:
            with warnings.catch_warnings(record=True) as caught, self._local_section():
                warnings.simplefilter("always")
                r = NumpyBackend.omp_encode(self, X[s:e], D, G, k, tol=tol, ws=ws)
            for dst, src in zip(parts, (r.indices, r.values, r.n_nonzero, r.residual_sq)):
                dst[s:e] = src
            for w in caught:  # each rank reports its own rows' warnings
                warnings.warn(f"MPI rank {self.rank}: {w.message}", w.category, stacklevel=2)
        what = f"mpi backend omp_encode ({n} rows)"
        if mode == "root":
            for p in parts:
                self.mpi.bcast(p, 0, what + " (broadcast from rank 0)")
        else:
            self.mpi.allgather_rows(list(parts), counts, what)
        return res
