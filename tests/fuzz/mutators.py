"""Malformed-file generation for the fuzz suite and ``benchmarks/reliability.py``.

Valid seed files are built once (``make_seeds``), then mutated: byte flips, truncation,
zip member swaps/renames/drops, ``.npy`` header edits (dtype, shape, huge declared shapes,
object dtype), NaN/Inf payloads, TOML type confusion, CSV garbage and ONNX graph edits.
``READERS`` maps each file kind to the public reader(s) it must go through; ``TYPED_ERRORS``
are the documented errors (see docs/reliability.md).  Anything else is a crash.

No pickle anywhere: every file is written from bytes or through the library's writers.
"""
from __future__ import annotations

import importlib.util
import io
import os
import random
import re
import shutil
import struct
import zipfile

import numpy as np

#: the library's documented typed errors (ModelFileError, DataError, ProfileError are
#: ValueError subclasses); hal.BackendError is added by ``typed_errors()``
TYPED_ERRORS = (ValueError, TypeError, OSError)

#: a reader may allocate at most this much (tracemalloc peak) beyond 8x the input size
ALLOC_SLACK = 64 * 2 ** 20

HAVE_ONNX = importlib.util.find_spec("onnx") is not None

KINDS = ("model_npz", "compressed_npz", "transform_npz", "checkpoint", "profile_toml",
         "data_npz", "data_npy", "data_csv", "onnx")


def typed_errors():
    import hal
    return TYPED_ERRORS + (hal.BackendError,)


# -- seeds --------------------------------------------------------------------------------------
def make_seeds(root) -> dict:
    """Write one or more valid files of every kind under ``root``; return kind -> [paths]."""
    from tinydl.compress import export_onnx, from_network
    from tinydl.compress.files import save_model
    from tinydl.learner import TinyDLClassifier
    from tinydl.nn import MLPClassifier
    from tinydl.transform import StreamingDictionary

    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 6)).astype(np.float32)
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int64)
    seeds = {k: [] for k in KINDS}

    clf = MLPClassifier((8,), epochs=2, batch_size=16, seed=0).fit(X, y)
    p = os.path.join(root, "model.npz")
    clf.save(p)
    seeds["model_npz"].append(p)

    cm = from_network(clf)
    p = os.path.join(root, "compressed.npz")
    save_model(cm, p)
    seeds["compressed_npz"].append(p)

    sd = StreamingDictionary(l=8, k=3, alpha=0.3).partial_fit(X)
    p = os.path.join(root, "transform.npz")
    sd.save(p)
    seeds["transform_npz"].append(p)

    learner = TinyDLClassifier(l=8, k=3, hidden_layer_sizes=(6,), window=32, n_batch=32,
                               epochs_per_update=1, seed=0)
    learner.partial_fit(X[:80], y[:80], classes=np.array([0, 1]))
    p = os.path.join(root, "ckpt")
    learner.save(p)
    seeds["checkpoint"].append(p)

    here = os.path.dirname(os.path.abspath(__file__))
    plat = os.path.join(here, "..", "..", "platforms")
    for name in sorted(os.listdir(plat)):
        if name.endswith(".toml"):
            dst = os.path.join(root, name)
            shutil.copy(os.path.join(plat, name), dst)
            seeds["profile_toml"].append(dst)

    p = os.path.join(root, "data.npz")
    np.savez(p, X_train=X, y_train=y, X_test=X[:20], y_test=y[:20])
    seeds["data_npz"].append(p)
    p = os.path.join(root, "dataxy.npz")
    np.savez(p, X=X[:40], y=y[:40])
    seeds["data_npz"].append(p)
    p = os.path.join(root, "data.npy")
    np.save(p, X[:40])
    seeds["data_npy"].append(p)
    p = os.path.join(root, "data.csv")
    with open(p, "w") as fh:
        fh.write("a,b,c,d,e,f,label\n")
        for row, lab in zip(X[:40], y[:40]):
            fh.write(",".join(f"{v:.5g}" for v in row) + f",{lab}\n")
    seeds["data_csv"].append(p)

    if HAVE_ONNX:  # the onnx extra is optional: without it there is no ONNX seed to mutate
        p = os.path.join(root, "model.onnx")
        export_onnx(cm, p)
        seeds["onnx"].append(p)
    return seeds


