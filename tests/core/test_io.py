"""Safe persistence (tinydl.io): atomic writes, no pickle, damage becomes ModelFileError."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import tinydl.io as tio
from tinydl.io import (
    FORMAT_KEY,
    ModelFileError,
    atomic_write_bytes,
    atomic_write_text,
    load_npz,
    save_npz,
)


def _arrays():
    rng = np.random.default_rng(0)
    return {"W": rng.standard_normal((5, 3)).astype(np.float32),
            "idx": np.arange(7, dtype=np.int32), "name": np.array("layer"),
            "alpha": np.array(0.25)}


def test_round_trip_keeps_values_and_dtypes(tmp_path):
    path = tmp_path / "m.npz"
    save_npz(path, _arrays(), "model", version=2)
    data = load_npz(path, "model", required=("W", "idx"), max_version=2)
    assert FORMAT_KEY not in data and data.keys() == _arrays().keys()
    for key, value in _arrays().items():
        assert data[key].dtype == value.dtype and np.array_equal(data[key], value)
    assert tio.scalar(data, "alpha") == 0.25
    with pytest.raises(ModelFileError, match="should be a scalar"):
        tio.scalar(data, "W")


def test_no_temporary_file_left_behind(tmp_path):
    save_npz(tmp_path / "m.npz", _arrays(), "model")
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failed_write_leaves_old_file(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "m.npz"
    save_npz(path, {"v": np.arange(3)}, "model")
    old = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tio.os, fail_at, boom)
    with pytest.raises(OSError, match="No space left"):
        save_npz(path, {"v": np.arange(1000)}, "model")
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # the temporary file was removed
    assert np.array_equal(load_npz(path, "model")["v"], np.arange(3))


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "r.json"  # missing directories are created
    atomic_write_text(path, "first, and longer\n")
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_object_arrays_refused(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        save_npz(tmp_path / "o.npz", {"o": np.array([{"a": 1}], dtype=object)}, "model")
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("cut", [0, 10, 100, -30, -1])
def test_truncated_file(tmp_path, cut):
    path = tmp_path / "m.npz"
    save_npz(path, _arrays(), "model")
    raw = path.read_bytes()
    path.write_bytes(raw[:cut] if cut > 0 else raw[:len(raw) + cut] if cut else b"")
    with pytest.raises(ModelFileError, match="m.npz"):
        load_npz(path, "model", required=("W",))


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "m.npz"
    save_npz(path, _arrays(), "model")
    raw = bytearray(path.read_bytes())
    start = raw.find(b"\x93NUMPY")  # damage the first array's header inside the zip
    raw[start:start + 20] = b"\xff" * 20
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="not a readable .npz"):
        load_npz(path, "model")
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ModelFileError, match="not a readable .npz"):
        load_npz(path, "model")


def test_pickled_content_refused(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, **{FORMAT_KEY: np.array("model/1"),
                      "o": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ModelFileError):
        load_npz(path, "model")


def test_wrong_kind_version_tag_and_missing_keys(tmp_path):
    path = tmp_path / "m.npz"
    save_npz(path, _arrays(), "transform")
    with pytest.raises(ModelFileError, match="holds a 'transform', expected a 'model'"):
        load_npz(path, "model")
    with pytest.raises(ModelFileError, match="lacks required array.*missing"):
        load_npz(path, "transform", required=("W", "missing"))
    save_npz(path, _arrays(), "transform", version=3)
    with pytest.raises(ModelFileError, match="version 3; this tinydl reads up to 1"):
        load_npz(path, "transform")
    np.savez(path, W=np.ones(2))  # a plain .npz: no tag
    with pytest.raises(ModelFileError, match="not a tinydl file"):
        load_npz(path, "model")
    np.savez(path, **{FORMAT_KEY: np.array("model/x")})
    with pytest.raises(ModelFileError, match="malformed version"):
        load_npz(path, "model")


def test_missing_and_oversized_files(tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match="cannot read"):
        load_npz(tmp_path / "absent.npz", "model")
    path = tmp_path / "m.npz"
    save_npz(path, _arrays(), "model")
    monkeypatch.setattr(tio, "MAX_FILE_BYTES", 100)
    with pytest.raises(ModelFileError, match="above the limit of 100"):
        load_npz(path, "model")


def test_model_file_error_is_value_error(tmp_path):
    assert issubclass(ModelFileError, ValueError)
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as zf:
        zf.writestr("W.npy", b"garbage")
    with pytest.raises(ValueError):
        load_npz(tmp_path / "z.npz", "model")
