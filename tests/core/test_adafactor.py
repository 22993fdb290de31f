"""Adafactor (tinydl.nn.optim.Adafactor) against PyTorch's, its state's size, and the lean
network state a small-memory plan takes (LEAN_NETWORK: Adafactor, the dense first-layer
product) through the plan, the learner and a checkpoint."""
import json

import numpy as np
import pytest

from tinydl.nn import MLPClassifier
from tinydl.nn.optim import _STEP_TRANSIENT, Adafactor

# a network's layout: (start, shape) of each tensor in the flat buffer
_LAYOUT = [(0, (7, 5)), (35, (5,)), (40, (5, 3)), (55, (3,))]
_N = 58


def _torch_run(torch, p0, grads, **kw):
    tp = [torch.tensor(p0[o:o + int(np.prod(s))].reshape(s).copy(), requires_grad=True)
          for o, s in _LAYOUT]
    opt = torch.optim.Adafactor(tp, **kw)
    for g in grads:
        for (o, s), t in zip(_LAYOUT, tp):
            t.grad = torch.tensor(g[o:o + int(np.prod(s))].reshape(s).copy())
        opt.step()
    return np.concatenate([t.detach().numpy().ravel() for t in tp])


@pytest.mark.parametrize("lr", [1e-2, 1e-3])
def test_adafactor_matches_pytorch(lr):
    """The same steps as torch.optim.Adafactor on a two-layer layout, including a row and a
    bias entry whose gradient is zero for a while and then tiny (PyTorch's eps1 floor on
    sqrt(V) decides their update), and gradients large enough for the RMS clip."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Adafactor"):
        pytest.skip("this PyTorch has no Adafactor (added in 2.5)")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(_N).astype(np.float32)
    grads = []
    for t in range(40):
        g = (rng.standard_normal(_N) * (100 if t % 7 == 0 else 1)).astype(np.float32)
        g[0:5] = 0 if t < 10 else 1e-6 * rng.standard_normal(5)   # W1's first row
        g[35] = 0 if t < 5 else 1e-9                               # b1's first entry
        g[40:55:3] = 0                                             # W2's first column
        grads.append(g)
    ours = Adafactor(lr)
    ours.prepare(_N, np.float32, _LAYOUT)
    p = p0.copy()
    for g in grads:
        ours.step(p, g.copy())
    ref = _torch_run(torch, p0, grads, lr=lr)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, ref, rtol=0, atol=2e-6)
    assert ours.t == len(grads)


def test_adafactor_state_is_a_vector_per_matrix_side():
    """State: r + c numbers per r x c matrix, one per vector entry (and a scratch of the
    largest r + c or vector), as state_bytes says before training; Adam keeps 2 per
    parameter."""
    from tinydl.nn.optim import Adam
    opt = Adafactor()
    state = opt.prepare(_N, np.float32, _LAYOUT)
    assert {k: v.shape for k, v in state.items()} == {"vr": (12,), "vc": (8,), "v1": (8,)}
    scratch = 7 + 2 * 5
    assert Adafactor.state_bytes(_N, 4, _LAYOUT) == (12 + 8 + 8 + scratch) * 4 \
        + _STEP_TRANSIENT + 2 * 4 * 5
    assert Adam.state_bytes(_N, 4, _LAYOUT) == 2 * _N * 4
    net = MLPClassifier(hidden_layer_sizes=(32,), optimizer="adafactor")
    fp = net.footprint(8, 80, 13, n_samples=256, sparse_k=15)
    assert fp["optimizer"] == ((80 + 32) + (32 + 13) + (32 + 13) + (80 + 2 * 32)) * 4 \
        + _STEP_TRANSIENT + 2 * 4 * 32


def _codes_problem(seed=0, n=120, l=30, k=4, C=3):
    from tinydl.codes import SparseCodes
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.permutation(l)[:k] for _ in range(n)]).astype(np.int8)
    y = rng.integers(0, C, n)
    vals = rng.standard_normal((n, k)).astype(np.float32) + y[:, None]
    return SparseCodes(idx, vals, l), y, np.arange(C)


@pytest.mark.parametrize("product", ["gather", "dense"])
def test_adafactor_training_resumes_from_a_saved_model_bit_for_bit(tmp_path, product):
    """Two passes, or one, a save and a load, then one: the same weights (its state and step
    count are in the model file), on either first-layer product."""
    codes, y, classes = _codes_problem()

    def net():
        return MLPClassifier(hidden_layer_sizes=(8,), optimizer="adafactor",
                             learning_rate=1e-2, batch_size=16, epochs=1, seed=0,
                             sparse_product=product)
    straight = net().partial_fit(codes, y, classes=classes, epochs=2)
    half = net().partial_fit(codes, y, classes=classes, epochs=1)
    half.save(tmp_path / "m.npz")
    resumed = MLPClassifier.load(tmp_path / "m.npz").partial_fit(codes, y, epochs=1)
    np.testing.assert_array_equal(resumed.network_.params, straight.network_.params)
    assert resumed.optimizer_.t == straight.optimizer_.t
    longer = net().partial_fit(codes, y, classes=classes, epochs=30)  # and it learns
    assert longer.loss_curve_[-1] < 0.5 * longer.loss_curve_[0]
    assert (longer.predict(codes) == y).mean() > 0.6


def test_dense_and_gather_products_train_the_same_network_up_to_rounding():
    """The first layer's two products on compact codes: the same training up to rounding
    (a few float32 ulps a step, grown over 40 steps)."""
    codes, y, classes = _codes_problem(1)
    nets = [MLPClassifier(hidden_layer_sizes=(8,), optimizer="adafactor", batch_size=16,
                          epochs=1, seed=0, sparse_product=p).partial_fit(
                              codes, y, classes=classes, epochs=5)
            for p in ("gather", "dense")]
    np.testing.assert_allclose(nets[0].network_.params, nets[1].network_.params, atol=1e-4)


def test_lean_plan_round_trip_and_learner(tmp_path):
    """A plan with the lean network state writes both fields, reads them back, builds its
    learner with them; a plan file naming an unknown optimizer or product is refused."""
    from tinydl.customize import LEAN_NETWORK, plan
    from tinydl.plan import load_plan
    fixed = dict(l_choices=(16,), k_choices=(5,), window_choices=(128,),
                 hidden_choices=((32,),), dictionary_dtype="float32", standardize=False)
    roomy = plan(520, 13, "x86-64-host", memory_bytes=4 * 2 ** 20, **fixed)
    assert (roomy.optimizer, roomy.sparse_product) == ("adam", "gather")
    # the least Adam needs (the smallest minibatch, chunk and tiles), a byte less: only the
    # lean state fits
    from tinydl.customize import BATCH_LADDER, plan_footprint
    from tinydl.lowmem import PRODUCT_LADDER
    adam_least = plan_footprint(520, 13, 16, 5, (32,), 128, batch_size=BATCH_LADDER[-1],
                                chunk=1, raw_rows=False, standardize="off",
                                backend=roomy.backend, dt_copy=False,
                                product_rows=PRODUCT_LADDER[-1])["total"]
    assert plan(520, 13, "x86-64-host", memory_bytes=adam_least, **fixed).optimizer == "adam"
    lean = plan(520, 13, "x86-64-host", memory_bytes=adam_least - 1, **fixed)
    assert (lean.optimizer, lean.sparse_product) == LEAN_NETWORK
    assert "adafactor" in lean.explain()
    path = tmp_path / "p.json"
    lean.save(path)
    back = load_plan(path)
    assert (back.optimizer, back.sparse_product) == LEAN_NETWORK
    params = back.learner_params()
    assert params["optimizer"] == "adafactor" and params["sparse_product"] == "dense"
    assert params["learning_rate"] == 1e-2
    d = json.loads(path.read_text())
    for field, bad in (("optimizer", "rmsprop"), ("sparse_product", "csr")):
        path.write_text(json.dumps(dict(d, **{field: bad})))
        with pytest.raises(ValueError, match=field):
            load_plan(path)


def test_learner_with_the_lean_state_checkpoints_and_resumes(tmp_path):
    """TinyDLClassifier(optimizer="adafactor", sparse_product="dense"): a checkpoint holds
    both settings and the optimizer's state; the resumed learner continues as the one that
    never stopped."""
    from tinydl.learner import TinyDLClassifier
    rng = np.random.default_rng(0)
    C, m = 3, 40
    y = rng.integers(0, C, 400)
    X = (rng.standard_normal((400, m)) + 2 * y[:, None]).astype(np.float32)
    kw = dict(l=16, k=4, hidden_layer_sizes=(8,), window=128, n_batch=64, batch_size=16,
              optimizer="adafactor", learning_rate=1e-2, sparse_product="dense",
              standardize=False, rebuild="never", window_policy="sliding", seed=0)
    a = TinyDLClassifier(**kw)
    for s in range(0, 400, 50):
        a.partial_fit(X[s:s + 50], y[s:s + 50], classes=np.arange(C))
    b = TinyDLClassifier(**kw)
    for s in range(0, 200, 50):
        b.partial_fit(X[s:s + 50], y[s:s + 50], classes=np.arange(C))
    b.save(tmp_path / "ck")
    c = TinyDLClassifier.load(tmp_path / "ck")
    assert c.sparse_product == "dense" and c.optimizer == "adafactor"
    for s in range(200, 400, 50):
        c.partial_fit(X[s:s + 50], y[s:s + 50])
    np.testing.assert_array_equal(c.network_.network_.params, a.network_.network_.params)
    np.testing.assert_array_equal(c.predict(X), a.predict(X))
    with pytest.raises(ValueError, match="sparse_product"):
        TinyDLClassifier(sparse_product="csr").partial_fit(X[:50], y[:50],
                                                           classes=np.arange(C))


def test_a_deep_copy_trains_on_and_saves_its_own_state(tmp_path):
    """A deep copy (sklearn.clone of a fitted model's state, joblib) holds copies of the
    state, not views of the original's: it trains on as the original does, its saved state
    is the one it trained with, and the original's is untouched by it."""
    import copy
    codes, y, classes = _codes_problem(2)
    a = MLPClassifier(hidden_layer_sizes=(8,), optimizer="adafactor", batch_size=16,
                      epochs=1, seed=0).partial_fit(codes, y, classes=classes, epochs=2)
    b = copy.deepcopy(a)
    before = {k: v.copy() for k, v in a.optimizer_.state.items()}
    b.partial_fit(codes, y, epochs=1)
    for k, v in a.optimizer_.state.items():
        np.testing.assert_array_equal(v, before[k])
    assert not np.array_equal(b.optimizer_.state["vr"], before["vr"])
    a.partial_fit(codes, y, epochs=1)
    np.testing.assert_array_equal(a.network_.params, b.network_.params)
    b.save(tmp_path / "b.npz")
    c = MLPClassifier.load(tmp_path / "b.npz")
    for k, v in b.optimizer_.state.items():
        np.testing.assert_array_equal(c.optimizer_.state[k], v)


@pytest.mark.parametrize("units", [32, 128, 512])
def test_adafactor_step_transient_does_not_grow_with_the_matrices(units):
    """A step's transient memory (tracemalloc) stays under the constant the footprint prices
    at any width: the row and column scalings must not be buffered matrix-sized by NumPy's
    broadcasting (its default 8,192-element buffer: 16-32 KB at these sizes)."""
    import tracemalloc
    layout = [(0, (80, units)), (80 * units, (units,)), (81 * units, (units, 13)),
              (94 * units, (13,))]
    n = 94 * units + 13
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    opt = Adafactor()
    opt.prepare(n, np.float32, layout)
    for _ in range(3):
        g = rng.standard_normal(n).astype(np.float32)
        g[:units] = 0  # a zero row (and, below, rows the eps1 floor decides)
        g[units:3 * units] *= 1e-12
        opt.step(p, g)
    g = rng.standard_normal(n).astype(np.float32)
    g[units:3 * units] *= 1e-12
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        opt.step(p, g)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    priced = Adafactor.state_bytes(n, 4, layout) - (80 + units + units + 13 + 80 + 2 * units
                                                    + units + 13) * 4
    assert peak <= priced, (peak, priced)
    assert np.getbufsize() == 8192  # the caller's buffer size is restored
