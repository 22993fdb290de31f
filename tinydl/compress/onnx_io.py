"""ONNX in and out (the ``onnx`` extra; ``onnx`` is imported only when these are called).

Import (:func:`import_onnx`) reads a sequential MLP or CNN: Gemm (bias of shape (N,), (1, N)
or a scalar), MatMul, Add (a bias), Conv, Relu, Tanh, Sigmoid, MaxPool, AveragePool, Flatten,
Reshape (to ``(N, -1)`` only) and Softmax; BatchNormalization is folded into the
Conv/Gemm/MatMul before it; Constant nodes are read as weights, Identity and Dropout
(inference) pass through - what ``torch.onnx.export`` writes for such networks.  Any other
op, a branch, or shapes that do not chain raise ``ValueError`` naming the node.

Export (:func:`export_onnx`) writes a compressed model (opset 13) in its own dtype (input,
output and weights float32, or all float64: onnxruntime refuses a graph that mixes them; the
Conv and AveragePool of a float64 model run in float32 between two Casts, because
onnxruntime's CPU provider has no float64 kernel for them), checked with
``onnx.checker.check_model(full_check=True)`` (shape inference included): ``factored`` layers become
two MatMuls and an Add, ``sparse_factored`` a MatMul by B and one by S *densified* (ONNX's
standard ops have no sparse product), ``kernel_separated`` a grouped Conv (vertical), a Gather
that regroups channels by filter, and a grouped Conv (horizontal).
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from .kernels import float_arrays
from .model import CLayer, CompressedModel, make_layer

__all__ = ["import_onnx", "export_onnx", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Conv", "Relu", "Tanh", "Sigmoid", "MaxPool",
                 "AveragePool", "Flatten", "Reshape", "Softmax", "BatchNormalization",
                 "Constant", "Identity", "Dropout")


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError(f"ONNX support needs the 'onnx' extra (pip install tinydl[onnx]): "
                          f"{exc}") from None
    return onnx, numpy_helper


def _attrs(node):
    onnx, _ = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def import_onnx(path_or_model, classes=None) -> CompressedModel:
    """Read a trained MLP or CNN from ONNX into a :class:`CompressedModel`.

    Parameters
    ----------
    path_or_model : str, os.PathLike or onnx.ModelProto
    classes : array-like of shape (n_outputs,), optional

    Raises
    ------
    ValueError
        For an unsupported op (named), a non-sequential graph, unsupported attributes, NaN
        weights or shapes that do not chain.
    """
    onnx, nh = _onnx()
    if isinstance(path_or_model, (str, os.PathLike)):
        try:
            mp = onnx.load(os.fspath(path_or_model))
        except Exception as exc:
            raise ValueError(f"{os.fspath(path_or_model)} is not a readable ONNX model "
                             f"({type(exc).__name__}: {exc})") from None
    else:
        mp = path_or_model
    g = mp.graph
    inits: Dict[str, np.ndarray] = {t.name: nh.to_array(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"the graph has {len(inputs)} data inputs; a sequential model has 1")
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
        raise ValueError(f"input {inputs[0].name!r} has shape {dims}; every dimension but the "
                         "batch must be known")
    in_shape = tuple(dims[1:])
    cur, shape = inputs[0].name, in_shape
    layers: List[CLayer] = []

    def w(name, node):
        if name not in inits:
            raise ValueError(f"node {node.name or node.op_type!r} ({node.op_type}): input "
                             f"{name!r} is not a constant weight; only sequential models with "
                             "constant weights are supported")
        return np.asarray(inits[name])

    def flat(n):
        return int(np.prod(n))

    for node in g.node:
        op, label = node.op_type, f"node {node.name or '?'!r} ({node.op_type})"
        if op not in SUPPORTED_OPS:
            raise ValueError(f"unsupported ONNX op {op!r} at node {node.name or '?'!r}; "
                             f"supported: {', '.join(SUPPORTED_OPS)}")
        if op == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]   # a shared weight, renamed
            continue
        if op == "Constant":
            a = _attrs(node)
            if "value" not in a:
                raise ValueError(f"{label}: only tensor 'value' constants are supported")
            inits[node.output[0]] = nh.to_array(a["value"])
            continue
        data_in = [i for i in node.input if i and i not in inits]
        if data_in != [cur]:
            raise ValueError(f"{label} reads {list(node.input)}; the model must be one chain "
                             f"from the input (expected it to read {cur!r})")
        if node.input[0] != cur and op not in ("Add", "MatMul"):
            raise ValueError(f"{label}: the data must be its first input")
        a = _attrs(node)
        if op in ("Gemm", "MatMul"):
            if op == "Gemm":
                if a.get("transA", 0):
                    raise ValueError(f"{label}: transA=1 is not supported")
                W = w(node.input[1], node).astype(np.float32)
                W = W.T if a.get("transB", 0) else W
                W = W * float(a.get("alpha", 1.0))
                b = (w(node.input[2], node).astype(np.float32) * float(a.get("beta", 1.0))
                     if len(node.input) > 2 and node.input[2] else np.zeros(W.shape[1], np.float32))
            else:
                if node.input[0] != cur:
                    raise ValueError(f"{label}: only x @ W (data first) is supported")
                W = w(node.input[1], node).astype(np.float32)
                b = np.zeros(W.shape[-1], np.float32)
            if len(shape) != 1:
                raise ValueError(f"{label}: input of shape {shape} must be flattened first "
                                 "(add a Flatten)")
            if W.ndim != 2 or W.shape[0] != shape[0]:
                raise ValueError(f"{label}: weight of shape {W.shape} does not take the "
                                 f"{shape[0]} features it receives")
            if b.size == W.shape[1]:
                b = b.reshape(-1)   # (N,) or (1, N): both legal for Gemm's C, both common
            try:
                b = np.broadcast_to(b, (W.shape[1],)).astype(np.float32)
            except ValueError:
                raise ValueError(f"{label}: bias of shape {b.shape} does not broadcast to the "
                                 f"{W.shape[1]} outputs") from None
            layers.append(make_layer("dense", W=np.ascontiguousarray(W), b=b.copy()))
            shape = (W.shape[1],)
        elif op == "Add":
            bias = w([i for i in node.input if i != cur][0], node).astype(np.float32)
            prev = layers[-1] if layers else None
            if prev is None or prev.kind not in ("dense", "conv"):
                raise ValueError(f"{label}: an Add is supported only as the bias of the "
                                 "Gemm/MatMul/Conv before it")
            nout = prev.arrays["b"].shape[0]
            try:
                if prev.kind == "conv":
                    bias = np.broadcast_to(bias, (1, nout, 1, 1)).reshape(nout) if bias.size \
                        in (1, nout) else np.broadcast_to(bias, (nout,) + shape[1:])
                    if bias.ndim != 1:
                        raise ValueError
                else:
                    bias = np.broadcast_to(bias.reshape(-1) if bias.size == nout else bias,
                                           (nout,))
            except ValueError:
                raise ValueError(f"{label}: bias of shape {bias.shape} does not match the "
                                 f"{nout} outputs before it") from None
            prev.arrays["b"] = (prev.arrays["b"] + bias).astype(np.float32)
        elif op == "Conv":
            W = w(node.input[1], node).astype(np.float32)
            if a.get("group", 1) != 1:
                raise ValueError(f"{label}: group={a['group']} is not supported (1 only)")
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                raise ValueError(f"{label}: dilations {a['dilations']} are not supported")
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise ValueError(f"{label}: auto_pad={a['auto_pad']} is not supported; give "
                                 "explicit pads")
            if len(shape) != 3 or W.ndim != 4 or W.shape[1] != shape[0]:
                raise ValueError(f"{label}: weight of shape {W.shape} does not fit an input of "
                                 f"shape {shape} (need (F, {shape[0] if shape else '?'}, kh, kw))")
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if pads[0] != pads[2] or pads[1] != pads[3]:
                raise ValueError(f"{label}: asymmetric pads {pads} are not supported")
            b = (w(node.input[2], node).astype(np.float32) if len(node.input) > 2
                 and node.input[2] else np.zeros(W.shape[0], np.float32))
            la = make_layer("conv", W=W, b=b, stride=list(a.get("strides", [1, 1])),
                            padding=[pads[0], pads[1]])
            shape = la.build(shape)
            layers.append(la)
        elif op == "BatchNormalization":
            prev = layers[-1] if layers else None
            if prev is None or prev.kind not in ("dense", "conv"):
                raise ValueError(f"{label}: BatchNormalization is folded into a Conv or "
                                 "Gemm/MatMul right before it; there is none")
            scale, beta, mean, var = (w(i, node).astype(np.float64) for i in node.input[1:5])
            s = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
            nout = prev.arrays["b"].shape[0]
            if s.shape != (nout,):
                raise ValueError(f"{label}: {s.shape[0]} channels, the layer before has {nout}")
            if prev.kind == "conv":
                prev.arrays["W"] = (prev.arrays["W"] * s[:, None, None, None]).astype(np.float32)
            else:
                prev.arrays["W"] = (prev.arrays["W"] * s).astype(np.float32)
            prev.arrays["b"] = ((prev.arrays["b"] - mean) * s + beta).astype(np.float32)
        elif op in ("Relu", "Tanh", "Sigmoid"):
            layers.append(CLayer(op.lower()))
        elif op in ("Identity", "Dropout"):
            if op == "Dropout" and len(node.output) > 1 and node.output[1]:
                raise ValueError(f"{label}: a Dropout whose mask is used is not supported")
            # inference: both pass the data through
        elif op == "Softmax":
            if a.get("axis", -1) not in (-1, 1) or len(shape) != 1:
                raise ValueError(f"{label}: only a softmax over the features of flat rows is "
                                 "supported")
            layers.append(CLayer("softmax"))
        elif op in ("MaxPool", "AveragePool"):
            if any(p for p in a.get("pads", [])) or a.get("ceil_mode", 0):
                raise ValueError(f"{label}: pads {a.get('pads')} / ceil_mode are not supported")
            ks = list(a["kernel_shape"])
            la = make_layer("maxpool" if op == "MaxPool" else "avgpool", pool_size=ks,
                            stride=list(a.get("strides", ks)))
            shape = la.build(shape)
            layers.append(la)
        elif op in ("Flatten", "Reshape"):
            if op == "Flatten" and a.get("axis", 1) != 1:
                raise ValueError(f"{label}: axis={a['axis']}; only axis=1 is supported")
            if op == "Reshape":
                target = [int(v) for v in w(node.input[1], node).reshape(-1)]
                ok = (len(target) == 2 and target[1] in (-1, flat(shape))
                      and target[0] in (-1, 0, 1)) or (len(target) == 2 and target[0] in (0, -1)
                                                       and target[1] == flat(shape))
                if not ok:
                    raise ValueError(f"{label}: reshape to {target} from {shape}; only "
                                     f"flattening to (N, {flat(shape)}) is supported")
            if len(shape) > 1:
                layers.append(CLayer("flatten"))
            shape = (flat(shape),)
        cur = node.output[0]
    if [o.name for o in g.output] != [cur]:
        raise ValueError(f"the graph's output {[o.name for o in g.output]} is not the end of "
                         f"the chain {cur!r}")
    if not layers:
        raise ValueError("the ONNX graph holds no layers")
    model = CompressedModel(layers, in_shape, classes)
    model.check_finite()
    return model


def export_onnx(model: CompressedModel, path=None, opset: int = 13):
    """Write ``model`` as ONNX (input ``input`` (N, *input_shape), output ``output``).

    Returns the ``onnx.ModelProto``; with ``path``, also saves it atomically.
    """
    onnx, nh = _onnx()
    from onnx import TensorProto, helper
    nodes, inits = [], []
    counter = [0]
    dt = np.dtype(np.float64) if model.dtype == np.float64 else np.dtype(np.float32)
    elem = TensorProto.DOUBLE if dt == np.float64 else TensorProto.FLOAT
    low = [False]   # inside a float32 island of a float64 graph (see the module docstring)

    def const(arr, name):
        counter[0] += 1
        full = f"{name}_{counter[0]}"
        arr = np.asarray(arr)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32 if low[0] else dt)
        inits.append(nh.from_array(np.ascontiguousarray(arr), full))
        return full

    def out_name():
        counter[0] += 1
        return f"t{counter[0]}"

    cur = "input"
    for i, la in enumerate(model.layers):
        # int8 weights go out dequantized: the graph is the float model they stand for
        a, k = float_arrays(la.arrays, dt), la.kind
        low[0] = dt == np.float64 and k in ("conv", "kernel_separated", "avgpool")
        if low[0]:
            t = out_name()
            nodes.append(helper.make_node("Cast", [cur], [t], to=TensorProto.FLOAT))
            cur = t
        o = out_name()
        if k == "dense":
            t = out_name()
            nodes += [helper.make_node("MatMul", [cur, const(a["W"], f"L{i}_W")], [t]),
                      helper.make_node("Add", [t, const(a["b"], f"L{i}_b")], [o])]
        elif k in ("factored", "sparse_factored"):
            first, second = ((a["U"], a["V"]) if k == "factored" else
                             (a["B"], _dense_S(a, la)))
            t1, t2 = out_name(), out_name()
            nodes += [helper.make_node("MatMul", [cur, const(first, f"L{i}_U")], [t1]),
                      helper.make_node("MatMul", [t1, const(second, f"L{i}_V")], [t2]),
                      helper.make_node("Add", [t2, const(a["b"], f"L{i}_b")], [o])]
        elif k == "conv":
            ph, pw = la.cfg.get("padding", (0, 0))
            nodes.append(helper.make_node(
                "Conv", [cur, const(a["W"], f"L{i}_W"), const(a["b"], f"L{i}_b")], [o],
                strides=list(la.cfg.get("stride", (1, 1))), pads=[ph, pw, ph, pw],
                kernel_shape=list(a["W"].shape[2:])))
        elif k == "kernel_separated":
            c, fr, kh = a["v"].shape
            f, cr, kw = a["h"].shape
            r = fr // f
            sh, sw = la.cfg.get("stride", (1, 1))
            ph, pw = la.cfg.get("padding", (0, 0))
            t1, t2 = out_name(), out_name()
            # vertical: channel c -> its F*r maps (order (c, f, i)); regroup to (f, c, i)
            perm = np.arange(c * f * r).reshape(c, f, r).transpose(1, 0, 2).reshape(-1)
            nodes += [
                helper.make_node("Conv", [cur, const(a["v"].reshape(c * fr, 1, kh, 1),
                                                     f"L{i}_v")], [t1], group=c,
                                 strides=[sh, 1], pads=[ph, 0, ph, 0], kernel_shape=[kh, 1]),
                helper.make_node("Gather", [t1, const(perm.astype(np.int64), f"L{i}_perm")],
                                 [t2], axis=1),
                # horizontal: a grouped conv, filter f over its own C*r maps: h as
                # (F, C*r, 1, kw) with group=F
                helper.make_node("Conv", [t2, const(a["h"][:, :, None, :], f"L{i}_h"),
                                          const(a["b"], f"L{i}_b")], [o], group=f,
                                 strides=[1, sw], pads=[0, pw, 0, pw], kernel_shape=[1, kw])]
        elif k in ("maxpool", "avgpool"):
            ks = list(la.cfg["pool_size"])
            nodes.append(helper.make_node("MaxPool" if k == "maxpool" else "AveragePool",
                                          [cur], [o], kernel_shape=ks,
                                          strides=list(la.cfg.get("stride", ks))))
        elif k in ("relu", "tanh", "sigmoid"):
            nodes.append(helper.make_node(k.capitalize(), [cur], [o]))
        elif k == "softmax":
            nodes.append(helper.make_node("Softmax", [cur], [o], axis=-1))
        elif k == "flatten":
            nodes.append(helper.make_node("Flatten", [cur], [o], axis=1))
        else:  # pragma: no cover
            raise ValueError(f"cannot export layer kind {k!r}")
        cur = o
        if low[0]:
            o = out_name()
            nodes.append(helper.make_node("Cast", [cur], [o], to=TensorProto.DOUBLE))
            cur = o
    nodes[-1].output[0] = "output"
    out_dims = ["N"] + [int(s) for s in model.output_shape]
    graph = helper.make_graph(
        nodes, "tinydl_compressed",
        [helper.make_tensor_value_info("input", elem,
                                       ["N"] + [int(s) for s in model.input_shape])],
        [helper.make_tensor_value_info("output", elem, out_dims)], inits)
    mp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                           producer_name="tinydl.compress")
    mp.ir_version = min(mp.ir_version, 8)  # readable by onnxruntime >= 1.15
    onnx.checker.check_model(mp, full_check=True)
    if path is not None:
        from ..io import atomic_write_bytes
        atomic_write_bytes(path, mp.SerializeToString())
    return mp


def _dense_S(a, la):
    r = a["B"].shape[1]
    n = int(la.cfg["n_out"])
    S = np.zeros((r, n), a["data"].dtype)
    cols = np.repeat(np.arange(n), np.diff(a["indptr"]))
    S[a["indices"].astype(np.intp), cols] = a["data"]
    return S
