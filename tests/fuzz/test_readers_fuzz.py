"""Fuzz every public file reader with mutated valid files (hypothesis drives the mutations).

A malformed input must end in a documented typed error (docs/reliability.md): no other
exception, no hang, and no allocation beyond 8x the input plus 64 MiB (tracemalloc).  The
long run (>= 1,000 inputs, hang detection in worker processes) is benchmarks/reliability.py.
"""
from __future__ import annotations

import os
import random
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import mutators as mut

# every kind of file; ONNX only with the onnx extra (the other readers are fuzzed without it)
KINDS = [pytest.param(k, marks=pytest.mark.skipif(
    k == "onnx" and not mut.HAVE_ONNX, reason="onnx is not installed (extra 'onnx')"))
    for k in mut.KINDS]

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return mut.make_seeds(tmp_path_factory.mktemp("seeds"))


def _feed(kind, path):
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path)
               for f in fs) if os.path.isdir(path) else os.path.getsize(path)
    for reader in mut.READERS[kind]:
        tracemalloc.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exc = mut.call_reader(reader, path)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert exc is None, f"{reader.__name__} crashed on a malformed {kind}: {exc!r}"
        assert peak <= 8 * size + mut.ALLOC_SLACK, \
            f"{reader.__name__} allocated {peak} bytes for a {size}-byte {kind}"


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_malformed_files_raise_typed_errors(seeds, tmp_path_factory, kind, seed):
    rnd = random.Random(seed)
    work = tmp_path_factory.mktemp(kind)
    path = mut.mutate_file(kind, rnd.choice(seeds[kind]), str(work), rnd)
    _feed(kind, path)


@pytest.mark.parametrize("kind", KINDS)
def test_valid_seeds_load(seeds, kind):
    for path in seeds[kind]:
        for reader in mut.READERS[kind]:
            reader(path)


@pytest.mark.parametrize("names,reader", [
    (("X_train", "y_train"), "data"), (("X", "y"), "stream"),
    (("params", "classes", "meta", "sha256", "__tinydl_format__"), "model")])
@pytest.mark.parametrize("shape", [(2 ** 40,), (2 ** 31, 2 ** 31), (10 ** 12, 8), (2 ** 62,)])
def test_huge_declared_shapes_are_refused_before_allocation(tmp_path, names, reader, shape):
    members = [(n + ".npy", mut.npy_bytes({"descr": "<f8", "fortran_order": False,
                                           "shape": shape}, b"\0" * 64)) for n in names]
    for compress in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        p = tmp_path / f"huge-{compress}.npz"
        p.write_bytes(mut.write_zip(members, compress))
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=r"declares shape|bytes"):
                {"data": mut._read_dataset, "stream": mut._read_stream,
                 "model": mut._read_model}[reader](str(p))
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 16 * 2 ** 20


@pytest.mark.parametrize("shape", [(2 ** 40, 4), (-1, 3), (2 ** 63 - 1,)])
def test_huge_npy_refused(tmp_path, shape):
    p = tmp_path / "x.npy"
    p.write_bytes(mut.npy_bytes({"descr": "<f4", "fortran_order": False, "shape": shape},
                                b"\0" * 32))
    for reader in (mut._read_dataset, mut._read_stream):
        with pytest.raises(ValueError):
            reader(str(p))


def test_zip_bomb_refused_by_limit(tmp_path, monkeypatch):
    import tinydl.io as tio
    p = tmp_path / "bomb.npz"
    p.write_bytes(mut.zip_bomb(["params", "classes"]))
    assert p.stat().st_size < 2 ** 20  # 512 MiB of zeros, deflated
    monkeypatch.setattr(tio, "MAX_ARRAY_BYTES", 64 * 2 ** 20)
    with pytest.raises(tio.ModelFileError, match="decompress to more than"):
        tio.load_npz(p, "model")


def test_object_arrays_refused(tmp_path):
    from tinydl.io import ModelFileError, load_npz
    p = tmp_path / "obj.npz"
    p.write_bytes(mut.write_zip([("__tinydl_format__.npy", mut._npy_of(np.array("model/1"))),
                                 ("W.npy", mut.npy_bytes({"descr": "|O", "fortran_order": False,
                                                         "shape": (2,)}, b"\x80\x04N."))]))
    with pytest.raises(ModelFileError, match="Python objects"):
        load_npz(p, "model")


def test_non_npy_member_refused(tmp_path):
    from tinydl.io import ModelFileError, load_npz
    p = tmp_path / "m.npz"
    p.write_bytes(mut.write_zip([("__tinydl_format__.npy", mut._npy_of(np.array("model/1"))),
                                 ("W", b"raw bytes")]))
    with pytest.raises(ModelFileError, match="not a .npy"):
        load_npz(p, "model")


@SETTINGS
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                       max_size=3),
                    max_leaves=12))
def test_parse_profile_type_confusion(value):
    import tomllib

    from hal.profile import ProfileError, parse_profile
    base = tomllib.loads(open(os.path.join(os.path.dirname(__file__), "..", "..", "platforms",
                                           "x86-64-host.toml")).read())
    rnd = random.Random(repr(value))
    doc = base
    keys = []
    node = doc
    while isinstance(node, dict) and node:
        k = rnd.choice(sorted(node))
        keys.append(k)
        if not isinstance(node[k], dict) or rnd.random() < 0.4:
            node[k] = value
            break
        node = node[k]
    try:
        parse_profile(doc, "fuzz.toml")
    except (ProfileError, ValueError, TypeError):
        pass


def test_deeply_nested_toml_is_a_profile_error(tmp_path):
    from hal.profile import ProfileError, load_profile
    p = tmp_path / "deep.toml"
    p.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ProfileError, match="nested too deeply|not valid TOML"):
        load_profile(p)
    p.write_text("x" * (2 << 20))
    with pytest.raises(ProfileError, match="above the limit"):
        load_profile(p)
