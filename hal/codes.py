"""Compact sparse codes: the one type every layer of tinydl passes codes in.

OMP gives each sample at most ``k`` non-zeros over ``l`` atoms.  Stored densely that is
``n * l`` values; stored compactly it is ``k`` indices and ``k`` values per sample, which is what
the backends return, what the code window keeps and what the network's first layer multiplies
(the k-sparse product).  This module lives in ``hal`` (the ground floor) because the backends
produce codes; ``tinydl.codes`` re-exports it.

Samples are rows (the paper's ``C.T``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["SparseCodes", "codes_to_dense"]


class SparseCodes:
    """Compact codes: ``k`` atom indices and ``k`` coefficients per sample.

    Parameters
    ----------
    indices : ndarray of shape (n_samples, k), integer
        Atom indices in the order OMP chose them; ``-1`` pads unused slots.
    values : ndarray of shape (n_samples, k)
        Coefficients (0 in padded slots).
    n_atoms : int
        Number of atoms ``l`` the indices refer to (the dense width).
    n_nonzero : ndarray of shape (n_samples,), int32, optional
        Atoms each sample used (OMP's output; None when not known).
    residual_sq : ndarray of shape (n_samples,), optional
        Squared residual ``||x - codes @ D||^2`` of each sample (OMP's output; None when not
        known).

    Notes
    -----
    Iterating yields ``(indices, values, n_atoms)`` so that ``idx, val, l = codes`` works.
    """

    __slots__ = ("indices", "values", "n_atoms", "n_nonzero", "residual_sq", "_padded")

    def __init__(self, indices, values, n_atoms: int, n_nonzero: Optional[np.ndarray] = None,
                 residual_sq: Optional[np.ndarray] = None):
        if indices.shape != values.shape or indices.ndim != 2:
            raise ValueError(f"indices {indices.shape} and values {values.shape} must be two "
                             "arrays of the same shape (n_samples, k)")
        self.indices = indices
        self.values = values
        self.n_atoms = int(n_atoms)
        self.n_nonzero = n_nonzero
        self.residual_sq = residual_sq
        self._padded = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __iter__(self):
        return iter((self.indices, self.values, self.n_atoms))

    def __repr__(self) -> str:
        n, k = self.indices.shape
        return (f"SparseCodes(n_samples={n}, k={k}, n_atoms={self.n_atoms}, "
                f"dtype={self.values.dtype})")

    @property
    def k(self) -> int:
        """Slots per sample."""
        return int(self.indices.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of the indices and values (what the compact form costs)."""
        return int(self.indices.nbytes + self.values.nbytes)

    def rows(self, start: int, stop: int) -> "SparseCodes":
        """Rows ``start:stop`` as views (no copy); the padded indices come along if built."""
        out = SparseCodes(self.indices[start:stop], self.values[start:stop], self.n_atoms,
                          None if self.n_nonzero is None else self.n_nonzero[start:stop],
                          None if self.residual_sq is None else self.residual_sq[start:stop])
        if self._padded is not None:
            out._padded = self._padded[start:stop]
        return out

    def padded_indices(self) -> np.ndarray:
        """``indices`` with the ``-1`` padding redirected to column ``n_atoms`` (a dummy column
        one past the last atom), so that codes scatter or gather without masks.  Built once
        and cached."""
        if self._padded is None:
            p = self.indices.astype(np.intp, copy=True)
            p[p < 0] = self.n_atoms
            self._padded = p
        return self._padded

    def scaled(self, factor) -> "SparseCodes":
        """The same codes with values multiplied by ``factor`` (a new values array)."""
        return SparseCodes(self.indices, self.values * factor, self.n_atoms, self.n_nonzero,
                           self.residual_sq)

    def to_dense(self) -> np.ndarray:
        """Dense codes of shape (n_samples, n_atoms)."""
        return codes_to_dense(self.indices, self.values, self.n_atoms)


def codes_to_dense(indices: np.ndarray, values: np.ndarray, n_atoms: int,
                   valid: bool = False) -> np.ndarray:
    """Scatter compact codes into a dense array.

    Parameters
    ----------
    indices : ndarray of shape (n_samples, k), integer (``-1`` pads)
    values : ndarray of shape (n_samples, k)
    n_atoms : int
    valid : bool, default=False
        The caller vouches that every index lies in ``[-1, n_atoms)`` (codes a backend wrote):
        one sample then takes a scatter without masks (~2.6 us against ~8.6 at k=20).
        Otherwise any negative index is a pad and one of ``n_atoms`` or more raises
        IndexError.

    Returns
    -------
    ndarray of shape (n_samples, n_atoms), the dtype of ``values``
    """
    if valid and indices.shape[0] == 1:
        # the pads' index -1 lands in a spare last column, which is not returned
        out = np.zeros((1, n_atoms + 1), values.dtype)
        out.put(indices[0], values[0])
        return out[:, :n_atoms]
    out = np.zeros((indices.shape[0], n_atoms), values.dtype)
    if indices.shape[0] == 1:  # one sample: no index arrays
        keep = indices[0] >= 0
        out[0, indices[0, keep]] = values[0, keep]
        return out
    rows, cols = np.nonzero(indices >= 0)
    out[rows, indices[rows, cols]] = values[rows, cols]
    return out
