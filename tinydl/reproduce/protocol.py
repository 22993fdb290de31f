"""Reproduce the paper's evaluation: Table I and the noise experiment (Fig. 2).

For each data set: split it (if it has no test set), choose a stream order, train the
conventional network on the raw features (dropout; its recipe chosen on validation) and TinyDL
on the same stream with the same schedule (retrain every ``n_batch`` samples on the last
``window`` samples), choose TinyDL's settings by the rules below, and report the paper's
Table I columns measured here and predicted for a device profile.  The protocol is written out
in ``docs/reproduce.md``; :data:`PROTOCOL` is its short form.  The learners' runs are in
:mod:`tinydl.reproduce.runs`, the report in :mod:`tinydl.reproduce.report`.

Selection rules (the same for every data set; chosen on validation, never on the test split)
    A stratified validation hold-out of the training set is never streamed; every choice below
    is made on it, with one network seed, and both reported models are trained on the same
    remaining stream.

    * **recipe**: each learner's training recipe is the more accurate on validation of
      :data:`RECIPES` (the paper's SGD with momentum and L2 loss, and Adam with L2 loss); ties
      go to the paper's.  Both raw-network runs are reported, so the comparison shows the raw
      network with its own best recipe and with TinyDL's.
    * **input scaling** (TinyDL): per-feature standardization (statistics of the first 256
      stream samples) or none, chosen with the recipe on validation at the reference size
      (the first transform, the largest hidden ladder rung the size limit allows).
    * **size**: the most accurate on validation among the candidates at least
      ``min_reduction`` (20) times smaller than the raw network: ``l`` in {100, 200} (capped
      at ``m``), ``k`` in {l/5, 2l/5}, ``alpha`` 0.5, the hidden ladder
      :data:`HIDDEN_LADDER`; ties go to the fewer parameters.  The raw network is fixed per
      application (:data:`APPLICATIONS`; smart sensing uses the authors' earlier
      5625-2000-500-19).

Timing
    Network training is timed around each retraining only; TinyDL's transform (Algorithm 2 on
    the stream) is timed on its own.  Test-error evaluations for the curves are not timed.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..customize import _n_params  # noqa: F401 - also imported from here (demo, exec_timing)
from ..data import load_real, split_dataset
from ..errors import DataError, DivergenceError
from .noise import add_noise, noise_experiment
from .runs import exec_times, run_raw, run_tiny
from .runs import predicted as predicted_on_profile

__all__ = ["Settings", "APPLICATIONS", "PAPER_TABLE_I", "PROTOCOL", "reproduce",
           "run_dataset", "add_noise"]

#: the paper's Table I (Jetson TK1): ms/sample and ratios
PAPER_TABLE_I = {
    "smart-sensing": dict(preprocess_ms=0.81, train_energy_ratio=99.6, train_time_ratio=20.9,
                          exec_time_ratio=108.3, size_reduction=120.3),
    "indoor-localization": dict(preprocess_ms=0.09, train_energy_ratio=5.6,
                                train_time_ratio=2.7, exec_time_ratio=19.4,
                                size_reduction=19.5),
    "speech-recognition": dict(preprocess_ms=0.56, train_energy_ratio=4.2, train_time_ratio=2.3,
                               exec_time_ratio=6.2, size_reduction=7.3),
}

#: per application: the raw network's hidden layers (the paper's comparison network) and the
#: projection threshold alpha; TinyDL's candidates follow one rule for all (:func:`_transforms_for`)
APPLICATIONS = {
    # the authors' earlier code (DeLight) trained 5625-2000-500-19 on the raw data
    "smart-sensing": dict(raw_hidden=(2000, 500), alpha=0.5),
    # not stated in the paper: 520-256-128-13
    "indoor-localization": dict(raw_hidden=(256, 128), alpha=0.5),
    "speech-recognition": dict(raw_hidden=(512, 256), alpha=0.5),
    # anything else (e.g. the bundled digits): the demo's raw network
    "": dict(raw_hidden=(128, 64), alpha=0.5),
}

#: TinyDL's dictionary sizes (capped at m) and non-zeros as fractions of l
L_CANDIDATES = (100, 200)
K_FRACTIONS = (0.2, 0.4)

#: TinyDL's hidden-layer candidates, smallest first
HIDDEN_LADDER = ((16,), (32,), (64,), (64, 32), (128,), (128, 64), (256, 128))

#: the training recipes each learner's is chosen from on validation (the paper's first)
RECIPES = {
    "sgd-l2": dict(optimizer="sgd", loss="l2", learning_rate=0.01, momentum=0.9,
                   batch_size=32),
    "adam-l2": dict(optimizer="adam", loss="l2", learning_rate=3e-3, momentum=0.9,
                    batch_size=64),
}
PAPER_RECIPE = "sgd-l2"

#: input scalings TinyDL's is chosen from on validation
SCALINGS = ("standardize", "none")

PROTOCOL = (
    "split: a data set without a test set (Daily and Sports) gets a stratified random "
    "{test_pct:g}% test split (seed {split_seed}); UJIIndoorLoc tests on validationData.csv, "
    "ISOLET on isolet5.data. stream: the training set in {order} order{order_seed}, one pass, "
    "minus a stratified {val_pct:g}% validation hold-out (seed {split_seed}) on which every "
    "choice is made (each learner's recipe, TinyDL's scaling and size); retrain every "
    "{n_batch} samples on the last {window} for {epochs} epochs; both learners see the same "
    "stream.")


@dataclass(frozen=True)
class Settings:
    """Everything that decides a run; all of it is recorded in the JSON."""

    test_fraction: float = 0.2
    split_seed: int = 0
    order: str = "shuffled"          # "shuffled" (with stream_seed) or "file"
    stream_seed: int = 0
    val_fraction: float = 0.15
    min_reduction: float = 20.0      # TinyDL's candidates: at least this many times smaller
    recipes: Tuple[str, ...] = tuple(RECIPES)
    scalings: Tuple[str, ...] = SCALINGS
    n_batch: int = 256
    window: int = 2048
    epochs: int = 10
    window_policy: str = "sliding"   # the paper's, the raw network's schedule too
    rebuild: str = "never"           # the paper's
    raw_dropout: float = 0.2
    seed: int = 0
    profile: str = "jetson-tk1"
    host_profile: str = "x86-64-host"
    noise: str = "auto"              # "auto" (smart sensing only), "all" or "off"
    snrs: Tuple[Optional[float], ...] = (None, 15.0, 10.0)
    departures: bool = True
    quick: bool = False              # tiny settings for tests: small nets, capped data
    max_train: Optional[int] = None
    max_test: Optional[int] = None
    hidden_ladder: Tuple[Tuple[int, ...], ...] = HIDDEN_LADDER
    raw_hidden: Optional[Tuple[int, ...]] = None   # override the application's
    l_candidates: Optional[Tuple[int, ...]] = None  # override L_CANDIDATES
    # the hal backend both learners run on (None: hal.select_backend's choice); the
    # predictions for the profile price the profile's own backend whatever this is
    backend: Optional[str] = None

    def resolved(self) -> "Settings":
        """Quick mode's small settings filled in (explicit values win)."""
        if not self.quick:
            return self
        return dataclasses.replace(
            self, n_batch=min(self.n_batch, 64), window=min(self.window, 256),
            epochs=min(self.epochs, 3), max_train=self.max_train or 320,
            max_test=self.max_test or 150, hidden_ladder=((16,), (32,)),
            l_candidates=self.l_candidates or (32,),
            raw_hidden=self.raw_hidden or (64, 32))


