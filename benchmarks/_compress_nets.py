"""The real networks :mod:`benchmarks.compress` compresses, trained once and cached as ``.npz``.

Every network is trained the way ``tinydl reproduce`` trains its raw-feature network
(:func:`tinydl.reproduce.runs.run_raw`): the protocol's split (a stratified 20% test split,
seed 0, where the data set has none; UJIIndoorLoc tests on UCI's validationData), the training
set in a shuffled order minus a stratified **validation** hold-out (15% of each class, but at
least :data:`MIN_VAL_PER_CLASS` samples of it: see :func:`validation_mask`), one pass of the stream
retraining every 256 samples on the last 2,048 for 10 epochs, inputs standardized with the
first 256 stream samples' statistics, and the recipe (of :data:`~tinydl.reproduce.protocol.
RECIPES`) with the best validation accuracy.  The compiler searches on that same validation
hold-out; the test split is used only to report.

* ``dsa-mlp``: 5625-2000-500-19 on Daily and Sports (the paper's raw network);
* ``uji-mlp``: 520-256-128-13 on UJIIndoorLoc (the protocol's raw network);
* ``dsa-cnn``: a 1-D convolution network on Daily and Sports' segments read as 45 channels x
  125 time steps, trained with the recipe the ``dsa-mlp`` chose and the same schedule.

**One preparation path**: :class:`Prepared` holds the standardization statistics (and the
segment layout for the CNN); its ``__call__`` turns raw rows of any split into the network's
inputs, so the stream, the validation part and the test split cannot be prepared differently.

The cache (``~/.cache/tinydl/compress`` unless ``--cache``) holds ``<name>.npz`` (the network
in :mod:`tinydl.compress`'s model format) and ``<name>.prep.npz`` (statistics and what the
training recorded); a cached file is used as is.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from tinydl.compress import from_network, load_model, save_model
from tinydl.data import load_real, split_dataset
from tinydl.io import load_npz, save_npz

KIND = "tinydl.benchmark.compress-prep"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tinydl", "compress")
DSA_SEGMENT = (125, 45)
#: the validation hold-out keeps at least this many training samples of every class (while
#: leaving two to the stream).  The protocol's 15% gives Daily and Sports 12 per class, 228 in
#: all, where a 1-point budget is 2.3 samples and one sample's luck decides a search step;
#: 20 per class (380 samples, 3.8 per point) is the stated floor, set before any result was
#: seen; UJIIndoorLoc's 15% is already above it in every class, so its split is unchanged.
MIN_VAL_PER_CLASS = 20


@dataclass
class Prepared:
    """One preparation path for every split: standardize, then lay the rows out."""

    mean: np.ndarray
    scale: np.ndarray
    layout: str = "flat"  # or "channels-first": (n, 125, 45) -> (n, 45, 125)

    def __call__(self, X):
        Z = ((np.asarray(X, np.float32) - self.mean) / self.scale).astype(np.float32)
        if self.layout == "channels-first":
            Z = np.ascontiguousarray(Z.reshape((len(Z),) + DSA_SEGMENT).transpose(0, 2, 1))
            Z = Z.reshape(len(Z), -1)
        return Z


@dataclass
class Net:
    """A trained network with its splits, ready to compress."""

    name: str
    model: object           # tinydl.compress.CompressedModel
    prep: Prepared
    X_val: np.ndarray       # prepared
    y_val: np.ndarray
    X_test: np.ndarray      # prepared
    y_test: np.ndarray
    X_fit: np.ndarray       # prepared training-stream rows (unlabelled use only)
    info: dict


def _log(msg):
    print(f"[nets] {msg}", file=sys.stderr, flush=True)


def validation_mask(y, fraction, seed, min_per_class=MIN_VAL_PER_CLASS):
    """Stratified hold-out mask: the protocol's :func:`~tinydl.reproduce.protocol._holdout`
    with a floor of ``min_per_class`` rows per class (same generator, same order), so a class
    whose fraction is above the floor keeps exactly the protocol's rows."""
    from tinydl.reproduce.protocol import _holdout
    return _holdout(y, fraction, seed, min_per_class)


