"""Separated kernels reproduce the convolution's output; separations that don't pay are refused."""
import numpy as np
import pytest

from tinydl.compress import (
    CompressedModel,
    FactorizationCostError,
    cross_channel_max_rank,
    kernel_max_rank,
    separate_cross_channel,
    separate_kernels,
)
from tinydl.compress.model import make_layer


def _conv_out(layers, x):
    return CompressedModel(layers, x.shape[1:]).forward_range(x)


def _rank1_kernels(f, c, kh, kw, r, rng):
    return sum(np.einsum("fci,fcj->fcij", rng.standard_normal((f, c, kh)),
                         rng.standard_normal((f, c, kw))) for _ in range(r)).astype(np.float32)


def test_conv_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    W, b = rng.standard_normal((5, 3, 3, 3)).astype(np.float32), rng.standard_normal(5)
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    y = _conv_out([make_layer("conv", W=W, b=b.astype(np.float32), stride=[2, 1],
                              padding=[1, 1])], x)
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(W),
                                     torch.tensor(b.astype(np.float32)), stride=(2, 1),
                                     padding=1).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-4)


@pytest.mark.parametrize("k,r,stride", [(3, 1, (1, 1)), (5, 2, (2, 2)), (7, 3, (1, 2))])
def test_kernel_separation_reproduces_conv(k, r, stride):
    rng = np.random.default_rng(k)
    W = _rank1_kernels(6, 4, k, k, r, rng)  # kernels of rank r: separation is exact
    b = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((3, 4, 11, 10)).astype(np.float32)
    pad = (k // 2, k // 2)
    ref = _conv_out([make_layer("conv", W=W, b=b, stride=list(stride), padding=list(pad))], x)
    sep = separate_kernels(W, b, r, stride, pad)
    got = _conv_out([sep], x)
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())
    assert sep.nbytes - b.nbytes < W.nbytes


def test_cross_channel_reproduces_conv_and_truncates_gracefully():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((4 * 3, 5)) @ rng.standard_normal((5, 8 * 3))  # rank 5
    W = M.reshape(4, 3, 8, 3).transpose(2, 0, 1, 3).astype(np.float32).copy()
    b = rng.standard_normal(8).astype(np.float32)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    ref = _conv_out([make_layer("conv", W=W, b=b, stride=[1, 1], padding=[1, 1])], x)
    got = _conv_out(separate_cross_channel(W, b, 5, padding=(1, 1)), x)
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())
    err = [np.linalg.norm(_conv_out(separate_cross_channel(W, b, K, padding=(1, 1)), x) - ref)
           for K in (1, 3, 5)]
    assert err[0] > err[1] > err[2]


def test_separations_that_do_not_pay_are_refused():
    W = np.ones((8, 4, 3, 3), np.float32)
    b = np.zeros(8, np.float32)
    assert kernel_max_rank(3, 3) == 1 and kernel_max_rank(5, 5) == 2
    with pytest.raises(FactorizationCostError, match=r"rank 2 per 3x3 kernel would cost 12 "
                       r"multiply-adds .* not fewer than the original 9"):
        separate_kernels(W, b, 2)
    kmax = cross_channel_max_rank(8, 4, 3, 3)  # 288 / 36 = 8 -> 7
    assert kmax == 7
    separate_cross_channel(W, b, kmax)
    with pytest.raises(FactorizationCostError, match=r"rank 8 would cost 288 parameters"):
        separate_cross_channel(W, b, 8)


@pytest.mark.parametrize("n,kw,stride,pad", [(1, 9, 1, 4), (3, 5, 2, 0), (2, 1, 1, 0),
                                             (40, 3, 1, 1)])
