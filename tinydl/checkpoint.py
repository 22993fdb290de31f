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
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict

import numpy as np

from .errors import ModelFileError
from .io import atomic_write_text

__all__ = ["write", "latest", "read", "broadcast_files", "params_to_json",
           "params_from_json"]

LATEST = "LATEST"


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
