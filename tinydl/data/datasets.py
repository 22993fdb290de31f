"""The paper's three data sets in their published formats (Daily and Sports Activities,
UJIIndoorLoc, ISOLET), :func:`load_real` (any of them, recognised by name and content) and
:func:`split_dataset`.

Every loader returns a :class:`~tinydl.data.files.Dataset` of float arrays with samples as
rows, and refuses damaged input with a :class:`~tinydl.errors.DataError` that names the file
and the problem.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import replace
from typing import Optional

import numpy as np

from ..errors import DataError
from .files import BUNDLED, Dataset, NpzReader, load_dataset
from .files import features as _features

__all__ = ["load_dsa_folder", "load_ujiindoorloc", "load_isolet",
           "load_real", "split_dataset", "guess_application", "uji_rssi_to_features",
           "DSA_SEGMENT_SHAPE", "UJI_N_WAPS", "ISOLET_N_FEATURES"]


# -- the paper's datasets in their published formats -----------------------------------------

#: one Daily and Sports Activities segment: 125 time steps (5 s at 25 Hz) x 45 channels
#: (5 units x 9 sensors: x, y, z accelerometer, gyroscope, magnetometer)
DSA_SEGMENT_SHAPE = (125, 45)
#: UJIIndoorLoc: 520 wireless access points (WAP001..WAP520), then 9 named columns
UJI_N_WAPS = 520
UJI_COLUMNS = ("LONGITUDE", "LATITUDE", "FLOOR", "BUILDINGID", "SPACEID", "RELATIVEPOSITION",
               "USERID", "PHONEID", "TIMESTAMP")
#: UJIIndoorLoc's code for "access point not detected"
UJI_NO_SIGNAL = 100
#: the RSSI an undetected access point is mapped to: below the weakest reading (-104 dBm)
UJI_FLOOR_DBM = -105.0
#: ISOLET: 617 features, then the letter 1..26
ISOLET_N_FEATURES = 617
ISOLET_FILES = ("isolet1+2+3+4.data", "isolet5.data")


def _dsa_root(path):
    """The folder that holds ``a01 .. a19`` (UCI's zip unpacks them under ``data/``)."""
    def has_activities(d):
        return any(_dsa_number(e, "a") is not None and os.path.isdir(os.path.join(d, e))
                   for e in os.listdir(d))
    if has_activities(path):
        return path
    sub = os.path.join(path, "data")
    if os.path.isdir(sub) and has_activities(sub):
        return sub
    return None


def _dsa_number(name, prefix):
    """``a07`` -> 7 for prefix ``a``; None for anything else (stray files are ignored)."""
    if not name.startswith(prefix):
        return None
    stem = name[len(prefix):]
    if stem.endswith(".txt") and prefix == "s":
        stem = stem[:-4]
    return int(stem) if stem.isdigit() else None


def _read_numbers(path, expect_shape):
    """A comma-separated text matrix of exactly ``expect_shape``, as float64."""
    try:
        with open(path, "r") as fh:
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    rows, cols = expect_shape
    ncols = len(lines[0].split(",")) if lines else 0
    if len(lines) != rows or ncols != cols:
        raise DataError(f"{path}: {len(lines)} rows x {ncols} columns, expected {rows} x {cols}")
    try:
        flat = np.array(",".join(lines).split(","), dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric value ({exc})") from None
    if flat.size != rows * cols:
        raise DataError(f"{path}: {flat.size} values, expected {rows} x {cols} = {rows * cols} "
                        "(a row has a different number of columns)")
    return flat.reshape(rows, cols)


def load_dsa_folder(path: str, segment_shape=DSA_SEGMENT_SHAPE) -> Dataset:
    """Daily and Sports Activities in UCI's folder layout ``aNN/pM/sKK.txt``.

    Parameters
    ----------
    path : str
        The folder holding ``a01 .. a19`` (or its parent holding ``data/a01 ..``).
    segment_shape : (int, int)
        Rows (time steps) and comma-separated columns (channels) of every segment file.

    Returns
    -------
    Dataset
        ``X_train`` of shape (n_segments, 125 * 45) (each segment flattened time-major, the
        layout of an (n, 125, 45) array), ``y_train`` the activity ``NN - 1`` (0..18),
        ``groups`` the subject ``M``; no test split (the data set has none: see
        :func:`split_dataset`).  Samples are in folder order: activity, subject, segment.

    Raises
    ------
    DataError
        If the layout holds no segments, or a file is not ``segment_shape`` numbers.
    """
    root = _dsa_root(path) if os.path.isdir(path) else None
    if root is None:
        raise DataError(f"{path}: not a Daily and Sports Activities folder (expected "
                        "sub-folders a01..a19 holding p1..p8/s01..s60.txt)")
    X, y, groups = [], [], []
    activities = sorted((n, e) for e in os.listdir(root)
                        if (n := _dsa_number(e, "a")) is not None)
    for a, aname in activities:
        adir = os.path.join(root, aname)
        subjects = sorted((n, e) for e in os.listdir(adir)
                          if (n := _dsa_number(e, "p")) is not None)
        for p, pname in subjects:
            pdir = os.path.join(adir, pname)
            segs = sorted((n, e) for e in os.listdir(pdir)
                          if e.endswith(".txt") and (n := _dsa_number(e, "s")) is not None)
            for _, sname in segs:
                X.append(_read_numbers(os.path.join(pdir, sname), segment_shape))
                y.append(a - 1)
                groups.append(p)
    if not X:
        raise DataError(f"{root}: {len(activities)} activity folder(s) but no segment files "
                        "aNN/pM/sKK.txt")
    arr = np.stack(X).astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{root}: {int((~np.isfinite(arr)).sum())} NaN or Inf value(s)")
    return Dataset(arr.reshape(len(arr), -1), np.array(y, np.int64), None, None,
                   os.path.basename(os.path.normpath(path)), sample_shape=tuple(segment_shape),
                   application="smart-sensing", groups=np.array(groups, np.int64))


def uji_valid_readings(W) -> np.ndarray:
    """Which of UJIIndoorLoc's readings ``W`` are valid: -110 .. 0 dBm, or 100 (not
    detected)."""
    return (W == UJI_NO_SIGNAL) | ((W >= -110) & (W <= 0))


def uji_rssi_to_features(W, where="UJIIndoorLoc"):
    """Map UJIIndoorLoc's RSSI readings to features in [0, 1].

    ``100`` ("not detected") becomes -105 dBm, one below the weakest reading the data set
    holds (-104 dBm), so that a missing access point is the weakest signal rather than the
    strongest number; then ``(rssi + 105) / 105`` puts -105 dBm at 0 and 0 dBm at 1.  Zero for
    "not detected" keeps the rows sparse, which suits both networks and the transform.

    Parameters
    ----------
    W : ndarray of shape (n_samples, 520)
        Readings in dBm (-104 .. 0) or 100.

    Returns
    -------
    ndarray of shape (n_samples, 520), float32
    """
    W = np.asarray(W, dtype=np.float64)
    bad = ~uji_valid_readings(W)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{where}: {int(bad.sum())} WAP reading(s) outside -110..0 dBm and "
                        f"{UJI_NO_SIGNAL} (not detected), first at row {i + 1}, WAP{j + 1:03d}: "
                        f"{W[i, j]:g}")
    rssi = np.where(W == UJI_NO_SIGNAL, UJI_FLOOR_DBM, W)
    return ((rssi - UJI_FLOOR_DBM) / -UJI_FLOOR_DBM).astype(np.float32)


def _uji_columns(arr, where):
    """(features, building, floor) from an array of UCI's 529 columns."""
    arr = np.asarray(arr)
    width = UJI_N_WAPS + len(UJI_COLUMNS)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise DataError(f"{where}: shape {arr.shape}, expected (n, {width}): 520 WAP columns "
                        f"then {', '.join(UJI_COLUMNS)}")
    if len(arr) == 0:
        raise DataError(f"{where}: no rows")
    floor = arr[:, UJI_N_WAPS + UJI_COLUMNS.index("FLOOR")]
    building = arr[:, UJI_N_WAPS + UJI_COLUMNS.index("BUILDINGID")]
    for name, v in (("FLOOR", floor), ("BUILDINGID", building)):
        if not np.array_equal(v, np.round(v)) or v.min() < 0:
            raise DataError(f"{where}: {name} holds values that are not non-negative integers")
    return uji_rssi_to_features(arr[:, :UJI_N_WAPS], where), building.astype(np.int64), \
        floor.astype(np.int64)


def _uji_csv(path):
    try:
        with open(path, "r", newline="") as fh:
            header = fh.readline().strip().split(",")
            body = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    header = [h.strip().strip('"') for h in header]
    want = [f"WAP{i:03d}" for i in range(1, UJI_N_WAPS + 1)] + list(UJI_COLUMNS)
    if header != want:
        first_bad = next((i for i, (a, b) in enumerate(zip(header, want)) if a != b),
                         min(len(header), len(want)))
        raise DataError(f"{path}: header has {len(header)} columns, expected {len(want)} "
                        f"(WAP001..WAP520, {', '.join(UJI_COLUMNS)}); column {first_bad + 1} is "
                        f"{header[first_bad] if first_bad < len(header) else 'missing'!r}")
    lines = [ln for ln in body.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.count(",") != len(want) - 1:
            raise DataError(f"{path}: row {i + 2} has {ln.count(',') + 1} columns, expected "
                            f"{len(want)}")
    try:
        arr = np.array(",".join(lines).split(","), dtype=np.float64).reshape(len(lines), -1) \
            if lines else np.zeros((0, len(want)))
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric value ({exc})") from None
    return _uji_columns(arr, path)


def _uji_labels(parts):
    """Class = the (building, floor) pair, numbered over the sorted pairs of all parts so that
    training and test labels agree (13 classes on the full data set)."""
    pairs = np.unique(np.concatenate([np.stack([b, f], 1) for b, f in parts]), axis=0)
    codes = pairs[:, 0] * 1000 + pairs[:, 1]
    return [np.searchsorted(codes, b * 1000 + f).astype(np.int64) for b, f in parts]


def load_ujiindoorloc(train_path: str, test_path: Optional[str] = None) -> Dataset:
    """UJIIndoorLoc from UCI's ``trainingData.csv`` (and ``validationData.csv`` as the test set).

    Parameters
    ----------
    train_path : str
        ``trainingData.csv``, or the folder holding it.
    test_path : str, optional
        Default: ``validationData.csv`` beside ``train_path`` when it exists.

    Returns
    -------
    Dataset
        ``X_*`` of shape (n, 520) in [0, 1] (see :func:`uji_rssi_to_features`); ``y_*`` the
        building-floor class (13 classes on the full data set).  Rows in file order.
    """
    if os.path.isdir(train_path):
        train_path = os.path.join(train_path, "trainingData.csv")
    if not os.path.isfile(train_path):
        raise DataError(f"no such data file: {train_path}")
    if test_path is None:
        cand = os.path.join(os.path.dirname(train_path), "validationData.csv")
        test_path = cand if os.path.isfile(cand) and cand != train_path else None
    Xtr, btr, ftr = _uji_csv(train_path)
    if test_path is None:
        (ytr,) = _uji_labels([(btr, ftr)])
        return Dataset(Xtr, ytr, None, None, os.path.basename(train_path),
                       application="indoor-localization")
    Xte, bte, fte = _uji_csv(test_path)
    ytr, yte = _uji_labels([(btr, ftr), (bte, fte)])
    return Dataset(Xtr, ytr, Xte, yte, os.path.basename(train_path),
                   application="indoor-localization")


def _isolet_file(path):
    try:
        with open(path, "r") as fh:
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not lines:
        raise DataError(f"{path} is empty")
    width = ISOLET_N_FEATURES + 1
    for i, ln in enumerate(lines):
        if ln.count(",") != width - 1:
            raise DataError(f"{path}: row {i + 1} has {ln.count(',') + 1} columns, expected "
                            f"{width} ({ISOLET_N_FEATURES} features and the class)")
    try:
        # the class is written "3." (a float with a trailing point): float() reads it
        arr = np.array(",".join(lines).split(","), dtype=np.float64).reshape(len(lines), width)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric value ({exc})") from None
    lab = arr[:, -1]
    if not np.array_equal(lab, np.round(lab)) or lab.min() < 1 or lab.max() > 26:
        raise DataError(f"{path}: class column holds values outside the integers 1..26 "
                        f"(range {lab.min():g}..{lab.max():g})")
    return _features(arr[:, :-1], path, "features"), (lab - 1).astype(np.int64)


def load_isolet(train_path: str, test_path: Optional[str] = None) -> Dataset:
    """ISOLET from UCI's ``isolet1+2+3+4.data`` (and ``isolet5.data`` as the test set).

    Parameters
    ----------
    train_path : str
        ``isolet1+2+3+4.data`` or the folder holding it.
    test_path : str, optional
        Default: ``isolet5.data`` beside ``train_path`` when it exists.

    Returns
    -------
    Dataset
        ``X_*`` of shape (n, 617) as published (already scaled to -1..1), ``y_*`` the letter
        0..25 (the file's 1..26 minus one).
    """
    if os.path.isdir(train_path):
        train_path = os.path.join(train_path, ISOLET_FILES[0])
    if not os.path.isfile(train_path):
        raise DataError(f"no such data file: {train_path}")
    if test_path is None:
        cand = os.path.join(os.path.dirname(train_path), ISOLET_FILES[1])
        test_path = cand if os.path.isfile(cand) and cand != train_path else None
    Xtr, ytr = _isolet_file(train_path)
    Xte = yte = None
    if test_path is not None:
        Xte, yte = _isolet_file(test_path)
    return Dataset(Xtr, ytr, Xte, yte, os.path.basename(train_path),
                   application="speech-recognition")


def guess_application(ds: Dataset) -> str:
    """Which of the paper's applications ``ds`` is, from what the loader knew, the sample
    shape, the feature count or the file name; ``""`` if none."""
    if ds.application:
        return ds.application
    name = ds.name.lower()
    if ds.sample_shape == DSA_SEGMENT_SHAPE or name.startswith(("dsa", "daily")):
        return "smart-sensing"
    if ds.n_features == UJI_N_WAPS or "uji" in name:
        return "indoor-localization"
    if ds.n_features == ISOLET_N_FEATURES or "isolet" in name:
        return "speech-recognition"
    return ""


def _uji_npz(ds, path):
    """An ``ujiindoorloc.npz``: raw RSSI features (values 100 and -104..0) are mapped like the
    CSV's; features already in [0, 1] are kept."""
    X = ds.X_train
    if X.shape[1] != UJI_N_WAPS:
        return ds
    if X.min() < 0 or X.max() > 1:
        Xtr = uji_rssi_to_features(X, f"{path}: X_train")
        Xte = uji_rssi_to_features(ds.X_test, f"{path}: X_test") if ds.X_test is not None \
            else None
        ds = Dataset(Xtr, ds.y_train, Xte, ds.y_test, ds.name)
    return ds


def _uji_npz_columns(path):
    """An .npz holding UCI's 529 columns under ``trainingData``/``train`` (and
    ``validationData``/``validation``/``test``), or None if it holds neither."""
    npz = NpzReader(path)
    tr = next((k for k in ("trainingData", "training", "train") if k in npz.names), None)
    if tr is None:
        return None
    te = next((k for k in ("validationData", "validation", "test") if k in npz.names), None)
    Xtr, btr, ftr = _uji_columns(npz.member(tr), f"{path}: {tr}")
    if te is None:
        (ytr,) = _uji_labels([(btr, ftr)])
        return Dataset(Xtr, ytr, None, None, os.path.basename(path),
                       application="indoor-localization")
    Xte, bte, fte = _uji_columns(npz.member(te), f"{path}: {te}")
    ytr, yte = _uji_labels([(btr, ftr), (bte, fte)])
    return Dataset(Xtr, ytr, Xte, yte, os.path.basename(path), application="indoor-localization")


def load_real(source: str) -> Dataset:
    """Load any data set the paper's evaluation uses, recognised by name and content.

    Parameters
    ----------
    source : str
        A bundled name (``"digits"``); a Daily and Sports folder (``aNN/pM/sKK.txt``); a
        UJIIndoorLoc ``trainingData.csv`` (or its folder); an ISOLET ``isolet1+2+3+4.data``
        (or its folder); or an ``.npz`` with ``X_train, y_train, X_test, y_test``, with ``X``
        (e.g. Daily and Sports as (n, 125, 45)) and ``y``, or with UJIIndoorLoc's 529 columns
        under ``trainingData`` / ``validationData``.  Other files go to :func:`load_dataset`.

    Returns
    -------
    Dataset
        With ``application`` set (:func:`guess_application`).  A data set without a test
        split comes back without one: :func:`split_dataset` makes it.

    Raises
    ------
    DataError
        If ``source`` does not exist, or is none of the above.
    """
    if source in BUNDLED:
        ds = load_dataset(source)
    elif os.path.isdir(source):
        if _dsa_root(source) is not None:
            ds = load_dsa_folder(source)
        elif os.path.isfile(os.path.join(source, "trainingData.csv")):
            ds = load_ujiindoorloc(source)
        elif os.path.isfile(os.path.join(source, ISOLET_FILES[0])):
            ds = load_isolet(source)
        else:
            raise DataError(f"{source}: a folder, but neither Daily and Sports (a01..a19/p1..p8/"
                            f"s01..s60.txt), UJIIndoorLoc (trainingData.csv) nor ISOLET "
                            f"({ISOLET_FILES[0]})")
    elif not os.path.exists(source):
        raise DataError(f"no such data file or folder: {source}")
    else:
        base = os.path.basename(source)
        if base in ("trainingData.csv", "validationData.csv"):
            if base == "validationData.csv":
                raise DataError(f"{source}: give trainingData.csv (validationData.csv beside it "
                                "is read as the test set)")
            ds = load_ujiindoorloc(source)
        elif base.startswith("isolet") and base.endswith(".data"):
            ds = load_isolet(source)
        elif base.lower().endswith(".npz"):
            try:
                ds = _uji_npz_columns(source)
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                if isinstance(exc, DataError):
                    raise
                ds = None  # load_dataset below names the damage
            if ds is None:
                ds = load_dataset(source)
                ds = _uji_npz(ds, source)
        else:
            ds = load_dataset(source)
    app = guess_application(ds)
    base = os.path.basename(os.path.normpath(source)).lower()
    if base.startswith("dsa") and ds.sample_shape != DSA_SEGMENT_SHAPE:
        # the name promises Daily and Sports: refuse rather than run the wrong experiment
        raise DataError(f"{source}: named like Daily and Sports but its samples have shape "
                        f"{ds.sample_shape or (ds.n_features,)}, expected X of shape "
                        f"(n, {DSA_SEGMENT_SHAPE[0]}, {DSA_SEGMENT_SHAPE[1]})")
    if "uji" in base and ds.n_features != UJI_N_WAPS:
        raise DataError(f"{source}: named like UJIIndoorLoc but has {ds.n_features} features, "
                        f"expected {UJI_N_WAPS} WAP columns")
    if ds.y_train is None:
        raise DataError(f"{source}: holds no labels (expected y or y_train)")
    return replace(ds, application=app)


def split_dataset(ds: Dataset, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Hold out a stratified random test split from a data set that has none.

    For each class, ``round(test_fraction * n_class)`` samples (at least one when the class
    has two or more) chosen by ``numpy.random.default_rng(seed)`` go to the test set; the
    training set keeps the others **in their original order** (the stream order is chosen
    separately).  A data set that already has a test set is returned unchanged.

    Parameters
    ----------
    ds : Dataset
    test_fraction : float in (0, 1)
    seed : int

    Returns
    -------
    Dataset
    """
    if ds.X_test is not None:
        return ds
    if ds.y_train is None:
        raise DataError(f"{ds.name}: no labels, so no stratified split")
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(ds.y_train), bool)
    for c in np.unique(ds.y_train):
        idx = np.flatnonzero(ds.y_train == c)
        n_test = int(round(test_fraction * len(idx)))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        else:
            n_test = 0
        test[rng.permutation(idx)[:n_test]] = True
    tr, te = np.flatnonzero(~test), np.flatnonzero(test)
    groups = ds.groups[tr] if ds.groups is not None else None
    return replace(ds, X_train=ds.X_train[tr], y_train=ds.y_train[tr], X_test=ds.X_train[te],
                    y_test=ds.y_train[te], groups=groups)
