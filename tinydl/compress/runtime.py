"""The sparse inference runtime: run a compressed model one layer at a time from its file.

The file is the uncompressed ``.npz`` that :func:`~tinydl.compress.model.save_model` writes
(a zip whose members are stored, not deflated).  Opening it reads only the zip directory, the
meta and the ``.npy`` headers; each member's data is then a fixed byte range, which the runtime
memory-maps when its layer becomes active.

Memory held while running (what :meth:`SparseRuntime.predict_peak_bytes` adds up):

* two activation buffers, each the size of the largest layer output for the batch (layer i
  reads one and writes the other; activations run in place);
* the active layer's weights, copied from the map into RAM (``load_weights=True``, the
  default, as a device that reads flash into SRAM would; with ``False`` the layer computes
  straight from the map, as with execute-in-place flash, and the weights count nothing);
* that layer's temporaries (:meth:`CLayer.workspace_bytes`);
* the output copy handed back (made once the last layer's arrays are gone).

So the peak is about the largest layer, not the sum of all layers.  ``run(..., measure=True)``
measures the peak with :mod:`tracemalloc` (NumPy reports its allocations to it; mapped pages are
not allocations).
"""
from __future__ import annotations

import json
import math
import os
import struct
import tracemalloc
import zipfile
from typing import Dict, Optional, Tuple

import numpy as np

from ..io import FORMAT_KEY, ModelFileError, read_npy_header
from .files import model_from_arrays
from .model import FILE_KIND, CLayer, CompressedModel

__all__ = ["SparseRuntime", "npz_members", "predict_peak_bytes"]

#: bytes of Python bookkeeping (measured with tracemalloc on CPython 3.11, NumPy 2.4)
_BOOKKEEPING, _BOOKKEEPING_PER_ARRAY = 2048, 1024
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip local file header (30 bytes)


def npz_members(path) -> Dict[str, Tuple[int, tuple, np.dtype, bool]]:
    """Byte offset, shape, dtype and Fortran order of every array in an uncompressed ``.npz``.

    Raises
    ------
    ModelFileError
        If the file is not a zip, a member is compressed, or a header is damaged.
    """
    path = os.fspath(path)
    out = {}
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ModelFileError(f"{path}: member {info.filename} is compressed; the "
                                         "runtime maps stored (uncompressed) members only")
                fh.seek(info.header_offset)
                hdr = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
                if hdr[0] != b"PK\x03\x04":
                    raise ModelFileError(f"{path}: bad zip header for {info.filename}")
                fh.seek(info.header_offset + _LOCAL_HEADER.size + hdr[9] + hdr[10])
                shape, fortran, dtype, nbytes = read_npy_header(
                    fh, f"{path}: member {info.filename}")
                held = info.header_offset + info.compress_size + _LOCAL_HEADER.size + hdr[9] \
                    + hdr[10] - fh.tell()
                if nbytes > held or fh.tell() + nbytes > size:
                    raise ModelFileError(f"{path}: member {info.filename} declares shape "
                                         f"{shape} of {dtype} ({nbytes} bytes) but holds "
                                         f"{max(held, 0)} bytes of data")
                out[info.filename[:-4]] = (fh.tell(), tuple(shape), dtype, bool(fortran))
    except (zipfile.BadZipFile, OSError, ValueError, struct.error) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path} is not a readable uncompressed .npz "
                             f"({type(exc).__name__}: {exc})") from None
    return out


def predict_peak_bytes(layers, input_shape, batch: int, itemsize: int = 4,
                       load_weights: bool = True, layer_bytes=None) -> int:
    """Bytes the layer-at-a-time runtime holds at most for ``batch`` samples.

    ``2 * batch * largest activation`` (the two buffers) ``+ the larger of: the max over
    layers of (its weights, if loaded, + its temporaries), and the output copy`` (made after
    the last layer's arrays are freed).  ``layers`` must be built.
    """
    n = int(batch)
    sizes = layer_bytes if layer_bytes is not None else [la.nbytes for la in layers]
    # besides array data, mapping a layer costs Python objects (a memmap and an array header
    # per weight array, ~1 KiB each) and the loop a little more: small, but at batch 1 on a
    # small model it is a fifth of the total, so it is counted (int8 scales, a few hundred
    # bytes each, measured at no more than their data)
    per_layer = max((sizes[i] if load_weights else 0) + la.workspace_bytes(n, itemsize)
                    + _BOOKKEEPING_PER_ARRAY * sum(not k.endswith("_scale")
                                                   for k in la.arrays)
                    for i, la in enumerate(layers)) + _BOOKKEEPING
    act = max(int(np.prod(la.out_shape)) for la in layers)
    out = n * int(np.prod(layers[-1].out_shape)) * itemsize
    # the output copy is made after the last layer's weights and temporaries are gone
    return int(2 * n * act * itemsize + max(per_layer, out + _BOOKKEEPING))