# -- readers ------------------------------------------------------------------------------------
def _read_model(p):
    from tinydl.nn.classifier import NetworkClassifier
    NetworkClassifier.load(p)


def _read_any_model(p):
    from tinydl.compress.files import load_any_model
    load_any_model(p)


def _read_compressed(p):
    from tinydl.compress.files import load_model
    load_model(p)


def _read_runtime(p):
    from tinydl.compress.runtime import SparseRuntime
    rt = SparseRuntime(p)
    if int(np.prod(rt.input_shape)) <= 2 ** 16:  # the harness's own input stays small
        rt.run(np.zeros((1,) + tuple(rt.input_shape), np.float32))


def _read_transform(p):
    from tinydl.transform import StreamingDictionary
    StreamingDictionary.load(p)


def _read_checkpoint(p):
    from tinydl.learner import TinyDLClassifier
    TinyDLClassifier.load(p)


def _read_profile(p):
    from hal.profile import load_profile
    load_profile(p)


def _read_dataset(p):
    from tinydl.data import load_dataset
    load_dataset(p)


def _read_stream(p):
    from tinydl.data import open_stream
    st = open_stream(p, need_labels=False)
    st.validate(16)


def _read_onnx(p):
    from tinydl.compress.onnx_io import import_onnx
    import_onnx(p)


READERS = {
    "model_npz": (_read_model, _read_any_model),
    "compressed_npz": (_read_compressed, _read_runtime, _read_any_model),
    "transform_npz": (_read_transform,),
    "checkpoint": (_read_checkpoint,),
    "profile_toml": (_read_profile,),
    "data_npz": (_read_dataset, _read_stream),
    "data_npy": (_read_dataset, _read_stream),
    "data_csv": (_read_dataset, _read_stream),
    "onnx": (_read_onnx, _read_any_model),
}


# -- byte-level mutations -----------------------------------------------------------------------
def flip_bytes(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        if b:
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
    return bytes(b)


def truncate(data: bytes, rnd: random.Random) -> bytes:
    return data[:rnd.randrange(len(data))] if data else data


def splice(data: bytes, rnd: random.Random) -> bytes:
    if len(data) < 4:
        return data + bytes(rnd.randrange(256) for _ in range(8))
    i, j = sorted(rnd.sample(range(len(data)), 2))
    choice = rnd.randrange(3)
    if choice == 0:  # duplicate a span
        return data[:j] + data[i:j] + data[j:]
    if choice == 1:  # delete a span
        return data[:i] + data[j:]
    return data[:i] + bytes(rnd.randrange(256) for _ in range(min(j - i, 64))) + data[j:]


BYTE_MUTATORS = (flip_bytes, truncate, splice)


# -- .npy / .npz structure ----------------------------------------------------------------------
def npy_bytes(header: dict, payload: bytes = b"", version=(1, 0)) -> bytes:
    """A ``.npy`` with an arbitrary header dict written as text (may lie about the payload)."""
    text = repr(header)
    return _npy_raw(text, payload, version)


def _npy_raw(text: str, payload: bytes, version=(1, 0)) -> bytes:
    magic = b"\x93NUMPY" + bytes(version)
    hlen = len(text) + 1
    fmt = "<H" if version == (1, 0) else "<I"
    pad = (-(len(magic) + struct.calcsize(fmt) + hlen)) % 64
    body = (text + " " * pad + "\n").encode("latin1")
    return magic + struct.pack(fmt, len(body)) + body + payload


def read_zip(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i.filename), i.compress_type) for i in zf.infolist()]


