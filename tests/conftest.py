"""Shared test configuration.

* One BLAS thread: multi-threaded BLAS splits work by size, which changes rounding and so the
  bit-identity properties the streaming transform promises (see hal.backends.numpy).
* ``shared_data`` finds ``../shared/data`` (or ``$TINYDL_DATA``) and skips with a clear reason
  when it is absent.
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
