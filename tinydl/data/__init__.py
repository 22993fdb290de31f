"""Data: one reader per format, whole-file loading, chunked streaming, the paper's data sets.

* :mod:`tinydl.data.files` -- the ``.npz`` / ``.npy`` / CSV readers and their checks;
* :mod:`tinydl.data.stream` -- :func:`open_stream`: a file read in chunks (``tinydl fit``);
* :mod:`tinydl.data.datasets` -- :func:`load_dataset`, the DSA / UJIIndoorLoc / ISOLET loaders,
  :func:`load_real` and :func:`split_dataset`.

Every error is a :class:`~tinydl.errors.DataError` (a ``ValueError``).
"""
from ..errors import DataError
from .datasets import (
    DSA_SEGMENT_SHAPE,
    ISOLET_N_FEATURES,
    UJI_N_WAPS,
    guess_application,
    load_dsa_folder,
    load_isolet,
    load_real,
    load_ujiindoorloc,
    split_dataset,
    uji_rssi_to_features,
)
from .files import BUNDLED, MAX_DATA_BYTES, Dataset, bundled_path, load_dataset
from .stream import Stream, label_runs, open_stream

__all__ = ["Dataset", "DataError", "load_dataset", "bundled_path", "BUNDLED", "MAX_DATA_BYTES",
           "load_dsa_folder", "load_ujiindoorloc", "load_isolet", "load_real", "split_dataset",
           "guess_application", "uji_rssi_to_features", "DSA_SEGMENT_SHAPE", "UJI_N_WAPS",
           "ISOLET_N_FEATURES", "Stream", "open_stream", "label_runs"]