def write_zip(members, compress=zipfile.ZIP_STORED) -> bytes:
    import warnings
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are one of the mutations
        with zipfile.ZipFile(buf, "w", compression=compress) as zf:
            for name, payload, *_ in members:
                zf.writestr(name, payload)
    return buf.getvalue()


def _npy_header(blob: bytes):
    try:
        f = io.BytesIO(blob)
        ver = np.lib.format.read_magic(f)
        rd = (np.lib.format.read_array_header_1_0 if ver == (1, 0)
              else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = rd(f)
        return shape, fortran, dtype, blob[f.tell():]
    except Exception:
        return None


_HUGE = (2 ** 40, 2 ** 31, 10 ** 12, 2 ** 62, 2 ** 63 - 1, 3 * 10 ** 9)


def edit_npy(blob: bytes, rnd: random.Random) -> bytes:
    """Edit a ``.npy``'s header: dtype, shape (wrong, huge, negative), order, object dtype."""
    hdr = _npy_header(blob)
    if hdr is None:
        return flip_bytes(blob, rnd)
    shape, fortran, dtype, payload = hdr
    descr = np.lib.format.dtype_to_descr(dtype)
    choice = rnd.randrange(10)
    if choice == 0:
        descr = rnd.choice(["|O", "<U3", "<f2", "<c16", "|b1", "<i8", ">f8", "|V8", "<M8[s]",
                            [("a", "<f4"), ("b", "|O")], "<f4", "|S2", "<m8[D]", "<f16"])
    elif choice == 1:
        shape = tuple(rnd.choice(_HUGE) for _ in range(rnd.randint(1, 3)))
    elif choice == 2:
        shape = (rnd.choice(_HUGE),) + tuple(shape[1:])
    elif choice == 3:
        shape = tuple(rnd.randint(-3, 3) for _ in range(rnd.randint(0, 4)))
    elif choice == 4:
        fortran = not fortran
    elif choice == 5:
        shape = tuple(reversed(shape)) + (1,)
    elif choice == 6:  # header text garbage
        text = rnd.choice(["{'descr': '<f4', 'fortran_order': False}",
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                           "not a dict", "{'descr': __import__('os'), 'shape': ()}",
                           "{'descr': '<f4', 'fortran_order': 'yes', 'shape': (2,)}",
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,)}",
                           "{'descr': '<f4', 'fortran_order': False, 'shape': [" + "(" * 200
                           + ")" * 200 + "]}",
                           "{'descr': '<f4', 'fortran_order': False, 'shape': ('a',)}"])
        return _npy_raw(text, payload)
    elif choice == 7:  # payload with NaN/Inf/denormals of the declared dtype
        if dtype.kind == "f" and payload:
            arr = np.frombuffer(payload[:len(payload) - len(payload) % dtype.itemsize],
                                dtype).copy()
            if arr.size:
                idx = rnd.randrange(arr.size)
                arr[idx] = rnd.choice([np.nan, np.inf, -np.inf, 1e-45, 3e38, -0.0])
            payload = arr.tobytes()
        else:
            payload = payload[: len(payload) // 2]
    elif choice == 8:
        return npy_bytes({"descr": descr, "fortran_order": fortran, "shape": shape},
                         payload, version=(2, 0))
    else:
        payload = payload + payload[: rnd.randrange(1, 64)] if payload else b"\0" * 8
    return npy_bytes({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}, payload)


def mutate_npz(data: bytes, rnd: random.Random) -> bytes:
    """A structural mutation of a zip of ``.npy`` members (falls back to byte flips)."""
    try:
        members = read_zip(data)
    except Exception:
        return flip_bytes(data, rnd)
    if not members:
        return data
    choice = rnd.randrange(9)
    i = rnd.randrange(len(members))
    name, payload, ctype = members[i]
    if choice == 0:  # drop a member
        members.pop(i)
    elif choice == 1 and len(members) > 1:  # swap two members' contents
        j = rnd.randrange(len(members))
        members[i], members[j] = (members[i][0], members[j][1], ctype), \
            (members[j][0], payload, ctype)
    elif choice == 2:  # rename
        members[i] = (rnd.choice(["x.npy", name[:-4], name + ".npy", "../evil.npy",
                                  "__tinydl_format__.npy", "meta.npy", "X.npy"]), payload, ctype)
    elif choice == 3:  # duplicate a member name
        members.append((name, rnd.choice([payload, b"junk"]), ctype))
    elif choice in (4, 5, 6):
        members[i] = (name, edit_npy(payload, rnd), ctype)
    elif choice == 7:  # string/scalar confusion
        members[i] = (name, _npy_of(rnd.choice([np.array("x" * rnd.randrange(9)),
                                                 np.array(3.5), np.zeros((0,)),
                                                 np.array([1, 2], np.int8),
                                                 np.array('{"class": 1}'),
                                                 np.array("ckpt-1/../../x"),
                                                 np.full((3, 3), np.nan)])), ctype)
    else:
        return write_zip(members, zipfile.ZIP_DEFLATED)
    return write_zip(members)


def _npy_of(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def huge_npz(names, rnd: random.Random) -> bytes:
    """A small zip whose members declare enormous shapes (must be refused before allocating)."""
    members = []
    for n in names:
        shape = tuple(rnd.choice(_HUGE) for _ in range(rnd.randint(1, 2)))
        members.append((n + ".npy", npy_bytes({"descr": "<f8", "fortran_order": False,
                                                "shape": shape}, b"\0" * 64)))
    return write_zip(members, rnd.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))


def zip_bomb(names) -> bytes:
    """Deflated members whose declared shapes match 256 MiB of zeros each."""
    members = []
    n = 2 ** 25
    for name in names:
        head = npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (n,)})
        members.append((name + ".npy", head + b"\0" * (8 * n)))
    return write_zip(members, zipfile.ZIP_DEFLATED)


