"""Learning in a small memory budget (issue 18): the code window's compact arrays, retraining
on views of it, Adam's two state buffers, product tiles of fewer rows, and the footprint of a
small plan against the learner's measured peak."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydl.codes import SparseCodes
from tinydl.window import CodeWindow, index_dtype, label_dtype


def _codes(rng, n, k, l):
    """n random compact codes: distinct indices per row, some rows padded (-1, 0)."""
    idx = np.stack([rng.permutation(l)[:k] for _ in range(n)]).astype(np.int32)
    val = rng.standard_normal((n, k)).astype(np.float32)
    stop = rng.integers(1, k + 1, n)            # codes that stop early are padded
    pad = np.arange(k)[None, :] >= stop[:, None]
    idx[pad], val[pad] = -1, 0
    return SparseCodes(idx, val, l)


@pytest.mark.parametrize("l,want", [(2, np.int8), (128, np.int8), (129, np.int16),
                                    (32768, np.int16), (32769, np.int32)])
def test_index_dtype_holds_every_index_and_the_padding(l, want):
    dt = index_dtype(l)
    assert dt == want
    assert np.iinfo(dt).min <= -1 and np.iinfo(dt).max >= l - 1


@pytest.mark.parametrize("C,want", [(2, np.uint8), (256, np.uint8), (257, np.uint16),
                                    (None, np.int64)])
def test_label_dtype(C, want):
    assert label_dtype(C) == want


@pytest.mark.parametrize("l", [50, 200])
def test_compact_window_round_trip_is_exact(l):
    """The window's narrow indices and labels give back the int32 / int64 reference exactly
    (the values stay float32: bit for bit)."""
    rng = np.random.default_rng(0)
    k, size, C = 5, 64, 13
    win = CodeWindow(size, k, l, policy="sliding", classes=np.arange(C))
    assert win.indices.dtype == index_dtype(l) and win.labels.dtype == np.uint8
    codes = _codes(rng, 100, k, l)
    y = rng.integers(0, C, 100)
    for s in range(0, 100, 7):
        win.push(codes.rows(s, min(100, s + 7)), y[s:s + 7])
    got, lab = win.view()
    ref = slice(100 - size, 100)                    # the last `size`, oldest first
    np.testing.assert_array_equal(got.indices.astype(np.int32), codes.indices[ref])
    np.testing.assert_array_equal(got.values, codes.values[ref])
    np.testing.assert_array_equal(lab.astype(np.int64), y[ref])
    # a checkpoint's arrays restore it; older files' int32 / int64 arrays are narrowed
    state = win.state()
    state = dict(state, codes_indices=state["codes_indices"].astype(np.int32),
                 labels_window=state["labels_window"].astype(np.int64))
    back = CodeWindow.from_state(state, size, k, l, "float32", classes=np.arange(C))
    assert back.indices.dtype == win.indices.dtype and back.labels.dtype == win.labels.dtype
    np.testing.assert_array_equal(back.view()[0].indices, got.indices)


def test_a_file_with_indices_out_of_range_is_refused():
    from tinydl.errors import ModelFileError
    win = CodeWindow(8, 3, 50, classes=np.arange(4))
    state = dict(win.state(), codes_indices=np.full((8, 3), 50, np.int32))
    with pytest.raises(ModelFileError, match="codes_indices"):
        CodeWindow.from_state(state, 8, 3, 50, "float32", classes=np.arange(4))


@settings(max_examples=30, deadline=None)
@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=120),
       cuts=st.lists(st.integers(1, 17), min_size=1, max_size=10),
       size=st.integers(5, 30), seed=st.integers(0, 3))
def test_reservoir_invariants(labels, cuts, size, seed):
    """A class-balanced reservoir: each class's block holds min(count, cap) of that class's
    own samples, each a sample that arrived (never a copy of another), the same whatever the
    calls' sizes; train_view's rows are the occupied slots."""
    C, k, l = 5, 3, 40
    y = np.asarray(labels)
    n = len(y)
    rng = np.random.default_rng(seed)
    codes = _codes(rng, n, k, l)
    codes.values[:, 0] = np.arange(n) + 1.0         # an identity per sample (never padded)
    codes.indices[:, 0] = np.abs(codes.indices[:, 0])
    windows = []
    for split in (cuts, [n]):
        win = CodeWindow(size, k, l, policy="reservoir", classes=np.arange(C), seed=seed)
        s, i = 0, 0
        while s < n:
            e = min(n, s + split[i % len(split)])
            win.push(codes.rows(s, e), y[s:e])
            s, i = e, i + 1
        windows.append(win)
    a, b = windows
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.labels, b.labels)
    cap = max(1, size // C)
    counts = np.bincount(y, minlength=C)
    np.testing.assert_array_equal(a.counts, counts)
    assert a.fill == int(np.minimum(counts, cap).sum())
    seen = set()
    for c in range(C):
        have = min(counts[c], cap)
        block = slice(c * cap, c * cap + have)
        ids = a.values[block, 0].astype(int) - 1
        assert np.all(y[ids] == c) and np.all(a.labels[block] == c)
        assert len(set(ids.tolist())) == have and not seen & set(ids.tolist())
        seen |= set(ids.tolist())
        np.testing.assert_array_equal(a.indices[block].astype(np.int32), codes.indices[ids])
    got, lab, rows = a.train_view()
    assert np.shares_memory(got.indices, a.indices) and np.shares_memory(lab, a.labels)
    if a.fill < a.slots:
        np.testing.assert_array_equal(rows, a.occupied())
    else:
        assert rows is None


def test_training_on_window_rows_is_training_on_their_copy():
    """partial_fit(rows=...) on the whole window gives the same network, bit for bit, as
    training on the rows gathered into a copy (the copy retraining used to make)."""
    from tinydl.nn import MLPClassifier
    rng = np.random.default_rng(1)
    l, k, n, C = 30, 4, 90, 3
    codes = _codes(rng, n, k, l)
    y = rng.integers(0, C, n)
    rows = np.sort(rng.permutation(n)[:50])

    def net():
        return MLPClassifier(hidden_layer_sizes=(8,), optimizer="adam", batch_size=16,
                             epochs=1, seed=0, sparse_product="gather")
    a = net().partial_fit(SparseCodes(codes.indices.astype(np.int8), codes.values, l), y,
                          classes=np.arange(C), epochs=3, rows=rows)
    b = net().partial_fit(SparseCodes(codes.indices[rows], codes.values[rows], l), y[rows],
                          classes=np.arange(C), epochs=3)
    np.testing.assert_array_equal(a.network_.params, b.network_.params)
    with pytest.raises(ValueError, match="rows"):
        net().partial_fit(codes, y, classes=np.arange(C), rows=np.array([n]))


def test_adam_matches_pytorch_with_two_state_buffers():
    torch = pytest.importorskip("torch")
    from tinydl.nn.optim import Adam
    assert Adam.state_bytes(10, 4) == 2 * 10 * 4
    rng = np.random.default_rng(0)
    p = rng.standard_normal(64).astype(np.float32)
    tp = torch.tensor(p.copy(), requires_grad=True)
    ours, theirs = Adam(3e-3), torch.optim.Adam([tp], lr=3e-3)
    ours.prepare(64, np.float32)
    for _ in range(25):
        g = rng.standard_normal(64).astype(np.float32)
        tp.grad = torch.tensor(g.copy())
        theirs.step()
        ours.step(p, g.copy())
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "blas"])
@pytest.mark.parametrize("rows", [1, 4, 16])
def test_product_tiles_of_fewer_rows_keep_rows_independent(backend, rows, require_backend):
    """The property 16-row tiles were chosen for holds at 4 rows: a row's product is the
    same bits wherever it sits in a batch (so codes do not depend on how a stream is cut)."""
    import hal
    if backend != "numpy":
        require_backend(backend)  # skips where it cannot run, fails where CI requires it
    be = hal.get_backend(backend)
    be.product_rows = rows
    rng = np.random.default_rng(0)
    A = rng.standard_normal((23, 520)).astype(np.float32)
    B = rng.standard_normal((520, 64)).astype(np.float32)
    full = be.rows_matmul(A, B)
    for i in range(len(A)):
        np.testing.assert_array_equal(be.rows_matmul(A[i:i + 1], B)[0], full[i])
    np.testing.assert_array_equal(be.rows_matmul(A[5:], B), full[5:])
    np.testing.assert_allclose(full, A @ B, rtol=1e-4, atol=1e-3)


_MEASURE = r"""
import sys, tracemalloc, numpy as np
from tinydl.customize import plan
m, C = 520, 13
# argv[2]: the stream length the plan is told (8 windows or more: the weight average, its
# stash over the OMP scratch), argv[3]: 1 for a sliding window (the average needs one)
p = plan(m, C, "x86-64-host", memory_bytes=int(sys.argv[1]), standardize=False,
         n_samples=int(sys.argv[2]))