def _log(msg):
    print(f"[reproduce] {msg}", file=sys.stderr, flush=True)


# -- noise ----------------------------------------------------------------------------------

def _holdout(y, fraction, seed, min_per_class: int = 0):
    """Stratified hold-out: boolean mask of the validation rows, ``max(round(fraction n_c),
    min_per_class)`` of a class of ``n_c`` (at least one and at most ``n_c - 2``; none of a
    class under three rows), the rest keeping their order."""
    rng = np.random.default_rng(seed + 1)   # not the test split's draw
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = max(int(round(fraction * len(idx))), int(min_per_class))
        n = min(max(n, 1), len(idx) - 2) if len(idx) >= 3 else 0
        mask[rng.permutation(idx)[:n]] = True
    return mask


def _transforms_for(m, l_candidates=None):
    """TinyDL's transform candidates ``(l, k)``: ``l`` in :data:`L_CANDIDATES` capped at
    ``m``, ``k`` in ``l/5`` and ``2l/5`` (at least 2); the same rule for every data set."""
    out = []
    for l in (l_candidates or L_CANDIDATES):
        l = int(min(l, m))
        for f in K_FRACTIONS:
            k = int(max(2, min(l, round(f * l))))
            if (l, k) not in out:
                out.append((l, k))
    return out