# -- TOML ---------------------------------------------------------------------------------------
_TOML_VALUES = ['"text"', "-1", "0", "1e400", "nan", "inf", "-inf", "[]", "[1, 2]", "{}",
                "{ a = 1 }", "true", "1979-05-27", "99999999999999999999", '"0"', "0.0",
                "[[1]]", '""', "1e-320"]


def mutate_toml(text: str, rnd: random.Random) -> str:
    lines = text.splitlines()
    kv = [i for i, ln in enumerate(lines) if re.match(r"\s*[A-Za-z0-9_\-\"]+\s*=", ln)]
    choice = rnd.randrange(8)
    if choice <= 2 and kv:  # type confusion: replace a value
        i = rnd.choice(kv)
        key = lines[i].split("=", 1)[0]
        lines[i] = f"{key}= {rnd.choice(_TOML_VALUES)}"
    elif choice == 3 and lines:  # delete a line
        lines.pop(rnd.randrange(len(lines)))
    elif choice == 4:  # duplicate a line (duplicate key or table: a TOML error)
        if lines:
            j = rnd.randrange(len(lines))
            lines.insert(j, lines[j])
    elif choice == 5:  # add an unknown key or table
        lines.insert(rnd.randrange(len(lines) + 1),
                     rnd.choice(["bogus = 1", "[bogus]", "[backends.bogus]", "[[x]]",
                                 "schema_version = 99", "a = " + "[" * 600 + "]" * 600]))
    elif choice == 6:  # a table header becomes a value or vice versa
        hs = [i for i, ln in enumerate(lines) if ln.strip().startswith("[")]
        if hs:
            i = rnd.choice(hs)
            lines[i] = lines[i].strip().strip("[]") + " = 3"
    else:
        return flip_bytes(text.encode("utf-8", "replace"), rnd).decode("latin1")
    return "\n".join(lines) + "\n"


