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
import os
import socket
import sys
import time
import warnings
from typing import List, Optional, Tuple

import numpy as np

from ..backend import BackendUnavailable, SparseCodes
from .numpy import NumpyBackend, _check_block

__all__ = ["MPIBackend", "MPIComm", "launched_size", "launched_rank", "default_timeout"]

# environment variables that MPI launchers set: MPICH/Hydra (PMI_*), Open MPI, PMIx, Intel MPI,
# Slurm's srun with PMI2.  Size first, rank second.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_WORLD_SIZE",
              "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_WORLD_RANK",
              "MV2_COMM_WORLD_RANK", "SLURM_PROCID")
_PING, _PONG = 7301, 7302


def launched_size() -> Optional[int]:
    """World size announced by the MPI launcher's environment, or None (not under mpiexec).

    Only environment variables are read: mpi4py is not imported.  ``SLURM_NTASKS`` counts only
    together with a PMI variable (an sbatch job step that is not an MPI launch sets it too).
    """
    for var in _SIZE_VARS:
        val = os.environ.get(var, "").strip()
        if not val:
            continue
        if var == "SLURM_NTASKS" and not any(k.startswith("PMI") for k in os.environ):
            continue
        try:
            return int(val)
        except ValueError:
            continue
    if os.environ.get("MPI_LOCALNRANKS", "").strip().isdigit():  # Hydra, one host
        return int(os.environ["MPI_LOCALNRANKS"])
    return None


def launched_rank() -> Optional[int]:
    """This process's world rank from the launcher's environment, or None."""
    for var in _RANK_VARS:
        val = os.environ.get(var, "").strip()
        if val.isdigit():
            return int(val)
    return None


def default_timeout() -> float:
    """``TINYDL_MPI_TIMEOUT`` in seconds (default 30): how long a rank waits for its peers."""
    raw = os.environ.get("TINYDL_MPI_TIMEOUT", "").strip()
    if not raw:
        return 30.0
    try:
        val = float(raw)
    except ValueError:
        raise ValueError(f"TINYDL_MPI_TIMEOUT must be a number of seconds > 0, got {raw!r}") \
            from None
    if not val > 0:
        raise ValueError(f"TINYDL_MPI_TIMEOUT must be a number of seconds > 0, got {raw!r}")
    return val


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BackendUnavailable(f"mpi4py cannot be imported ({exc}): "
                                 "pip install 'tinydl[mpi]'") from None
    return MPI


def _exit_if_orphaned(rank, size) -> None:
    """Exit at once when this rank's supervisor (:func:`tinydl.distributed.supervise`) is gone.

    The launcher stops a job by killing the processes it started, which are the supervisors;
    their children die with them through ``PR_SET_PDEATHSIG``, and this check covers a child
    that outlives its supervisor anyway (a kernel or sandbox that does not deliver the death
    signal): it would otherwise wait out the timeout in its next collective.
    """
    sup = os.environ.get("_TINYDL_MPI_SUPERVISED", "")
    if sup.isdigit() and int(sup) > 1 and os.getppid() != int(sup):
        sys.stderr.write(f"tinydl: MPI rank {rank} of {size}: the job is stopping (this rank's "
                         f"supervisor, pid {sup}, is gone); exiting\n")
        sys.stderr.flush()
        os._exit(143)


