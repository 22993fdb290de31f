"""The customizer: plans fit their budgets on every training profile, infeasible budgets name
the smallest that works, the footprint formula matches the learner's measured peak, and plans
round-trip through JSON."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from tinydl.customize import BudgetInfeasible, load_plan, plan, plan_footprint
from tinydl.footprint import by_term

PROFILES = ("jetson-tk1", "raspberry-pi-4", "x86-64-host")
MEMORY = (None, 64 * 2 ** 20, 4 * 2 ** 20, 256 * 2 ** 10)
TIME = (None, 100e-6, 2e-6)
RATE = (None, 200.0)
#: narrowed ladders for the grid (the paper's setting on them): 144 plans in seconds
GRID = dict(l_choices=(8, 32, 100), k_choices=(2, 5, 20), window_choices=(128, 1024, 2048),
            hidden_choices=((16,), (64, 32)))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("m,n_classes", [(520, 13), (5625, 19)])
def test_every_plan_on_the_grid_fits_its_budget(profile, m, n_classes):
    feasible = infeasible = 0
    for mem, t, rate in itertools.product(MEMORY, TIME, RATE):
        try:
            p = plan(m, n_classes, profile, memory_bytes=mem, time_per_sample=t, rate_hz=rate,
                     **GRID)
        except BudgetInfeasible as exc:
            infeasible += 1
            msg = str(exc)
            assert "needs at least" in msg, msg
            # the smallest memory it names does work (with the other budgets as given)
            if "memory" in exc.needs:
                need = int(exc.needs["memory"])
                assert need > mem and f"{need:,} bytes" in msg
                p = plan(m, n_classes, profile, memory_bytes=need, time_per_sample=t,
                         rate_hz=rate, **GRID)
                assert p.footprint_bytes <= need
            continue
        feasible += 1
        if mem is not None:
            assert p.footprint_bytes <= mem
            # the real footprint holds the paper's dictionary and parameters at least (its
            # codes are compact: k narrow indices and values each, below the formula's dense
            # l*n when k is small against l)
            terms = by_term(p.buffers)
            assert terms["m*l"] + terms["|param|"] <= p.footprint_bytes
        if t is not None:
            assert p.transform_seconds <= t
        if rate is not None:
            assert p.seconds_per_sample <= 1.0 / rate
        assert p.footprint_bytes == p.footprint["total"]
        assert p.l <= m and 1 <= p.k <= p.l
    assert feasible and infeasible  # the grid spans both sides


def test_paper_memory_formula():
    p = plan(5625, 19, "x86-64-host")
    n_params = sum(a * b + b for a, b in zip((p.l,) + p.hidden_layer_sizes,
                                             p.hidden_layer_sizes + (19,)))
    assert p.paper_bytes == 4 * (5625 * p.l + p.l * p.window + n_params)
    assert (p.l, p.k) == (100, 20)  # the paper's setting when nothing binds


def test_more_budget_never_gives_less_capacity():
    small = plan(520, 13, "raspberry-pi-4", memory_bytes=4 * 2 ** 20)
    large = plan(520, 13, "raspberry-pi-4", memory_bytes=64 * 2 ** 20)
    assert (large.l, large.k, large.window) >= (small.l, small.k, small.window)


def test_inference_only_profile_and_bad_budgets_are_refused():
    with pytest.raises(ValueError, match="inference-only"):
        plan(100, 5, "cortex-m3")
    with pytest.raises(ValueError, match="memory_bytes"):
        plan(100, 5, memory_bytes=-1)
    with pytest.raises(ValueError, match="target_error"):
        plan(100, 5, target_error=1.5, X=np.ones((100, 100)))
    with pytest.raises(ValueError, match="needs data"):
        plan(100, 5, target_error=0.2)
    with pytest.raises(ValueError, match="NaN|finite"):
        X = np.ones((100, 100))
        X[3, 3] = np.nan
        plan(100, 5, target_error=0.2, X=X)


def test_error_customization_tunes_k_to_the_target():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((30, 200))
    X = rng.standard_normal((2000, 30)) @ B + 0.05 * rng.standard_normal((2000, 200))
    loose = plan(200, 4, target_error=0.5, X=X)
    tight = plan(200, 4, target_error=0.1, X=X)
    assert loose.error <= 0.5 and tight.error <= 0.1
    assert tight.k >= loose.k
    assert "error" in tight.explain()
    with pytest.raises(BudgetInfeasible, match="error needs at least"):
        plan(200, 4, target_error=1e-6, X=X, memory_bytes=4 * 2 ** 20)


def test_explain_lists_candidates_and_reason():
    p = plan(520, 13, "raspberry-pi-4", memory_bytes=8 * 2 ** 20, rate_hz=200)
    text = p.explain()
    assert f"weighed {len(p.candidates)} candidates" in text
    assert "why this plan" in text and "rejected" in text


def test_plan_roundtrip(tmp_path):
    p = plan(520, 13, "jetson-tk1", memory_bytes=16 * 2 ** 20)
    path = tmp_path / "plan.json"
    p.save(path)
    q = load_plan(path)
    assert q.learner_params() == p.learner_params()
    assert q.footprint_bytes == p.footprint_bytes
    (tmp_path / "bad.json").write_text('{"l": 10}')
    with pytest.raises(ValueError, match="lacks"):
        load_plan(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text("{nope")
    with pytest.raises(ValueError, match="not a plan"):
        load_plan(tmp_path / "bad2.json")


_MEASURE = """
import sys, tracemalloc, numpy as np
from tinydl.customize import plan
m, C, chunk = 1500, 5, int(sys.argv[1])
p = plan(m, C, "x86-64-host", chunk=chunk, memory_bytes=64 * 2 ** 20)
rng = np.random.default_rng(0)
B = rng.standard_normal((20, m)).astype(np.float32)
X = rng.standard_normal((1800, 20)).astype(np.float32) @ B
y = rng.integers(0, C, len(X))
learner = p.learner(backend="numpy")  # the footprint mirrors NumpyBackend's workspace
tracemalloc.start()
for s in range(0, len(X), p.chunk):
    xb = X[s:s + p.chunk].copy()  # the chunk a stream reader would hand over
    learner.partial_fit(xb, y[s:s + p.chunk], classes=np.arange(C))
    del xb
