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

__all__ = ["write", "latest", "read", "params_to_json", "params_from_json"]

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
