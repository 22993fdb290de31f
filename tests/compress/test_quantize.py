"""int8 weights with per-output-channel scales, data-aware channel reduction, pooling, and the
compiler's criteria, against independent references (NumPy transcriptions, PyTorch)."""
import numpy as np
import pytest

from tinydl.compress import (
    CompressedModel,
    SparseRuntime,
    compress_model,
    conv_output_gram,
    from_network,
    load_model,
    quantize_array,
    quantize_layer,
    reduce_channels,
    reduce_max_rank,
    save_model,
)
from tinydl.compress.model import make_layer


def test_quantize_array_per_column_and_per_run():
    rng = np.random.default_rng(0)
    # columns a thousand times apart: one scale for the matrix would flatten the small ones
    W = rng.standard_normal((40, 6)) * np.array([1e-3, 1, 10, 1e-2, 5, 0])
    q, s = quantize_array(W)
    assert q.dtype == np.int8 and s.shape == (6,) and s.dtype == np.float32
    assert np.abs(q).max() <= 127
    err = np.abs(q * s.astype(np.float64) - W)
    assert np.all(err <= s / 2 * (1 + 1e-6) + 1e-12)  # rounding: half a step per column
    assert np.all(q[:, 5] == 0)
    data = rng.standard_normal(9) * np.repeat([1e-3, 1.0, 100.0], 3)
    indptr = np.array([0, 3, 3, 6, 9])  # column 1 is empty
    q, s = quantize_array(data, indptr)
    assert s.shape == (4,)
    step = np.repeat(s, np.diff(indptr)).astype(np.float64)
    assert np.all(np.abs(q * step - data) <= step / 2 * (1 + 1e-6))
    # each run's largest value sets its own step
    np.testing.assert_allclose(s[[0, 2, 3]], [np.abs(data[i:i + 3]).max() / 127
                                              for i in (0, 3, 6)], rtol=1e-6)


@pytest.mark.parametrize("kind", ["dense", "factored", "sparse_factored", "conv"])
def test_int8_forward_is_the_dequantized_float_forward(kind, tmp_path):
    rng = np.random.default_rng(1)
    f32 = np.float32
    if kind == "dense":
        la, x = make_layer("dense", W=rng.standard_normal((12, 7)).astype(f32),
                           b=rng.standard_normal(7).astype(f32)), (12,)
    elif kind == "factored":
        la, x = make_layer("factored", U=rng.standard_normal((12, 3)).astype(f32),
                           V=rng.standard_normal((3, 7)).astype(f32),
                           b=rng.standard_normal(7).astype(f32)), (12,)
    elif kind == "sparse_factored":
        la, x = make_layer("sparse_factored", B=rng.standard_normal((12, 4)).astype(f32),
                           data=rng.standard_normal(6).astype(f32),
                           indices=np.array([0, 3, 1, 2, 0, 1], np.uint8),
                           indptr=np.array([0, 2, 2, 4, 6], np.int32),
                           b=rng.standard_normal(4).astype(f32), n_out=4), (12,)
    else:
        la, x = make_layer("conv", W=rng.standard_normal((5, 3, 1, 3)).astype(f32),
                           b=rng.standard_normal(5).astype(f32), stride=[1, 1],
                           padding=[0, 1]), (3, 1, 8)
    model = CompressedModel([la], x)
    qm = CompressedModel([quantize_layer(model.layers[0])], x)
    X = rng.standard_normal((5,) + x).astype(f32)
    # the reference: the float layer with every int8 array replaced by q * scale by hand
    ref_arrays = {}
    for name, a in qm.layers[0].arrays.items():
        if name.endswith("_scale"):
            continue
        if a.dtype == np.int8:
            s = qm.layers[0].arrays[name + "_scale"]
            if a.ndim == 2:
                a = a * s
            elif a.ndim == 4:
                a = a * s[:, None, None, None]
            else:
                a = a * np.repeat(s, np.diff(qm.layers[0].arrays["indptr"]))
        ref_arrays[name] = a.astype(f32) if a.dtype.kind == "f" else a
    ref = CompressedModel([make_layer(kind, **ref_arrays, **la.cfg)], x)
    np.testing.assert_allclose(qm.decision_function(X), ref.decision_function(X), rtol=1e-5,
                               atol=1e-5)
    # close to the float layer (int8 error) and 4x smaller weights
    np.testing.assert_allclose(qm.decision_function(X), model.decision_function(X),
                               atol=0.1 * np.abs(model.decision_function(X)).max())
    # file round trip and the layer-at-a-time runtime
    save_model(qm, tmp_path / "q.npz")
    again = load_model(tmp_path / "q.npz")
    assert any(a.dtype == np.int8 for a in again.layers[0].arrays.values())
    rt = SparseRuntime(tmp_path / "q.npz")
    np.testing.assert_allclose(rt.run(X), qm.decision_function(X), rtol=1e-6, atol=1e-6)