# -- CSV ----------------------------------------------------------------------------------------
_CSV_CELLS = ["nan", "inf", "-inf", "1e400", "abc", "", " ", "0x10", "1,2", '"3"', "1e-320",
              "\x00", "9" * 400, "-0", "1_000", "\u00e9", "NaN", "True", "1.5", "-7"]


def mutate_csv(text: str, rnd: random.Random) -> str:
    lines = text.splitlines()
    choice = rnd.randrange(7)
    if choice <= 2 and len(lines) > 1:
        i = rnd.randrange(1, len(lines))
        cells = lines[i].split(",")
        cells[rnd.randrange(len(cells))] = rnd.choice(_CSV_CELLS)
        lines[i] = ",".join(cells)
    elif choice == 3 and lines:  # ragged row
        i = rnd.randrange(len(lines))
        lines[i] = lines[i] + rnd.choice([",1", ",", ""]) if rnd.random() < 0.5 else \
            lines[i].rsplit(",", 1)[0]
    elif choice == 4:  # only a header / empty / label constant
        lines = lines[: rnd.randint(0, 2)]
    elif choice == 5:
        lines.insert(rnd.randrange(len(lines) + 1), rnd.choice(
            ["\x00\x01\x02", "\ufeff1,2,3", ",,,,,,", "1;2;3", "a" * 1000]))
    else:
        return flip_bytes(text.encode(), rnd).decode("latin1")
    return "\n".join(lines) + "\n"


# -- ONNX ---------------------------------------------------------------------------------------
def mutate_onnx(data: bytes, rnd: random.Random) -> bytes:
    try:
        return _mutate_onnx(data, rnd)
    except Exception:  # a mutant of a mutant the onnx helpers cannot edit: flip bytes
        return flip_bytes(data, rnd)


def _mutate_onnx(data: bytes, rnd: random.Random) -> bytes:
    import onnx
    from onnx import helper, numpy_helper
    try:
        mp = onnx.load_from_string(data)
    except Exception:
        return flip_bytes(data, rnd)
    g = mp.graph
    choice = rnd.randrange(9)
    if choice == 0 and len(g.node):  # unknown op
        g.node[rnd.randrange(len(g.node))].op_type = rnd.choice(
            ["Foo", "Loop", "If", "Scan", "LSTM", "Gather", "Identity", ""])
    elif choice == 1 and len(g.input):  # bad or huge input dims
        dims = g.input[0].type.tensor_type.shape.dim
        if len(dims):
            d = dims[rnd.randrange(len(dims))]
            d.dim_value = rnd.choice([0, -1, 2 ** 40, 10 ** 12, 3])
    elif choice == 2 and len(g.initializer):  # huge declared initializer dims
        t = g.initializer[rnd.randrange(len(g.initializer))]
        if len(t.dims):
            t.dims[rnd.randrange(len(t.dims))] = rnd.choice([2 ** 40, 10 ** 12, 0, 7])
    elif choice == 3 and len(g.initializer):  # wrong dtype / NaN weights / shape
        i = rnd.randrange(len(g.initializer))
        t = g.initializer[i]
        arr = numpy_helper.to_array(t).copy()
        sub = rnd.randrange(3)
        if sub == 0 and arr.size and arr.dtype.kind == "f":
            arr.flat[rnd.randrange(arr.size)] = rnd.choice([np.nan, np.inf])
        elif sub == 1:
            arr = arr.reshape(-1)[: max(arr.size - 1, 0)]
        else:
            arr = arr.astype(rnd.choice([np.int64, np.float16, np.float64, np.bool_]))
        g.initializer[i].CopyFrom(numpy_helper.from_array(arr, t.name))
    elif choice == 4 and len(g.node):  # attribute edits
        n = g.node[rnd.randrange(len(g.node))]
        n.attribute.append(helper.make_attribute(
            rnd.choice(["axis", "group", "transA", "kernel_shape", "pads", "strides"]),
            rnd.choice([5, -7, [0, 0], [2 ** 31, 1], [1, 2, 3, 4, 5]])))
    elif choice == 5 and len(g.node) > 1:  # break the chain
        n = g.node[rnd.randrange(len(g.node))]
        if len(n.input):
            n.input[0] = rnd.choice(["nowhere", n.output[0], "input"])
    elif choice == 6 and len(g.node):  # drop a node
        del g.node[rnd.randrange(len(g.node))]
    elif choice == 7 and len(g.node):  # a Constant with a huge or empty tensor
        t = onnx.TensorProto(name="c", data_type=onnx.TensorProto.FLOAT,
                             dims=[rnd.choice([2 ** 40, 0, 3])])
        g.node.insert(0, helper.make_node("Constant", [], ["c"], value=t))
    else:
        return flip_bytes(data, rnd)
    return mp.SerializeToString()


