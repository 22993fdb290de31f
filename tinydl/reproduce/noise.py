"""The noise experiment of the paper's Fig. 2: white Gaussian noise at a given SNR, and both
learners retrained on noisy streams with the settings chosen on clean data."""
from __future__ import annotations

import numpy as np

from .runs import run_raw, run_tiny

__all__ = ["add_noise", "noise_experiment"]


def add_noise(X, snr_db, rng, sample_shape=None):
    """Add white Gaussian noise at ``snr_db`` decibels.

    The signal power is the mean square of each recorded signal: of each channel of each
    sample when ``sample_shape`` is (time, channels) (a Daily and Sports segment: the 45
    sensors have different units and ranges), else of each sample.  Noise variance is that
    power over ``10 ** (snr_db / 10)``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    snr_db : float or None
        None returns ``X`` unchanged.
    rng : numpy.random.Generator
    sample_shape : (int, int), optional

    Returns
    -------
    ndarray of shape (n_samples, n_features), X's dtype
    """
    if snr_db is None:
        return X
    X = np.asarray(X)
    if sample_shape is not None and len(sample_shape) == 2:
        V = X.reshape(len(X), *sample_shape).astype(np.float64)
        power = np.mean(V ** 2, axis=1, keepdims=True)            # (n, 1, channels)
    else:
        V = X.astype(np.float64)
        power = np.mean(V ** 2, axis=1, keepdims=True)            # (n, 1)
    noise = rng.standard_normal(V.shape) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (V + noise).reshape(X.shape).astype(X.dtype)


# -- one data set ---------------------------------------------------------------------------


def noise_experiment(S, sample_shape, raw0, tiny0, raw_hidden, raw_recipe, l, k, alpha, hidden,
                     tiny_recipe, scaling, st, source, classes, log=None):
    """Fig. 2: train and test both noisy at each SNR, the chosen networks and recipes
    retrained (the settings are not chosen again).

    ``S`` holds the stream, validation and test arrays (``X, y, Xval, yval, Xte, yte``);
    ``raw0`` and ``tiny0`` are the noise-free runs; ``log`` (a callable taking one string)
    reports each SNR's accuracies.  Returns ``dict(definition=..., rows=[...])``, one row per
    SNR of ``st.snrs`` with both accuracies and their change from the noise-free run in points.
    """
    rows = []
    for snr in st.snrs:
        if snr is None:
            raw, tiny = raw0, tiny0
        else:
            rng = np.random.default_rng(st.seed + int(round(snr * 1000)))
            N = dict(S, X=add_noise(S["X"], snr, rng, sample_shape),
                     Xval=add_noise(S["Xval"], snr, rng, sample_shape),
                     Xte=add_noise(S["Xte"], snr, rng, sample_shape))
            raw = run_raw(N, raw_hidden, st, source, classes, recipe=raw_recipe)
            tiny = run_tiny(N, l, k, alpha, hidden, st, source, classes, recipe=tiny_recipe,
                            standardize=scaling == "standardize")
        rows.append(dict(snr_db=snr, accuracy_tinydl=tiny.accuracy, accuracy_raw=raw.accuracy,
                         train_s_tinydl=tiny.train_s + tiny.transform_s,
                         train_s_raw=raw.train_s, curve_tinydl=tiny.curve, curve_raw=raw.curve))
        if log is not None:
            log(f"noise SNR {snr if snr is not None else 'none'}: TinyDL "
                f"{tiny.accuracy:.4f}, raw {raw.accuracy:.4f}")
    base = rows[0]
    for r in rows:
        r["delta_tinydl_points"] = 100 * (r["accuracy_tinydl"] - base["accuracy_tinydl"])
        r["delta_raw_points"] = 100 * (r["accuracy_raw"] - base["accuracy_raw"])
    return dict(definition="additive white Gaussian noise; signal power = mean square of each "
                           "channel of each sample (of each sample for flat data); training, "
                           "validation and test sets all noisy; seed = seed + 1000 x SNR",
                rows=rows)
