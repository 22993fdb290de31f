"""The ``backend`` fixture: every registered backend that can run here (session-scoped, so the
multiprocessing pool and the OpenCL context start once), compared against NumPy.

The null backend is left out (its outputs are zeros by design; test_backends checks its
counts).  A backend that cannot run is a skip naming why - a failure where CI sets
``TINYDL_REQUIRE_<NAME>=1`` (see tests/conftest.py).
"""

import pytest

import hal

NUMERIC_BACKENDS = [name for name in hal.BACKENDS if name != "null"]

# options that make the tests exercise each backend's own path on small inputs
OPTIONS = {
    "multiprocessing": {"workers": 2, "min_rows": 1, "timeout": 60.0},
}


@pytest.fixture(scope="session", params=NUMERIC_BACKENDS)
def backend(request, require_backend):
    name = request.param
    require_backend(name)
    be = hal.get_backend(name, **OPTIONS.get(name, {}))
    yield be
    be.close()


@pytest.fixture(scope="session")
def reference():
    """The specification: NumPy, default block and batch."""
    return hal.get_backend("numpy")