class SparseRuntime:
    """Layer-at-a-time inference from a compressed-model file.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`~tinydl.compress.model.save_model`.
    load_weights : bool, default=True
        Copy the active layer's weights from the map into RAM (counted in the peak); False
        computes from the map directly.

    Attributes
    ----------
    layers : list of CLayer
        Geometry only (their ``arrays`` are zero-stride stand-ins; the data is mapped when a
        layer runs).
    input_shape, output_shape : tuple of int
    classes : ndarray
    last_peak_bytes : int or None
        Peak measured by the last ``run(..., measure=True)``.
    """

    def __init__(self, path, load_weights: bool = True):
        self.path = os.fspath(path)
        self.load_weights = bool(load_weights)
        self._members = npz_members(self.path)
        for key in (FORMAT_KEY, "meta", "classes"):
            if key not in self._members:
                raise ModelFileError(f"{self.path} lacks {key!r}: not a compressed model")
        tag = str(self._map(FORMAT_KEY))
        if tag.partition("/")[0] != FILE_KIND:
            raise ModelFileError(f"{self.path} holds a {tag!r}, expected a {FILE_KIND!r}")
        try:
            self.meta = json.loads(str(self._map("meta")))
        except ValueError as exc:
            raise ModelFileError(f"{self.path}: malformed meta ({exc})") from None
        # build the geometry with the mapped arrays (no data read), then forget them
        model = model_from_arrays(self.meta, self._map, np.array(self._map("classes")),
                                  self.path)
        self.layers = model.layers
        self._names = [sorted(la.arrays) for la in self.layers]
        self._nbytes = [la.nbytes for la in self.layers]
        self.input_shape, self.output_shape = model.input_shape, model.output_shape
        self.classes = model.classes
        self.dtype = model.dtype
        for la in self.layers:
            # keep shape-only stand-ins (zero strides: no memory) so FLOPs and workspaces can
            # be computed; the data is mapped again when the layer runs
            la.arrays = {k: np.broadcast_to(np.zeros((), v.dtype), v.shape)
                         for k, v in la.arrays.items()}
        self.last_peak_bytes: Optional[int] = None

    def _map(self, name):
        try:
            off, shape, dtype, fortran = self._members[name]
        except KeyError:
            raise ModelFileError(f"{self.path} lacks array {name!r}") from None
        if dtype.kind == "U" or math.prod(shape) == 0:  # strings and empties: just read
            with open(self.path, "rb") as fh:
                fh.seek(off)
                count = math.prod(shape)
                a = np.frombuffer(fh.read(count * dtype.itemsize), dtype, count)
            return a.reshape(shape, order="F" if fortran else "C")
        return np.memmap(self.path, dtype=dtype, mode="r", offset=off, shape=shape,
                         order="F" if fortran else "C")

    def _layer_arrays(self, i):
        arrays = {}
        for name in self._names[i]:
            mm = self._map(f"L{i}.{name}")
            arrays[name] = np.array(mm) if self.load_weights else mm
        return arrays

    # -- accounting -------------------------------------------------------------------------
    @property
    def model_bytes(self) -> int:
        """Bytes of every layer's arrays (the whole model)."""
        return int(sum(self._nbytes))

    def _act_elems(self):
        return max(int(np.prod(la.out_shape)) for la in self.layers)

    def predict_peak_bytes(self, batch: int) -> int:
        """Bytes this runtime will hold at most for a batch of ``batch`` samples.

        ``2 * batch * largest activation`` (the two buffers) ``+ max over layers of (its
        weights if loaded + its temporaries), or the output copy if larger``.
        """
        return predict_peak_bytes(self.layers, self.input_shape, batch, self.dtype.itemsize,
                                  self.load_weights, self._nbytes)

    # -- running -------------------------------------------------------------------------------
    def run(self, X, measure: bool = False):
        """Raw outputs (n_samples, n_outputs) for ``X`` (n_samples, *input_shape or features).

        With ``measure``, :attr:`last_peak_bytes` is set to the peak measured by tracemalloc
        (above what was allocated before the call, the input excluded).
        """
        X = np.asarray(X)
        n_feat = int(np.prod(self.input_shape))
        if X.ndim == 2 and X.shape[1] == n_feat:
            X = X.reshape((X.shape[0],) + self.input_shape)
        if X.shape[1:] != self.input_shape:
            raise ValueError(f"X has shape {X.shape}; the model takes samples of shape "
                             f"{self.input_shape} ({n_feat} features)")
        if X.dtype != self.dtype:
            X = X.astype(self.dtype)
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or Inf")
        started = False
        if measure:
            started = not tracemalloc.is_tracing()
            if started:
                tracemalloc.start()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        try:
            out = self._run(X)
            if measure:
                self.last_peak_bytes = int(tracemalloc.get_traced_memory()[1] - base)
        finally:
            if started:
                tracemalloc.stop()
        return out

    def _run(self, X):
        n = X.shape[0]
        size = n * self._act_elems()
        bufs = (np.empty(size, self.dtype), np.empty(size, self.dtype))
        x, which = X, 0
        for i, la in enumerate(self.layers):
            if la.kind == "flatten":
                x = x.reshape(n, -1)
                continue
            arrays = self._layer_arrays(i)
            out_elems = n * int(np.prod(la.out_shape))
            if la.kind in CLayer.ELEMENTWISE and x is not X:
                out = x  # in place on our own buffer
            else:
                out = bufs[which][:out_elems].reshape((n,) + la.out_shape)
                which = 1 - which
            x = la.forward(x, out, arrays)
            del arrays  # the layer's weights go before the next layer's come
        return np.array(x.reshape(n, -1), copy=True)

    def predict(self, X):
        """Labels (n_samples,)."""
        return self.classes[np.argmax(self.run(X), axis=1)]

    def to_model(self) -> CompressedModel:
        """The whole model in memory (every layer's weights read)."""
        layers = [CLayer(la.kind, {k: np.array(v) for k, v in self._layer_arrays(i).items()},
                         la.cfg) for i, la in enumerate(self.layers)]
        return CompressedModel(layers, self.input_shape, self.classes)