def _size_candidates(m, C, raw_params, st):
    """Every (params, l, k, hidden) at least ``min_reduction`` times smaller than the raw
    network, fewest parameters first; the smallest one alone if none is."""
    every = sorted((_n_params([l, *h, C]), l, k, tuple(h))
                   for l, k in _transforms_for(m, st.l_candidates) for h in st.hidden_ladder)
    ok = [c for c in every if c[0] * st.min_reduction <= raw_params]
    return ok or every[:1], bool(ok)


def _choose(runs, key):
    """The best validation accuracy; ties go to the earlier run (the candidates' order)."""
    best = None
    for r in runs:
        if r.get("run") is None:
            continue
        if best is None or r["run"].val_accuracy > best["run"].val_accuracy + 1e-12:
            best = r
    if best is None:
        raise DivergenceError(f"every {key} candidate diverged ({len(runs)})")
    return best


def _try_tiny(S, l, k, alpha, h, recipe, scaling, st, source, classes, what):
    params = _n_params([l, *h, len(classes)])
    rec = dict(l=l, k=k, hidden=list(h), params=params, recipe=recipe, scaling=scaling)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            run = run_tiny(S, l, k, alpha, h, st, source, classes, recipe=recipe,
                           standardize=scaling == "standardize")
    except DivergenceError as exc:
        rec["diverged"] = " ".join(str(exc).split())
        _log(f"{what}: TinyDL l={l} k={k} hidden={h} {recipe}/{scaling}: diverged")
        return dict(rec=rec, run=None)
    rec.update(val_accuracy=run.val_accuracy, test_accuracy=run.accuracy,
               train_s=run.train_s, transform_s=run.transform_s)
    _log(f"{what}: TinyDL l={l} k={k} hidden={h} ({params:,} params) {recipe}/{scaling}: "
         f"validation {run.val_accuracy:.4f}, test {run.accuracy:.4f}, trained in "
         f"{run.train_s:.1f} s")
    return dict(rec=rec, run=run)


def _streams(path: str, st: Settings):
    """The data set split as the protocol says: ``(ds, had_test, Xtr, ytr, fit_idx, val_idx,
    classes, S)`` with ``S`` the stream, validation and test arrays (see :func:`run_raw`)."""
    ds = load_real(path)
    had_test = ds.X_test is not None
    ds = split_dataset(ds, st.test_fraction, st.split_seed)
    Xtr, ytr, Xte, yte = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    if ds.X_test.shape[1] != Xtr.shape[1]:
        raise DataError(f"{path}: test set has {Xte.shape[1]} features, training set "
                        f"{Xtr.shape[1]}")
    if st.order not in ("shuffled", "file"):
        raise ValueError(f"order must be 'shuffled' or 'file', got {st.order!r}")
    n = len(Xtr)
    order = (np.random.default_rng(st.stream_seed).permutation(n) if st.order == "shuffled"
             else np.arange(n))
    val = _holdout(ytr[order], st.val_fraction, st.split_seed)
    fit_idx, val_idx = order[~val], order[val]
    if st.max_train:
        fit_idx = fit_idx[:st.max_train]
    if st.max_test:
        Xte, yte = Xte[:st.max_test], yte[:st.max_test]
    if len(fit_idx) < 2:
        raise DataError(f"{path}: only {len(fit_idx)} training sample(s) left to stream")
    if not len(val_idx):
        raise DataError(f"{path}: the validation hold-out is empty ({len(fit_idx)} training "
                        "samples): the settings cannot be chosen")
    classes = np.unique(np.concatenate([ytr, yte]))
    S = dict(X=Xtr[fit_idx], y=ytr[fit_idx], Xval=Xtr[val_idx], yval=ytr[val_idx], Xte=Xte,
             yte=yte)
    return ds, had_test, Xtr, ytr, fit_idx, val_idx, classes, S