print(tracemalloc.get_traced_memory()[1], p.footprint_bytes, p.chunk)
"""


@pytest.mark.parametrize("chunk", [256, 64])
def test_footprint_matches_the_learners_measured_peak(chunk):
    """The formula against tracemalloc's peak while a learner streams (m large enough that
    the arrays, not Python's own objects, dominate).  In a fresh interpreter: buffers that
    earlier tests left in module-level caches would otherwise go uncounted."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(chunk)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    peak, predicted, used_chunk = map(int, r.stdout.split())
    assert used_chunk == chunk
    fp = plan_footprint(1500, 5, *_plan_args(chunk))
    assert fp["total"] == predicted
    assert 0.85 * predicted <= peak <= 1.15 * predicted, (peak, fp)


def _plan_args(chunk):
    p = plan(1500, 5, "x86-64-host", chunk=chunk, memory_bytes=64 * 2 ** 20)
    return p.l, p.k, p.hidden_layer_sizes, p.window, "float32", p.batch_size, p.chunk


def test_smaller_network_batch_only_when_the_default_does_not_fit():
    # one configuration (m=520, l=16, k=5, net 16-32, window 128): the default minibatch
    # where it fits; where only a smaller one does, the plan takes the largest that fits and
    # its footprint is that of the learner with that batch
    from tinydl.customize import BATCH_LADDER, CHUNK_LADDER, LEAN_NETWORK
    from tinydl.plan import BATCH_SIZE
    fixed = dict(l_choices=(16,), k_choices=(5,), window_choices=(128,),
                 hidden_choices=((32,),), dictionary_dtype="float32")
    roomy = plan(520, 13, "x86-64-host", memory_bytes=4 * 2 ** 20, **fixed)
    assert roomy.batch_size == BATCH_SIZE == BATCH_LADDER[0]
    from tinydl.lowmem import PRODUCT_LADDER
    least = {b: plan_footprint(520, 13, 16, 5, (32,), 128, batch_size=b, chunk=CHUNK_LADDER[-1],
                               raw_rows=False, standardize="running", backend=roomy.backend,
                               dt_copy=False, product_rows=PRODUCT_LADDER[-1])["total"]
             for b in BATCH_LADDER}
    assert least[BATCH_LADDER[-1]] < least[BATCH_LADDER[0]]
    cap = least[BATCH_LADDER[-1]]      # only the smallest minibatch fits
    tight = plan(520, 13, "x86-64-host", memory_bytes=cap, **fixed)
    assert tight.batch_size == BATCH_LADDER[-1] and tight.footprint_bytes <= cap
    assert tight.optimizer == "adam"  # Adam at the smallest minibatch before the lean state
    assert tight.learner().batch_size == BATCH_LADDER[-1]
    # a byte less: nothing fits with Adam; the lean network state (Adafactor, the dense
    # first-layer product) does, at the largest minibatch that fits, and the learner takes it
    lean = plan(520, 13, "x86-64-host", memory_bytes=cap - 1, **fixed)
    assert (lean.optimizer, lean.sparse_product) == LEAN_NETWORK
    assert lean.footprint_bytes <= cap - 1
    learner = lean.learner()
    assert learner.optimizer == "adafactor" and learner.sparse_product == "dense"
    lean_least = {b: plan_footprint(520, 13, 16, 5, (32,), 128, batch_size=b,
                                    chunk=CHUNK_LADDER[-1], raw_rows=False,
                                    standardize="running", backend=roomy.backend,
                                    dt_copy=False, product_rows=PRODUCT_LADDER[-1],
                                    optimizer=LEAN_NETWORK[0],
                                    sparse_product=LEAN_NETWORK[1])["total"]
                  for b in BATCH_LADDER}
    assert lean.batch_size == max(b for b in BATCH_LADDER if lean_least[b] <= cap - 1)
    least_lean = lean_least[BATCH_LADDER[-1]]
    assert least_lean < cap
    with pytest.raises(BudgetInfeasible):
        plan(520, 13, "x86-64-host", memory_bytes=least_lean - 1, **fixed)