class MPIComm:
    """A communicator whose collectives have a deadline and name lost peers.

    Every wait polls a non-blocking request (``Test``) and, meanwhile, answers liveness checks
    (tagged point-to-point messages, which never match a collective).  Past ``timeout`` seconds
    the rank asks every peer whether it is alive, waits a few more seconds for answers, prints
    one line naming the silent ranks and calls ``MPI_Abort``: a lost peer stops the job instead
    of hanging it.
    """

    def __init__(self, comm=None, timeout: Optional[float] = None, dup: bool = True):
        MPI = _import_mpi()
        self.MPI = MPI
        base = MPI.COMM_WORLD if comm is None else comm
        self.comm = base
        self.rank = base.Get_rank()
        self.size = base.Get_size()
        self.timeout = default_timeout() if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        # The timeout bounds the whole stop: ``_patience`` s without progress, then at most
        # ``_grace`` s for the liveness check, then MPI_Abort (about a second to take effect).
        self._grace = min(5.0, max(0.5, self.timeout / 4))
        self._patience = max(0.5, self.timeout - self._grace - 1.0)
        self.seq = 0                       # collectives started: reported to liveness checks
        self._pong = np.zeros(1, np.int64)
        self._ping = np.zeros(1, np.int64)
        self._status = MPI.Status()
        if dup:
            # our own context: our collectives and liveness messages never meet the caller's;
            # non-blocking, so that a peer that never arrives is named, not waited for forever
            new, req = base.Idup()
            self.wait([req], "start-up (duplicating the communicator)")
            self.comm = new

    # -- waiting with a deadline -------------------------------------------------------------
    def wait(self, reqs, what: str) -> None:
        """Complete every request in ``reqs`` or stop the job after :attr:`timeout` s."""
        MPI = self.MPI
        if MPI.Request.Testall(reqs):
            return
        t0 = time.monotonic()
        spins = 0
        while True:
            if MPI.Request.Testall(reqs):
                return
            spins += 1
            now = time.monotonic()
            if spins % 64 == 0:
                self._serve_pings()
                _exit_if_orphaned(self.rank, self.size)
                if now - t0 > self._patience:
                    self._lost(what, now - t0)
            # A non-blocking collective advances only inside MPI calls on every rank, in
            # several message steps: a rank that sleeps between polls delays its peers at
            # each step (measured: sleeping after 0.5 ms cost a quarter of the 2-rank
            # throughput).  So poll, yielding the core to any other runnable process (a peer
            # sharing this core), and sleep only once the wait is long (a peer writing a
            # checkpoint, a lost peer).
            if now - t0 > 0.05:
                time.sleep(0.001)
            else:
                os.sched_yield()

    def _serve_pings(self) -> None:
        MPI, st = self.MPI, self._status
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=_PING, status=st):
            src = st.Get_source()
            self.comm.Recv([self._ping, MPI.INT64_T], source=src, tag=_PING)
            self._pong[0] = self.seq
            self.comm.Send([self._pong, MPI.INT64_T], dest=src, tag=_PONG)  # eager: tiny

    def _lost(self, what: str, waited: float) -> None:
        MPI = self.MPI
        peers = [p for p in range(self.size) if p != self.rank]
        ping = np.full(1, self.seq, np.int64)
        sends = [self.comm.Isend([ping, MPI.INT64_T], dest=p, tag=_PING) for p in peers]
        answers = {p: np.full(1, -1, np.int64) for p in peers}
        recvs = {p: self.comm.Irecv([answers[p], MPI.INT64_T], source=p, tag=_PONG)
                 for p in peers}
        t0 = time.monotonic()
        grace = self._grace
        while time.monotonic() - t0 < grace and not all(r.Test() for r in recvs.values()):
            self._serve_pings()
            time.sleep(0.005)
        silent = [p for p in peers if answers[p][0] < 0]
        host = socket.gethostname()
        if silent:
            who = (f"lost MPI rank(s) {', '.join(map(str, silent))} of {self.size}: no answer "
                   f"to a liveness check within {grace:g} s")
        else:
            who = ("every peer answers, but not in this operation (ranks called different "
                   "collectives: a program error)")
        line = (f"tinydl: MPI rank {self.rank} of {self.size} on {host}: no progress for "
                f"{waited:.0f} s in {what} (TINYDL_MPI_TIMEOUT={self.timeout:g}); {who}; "
                "stopping the job")
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        del sends
        self.comm.Abort(3)

    # -- collectives on NumPy buffers ---------------------------------------------------------
    def _mpitype(self, dtype):
        # the predefined datatype (MPI_FLOAT, MPI_INT32_T...): reductions are defined on it
        return self.MPI._typedict[np.dtype(dtype).char]

    def bcast(self, arr: np.ndarray, root: int = 0, what: str = "broadcast") -> np.ndarray:
        """Broadcast a contiguous array in place from ``root``."""
        self.seq += 1
        if self.size > 1:
            self.wait([self.comm.Ibcast([arr, self._mpitype(arr.dtype)], root=root)], what)
        return arr

    def allgather_rows(self, fulls, counts, what: str = "allgather") -> None:
        """Each array in ``fulls`` (n, ...) holds this rank's rows at its displacement; fill
        in the other ranks' rows (all exchanges in flight at once).

        ``counts[r]`` is rank r's row count; shards are contiguous, in rank order.
        """
        self.seq += 1
        if self.size == 1:
            return
        if isinstance(fulls, np.ndarray):
            fulls = [fulls]
        reqs = []
        for full in fulls:
            per_row = int(np.prod(full.shape[1:], dtype=np.int64)) if full.ndim > 1 else 1
            cnt = np.asarray(counts, np.int64) * per_row
            displ = np.concatenate([[0], np.cumsum(cnt)[:-1]])
            reqs.append(self.comm.Iallgatherv(self.MPI.IN_PLACE,
                                              [full, (cnt.tolist(), displ.tolist()),
                                               self._mpitype(full.dtype)]))
        self.wait(reqs, what)

    def allgather(self, local: np.ndarray, what: str = "allgather") -> np.ndarray:
        """Stack every rank's ``local`` (same shape on every rank): shape (size,) + shape."""
        self.seq += 1
        out = np.empty((self.size,) + local.shape, local.dtype)
        if self.size == 1:
            out[0] = local
            return out
        t = self._mpitype(local.dtype)
        self.wait([self.comm.Iallgather([np.ascontiguousarray(local), t], [out, t])], what)
        return out

    def allreduce_sum(self, arrays: List[np.ndarray], what: str = "allreduce") -> None:
        """Sum each contiguous array over the ranks, in place (all requests in flight at once)."""
        self.seq += 1
        if self.size == 1:
            return
        MPI = self.MPI
        reqs = [self.comm.Iallreduce(MPI.IN_PLACE, [a, self._mpitype(a.dtype)], op=MPI.SUM)
                for a in arrays]
        self.wait(reqs, what)

    def barrier(self, what: str = "barrier") -> None:
        self.seq += 1
        if self.size > 1:
            self.wait([self.comm.Ibarrier()], what)

    def shards(self, n: int, block: int) -> List[Tuple[int, int]]:
        """(start, end) rows of every rank: contiguous, starting on multiples of ``block``
        (so each rank's products see the reference's zero-padded blocks); some may be empty."""
        nblk = -(-n // block)
        per, extra = divmod(nblk, self.size)
        out, s = [], 0
        for r in range(self.size):
            e = min(n, s + (per + (r < extra)) * block)
            out.append((s, e))
            s = e
        return out


class MPIBackend(NumpyBackend):
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
    #: the operations whose results are bit-identical to NumPy's
    bit_identical_ops = ("omp_encode", "gather_matmul")
    rtol = {"float32": 1e-5, "float64": 1e-13}

    def __init__(self, comm=None, block: int = 64, batch: int = 256,
                 min_rows: Optional[int] = None, timeout: Optional[float] = None,
                 collective: bool = True, **options) -> None:
        super().__init__(block=block, batch=batch, **options)
        self.mpi = comm if isinstance(comm, MPIComm) else MPIComm(comm, timeout)
        self.rank, self.size = self.mpi.rank, self.mpi.size
        self.min_rows = 2 * self.block if min_rows is None else _check_block(min_rows)
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
        return "root" if n < self.min_rows else "shard"

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
