"""The code window: the bounded store of compact codes and labels the network retrains on.

The paper keeps the codes of the last ``n`` samples (``policy="sliding"``); here they are
compact codes (``k`` indices and ``k`` values per sample, :class:`tinydl.codes.SparseCodes`):
the paper's ``l * n`` dense codes take ``l / (k * (1 + 4 / itemsize))`` times more.

``policy="reservoir"`` (the learner's default) keeps a class-balanced sample of the whole
stream instead: ``size // n_classes`` slots per class, filled by reservoir sampling within
each class.  A stream in recorded order (labels in long blocks) then still trains the network
on every class seen so far, where a sliding window holds only the last block's.  The
randomness is a counter-based hash of ``(seed, class, count)`` (:func:`_draw`): no generator
state to save, and the same slots however the stream is cut into calls.

The stored arrays are as narrow as what they hold allows, exactly: the indices in the
narrowest signed integer that holds ``n_atoms - 1`` and the padding ``-1``
(:func:`index_dtype`: int8 up to 128 atoms, int16 up to 32,768), the labels (indices into the
classes) in the narrowest unsigned one (:func:`label_dtype`: uint8 up to 256 classes), so a
sample's code costs ``k`` bytes of indices where int32 took ``4 k`` (the values stay in the
compute dtype: the codes the network trains on are those the transform gave, bit for bit).

With ``n_features`` the window also keeps each stored sample's raw row (what the learner's
``rebuild="new-class"`` policy rebuilds the dictionary from), at the cost of
``size x n_features`` values.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ._validation import check_int
from .codes import SparseCodes
from .errors import ModelFileError

__all__ = ["CodeWindow", "POLICIES", "index_dtype", "label_dtype"]

POLICIES = ("reservoir", "sliding")

_M1, _M2, _M3 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
                 np.uint64(0x94D049BB133111EB))


def index_dtype(n_atoms: int) -> np.dtype:
    """The narrowest signed integer dtype holding the indices ``0..n_atoms-1`` and the
    padding ``-1``: int8, int16 or int32."""
    for dt in (np.int8, np.int16):
        if int(n_atoms) - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int32)


def label_dtype(n_classes: Optional[int]) -> np.dtype:
    """The narrowest unsigned integer dtype holding the class indices ``0..n_classes-1``
    (uint8, uint16, uint32); int64 when the classes are not known."""
    if n_classes is None:
        return np.dtype(np.int64)
    for dt in (np.uint8, np.uint16, np.uint32):
        if int(n_classes) - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _mix(x):
    # SplitMix64's finalizer (uint64 arithmetic wraps)
    x = x ^ (x >> np.uint64(30))
    x = x * _M2
    x = x ^ (x >> np.uint64(27))
    x = x * _M3
    return x ^ (x >> np.uint64(31))


def _draw(seed: int, cls: np.ndarray, count: np.ndarray) -> np.ndarray:
    """A uniform integer in ``[0, count)`` for each ``(class, count)``: a hash of
    ``(seed, class, count)``, so the draw of the n-th sample of a class never depends on how
    the stream was cut (the modulo bias is below ``count / 2**64``)."""
    with np.errstate(over="ignore"):
        x = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _M1 + _M2)
        x = _mix(x ^ (cls.astype(np.uint64) * _M1))
        x = _mix(x ^ (count.astype(np.uint64) * _M3))
    return (x % count.astype(np.uint64)).astype(np.int64)


class CodeWindow:
    """The stored samples' compact codes and labels (and, optionally, raw rows).

    Parameters
    ----------
    size : int
        Samples kept (the paper's stored ``n``).
    k : int
        Non-zeros per code.
    n_atoms : int
        Atoms the codes index (the dictionary size ``l``).
    dtype : {"float32", "float64"}
    policy : {"sliding", "reservoir"}
        ``"sliding"``: a ring buffer of the last ``size`` samples (the paper).
        ``"reservoir"``: ``max(1, size // n_classes)`` slots per class, reservoir sampling
        within each class (slots a class leaves unused stay empty).
    classes : array-like, required for ``"reservoir"``
        The sorted class labels.
    seed : int
        The reservoir's draws (see :func:`_draw`).
    n_features : int, optional
        Also keep each stored sample's raw row (``size x n_features`` values of ``dtype``).

    Attributes
    ----------
    indices : ndarray of shape (slots, k), :func:`index_dtype` of ``n_atoms``
    values : ndarray of shape (slots, k)
    labels : ndarray of shape (slots,), :func:`label_dtype` of the classes (int64 without)
    raw : ndarray of shape (slots, n_features) or None
    fill : int
        Valid entries.
    head : int
        Next slot to write (sliding).
    counts : ndarray of shape (n_classes,), int64
        Samples of each class offered so far (reservoir).
    """

    def __init__(self, size: int, k: int, n_atoms: int, dtype="float32",
                 policy: str = "sliding", classes=None, seed: int = 0,
                 n_features: Optional[int] = None):
        self.size = check_int(size, "window", low=1)
        self.k = check_int(k, "k", low=1)
        self.n_atoms = check_int(n_atoms, "n_atoms", low=1)
        if policy not in POLICIES:
            raise ValueError(f"window_policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.seed = int(seed)
        if policy == "reservoir":
            if classes is None:
                raise ValueError("a reservoir window needs the classes")
            self.classes = np.asarray(classes)
            self.per_class = max(1, self.size // len(self.classes))
            slots = self.per_class * len(self.classes)
        else:
            self.classes = None if classes is None else np.asarray(classes)
            self.per_class = 0
            slots = self.size
        self.slots = slots
        self.counts = np.zeros(0 if self.classes is None else len(self.classes), np.int64)
        self.indices = np.full((slots, self.k), -1, index_dtype(self.n_atoms))
        self.values = np.zeros((slots, self.k), np.dtype(dtype))
        self.labels = np.zeros(slots, label_dtype(None if self.classes is None
                                                  else len(self.classes)))
        self.raw = None if n_features is None else np.zeros((slots, int(n_features)),
                                                            np.dtype(dtype))
        self.fill = 0
        self.head = 0

    def __len__(self) -> int:
        return self.fill

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (codes, labels and raw rows)."""
        return int(self.indices.nbytes + self.values.nbytes + self.labels.nbytes
                   + (0 if self.raw is None else self.raw.nbytes))

    # -- slots ---------------------------------------------------------------------------
    def _slots(self, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Where each arriving sample goes: ``(slots, rows)``, the last writer of a slot
        winning (rows in arrival order)."""
        n = len(labels)
        if self.policy == "sliding":
            rows = np.arange(max(0, n - self.size), n)
            slots = (self.head + rows) % self.size
            self.head = (self.head + n) % self.size
            self.fill = min(self.size, self.fill + n)
            return slots, rows
        cls = np.searchsorted(self.classes, labels)
        order = np.argsort(cls, kind="stable")
        counts = np.empty(n, np.int64)       # 1-based count of each arrival in its class
        for c in np.unique(cls):
            rows_c = order[cls[order] == c]
            counts[rows_c] = self.counts[c] + np.arange(1, len(rows_c) + 1)
            self.counts[c] += len(rows_c)
        cap = self.per_class
        draw = _draw(self.seed, cls, counts)
        # the first cap samples of a class fill its slots; later ones replace slot `draw`
        # when draw < cap (Algorithm R)
        pos = np.where(counts <= cap, counts - 1, draw)
        keep = pos < cap
        slots = cls[keep] * cap + pos[keep]
        rows = np.flatnonzero(keep)
        # the last writer of a slot wins
        last = {}
        for s, r in zip(slots.tolist(), rows.tolist()):
            last[s] = r
        slots = np.fromiter(last.keys(), np.int64, len(last))
        rows = np.fromiter(last.values(), np.int64, len(last))
        self.fill = int(np.minimum(self.counts, cap).sum())
        return slots, rows

    def occupied(self) -> np.ndarray:
        """The slots holding a sample: arrival order for a sliding window (oldest first),
        slot order (class by class) for a reservoir."""
        if self.policy == "sliding":
            n, h = self.fill, self.head
            return np.arange(n) if n < self.size else np.r_[h:self.size, 0:h]
        cap = self.per_class
        have = np.minimum(self.counts, cap)
        return np.concatenate([c * cap + np.arange(have[c]) for c in range(len(have))]
                              ).astype(np.int64)

    def push(self, codes: Optional[SparseCodes], labels: np.ndarray,
             raw: Optional[np.ndarray] = None) -> None:
        """Offer samples: a sliding window overwrites the oldest when full, a reservoir
        keeps each with its class's reservoir probability.

        Parameters
        ----------
        codes : SparseCodes of n samples, ``k`` non-zeros each, or None
            None: the samples are not coded yet (their code slots are cleared; the learner
            re-codes the window before training on it).
        labels : ndarray of shape (n,)
        raw : ndarray of shape (n, n_features), optional
            The raw rows (kept when the window was made with ``n_features``).
        """
        slots, rows = self._slots(np.asarray(labels))
        if codes is None:
            self.indices[slots] = -1
            self.values[slots] = 0
        else:
            self.indices[slots] = codes.indices[rows]
            self.values[slots] = codes.values[rows]
        self.labels[slots] = labels[rows]
        if self.raw is not None:
            self.raw[slots] = raw[rows]

    def view(self, ordered: bool = True) -> Tuple[SparseCodes, np.ndarray]:
        """The stored codes and labels (in :meth:`occupied`'s order).

        Parameters
        ----------
        ordered : bool, default=True
            False: in slot order instead, a view of the stored arrays for any full or
            filling sliding window (no copy of the window: what retraining takes, since the
            network visits the samples in a shuffled order anyway).

        Returns
        -------
        codes : SparseCodes of ``fill`` samples
        labels : ndarray of shape (fill,)
        """
        if self.policy == "sliding" and (self.fill < self.size or not ordered):
            sl = slice(0, self.fill)  # a view: no copy
        else:
            sl = self.occupied()
            if len(sl) and sl[-1] - sl[0] == len(sl) - 1 and np.all(np.diff(sl) == 1):
                # one run of slots (a full reservoir): a view, not a copy of the window
                sl = slice(int(sl[0]), int(sl[-1]) + 1)
        return SparseCodes(self.indices[sl], self.values[sl], self.n_atoms), self.labels[sl]

    def train_view(self) -> Tuple[SparseCodes, np.ndarray, Optional[np.ndarray]]:
        """What retraining takes, without a copy of the window: the stored arrays (views) and
        the rows of them that hold a sample (None: all of them).  A sliding window gives its
        first ``fill`` slots (slot order: the network shuffles anyway); a reservoir all its
        slots and, until every class fills its share, :meth:`occupied`'s slots.

        Returns
        -------
        codes : SparseCodes
        labels : ndarray
        rows : ndarray of int64, or None
        """
        if self.policy == "sliding":
            codes, labels = self.view(ordered=False)
            return codes, labels, None
        if self.fill == self.slots:
            return SparseCodes(self.indices, self.values, self.n_atoms), self.labels, None
        return SparseCodes(self.indices, self.values, self.n_atoms), self.labels, \
            self.occupied()

    def raw_view(self) -> Tuple[np.ndarray, np.ndarray]:
        """The stored raw rows and labels (in :meth:`occupied`'s order)."""
        sl = self.occupied()
        return self.raw[sl], self.labels[sl]

    def recode(self, codes: SparseCodes) -> None:
        """Replace the stored codes (in :meth:`occupied`'s order)."""
        sl = self.occupied()
        self.indices[sl] = codes.indices
        self.values[sl] = codes.values

    def classes_held(self) -> np.ndarray:
        """The labels of the classes with at least one stored sample."""
        if self.policy == "reservoir":
            return self.classes[self.counts > 0]
        return np.unique(self.view(ordered=False)[1])

    # -- state (what a checkpoint stores) ----------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        """The arrays that restore this window exactly (see :meth:`from_state`)."""
        out = {"codes_indices": self.indices, "codes_values": self.values,
               "labels_window": self.labels, "window_fill": np.int64(self.fill),
               "window_head": np.int64(self.head), "window_counts": self.counts}
        if self.raw is not None:
            out["window_raw"] = self.raw
        return out

    @classmethod
    def from_state(cls, arrays, size, k, n_atoms, dtype, where="file", policy="sliding",
                   classes=None, seed=0, n_features=None) -> "CodeWindow":
        """Rebuild a window from :meth:`state`'s arrays.

        Raises
        ------
        ModelFileError
            If an array has the wrong shape.
        """
        self = cls(size, k, n_atoms, dtype, policy, classes, seed, n_features)
        want_shapes = [("codes_indices", (self.slots, k)), ("codes_values", (self.slots, k)),
                       ("labels_window", (self.slots,))]
        if policy == "reservoir":
            want_shapes.append(("window_counts", self.counts.shape))
        if n_features is not None:
            want_shapes.append(("window_raw", (self.slots, int(n_features))))
        for key, want in want_shapes:
            if key not in arrays:
                raise ModelFileError(f"{where}: {key} is missing")
            got = arrays[key].shape
            if got != want:
                raise ModelFileError(f"{where}: {key} has shape {got}, expected {want} "
                                     "(window, k)")
        # files written before the compact dtypes held int32 indices and int64 labels:
        # narrowed here (labels that do not fit are an older file's labels themselves, which
        # tinydl.checkpoint maps to indices: kept as they are)
        idx, lab = arrays["codes_indices"], arrays["labels_window"]
        if idx.dtype.kind not in "iu" or (idx.size and (int(idx.min()) < -1 or
                                                        int(idx.max()) >= n_atoms)):
            raise ModelFileError(f"{where}: codes_indices must be integers in [-1, "
                                 f"{n_atoms}), got {idx.dtype} values outside it")
        self.indices = idx.astype(self.indices.dtype, copy=False)
        want = self.labels.dtype
        fits = lab.dtype.kind in "iu" and (not lab.size or (
            int(lab.min()) >= 0 and int(lab.max()) <= np.iinfo(want).max))
        self.labels = lab.astype(want, copy=False) if fits else lab
        self.values = arrays["codes_values"]
        if policy == "reservoir":
            self.counts = np.array(arrays["window_counts"], np.int64)
        if n_features is not None:
            self.raw = arrays["window_raw"]
        self.fill, self.head = int(arrays["window_fill"]), int(arrays["window_head"])
        if not (0 <= self.fill <= self.slots and 0 <= self.head < self.slots):
            raise ModelFileError(f"{where}: window fill {self.fill} / head {self.head} out of "
                                 f"range for a window of {size}")
        return self