def _least_memory(l, window, **fixed):
    # the least budget a configuration needs, as the infeasible plan names it
    with pytest.raises(BudgetInfeasible) as exc:
        plan(520, 13, "x86-64-host", memory_bytes=1024, l_choices=(l,),
             window_choices=(window,), **fixed)
    return int(exc.value.needs["memory"])


def test_window_up_to_its_floor_before_more_atoms_then_atoms():
    # 13 classes: the floor is WINDOW_PER_CLASS * 13 samples; below it a longer window wins
    # over more atoms, past it more atoms win over a longer window
    from tinydl.plan import WINDOW_PER_CLASS
    fixed = dict(k_choices=(2,), hidden_choices=((16,),), dictionary_dtype="float32")
    floor = WINDOW_PER_CLASS * 13
    short, long_ = 128, 256
    assert short < floor <= long_
    need = {(l, w): _least_memory(l, w, **fixed) for l in (8, 16) for w in (short, long_, 512)}
    cap = max(need[8, long_], need[16, short])
    assert cap < need[16, long_]       # the two compete; the larger pair does not fit
    p = plan(520, 13, "x86-64-host", memory_bytes=cap, l_choices=(8, 16),
             window_choices=(short, long_), **fixed)
    assert (p.l, p.window) == (8, long_)
    cap = max(need[8, 512], need[16, long_])
    assert cap < need[16, 512]
    p = plan(520, 13, "x86-64-host", memory_bytes=cap, l_choices=(8, 16),
             window_choices=(long_, 512), **fixed)
    assert (p.l, p.window) == (16, long_)
