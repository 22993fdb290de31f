"""Arguments a kernel would read or write past are refused before the call, as the NumPy
reference refuses them (the native kernels trust their pointers: before these checks a wrong
``out`` or ``dy`` shape crashed the process), and OMP's ``tol`` is checked on every backend."""
from __future__ import annotations

import numpy as np
import pytest

import hal

F = np.float32


def _atoms(l, m, seed=0):
    D = np.random.default_rng(seed).standard_normal((l, m)).astype(F)
    return D / np.linalg.norm(D, axis=1, keepdims=True)


@pytest.fixture(params=["numpy", "native"])
def be(request, require_backend):
    require_backend(request.param)
    return hal.get_backend(request.param)


def test_gather_matmul_out_of_the_wrong_shape(be):
    idx, val, W = np.zeros((1000, 4), np.int32), np.ones((1000, 4), F), np.ones((10, 512), F)
    with pytest.raises(ValueError):
        be.gather_matmul(idx, val, W, out=np.zeros((1, 512), F))


@pytest.mark.parametrize("dy_shape,out_shape", [((1000, 4096), (1, 1)), ((1, 8), (2, 8)),
                                                ((1000, 3), (4, 2))])
def test_scatter_matmul_dy_or_out_of_the_wrong_shape(be, dy_shape, out_shape):
    n = 1000
    idx, val = np.zeros((n, 1), np.int32), np.ones((n, 1), F)
    with pytest.raises(ValueError):
        be.scatter_matmul(idx, val, np.ones(dy_shape, F), np.zeros(out_shape, F))


@pytest.mark.parametrize("bad", [2 ** 32, 2 ** 31, -2 ** 31 - 1])
def test_an_index_past_int32_is_not_wrapped_into_range(be, bad):
    W = np.arange(8, dtype=F).reshape(4, 2)
    with pytest.raises(IndexError, match=r"code indices must lie in \[-1, 4\)"):
        be.gather_matmul(np.array([[bad]], np.int64), np.ones((1, 1), F), W)


def test_omp_with_a_gram_matrix_of_the_wrong_size(be):
    X, D = np.random.default_rng(1).random((50, 20)).astype(F), _atoms(300, 20)
    with pytest.raises(ValueError):
        be.omp_encode(X, D, np.eye(2, dtype=F), 10)


@pytest.mark.parametrize("what", ["X", "indices", "values"])
def test_an_encode_plan_checks_its_arrays(be, what):
    D = _atoms(30, 20)
    plan = be.prepare_encode(D, D @ D.T, 3)
    X, idx, val = (np.random.default_rng(2).random((50, 20)).astype(F),
                   np.zeros((50, 3), np.int32), np.zeros((50, 3), F))
    if what == "X":
        X = np.random.default_rng(2).random((50, 2000)).astype(F)
    elif what == "indices":
        idx = np.zeros((1, 3), np.int32)
    else:
        val = np.zeros((50, 2), F)
    with pytest.raises(ValueError):
        plan.encode(X, idx, val)


@pytest.mark.parametrize("name", ["numpy", "native", "multiprocessing", "opencl"])
@pytest.mark.parametrize("tol", [float("nan"), -1.0, float("inf"), "0.1"])
def test_omp_tol_must_be_a_finite_non_negative_number(name, tol, require_backend):
    require_backend(name)
    b = hal.get_backend(name)
    X, D = np.random.default_rng(3).random((40, 20)).astype(F), _atoms(30, 20)
    with pytest.raises(ValueError, match="tol must be None or a finite number >= 0"):
        b.omp_encode(X, D, D @ D.T, 5, tol=tol)
    if name in ("numpy", "native"):
        with pytest.raises(ValueError, match="tol must be None"):
            b.prepare_encode(D, D @ D.T, 5, tol=tol).encode(
                X, np.zeros((40, 5), np.int32), np.zeros((40, 5), F))
    ok = b.omp_encode(X, D, D @ D.T, 5, tol=0.0)
    assert ok.indices.shape == (40, 5)


@pytest.mark.parametrize("call", ["dense_forward", "gather_matmul", "correlate"])
def test_multiprocessing_refuses_mismatched_operands_as_the_reference(call, require_backend):
    # a ValueError in this process (the reference's), not a worker's BackendError
    require_backend("multiprocessing")
    b = hal.get_backend("multiprocessing", workers=2, min_rows=1, block=1)
    args = {"dense_forward": (np.ones((40, 5), F), np.ones((5, 3), F), np.ones(4, F)),
            "gather_matmul": (np.zeros((40, 3), np.int32), np.ones((40, 2), F),
                              np.ones((5, 3), F)),
            "correlate": (np.ones((40, 5), F), np.ones((7, 6), F))}[call]
    with pytest.raises(ValueError):
        getattr(b, call)(*args)
