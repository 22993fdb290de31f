"""The fused momentum-SGD step: weight gradients accumulated straight into the velocity.

``Network.backward(dout, defer_weights=True)`` leaves the large weights' gradient GEMMs
pending; ``SGD.step_deferred`` runs them as ``u_W = mu u_W + x^T (lr dy)`` (one
``backend.gemm`` with ``beta = mu``) after the trainer's divergence check, then ``p -= u``.
It must give the unfused step's weights and velocity up to rounding, keep both untouched on
divergence, and allocate nothing per step; the BLAS backend's ``gemm`` is checked against
NumPy here too.

Tolerances: on the NumPy backend the fused step is the unfused one's arithmetic in another
order of calls (``t = a @ b; u *= mu; u += t``), so results agree to rounding of the same
operations: ``rtol`` 1e-5 (float32) and 1e-12 (float64) after several steps.  Through BLAS,
``?gemm`` with ``beta`` may round ``mu u + a b`` once (FMA) instead of twice: the same bounds
hold.
"""
import copy
import pickle
import tracemalloc

import numpy as np
import pytest

import hal
from tinydl.nn import (
    CNNClassifier,
    Conv2D,
    Dense,
    Dropout,
    MaxPool2D,
    MLPClassifier,
    ReLU,
    Sigmoid,
    Tanh,
)
from tinydl.nn.classifier import DivergenceError, NetworkClassifier
from tinydl.nn.losses import LOSSES
from tinydl.nn.network import Network
from tinydl.nn.optim import SGD

RTOL = {"float32": 1e-5, "float64": 1e-12}
ATOL = {"float32": 1e-7, "float64": 1e-15}


@pytest.fixture
def blas(require_backend):
    require_backend("blas")
    return hal.get_backend("blas")


def _mlp():
    return [Dense(48), ReLU(), Dropout(0.2), Dense(32), Tanh(), Dense(24), Sigmoid(),
            Dense(16), ReLU(), Dense(5)]


def _cnn():
    return [Conv2D(4, 3, 1, 1), ReLU(), MaxPool2D(2), Conv2D(6, 3, 2, 1), ReLU(), Dense(12),
            ReLU(), Dense(4)]


def _run(layers, in_shape, n_classes, dtype, fused, backend="numpy", steps=6, batch=16,
         loss_name="cross_entropy", min_size=0):
    """Train ``steps`` SGD-with-momentum steps on fixed random batches; returns the net and
    the optimizer."""
    rng = np.random.default_rng(3)
    net = Network(layers, in_shape, dtype=dtype, backend=backend, seed=3)
    net.min_deferred_size = min_size
    net.prepare(batch)
    loss = LOSSES[loss_name]()
    loss.prepare(batch, n_classes, net.dtype)
    opt = SGD(0.05, 0.9)
    opt.prepare(net.n_params, net.dtype)
    for step in range(steps):
        n = batch - (step % 3)  # partial batches too
        x = rng.standard_normal((n,) + in_shape).astype(dtype)
        t = rng.integers(0, n_classes, n)
        out = net.forward(x, train=True)
        _, g = loss(out, t)
        g *= opt.grad_scale
        if fused:
            net.backward(g, defer_weights=True)
            assert net.bias_grads_finite()
            opt.step_deferred(net.params, net.grads, net)
        else:
            net.backward(g)
            opt.step(net.params, net.grads)
    return net, opt


def _assert_same(a, b, dtype):
    (na, oa), (nb, ob) = a, b
    np.testing.assert_allclose(na.params, nb.params, rtol=RTOL[dtype], atol=ATOL[dtype])
    np.testing.assert_allclose(oa.state["velocity"], ob.state["velocity"], rtol=RTOL[dtype],
                               atol=ATOL[dtype])


# -- the plan: which weights are deferred ---------------------------------------------------