# -- one malformed input ------------------------------------------------------------------------
def mutate_file(kind: str, seed_path: str, out_dir: str, rnd: random.Random) -> str:
    """Write one mutant of ``seed_path`` (a file, or a checkpoint directory) under
    ``out_dir``; return the path to hand to the readers of ``kind``."""
    os.makedirs(out_dir, exist_ok=True)
    if kind == "checkpoint":
        dst = os.path.join(out_dir, "ckpt")
        if os.path.exists(dst):
            shutil.rmtree(dst)
        shutil.copytree(seed_path, dst)
        files = []
        for r, _, fs in os.walk(dst):
            files += [os.path.join(r, f) for f in fs]
        target = rnd.choice(sorted(files))
        with open(target, "rb") as fh:
            data = fh.read()
        if os.path.basename(target) == "LATEST":
            data = rnd.choice([b"", b"ckpt-x\n", b"../ckpt\n", b"ckpt-000000000001\n",
                               b"/etc/passwd\n", b"\xff\xfe", b"ckpt-" + b"9" * 5000,
                               flip_bytes(data, rnd)])
        elif rnd.random() < 0.2:
            os.unlink(target)
            return dst
        else:
            data = _mutate_bytes("npz", data, rnd)
        with open(target, "wb") as fh:
            fh.write(data)
        return dst
    ext = os.path.splitext(seed_path)[1]
    with open(seed_path, "rb") as fh:
        data = fh.read()
    fam = {"model_npz": "npz", "compressed_npz": "npz", "transform_npz": "npz",
           "data_npz": "npz", "data_npy": "npy", "profile_toml": "toml", "data_csv": "csv",
           "onnx": "onnx"}[kind]
    data = _mutate_bytes(fam, data, rnd)
    dst = os.path.join(out_dir, "input" + ext)
    with open(dst, "wb") as fh:
        fh.write(data)
    return dst


def _mutate_bytes(fam: str, data: bytes, rnd: random.Random) -> bytes:
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        if rnd.random() < 0.25:
            data = rnd.choice(BYTE_MUTATORS)(data, rnd)
        elif fam == "npz":
            if rnd.random() < 0.08:
                try:
                    names = [n[:-4] for n, *_ in read_zip(data)]
                except Exception:
                    names = ["X", "y"]
                data = huge_npz(names, rnd)
            else:
                data = mutate_npz(data, rnd)
        elif fam == "npy":
            data = edit_npy(data, rnd)
        elif fam == "toml":
            data = mutate_toml(data.decode("utf-8", "replace"), rnd).encode("utf-8", "replace")
        elif fam == "csv":
            data = mutate_csv(data.decode("utf-8", "replace"), rnd).encode("utf-8", "replace")
        else:
            data = mutate_onnx(data, rnd)
    return data


def call_reader(reader, path, errors=None):
    """Run ``reader(path)``; return None if it succeeded or raised a typed error, else the
    unexpected exception (a crash)."""
    errors = errors or typed_errors()
    try:
        reader(path)
    except errors:
        return None
    except Exception as exc:  # noqa: BLE001 - that is what we are looking for
        return exc
    return None
