"""The customizer's options for one configuration and the standardization rule on the data:
the storage, policy, decode-tile, chunk and minibatch options in the order
:func:`tinydl.customize.plan` takes the first that fits (the rule is stated in
:mod:`tinydl.customize`), and :func:`scaling_rule`."""
from __future__ import annotations

from typing import Dict

import numpy as np

from .lowmem import DECODE_LADDER, DECODE_ROWS, PRODUCT_LADDER
from .plan import BATCH_SIZE, N_STANDARDIZE

__all__ = ["CHUNK_LADDER", "BATCH_LADDER", "LEAN_NETWORK", "SCALE_SPREAD", "scaling_rule"]

CHUNK_LADDER = (256, 128, 64, 32, 16, 8, 4, 2, 1)
#: the network's minibatch, largest first: a smaller one only when nothing fits at the larger
#: (its gather scratch, activations and per-call buffers scale with it)
BATCH_LADDER = (BATCH_SIZE, 32, 16, 8)
#: the network's training state when nothing fits with Adam at any minibatch: Adafactor
#: (Adam's second moment factored per weight matrix, no first moment: r + c numbers per
#: r x c matrix instead of 2 r c) and the first layer's dense product on the scattered codes
#: (no (batch x k, units) gather scratch); 8 bytes per parameter (weights and gradients)
#: instead of 16, so a budget that held a first hidden layer of 32 holds one of 64
LEAN_NETWORK = ("adafactor", "dense")
#: the standardization rule (data given): per-feature standardization when the features'
#: ranges over the sample rows spread over more than this factor (90th over 10th percentile of
#: the features that vary), i.e. when they are on different scales (units)
SCALE_SPREAD = 10.0


def scaling_rule(X) -> Dict:
    """Whether to standardize each feature before the transform, by a rule on a sample of the
    training data (:func:`tinydl.cli._common.tuning_rows`: every 20th row of the file).

    Rule: standardize when the ranges ``max - min`` of the features that vary spread over more
    than :data:`SCALE_SPREAD` (10) times, 90th percentile over 10th; otherwise the features
    share one scale and standardization would only reweight them by how often they vary.  Why:
    per-feature standardization brings features measured in different units to one scale
    (Daily and Sports: accelerometer, gyroscope and magnetometer channels; ranges spread
    19.4x; standardized codes 89.0% against 78.7%, ``docs/reproduce.md``), but where the
    features share a scale and are mostly "absent" (UJIIndoorLoc's RSSI, 97% of the values
    at the "not detected" floor; ranges spread 3.8x), a feature seen in one warm-up row of
    256 gets a scale of ~0.004 and is amplified ~250x: the plan path on the 2 MiB plan went
    from 85.2% (standardized) to 90.9% (not) on UCI's test split, and ``tinydl reproduce``
    chose "none" for it on its validation hold-out.

    Parameters
    ----------
    X : array-like of shape (n_rows, m)

    Returns
    -------
    dict
        ``standardize`` (bool), ``spread`` (float; 0 when fewer than two features vary) and
        ``rule`` (the sentence, for the plan's reason).
    """
    X = np.asarray(X, dtype=np.float64)
    rng = X.max(axis=0) - X.min(axis=0) if len(X) else np.zeros(X.shape[1])
    live = rng[rng > 0]
    spread = float(np.quantile(live, 0.9) / np.quantile(live, 0.1)) if live.size >= 2 else 0.0
    std = spread > SCALE_SPREAD
    rule = (f"feature ranges spread {spread:.1f}x (90th/10th percentile over {len(X)} sample "
            f"rows) {'>' if std else '<='} {SCALE_SPREAD:g}x: "
            f"{'standardize' if std else 'no standardization'}")
    return dict(standardize=bool(std), spread=spread, rule=rule)