sliding = {"blocked": False} if sys.argv[3] == "1" else {}
rng = np.random.default_rng(0)
y = rng.integers(0, C, 1200)
# full rank: the dictionary fills its l atoms, the OMP workspace its full size
X = (rng.standard_normal((1200, m)) + 2 * rng.standard_normal((C, m))[y]).astype(np.float32)
warm = p.learner(**sliding)
for s in range(0, 300, p.chunk):  # the code paths run once: their lazy imports are not data
    warm.partial_fit(X[s:s + p.chunk].copy(), y[s:s + p.chunk], classes=np.arange(C))
del warm
learner = p.learner(**sliding)
tracemalloc.start()
for s in range(0, len(X), p.chunk):
    xb = X[s:s + p.chunk].copy()  # the chunk a stream reader would hand over
    learner.partial_fit(xb, y[s:s + p.chunk], classes=np.arange(C))
    del xb
priced = {b["name"]: b["bytes"] for b in p.buffers}.get("network.average", 0)
lent = sum(a.nbytes for a in learner.transform_._idle_scratch())
stash = 2 * learner.network_.network_.n_params
print(tracemalloc.get_traced_memory()[1], p.footprint_bytes, p.product_rows, p.l,
      learner.transform_.n_atoms_, int(p.average == "ema"), learner.network_.n_averaged_,
      priced, lent, stash)