def run_dataset(path: str, settings: Settings, source=None) -> dict:
    """Run the whole evaluation on one data set; a JSON-ready dict (see :func:`reproduce`)."""
    from hal.power import detect_source
    from hal.profile import load_profile
    st = settings.resolved()
    t_start = time.perf_counter()
    if source is None:
        source, _ = detect_source(profile=load_profile(st.host_profile))
    for r in st.recipes:
        if r not in RECIPES:
            raise ValueError(f"unknown recipe {r!r}; known: {', '.join(RECIPES)}")
    for sc in st.scalings:
        if sc not in SCALINGS:
            raise ValueError(f"unknown scaling {sc!r}; known: {', '.join(SCALINGS)}")
    ds, had_test, Xtr, ytr, fit_idx, val_idx, classes, S = _streams(path, st)
    app, yte = ds.application, S["yte"]
    m, C = Xtr.shape[1], len(classes)
    cfg = APPLICATIONS.get(app, APPLICATIONS[""])
    alpha = cfg["alpha"]
    raw_hidden = tuple(st.raw_hidden or cfg["raw_hidden"])
    raw_sizes = [m, *raw_hidden, C]
    raw_params = _n_params(raw_sizes)
    _log(f"{ds.name}: {app or 'unknown application'}, m={m}, {C} classes, stream "
         f"{len(fit_idx)}, validation {len(val_idx)}, test {len(yte)}; raw network "
         f"{'-'.join(map(str, raw_sizes))} ({raw_params:,} parameters)")

    # 1. the raw network's recipe, on validation
    raw_runs = {}
    for rname in st.recipes:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                raw_runs[rname] = run_raw(S, raw_hidden, st, source, classes, recipe=rname)
        except DivergenceError as exc:
            raw_runs[rname] = None
            _log(f"raw network {rname}: diverged ({' '.join(str(exc).split())})")
            continue
        r = raw_runs[rname]
        _log(f"raw network {rname}: test {r.accuracy:.4f}, validation {r.val_accuracy:.4f}, "
             f"trained in {r.train_s:.1f} s ({time.perf_counter() - t0:.1f} s with "
             "evaluations)")
    raw_choice = _choose([dict(name=k, run=v) for k, v in raw_runs.items()], "raw recipe")
    raw_recipe, raw = raw_choice["name"], raw_choice["run"]

    # 2. TinyDL's recipe and input scaling at the reference size, on validation
    cands, limited = _size_candidates(m, C, raw_params, st)
    l0, k0 = _transforms_for(m, st.l_candidates)[0]
    ref = [c for c in cands if (c[1], c[2]) == (l0, k0)] or cands
    _, l0, k0, h0 = ref[-1]
    tried = []
    stage1 = []
    for rname in st.recipes:
        for sc in st.scalings:
            t = _try_tiny(S, l0, k0, alpha, h0, rname, sc, st, source, classes,
                          "recipe/scaling")
            t["rec"]["stage"] = "recipe and scaling"
            stage1.append(t)
            tried.append(t["rec"])
    best1 = _choose(stage1, "TinyDL recipe/scaling")
    tiny_recipe, scaling = best1["rec"]["recipe"], best1["rec"]["scaling"]

    # 3. TinyDL's size: the most accurate on validation among candidates >= min_reduction x
    stage2 = []
    for params, l, k, h in cands:
        if (l, k, h) == (l0, k0, h0):
            stage2.append(best1)
            continue
        t = _try_tiny(S, l, k, alpha, h, tiny_recipe, scaling, st, source, classes, "size")
        t["rec"]["stage"] = "size"
        stage2.append(t)
        tried.append(t["rec"])
    best = _choose(stage2, "TinyDL size")   # candidates are in parameter order: ties -> fewer
    tiny = best["run"]
    l, k, hidden = best["rec"]["l"], best["rec"]["k"], tuple(best["rec"]["hidden"])
    why = (f"the most accurate on validation among {len(cands)} candidates at least "
           f"{st.min_reduction:g}x smaller than the raw network" if limited else
           f"no candidate is {st.min_reduction:g}x smaller than the raw network: the smallest")

    tiny_sizes = [l, *hidden, C]
    execution = exec_times(raw, tiny, S["Xte"])

    n_stream = len(fit_idx)
    measured = dict(
        energy_source=(f"measured ({source.name})" if source.name != "model" else
                       f"modeled ({st.host_profile} power model x measured seconds: the ratio "
                       "equals the runtime ratio)"),
        preprocess_ms=tiny.transform_s / n_stream * 1e3,
        train_time_ratio=raw.train_s / tiny.train_s,
        train_time_ratio_with_transform=raw.train_s / (tiny.train_s + tiny.transform_s),
        train_energy_ratio=raw.train_j / tiny.train_j,
        train_energy_ratio_with_transform=raw.train_j / (tiny.train_j + tiny.transform_j),
        train_s_raw=raw.train_s, train_s_tinydl=tiny.train_s, transform_s=tiny.transform_s,
        **execution)
    predicted = predicted_on_profile(st.profile, m, l, k, n_stream, raw_sizes, tiny_sizes, raw,
                                     tiny, st)
    size_reduction = raw_params / _n_params(tiny_sizes)

    def raw_fig(name):
        r = raw_runs.get(name)
        if r is None:
            return None
        return dict(accuracy=r.accuracy, val_accuracy=r.val_accuracy, train_s=r.train_s,
                    **RECIPES[name])
    raw_by_recipe = {name: raw_fig(name) for name in st.recipes}
    out = dict(
        dataset=ds.name, path=path, application=app, backend=tiny.model.backend_, m=m,
        n_classes=C,
        n_stream=n_stream, n_validation=int(len(val_idx)), n_test=int(len(yte)),
        split=("given" if had_test else
               f"stratified random {st.test_fraction:g} test split, seed {st.split_seed}"),
        order=st.order + (f" (seed {st.stream_seed})" if st.order == "shuffled" else ""),
        accuracy_raw=raw.accuracy, accuracy_tinydl=tiny.accuracy,
        val_accuracy_raw=raw.val_accuracy, val_accuracy_tinydl=tiny.val_accuracy,
        accuracy_raw_paper_recipe=(raw_by_recipe.get(PAPER_RECIPE) or {}).get("accuracy"),
        accuracy_raw_tinydl_recipe=(raw_by_recipe.get(tiny_recipe) or {}).get("accuracy"),
        preprocess_ms=measured["preprocess_ms"],
        train_energy_ratio=measured["train_energy_ratio"],
        train_time_ratio=measured["train_time_ratio"],
        train_time_ratio_with_transform=measured["train_time_ratio_with_transform"],
        exec_time_ratio=measured["exec_time_ratio"],
        exec_time_ratio_with_transform=measured["exec_time_ratio_with_transform"],
        size_reduction=size_reduction, measured=measured, predicted=predicted,
        paper=PAPER_TABLE_I.get(app),
        raw=dict(sizes=raw_sizes, params=raw_params, dropout=st.raw_dropout,
                 recipe=raw_recipe, recipe_rule="the more accurate on validation of "
                 + ", ".join(st.recipes) + f" (ties: {PAPER_RECIPE}, the paper's)",
                 recipes=raw_by_recipe, scaling="standardize"),
        tinydl=dict(l=l, k=k, alpha=alpha, hidden=list(hidden), sizes=tiny_sizes,
                    params=_n_params(tiny_sizes), atoms=int(tiny.model.transform_.n_atoms_),
                    recipe=tiny_recipe, scaling=scaling,
                    reference=dict(l=l0, k=k0, hidden=list(h0)),
                    chosen=why, candidates_tried=tried,
                    window_policy=st.window_policy, rebuild=st.rebuild),
        curves=dict(raw=raw.curve, tinydl=tiny.curve),
        settings=_settings_dict(st))

    if st.departures:
        out["departures"] = _departures(S, app, l, k, alpha, hidden, tiny_recipe, scaling, st,
                                        source, classes, tiny.accuracy, Xtr, ytr, fit_idx)
    if st.noise == "all" or (st.noise == "auto" and app == "smart-sensing"):
        out["noise"] = noise_experiment(S, ds.sample_shape, raw, tiny, raw_hidden, raw_recipe,
                                        l, k, alpha, hidden, tiny_recipe, scaling, st, source,
                                        classes, log=_log)
    out["wall_s"] = time.perf_counter() - t_start
    _log(f"{ds.name}: done in {out['wall_s']:.0f} s")
    return out