def split_digest(idx):
    """A short digest of the row indices of a part (the cache's key to its split)."""
    import hashlib
    return hashlib.sha1(np.asarray(idx, np.int64).tobytes()).hexdigest()[:16]


def protocol_splits(path, st):
    """The reproduce protocol's stream, validation and test parts of the data set at ``path``
    (the same code path as :func:`tinydl.reproduce.protocol.run_dataset`, the validation
    part with :func:`validation_mask`'s floor per class)."""
    ds = split_dataset(load_real(path), st.test_fraction, st.split_seed)
    Xtr, ytr = ds.X_train, ds.y_train
    order = np.random.default_rng(st.stream_seed).permutation(len(Xtr))
    val = validation_mask(ytr[order], st.val_fraction, st.split_seed)
    fit_idx, val_idx = order[~val], order[val]
    classes = np.unique(np.concatenate([ytr, ds.y_test]))
    S = dict(X=Xtr[fit_idx], y=ytr[fit_idx], Xval=Xtr[val_idx], yval=ytr[val_idx],
             Xte=ds.X_test, yte=ds.y_test, val_digest=split_digest(val_idx))
    return S, classes, ds.application


def _train_mlp(S, classes, hidden, st, recipes):
    from hal.power import detect_source
    from hal.profile import load_profile
    from tinydl.reproduce.runs import run_raw
    source, _ = detect_source(profile=load_profile(st.host_profile))
    best, tried = None, {}
    for rname in recipes:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                run = run_raw(S, hidden, st, source, classes, recipe=rname)
            except Exception as exc:  # a diverged recipe is skipped, as the protocol does
                _log(f"  recipe {rname}: failed ({type(exc).__name__}: {exc})")
                continue
        tried[rname] = dict(val=run.val_accuracy, test=run.accuracy,
                            train_s=time.perf_counter() - t0)
        _log(f"  recipe {rname}: validation {run.val_accuracy:.4f} "
             f"({time.perf_counter() - t0:.0f} s)")
        if best is None or run.val_accuracy > best[1].val_accuracy + 1e-12:
            best = (rname, run)
    if best is None:
        raise RuntimeError("every recipe failed")
    return best[0], best[1].model, tried


def _train_cnn(S, classes, prep, st, recipe, conv_layers, hidden):
    """The CNN with the raw network's schedule (RawStreamLearner) and ``recipe``."""
    from tinydl.baseline import RawStreamLearner
    from tinydl.nn import CNNClassifier
    from tinydl.reproduce.protocol import RECIPES
    net = CNNClassifier(input_shape=(DSA_SEGMENT[1], DSA_SEGMENT[0]), conv_layers=conv_layers,
                        hidden_layer_sizes=hidden, dropout=st.raw_dropout, epochs=1,
                        seed=st.seed, dtype="float32", **RECIPES[recipe])
    Xs = prep(S["X"])
    learner = RawStreamLearner(net, st.window, st.n_batch, st.epochs, Xs.shape[1], np.float32)
    for s in range(0, len(Xs), st.n_batch):
        learner.partial_fit(Xs[s:s + st.n_batch], S["y"][s:s + st.n_batch], classes)
    if learner.seen % st.n_batch:
        learner.retrain(classes)
    return net


def _paths(cache, name):
    return os.path.join(cache, f"{name}.npz"), os.path.join(cache, f"{name}.prep.npz")


def _save(cache, name, model, prep, info):
    os.makedirs(cache, exist_ok=True)
    mpath, ppath = _paths(cache, name)
    save_model(model, mpath)
    save_npz(ppath, dict(mean=prep.mean, scale=prep.scale, layout=np.array(prep.layout),
                         info=np.array(json.dumps(info))), kind=KIND)