"""


@pytest.mark.parametrize("n_samples, sliding", [(1200, 0), (10 ** 5, 1)],
                         ids=["plain", "averaged"])
def test_small_plan_footprint_matches_the_measured_peak(n_samples, sliding):
    """A 256 KiB plan (UJIIndoorLoc's shape: m=520, 13 classes; int8 atoms, compact window,
    product tiles of 4 rows) against tracemalloc's peak while its learner streams, in a
    fresh interpreter; told of a long stream, the plan averages the weights (their stash
    over the OMP scratch) and the run does."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(256 * 1024), str(n_samples),
                        str(sliding)], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    peak, predicted, rows, l, atoms, averaged, n_averaged, priced, lent, stash = map(
        int, r.stdout.split())
    assert predicted <= 256 * 1024 and atoms == l
    assert averaged == sliding and (n_averaged > 0) == bool(sliding)
    if sliding:  # the plan prices what the OMP scratch the learner lends cannot hold
        assert 0 < lent < stash and priced == stash - lent, (priced, lent, stash)
    assert 0.9 * predicted <= peak <= 1.1 * predicted, (peak, predicted, rows, l)


def test_a_block_of_a_matrix_is_saved_row_by_row_without_a_copy(tmp_path):
    """save_npz writes a 2-D block whose rows are contiguous (a checkpoint's G[:n, :n]) from
    its own memory: the file reads back as the block, and no block-sized copy is made."""
    import tracemalloc

    from tinydl.io import load_npz, save_npz
    G = np.arange(400 * 400, dtype=np.float32).reshape(400, 400)
    block = G[:300, :300]
    assert not block.flags.c_contiguous
    tracemalloc.start()
    save_npz(tmp_path / "g.npz", {"G": block, "T": G[:3, :5].T}, kind="test")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < block.nbytes // 4, peak
    back = load_npz(tmp_path / "g.npz", "test")
    np.testing.assert_array_equal(back["G"], block)
    np.testing.assert_array_equal(back["T"], G[:3, :5].T)