def test_plan_skips_inputs_clobbered_by_tanh_and_sigmoid_and_small_weights():
    net = Network(_mlp(), (20,), backend="numpy", seed=0)
    net.min_deferred_size = 0
    idx, slots, eager = net._plan()
    # Dense(48) reads the input; Dense(32) Dropout's output (or ReLU's through it); Dense(24)
    # and Dense(16) read tanh's / sigmoid's output, which their backward overwrites
    assert idx == {0, 3, 9}
    assert net.deferred_weights() == 3
    covered = sum(r * c for _, _, r, c in slots)
    assert covered + sum(e - s for s, e in eager) == net.n_params
    for i, off, rows, cols in slots:  # each slot is the weight's place in the flat buffer
        assert np.shares_memory(net.params[off:off + rows * cols], net.layers[i].p["W"])
        assert rows * cols == net.layers[i].p["W"].size
    net.min_deferred_size = 48 * 32 + 1  # only weights at least that large: none
    assert net._plan()[0] == frozenset() and net.eager_ranges() == ((0, net.n_params),)
    net.min_deferred_size = 48 * 32  # Dense(32)'s weight only (Dense(48)'s has 20 x 48)
    assert net._plan()[0] == {3}
    cnn = Network(_cnn(), (1, 8, 8), backend="numpy", seed=0)
    cnn.min_deferred_size = 0
    # a convolution only as the first layer (d(cols) overwrites cols otherwise)
    assert cnn._plan()[0] == {0, 5, 7}


def test_only_sgd_with_momentum_on_a_fused_gemm_backend_without_hook_fuses():
    # 90000 weights
    net = Network([Dense(300), ReLU(), Dense(3)], (300,), backend="numpy", seed=0)
    assert net.deferred_weights() == 1
    fused = NetworkClassifier._fused_step
    assert not fused(net, SGD(0.1, 0.9), None)  # the NumPy reference: no fused gemm
    assert not hal.get_backend("numpy").fused_gemm
    net.backend = type("B", (), {"fused_gemm": True})()
    assert fused(net, SGD(0.1, 0.9), None)
    assert not fused(net, SGD(0.1, 0.0), None)
    assert not fused(net, SGD(0.1, 0.9), object())  # the data-parallel hook
    from tinydl.nn.optim import Adam
    assert not fused(net, Adam(0.1), None)
    small = Network([Dense(16), ReLU(), Dense(3)], (100,), backend="numpy", seed=0)
    small.backend = net.backend
    assert not fused(small, SGD(0.1, 0.9), None)  # nothing large enough to gain


# -- fused == unfused -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_mlp_matches_unfused_on_numpy(dtype):
    ref = _run(_mlp(), (20,), 5, dtype, fused=False)
    got = _run(_mlp(), (20,), 5, dtype, fused=True)
    assert got[0].deferred_weights() == 3
    _assert_same(got, ref, dtype)
    fresh = Network(_mlp(), (20,), dtype=dtype, backend="numpy", seed=3)
    assert np.max(np.abs(fresh.params - got[0].params)) > 1e-3  # training moved them


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_cnn_matches_unfused_on_numpy(dtype):
    ref = _run(_cnn(), (1, 8, 8), 4, dtype, fused=False, loss_name="l2")
    got = _run(_cnn(), (1, 8, 8), 4, dtype, fused=True, loss_name="l2")
    assert 0 in got[0]._plan()[0]  # the first convolution's weight went through gemm
    _assert_same(got, ref, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_matches_unfused_on_blas(dtype, blas):
    be = blas
    ref = _run(_mlp(), (20,), 5, dtype, fused=False, backend=be)
    got = _run(_mlp(), (20,), 5, dtype, fused=True, backend=be)
    _assert_same(got, ref, dtype)
    ref = _run(_cnn(), (1, 8, 8), 4, dtype, fused=False, backend=be)
    got = _run(_cnn(), (1, 8, 8), 4, dtype, fused=True, backend=be)
    _assert_same(got, ref, dtype)


def test_fused_without_momentum_is_plain_sgd():
    def run(fused):
        rng = np.random.default_rng(0)
        net = Network([Dense(40), ReLU(), Dense(3)], (30,), dtype="float64",
                      backend="numpy", seed=1)
        net.min_deferred_size = 0
        net.prepare(8)
        loss = LOSSES["l2"]()
        loss.prepare(8, 3, net.dtype)
        opt = SGD(0.1, 0.0)
        opt.prepare(net.n_params, net.dtype)
        for _ in range(4):
            _, g = loss(net.forward(rng.standard_normal((8, 30)), train=True),
                        rng.integers(0, 3, 8))
            g *= opt.grad_scale
            net.backward(g, defer_weights=fused)
            (opt.step_deferred(net.params, net.grads, net) if fused
             else opt.step(net.params, net.grads))
        return net.params
    np.testing.assert_allclose(run(True), run(False), rtol=1e-12, atol=1e-15)


def _fit_pair(make, monkeypatch, steps_fit):
    """The same classifier trained with the fused step and without it (same backend)."""
    fused = make()
    steps_fit(fused)
    with monkeypatch.context() as m:
        m.setattr(NetworkClassifier, "_fused_step", staticmethod(lambda net, opt, hook: False))
        plain = make()
        steps_fit(plain)
    return fused, plain


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_classifier_fused_matches_unfused_on_blas(dtype, monkeypatch, blas):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 300)).astype(dtype)
    y = rng.integers(0, 4, 300)
    make = lambda: MLPClassifier(hidden_layer_sizes=(256, 32), batch_size=32, epochs=2,  # noqa
                                 backend="blas", dtype=dtype, learning_rate=0.01)
    fused, plain = _fit_pair(make, monkeypatch, lambda c: c.fit(X, y))
    assert NetworkClassifier._fused_step(fused.network_, fused.optimizer_, None)
    assert fused.network_.deferred_weights() == 1  # 300 x 256; 256 x 32 is too small
    np.testing.assert_allclose(fused.network_.params, plain.network_.params,
                               rtol=RTOL[dtype] * 10, atol=ATOL[dtype] * 10)
    np.testing.assert_allclose(fused.optimizer_.state["velocity"],
                               plain.optimizer_.state["velocity"],
                               rtol=RTOL[dtype] * 10, atol=ATOL[dtype] * 10)
    assert fused.loss_curve_ == pytest.approx(plain.loss_curve_, rel=1e-4)