def _departures(S, app, l, k, alpha, hidden, recipe, scaling, st, source, classes, acc, Xtr,
                ytr, fit_idx):
    """Each departure from the paper the chosen settings make, measured against the paper's
    rule on TinyDL's test accuracy (same stream samples, same network)."""
    deps = []

    def measure(name, rule, l_, k_, recipe_=recipe, scaling_=scaling, **kw):
        try:
            with warnings.catch_warnings():
                # a diverging run warns of overflow on its way to DivergenceError
                warnings.simplefilter("ignore", RuntimeWarning)
                a, note = run_tiny(S, l_, k_, alpha, hidden, st, source, classes,
                                   recipe=recipe_, standardize=scaling_ == "standardize",
                                   **kw).accuracy, ""
        except DivergenceError as exc:
            # the paper's rule can fail outright (e.g. unscaled pixels): that is the finding
            a, note = None, " ".join(str(exc).split())
        deps.append(dict(name=name, paper_rule=rule, accuracy_ours=acc, accuracy_paper_rule=a,
                         note=note))
        _log(f"departure: {name}: {acc:.4f}; paper's rule: "
             f"{'diverged' if a is None else f'{a:.4f}'}")

    if scaling == "standardize":
        measure("per-feature standardization before the transform (chosen on validation)",
                "raw samples into Algorithm 2", l, k, scaling_="none")
    if recipe != PAPER_RECIPE:
        r = RECIPES[recipe]
        measure(f"training recipe {r['optimizer']}/{r['loss']}, learning rate "
                f"{r['learning_rate']:g} (chosen on validation)", "SGD with momentum, L2 loss",
                l, k, recipe_=PAPER_RECIPE)
    if st.order == "shuffled":
        idx = np.sort(fit_idx)   # the same samples, in the file's order
        measure(f"training stream shuffled (seed {st.stream_seed})",
                "not stated; file order measured", l, k, X=Xtr[idx], y=ytr[idx])
    if app == "smart-sensing" and (l, k) != (100, 20):
        measure(f"transform l={l}, k={k} (chosen by the size rule)", "l=100, k=20", 100, 20)
    return deps


