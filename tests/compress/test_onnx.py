"""ONNX import/export: onnxruntime agrees with tinydl's runtime; bad graphs get clear errors."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tinydl.compress import (  # noqa
    CLayer,
    CompressedModel,
    SparseFactorizer,
    SparseRuntime,
    export_onnx,
    import_onnx,
    save_model,
    separate_cross_channel,
    separate_kernels,
)
from tinydl.compress.model import make_layer  # noqa: E402


def _ort(path_or_proto, x):
    data = path_or_proto if isinstance(path_or_proto, str) else \
        path_or_proto.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _compressed_cnn(rng):
    f32 = np.float32
    W1 = rng.standard_normal((6, 1, 3, 3)).astype(f32)
    W2 = rng.standard_normal((4, 6, 3, 3)).astype(f32)
    fac = SparseFactorizer(rng.standard_normal((64, 20)).astype(f32), n_iter=2).factors(8, 3)
    layers = [separate_kernels(W1, np.ones(6, f32), 1, padding=(1, 1)), CLayer("relu"),
              *separate_cross_channel(W2, np.zeros(4, f32), 2, padding=(1, 1)),
              make_layer("maxpool", pool_size=[2, 2], stride=[2, 2]), CLayer("flatten"),
              make_layer("sparse_factored", B=fac.B, data=fac.data, indices=fac.indices,
                         indptr=fac.indptr, b=np.zeros(20, f32), n_out=20), CLayer("tanh"),
              make_layer("factored", U=rng.standard_normal((20, 3)).astype(f32),
                         V=rng.standard_normal((3, 5)).astype(f32), b=np.ones(5, f32)),
              CLayer("sigmoid"), make_layer("dense", W=rng.standard_normal((5, 4)).astype(f32),
                                            b=np.zeros(4, f32)), CLayer("softmax")]
    return CompressedModel(layers, (1, 8, 8))


def test_export_agrees_with_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    model = _compressed_cnn(rng)
    x = rng.standard_normal((9, 1, 8, 8)).astype(np.float32)
    save_model(model, tmp_path / "m.npz")
    ours = SparseRuntime(tmp_path / "m.npz").run(x)
    export_onnx(model, str(tmp_path / "m.onnx"))
    theirs = _ort(str(tmp_path / "m.onnx"), x)
    np.testing.assert_allclose(ours, theirs.reshape(9, -1), atol=1e-4)


def test_compressed_trained_mlp_roundtrip(tmp_path, trained_mlp, digits_split):
    from tinydl.compress import compress_model, from_network
    _, _, Xv, yv, Xt, _ = digits_split
    cm, _ = compress_model(from_network(trained_mlp), Xv, yv, 0.05, method="sparse", n_iter=2)
    save_model(cm, tmp_path / "c.npz")
    ours = SparseRuntime(tmp_path / "c.npz").run(Xt)
    mp = export_onnx(cm, str(tmp_path / "c.onnx"))
    np.testing.assert_allclose(ours, _ort(mp, Xt), atol=1e-4)
    # and back in: the exported dense/factored MLP imports (MatMul + Add chains)
    again = import_onnx(str(tmp_path / "c.onnx"))
    np.testing.assert_allclose(again.decision_function(Xt), ours, atol=1e-4)


def _cnn_graph(rng, extra_node=None, gemm_in=64, w_nan=False):
    f32 = np.float32
    inits = {"cw": rng.standard_normal((4, 1, 3, 3)).astype(f32),
             "cb": rng.standard_normal(4).astype(f32),
             "s": rng.uniform(0.5, 2, 4).astype(f32), "bb": rng.standard_normal(4).astype(f32),
             "mu": rng.standard_normal(4).astype(f32), "var": rng.uniform(0.5, 2, 4).astype(f32),
             "gw": rng.standard_normal((10, gemm_in)).astype(f32),
             "gb": rng.standard_normal(10).astype(f32)}
    if w_nan:
        inits["gw"][0, 0] = np.nan
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["n"],
                              epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=1)]
    if extra_node is not None:
        nodes.insert(3, extra_node)
    g = helper.make_graph(nodes, "cnn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    mp = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    mp.ir_version = 8
    return mp


def test_import_cnn_with_batchnorm_folded():
    rng = np.random.default_rng(1)
    mp = _cnn_graph(rng)
    model = import_onnx(mp)
    assert [la.kind for la in model.layers] == ["conv", "relu", "maxpool", "flatten", "dense",
                                                "softmax"]
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model.decision_function(x), _ort(mp, x), atol=1e-5)


def test_import_errors():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match=r"unsupported ONNX op 'LeakyRelu' at node 'lr'"):
        import_onnx(_cnn_graph(rng, helper.make_node("LeakyRelu", ["r"], ["r2"], name="lr")))
    with pytest.raises(ValueError, match=r"\(Gemm\): weight of shape \(64, 10\) does not "
                       r"take the 144 features it receives"):
        import_onnx(_bad_gemm(rng))
    with pytest.raises(ValueError, match=r"W \(64, 10\) has 1 NaN/Inf"):
        import_onnx(_cnn_graph(rng, w_nan=True))


def _bad_gemm(rng):
    mp = _cnn_graph(rng)
    # a 3x3 stride-1 pool leaves 4x6x6 = 144 features, not the 64 the Gemm takes
    for node in mp.graph.node:
        if node.op_type == "MaxPool":
            del node.attribute[:]
            node.attribute.extend([helper.make_attribute("kernel_shape", [3, 3]),
                                   helper.make_attribute("strides", [1, 1])])
    return mp


# -- issue 17: both dtypes export to graphs onnx's full check and onnxruntime accept ---------
def _as_dtype(model, dtype):
    for la in model.layers:
        for key, a in la.arrays.items():
            if np.asarray(a).dtype.kind == "f":
                la.arrays[key] = np.asarray(a).astype(dtype)
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_export_both_dtypes_full_check_and_onnxruntime(tmp_path, dtype, kind):
    rng = np.random.default_rng(3)
    if kind == "cnn":
        model = _as_dtype(_compressed_cnn(rng), dtype)
        x = rng.standard_normal((9, 1, 8, 8)).astype(dtype)
    else:
        f = rng.standard_normal
        model = CompressedModel(
            [make_layer("dense", W=f((12, 7)).astype(dtype), b=f(7).astype(dtype)),
             CLayer("relu"),
             make_layer("factored", U=f((7, 2)).astype(dtype), V=f((2, 4)).astype(dtype),
                        b=f(4).astype(dtype)), CLayer("softmax")], (12,))
        x = rng.standard_normal((9, 12)).astype(dtype)
    assert model.dtype == dtype
    mp = export_onnx(model, str(tmp_path / "m.onnx"))
    onnx.checker.check_model(mp, full_check=True)
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    assert mp.graph.input[0].type.tensor_type.elem_type == elem
    assert mp.graph.output[0].type.tensor_type.elem_type == elem
    theirs = _ort(str(tmp_path / "m.onnx"), x)      # float64 was refused before
    assert theirs.dtype == dtype
    ours = model.decision_function(x)
    # a float64 CNN's convolutions run in float32 inside the graph (onnxruntime has no
    # float64 Conv): same predictions, values within float32 rounding
    np.testing.assert_allclose(ours, theirs.reshape(9, -1), atol=1e-4)
    np.testing.assert_array_equal(ours.argmax(axis=1), theirs.reshape(9, -1).argmax(axis=1))


def test_import_gemm_bias_of_shape_1_n():
    rng = np.random.default_rng(4)
    mp = _cnn_graph(rng)
    for t in mp.graph.initializer:
        if t.name == "gb":
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).reshape(1, 10), "gb"))
    onnx.checker.check_model(mp, full_check=True)            # legal ONNX
    model = import_onnx(mp)                                   # was refused
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model.decision_function(x), _ort(mp, x), atol=1e-5)


def test_import_a_network_exported_by_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed: the torch.onnx.export "
                                "round trip needs it")
    import warnings
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.2),
                        nn.Tanh(), nn.Linear(10, 3), nn.Softmax(dim=1))
    with torch.no_grad():   # a BatchNorm with non-trivial statistics
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    net.eval()
    path = str(tmp_path / "torch.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript exporter (dynamo=False): the dynamo one needs onnxscript
        torch.onnx.export(net, torch.zeros(2, 1, 8, 8), path, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                          dynamo=False)
    model = import_onnx(path)
    x = np.random.default_rng(5).standard_normal((7, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.decision_function(x), ref, atol=1e-5)
    np.testing.assert_allclose(_ort(path, x), ref, atol=1e-5)
