"""The ``backend`` fixture: every registered backend that can run here (session-scoped, so the
multiprocessing pool and the OpenCL context start once), compared against NumPy.

The null backend is left out (its outputs are zeros by design; test_backends checks its
counts).  A backend that cannot run is a skip naming why - except OpenCL when
``TINYDL_REQUIRE_OPENCL=1`` (CI installs PoCL): then it is a failure.
"""
import os

import pytest

import hal

NUMERIC_BACKENDS = [name for name in hal.BACKENDS if name != "null"]

# options that make the tests exercise each backend's own path on small inputs
OPTIONS = {
    "multiprocessing": {"workers": 2, "min_rows": 1, "timeout": 60.0},
}


@pytest.fixture(scope="session", params=NUMERIC_BACKENDS)
def backend(request):
    name = request.param
    ok, why = hal.available_backends()[name]
    if not ok:
        if name == "opencl" and os.environ.get("TINYDL_REQUIRE_OPENCL") == "1":
            pytest.fail(f"TINYDL_REQUIRE_OPENCL=1 but the opencl backend cannot run: {why}")
        pytest.skip(f"backend {name!r} cannot run here: {why}")
    be = hal.get_backend(name, **OPTIONS.get(name, {}))
    yield be
    be.close()


@pytest.fixture(scope="session")
def reference():
    """The specification: NumPy, default block and batch."""
    return hal.get_backend("numpy")
