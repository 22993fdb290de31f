"""Compressed-model files: :func:`save_model`, :func:`load_model`, and :func:`load_any_model`
(a compressed model, a tinydl classifier or an ONNX file).

Here, not in :mod:`.model`, so that :mod:`.model` and :mod:`.onnx_io` do not import each
other: both are imported by this module only.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..errors import ModelFileError
from ..io import array_digest, load_npz, save_npz, verify_digest
from .model import FILE_KIND, CLayer, CompressedModel, from_network

__all__ = ["save_model", "load_model", "load_any_model", "model_meta", "model_from_arrays"]


def model_meta(model: CompressedModel) -> dict:
    """The JSON part of a model file: input shape and each layer's kind, cfg and array names."""
    return {"input_shape": list(model.input_shape),
            "layers": [{"kind": la.kind, "cfg": la.cfg, "arrays": sorted(la.arrays)}
                       for la in model.layers]}


def save_model(model: CompressedModel, path) -> None:
    """Write ``model`` to ``path`` (uncompressed ``.npz``, atomic; members can be mmapped)."""
    arrays = {f"L{i}.{name}": np.ascontiguousarray(a) for i, la in enumerate(model.layers)
              for name, a in la.arrays.items()}
    classes = model.classes if model.classes.dtype.kind != "O" else model.classes.astype(str)
    arrays["classes"] = classes
    arrays["meta"] = np.array(json.dumps(model_meta(model)))
    arrays["sha256"] = np.array(array_digest(arrays))
    save_npz(path, arrays, kind=FILE_KIND)


def model_from_arrays(meta: dict, get, classes, path="file") -> CompressedModel:
    """A :class:`CompressedModel` from :func:`model_meta`'s dict and an array getter ``get(name)``.

    Raises
    ------
    ModelFileError
        If the description does not match the arrays.
    """
    try:
        layers = [CLayer(d["kind"], {name: get(f"L{i}.{name}") for name in d["arrays"]},
                         d["cfg"]) for i, d in enumerate(meta["layers"])]
        return CompressedModel(layers, meta["input_shape"], classes)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ModelFileError(f"{path}: malformed compressed model ({exc})") from None


def load_model(path) -> CompressedModel:
    """Read a file written by :func:`save_model` (checksum verified)."""
    data = load_npz(path, FILE_KIND, required=("meta", "classes", "sha256"))
    verify_digest(data, path)
    try:
        meta = json.loads(str(data["meta"]))
    except ValueError as exc:
        raise ModelFileError(f"{path}: malformed meta ({exc})") from None
    model = model_from_arrays(meta, lambda k: data[k], data["classes"], path)
    try:  # a checksum proves the file is as written, not that what was written is usable
        model.check_finite()
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    return model


def load_any_model(path) -> CompressedModel:
    """A compressed model, a tinydl classifier (``.npz``) or an ONNX file, as layers."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".onnx":
        from .onnx_io import import_onnx
        return import_onnx(path)
    try:
        return load_model(path)
    except ModelFileError as exc:
        if "expected a" not in str(exc):
            raise
    from ..nn.classifier import NetworkClassifier
    return from_network(NetworkClassifier.load(path))  # the file names its class
