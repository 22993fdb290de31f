"""Device targets for a compressed model: the time predicted on a device profile and the
memory and time checks that end a compilation (:class:`BudgetInfeasible` when missed)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import BudgetInfeasible
from .model import CompressedModel
from .runtime import predict_peak_bytes

__all__ = ["predict_time", "check_targets"]


def predict_time(model: CompressedModel, profile, batch: int = 1,
                 backend: Optional[str] = None) -> float:
    """Seconds for one batch on ``profile`` by hal's cost model (products as GEMMs, the sparse
    product and element-wise layers as vector work)."""
    from hal.cost import choose_backend, matmul_cost, vector_cost
    from hal.profile import load_profile
    profile = load_profile(profile)
    be = choose_backend(profile, backend)
    dt = model.dtype
    n = int(batch)
    t = 0.0
    for la in model.layers:
        a, k = la.arrays, la.kind
        if k == "dense":
            t += matmul_cost(profile, be, n, *a["W"].shape, dt)[0]
        elif k == "factored":
            t += matmul_cost(profile, be, n, *a["U"].shape, dt)[0]
            t += matmul_cost(profile, be, n, *a["V"].shape, dt)[0]
        elif k == "sparse_factored":
            t += matmul_cost(profile, be, n, *a["B"].shape, dt)[0]
            nnz = a["data"].size
            t += vector_cost(profile, be, 2.0 * n * nnz, n * nnz * (dt.itemsize + 4), 3,
                             n * nnz, dt)
        elif k == "conv":
            f, c, kh, kw = a["W"].shape
            ho, wo = la.out_shape[1:]
            t += matmul_cost(profile, be, n * ho * wo, c * kh * kw, f, dt)[0]
        elif k == "kernel_separated":
            f = la.out_shape[0]
            c, fr, kh = a["v"].shape
            kw = a["h"].shape[2]
            ho, wo = la.out_shape[1:]
            wp = la.in_shape[2] + 2 * la.cfg.get("padding", (0, 0))[1]
            t += matmul_cost(profile, be, n * ho * wp, kh, fr, dt, calls=c)[0]
            t += matmul_cost(profile, be, n * ho * wo, (fr // f) * c * kw, 1, dt, calls=f)[0]
        elif k != "flatten":
            size = n * int(np.prod(la.out_shape))
            t += vector_cost(profile, be, la.flops() * n, 2 * size * dt.itemsize, 1, size, dt)
    return float(t)


def check_targets(model, rep, profile, max_memory, max_time, batch):
    problems = []
    isz = model.dtype.itemsize
    where = ""
    if profile is not None:
        from hal.profile import load_profile
        prof = load_profile(profile)
        where = f" on {prof.tag}"
        flash = prof.memory.flash_bytes
        xip = flash > 0  # weights stay in flash; only activations take RAM
        peak = predict_peak_bytes(model.layers, model.input_shape, batch, isz,
                                  load_weights=not xip)
        rep.profile = prof.tag
        rep.predicted_peak_bytes = peak
        rep.predicted_time_s = predict_time(model, prof, batch)
        if max_memory is None:
            max_memory = flash if xip else prof.memory.capacity_bytes
        cap = prof.memory.capacity_bytes
        rep.targets["ram_bytes"] = cap
        if peak > cap:
            problems.append(f"the runtime needs {peak:,} bytes of RAM at batch {batch} "
                            f"(capacity {cap:,})")
        if max_time is not None:
            rep.targets["time_s"] = float(max_time)
            if rep.predicted_time_s > max_time:
                problems.append(f"a batch of {batch} takes {rep.predicted_time_s:.4g} s "
                                f"(target {max_time:.4g} s)")
    if max_memory is not None:
        rep.targets["model_bytes"] = int(max_memory)
        if model.nbytes > max_memory:
            problems.append(f"the weights take {model.nbytes:,} bytes (target {int(max_memory):,})")
    if problems:
        raise BudgetInfeasible(
            f"target not met{where} within a {100 * rep.budget:.2f}-point accuracy budget: "
            + "; ".join(problems) + f". The smallest model reached stores {model.nbytes:,} "
            f"bytes ({rep.memory_reduction:.1f}x smaller than {rep.bytes_before:,}) at "
            f"validation accuracy {100 * rep.accuracy_after:.2f}%",
            model=model, report=rep)
