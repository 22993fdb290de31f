"""Measure this machine and write a :class:`~hal.profile.DeviceProfile` (``tinydl calibrate``).

What is measured, in order (each kernel is checked against the NumPy reference before it is
timed, and a backend that fails the check or cannot run is skipped with the reason recorded):

1. memory bandwidth (STREAM-like copy, GB/s);
2. per backend and dtype: per-call overhead and matrix-product throughput at the three size
   classes of :data:`hal.profile.SIZE_CLASS_FLOPS`; vector (elementwise) throughput;
3. the transform's cost over a grid of (m, l, k), fitted to the model of :mod:`hal.cost`
   (constants ``c1``, ``c2`` and calls per iteration, by non-negative least squares on
   relative error);
4. the trainer's calls per layer, when the caller passes ``train_epoch`` (``tinydl
   calibrate`` passes its MLP trainer; hal itself knows no network);
5. power, from the best source :func:`hal.power.detect_source` finds (else the base profile's
   model, recorded as such).
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cost import predict_training_epoch, transform_parts
from .profile import (
    SIZE_CLASSES,
    VECTOR_CLASS_ELEMS,
    BackendSpec,
    DeviceProfile,
    MemorySpec,
    TrainingModel,
    TransformModel,
    load_profile,
)

__all__ = ["calibrate", "Progress", "time_call", "measure_bandwidth", "check_backend",
           "measure_matmul", "measure_vector", "measure_transform_grid", "fit_transform",
           "nnls_small", "measure_training", "MATMUL_SHAPES", "DEFAULT_GRID", "QUICK_GRID"]

#: (n, p, q) of the product timed for each size class (2 n p q = SIZE_CLASS_FLOPS)
MATMUL_SHAPES = {"small": (32, 128, 64), "medium": (64, 1024, 128), "large": (64, 4096, 256)}
DEFAULT_GRID = {"m": (256, 1024, 4096), "l": (64, 128, 256), "k": (4, 12, 24), "n": 1024}
QUICK_GRID = {"m": (128, 512), "l": (32, 64), "k": (4, 8), "n": 256}


class Progress:
    """A plain-text progress bar on stderr: ``[#####.....] 12/40 label``."""

    def __init__(self, total: int, enabled: bool = True, stream=None, width: int = 30):
        self.total, self.done, self.enabled = max(total, 1), 0, enabled
        self.stream = stream or sys.stderr
        self.width = width

    def step(self, label: str = "", to: Optional[int] = None) -> None:
        """Advance one step (or to step ``to``) and redraw."""
        self.done = min(self.done + 1 if to is None else max(to, self.done), self.total)
        if self.enabled:
            fill = self.width * self.done // self.total
            bar = "#" * fill + "." * (self.width - fill)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label[:40]:<40}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def time_call(fn, min_time: float = 0.05, repeats: int = 5) -> float:
    """Seconds per call of ``fn()``: the median of ``repeats`` timings, each running ``fn``
    often enough to last about ``min_time / repeats`` (after one warm-up call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / repeats / once))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return float(np.median(times))


def measure_bandwidth(quick: bool = False) -> float:
    """Sustained memory bandwidth in GB/s: a copy between arrays much larger than the caches
    (bytes read plus bytes written, best of several)."""
    n = (8 if quick else 64) * 2 ** 20 // 8
    a = np.ones(n)
    b = np.empty_like(a)
    t = time_call(lambda: np.copyto(b, a), min_time=0.05 if quick else 0.4, repeats=3)
    return 2.0 * a.nbytes / t / 1e9


def _reference_omp(X, D, G, k):
    from .backends.numpy import NumpyBackend
    return NumpyBackend().omp_encode(X, D, G, k)


def check_backend(be, dtype, rng: np.random.Generator) -> Optional[str]:
    """Compare the backend's ops with the NumPy reference; ``None`` if they agree within the
    backend's stated tolerance, else what differed."""
    dt = np.dtype(dtype)
    rtol = float(getattr(be, "rtol", {}).get(dt.name, 1e-4 if dt == np.float32 else 1e-10))
    rtol = max(rtol, 1e-5 if dt == np.float32 else 1e-12)
    a = rng.standard_normal((37, 70)).astype(dt)
    b = rng.standard_normal((70, 29)).astype(dt)
    bias = rng.standard_normal(29).astype(dt)
    D = rng.standard_normal((24, 70)).astype(dt)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    checks = [("matmul", lambda: be.matmul(a, b), a @ b),
              ("correlate", lambda: be.correlate(a, D), a @ D.T),
              ("dense_forward", lambda: be.dense_forward(a, b, bias), a @ b + bias)]
    for op, fn, ref in checks:
        try:
            got = np.asarray(fn())
        except Exception as exc:
            return f"{op} raised {type(exc).__name__}: {exc}"
        scale = np.abs(ref).max()
        err = float(np.abs(got - ref).max() / scale) if got.shape == ref.shape else np.inf
        if not err <= 10 * rtol:
            return f"{op} differs from numpy by {err:.2e} (relative), tolerance {10 * rtol:.1e}"
    G = D @ D.T
    try:
        res = be.omp_encode(a, D, G, 5)
    except Exception as exc:
        return f"omp_encode raised {type(exc).__name__}: {exc}"
    ref = _reference_omp(a, D, G, 5)
    xx = np.einsum("ij,ij->i", a, a)
    err = float(np.abs(np.asarray(res.residual_sq) - ref.residual_sq).max() / xx.max())
    if not err <= 1e-3:
        return f"omp_encode residuals differ from numpy by {err:.2e} of |x|^2"
    return None


