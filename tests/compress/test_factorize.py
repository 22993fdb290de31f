"""Each factorization reconstructs W within the requested error; costly ones are refused."""
import numpy as np
import pytest

from tinydl.compress import (
    FactorizationCostError,
    SparseFactorizer,
    relative_error,
    sparse_factorize,
    svd_factorize,
    svd_max_rank,
)
from tinydl.compress.factorize import sparse_nbytes


def _lowrank(m, n, r, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, r)) @ rng.standard_normal((r, n)) / np.sqrt(r)
    return (W + noise * rng.standard_normal((m, n))).astype(np.float32)


@pytest.mark.parametrize("tol", [0.3, 0.1, 0.02])
def test_svd_within_tol_plain_and_data_aware(tol):
    W = _lowrank(120, 80, 20)
    U, V = svd_factorize(W, tol=tol)
    assert relative_error(W, U @ V) <= tol
    assert U.shape[1] * (120 + 80) < 120 * 80
    X = np.random.default_rng(1).standard_normal((60, 120))
    U2, V2 = svd_factorize(W, tol=tol, X=X)
    assert relative_error(W, U2 @ V2, X) <= tol


def test_data_aware_beats_plain_on_outputs():
    # inputs confined to a 10-dim subspace: output-space factors need far lower rank
    rng = np.random.default_rng(2)
    W = rng.standard_normal((100, 90)).astype(np.float32)
    X = rng.standard_normal((200, 10)) @ rng.standard_normal((10, 100))
    U, V = svd_factorize(W, rank=10, X=X)
    Up, Vp = svd_factorize(W, rank=10)
    assert relative_error(W, U @ V, X) < 1e-5
    assert relative_error(W, Up @ Vp, X) > 0.3


def test_svd_rank_that_does_not_pay_is_refused():
    W = np.ones((200, 150), np.float32)
    assert svd_max_rank(200, 150) == 85
    svd_factorize(W, rank=85)
    with pytest.raises(FactorizationCostError, match=r"rank 86 would cost 30,100 parameters, "
                       r"not fewer than the original 30,000"):
        svd_factorize(W, rank=86)


@pytest.mark.parametrize("data_aware", [False, True])
def test_sparse_within_tol_and_storage_counted(data_aware):
    W = _lowrank(96, 128, 12, seed=3)
    X = np.random.default_rng(4).standard_normal((50, 96)) if data_aware else None
    fac = sparse_factorize(W, 16, tol=0.1, X=X, n_iter=4)
    assert relative_error(W, fac.reconstruct(), X) <= 0.1
    counts = np.diff(fac.indptr)
    # 16 atoms: an index fits in one byte
    assert counts.max() <= 16 and fac.indices.dtype == np.uint8
    nnz = fac.data.size
    assert fac.nbytes == 96 * 16 * 4 + nnz * (4 + 1) + 129 * 4 == sparse_nbytes(96, 128, 16, nnz)
    assert fac.nbytes < W.nbytes


def test_sparse_codes_are_sparse_and_exact_for_sparse_W():
    rng = np.random.default_rng(5)
    B = rng.standard_normal((40, 8))
    S = np.zeros((8, 200))
    for j in range(200):
        S[rng.choice(8, 2, replace=False), j] = rng.standard_normal(2)
    W = (B @ S).astype(np.float32)
    fac = SparseFactorizer(W, n_iter=10).factors(8, 2, check_cost=False)
    assert np.diff(fac.indptr).max() <= 2
    assert relative_error(W, fac.reconstruct()) < 0.05


def test_sparse_that_does_not_pay_is_refused():
    W = _lowrank(30, 20, 5)
    with pytest.raises(FactorizationCostError, match=r"not fewer than the original 2,400 bytes"):
        sparse_factorize(W, 18, k=18)


def test_nan_weights_refused():
    W = np.ones((10, 10), np.float32)
    W[3, 4] = np.nan
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        svd_factorize(W, rank=2)
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        sparse_factorize(W, 4, k=2)