def test_uji_256k_plan_bounds_tinydl_fits_measured_peak(shared_data, tmp_path):
    """`tinydl plan --memory 256KiB` on UJIIndoorLoc, then `tinydl fit --trace-memory` on a
    slice of the file (the dictionary fills, the network retrains, checkpoints are written):
    the learner's measured tracemalloc peak stays within the budget and within 5% of the
    plan's prediction (a feasible plan that does not fit, or a model that prices what never
    happens, both fail).  In fresh interpreters: the command measures its own process."""
    data = shared_data / "ujiindoorloc.npz"
    if not data.exists():
        pytest.skip(f"{data} is absent")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, OPENBLAS_NUM_THREADS="1")

    def tinydl(*args):
        r = subprocess.run([sys.executable, "-m", "tinydl", *map(str, args)], env=env,
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr
        return r

    budget = 256 * 1024
    plan_path, fit_json = tmp_path / "p.json", tmp_path / "fit.json"
    tinydl("plan", "--data", data, "--memory", "256KiB", "-o", plan_path)
    import json
    predicted = json.loads(plan_path.read_text())["footprint_bytes"]
    assert predicted <= budget
    tinydl("fit", data, "--plan", plan_path, "--shuffle", 0, "--limit", 1100,
           "--checkpoint-every", 256, "-o", tmp_path / "model", "--quiet", "--trace-memory",
           "--json", fit_json)
    fit = json.loads(fit_json.read_text())
    assert fit["n_atoms"] == fit["params"]["l"]  # the slice filled the dictionary
    peak = fit["peak_learner_bytes"]
    # the learner stays within the budget, and the prediction is within issue 18's 5% of
    # what it measures.  Not "peak <= predicted": what the interpreter holds in its free
    # lists moves the measure by a few KB either way.  The peak was once at a checkpoint,
    # 258,032 B against 255,136 B predicted (+1.1%): the writing's buffers stacked on the
    # objects freed into the free lists since the last full collection; checkpoint.write
    # now collects first (251,163 B, the peak then while the dictionary fills)
    assert peak <= budget, (peak, budget)
    assert 0.95 * predicted <= peak <= 1.05 * predicted, (peak, predicted)


def test_checkpoint_writes_its_files_after_a_full_collection(tmp_path):
    """checkpoint.write collects before the files are written: what the stream left for the
    collector (here unreachable cycles, 2,000 self-referencing lists; in a run also the
    free lists, which only a full collection empties) is gone when ``write_files`` runs, so
    the writing's buffers do not stack on it.  Automatic collection is off meanwhile, so
    nothing else frees the cycles."""
    import gc
    import tracemalloc

    from tinydl import checkpoint

    seen = {}

    def write_files(target):
        seen["bytes"] = tracemalloc.get_traced_memory()[0]
        (tmp_path / "probe").write_text(target)

    enabled = gc.isenabled()
    gc.disable()
    tracemalloc.start()
    try:
        junk = [[None] for _ in range(2000)]
        for j in junk:
            j[0] = j
        del junk, j
        before = tracemalloc.get_traced_memory()[0]
        path = checkpoint.write(tmp_path, 7, write_files)
    finally:
        tracemalloc.stop()
        if enabled:
            gc.enable()
    # the cycles were ~125 KB here; what remains when the files are written is the write's own
    assert seen["bytes"] < before // 4, (seen["bytes"], before)
    assert os.path.basename(path) == checkpoint.latest(tmp_path)
