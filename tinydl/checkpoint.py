"""Checkpoints: ``ckpt-<samples>/`` directories and the ``LATEST`` file that names one.

One protocol, used by :class:`tinydl.learner.TinyDLClassifier` and
:class:`tinydl.distributed.MPITinyDLClassifier`:

* :func:`write` makes a fresh ``ckpt-<samples>`` directory (``ckpt-<samples>-1`` when ``LATEST``
  already names ``ckpt-<samples>``: the checkpoint ``LATEST`` names is never rewritten in
  place), lets the caller write its files there, replaces ``LATEST`` atomically to point at it,
  then removes older checkpoints.  A crash at any point leaves ``LATEST`` naming a complete
  checkpoint.
* :func:`latest` reads and checks ``LATEST`` (the one place that does).
* :func:`read` returns the files of the checkpoint ``LATEST`` names, as bytes (what the MPI
  learner broadcasts, and what every learner loads from).

Parameters are stored as JSON (:func:`params_to_json`, :func:`params_from_json`).

:func:`write_learner` and :func:`read_learner` are the learner's files in a checkpoint
(``learner.npz``, ``transform.npz``, ``network.npz``).
"""
from __future__ import annotations

import gc
import json
import os
from typing import Callable, Dict

import numpy as np

from .errors import ModelFileError
from .io import atomic_write_text, load_npz, save_npz

__all__ = ["write", "latest", "read", "broadcast_files", "params_to_json",
           "params_from_json", "write_learner", "read_learner"]

LATEST = "LATEST"
LEARNER_KIND = "tinydl-learner"
LEARNER_VERSION = 3
# what a learner checkpoint written before these parameters existed ran with
LEARNER_LEGACY = dict(optimizer="sgd", window_policy="sliding", rebuild="never",
                      rebuild_epochs=30, n_standardize=256,
                      dictionary_dtype=None, sparse_product="gather", dictionary_nnz=None)


