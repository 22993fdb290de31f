"""TinyDL on many processes and boards through MPI (mpi4py): ``mpiexec -n N tinydl fit ...``.

* :func:`under_mpi` says, from environment variables only (mpi4py is not imported), whether
  this process was launched by mpiexec with more than one rank.
* :class:`MPITinyDLClassifier` is :class:`~tinydl.learner.TinyDLClassifier` whose
  ``partial_fit`` / ``fit`` / ``finish`` / ``save`` / ``load`` are **collective**: every rank
  calls them in the same order with the *same whole batch*; the work is sharded inside and
  every rank ends with the same model.

  - Transform: each batch's OMP coding is split into block-aligned row shards, one per rank
    (:class:`hal.backends.mpi.MPIBackend`), and the codes are exchanged with Allgatherv.  The
    projection-error products that decide whether a sample joins the dictionary are computed
    by rank 0 and broadcast, so rank 0 decides additions, in stream order, on every rank.
    **Dictionary and codes are bit-identical to a single-process TinyDLClassifier** (one BLAS
    thread per rank, the same NumPy/BLAS build on every rank).  After each batch the ranks
    compare the number of samples and atoms and, when atoms were added, a CRC of the
    dictionary; a difference is an error naming the ranks (it cannot go unnoticed).
  - Training: data-parallel.  Every mini-batch of the single-process schedule (same shuffled
    order) is split into one contiguous share per rank; each rank back-propagates its share
    and the gradients are summed (Allreduce, weighted by share size) before every optimizer
    step, so every rank takes the step the single process takes, up to the rounding of the
    split sums.  **Tolerance against one process: every parameter within 1e-4 * (1 + |w|)
    after the stream of tests/mpi (float32), predictions equal** - the difference is the
    summation order of each mini-batch's gradient; with ``dropout > 0`` the masks drawn by
    the ranks differ from the single process's and the network is only statistically
    equivalent.  After each update rank 0's parameters and optimizer state are broadcast, so
    the ranks hold identical networks.
  - Prediction (``predict``, ``transform``, ``score``...) is *not* collective: it runs
    locally on whichever rank calls it.

* Failures stop the job with one line naming the rank instead of hanging (see
  ``docs/mpi.md``):

  - a rank killed by a signal: each rank runs under a small supervisor process
    (:func:`supervise`) that prints ``tinydl: lost MPI rank R of N (pid P on HOST): killed by
    signal S``, exits non-zero, and mpiexec stops the others;
  - an uncaught exception on one rank: ``tinydl: MPI rank R of N failed: ...`` then
    ``MPI_Abort``;
  - a rank that stops answering (a board lost, a process stuck): the job stops within
    ``TINYDL_MPI_TIMEOUT`` seconds (default 30) of the last progress: its peers wait, then
    name the ranks that do not answer a liveness check and abort.

* Checkpoints (:mod:`tinydl.checkpoint`): rank 0 writes; ``load`` reads them once on rank 0
  and broadcasts the files (no shared file system needed).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
import zlib

import numpy as np

from hal.mpi import default_timeout, launched_rank, launched_size

from . import checkpoint
from .errors import ModelFileError
from .learner import TinyDLClassifier

__all__ = ["under_mpi", "supervise", "abort", "MPITinyDLClassifier", "DataParallelHook"]

# set while MPITinyDLClassifier.load builds an instance, so that __init__ (called by the base
# class's load) picks up the communicator given to load
_LOADING = threading.local()


def under_mpi() -> bool:
    """True when this process was launched by mpiexec (or srun) with more than one rank.

    Decided from the launcher's environment variables (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``,
    ``PMIX_SIZE``, ``MPI_LOCALNRANKS``...) without importing mpi4py.
    """
    size = launched_size()
    return size is not None and size > 1


# -- failure handling ----------------------------------------------------------------------
def _where() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def supervise() -> bool:
    """Run the rest of this program in a child process watched by this one (under mpiexec).

    Call it before mpi4py is imported (MPI is initialised in the child only).  The parent
    forwards signals to the child and exits with the child's status; if the child is killed
    by a signal (``kill -9``, the OOM killer, a segfault) the parent prints one line naming
    the rank, ``tinydl: lost MPI rank R of N (pid P on HOST): killed by signal 9 (SIGKILL);
    stopping the job``, and exits with ``128 + signal``; mpiexec then stops the other ranks.
    Without it, mpiexec's own message names only the pid (MPICH: "BAD TERMINATION ... PID").
    The child dies with its parent (``PR_SET_PDEATHSIG``), so when mpiexec kills the parents
    during clean-up no rank is left behind.

    Returns True in the child (the program goes on), False where nothing was done: not under
    mpiexec, not Linux, mpi4py already imported, other Python threads running,
    ``TINYDL_MPI_SUPERVISE=0``, or already supervised.  The parent never returns.
    """
    if (not under_mpi() or not sys.platform.startswith("linux")
            or "mpi4py.MPI" in sys.modules
            or os.environ.get("TINYDL_MPI_SUPERVISE", "1").strip() == "0"
            or os.environ.get("_TINYDL_MPI_SUPERVISED")
            # fork keeps only the calling thread: a program with other Python threads would
            # lose them in the child
            or threading.active_count() > 1):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl  # noqa: B018 - only checks that prctl exists
    except (OSError, AttributeError):
        return False
    rank, size = launched_rank(), launched_size()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    # the child's waits (hal.backends.mpi.MPIComm.wait) check that this process is still its
    # parent: PR_SET_PDEATHSIG alone is not enough where the launcher kills the supervisor
    # while the kernel or a sandbox does not deliver the death signal
    os.environ["_TINYDL_MPI_SUPERVISED"] = str(parent)
    pid = os.fork()
    if pid == 0:
        # die with the supervisor: mpiexec's clean-up kills the processes it started
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)
        return True
    forwarded = set()

    def forward(sig, _frame):
        forwarded.add(sig)
        os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGQUIT):
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) not in forwarded:
        # (a signal sent to the job, forwarded here, is not a lost rank)
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "?"
        sys.stderr.write(f"tinydl: lost MPI rank {rank} of {size} (pid {pid} on "
                         f"{socket.gethostname()}): killed by signal {sig} ({name}); "
                         "stopping the job\n")
        sys.stderr.flush()
        os._exit(128 + sig)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def abort(message: str, code: int = 1) -> None:
    """Print ``tinydl: MPI rank R of N: message`` on stderr and stop every rank (MPI_Abort).

    For errors that only some ranks see (the others would otherwise wait for them).
    """
    from mpi4py import MPI
    w = MPI.COMM_WORLD
    sys.stderr.write(f"tinydl: MPI rank {w.Get_rank()} of {w.Get_size()} ({_where()}): "
                     f"{message}\n")
    sys.stderr.flush()
    w.Abort(code)


_HOOK_INSTALLED = False


def _install_excepthook() -> None:
    """An uncaught exception on one rank stops the job with a line naming the rank: without
    it the rank would wait in MPI_Finalize and its peers in their next collective."""
    global _HOOK_INSTALLED
    if _HOOK_INSTALLED:
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        if issubclass(kind, KeyboardInterrupt):
            code = 130
        else:
            code = 1
        try:
            abort(f"failed with {kind.__name__}: {value}; stopping the job", code)
        except Exception:  # MPI unusable: at least exit non-zero
            os._exit(code)

    sys.excepthook = hook
    _HOOK_INSTALLED = True


# -- data-parallel training ------------------------------------------------------------------
class DataParallelHook:
    """The trainer's public ``grad_hook`` (see :attr:`tinydl.nn.trainer.Trainer.grad_hook`).

    ``select`` keeps rank r's contiguous share ``rows[nb*r//N : nb*(r+1)//N]`` of a
    mini-batch of ``nb`` rows; ``reduce`` weighs the share's mean gradient by
    ``share / nb`` and sums over the ranks, giving every rank the whole mini-batch's mean
    gradient (and mean loss).  A rank whose share is empty (``nb < N``) computes one row and
    weighs it 0, so that every rank joins every sum.
    """

    def __init__(self, mpi):
        self.mpi = mpi
        self._w = 1.0
        self._nb = 0
        self._loss = np.zeros(1, np.float64)

    def select(self, rows):
        """This rank's contiguous share of a mini-batch's ``rows`` (one row weighed 0 when
        the share is empty)."""
        nb, r, size = rows.shape[0], self.mpi.rank, self.mpi.size
        self._nb = nb
        lo, hi = nb * r // size, nb * (r + 1) // size
        if hi > lo:
            self._w = (hi - lo) / nb
            return rows[lo:hi]
        self._w = 0.0
        return rows[:1]

    def reduce(self, grads, loss, nb):
        """All-reduce the share-weighted gradients (in place) and loss; returns
        ``(mean loss, batch size)``."""
        if self._w != 1.0:
            grads *= grads.dtype.type(self._w)
        self._loss[0] = loss * self._w
        self.mpi.allreduce_sum([grads, self._loss], "data-parallel gradient all-reduce")
        return float(self._loss[0]), self._nb


# -- the learner -----------------------------------------------------------------------------
class MPITinyDLClassifier(TinyDLClassifier):
    """:class:`~tinydl.learner.TinyDLClassifier` sharded over MPI ranks (see the module doc).

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~tinydl.learner.TinyDLClassifier` (``backend`` is each rank's local
        backend for the network and for prediction).
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD`` (mpi4py is imported on first use).  The learner works on a
        duplicate, so its messages never meet the caller's.

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks.
    timeout : float
        Seconds a rank waits for its peers (``TINYDL_MPI_TIMEOUT``, default 30).

    Notes
    -----
    Collective: ``partial_fit``, ``fit``, ``finish``, ``save`` and the classmethod ``load``
    (every rank, same order, same arguments).  Local: ``predict``, ``predict_proba``,
    ``transform``, ``score``.
    """

    def __init__(self, *args, comm=None, **kwargs):
        super().__init__(*args, **kwargs)
        if comm is None:
            comm = getattr(_LOADING, "comm", None)
        self.comm = comm

    # -- the MPI context (created on first collective use) ---------------------------------
    def _ctx(self):
        ctx = self.__dict__.get("_mpi_ctx")
        if ctx is None:
            supervise()  # before MPI starts; a no-op when mpi4py is already imported
            from hal.backends.mpi import MPIBackend
            from hal.mpi import MPIComm
            _install_excepthook()
            mpi = MPIComm(self.comm, default_timeout())
            be = MPIBackend(mpi, block=64, collective=False)
            ctx = self.__dict__["_mpi_ctx"] = {"mpi": mpi, "backend": be,
                                               "hook": DataParallelHook(mpi), "atoms": -1}
        return ctx

    def _base_comm(self):
        # reading rank or size is not collective: no duplicate is made for it
        ctx = self.__dict__.get("_mpi_ctx")
        if ctx is not None:
            return ctx["mpi"].comm
        supervise()  # before mpi4py starts MPI
        _install_excepthook()
        if self.comm is not None:
            return self.comm
        from mpi4py import MPI
        return MPI.COMM_WORLD

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._base_comm().Get_rank()

    @property
    def size(self) -> int:
        """The number of ranks."""
        return self._base_comm().Get_size()

    @property
    def timeout(self) -> float:
        """Seconds a rank waits for its peers."""
        return self._ctx()["mpi"].timeout

    def _init(self, n_features, classes):
        super()._init(n_features, classes)
        ctx = self._ctx()
        # the transform shards through the MPI backend (collective only inside partial_fit);
        # the network keeps the local backend and gets the data-parallel hook
        self.transform_.set_params(backend=ctx["backend"])
        self.network_.grad_hook = ctx["hook"]
        ctx["atoms"] = -1

    # -- collective training --------------------------------------------------------------
    def partial_fit(self, X, y, classes=None):
        """Collective: every rank passes the same batch (checked by a sampled fingerprint)."""
        ctx = self._ctx()
        X = np.asarray(X)
        y = np.asarray(y)
        self._check_same_batch(ctx["mpi"], X, y)
        with ctx["backend"].collective_section():
            super().partial_fit(X, y, classes=classes)
        self._check_consistent(ctx)
        return self

    def finish(self):
        """Collective :meth:`TinyDLClassifier.finish`."""
        ctx = self._ctx()
        with ctx["backend"].collective_section():
            super().finish()
        self._check_consistent(ctx)
        return self

    def fit(self, X, y):
        """Collective :meth:`TinyDLClassifier.fit` (every rank passes the same data)."""
        ctx = self._ctx()
        with ctx["backend"].collective_section():
            super().fit(X, y)
        self._check_consistent(ctx)
        return self

    def _new_transform(self):
        # the rebuild policy makes fresh ones: they shard through the MPI backend too
        tr = super()._new_transform()
        ctx = self.__dict__.get("_mpi_ctx")
        if ctx is not None:
            tr.set_params(backend=ctx["backend"])
        return tr

    def _new_network(self):
        net = super()._new_network()
        ctx = self.__dict__.get("_mpi_ctx")
        if ctx is not None:
            net.grad_hook = ctx["hook"]
        return net

    def _retrain(self, epochs=None):
        super()._retrain(epochs)
        # all-reduced gradients give every rank the same step; broadcasting rank 0's
        # parameters and optimizer state makes "the same" exact whatever the MPI library's
        # reduction order
        mpi = self._ctx()["mpi"]
        net = self.network_
        mpi.bcast(net.network_.params, 0, "network parameters broadcast")
        if getattr(net, "n_averaged_", 0):  # average="ema": the training weights too
            mpi.bcast(net.network_.grads, 0, "training weights broadcast")
        for name in sorted(net.optimizer_.state):
            mpi.bcast(net.optimizer_.state[name], 0, "optimizer state broadcast")

    @staticmethod
    def _check_same_batch(mpi, X, y):
        """Every rank must pass the same batch: compare shapes and a sampled checksum."""
        fp = np.zeros(4, np.float64)
        fp[0], fp[1] = X.shape[0], X.shape[1] if X.ndim == 2 else -1
        if X.size and X.dtype.kind in "biuf":
            step_r = max(1, X.shape[0] // 8)
            fp[2] = float(np.asarray(X[::step_r, ::max(1, X.shape[-1] // 64)],
                                     np.float64).sum())
        if y.size and y.dtype.kind in "biuf":
            fp[3] = float(np.asarray(y, np.float64).sum())
        allfp = mpi.allgather(fp, "batch check")
        bad = [r for r in range(mpi.size)
               if not np.array_equal(allfp[r], allfp[0], equal_nan=True)]
        if bad:
            raise ValueError(
                f"MPITinyDLClassifier.partial_fit is collective: every rank must pass the same "
                f"batch, but rank(s) {bad} differ from rank 0 (rows, features, checksums: rank 0 "
                f"{allfp[0].tolist()}, rank {bad[0]} {allfp[bad[0]].tolist()})")

    def _check_consistent(self, ctx):
        """Compare samples, atoms, updates and (when atoms changed) a dictionary CRC."""
        mpi = ctx["mpi"]
        tr = getattr(self, "transform_", None)
        atoms = int(getattr(tr, "n_atoms_", 0) or 0) if tr is not None else 0
        state = np.array([getattr(self, "n_samples_seen_", 0), atoms,
                          getattr(self, "n_updates_", 0), -1], np.int64)
        if atoms != ctx["atoms"] and atoms > 0:
            D = np.ascontiguousarray(tr.dictionary_)
            state[3] = zlib.crc32(memoryview(D).cast("B"))
        ctx["atoms"] = atoms
        allst = mpi.allgather(state, "consistency check")
        bad = [r for r in range(mpi.size) if not np.array_equal(allst[r], allst[0])]
        if bad:
            raise RuntimeError(
                f"MPI ranks diverged: rank(s) {bad} hold (samples, atoms, updates, dictionary "
                f"CRC) {allst[bad[0]].tolist()} where rank 0 holds {allst[0].tolist()}: "
                "either the ranks passed different data (every rank must pass the same "
                "batches; the check before each batch samples its rows) or they compute "
                "differently (ranks need the same NumPy/BLAS build and one BLAS thread each, "
                "OPENBLAS_NUM_THREADS=1)")

    # -- checkpoints ---------------------------------------------------------------------
    def save(self, directory):
        """Collective: rank 0 writes the checkpoint (see TinyDLClassifier.save); the others
        wait for it and return the same path.  An error on rank 0 is raised on every rank."""
        ctx = self._ctx()
        mpi = ctx["mpi"]
        self._check_started()
        status = np.zeros(1, np.int64)
        text = np.zeros(1024, np.uint8)
        if mpi.rank == 0:
            tr = self.transform_
            # the file records the local backend, so that one process can load it
            tr.set_params(backend=self.backend)
            try:
                msg = str(super().save(directory))
                status[0] = 1
            except Exception as exc:  # reported on every rank below
                msg = f"{type(exc).__name__}: {exc}"
            finally:
                tr.set_params(backend=ctx["backend"])
            raw = msg.encode()[:1024]
            text[:len(raw)] = np.frombuffer(raw, np.uint8)
        mpi.bcast(status, 0, "checkpoint save (waiting for rank 0)")
        mpi.bcast(text, 0, "checkpoint save (waiting for rank 0)")
        msg = bytes(text).rstrip(b"\0").decode(errors="replace")
        if not status[0]:
            raise OSError(f"MPI rank 0 could not write the checkpoint in {directory}: {msg}")
        return msg

    @classmethod
    def load(cls, directory, backend=None, comm=None):
        """Collective: resume from ``directory/LATEST``.  Rank 0 reads the checkpoint's files
        once (:func:`tinydl.checkpoint.read`) and broadcasts them; every rank loads that copy
        (the other ranks need not see ``directory``)."""
        from hal.backends.mpi import MPIComm
        supervise()
        _install_excepthook()
        mpi = MPIComm(comm, default_timeout())
        files = None
        if mpi.rank == 0:
            try:
                files = checkpoint.read(directory)
            except ModelFileError as exc:
                files = str(exc)
        files = checkpoint.broadcast_files(mpi, files)
        if isinstance(files, str):
            raise ModelFileError(files)
        _LOADING.comm = comm
        try:
            with tempfile.TemporaryDirectory(prefix="tinydl-mpi-ckpt-") as local:
                for name, data in files.items():
                    path = os.path.join(local, name)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as fh:
                        fh.write(data)
                self = super().load(local, backend=backend)
            ctx = self._ctx()
            # _init gave the transform the MPI backend before it was loaded; the loaded
            # network gets the data-parallel hook
            self.network_.grad_hook = ctx["hook"]
        finally:
            _LOADING.comm = None
        mpi.barrier("checkpoint load")
        mpi.comm.Free()  # the duplicate used for the files; the learner has its own
        self._check_consistent(ctx)
        return self