def test_1d_conv_matches_torch_conv1d(n, kw, stride, pad):
    """Small batches of a 1-D convolution take the shifted-product path (batch 40 the patch
    matrix): both against PyTorch's conv1d."""
    torch = pytest.importorskip("torch")
    from tinydl.compress.kernels import SHIFT_MAX_BATCH, shifted_conv
    rng = np.random.default_rng(kw)
    W = rng.standard_normal((6, 4, 1, kw)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((n, 4, 1, 17)).astype(np.float32)
    la = make_layer("conv", W=W, b=b, stride=[1, stride], padding=[0, pad])
    y = _conv_out([la], x)
    assert shifted_conv(la, n) == (n <= SHIFT_MAX_BATCH)
    ref = torch.nn.functional.conv1d(torch.tensor(x[:, :, 0]), torch.tensor(W[:, :, 0]),
                                     torch.tensor(b), stride=stride, padding=pad).numpy()
    np.testing.assert_allclose(y.reshape(ref.shape), ref, atol=1e-4 * np.abs(ref).max())


def test_1d_conv_taps_follow_the_weights_and_runtime_peak(tmp_path):
    """The tap-products path keeps a model's taps on the layer: a replaced W is used at
    once (against PyTorch); a 1-D convolution model's runtime peak (layers on both
    small-batch paths and a 1 x 1) is within 10% of its prediction at the batches those
    paths serve (float32 and int8)."""
    torch = pytest.importorskip("torch")
    from tinydl.compress import SparseRuntime, quantize_layer, save_model
    from tinydl.compress.model import CompressedModel
    rng = np.random.default_rng(5)
    la = make_layer("conv", W=rng.standard_normal((16, 20, 1, 9)).astype(np.float32),
                    b=rng.standard_normal(16).astype(np.float32), stride=[1, 1],
                    padding=[0, 4])
    x = rng.standard_normal((2, 20, 1, 125)).astype(np.float32)
    _conv_out([la], x)
    for _ in range(2):  # the second W must replace the kept taps
        W = rng.standard_normal((16, 20, 1, 9)).astype(np.float32)
        la.arrays["W"] = W
        ref = torch.nn.functional.conv1d(torch.tensor(x[:, :, 0]), torch.tensor(W[:, :, 0]),
                                         torch.tensor(la.arrays["b"]), padding=4).numpy()
        np.testing.assert_allclose(_conv_out([la], x).reshape(ref.shape), ref,
                                   atol=1e-4 * np.abs(ref).max())
    head = [la, make_layer("relu"), make_layer("maxpool", pool_size=[1, 2], stride=[1, 2]),
            make_layer("conv", W=rng.standard_normal((8, 16, 1, 3)).astype(np.float32),
                       b=np.zeros(8, np.float32), stride=[1, 1], padding=[0, 1]),
            make_layer("conv", W=rng.standard_normal((24, 8, 1, 5)).astype(np.float32),
                       b=np.zeros(24, np.float32), stride=[1, 1], padding=[0, 2]),
            make_layer("conv", W=rng.standard_normal((8, 24, 1, 1)).astype(np.float32),
                       b=np.zeros(8, np.float32), stride=[1, 1], padding=[0, 0]),
            make_layer("flatten"),
            make_layer("dense", W=rng.standard_normal((8 * 62, 5)).astype(np.float32),
                       b=np.zeros(5, np.float32))]
    for q in (False, True):
        layers = [quantize_layer(h) if q and h.kind in ("conv", "dense") else h for h in head]
        model = CompressedModel(layers, (20, 1, 125))
        save_model(model, tmp_path / "c.npz")
        rt = SparseRuntime(tmp_path / "c.npz")
        for n in (1, 4):
            out = rt.run(x[:1].repeat(n, 0), measure=True)
            np.testing.assert_allclose(out, model.decision_function(x[:1].repeat(n, 0)),
                                       rtol=1e-4, atol=1e-4)
            pred = rt.predict_peak_bytes(n)
            assert abs(rt.last_peak_bytes - pred) <= 0.10 * pred, (q, n, pred,
                                                                   rt.last_peak_bytes)


@pytest.mark.parametrize("f,c", [(16, 4), (4, 16)])
def test_1d_conv_columns_and_taps_paths_match_torch(f, c):
    """Both small-batch 1-D paths (windows when the input is narrower, tap products when
    the output is) against PyTorch's conv1d, strided and padded."""
    torch = pytest.importorskip("torch")
    from tinydl.compress.kernels import conv_geom, shift_by_columns
    rng = np.random.default_rng(f)
    W = rng.standard_normal((f, c, 1, 5)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    x = rng.standard_normal((3, c, 1, 23)).astype(np.float32)
    la = make_layer("conv", W=W, b=b, stride=[1, 2], padding=[0, 2])
    y = _conv_out([la], x)
    assert shift_by_columns(conv_geom(la, la.in_shape)) == (c < f)
    ref = torch.nn.functional.conv1d(torch.tensor(x[:, :, 0]), torch.tensor(W[:, :, 0]),
                                     torch.tensor(b), stride=2, padding=2).numpy()
    np.testing.assert_allclose(y.reshape(ref.shape), ref, atol=1e-4 * np.abs(ref).max())