def _load(cache, name):
    mpath, ppath = _paths(cache, name)
    if not (os.path.isfile(mpath) and os.path.isfile(ppath)):
        return None
    d = load_npz(ppath, KIND, required=("mean", "scale", "layout", "info"))
    prep = Prepared(d["mean"], d["scale"], str(d["layout"]))
    return load_model(mpath), prep, json.loads(str(d["info"]))


def _same_split(info, S):
    """Whether a cached network's recorded split is ``S``'s (older caches recorded only the
    part sizes)."""
    if "val_digest" in info:
        return info["val_digest"] == S["val_digest"]
    return info.get("n_val") == len(S["Xval"]) and info.get("n_stream") == len(S["X"])


def networks(dsa_path, uji_path, cache=DEFAULT_CACHE, quick=False, names=None):
    """Yield a :class:`Net` per network whose data file exists (trained or from the cache)."""
    from tinydl.reproduce.protocol import APPLICATIONS, RECIPES, Settings
    from tinydl.standardize import fit_stats
    st = Settings()
    if quick:  # smaller, for a smoke run: a separate cache entry
        st = Settings(epochs=2)
    recipes = tuple(RECIPES)
    tag = "-quick" if quick else ""
    dsa_recipe = None
    specs = [("dsa-mlp", dsa_path), ("uji-mlp", uji_path), ("dsa-cnn", dsa_path)]
    for name, path in specs:
        if names and name not in names:
            continue
        if not os.path.isfile(path):
            print(f"[skip] {name}: data file {path} is absent", flush=True)
            continue
        S, classes, app = protocol_splits(path, st)
        cached = _load(cache, name + tag)
        if cached is not None and not _same_split(cached[2], S):
            _log(f"{name}: the cached network was trained on another split (validation "
                 f"{cached[2].get('n_val')} rows, now {len(S['Xval'])}): training again")
            cached = None
        if cached is not None:
            model, prep, info = cached
            _log(f"{name}: from the cache {_paths(cache, name + tag)[0]}")
        else:
            # the first 256 stream samples' statistics, as run_raw standardizes
            mu, sd = fit_stats(S["X"][:min(256, len(S["X"]))], np.float32)
            t0 = time.perf_counter()
            if name.endswith("mlp"):
                prep = Prepared(mu, sd)
                hidden = APPLICATIONS[app]["raw_hidden"]
                _log(f"{name}: training {len(S['X'])} stream samples, hidden {hidden} ...")
                recipe, clf, tried = _train_mlp(S, classes, hidden, st, recipes)
            else:
                prep = Prepared(mu, sd, "channels-first")
                if dsa_recipe is None:
                    d = _load(cache, "dsa-mlp" + tag)
                    dsa_recipe = d[2]["recipe"] if d else "sgd-l2"
                recipe, tried = dsa_recipe, {}
                conv, hidden = ((64, 9, 2), (64, 9, 2)), (128,)
                _log(f"{name}: training {len(S['X'])} stream samples, conv {conv}, hidden "
                     f"{hidden}, recipe {recipe} ...")
                clf = _train_cnn(S, classes, prep, st, recipe, conv, hidden)
            model = from_network(clf)
            info = dict(recipe=recipe, recipes_tried=tried, hidden=list(hidden),
                        train_s=time.perf_counter() - t0, settings=repr(st),
                        n_stream=len(S["X"]), n_val=len(S["Xval"]), n_test=len(S["Xte"]),
                        val_digest=S["val_digest"])
            _save(cache, name + tag, model, prep, info)
            _log(f"{name}: trained in {info['train_s']:.0f} s, cached")
        if name == "dsa-mlp":
            dsa_recipe = info["recipe"]
        yield Net(name, model, prep, prep(S["Xval"]), S["yval"], prep(S["Xte"]), S["yte"],
                  prep(S["X"]), info)
