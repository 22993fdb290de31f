"""The execution-phase columns of ``tinydl reproduce`` alone, in minutes instead of the whole
evaluation.

The execution runtime ratio (the raw network against TinyDL, one test sample at a time, with
and without the transform) depends on the two models' sizes, not on how well they learned:
OMP always makes its ``k`` iterations (no residual tolerance) and the networks' cost is their
shape.  :func:`exec_timing` therefore skips the selection (each candidate is a full training
run) and trains the raw network and TinyDL once each, at given settings - those a full run
chose, read from its JSON, or the protocol's reference size - on the same split and stream as
:func:`tinydl.reproduce.run_dataset`, with a shorter schedule (``epochs``, default 1), then
times the execution phase exactly as the full run does
(:func:`tinydl.reproduce.runs.exec_times`).  The accuracies it prints are those of the short
schedule, not the evaluation's.
"""
from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Optional

from .protocol import (
    APPLICATIONS,
    Settings,
    _n_params,
    _size_candidates,
    _streams,
    _transforms_for,
)
from .runs import exec_times, run_raw, run_tiny

__all__ = ["exec_timing", "chosen_settings"]


def chosen_settings(result: dict) -> dict:
    """TinyDL's and the raw network's settings from one data set's entry of a full run's
    JSON (``tinydl reproduce --json``): ``l, k, hidden, recipe, scaling, raw_recipe``."""
    t = result["tinydl"]
    return dict(l=int(t["l"]), k=int(t["k"]), hidden=tuple(int(h) for h in t["hidden"]),
                recipe=str(t["recipe"]), scaling=str(t["scaling"]),
                raw_recipe=str(result["raw"]["recipe"]))


def exec_timing(path: str, settings: Settings = Settings(epochs=1),
                chosen: Optional[dict] = None, source=None) -> dict:
    """Train the raw network and TinyDL once each on ``path``'s stream and time their
    execution phase as :func:`~tinydl.reproduce.run_dataset` does.

    Parameters
    ----------
    path : str
        A data set :func:`tinydl.data.load_real` reads.
    settings : Settings
        The split, stream and schedule (``epochs`` defaults to 1 here).
    chosen : dict, optional
        ``l, k, hidden, recipe, scaling, raw_recipe`` (:func:`chosen_settings`); default the
        protocol's reference size (the first transform candidate with the largest hidden rung
        the size limit allows), Adam/L2, standardized, and the paper's recipe for the raw
        network.
    source : hal.power source, optional

    Returns
    -------
    dict
        ``exec_time_ratio``, ``exec_time_ratio_with_transform``, ``exec_us_raw``,
        ``exec_us_tinydl``, ``exec_us_tinydl_with_transform``, the sizes and settings used,
        the short schedule's test accuracies and ``wall_s``.
    """
    from hal.power import detect_source
    from hal.profile import load_profile
    st = settings.resolved()
    t0 = time.perf_counter()
    if source is None:
        source, _ = detect_source(profile=load_profile(st.host_profile))
    ds, _, Xtr, _, fit_idx, _, classes, S = _streams(path, st)
    m, C = Xtr.shape[1], len(classes)
    cfg = APPLICATIONS.get(ds.application, APPLICATIONS[""])
    raw_hidden = tuple(st.raw_hidden or cfg["raw_hidden"])
    raw_sizes = [m, *raw_hidden, C]
    if chosen is None:
        cands, _ = _size_candidates(m, C, _n_params(raw_sizes), st)
        l0, k0 = _transforms_for(m, st.l_candidates)[0]
        ref = [c for c in cands if (c[1], c[2]) == (l0, k0)] or cands
        _, l0, k0, h0 = ref[-1]
        chosen = dict(l=l0, k=k0, hidden=h0, recipe="adam-l2", scaling="standardize",
                      raw_recipe="sgd-l2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        raw = run_raw(S, raw_hidden, st, source, classes, recipe=chosen["raw_recipe"])
        tiny = run_tiny(S, chosen["l"], chosen["k"], cfg["alpha"], tuple(chosen["hidden"]),
                        st, source, classes, recipe=chosen["recipe"],
                        standardize=chosen["scaling"] == "standardize")
    out = exec_times(raw, tiny, S["Xte"])
    out.update(dataset=ds.name, path=path, application=ds.application, m=m,
               n_stream=int(len(fit_idx)), n_test=int(len(S["yte"])),
               raw_sizes=raw_sizes, tinydl_sizes=[chosen["l"], *chosen["hidden"], C],
               chosen={k: (list(v) if isinstance(v, tuple) else v) for k, v in chosen.items()},
               backend=tiny.model.backend_, epochs=st.epochs,
               accuracy_raw_short=raw.accuracy, accuracy_tinydl_short=tiny.accuracy,
               settings=dataclasses.asdict(st), wall_s=time.perf_counter() - t0)
    out["settings"]["hidden_ladder"] = [list(h) for h in st.hidden_ladder]
    out["key"] = os.path.basename(os.path.normpath(path)) if path != "digits" else "digits"
    return out
