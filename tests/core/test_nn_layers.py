"""Gradients of every layer and loss against central finite differences (float64), and the
trainer against PyTorch: identical initial weights and batches, 10 SGD-with-momentum steps."""
import numpy as np
import pytest

from tinydl.codes import SparseCodes
from tinydl.nn import (
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    MaxPool1D,
    MaxPool2D,
    Network,
    ReLU,
    Sigmoid,
    Tanh,
)
from tinydl.nn.losses import CrossEntropyLoss, L2Loss

RTOL = 1e-6


def _run(net, x, r, train=True, dropout_state=None):
    """Scalar objective sum(out * r) and its gradients wrt params and input."""
    out = net.forward(x, train=train)
    obj = float(np.sum(out * r))
    d = r.copy()
    for i in range(len(net.layers) - 1, -1, -1):
        d = net.layers[i].backward(d, need_dx=True)
    return obj, d


def _numeric(f, arr, eps=1e-6, n_probe=25, rng=None):
    """Central differences of scalar f() wrt a sample of entries of arr (modified in place)."""
    flat = arr.reshape(-1)
    picks = rng.choice(flat.size, size=min(n_probe, flat.size), replace=False)
    out = []
    for i in picks:
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out.append((fp - fm) / (2 * eps))
    return picks, np.array(out)


def _check_layers(layers, in_shape, n=3, seed=0):
    rng = np.random.default_rng(seed)
    net = Network(layers, in_shape, dtype="float64", seed=seed)
    net.prepare(n)
    x = rng.standard_normal((n,) + tuple(in_shape))
    # keep ReLU / max-pool away from kinks, where a difference quotient is meaningless
    x += np.sign(x) * 0.05
    r = rng.standard_normal((n,) + net.output_shape)
    _, dx = _run(net, x, r)
    dx = np.array(dx)
    grads = net.grads.copy()

    def f():
        return float(np.sum(net.forward(x, train=True) * r))

    idx, num = _numeric(f, net.params, rng=rng, n_probe=40)
    np.testing.assert_allclose(grads[idx], num, rtol=RTOL, atol=1e-7)
    idx, num = _numeric(f, x, rng=rng)
    np.testing.assert_allclose(dx.reshape(-1)[idx], num, rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("act", [ReLU, Tanh, Sigmoid])
def test_dense_and_activations_match_finite_differences(act):
    _check_layers([Dense(7), act(), Dense(4)], (5,))


def test_dropout_gradient_uses_the_same_mask():
    net_layers = [Dense(6), Dropout(0.5), Dense(3)]
    rng = np.random.default_rng(1)
    net = Network(net_layers, (4,), dtype="float64", seed=1)
    net.prepare(5)
    x = rng.standard_normal((5, 4))
    r = rng.standard_normal((5, 3))
    _run(net, x, r)
    keep = net.layers[1].ws["keep"][:5].copy()
    assert set(np.unique(keep)) == {0.0, 2.0}  # drops some units, scales the rest by 1/(1-p)
    grads = net.grads.copy()
    # with the mask frozen, dropout is the linear map x * keep / (1 - p)
    W1, b1 = net.layers[0].p["W"], net.layers[0].p["b"]
    W2, b2 = net.layers[2].p["W"], net.layers[2].p["b"]

    def f():
        return float(np.sum((((x @ W1 + b1) * keep) @ W2 + b2) * r))

    idx, num = _numeric(f, net.params, rng=rng, n_probe=30)
    np.testing.assert_allclose(grads[idx], num, rtol=RTOL, atol=1e-7)
    # at inference dropout is the identity
    out = net.forward(x, train=False)
    np.testing.assert_allclose(out, (x @ W1 + b1) @ W2 + b2, rtol=1e-12)


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1)])
def test_conv2d_and_maxpool2d_match_finite_differences(stride, padding):
    _check_layers([Conv2D(3, 3, stride, padding), Tanh(), MaxPool2D(2), Dense(4)], (2, 7, 6))


@pytest.mark.parametrize("padding", [0, 2])
def test_conv1d_and_maxpool1d_match_finite_differences(padding):
    _check_layers([Conv1D(3, 5, 1, padding), ReLU(), MaxPool1D(2), Dense(3)], (2, 11))


@pytest.mark.parametrize("loss_cls", [CrossEntropyLoss, L2Loss])
def test_losses_match_finite_differences(loss_cls):
    rng = np.random.default_rng(3)
    n, c = 6, 5
    z = rng.standard_normal((n, c)) * 3
    t = rng.integers(0, c, n)
    loss = loss_cls()
    loss.prepare(8, c, np.float64)
    _, g = loss(z, t)
    g = g.copy()
    idx, num = _numeric(lambda: loss(z, t)[0], z, rng=rng, n_probe=n * c)
    np.testing.assert_allclose(g.reshape(-1)[idx], num, rtol=RTOL, atol=1e-8)
    # and the values against direct formulas
    onehot = np.eye(c)[t]
    if loss_cls is L2Loss:
        want = 0.5 * np.sum((z - onehot) ** 2) / n
    else:
        logp = z - z.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        want = -logp[np.arange(n), t].mean()
    assert loss(z, t)[0] == pytest.approx(want, rel=1e-12)