def test_cnn_classifier_fused_matches_unfused_on_blas(monkeypatch, blas):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 64)).astype(np.float64)
    y = rng.integers(0, 3, 96)
    monkeypatch.setattr(Network, "min_deferred_size", 0)  # defer even these small weights
    make = lambda: CNNClassifier(input_shape=(1, 8, 8), conv_layers=((6, 3, 2),),  # noqa
                                 hidden_layer_sizes=(16,), batch_size=16, epochs=2,
                                 backend="blas", dtype="float64")
    fused, plain = _fit_pair(make, monkeypatch, lambda c: c.fit(X, y))
    assert fused.network_._plan()[0] == {0, 3, 5}
    np.testing.assert_allclose(fused.network_.params, plain.network_.params, rtol=1e-11,
                               atol=1e-14)


def test_fused_blas_matches_pytorch_after_10_sgd_momentum_steps(blas):
    """The PyTorch-equivalence check of test_nn_layers, through the fused step."""
    torch = pytest.importorskip("torch", reason="PyTorch not installed: the parity check "
                                                "against it is skipped")
    be = blas
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 8), torch.nn.ReLU(),
                                 torch.nn.Linear(8, 5))
    net = Network([Dense(16), ReLU(), Dense(8), ReLU(), Dense(5)], (20,), "float32", be,
                  seed=5)
    net.min_deferred_size = 0
    assert net.deferred_weights() == 3
    tl = [m for m in tmodel if isinstance(m, torch.nn.Linear)]
    ours = [la for la in net.layers if la.p]
    with torch.no_grad():
        for la, tm in zip(ours, tl):
            tm.weight.copy_(torch.from_numpy(np.ascontiguousarray(la.p["W"].T)))
            tm.bias.copy_(torch.from_numpy(la.p["b"].copy()))
    rng = np.random.default_rng(5)
    net.prepare(16)
    loss = LOSSES["l2"]()
    loss.prepare(16, 5, net.dtype)
    opt = SGD(0.05, 0.9)
    opt.prepare(net.n_params, net.dtype)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9)
    for _ in range(10):
        x = rng.standard_normal((16, 20)).astype(np.float32)
        t = rng.integers(0, 5, 16)
        _, g = loss(net.forward(x, train=True), t)
        g *= opt.grad_scale
        net.backward(g, defer_weights=True)
        opt.step_deferred(net.params, net.grads, net)
        topt.zero_grad()
        tz = tmodel(torch.from_numpy(x))
        onehot = torch.nn.functional.one_hot(torch.from_numpy(t), 5).to(tz.dtype)
        (0.5 * ((tz - onehot) ** 2).sum(dim=1).mean()).backward()
        topt.step()
    for la, tm in zip(ours, tl):
        np.testing.assert_allclose(la.p["W"], tm.weight.detach().numpy().T, atol=1e-5, rtol=0)
        np.testing.assert_allclose(la.p["b"], tm.bias.detach().numpy(), atol=1e-5, rtol=0)