def measure_matmul(be, dtype, quick: bool = False) -> Tuple[float, Dict[str, float]]:
    """``(call_overhead_s, {size_class: GFLOP/s})`` of ``be.matmul``."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(1)
    mt = 0.02 if quick else 0.3
    t1 = np.ones((1, 2), dt), np.ones((2, 1), dt)
    overhead = time_call(lambda: be.matmul(*t1), min_time=mt / 2)
    out = {}
    for sc in SIZE_CLASSES:
        n, p, q = MATMUL_SHAPES[sc]
        a = rng.standard_normal((n, p)).astype(dt)
        b = rng.standard_normal((p, q)).astype(dt)
        t = time_call(lambda: be.matmul(a, b), min_time=mt)
        out[sc] = 2.0 * n * p * q / max(t - overhead, 0.1 * t) / 1e9
    return overhead, out


def measure_vector(dtype, quick: bool = False) -> Dict[str, float]:
    """GFLOP/s of an in-place subtract (``c -= t``, one FLOP per element) at each vector size
    class, net of the call's fixed cost: the kind of work in OMP's iterations and in an
    optimizer's update."""
    dt = np.dtype(dtype)
    mt = 0.02 if quick else 0.2
    one = np.ones(1, dt)
    overhead = time_call(lambda: np.subtract(one, one, out=one), min_time=mt / 2)
    out = {}
    for sc in SIZE_CLASSES:
        n = VECTOR_CLASS_ELEMS[sc]
        c, t_ = np.ones(n, dt), np.full(n, 1e-9, dt)
        t = time_call(lambda: np.subtract(c, t_, out=c), min_time=mt)
        out[sc] = n / max(t - overhead, 0.1 * t) / 1e9
    return out


def _transform_data(m, l, n, dtype, rng):
    D = rng.standard_normal((l, m))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((n, m))
    return X.astype(dtype), D.astype(dtype)


def measure_transform_grid(be, dtype, grid=None, quick: bool = False,
                           progress: Optional[Progress] = None) -> List[Dict]:
    """Seconds of ``be.omp_encode`` for ``n`` samples at every (m, l, k) of ``grid``."""
    grid = grid or (QUICK_GRID if quick else DEFAULT_GRID)
    rng = np.random.default_rng(2)
    rows = []
    for m, l in itertools.product(grid["m"], grid["l"]):
        X, D = _transform_data(m, l, grid["n"], dtype, rng)
        G = D @ D.T
        for k in grid["k"]:
            t = time_call(lambda: be.omp_encode(X, D, G, k), min_time=0.0, repeats=3)
            rows.append(dict(m=m, l=l, k=k, n=grid["n"], seconds=t))
            if progress:
                progress.step(f"transform {m}/{l}/{k}")
    return rows