def test_int8_without_scales_is_refused():
    la = make_layer("dense", W=np.ones((4, 3), np.int8), b=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"int8 array W \(4, 3\) needs float scales W_scale "
                                         r"of shape \(3,\), got none"):
        CompressedModel([la], (4,))


def test_reduce_channels_full_rank_is_exact_and_gram_matches_patches():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((6, 4, 1, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((7, 4, 1, 10)).astype(np.float32)
    G = conv_output_gram(W, x, (1, 1), (0, 1), batch=3)
    # reference: the patches (im2col by hand) times W read as a (C kh kw, F) matrix
    xp = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1)))
    P = np.stack([xp[:, :, 0, t:t + 3].reshape(7, -1) for t in range(10)], 1).reshape(70, -1)
    Y = P.astype(np.float64) @ W.reshape(6, -1).T.astype(np.float64)
    np.testing.assert_allclose(G, Y.T @ Y, rtol=1e-5)
    conv = CompressedModel([make_layer("conv", W=W, b=b, stride=[1, 1], padding=[0, 1])],
                           (4, 1, 10))
    K = reduce_max_rank(6, 4, 1, 3)
    assert K == (6 * 12 - 1) // (12 + 6) and K * (12 + 6) < 6 * 12
    # data-aware: with outputs of rank 2, two directions reproduce the layer exactly
    W2 = (rng.standard_normal((6, 2)) @ rng.standard_normal((2, 12))).reshape(6, 4, 1, 3)
    W2 = W2.astype(np.float32)
    layers = reduce_channels(W2, b, 2, conv_output_gram(W2, x, (1, 1), (0, 1)), (1, 1),
                             (0, 1))
    red = CompressedModel(layers, (4, 1, 10))
    ref = CompressedModel([make_layer("conv", W=W2, b=b, stride=[1, 1], padding=[0, 1])],
                          (4, 1, 10))
    np.testing.assert_allclose(red.forward_range(x), ref.forward_range(x), atol=1e-4)
    assert red.nbytes < ref.nbytes and conv.nbytes == ref.nbytes


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
def test_pooling_matches_torch(kind):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 9)).astype(np.float32)
    m = CompressedModel([make_layer(kind, pool_size=[2, 3], stride=[2, 2])], (3, 7, 9))
    fn = torch.nn.functional.max_pool2d if kind == "maxpool" else torch.nn.functional.avg_pool2d
    ref = fn(torch.from_numpy(x), (2, 3), stride=(2, 2)).numpy()
    np.testing.assert_allclose(m.forward_range(x), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("criterion", ["lost", "flips", "accuracy", "paired"])
def test_criteria_bound_what_they_say(trained_mlp, digits_split, criterion):
    Xtr, _, Xv, yv, _, _ = digits_split
    model = from_network(trained_mlp)
    cm, rep = compress_model(model, Xv, yv, 0.03, method="auto", quantize="int8",
                             criterion=criterion, X_fit=Xtr, n_iter=2)
    drop = rep.accuracy_before - rep.accuracy_after
    spent = {"lost": rep.val_lost, "flips": rep.val_flips, "accuracy": drop,
             "paired": drop}[criterion]
    np.testing.assert_allclose(drop, rep.val_lost - rep.val_gained, atol=1e-12)
    assert spent <= 0.03 + 1e-9
    # lost and flips bound the drop too
    assert rep.accuracy_before - rep.accuracy_after <= max(spent, 0) + 1e-9 or \
        criterion in ("accuracy", "paired")
    assert rep.val_lost <= rep.val_flips + 1e-12
    assert rep.memory_reduction > 4  # int8 alone is 4x on the weights
    assert all(la.arrays[n].dtype == np.int8 for la in cm.layers
               for n in ("W", "U", "V", "B") if n in la.arrays)
    with pytest.raises(ValueError, match="criterion must be one of"):
        compress_model(model, Xv, yv, 0.03, criterion="test")
    with pytest.raises(ValueError, match="quantize must be one of"):
        compress_model(model, Xv, yv, 0.03, quantize="int4")


def test_paired_upper_is_the_mean_plus_z_standard_errors_of_the_differences():
    """paired_upper against the per-sample differences d in {-1, 0, 1} written out and
    reduced with NumPy (mean + z * std / sqrt(n), population std)."""
    from tinydl.compress.compiler import paired_upper
    for lost, gained, n, z in [(6, 5, 380, 1.0), (10, 10, 380, 1.0), (3, 0, 100, 2.0),
                               (0, 0, 50, 1.0), (7, 2, 2989, 0.5), (5, 4, 380, 0.0)]:
        d = np.zeros(n)
        d[:lost], d[lost:lost + gained] = 1, -1
        ref = d.mean() + z * d.std() / np.sqrt(n)
        np.testing.assert_allclose(paired_upper(lost, gained, n, z), ref, rtol=1e-12,
                                   atol=1e-15)
    assert paired_upper(1, 0, 0, 1.0) == 1.0


def test_paired_criterion_margin_is_held(trained_mlp, digits_split):
    """With a margin, the chosen model's paired upper limit (recomputed from its lost and
    gained validation samples) is within the budget; without one the drop itself is."""
    from tinydl.compress.compiler import paired_upper
    Xtr, _, Xv, yv, _, _ = digits_split
    model = from_network(trained_mlp)
    n = len(yv)
    for z in (0.0, 1.0):
        cm, rep = compress_model(model, Xv, yv, 0.03, method="svd", criterion="paired",
                                 confidence=z, X_fit=Xtr)
        lost, gained = round(rep.val_lost * n), round(rep.val_gained * n)
        right0 = model.predict(Xv) == yv
        right1 = cm.predict(Xv) == yv
        assert (lost, gained) == (int(np.sum(right0 & ~right1)), int(np.sum(~right0 & right1)))
        assert paired_upper(lost, gained, n, z) <= 0.03 + 1e-9
        assert rep.memory_reduction > 1


def test_auto_without_the_sparse_dictionary(trained_mlp, digits_split):
    """sparse_max_weights=0 (the benchmark's svd+refine rows): auto keeps to dense factors,
    and still meets its budget."""
    Xtr, _, Xv, yv, _, _ = digits_split
    model = from_network(trained_mlp)
    cm, rep = compress_model(model, Xv, yv, 0.03, method="auto", sparse_max_weights=0,
                             X_fit=Xtr, criterion="paired")
    assert not any(la.kind == "sparse_factored" for la in cm.layers)
    assert not any("sparse" in r.choice for r in rep.layers)
    assert rep.accuracy_before - rep.accuracy_after <= 0.03 + 1e-9
    assert rep.memory_reduction > 1