def _settings_dict(st):
    d = dataclasses.asdict(st)
    d["snrs"] = [s for s in st.snrs]
    d["hidden_ladder"] = [list(h) for h in st.hidden_ladder]
    d["recipes"] = {name: RECIPES[name] for name in st.recipes}
    d["scalings"] = list(st.scalings)
    return d


def reproduce(paths: Sequence[str], settings: Settings = Settings()) -> Dict[str, dict]:
    """Run :func:`run_dataset` on each path.

    Returns
    -------
    dict
        File name -> result, each with at least ``accuracy_raw``, ``accuracy_tinydl``,
        ``preprocess_ms``, ``train_energy_ratio``, ``train_time_ratio``, ``exec_time_ratio``
        and ``size_reduction`` (measured here), ``predicted`` (the same on
        ``settings.profile``), ``paper`` (Table I's figures, where the paper has them).
    """
    for p in paths:   # fail before hours of work, not after
        if p not in ("digits",) and not os.path.exists(p):
            raise DataError(f"no such data file or folder: {p}")
    out = {}
    for p in paths:
        res = run_dataset(p, settings)
        key, i = os.path.basename(os.path.normpath(p)) if p != "digits" else "digits", 2
        base = key
        while key in out:
            key, i = f"{base}#{i}", i + 1
        out[key] = res
    return out
