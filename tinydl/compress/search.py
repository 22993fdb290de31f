"""The compiler's searches: the smallest passing value of one form, with or without refinement.

A search is given ``ok(v)``, whether the network with the form at value ``v`` (a rank, a
number of channels) stays within the budget on the validation data.  Without refinement ``ok``
is near-monotone and a bisection from the largest value finds the smallest passing one; with
refinement (:mod:`.refine`) it is not, and the doubling grid is searched instead
(:func:`search_up`).
"""
from __future__ import annotations

from .refine import refinable, refine_layers

__all__ = ["built", "search", "search_up", "form_search", "refine_fixed"]


def built(new_layers, in_shape):
    """``new_layers``, each built (its shapes fixed) in turn from ``in_shape``."""
    s = in_shape
    for la in new_layers:
        s = la.build(s)
    return new_layers


def search_up(lo, hi, ok):
    """Smallest v of the doubling grid ``lo, 2 lo, 4 lo, ...`` (capped at ``hi``) with
    ok(v).  For the refined forms, whose ok is far from monotone (a refined form can pass at
    a small rank and fail at a larger one): a bisection from the top would stop high, and a
    bisection below the first pass would check many more candidates on the same validation
    samples, each one more chance to pass by luck (on ``dsa-mlp``'s 228 validation samples
    that is what broke a 1% budget on test)."""
    v = lo
    while v < hi and not ok(v):
        v = min(2 * v, hi)
    return v


def search(lo, hi, ok):
    """Smallest v in [lo, hi] with ok(v), assuming ok(hi) holds (ok is near-monotone, so
    only values actually tested are ever returned)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def refine_fixed(layers, n_fit):
    """Names of the arrays a refinement keeps as they are: a factored layer's input-side
    factor ``U`` (m, r) when its input has more features than there are fitting rows.  Its
    gradient lies in those rows' span, so there it can only reshape how the fitting rows are
    read, and it has m r values to match n_fit rows with: on the Daily and Sports MLP (5,625
    inputs, 1,083 fitting rows) a refined rank-16 first layer agreed with the original on
    all but 0-1 fitting rows and flipped 25-26 of 380 validation rows.  ``V`` and the bias see
    every row through the r-dimensional code and are refined."""
    if any(la.kind == "factored" and la.arrays["U"].shape[0] > n_fit for la in layers):
        return ("U",)
    return ()


def _refined_search(ctx, make, ok_plain, steps, seed, seeds=1):
    """``(ok, forms)`` for the search with refinement: value ``v`` passes if ``make(v)``
    passes or, failing that, ``make(v)`` refined (:func:`~.refine.refine_layers`) towards the
    original network's outputs on the fitting inputs passes under each of ``seeds``
    refinement seeds ``seed, seed + 1, ...`` (the form kept is ``seed``'s): a refined form's
    verdict varies with the refinement's minibatch order (and with the BLAS rounding), and a
    rank that passes under one draw only is a lucky draw.  ``forms[v]`` is
    ``(passed, layers, refined)`` for every value tried."""
    forms = {}

    def refined(v, s):
        start = built(make(v), ctx.layer.in_shape)
        return refine_layers(start, ctx.x_fit, ctx.tail, ctx.target, steps=steps, seed=s,
                             fixed=refine_fixed(start, len(ctx.x_fit)), **ctx.refine_kw)

    def ok(v):
        if v not in forms:
            if ok_plain(v):
                forms[v] = (True, make(v), False)
            else:
                lay = refined(v, seed)
                passed = ctx.passes(lay)
                for s in range(seed + 1, seed + seeds):
                    passed = passed and ctx.passes(refined(v, s))
                forms[v] = (passed, lay, True)
        return forms[v][0]
    return ok, forms


def form_search(ctx, make, vmax, steps, seed):
    """The search of one form: ``(v, layers, refined)`` or None if nothing passes.  Without
    refinement a bisection from the largest value; with it the doubling grid
    (:func:`search_up`)."""
    ok, forms = ctx.ok_of(make), None
    if steps and ctx.target is not None and ctx.x_fit is not None and refinable(ctx.tail):
        ok, forms = _refined_search(ctx, make, ok, steps, seed, ctx.refine_seeds)
        v = search_up(1, vmax, ok)
        if not ok(v):
            return None
        return (v,) + forms[v][1:]
    if not ok(vmax):
        return None
    v = search(1, vmax, ok)
    return v, make(v), False
