"""The projection threshold alpha tuned on held-out rows (tinydl.customize.tune_alpha): its
score against an independent reference (scikit-learn's OMP on the dictionary Algorithm 2
kept), the choice on data built so that one alpha is right, the noise margin, bad input,
and the plan that uses it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tinydl.customize import ALPHA, ALPHA_HOLDOUT, plan, tune_alpha
from tinydl.transform import StreamingDictionary


def _near_duplicates(seed=0, n=600, m=60, centres=40, noise=0.35):
    """Rows around ``centres`` directions: a low alpha fills the atoms with near-copies of
    the first few centres met, a higher one with one atom per centre."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((centres, m))
    X = C[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, m)) / np.sqrt(m) \
        * np.linalg.norm(C, axis=1).mean()
    return X


def _reference_rows(X, l, k, seed, a):
    """Each held-out row's relative error by the rule transcribed: a seeded shuffle, every
    ALPHA_HOLDOUT-th row held out, Algorithm 2 on the rest, scikit-learn's OMP on the atoms
    it kept."""
    sk = pytest.importorskip("sklearn.linear_model")
    Xs = X[np.random.default_rng(seed).permutation(len(X))]
    held = np.arange(len(Xs)) % ALPHA_HOLDOUT == ALPHA_HOLDOUT - 1
    D = StreamingDictionary(l=l, k=k, alpha=a, dtype="float64").fit(Xs[~held]).dictionary_
    H = Xs[held]
    C = sk.orthogonal_mp(D.T, H.T, n_nonzero_coefs=min(k, len(D))).T
    return np.linalg.norm(H - C @ D, axis=1) / np.linalg.norm(H, axis=1)


def test_score_matches_sklearn_omp_on_the_kept_dictionary():
    X = _near_duplicates(1, n=300, m=40, centres=30)
    l, k, seed = 24, 4, 3
    _, errors = tune_alpha(X, l, k, dtype="float64", seed=seed, alphas=(0.1, 0.6))
    for a in (0.1, 0.6):
        ref = _reference_rows(X, l, k, seed, a).mean()
        assert errors[a] == pytest.approx(ref, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("data_seed", [1, 9, 11, 15, 39])
def test_a_departure_from_the_default_must_beat_it_by_two_standard_errors(data_seed):
    # anisotropic low-dimensional rows: alpha decides which rows join, and 0.6's lower mean
    # error is significant for some draws (11, 15, 39) and not for others (1, 9)
    rng = np.random.default_rng(data_seed)
    X = rng.standard_normal((150, 10)) * np.linspace(1, 0.2, 10)
    a, errors = tune_alpha(X, 8, 2, dtype="float64", seed=0, alphas=(ALPHA, 0.6))
    d = _reference_rows(X, 8, 2, 0, ALPHA) - _reference_rows(X, 8, 2, 0, 0.6)
    assert d.mean() > 0  # 0.6 has the lower mean error on every draw here
    significant = d.mean() > 2 * d.std(ddof=1) / np.sqrt(len(d))
    assert a == (0.6 if significant else ALPHA)
    assert significant == (data_seed in (11, 15, 39))


def test_picks_the_alpha_that_keeps_distinct_atoms():
    X = _near_duplicates(0)
    a, errors = tune_alpha(X, 40, 3, seed=0, alphas=(0.1, 0.3, 0.6))
    assert errors[0.6] < errors[0.3] < errors[0.1]
    assert a == 0.6


def test_default_stays_unless_beaten_beyond_noise():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 30))  # isotropic: every alpha fills alike, errors within noise
    a, errors = tune_alpha(X, 20, 5, seed=1, alphas=(0.1, ALPHA))
    assert a == ALPHA
    assert set(errors) == {0.1, ALPHA}
    # deterministic for a seed
    assert tune_alpha(X, 20, 5, seed=1, alphas=(0.1, ALPHA)) == (a, errors)


def test_bad_input_is_refused_with_the_numbers():
    X = _near_duplicates(0, n=50)
    with pytest.raises(ValueError, match=r"2\*l = 60 rows.*got 50"):
        tune_alpha(X, 30, 3)
    Xn = _near_duplicates(0, n=100)
    Xn[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tune_alpha(Xn, 20, 3)


def test_plan_tunes_alpha_from_sampled_rows_and_says_so(tmp_path):
    X = _near_duplicates(0, n=800, m=60)
    base = plan(60, 5, memory_bytes=4 * 2 ** 20, l_choices=(40,), k_choices=(3,),
                window_choices=(128,), hidden_choices=((16,),))
    assert base.alpha == ALPHA and "held-out" not in base.reason
    p = plan(60, 5, memory_bytes=4 * 2 ** 20, l_choices=(40,), k_choices=(3,),
             window_choices=(128,), hidden_choices=((16,),), alpha_rows=X, standardize=False)
    assert p.alpha == tune_alpha(X, 40, 3, standardize=False)[0] != ALPHA
    assert f"alpha {p.alpha:g}: the least reconstruction error of held-out rows" in p.reason
    # the rest of the plan is the rule's, alpha aside; and the plan file keeps it
    assert (p.l, p.k, p.window) == (base.l, base.k, base.window)
    p.save(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["alpha"] == p.alpha
    few = plan(60, 5, memory_bytes=4 * 2 ** 20, l_choices=(40,), k_choices=(3,),
               window_choices=(128,), hidden_choices=((16,),), alpha_rows=X[:50])
    assert few.alpha == ALPHA and "too few to tune it" in few.reason
    with pytest.raises(ValueError, match="alpha_rows"):
        plan(60, 5, alpha_rows=X[:, :59])
