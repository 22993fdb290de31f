"""The code window: the bounded store of compact codes and labels the network retrains on.

The paper keeps the codes of the last ``n`` samples; here they are a ring buffer of compact
codes (``k`` indices and ``k`` values per sample, :class:`tinydl.codes.SparseCodes`): the
paper's ``l * n`` dense codes take ``l / (k * (1 + 4 / itemsize))`` times more.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ._validation import check_int
from .codes import SparseCodes
from .errors import ModelFileError

__all__ = ["CodeWindow"]


class CodeWindow:
    """A ring buffer of the last ``size`` samples' compact codes and labels.

    Parameters
    ----------
    size : int
        Samples kept (the paper's stored ``n``).
    k : int
        Non-zeros per code.
    n_atoms : int
        Atoms the codes index (the dictionary size ``l``).
    dtype : {"float32", "float64"}

    Attributes
    ----------
    indices : ndarray of shape (size, k), int32
    values : ndarray of shape (size, k)
    labels : ndarray of shape (size,), int64
    fill : int
        Valid entries.
    head : int
        Next slot to write.
    """

    def __init__(self, size: int, k: int, n_atoms: int, dtype="float32"):
        self.size = check_int(size, "window", low=1)
        self.k = check_int(k, "k", low=1)
        self.n_atoms = check_int(n_atoms, "n_atoms", low=1)
        self.indices = np.full((self.size, self.k), -1, np.int32)
        self.values = np.zeros((self.size, self.k), np.dtype(dtype))
        self.labels = np.zeros(self.size, np.int64)
        self.fill = 0
        self.head = 0

    def __len__(self) -> int:
        return self.fill

    def push(self, codes: SparseCodes, labels: np.ndarray) -> None:
        """Append samples, overwriting the oldest when full.

        Parameters
        ----------
        codes : SparseCodes of n samples, ``k`` non-zeros each
        labels : ndarray of shape (n,)
        """
        idx_all, val_all = codes.indices, codes.values
        for start in range(0, len(labels), self.size):
            ci = idx_all[start:start + self.size]
            cv = val_all[start:start + self.size]
            y = labels[start:start + self.size]
            n, h = len(y), self.head
            first = min(n, self.size - h)
            self.indices[h:h + first] = ci[:first]
            self.values[h:h + first] = cv[:first]
            self.labels[h:h + first] = y[:first]
            rest = n - first
            if rest:
                self.indices[:rest] = ci[first:]
                self.values[:rest] = cv[first:]
                self.labels[:rest] = y[first:]
            self.head = (self.head + n) % self.size
            self.fill = min(self.size, self.fill + n)

    def view(self) -> Tuple[SparseCodes, np.ndarray]:
        """The window's codes and labels in arrival order (oldest first).

        Returns
        -------
        codes : SparseCodes of ``fill`` samples
        labels : ndarray of shape (fill,)
        """
        n, h = self.fill, self.head
        sl = slice(0, n) if n < self.size else np.r_[h:self.size, 0:h]
        return SparseCodes(self.indices[sl], self.values[sl], self.n_atoms), self.labels[sl]

    # -- state (what a checkpoint stores) ----------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        """The arrays that restore this window exactly (see :meth:`from_state`)."""
        return {"codes_indices": self.indices, "codes_values": self.values,
                "labels_window": self.labels, "window_fill": np.int64(self.fill),
                "window_head": np.int64(self.head)}

    @classmethod
    def from_state(cls, arrays, size, k, n_atoms, dtype, where="file") -> "CodeWindow":
        """Rebuild a window from :meth:`state`'s arrays.

        Raises
        ------
        ModelFileError
            If an array has the wrong shape.
        """
        self = cls(size, k, n_atoms, dtype)
        for key, want in (("codes_indices", (size, k)), ("codes_values", (size, k)),
                          ("labels_window", (size,))):
            got = arrays[key].shape
            if got != want:
                raise ModelFileError(f"{where}: {key} has shape {got}, expected {want} "
                                     "(window, k)")
        self.indices, self.values = arrays["codes_indices"], arrays["codes_values"]
        self.labels = arrays["labels_window"]
        self.fill, self.head = int(arrays["window_fill"]), int(arrays["window_head"])
        if not (0 <= self.fill <= size and 0 <= self.head < size):
            raise ModelFileError(f"{where}: window fill {self.fill} / head {self.head} out of "
                                 f"range for a window of {size}")
        return self
