"""Shared test configuration.

* One BLAS thread: multi-threaded BLAS splits work by size, which changes rounding and so the
  bit-identity properties the streaming transform promises (see hal.backends.numpy).
* ``shared_data`` finds ``../shared/data`` (or ``$TINYDL_DATA``) and skips with a clear reason
  when it is absent.
* ``each_omp_backend`` runs a module once per OMP backend (``pytestmark =
  pytest.mark.usefixtures("each_omp_backend")``).
* ``require_backend(name)`` (a fixture returning :func:`backend_or_skip`): a backend that cannot
  run here is a skip naming why, or a failure where ``TINYDL_REQUIRE_<NAME>=1`` - CI sets it
  for the backends it installs (opencl, native, blas), so a missing library or compiler cannot
  pass as a skip there.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402

try:
    from hypothesis import settings  # noqa: E402

    settings.register_profile("ci", max_examples=60, deadline=None)
    settings.register_profile("dev", max_examples=30, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover
    pass

REPO = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The real datasets' folder, or None."""
    env = os.environ.get("TINYDL_DATA")
    for cand in ([pathlib.Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture
def shared_data():
    d = shared_data_dir()
    if d is None:
        pytest.skip("real datasets absent: neither $TINYDL_DATA nor ../shared/data exists")
    return d


def backend_or_skip(name: str) -> None:
    """Skip (or, with ``TINYDL_REQUIRE_<NAME>=1``, fail) unless backend ``name`` can run here."""
    import hal
    ok, why = hal.available_backends()[name]
    if not ok:
        flag = f"TINYDL_REQUIRE_{name.upper()}"
        if os.environ.get(flag) == "1":
            pytest.fail(f"{flag}=1 but backend {name!r} cannot run here: {why}")
        pytest.skip(f"backend {name!r} cannot run here: {why}")


@pytest.fixture(scope="session")
def require_backend():
    return backend_or_skip


@pytest.fixture(scope="module", params=["numpy", "native"])
def each_omp_backend(request):
    """The NumPy specification, then the native backend (C kernels) where they build.

    Sets ``TINYDL_BACKEND``, which ``hal.get_backend()`` reads, so code that picks its backend
    by default (``tinydl.omp``, the streaming transform) runs on each.  Module scope, so that
    hypothesis tests may use it.
    """
    if request.param != "numpy":
        backend_or_skip(request.param)
    old = os.environ.get("TINYDL_BACKEND")
    os.environ["TINYDL_BACKEND"] = request.param
    yield request.param
    if old is None:
        os.environ.pop("TINYDL_BACKEND", None)
    else:
        os.environ["TINYDL_BACKEND"] = old
