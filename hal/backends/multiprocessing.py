"""The multiprocessing backend: a batch's rows sharded across worker processes.

Each worker runs :class:`~hal.backends.numpy.NumpyBackend` (same ``block`` and ``batch``) on a
contiguous slice of rows.  Inputs and outputs travel through one shared-memory arena
(``multiprocessing.shared_memory``); only a small command tuple goes through each worker's
pipe.  Shards start on multiples of ``block``, so every matrix product a worker runs sees the
same zero-padded ``block``-row blocks as the single-process reference: **omp_encode and
gather_matmul are bit-identical to NumPy** (with one BLAS thread per process, which the workers
set).  The plain products (matmul, correlate, dense_forward) are not: ``numpy.matmul`` on the
whole batch lets OpenBLAS pick kernels by row count, so a row slice may round differently;
they agree to ``rtol * (|A| @ |B|)`` elementwise, rtol 1e-5 (float32) and 1e-13 (float64).

Workers are started once (the pool is kept) and stopped by :meth:`close`, the context manager,
garbage collection or interpreter exit.  A worker that dies raises :class:`hal.BackendError`
naming it (pid and exit code) at once - the parent waits on the worker's process sentinel, not
only on its pipe - and one that does not answer within ``timeout`` seconds raises too; the pool
is then restarted on the next call.

Start method: ``fork`` when it is safe (this process runs a single OS thread, so no OpenBLAS or
OpenCL thread can be caught mid-lock by the fork), else ``forkserver`` (POSIX) or ``spawn``.

Size: ~380 lines (backends aim at ~300) because the worker pool's life cycle (start method,
shared-memory arena, death and timeout detection, restart) is one concern that reads best in
one place; the sharding rule itself is shared with mpi in ``_sharded.py``.
"""
from __future__ import annotations

import os
import sys
import weakref
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..backend import BackendError, SparseCodes, check_code_indices
from ._sharded import ShardedRows, block_shards
from .numpy import NumpyBackend, _check_block

__all__ = ["MultiprocessingBackend", "default_start_method"]

_ALIGN = 64


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading
        return threading.active_count()


def default_start_method() -> str:
    """``fork`` if this process has one OS thread, else ``forkserver``/``spawn``."""
    import multiprocessing as mp
    methods = mp.get_all_start_methods()
    if "fork" in methods and sys.platform.startswith("linux") and _os_threads() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


# -- the worker --------------------------------------------------------------------------------
def _views(buf, layout):
    return {k: np.ndarray(shape, np.dtype(dt), buffer=buf, offset=off)
            for k, (off, shape, dt) in layout.items()}


def _worker_main(conn, block: int, batch: int, threads: Optional[int]) -> None:  # pragma: no cover
    """Serve commands until told to stop (runs in the child)."""
    from multiprocessing import shared_memory
    if threads:
        try:
            from .. import threads as _threads
            _threads.set_num_threads(int(threads))
        except Exception:
            pass
    be = NumpyBackend(block=block, batch=batch)
    shm = None
    ws = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg[0] == "stop":
            break
        try:
            _, op, shm_name, layout, s, e, params = msg
            if shm is None or shm.name != shm_name:
                if shm is not None:
                    shm.close()
                shm = shared_memory.SharedMemory(name=shm_name)
            v = _views(shm.buf, layout)
            rec: List[str] = []
            if op == "matmul":
                be.matmul(v["a"][s:e], v["b"], out=v["out"][s:e])
            elif op == "correlate":
                be.correlate(v["X"][s:e], v["D"], out=v["out"][s:e])
            elif op == "dense_forward":
                be.dense_forward(v["X"][s:e], v["W"], v.get("b"), out=v["out"][s:e])
            elif op == "gather_matmul":
                be.gather_matmul(v["indices"][s:e], v["values"][s:e], v["W"],
                                 out=v["out"][s:e])
            elif op == "omp_encode":
                X = v["X"][s:e]
                m, l, k = X.shape[1], v["D"].shape[0], params["k"]
                if ws is None or not ws.fits(min(e - s, batch), m, l, k, X.dtype):
                    ws = be.prepare_omp(batch, m, l, k, X.dtype)
                # the parent warns once for all shards: send the count of early stops
                r, stopped = be._omp_encode(X, v["D"], v["G"], k, tol=params["tol"], ws=ws)
                rec = [stopped]
                v["indices"][s:e] = r.indices
                v["values"][s:e] = r.values
                v["nnz"][s:e] = r.n_nonzero
                v["resid"][s:e] = r.residual_sq
            else:
                raise ValueError(f"unknown op {op!r}")
            del v
            conn.send(("ok", rec))
        except Exception as exc:  # report, keep serving
            conn.send(("err", f"{type(exc).__name__}: {exc}"))
    if shm is not None:
        shm.close()


def _shutdown(procs, conns, shms) -> None:
    """Stop workers and free shared memory (also run by weakref.finalize at exit)."""
    for c in conns:
        try:
            c.send(("stop",))
        except (OSError, ValueError):
            pass
    for p in procs:
        p.join(timeout=2.0)
        if p.is_alive():
            p.kill()
            p.join(timeout=2.0)
    for c in conns:
        c.close()
    for shm in shms:
        try:
            shm.close()
            shm.unlink()
        except (OSError, FileNotFoundError):
            pass
    procs.clear()
    conns.clear()
    shms.clear()


