"""Every MPIBackend operation against NumPy under mpiexec (tests/mpi/test_mpi.py).

Prints "ok" on rank 0 when omp_encode and gather_matmul are bit-identical to NumPy and the
products are within the backend's rtol of |A| @ |B|; raises otherwise.
"""
import warnings

from common import np

from hal.backends.mpi import MPIBackend
from hal.backends.numpy import LinearDependenceWarning, NumpyBackend

warnings.simplefilter("ignore", LinearDependenceWarning)
be, ref = MPIBackend(block=16, min_rows=8), NumpyBackend(block=16)
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    for n in (1, 5, 37, 130):  # below min_rows (rank 0 + broadcast) and sharded
        A, B = rng.standard_normal((n, 53)).astype(dt), rng.standard_normal((53, 29)).astype(dt)
        bound = np.abs(A).astype(np.float64) @ np.abs(B)
        for name, got, want in (("matmul", be.matmul(A, B), ref.matmul(A, B)),
                                ("dense_forward", be.dense_forward(A, B, B[0]),
                                 ref.dense_forward(A, B, B[0]))):
            err = np.abs(got.astype(np.float64) - want) - be.rtol[np.dtype(dt).name] * (
                bound + np.abs(B[0]))
            assert err.max() <= 0, (name, dt, n, err.max())
        D = rng.standard_normal((40, 53)).astype(dt)
        D /= np.linalg.norm(D, axis=1, keepdims=True)
        G = D @ D.T
        r, w = be.omp_encode(A, D, G, 6), ref.omp_encode(A, D, G, 6)
        for a, b in ((r.indices, w.indices), (r.values, w.values), (r.n_nonzero, w.n_nonzero),
                     (r.residual_sq, w.residual_sq)):
            np.testing.assert_array_equal(a, b)
        idx = rng.integers(-1, 40, (n, 6)).astype(np.int32)
        val = rng.standard_normal((n, 6)).astype(dt)
        W = rng.standard_normal((40, 11)).astype(dt)
        np.testing.assert_array_equal(be.gather_matmul(idx, val, W),
                                      ref.gather_matmul(idx, val, W))
if be.rank == 0:
    print(f"ok: mpi backend on {be.size} ranks")
