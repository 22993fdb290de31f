"""Device profiles: the shipped platforms load, round-trip through TOML, and broken files fail
with errors that name the file, the key and what was expected."""
from __future__ import annotations

import dataclasses
import os

import pytest

import hal
from hal.profile import (
    SIZE_CLASS_FLOPS,
    VECTOR_CLASS_ELEMS,
    BackendSpec,
    DeviceProfile,
    ProfileError,
    list_profiles,
    load_profile,
    parse_profile,
)
from hal.profile import _toml_module as toml_module

SHIPPED = ("jetson-tk1", "raspberry-pi-4", "cortex-m3", "x86-64-host")


@pytest.mark.parametrize("tag", SHIPPED)
def test_shipped_profiles_load_and_round_trip(tag, tmp_path):
    p = load_profile(tag)
    assert isinstance(p, DeviceProfile) and p.tag == tag
    assert isinstance(p.backend_preference, tuple) and p.backend_preference
    assert set(p.backend_preference) <= set(hal.BACKENDS)
    assert p.memory.capacity_bytes > 0 and p.memory.bandwidth_gbs > 0
    # the text it writes parses back to an equal profile, and save() writes that text
    again = parse_profile(toml_module().loads(p.to_toml()), "<round-trip>")
    assert again == p
    out = tmp_path / f"{tag}.toml"
    p.save(out)
    assert load_profile(str(out)) == p
    assert not [f for f in os.listdir(tmp_path) if f != out.name]  # no temp file left over


def test_platform_facts():
    tk1 = load_profile("jetson-tk1")
    assert tk1.memory.source == "published" and tk1.memory.bandwidth_gbs == 14.9
    assert tk1.memory.capacity_bytes == 2 * 2 ** 30
    assert tk1.power.source == "published" and tk1.power.max_w <= 11.0 + 1e-9
    assert "opencl" not in tk1.backend_preference  # NVIDIA shipped no OpenCL driver
    m3 = load_profile("cortex-m3")
    assert m3.training is False
    assert m3.memory.capacity_bytes <= 128 * 1024 and m3.memory.flash_bytes > 0


def test_profiles_are_frozen():
    p = load_profile("x86-64-host")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.tag = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.memory.bandwidth_gbs = 1.0


def test_list_and_search_order(tmp_path, monkeypatch):
    found = list_profiles()
    assert set(SHIPPED) <= set(found)
    # $TINYDL_PLATFORMS comes before the checkout's platforms/
    text = open(found["x86-64-host"]).read().replace('name = "Generic x86-64 host"',
                                                     'name = "overridden"')
    (tmp_path / "x86-64-host.toml").write_text(text)
    monkeypatch.setenv("TINYDL_PLATFORMS", str(tmp_path))
    assert load_profile("x86-64-host").name == "overridden"
    assert load_profile("jetson-tk1").tag == "jetson-tk1"  # still found further down


def test_unknown_tag_lists_available():
    with pytest.raises(ProfileError, match="available: .*jetson-tk1"):
        load_profile("no-such-board")
    assert issubclass(ProfileError, ValueError)


def _broken(tmp_path, old, new, name="broken.toml"):
    text = open(list_profiles()["jetson-tk1"]).read()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old,new,needle", [
    ("bandwidth_gbs = 14.9\n", "", r"missing key 'memory\.bandwidth_gbs'"),
    ("bandwidth_gbs = 14.9", 'bandwidth_gbs = "14.9 GB/s"',
     r"'memory\.bandwidth_gbs' must be a number"),
    ("bandwidth_gbs = 14.9", "bandwidth_mbs = 14900", r"unknown key 'memory\.bandwidth_mbs'"),
    ("idle_w = 2.5", "idle_w = -2.5", r"'power\.idle_w' must be a number >= 0"),
    ("bandwidth_gbs = 14.9", "bandwidth_gbs = 0", r"'memory\.bandwidth_gbs' must be a number > 0"),
    ("capacity_bytes = 2147483648", "capacity_bytes = 2.0",
     r"'memory\.capacity_bytes' must be an integer"),
    ('backend_preference = ["mpi",', 'backend_preference = ["cuda",', r"unknown backend 'cuda'"),
    ("[backends.blas]", "[backends.tpu]", r"\[backends\.tpu\] is not a known backend"),
    ('\nsource = "published"', '\nsource = "guessed"', r"one of published, measured, modeled"),
    ("training = true", 'training = "yes"', r"'training' must be true or false"),
    ("matmul = { small = 2.5,", "matmul = { tiny = 2.5,", r"not a size class"),
    ("matmul = { small = 2.5,", "matmul = { small = -2.5,", r"must be a number > 0"),
    ("schema_version = 1", "schema_version = 7", r"schema_version is 7"),
    ("[memory]", "[memory", r"not valid TOML"),
])
def test_broken_profiles_give_clear_errors(tmp_path, old, new, needle):
    path = _broken(tmp_path, old, new)
    with pytest.raises(ProfileError, match=needle) as info:
        load_profile(str(path))
    assert str(path) in str(info.value)  # the message names the file


def test_preference_without_figures_and_absent_file(tmp_path):
    path = _broken(tmp_path, '"multiprocessing", "blas", "numpy"]',
                   '"multiprocessing", "blas", "numpy", "opencl"]')
    with pytest.raises(ProfileError, match="'opencl', which has no"):
        load_profile(str(path))
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(str(tmp_path / "absent.toml"))


def test_throughput_interpolates_between_size_classes():
    rows = (("float32", "matmul", "small", 10.0), ("float32", "matmul", "medium", 40.0),
            ("float32", "matmul", "large", 80.0), ("float32", "vector", "small", 1.0))
    b = BackendSpec("numpy", 1e-6, rows)
    for sc, v in (("small", 10.0), ("medium", 40.0), ("large", 80.0)):
        assert b.throughput("matmul", "float32", SIZE_CLASS_FLOPS[sc]) == pytest.approx(v)
    mid = (SIZE_CLASS_FLOPS["small"] * SIZE_CLASS_FLOPS["medium"]) ** 0.5  # log midpoint
    assert b.throughput("matmul", "float32", mid) == pytest.approx(25.0)
    assert b.throughput("matmul", "float32", 1.0) == 10.0  # clamped below
    assert b.throughput("matmul", "float32", 1e15) == 80.0  # and above
    assert b.throughput("vector", "float32", VECTOR_CLASS_ELEMS["large"]) == 1.0
    # only float32 listed: float64 is priced at half of it
    assert b.throughput("matmul", "float64", SIZE_CLASS_FLOPS["large"]) == pytest.approx(40.0)
    with pytest.raises(ProfileError, match="no 'nope' throughput"):
        b.throughput("nope", "float32", 1.0)


def test_backend_lookup_names_what_is_listed():
    p = load_profile("cortex-m3")
    with pytest.raises(ProfileError, match="lists: numpy"):
        p.backend("opencl")