def _conform(a, b, ax_a, ax_b) -> bool:
    """Whether two 2-D operands agree on the axes a product contracts (where not, the
    reference runs the call in this process and raises its own ValueError, not a worker's
    BackendError)."""
    return np.ndim(a) == 2 and np.ndim(b) == 2 and a.shape[ax_a] == b.shape[ax_b]


class MultiprocessingBackend(ShardedRows, NumpyBackend):
    """NumPy backend sharding each batch's rows over a pool of worker processes.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: ``os.cpu_count()``).
    block, batch : int
        As for :class:`~hal.backends.numpy.NumpyBackend`; workers use the same values.
    min_rows : int, optional
        Batches with fewer rows run in this process (same results, no IPC); default
        ``2 * block``.  ``1`` sends everything to the workers.
    timeout : float, default=300
        Seconds to wait for a worker's answer before raising :class:`hal.BackendError`.
    start_method : {None, "fork", "forkserver", "spawn"}
        Default: :func:`default_start_method`.
    worker_threads : int or None, default=1
        BLAS threads in each worker (None: leave the library's default).

    Tolerance: omp_encode and gather_matmul bit-identical to NumPy (shards start on ``block``
    boundaries); products within 1e-5 (float32) / 1e-13 (float64) of ``|A| @ |B|``.
    """

    name = "multiprocessing"
    bit_identical = False
    #: the execution phase (per-row, never sharded) on the native per-row kernels where
    #: they build, as the blas backend's (hal.execution): the same codes as one process
    compiled_execution = True
    #: the operations whose results are bit-identical to NumPy's
    bit_identical_ops = ("omp_encode", "gather_matmul")
    rtol = {"float32": 1e-5, "float64": 1e-13}

    def __init__(self, workers: Optional[int] = None, block: int = 64, batch: int = 256,
                 min_rows: Optional[int] = None, timeout: float = 300.0,
                 start_method: Optional[str] = None, worker_threads: Optional[int] = 1,
                 **options) -> None:
        super().__init__(block=block, batch=batch, **options)
        workers = (os.cpu_count() or 1) if workers is None else workers
        self.workers = _check_block(workers)
        self._init_sharding(min_rows)
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        if start_method not in (None, "fork", "forkserver", "spawn"):
            raise ValueError(f"start_method must be fork, forkserver, spawn or None, "
                             f"got {start_method!r}")
        self.start_method = start_method
        self.worker_threads = worker_threads
        self.options.update(workers=self.workers, min_rows=self.min_rows)
        self._procs: list = []
        self._conns: list = []
        self._shms: list = []
        self._finalizer = None

    # -- pool ---------------------------------------------------------------------------
    def _start(self) -> None:
        if self._procs:
            return
        import multiprocessing as mp
        from multiprocessing import resource_tracker
        method = self.start_method or default_start_method()
        # one tracker for parent and workers: a worker that attaches to the arena registers
        # it with the parent's tracker (a no-op), instead of starting its own tracker that
        # would "clean up" (and warn about) the arena when the worker exits
        resource_tracker.ensure_running()
        ctx = mp.get_context(method)
        for _ in range(self.workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main,
                            args=(child, self.block, self.batch, self.worker_threads),
                            daemon=True, name=f"tinydl-mp-worker-{len(self._procs)}")
            p.start()
            child.close()
            self._procs.append(p)
            self._conns.append(parent)
        self.used_start_method = method
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns,
                                           self._shms)

    def close(self) -> None:
        """Stop the workers and free the shared memory.  Idempotent."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

    @property
    def pids(self) -> List[int]:
        """Worker process ids (empty before the first sharded call)."""
        return [p.pid for p in self._procs]

    def _arena(self, nbytes: int):
        from multiprocessing import shared_memory
        if self._shms and self._shms[0].size >= nbytes:
            return self._shms[0]
        for old in self._shms:
            old.close()
            old.unlink()
        self._shms.clear()
        shm = shared_memory.SharedMemory(create=True, size=max(int(nbytes * 1.25), 4096))
        self._shms.append(shm)
        return shm

    def _shards(self, n: int) -> List[Tuple[int, int]]:
        return block_shards(n, self.block, self.workers, keep_empty=False)

    def _run(self, op: str, n: int, inputs: Dict[str, np.ndarray],
             outputs: Dict[str, Tuple[tuple, np.dtype]], params=None):
        """Copy ``inputs`` into the arena, run ``op`` sharded, return views of ``outputs``."""
        self._start()
        layout, off = {}, 0
        for key, arr in list(inputs.items()) + [(k, None) for k in outputs]:
            shape, dt = (arr.shape, arr.dtype) if arr is not None else outputs[key]
            layout[key] = (off, tuple(shape), np.dtype(dt).str)
            off += -(-int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                     // _ALIGN) * _ALIGN
        shm = self._arena(off)
        views = _views(shm.buf, layout)
        for key, arr in inputs.items():
            views[key][...] = arr
        shards = self._shards(n)
        for i, ((s, e), conn) in enumerate(zip(shards, self._conns)):
            try:
                conn.send(("run", op, shm.name, layout, s, e, params or {}))
            except (OSError, ValueError):  # the worker's end is gone: it died
                self._dead(i)
        messages = self._collect(len(shards))
        res = {k: views[k].copy() for k in outputs}
        del views
        return res, messages

    def _collect(self, count: int) -> List[str]:
        from multiprocessing.connection import wait
        pending = {i: self._conns[i] for i in range(count)}
        errors, messages = [], []
        while pending:
            sentinels = {self._procs[i].sentinel: i for i in pending}
            ready = wait(list(pending.values()) + list(sentinels), timeout=self.timeout)
            if not ready:
                who = ", ".join(f"{self._procs[i].name} (pid {self._procs[i].pid})"
                                for i in pending)
                self._abort()
                raise BackendError(f"multiprocessing backend: no answer within "
                                   f"{self.timeout:g} s from worker(s) {who}")
            for r in ready:
                i = sentinels.get(r)
                if i is None:
                    i = next(j for j, c in pending.items() if c is r)
                conn = pending[i]
                if conn.poll():
                    try:
                        status, payload = conn.recv()
                    except (EOFError, OSError):
                        status, payload = "dead", None
                else:
                    status, payload = "dead", None
                if status == "dead":
                    self._dead(i)
                del pending[i]
                if status == "err":
                    errors.append(f"{self._procs[i].name}: {payload}")
                else:
                    messages.extend(payload)
        if errors:
            raise BackendError("multiprocessing backend: " + "; ".join(errors))
        return messages

    def _abort(self) -> None:
        self.close()

    def _dead(self, i: int) -> None:
        p = self._procs[i]
        p.join(timeout=1.0)
        name, pid, code = p.name, p.pid, p.exitcode
        self._abort()
        raise BackendError(f"multiprocessing backend: worker {name} (pid {pid}) died with "
                           f"exit code {code}; the pool will be restarted on the next call")

    # -- the contract -------------------------------------------------------------------
    def matmul(self, a, b, out=None):
        if a.ndim != 2 or b.ndim != 2 or self._local(a.shape[0]) or a.shape[1] != b.shape[0]:
            return super().matmul(a, b, out=out)
        dt = np.result_type(a, b)
        res, _ = self._run("matmul", a.shape[0], {"a": a, "b": b},
                           {"out": ((a.shape[0], b.shape[1]), dt)})
        return _deliver(res["out"], out)

    def correlate(self, X, D, out=None):
        if self._local(X.shape[0]) or not _conform(X, D, 1, 1):
            return super().correlate(X, D, out=out)
        res, _ = self._run("correlate", X.shape[0], {"X": X, "D": D},
                           {"out": ((X.shape[0], D.shape[0]), np.result_type(X, D))})
        return _deliver(res["out"], out)

    def dense_forward(self, X, W, b=None, out=None):
        if self._local(X.shape[0]) or not _conform(X, W, 1, 0) or (
                b is not None and np.shape(b) != (W.shape[1],)):
            return super().dense_forward(X, W, b, out=out)
        inputs = {"X": X, "W": W}
        if b is not None:
            inputs["b"] = np.asarray(b)
        res, _ = self._run("dense_forward", X.shape[0], inputs,
                           {"out": ((X.shape[0], W.shape[1]), np.result_type(X, W))})
        return _deliver(res["out"], out)

    def gather_matmul(self, indices, values, W, out=None):
        check_code_indices(indices, W.shape[0])  # here, not as a worker's BackendError
        if self._local(indices.shape[0]) or np.shape(values) != np.shape(indices) \
                or np.ndim(W) != 2:
            return super().gather_matmul(indices, values, W, out=out)
        res, _ = self._run("gather_matmul", indices.shape[0],
                           {"indices": indices, "values": values, "W": W},
                           {"out": ((indices.shape[0], W.shape[1]),
                                    np.result_type(values, W))})
        return _deliver(res["out"], out)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> SparseCodes:
        from .numpy.omp import check_tol
        check_tol(tol)  # here: a worker's error would come back as a BackendError
        n = X.shape[0]
        if self._local(n):
            return super().omp_encode(X, D, G, k, tol=tol, ws=ws)
        k = int(min(k, D.shape[0]))
        res, messages = self._run(
            "omp_encode", n, {"X": X, "D": D, "G": G},
            {"indices": ((n, k), np.int32), "values": ((n, k), X.dtype),
             "nnz": ((n,), np.int32), "resid": ((n,), X.dtype)},
            {"k": k, "tol": tol})
        from .numpy.omp import warn_stopped_early
        warn_stopped_early(sum(messages), n, D.shape[0], k, X.shape[1])
        return SparseCodes(res["indices"], res["values"], D.shape[0], res["nnz"], res["resid"])


def _deliver(res: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    if out is None:
        return res
    if out.shape != res.shape:
        raise ValueError(f"out has shape {out.shape}, expected {res.shape}")
    out[...] = res
    return out
