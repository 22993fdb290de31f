"""The storage arithmetic of narrower dictionaries (``hal.backends.numpy.stored``): float16
decoding by the bits against NumPy's conversion for every half, the int8 rounding bound, and
the portable (no F16C, no AVX2) build of the native stored kernels against float64."""
import os
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hal.backends.numpy.stored import decode, quantize


def test_float16_decode_is_numpys_conversion_for_every_half():
    u = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    q = u.view(np.float16)
    ref = q.astype(np.float32)
    got = decode(q, None, np.float32)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])
    # finite halves only (the stored atoms' case: no fallback taken), into a given buffer
    fin = u[(u & 0x7C00) != 0x7C00].reshape(62, 1024).view(np.float16)
    out = np.full(fin.shape, np.nan, np.float32)
    decode(fin, None, np.float32, out=out)
    np.testing.assert_array_equal(out.view(np.uint32), fin.astype(np.float32).view(np.uint32))


@settings(max_examples=40, deadline=None)
@given(a=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                    elements=st.floats(-1e3, 1e3, width=32)))
def test_quantize_roundtrip_bounds(a):
    q, sc = quantize(a, "int8")
    assert q.dtype == np.int8 and sc.dtype == np.float32 and np.all(np.abs(q) <= 127)
    back = decode(q, sc, np.float32)
    # the rounding error of a value is at most half a step (plus float32 rounding)
    assert np.all(np.abs(back - a) <= sc[:, None] / 2 * (1 + 1e-5) + 1e-6 * np.abs(a))
    amax = np.abs(a).max(axis=1).astype(np.float64) if a.size else np.zeros(len(a))
    normal = amax / 127 >= np.finfo(np.float32).tiny  # else rounded up to cover amax
    np.testing.assert_allclose(sc[normal], (amax / 127)[normal], rtol=1e-6)
    assert np.all(sc[~normal & (amax > 0)] * 127.0 >= amax[~normal & (amax > 0)])
    h, none = quantize(a, "float16")
    assert none is None
    np.testing.assert_array_equal(decode(h, None, np.float32), a.astype(np.float16)
                                  .astype(np.float32))


def test_quantize_refuses_other_storage():
    with pytest.raises(ValueError, match="storage must be one of"):
        quantize(np.ones((2, 3), np.float32), "int4")


def test_portable_build_of_the_stored_kernels(tmp_path, require_backend):
    """The scalar fallbacks (binary16 by bits, int8 by casts, no FMA) that a target without
    F16C / AVX2 compiles: the same products within the native tolerance."""
    require_backend("native")
    import cffi

    from hal.backends.native import build
    cc = build._compiler()
    lib_path = str(tmp_path / "portable.so")
    cmd = cc.split() + ["-O2", "-fPIC", "-shared", "-I", build.HERE, "-o", lib_path,
                        os.path.join(build.HERE, "kernels.c"), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-400:]
    ffi = cffi.FFI()
    ffi.cdef(build.cdef())
    lib = ffi.dlopen(lib_path)
    rng = np.random.default_rng(4)
    l, m = 11, 203
    D = rng.standard_normal((l, m)).astype(np.float32)
    D[0, :50] = 1e-6  # float16 subnormals
    D[1, :7] = 0.0
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((9, m)).astype(np.float32)
    fb = ffi.from_buffer
    for kind, storage in enumerate(("float16", "int8")):
        q, sc = quantize(D, storage)
        Dd = decode(q, sc, np.float32)
        C = np.empty((9, l), np.float32)
        acc = np.empty(int(lib.stored_scratch(l, m, 9)), np.float32)
        scp = ffi.NULL if sc is None else fb("float[]", sc)
        lib.stored_correlate(9, l, m, fb("float[]", X), m, fb("char[]", q), kind, scp,
                             fb("float[]", C), l, fb("float[]", acc), 9)
        ref = X.astype(np.float64) @ Dd.T.astype(np.float64)
        bound = np.abs(X).astype(np.float64) @ np.abs(Dd).T.astype(np.float64)
        assert np.all(np.abs(C - ref) <= 1e-5 * bound)
        one = np.empty((1, l), np.float32)
        lib.stored_correlate(1, l, m, fb("float[]", X[4:5]), m, fb("char[]", q), kind, scp,
                             fb("float[]", one), l, fb("float[]", acc), 1)
        np.testing.assert_array_equal(one[0], C[4])
        W = rng.standard_normal((3, l)).astype(np.float32)
        R = X[:3].copy()
        lib.stored_combine(3, l, m, fb("float[]", W), l, fb("char[]", q), kind, scp,
                           fb("float[]", R), m)
        want = X[:3].astype(np.float64) - W.astype(np.float64) @ Dd.astype(np.float64)
        assert np.all(np.abs(R - want) <= 1e-5 * (np.abs(X[:3]) + np.abs(W) @ np.abs(Dd)))