# -- divergence -----------------------------------------------------------------------------

def test_divergence_on_fused_path_keeps_weights_and_velocity(monkeypatch, blas):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 300)).astype(np.float32)
    y = rng.integers(0, 3, 128)
    clf = MLPClassifier(hidden_layer_sizes=(256,), epochs=1, backend="blas",
                        learning_rate=0.01)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    net, opt = clf.network_, clf.optimizer_
    assert NetworkClassifier._fused_step(net, opt, None)
    params, velocity, t = net.params.copy(), opt.state["velocity"].copy(), opt.t
    assert np.any(velocity != 0)

    # a non-finite gradient on the first step of the next pass (its loss is finite)
    backward = net.backward

    def poisoned(dout, defer_weights=False):
        assert defer_weights  # the fused path is the one under test
        backward(dout, defer_weights=defer_weights)
        net.layers[-1].g["b"][0] = np.nan
    monkeypatch.setattr(net, "backward", poisoned)
    with pytest.raises(DivergenceError, match="non-finite gradient"):
        clf.partial_fit(X, y)
    np.testing.assert_array_equal(net.params, params)
    np.testing.assert_array_equal(opt.state["velocity"], velocity)
    assert opt.t == t
    assert all(getattr(la, "_pending", None) is None for la in net.layers)  # discarded

    # training goes on from there, as if the diverged batch had never been seen
    monkeypatch.undo()
    clf.partial_fit(X, y)
    assert np.isfinite(net.params).all() and np.any(net.params != params)


def test_divergence_with_huge_learning_rate_on_fused_path_keeps_finite_state(blas):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 300)).astype(np.float32) * 1e3
    y = rng.integers(0, 3, 256)
    clf = MLPClassifier(hidden_layer_sizes=(256,), epochs=1, backend="blas",
                        learning_rate=0.01)
    clf.partial_fit(X[:32] * 1e-3, y[:32], classes=[0, 1, 2])
    assert NetworkClassifier._fused_step(clf.network_, clf.optimizer_, None)
    with pytest.raises(DivergenceError, match="diverged"):
        for _ in range(50):
            clf.set_params(learning_rate=1e6)
            clf.optimizer_.learning_rate = 1e6
            clf.partial_fit(X, y)
    assert np.isfinite(clf.network_.params).all()
    assert np.isfinite(clf.optimizer_.state["velocity"]).all()
    assert np.isfinite(clf.predict_proba(X)).all()


# -- memory ---------------------------------------------------------------------------------

def test_fused_dense_step_allocates_no_array_data(blas):
    be = blas
    rng = np.random.default_rng(0)
    for batch in (64, 512):
        X = rng.standard_normal((batch, 300)).astype(np.float32)
        y = rng.integers(0, 19, batch)
        clf = MLPClassifier(hidden_layer_sizes=(256, 128), dropout=0.2, batch_size=batch,
                            epochs=1, backend=be, loss="cross_entropy").fit(X, y)
        net, loss, optim = clf.network_, clf.loss_fn_, clf.optimizer_
        assert net.deferred_weights() == 1
        tracemalloc.start()
        for _ in range(5):  # exactly the work of one fused training step
            out = net.forward(X, train=True)
            _, g = loss(out, y)
            g *= optim.grad_scale
            net.backward(g, defer_weights=True)
            assert net.bias_grads_finite()
            optim.step_deferred(net.params, net.grads, net)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 8192 * 8 + 8192, (batch, peak)


def test_pending_operands_are_not_copied_with_the_network():
    net = Network([Dense(30), ReLU(), Dense(3)], (10,), backend="numpy", seed=0)
    net.min_deferred_size = 0
    net.prepare(4)
    net.forward(np.ones((4, 10), np.float32), train=True)
    net.backward(np.ones((4, 3), np.float32), defer_weights=True)
    assert net.layers[0]._pending is not None
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert all(getattr(la, "_pending", None) is None for la in other.layers)
    net.discard_weight_grads()
    with pytest.raises(RuntimeError, match="no pending weight gradient"):
        net.flush_weight_grads(np.zeros(net.n_params, np.float32), beta=0.9)


# -- the BLAS backend's gemm against NumPy --------------------------------------------------