def _options(chunks, dtype, dictionary_dtype, n_samples, standardize=None, sparse_nnz=None):
    """The storage, rebuild, standardization and chunk options of one configuration, in the
    order of preference (the first that fits the budget is taken): groups of options that
    differ only by chunk (largest first).  ``sparse_nnz``: also int8 atoms kept as their
    ``sparse_nnz`` largest entries, right after the dense int8 ones."""
    from .footprint import storage_dtype
    storage_dtype(dictionary_dtype, dtype)
    ddts = [dictionary_dtype] if dictionary_dtype else [dtype, "float16", "int8"]
    ddts = [(dd, None) for dd in ddts] + ([("int8", int(sparse_nnz))]
                                          if sparse_nnz and "int8" in ddts else [])
    run_n = _running_warmup(n_samples)
    policies = ((True, "hold", N_STANDARDIZE), (False, "hold", N_STANDARDIZE),
                (False, "running", run_n))
    if standardize is False:
        policies = ((False, "off", N_STANDARDIZE),)
    out = []
    for lean, batch in [(lean, b) for lean in (False, True) for b in BATCH_LADDER]:
        opt, product = LEAN_NETWORK if lean else ("adam", "gather")
        for dd, nnz in ddts:
            for raw, stdz, nstd in policies:
                # a stored (narrower) dictionary keeps no D.T copy; it decodes 16 atoms at a
                # time, then 1 (tinydl.lowmem.DECODE_LADDER), then packs Li below G's
                # diagonal while it fills (one l x l array fewer; only the fill's Wp test is
                # slower: hal.backends.numpy.packed); last, the backend's product tiles of 4
                # rows, then 1, instead of 16 (tinydl.lowmem.PRODUCT_LADDER; slower always)
                stored = dd in ("float16", "int8")
                P0 = PRODUCT_LADDER[0]
                if stored:
                    tiles = [(False, r, P0, False) for r in DECODE_LADDER] + \
                        [(False, DECODE_LADDER[-1], rows, True) for rows in PRODUCT_LADDER]
                else:
                    tiles = [(True, DECODE_ROWS, P0, False), (False, DECODE_ROWS, P0, False)] \
                        + [(False, DECODE_ROWS, rows, False) for rows in PRODUCT_LADDER[1:]]
                for dtc, dec, rows, packed in tiles:
                    out.append([dict(ddtype=dd, raw=raw, standardize=stdz, n_standardize=nstd,
                                     chunk=ch, dt_copy=dtc, batch=batch, decode=dec,
                                     rows=rows, packed=packed, optimizer=opt,
                                     product=product, nnz=nnz)
                                for ch in chunks])
    return out


def _first_fit(groups, fp_of, cap):
    """The first option of ``groups`` (lists of options that differ only by chunk, largest
    chunk first) whose footprint fits ``cap``, and that footprint; else the last group's last
    (cheapest) option and its footprint.  Within a group the footprint only shrinks with the
    chunk: a group whose smallest chunk does not fit is skipped after one evaluation, and the
    largest fitting chunk is found by bisection.  The last option (the narrowest storage, no
    statistics buffers or the running ones, the smallest minibatch and chunk) is the cheapest
    of all: when it does not fit, nothing does, and it is returned at once."""
    last = groups[-1][-1]
    least = fp_of(last)
    if least > cap:
        return last, least
    for group in groups:
        if fp_of(group[-1]) > cap:
            continue
        lo, hi = 0, len(group) - 1          # group[hi] fits
        while lo < hi:
            mid = (lo + hi) // 2
            if fp_of(group[mid]) <= cap:
                hi = mid
            else:
                lo = mid + 1
        return group[hi], fp_of(group[hi])
    return last, least


def _running_warmup(n_samples) -> int:
    """Warm-up rows of ``standardize="running"`` (not learned from): 256, or a sixteenth of a
    stream of known length, at least 32."""
    if not n_samples:
        return N_STANDARDIZE
    return int(min(N_STANDARDIZE, max(32, int(n_samples) // 16)))
