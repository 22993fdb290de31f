"""The MPI transport: launch detection, the communicator with deadlines, supervision.

Used by the ``mpi`` backend (:mod:`hal.backends.mpi`) and by ``tinydl.distributed``.  Nothing
here imports mpi4py at import time: :func:`launched_size` and :func:`launched_rank` read the
launcher's environment variables (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``, ``PMIX_SIZE``...),
so ``import hal`` and the registry's probes never load MPI.

Every wait of :class:`MPIComm` has a deadline (:func:`default_timeout`: ``TINYDL_MPI_TIMEOUT``
or 30 s); while waiting a rank answers its peers' liveness checks, and past the deadline it
names the ranks that no longer answer and stops the job instead of hanging.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from typing import List, Optional, Tuple

import numpy as np

from .backend import BackendUnavailable

__all__ = ["MPIComm", "launched_size", "launched_rank", "default_timeout"]

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
        (so each rank's products see the reference's row tiles); some may be empty."""
        from .backends._sharded import block_shards
        return block_shards(n, block, self.size, keep_empty=True)