def nnls_small(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a few columns: the best least-squares solution over
    every subset of columns whose coefficients are all >= 0 (exact for a handful)."""
    n = A.shape[1]
    best, best_err = np.zeros(n), float(y @ y)
    for r in range(1, n + 1):
        for cols in itertools.combinations(range(n), r):
            sub = A[:, cols]
            coef = np.linalg.lstsq(sub, y, rcond=None)[0]
            if (coef >= 0).all():
                err = float(np.sum((sub @ coef - y) ** 2))
                if err < best_err:
                    best_err, best = err, np.zeros(n)
                    best[list(cols)] = coef
    return best


def fit_transform(profile: DeviceProfile, rows: Sequence[Dict], backend: str,
                  dtype) -> TransformModel:
    """Fit ``c1``, ``c2`` and calls per iteration to measured transform times (the
    correlation and fixed parts are priced from the profile's measured throughputs), on
    relative error so that small and large settings weigh alike."""
    A, y = [], []
    for r in rows:
        P = transform_parts(profile, r["m"], r["l"], r["k"], r["n"], dtype, backend)
        w = 1.0 / r["seconds"]
        A.append([P["u1"] * w, P["u2"] * w, P["u_calls"] * w])
        y.append((r["seconds"] - P["corr_t"] - P["fixed_t"]) * w)
    c1, c2, calls = nnls_small(np.array(A), np.array(y))
    return TransformModel(c1_flops=float(c1), c2_flops=float(c2),
                          calls_per_iteration=float(calls), source="measured",
                          note=f"fitted to {len(rows)} (m, l, k) settings of the {backend} "
                               f"backend's omp_encode in {np.dtype(dtype).name}")


def measure_training(profile: DeviceProfile, backend: str = "numpy", quick: bool = False,
                     train_epoch: Optional[Callable[[np.ndarray, np.ndarray, Sequence[int]],
                                                    None]] = None
                     ) -> Optional[TrainingModel]:
    """Fit the trainer's calls per layer from timed one-epoch fits of small networks.

    Parameters
    ----------
    profile : DeviceProfile
        The profile being built (its ``backend`` figures price the FLOPs of each epoch).
    backend : str
        Whose figures to use.
    quick : bool
        1024 samples and one repeat instead of 4096 and three.
    train_epoch : callable, optional
        ``train_epoch(X, y, hidden)`` trains one epoch of an MLP with hidden layers
        ``hidden`` (batch 32, float32, l2 loss) on ``X`` (n, n_in) float32 and labels
        ``y`` (n,) in 0..9.  hal knows no network: the caller (``tinydl calibrate``) passes
        its trainer here.

    Returns
    -------
    TrainingModel or None
        ``None`` when no ``train_epoch`` is given.
    """
    if train_epoch is None:
        return None
    rng = np.random.default_rng(3)
    spec = profile.backend(backend)
    base = replace(profile, training_model=TrainingModel(calls_per_layer=0.0))
    num = den = 0.0
    n = 1024 if quick else 4096
    hidden = (64, 32)
    for n_in in (32, 128):
        X = rng.standard_normal((n, n_in)).astype(np.float32)
        y = rng.integers(0, 10, n)
        t = time_call(lambda: train_epoch(X, y, hidden), min_time=0.0,
                      repeats=1 if quick else 3)
        sizes = [n_in, *hidden, 10]
        t0 = predict_training_epoch(base, sizes, n, 32, "float32", backend).seconds
        unit = -(-n // 32) * (len(sizes) - 1) * spec.call_overhead_s
        num += (t - t0) * unit / t ** 2
        den += unit * unit / t ** 2
    calls = max(num / den, 0.0) if den else 0.0
    return TrainingModel(calls_per_layer=float(calls), source="measured",
                         note="fitted to one-epoch MLP fits of [32|128, 64, 32, 10]")


def _measure_power(src, quick: bool) -> Tuple[float, float]:
    """Idle watts (sleeping) and watts with one core busy in matrix products."""
    dur = 0.3 if quick else 1.5
    src.start()
    time.sleep(dur)
    idle = src.stop().watts
    a = np.ones((256, 256))
    src.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < dur:
        a @ a
    busy = src.stop().watts
    return idle, max(busy - idle, 0.0)


def calibrate(tag: str = "this-host", name: Optional[str] = None, quick: bool = False,
              backends: Optional[Sequence[str]] = None,
              dtypes: Sequence[str] = ("float32", "float64"),
              power_csv: Optional[str] = None, power_root: str = "/",
              base="x86-64-host", progress: bool = True,
              grid=None, train_epoch=None) -> Tuple[DeviceProfile, Dict]:
    """Measure this machine; return ``(profile, report)``.

    Parameters
    ----------
    tag, name : str
        The new profile's tag and name.
    quick : bool
        A few seconds instead of a couple of minutes (smaller arrays, a 2x2x2 grid).
    backends : sequence of str, optional
        Backends to time (default: every registered one that can run, except ``null``).
    power_csv : str, optional
        An external meter's log (timestamp, watts), covering the calibration run.
    power_root : str
        Root of the sysfs tree the power sources read (tests pass a fake one).
    base : str or DeviceProfile
        Profile whose unmeasured figures (the power model when no counter is readable) are
        kept.
    grid : dict, optional
        The (m, l, k, n) grid of the transform's fit (default :data:`DEFAULT_GRID`, or
        :data:`QUICK_GRID` when ``quick``).
    train_epoch : callable, optional
        See :func:`measure_training`; without it the base profile's training model is kept.

    Returns
    -------
    profile : DeviceProfile
    report : dict
        ``skipped`` backends with reasons, ``power_decisions``, the ``transform_grid`` rows.
    """
    import psutil

    import hal

    from .power import ModelSource, detect_source

    base = load_profile(base)
    avail = hal.available_backends()
    names = list(backends) if backends else [b for b in avail if b != "null"]
    grid = grid or (QUICK_GRID if quick else DEFAULT_GRID)
    n_grid = len(grid["m"]) * len(grid["l"]) * len(grid["k"])
    bar = Progress(2 + len(names) * len(dtypes) + n_grid + 2, enabled=progress)
    report: Dict = {"skipped": {}, "power_decisions": [], "transform_grid": []}
    rng = np.random.default_rng(0)

    bw = measure_bandwidth(quick)
    bar.step("memory bandwidth")
    vec = {dt: measure_vector(dt, quick) for dt in dtypes}
    bar.step("vector throughput")
    specs: List[BackendSpec] = []
    for i, bname in enumerate(names):
        if i:  # a skipped backend still moves the bar by its share
            bar.step(f"{names[i - 1]} done", to=2 + i * len(dtypes))
        ok, why = avail.get(bname, (False, "not registered"))
        if bname == "null":
            ok, why = False, "the null backend counts work and runs nothing: not timed"
        if not ok:
            report["skipped"][bname] = why
            continue
        try:
            be = hal.get_backend(bname)
        except Exception as exc:  # a backend that cannot start is skipped, not fatal
            report["skipped"][bname] = f"{type(exc).__name__}: {exc}"
            continue
        rows, overheads, problem = [], [], None
        try:
            for dt in dtypes:
                problem = check_backend(be, dt, rng)
                if problem:
                    break
                ovh, gf = measure_matmul(be, dt, quick)
                overheads.append(ovh)
                rows += [(dt, "matmul", sc, float(v)) for sc, v in gf.items()]
                rows += [(dt, "vector", sc, float(v)) for sc, v in vec[dt].items()]
                bar.step(f"{bname} {dt}")
        finally:
            be.close()
        if problem:
            report["skipped"][bname] = f"failed the check against numpy: {problem}"
            continue
        # a value that survives the file's microseconds unchanged (see DeviceProfile.to_toml)
        ovh_s = float(f"{float(np.median(overheads)) * 1e6:.12g}") * 1e-6
        specs.append(BackendSpec(bname, ovh_s, tuple(rows), "measured",
                                 "tinydl calibrate: matmul timed per size class; vector "
                                 "figures are numpy's elementwise ops"))
    bar.step("backends done", to=2 + len(names) * len(dtypes))
    if not specs:
        raise ValueError(f"no backend could be calibrated: {report['skipped']}")
    measured = {s.name for s in specs}
    pref = tuple(b for b in base.backend_preference if b in measured) or (specs[0].name,)
    mem = MemorySpec(capacity_bytes=int(psutil.virtual_memory().total), bandwidth_gbs=bw,
                     flash_bytes=0, source="measured",
                     note="STREAM-like copy of 64 MiB arrays, one thread; capacity from psutil")
    prof = replace(base, tag=tag, name=name or f"calibrated host ({tag})",
                   description=f"measured by tinydl calibrate on {os.uname().machine} with "
                               f"{os.cpu_count()} logical CPUs", training=True, threads=1,
                   backend_preference=pref, memory=mem, backends=tuple(specs), path=None)

    ref_name = "numpy" if "numpy" in measured else specs[0].name
    fit_dtype = dtypes[0]
    be = hal.get_backend(ref_name)
    try:
        rows = measure_transform_grid(be, fit_dtype, grid, quick, bar)
    finally:
        be.close()
    report["transform_grid"] = rows
    prof = replace(prof, transform=fit_transform(prof, rows, ref_name, fit_dtype))
    tm = measure_training(prof, ref_name, quick, train_epoch)
    report["training_fit"] = tm is not None
    if tm is not None:
        prof = replace(prof, training_model=tm)
    bar.step("trainer")

    src, decisions = detect_source(power_root, power_csv, base)
    report["power_decisions"] = decisions
    if isinstance(src, ModelSource):
        power = replace(base.power, measured_with="model",
                        note=f"no readable energy source ({'; '.join(d for _, d in decisions[:-1])}"
                             f"); figures kept from the {base.tag} profile's model")
    else:
        try:
            idle, per_unit = _measure_power(src, quick)
            power = replace(base.power, idle_w=idle, active_w_per_unit=per_unit,
                            units=os.cpu_count() or 1, measured_with=src.name,
                            source="measured", note=f"measured with {src.name}: idle while "
                            "sleeping, one core busy in matrix products")
        except (OSError, ValueError) as exc:  # a counter that fails mid-run: fall back
            report["power_decisions"].append((src.name, f"failed while measuring: {exc}"))
            power = replace(base.power, measured_with="model",
                            note=f"{src.name} failed while measuring ({exc}); figures kept "
                                 f"from the {base.tag} profile's model")
    prof = replace(prof, power=power)
    bar.step("power")
    bar.close()
    return prof, report
