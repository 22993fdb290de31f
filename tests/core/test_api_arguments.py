"""The customizer's and the profile loader's arguments: what cannot be planned or parsed is
refused up front with its name and value (before: an empty min(), the wrong parameter named,
a bare TypeError or UnicodeDecodeError, a late error naming neither file nor key)."""
from __future__ import annotations

import pytest

from hal.profile import ProfileError, load_profile, parse_profile
from tinydl.customize import plan


@pytest.mark.parametrize("kw,match", [
    (dict(l_choices=[1]), r"l_choices \[1\] leaves nothing to plan: values must be >= 2"),
    (dict(k_choices=[0]), r"k_choices \[0\] leaves nothing to plan"),
    (dict(k_choices=[-1]), r"k_choices \[-1\]"),
    (dict(window_choices=[0]), r"window_choices must be whole numbers >= 1, got \[0\]"),
    (dict(chunk=0), "chunk"),
    (dict(tune_fraction=float("nan")), "tune_fraction must lie in"),
    (dict(tune_fraction=5.0), "tune_fraction must lie in"),
    (dict(memory_bytes=0.5), "memory_bytes must be at least 1 byte"),
])
def test_plan_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        plan(20, 3, **kw)


def test_plan_row_labels_must_match_the_rows():
    import numpy as np
    rows = np.random.default_rng(0).random((100, 20)).astype(np.float32)
    with pytest.raises(ValueError, match=r"one label per row of alpha_rows \(100\), got shape "
                                         r"\(40,\)"):
        plan(20, 3, alpha_rows=rows, row_labels=np.zeros(40, int))
    with pytest.raises(ValueError, match="none given"):
        plan(20, 3, row_labels=np.zeros(40, int))


def test_plan_target_error_must_be_a_number():
    with pytest.raises(ValueError, match="target_error must be a number in"):
        plan(20, 3, target_error="0.5")


def _profile_text():
    import os

    import hal
    path = os.path.join(os.path.dirname(os.path.dirname(hal.__file__)), "platforms",
                        "raspberry-pi-4.toml")
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_a_profile_that_is_not_utf8_names_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_bytes(_profile_text().encode() + b'\nnote2 = "\xff\xfe"\n')
    with pytest.raises(ProfileError, match=r"bad.toml is not valid TOML: not UTF-8 at byte"):
        load_profile(str(p))


@pytest.mark.parametrize("data", [[1, 2], None, "tag"])
def test_a_profile_that_is_not_a_table(data):
    with pytest.raises(ProfileError, match="a profile is a table of keys"):
        parse_profile(data, "x.toml")


def test_a_backend_without_vector_figures_is_refused_when_parsed(tmp_path):
    import re
    text = _profile_text()
    # drop every vector figure of every backend
    cut = re.sub(r"(?m)^\[backends\.[a-z]+\.gflops\.[a-z0-9]+\.vector\][^\[]*", "", text)
    cut = re.sub(r"(?m)^vector\s*=.*$", "", cut)
    assert cut != text
    p = tmp_path / "novector.toml"
    p.write_text(cut)
    with pytest.raises(ProfileError, match=r"novector.toml: \[backends\.\w+\.gflops\] lists "
                                           r"no 'vector' throughput"):
        load_profile(str(p))


def test_a_training_profile_may_not_prefer_the_null_backend(tmp_path):
    import re
    text = re.sub(r"(?m)^backend_preference\s*=\s*\[", 'backend_preference = ["null", ',
                  _profile_text(), count=1)
    p = tmp_path / "nullpref.toml"
    p.write_text(text)
    with pytest.raises(ProfileError, match="backend_preference names 'null', which computes "
                                           "zeros"):
        load_profile(str(p))
