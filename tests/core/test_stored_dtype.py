"""The storage arithmetic of narrower dictionaries (``hal.backends.numpy.stored``): float16
decoding by the bits against NumPy's conversion for every half, the int8 clip rule against a
literal transcription (and never worse than max-abs), a joined atom's own Wp, and
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
    # the tiles' call (finite vouched for: no check, no fallback), the same bits
    out[...] = np.nan
    decode(fin, None, np.float32, out=out, finite=True)
    np.testing.assert_array_equal(out.view(np.uint32), fin.astype(np.float32).view(np.uint32))


def _reference_int8(a):
    """A literal transcription of the stored int8 rule, row by row: for each clip factor
    f = 1 - j/64 (j = 0..32), s = float32(f max|a| / 127), q = clip(rint(a / s), -127, 127),
    the error sum((a - s q)^2) in float64; the least error wins, the largest f on a tie."""
    Q, S = [], []
    for row in a:
        amax = float(np.max(np.abs(row))) if row.size else 0.0
        best = None
        for j in range(33):
            f = 1 - j / 64
            s = np.float32(f * amax / 127) if f * amax > 0 else np.float32(1)
            q = np.clip(np.rint(row / s), -127, 127)
            e = float(np.sum((row.astype(np.float64) - q * np.float64(s)) ** 2))
            if best is None or e < best[0]:
                best = (e, q, s)
        Q.append(best[1])
        S.append(best[2])
    return np.array(Q, np.int8).reshape(a.shape), np.array(S, np.float32)


@settings(max_examples=40, deadline=None)
@given(a=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                    elements=st.floats(-1e3, 1e3, width=32)),
       spike=st.floats(1, 200))
def test_quantize_int8_is_the_clip_rule(a, spike):
    h, none = quantize(a, "float16")
    assert none is None
    np.testing.assert_array_equal(decode(h, None, np.float32), a.astype(np.float16)
                                  .astype(np.float32))
    a = a.copy()
    if a.size:
        a[:, 0] *= np.float32(spike)  # an outlier column: clipping pays on some rows
    q, sc = quantize(a, "int8")
    assert q.dtype == np.int8 and sc.dtype == np.float32 and np.all(np.abs(q) <= 127)
    amax = np.abs(a).max(axis=1).astype(np.float64) if a.size else np.zeros(len(a))
    normal = amax / 254 >= np.finfo(np.float32).tiny  # else the scale is rounded up
    rq, rs = _reference_int8(a)
    np.testing.assert_array_equal(q[normal], rq[normal])
    np.testing.assert_array_equal(sc[normal], rs[normal])
    # never more reconstruction error than max-abs (f = 1), whose error is at most half a
    # step per value
    back = q * sc[:, None].astype(np.float64)
    q1 = np.clip(np.rint(a / np.where(amax > 0, amax / 127, 1).astype(np.float32)[:, None]),
                 -127, 127)
    s1 = np.where(amax > 0, amax / 127, 1).astype(np.float32).astype(np.float64)
    e1 = np.square(a - q1 * s1[:, None]).sum(axis=1)
    e = np.square(a - back).sum(axis=1)
    assert np.all(e[normal] <= e1[normal] * (1 + 1e-6) + 1e-30)
    # tiny rows: a scale whose 127 steps cover the clip level, never 0 or subnormal-short
    tiny = ~normal & (amax > 0)
    assert np.all(sc[tiny] > 0) and np.all(sc[tiny] * 127.0 >= amax[tiny] / 2)


def test_int8_join_holds_about_ten_bytes_a_feature():
    """An atom joining an int8 dictionary is quantized by a search over 33 clip factors: its
    transient is one float64 row (the error) and two int8 rows, not a float64 copy of the
    atom, three float temporaries and NumPy's casting buffer (measured before: 26.5 B a
    feature at m = 5625, 149 KB in a 1 MiB plan; now 10.9)."""
    import tracemalloc
    a = np.random.default_rng(0).standard_normal((1, 5625)).astype(np.float32)
    quantize(a, "int8")
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        quantize(a, "int8")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak <= 10 * a.size + 8192, peak


def test_int8_rows_of_unsigned_and_bool_input():
    """max |a| without an |a| temporary is for floats: unsigned integers (whose -min wraps)
    and bools (no negative) take |a| itself, and quantize like the same values signed."""
    from hal.quantize import int8_rows
    a = np.random.default_rng(0).integers(0, 200, (4, 50))
    a[1] = 0
    for dt in (np.uint8, np.uint16):
        q, s = int8_rows(a.astype(dt))
        q16, s16 = int8_rows(a.astype(np.int16))
        np.testing.assert_array_equal(q, q16)
        np.testing.assert_array_equal(s, s16)
        assert s[0] == np.float32(a[0].max() / 127.0) and s[1] == 1
    q, s = int8_rows(a > 100)
    np.testing.assert_array_equal(q, np.where(a > 100, 127, 0))


def test_quantize_int8_clips_a_long_row_and_not_a_short_one():
    """Clipping the largest value at f < 1 costs its own error and refines the step of all
    the others: worth it on a long row (m = 6000, the Daily and Sports atoms' scale: a
    Gaussian row's best factor is near 31/32), not on a short one (m = 60) - the reference's
    choice either way, with less error than max-abs where it clips."""
    rng = np.random.default_rng(0)
    for m, clips in ((6000, True), (60, False)):
        a = rng.standard_normal((3, m)).astype(np.float32)
        q, sc = quantize(a, "int8")
        rq, rs = _reference_int8(a)
        np.testing.assert_array_equal(q, rq)
        np.testing.assert_array_equal(sc, rs)
        f = sc.astype(np.float64) * 127 / np.abs(a).max(axis=1)
        assert np.all(f < 0.999) if clips else np.all(np.abs(f - 1) < 1e-6)
        e = np.square(a - q * sc[:, None].astype(np.float64)).sum(axis=1)
        q1, s1 = _maxabs(a)
        e1 = np.square(a - q1 * s1[:, None].astype(np.float64)).sum(axis=1)
        assert np.all(e < e1) if clips else np.array_equal(q, q1)


def _maxabs(a):
    s = (np.abs(a).max(axis=1).astype(np.float64) / 127).astype(np.float32)
    return np.clip(np.rint(a / s[:, None]), -127, 127).astype(np.int8), s


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_joined_atom_wp_within_its_quantization_error(backend, require_backend):
    """A sample joins as the first atom (its unit row quantized by the rule); its own Wp
    (``projection_error``, relative) against the stored dictionary is at most
    ``|u - decode(q)|`` (``u = x / |x|``: the stored atom is in the span), and a sample of
    another direction keeps its own relative residual."""
    if backend == "native":
        require_backend("native")
    from tinydl.transform import StreamingDictionary
    rng = np.random.default_rng(4)
    X = rng.standard_normal((2, 6000)).astype(np.float32)  # a long row: f < 1 (clipped)
    sd = StreamingDictionary(l=4, k=1, dictionary_dtype="int8", backend=backend).fit(X[:1])
    assert sd.n_atoms_ == 1
    u = X[:1] / np.linalg.norm(X[0])
    q, sc = quantize(u, "int8")
    # (the join divides by its own |x|, maybe an ulp off this one)
    np.testing.assert_array_equal(sd._D[0], q[0])
    np.testing.assert_allclose(sd._D_scale[0], sc[0], rtol=1e-6)
    assert sc[0] * 127 < 0.999 * np.abs(u).max()  # clipped
    stored = decode(sd._D[:1], sd._D_scale[:1], np.float32)[0].astype(np.float64)
    bound = np.linalg.norm(u[0] - stored)
    wp = sd.projection_error(X)
    assert 0 < wp[0] <= bound * (1 + 1e-3) + 1e-6
    v = X[1] / np.linalg.norm(X[1])
    d = stored / np.linalg.norm(stored)
    np.testing.assert_allclose(wp[1], np.linalg.norm(v - (v @ d) * d), rtol=1e-3)


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
    for kind, storage in ((1, "float16"), (2, "int8")):
        q, sc = quantize(D, storage)
        Dd = decode(q, sc, np.float32)
        # the correlations read the atoms transposed, padded to whole vectors (stored.c)
        qt = np.zeros((m, int(lib.correlate_width_f32(l))), q.dtype)
        qt[:, :l] = q.T
        C = np.empty((9, l), np.float32)
        acc = np.empty(int(lib.stored_scratch(l, m, 9)), np.float32)
        scp = ffi.NULL if sc is None else fb("float[]", sc)
        lib.stored_correlate(9, l, m, fb("float[]", X), m, fb("char[]", qt), qt.shape[1], kind,
                             scp, fb("float[]", C), l, fb("float[]", acc), 9)
        ref = X.astype(np.float64) @ Dd.T.astype(np.float64)
        bound = np.abs(X).astype(np.float64) @ np.abs(Dd).T.astype(np.float64)
        assert np.all(np.abs(C - ref) <= 1e-5 * bound)
        one = np.empty((1, l), np.float32)
        lib.stored_correlate(1, l, m, fb("float[]", X[4:5]), m, fb("char[]", qt), qt.shape[1],
                             kind, scp, fb("float[]", one), l, fb("float[]", acc), 1)
        np.testing.assert_array_equal(one[0], C[4])
        W = rng.standard_normal((3, l)).astype(np.float32)
        R = X[:3].copy()
        lib.stored_combine(3, l, m, fb("float[]", W), l, fb("char[]", q), kind, scp,
                           fb("float[]", R), m)
        want = X[:3].astype(np.float64) - W.astype(np.float64) @ Dd.astype(np.float64)
        assert np.all(np.abs(R - want) <= 1e-5 * (np.abs(X[:3]) + np.abs(W) @ np.abs(Dd)))