def _ref_gemm(a, b, out, alpha, beta):
    ref = alpha * (a.astype(np.float64) @ b.astype(np.float64))
    if beta:
        ref += beta * out.astype(np.float64)
    return ref


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (1.0, 1.0), (1.0, 0.9), (-0.5, 0.0),
                                        (2.5, -1.25), (0.0, 0.5)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True),
                                   (True, True)])
def test_blas_gemm_matches_numpy(dtype, alpha, beta, ta, tb, blas):
    be = blas
    npb = hal.get_backend("numpy")
    rng = np.random.default_rng(1)
    m, k, n = 37, 29, 23
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    a, b = (a.T if ta else a), (b.T if tb else b)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    ref = _ref_gemm(a, b, c0, alpha, beta)
    bound = (abs(alpha) * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
             + abs(beta) * np.abs(c0) + 1e-30)
    tol = {"float32": 1e-5, "float64": 1e-13}[dtype]
    for backend in (be, npb):
        out = c0.copy()
        res = backend.gemm(a, b, out, alpha=alpha, beta=beta)
        assert res is out and out.dtype == np.dtype(dtype)
        assert np.all(np.abs(out - ref) <= tol * bound), backend.name
    # a strided out (every other column of a wider buffer) and a row-slice of one
    wide = np.zeros((m, 2 * n), dtype)
    wide[:, ::2] = c0
    be.gemm(a, b, wide[:, ::2], alpha=alpha, beta=beta)
    assert np.all(np.abs(wide[:, ::2] - ref) <= tol * bound)
    assert not wide[:, 1::2].any()
    big = np.zeros((m + 5, n), dtype)
    big[2:2 + m] = c0
    be.gemm(a, b, big[2:2 + m], alpha=alpha, beta=beta)
    assert np.all(np.abs(big[2:2 + m] - ref) <= tol * bound)
    assert not big[:2].any() and not big[2 + m:].any()


def test_blas_gemm_edge_cases(blas):
    be = blas
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    # beta = 0: out's old contents (NaN included) are not read, as in BLAS
    out = np.full((6, 5), np.nan, np.float32)
    for backend in (be, hal.get_backend("numpy")):
        out[...] = np.nan
        backend.gemm(a, b, out)
        np.testing.assert_allclose(out, a @ b, rtol=1e-5)
    # k = 0: out = beta * out
    out = np.ones((6, 5), np.float32)
    be.gemm(np.empty((6, 0), np.float32), np.empty((0, 5), np.float32), out, beta=0.5)
    np.testing.assert_array_equal(out, 0.5)
    be.gemm(np.empty((6, 0), np.float32), np.empty((0, 5), np.float32), out)
    np.testing.assert_array_equal(out, 0)
    # out overlapping an operand: computed through a temporary, still right
    sq = rng.standard_normal((5, 5))
    ref = 2.0 * (sq @ sq) + 0.5 * sq
    be.gemm(sq, sq, sq, alpha=2.0, beta=0.5)
    np.testing.assert_allclose(sq, ref, rtol=1e-12)
    # mixed dtypes: NumPy's path
    out = np.zeros((6, 5), np.float32)
    be.gemm(a.astype(np.float64), b, out, beta=1.0)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-6)
    # shape errors
    for backend in (be, hal.get_backend("numpy")):
        with pytest.raises(ValueError):
            backend.gemm(a, b, np.zeros((5, 6), np.float32))
        with pytest.raises(ValueError):
            backend.gemm(a, a, np.zeros((6, 4), np.float32))


def test_blas_small_products_match_numpy(blas):
    """Small products (and single rows) run as numpy.matmul; larger ones through cffi."""
    be = blas
    rng = np.random.default_rng(3)
    for m, k, n in [(1, 300, 200), (32, 100, 64), (200, 300, 40), (1, 5, 1), (7, 1, 9)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        ref = a.astype(np.float64) @ b
        bound = np.abs(a).astype(np.float64) @ np.abs(b) + 1e-30
        out = np.empty((m, n), np.float32)
        assert be.matmul(a, b, out=out) is out
        assert np.all(np.abs(out - ref) <= 1e-5 * bound)
        got = be.dense_forward(a, b, bias, out=np.empty((m, n), np.float32))
        assert np.all(np.abs(got - ref - bias) <= 1e-5 * (bound + np.abs(bias)))