def latest(directory) -> str:
    """The name of the checkpoint ``directory/LATEST`` names.

    Parameters
    ----------
    directory : str or os.PathLike

    Returns
    -------
    str
        ``ckpt-...`` (a plain name, no path separator).

    Raises
    ------
    ModelFileError
        If ``LATEST`` is missing or unreadable, or names something that is not a checkpoint.
    """
    directory = os.fspath(directory)
    try:
        with open(os.path.join(directory, LATEST), "rb") as fh:
            name = fh.read().decode().strip()
    except OSError as exc:
        raise ModelFileError(f"no checkpoint in {directory}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ModelFileError(f"{directory}/{LATEST} is not text") from None
    if not name.startswith("ckpt-") or os.sep in name or "/" in name:
        raise ModelFileError(f"{directory}/{LATEST} names {name!r}, not a checkpoint")
    return name


def _current(directory):
    try:
        return latest(directory)
    except ModelFileError:
        return None


def write(directory, n_samples: int, write_files: Callable[[str], None]) -> str:
    """Write a checkpoint at ``n_samples`` and make it the latest.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if absent.
    n_samples : int
        Samples the state has seen (names the checkpoint).
    write_files : callable
        ``write_files(target)`` writes the checkpoint's files into the directory ``target``.

    Returns
    -------
    str
        The path of the new checkpoint directory.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    name = f"ckpt-{int(n_samples):012d}"
    if name == _current(directory):
        # never rewrite the checkpoint LATEST names in place (e.g. after finish() at the
        # same sample count): a crash midway would leave it a mix of old and new files
        name += "-1"
    target = os.path.join(directory, name)
    if os.path.isdir(target):  # a partial checkpoint of a run killed midway
        _rmtree(target)
    os.makedirs(target, exist_ok=True)
    # a full collection first, so that the writing's transient buffers (zip and file
    # buffers, the state's dicts: tinydl.footprint's checkpoint.write) are not stacked on
    # what the interpreter still holds since its last one: objects freed into its free lists
    # (tuples, floats, dicts: held, and traced, until a full collection) and unreachable
    # cycles.  Measured with `tinydl fit --trace-memory` on UJIIndoorLoc's 256 KiB plan,
    # checkpoints every 256 samples: peak 258,138 B without it, 251,163 B with it (the plan
    # predicts 255,136 B); l=100 with sparse atoms 264,428 -> 254,670 B (259,312 B).  About
    # 2 ms in the command's process, once per checkpoint.
    gc.collect()
    write_files(target)
    atomic_write_text(os.path.join(directory, LATEST), name + "\n")
    for entry in os.listdir(directory):
        if entry.startswith("ckpt-") and entry != name:
            _rmtree(os.path.join(directory, entry))
    return target


def read(directory) -> Dict[str, bytes]:
    """The files of the latest checkpoint.

    Parameters
    ----------
    directory : str or os.PathLike

    Returns
    -------
    dict of str to bytes
        ``{"LATEST": ..., "<name>/<file>": ...}`` for every file of the checkpoint
        ``LATEST`` names (the layout :func:`write` makes).

    Raises
    ------
    ModelFileError
        If there is no readable checkpoint.
    """
    directory = os.fspath(directory)
    name = latest(directory)
    out = {LATEST: (name + "\n").encode()}
    target = os.path.join(directory, name)
    try:
        for entry in sorted(os.listdir(target)):
            with open(os.path.join(target, entry), "rb") as fh:
                out[f"{name}/{entry}"] = fh.read()
    except OSError as exc:
        raise ModelFileError(f"cannot read checkpoint {target}: "
                             f"{exc.strerror or exc}") from None
    return out


def broadcast_files(mpi, files):
    """Broadcast rank 0's :func:`read` result (or an error string) to every rank.

    Parameters
    ----------
    mpi : hal MPI communicator
        With ``rank`` and ``bcast(array, root, what)``.
    files : dict of str to bytes, or str
        Rank 0's files (or the error it met); ignored on the other ranks.

    Returns
    -------
    dict of str to bytes, or str
        The same on every rank.  Sent as plain byte buffers (never pickled).
    """
    head = np.zeros(2, np.int64)
    if mpi.rank == 0:
        if isinstance(files, str):
            head[:] = (-1, len(files.encode()))
        else:
            head[:] = (len(files), 0)
    mpi.bcast(head, 0, "checkpoint load (waiting for rank 0)")
    if head[0] < 0:
        buf = np.zeros(int(head[1]), np.uint8)
        if mpi.rank == 0:
            buf[:] = np.frombuffer(files.encode(), np.uint8)
        mpi.bcast(buf, 0, "checkpoint load")
        return bytes(buf).decode()
    nfiles = int(head[0])
    sizes = np.zeros(2 * nfiles, np.int64)
    if mpi.rank == 0:
        names = list(files)
        sizes[:nfiles] = [len(n.encode()) for n in names]
        sizes[nfiles:] = [len(files[n]) for n in names]
    mpi.bcast(sizes, 0, "checkpoint load")
    total = int(sizes.sum())
    buf = np.zeros(total, np.uint8)
    if mpi.rank == 0:
        buf[:] = np.frombuffer(b"".join([n.encode() for n in names]
                                        + [files[n] for n in names]), np.uint8)
    mpi.bcast(buf, 0, "checkpoint load")
    if mpi.rank == 0:
        return files
    raw = bytes(buf)
    out, pos, name_list = {}, 0, []
    for i in range(nfiles):
        n = int(sizes[i])
        name_list.append(raw[pos:pos + n].decode())
        pos += n
    for i, name in enumerate(name_list):
        n = int(sizes[nfiles + i])
        out[name] = raw[pos:pos + n]
        pos += n
    return out


def params_to_json(params: dict) -> np.ndarray:
    """Estimator parameters as a 0-d string array holding JSON (tuples become lists)."""
    return np.array(json.dumps(params, sort_keys=True, default=_json_default))


def params_from_json(arr, where: str = "file") -> dict:
    """The parameters :func:`params_to_json` stored.

    Raises
    ------
    ModelFileError
        If the array does not hold a JSON object.
    """
    try:
        out = json.loads(str(arr))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: parameters are not JSON ({exc})") from None
    if not isinstance(out, dict):
        raise ModelFileError(f"{where}: parameters are not a JSON object")
    return out


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, np.ndarray)):
        return list(o)
    raise TypeError(f"parameter of type {type(o).__name__} is not JSON serialisable")


def _rmtree(path):
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            os.unlink(os.path.join(root, f))
        for d in dirs:
            os.rmdir(os.path.join(root, d))
    os.rmdir(path)


# -- the learner's files ---------------------------------------------------------------------
def write_learner(learner, target) -> None:
    """Write ``learner``'s (a :class:`~tinydl.learner.TinyDLClassifier`) files into the
    checkpoint directory ``target``."""
    from .learner import _PARAMS
    # parts that have seen no data yet (the network trains at the first n_batch mark)
    # are rebuilt on load
    has_transform = getattr(learner.transform_, "n_samples_seen_", 0) > 0
    has_network = hasattr(learner.network_, "classes_")
    if has_transform:
        learner.transform_.save(os.path.join(target, "transform.npz"))
    if has_network:
        learner.network_.save(os.path.join(target, "network.npz"))
    save_npz(os.path.join(target, "learner.npz"), dict(
        params=params_to_json({p: getattr(learner, p) for p in _PARAMS}),
        n_samples_seen=np.int64(learner.n_samples_seen_),
        n_updates=np.int64(learner.n_updates_), n_rebuilds=np.int64(learner.n_rebuilds_),
        rebuilt_classes=_storable(np.asarray(learner.rebuilt_classes_)),
        finished_at=np.int64(learner.finished_at_),
        classes=_storable(learner.classes_), labels_are_indices=np.int64(1),
        n_features=np.int64(learner.n_features_in_),
        has_transform=np.int64(has_transform), has_network=np.int64(has_network),
        backend=np.array(learner.backend_), **learner.window_.state(),
        **learner.standardizer_.state()),
        kind=LEARNER_KIND, version=LEARNER_VERSION)


def _check_parts(self, target, has_transform, has_network) -> None:
    """Raise ModelFileError unless the checkpoint's transform and network are the ones its
    parameters describe (files of another run copied in would load and predict otherwise)."""
    tr, net = self.transform_, self.network_
    if has_transform and getattr(tr, "n_atoms_", None) is not None:
        got = (int(tr._fit_params["l"]), int(tr.n_features_in_))
        if got != (int(self.l), int(self.n_features_in_)):
            raise ModelFileError(f"{target}: transform.npz holds l={got[0]} atoms of "
                                 f"{got[1]} features; the learner's parameters say l={self.l} "
                                 f"and {self.n_features_in_} features")
    if has_network and getattr(net, "n_features_in_", None) is not None:
        got = (int(net.n_features_in_), tuple(int(h) for h in net.hidden_layer_sizes),
               len(net.classes_))
        want = (int(self.l), tuple(int(h) for h in self.hidden_layer_sizes),
                len(self.classes_))
        if got != want:
            raise ModelFileError(f"{target}: network.npz is {got[0]}-{got[1]}-{got[2]} "
                                 f"(inputs, hidden layers, classes); the learner's parameters "
                                 f"say {want[0]}-{want[1]}-{want[2]}")


def read_learner(cls, directory, backend=None):
    """The learner of class ``cls`` resumed from the checkpoint ``directory/LATEST`` names
    (see :meth:`tinydl.learner.TinyDLClassifier.load`)."""
    from .learner import _PARAMS
    from .nn import MLPClassifier
    from .transform import StreamingDictionary
    from .warmup import standardizer_from_state
    from .window import CodeWindow
    directory = os.fspath(directory)
    target = os.path.join(directory, latest(directory))
    st = load_npz(os.path.join(target, "learner.npz"), LEARNER_KIND,
                  required=("params", "n_samples_seen", "n_updates", "classes",
                            "n_features", "finished_at", "has_transform", "has_network",
                            "codes_indices", "codes_values", "labels_window",
                            "window_fill", "window_head", "std_pending_X",
                            "std_pending_y", "std_has_stats"),
                  max_version=LEARNER_VERSION)
    params = params_from_json(st["params"], target)
    unknown = set(params) - set(_PARAMS)
    if unknown:
        raise ModelFileError(f"{target}: unknown learner parameter(s) {sorted(unknown)}")
    params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    for key, value in LEARNER_LEGACY.items():
        params.setdefault(key, value)
    if backend is None and "backend" in st:
        backend = _runnable(str(st["backend"]))
    self = cls(**params, backend=backend)
    self._init(int(st["n_features"]), st["classes"])
    # checkpoints before labels_are_indices stored the labels themselves (integers)
    as_labels = "labels_are_indices" not in st
    if int(st["has_transform"]):
        self.transform_ = StreamingDictionary.load(os.path.join(target, "transform.npz"),
                                                   backend=self.transform_.backend)
    if int(st["has_network"]):
        self.network_ = MLPClassifier.load(os.path.join(target, "network.npz"),
                                           backend=self.network_.backend)
        if as_labels:  # its classes were the labels: the same order as their indices
            self.network_.classes_ = self._class_index
    _check_parts(self, target, int(st["has_transform"]), int(st["has_network"]))
    self.window_ = CodeWindow.from_state(
        st, self.window, min(self.k, self.l), self.l, self.dtype, target,
        policy=self.window_policy, classes=self.classes_, seed=self.seed,
        n_features=self.n_features_in_ if self._rebuilds else None)
    self.standardizer_ = standardizer_from_state(
        st, self.n_features_in_, int(self.n_standardize), self.dtype, self.standardize, target)
    if as_labels:
        fill = self.window_.slots
        self.window_.labels = np.searchsorted(self.classes_, self.window_.labels[:fill]
                                              ).astype(np.int64)
        self.standardizer_._labels = np.searchsorted(
            self.classes_, self.standardizer_._labels).astype(np.int64)
    self.n_samples_seen_ = int(st["n_samples_seen"])
    self.n_updates_ = int(st["n_updates"])
    self.finished_at_ = int(st["finished_at"])
    if "n_rebuilds" in st:
        self.n_rebuilds_ = int(st["n_rebuilds"])
        self.rebuilt_classes_ = st["rebuilt_classes"]
    if self._rebuilds and self.n_rebuilds_ and self.standardizer_.enabled \
            and self.standardizer_.mean_ is None:
        raise ModelFileError(f"{target}: a rebuilt learner without its standardization "
                             "statistics")
    return self


def _storable(classes: np.ndarray) -> np.ndarray:
    """``classes`` in a dtype ``.npz`` holds without pickle."""
    if classes.dtype.kind == "O":
        as_str = classes.astype(str)
        if not np.array_equal(as_str.astype(object), classes):
            raise ValueError("cannot checkpoint labels of mixed or non-string object type: "
                             f"{classes[:5].tolist()}")
        return as_str
    return classes


def _runnable(name):
    """``name`` if that backend runs here, else None (the automatic choice)."""
    import hal
    try:
        return hal.select_backend(name)[0]
    except (ValueError, KeyError, RuntimeError):  # unknown or unavailable here
        return None