def test_sparse_first_layer_equals_dense_input():
    rng = np.random.default_rng(4)
    n, l, k = 9, 30, 4
    idx = np.stack([rng.choice(l, k, replace=False) for _ in range(n)]).astype(np.int32)
    idx[0, 2:] = -1  # a code that stopped early
    vals = rng.standard_normal((n, k))
    vals[idx < 0] = 0
    dense = np.zeros((n, l))
    for i in range(n):
        for t in range(k):
            if idx[i, t] >= 0:
                dense[i, idx[i, t]] = vals[i, t]
    r = rng.standard_normal((n, 3))
    for mode in ("gather", "dense"):
        net = Network([Dense(5), ReLU(), Dense(3)], (l,), dtype="float64", seed=2)
        net.prepare(n, sparse_input=True)
        net.layers[0].sparse_product = mode
        sb = SparseCodes(idx, vals, l)
        out_s = net.forward(sb, train=True).copy()
        net.backward(r)
        g_s = net.grads.copy()
        out_d = net.forward(dense, train=True).copy()
        net.backward(r)
        np.testing.assert_allclose(out_s, out_d, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g_s, net.grads, rtol=1e-12, atol=1e-12)


# -- PyTorch parity ------------------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch", reason="PyTorch not installed: the parity check "
                                               "against it is skipped")


def _copy_into_torch(net, tmodel, torch):
    """Copy our weights into the matching torch modules (Linear stores W transposed)."""
    tlayers = [m for m in tmodel if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d,
                                                  torch.nn.Conv2d))]
    ours = [la for la in net.layers if la.p]
    assert len(tlayers) == len(ours)
    with torch.no_grad():
        for la, tm in zip(ours, tlayers):
            W = la.p["W"].T if isinstance(tm, torch.nn.Linear) else la.p["W"]
            tm.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
            tm.bias.copy_(torch.from_numpy(la.p["b"].copy()))
    return ours, tlayers


def _parity(layers, tmodel, in_shape, n_classes, loss_name, torch, dtype="float64"):
    from tinydl.nn.losses import LOSSES
    from tinydl.nn.optim import SGD
    rng = np.random.default_rng(5)
    net = Network(layers, in_shape, dtype=dtype, seed=5)
    tmodel = tmodel.to(torch.float64 if dtype == "float64" else torch.float32)
    ours, tlayers = _copy_into_torch(net, tmodel, torch)
    batch = 16
    net.prepare(batch)
    loss = LOSSES[loss_name]()
    loss.prepare(batch, n_classes, net.dtype)
    opt = SGD(0.05, 0.9)
    opt.prepare(net.n_params, net.dtype)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9)
    for step in range(10):
        x = rng.standard_normal((batch,) + in_shape).astype(dtype)
        t = rng.integers(0, n_classes, batch)
        out = net.forward(x, train=True)
        _, g = loss(out, t)
        g *= opt.grad_scale  # SGD takes lr * gradient
        net.backward(g)
        opt.step(net.params, net.grads)
        topt.zero_grad()
        tz = tmodel(torch.from_numpy(x))
        tt = torch.from_numpy(t)
        if loss_name == "l2":
            onehot = torch.nn.functional.one_hot(tt, n_classes).to(tz.dtype)
            tl = 0.5 * ((tz - onehot) ** 2).sum(dim=1).mean()
        else:
            tl = torch.nn.functional.cross_entropy(tz, tt)
        tl.backward()
        topt.step()
    for la, tm in zip(ours, tlayers):
        W = tm.weight.detach().numpy()
        W = W.T if isinstance(tm, torch.nn.Linear) else W
        np.testing.assert_allclose(la.p["W"], W, atol=1e-5, rtol=0)
        np.testing.assert_allclose(la.p["b"], tm.bias.detach().numpy(), atol=1e-5, rtol=0)
    # and training moved the weights well beyond that tolerance
    fresh = Network([type(la)(**la.config()) for la in net.layers], in_shape, dtype=dtype,
                    seed=5)
    assert np.max(np.abs(fresh.params - net.params)) > 1e-3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_name", ["l2", "cross_entropy"])
def test_mlp_matches_pytorch_after_10_sgd_momentum_steps(dtype, loss_name):
    torch = _torch()
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 8), torch.nn.Tanh(),
                                 torch.nn.Linear(8, 5))
    _parity([Dense(16), ReLU(), Dense(8), Tanh(), Dense(5)], tmodel, (20,), 5, loss_name,
            torch, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_small_cnn_matches_pytorch_after_10_sgd_momentum_steps(dtype):
    torch = _torch()
    nn = torch.nn
    tmodel = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Sigmoid(), nn.Flatten(),
                           nn.Linear(6 * 2 * 2, 4))
    _parity([Conv2D(4, 3, 1, 1), ReLU(), MaxPool2D(2), Conv2D(6, 3, 2, 1), Sigmoid(),
             Dense(4)], tmodel, (1, 8, 8), 4, "cross_entropy", torch, dtype)


def test_conv1d_matches_pytorch_after_10_sgd_momentum_steps():
    torch = _torch()
    nn = torch.nn
    tmodel = nn.Sequential(nn.Conv1d(2, 3, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                           nn.Flatten(), nn.Linear(3 * 6, 4))
    _parity([Conv1D(3, 5, 1, 2), ReLU(), MaxPool1D(2), Dense(4)], tmodel, (2, 12), 4, "l2",
            torch)


def test_weights_are_drawn_in_blocks_with_the_whole_draws_numbers():
    """fill_uniform: the numbers (and the generator's state after) of one whole
    rng.uniform draw, without its float64 temporary of the layer's size."""
    import tracemalloc

    from tinydl.nn.layers import fill_uniform
    for shape in [(80, 128), (7,), (3, 2, 5, 5)]:
        ours, whole = np.random.default_rng(3), np.random.default_rng(3)
        a = np.empty(shape, np.float32)
        fill_uniform(a, 0.1, ours)
        np.testing.assert_array_equal(a, whole.uniform(-0.1, 0.1, shape).astype(np.float32))
        assert ours.random() == whole.random()
    W = np.empty((400, 256), np.float32)
    tracemalloc.start()
    try:
        fill_uniform(W, 0.1, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < W.nbytes // 16, peak
