"""Cost model: time, peak memory and energy of a transform batch, a training epoch and an
inference call, from shapes, dtype, backend and a :class:`~hal.profile.DeviceProfile`.

Every operation is priced as a roofline plus a fixed cost per call::

    seconds = calls * call_overhead + max(flops / throughput, bytes / bandwidth)

with the backend's throughput for the op class (``matmul`` for products, ``vector`` for
elementwise and small batched work) interpolated at the call's size.  Energy is the profile's
power model times the time (or, where the profile gives energy per FLOP and per byte, those on
top of idle power).

The transform (Batch-OMP, :mod:`hal.backends.numpy`) costs per sample ``2 m l`` FLOPs for the
correlation (blocked matrix products) and ``sum_t (c1 l + c2 t l)`` FLOP-equivalents for the
``k`` OMP iterations, plus ``calls_per_iteration`` calls per batch and iteration; ``c1``, ``c2``
and the calls are fitted by ``tinydl calibrate`` on a grid of (m, l, k).

The execution phase (:func:`predict_inference` with a transform; ``kernels="execution"``) is
priced on the kernels :mod:`hal.execution` picks for the backend: on a ``compiled_execution``
backend (``blas``, ``mpi``, ``multiprocessing``) where the native kernels build, and on
``native``, those are the per-row kernels (``transform_parts(per_row=True)``): the
correlations of the rows actually given (no zero-padded block), the same OMP FLOP-equivalents,
and one call per encode instead of ``calls_per_iteration`` per iteration and batch (the
iterations are a C loop), with the figures of the backend that runs them where the profile has
them (else the training backend's); one sample with a transform is the learner's fused
one-sample predict there (encode and network in that one call: the layers carry no call
overhead of their own).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .profile import DeviceProfile, ProfileError, load_profile

__all__ = ["Prediction", "predict_transform", "predict_training_epoch", "predict_inference",
           "matmul_cost", "vector_cost", "choose_backend", "energy_joules", "fits_in_memory",
           "transform_parts"]

#: backends that spread work over the profile's ``threads`` units (the others use one)
_PARALLEL = ("multiprocessing", "mpi", "opencl")


@dataclass(frozen=True)
class Prediction:
    """A predicted cost.

    Attributes
    ----------
    seconds : float
    peak_bytes : int
        Largest memory held at once (inputs, parameters, workspaces, outputs).
    joules : float
    flops : float
    bytes : float
        Bytes moved to and from memory (the roofline's other axis).
    breakdown : tuple of (str, float)
        Seconds per part (``correlation``, ``omp_iterations``, ``call_overhead``...).
    backend : str
    """

    seconds: float
    peak_bytes: int
    joules: float
    flops: float
    bytes: float
    breakdown: Tuple[Tuple[str, float], ...]
    backend: str = ""

    def part(self, name: str) -> float:
        """Seconds of one part of the breakdown (0 if absent)."""
        return float(sum(s for n, s in self.breakdown if n == name))


@functools.lru_cache(maxsize=64)
def _dtype(dtype) -> Tuple[str, int]:
    # cached: the customizer prices thousands of configurations
    dt = np.dtype(dtype)
    if dt.name not in ("float32", "float64"):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt.name, dt.itemsize


def _pos(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def choose_backend(profile: DeviceProfile, backend: Optional[str] = None) -> str:
    """The backend a plan for ``profile`` is priced on: exactly what
    :func:`hal.select_backend` decides for it (``backend``, then ``TINYDL_BACKEND``, then the
    profile's preferences, then the fastest that runs here), so the plan is priced on the
    backend that will run.

    Raises
    ------
    ProfileError
        When the chosen backend has no figures in ``profile`` (the message says to run
        ``tinydl calibrate``).
    hal.BackendUnavailable
        When ``backend`` (or ``TINYDL_BACKEND``) names a backend that cannot run here.
    """
    from . import select_backend
    chosen, decisions = select_backend(backend, profile=profile)
    if chosen not in profile.backend_names:
        why = "; ".join(f"{n}: {d}" for n, d in decisions)
        raise ProfileError(
            f"profile {profile.tag!r} has no figures for backend {chosen!r}, which is the one "
            f"that would run ({why}); it lists: {', '.join(profile.backend_names)}.  Measure "
            f"this machine with `tinydl calibrate -o platforms/<tag>.toml` or pick a listed "
            f"backend")
    return chosen


def matmul_cost(profile: DeviceProfile, backend: str, n: int, p: int, q: int, dtype,
                calls: int = 1) -> Tuple[float, float, float]:
    """``(seconds, flops, bytes)`` of ``calls`` products (n, p) @ (p, q)."""
    dt, size = _dtype(dtype)
    spec = profile.backend(backend)
    flops = 2.0 * n * p * q
    nbytes = float(size * (n * p + p * q + n * q))
    gf = spec.throughput("matmul", dt, flops) * 1e9
    bw = profile.memory.bandwidth_gbs * 1e9
    t = spec.call_overhead_s + max(flops / gf, nbytes / bw)
    return calls * t, calls * flops, calls * nbytes


def vector_cost(profile: DeviceProfile, backend: str, flops: float, nbytes: float, calls: float,
                elems_per_call: float, dtype) -> float:
    """Seconds of elementwise / small batched work: ``flops`` FLOP-equivalents and ``nbytes``
    bytes in ``calls`` calls of about ``elems_per_call`` elements each."""
    dt, _ = _dtype(dtype)
    spec = profile.backend(backend)
    gf = spec.throughput("vector", dt, max(elems_per_call, 1.0)) * 1e9
    bw = profile.memory.bandwidth_gbs * 1e9
    return calls * spec.call_overhead_s + max(flops / gf, nbytes / bw)


def _busy_units(profile: DeviceProfile, backend: str) -> int:
    units = profile.threads if backend in _PARALLEL else 1
    return max(1, min(units, profile.power.units))


def energy_joules(profile: DeviceProfile, seconds: float, flops: float = 0.0,
                  nbytes: float = 0.0, busy_units: int = 1) -> float:
    """Energy of a run: the profile's power model times ``seconds``; where the profile gives
    energy per FLOP and per byte, idle power times ``seconds`` plus those."""
    p = profile.power
    if p.energy_per_flop_pj is not None or p.energy_per_byte_pj is not None:
        return (p.idle_w * seconds + flops * (p.energy_per_flop_pj or 0.0) * 1e-12
                + nbytes * (p.energy_per_byte_pj or 0.0) * 1e-12)
    return seconds * (p.idle_w + busy_units * p.active_w_per_unit)


def _finish(profile, backend, parts, peak, flops, nbytes) -> Prediction:
    seconds = float(sum(s for _, s in parts))
    joules = energy_joules(profile, seconds, flops, nbytes, _busy_units(profile, backend))
    return Prediction(seconds, int(peak), float(joules), float(flops), float(nbytes),
                      tuple((n, float(s)) for n, s in parts), backend)


def transform_parts(profile: DeviceProfile, m: int, l: int, k: int, n: int, dtype,
                    backend: str, batch: int = 256, block: int = 64, per_row: bool = False):
    """The transform's cost terms: ``dict`` of seconds for the correlation and the fixed
    per-batch work, and the three fitted terms' *unit* amounts (``c1``, ``c2`` in
    FLOP-equivalents divided by throughput, ``calls`` in seconds of overhead), so that
    calibration can fit the constants and the model can apply them.  ``per_row``: the
    native per-row kernels (one call per batch, the batch's own rows; ``calls`` is then
    seconds already, not a unit for ``calls_per_iteration``)."""
    dt, size = _dtype(dtype)
    spec = profile.backend(backend)
    k = min(k, l)
    corr_t = corr_f = corr_b = 0.0
    fixed_t = 0.0
    u1 = u2 = u_calls = 0.0
    omp_b = 0.0
    vec_rate = lambda elems: spec.throughput("vector", dt, elems) * 1e9  # noqa: E731
    for s in range(0, n, batch):
        bc = min(batch, n - s)
        if per_row:  # one kernel call: the rows given, iterations in C
            t, f, b = matmul_cost(profile, backend, bc, m, l, dtype)
            fixed_t += vector_cost(profile, backend, 2.0 * bc * m, size * bc * m, 0,
                                   bc * m, dtype)
            u_calls += spec.call_overhead_s
        else:
            # every product runs on exactly `block` rows (the last one zero-padded)
            t, f, b = matmul_cost(profile, backend, block, m, l, dtype,
                                  calls=-(-bc // block))
            # |x|^2 (2 m per sample) and ~15 calls of set-up and back substitution per batch
            fixed_t += vector_cost(profile, backend, 2.0 * bc * m, size * bc * m, 15,
                                   bc * m, dtype)
            u_calls += k * spec.call_overhead_s
        corr_t, corr_f, corr_b = corr_t + t, corr_f + f, corr_b + b
        rate = vec_rate(bc * l)
        u1 += bc * k * l / rate
        u2 += bc * l * k * (k - 1) / 2.0 / rate
        omp_b += size * bc * l * k * 4.0
    return dict(corr_t=corr_t, corr_f=corr_f, corr_b=corr_b, fixed_t=fixed_t, u1=u1, u2=u2,
                u_calls=u_calls, omp_b=omp_b)


def predict_transform(profile, m: int, l: int, k: int, n: int, dtype="float32",
                      backend: Optional[str] = None, batch: int = 256,
                      block: int = 64, kernels: str = "backend") -> Prediction:
    """Predict the cost of coding ``n`` samples of ``m`` features with ``k`` of ``l`` atoms.

    Parameters
    ----------
    profile : DeviceProfile or str
        A profile or its tag.
    m, l, k, n : int
        Features, atoms, non-zeros per code, samples.
    dtype : {"float32", "float64"}
    backend : str, optional
        Default: the profile's first preferred backend with figures.
    batch, block : int
        The backend's OMP batch and product block (NumpyBackend's defaults).
    kernels : {"backend", "execution"}
        ``"backend"``: the backend's own Batch-OMP (NumPy's loop: the training stream's
        pricing, what ``tinydl calibrate`` fits); ``"execution"``: the kernels
        :func:`hal.execution.execution_kernels` picks for it (the execution phase: the
        native per-row kernels on ``blas`` / ``mpi`` / ``multiprocessing`` where they build,
        and on ``native``).

    Returns
    -------
    Prediction
        ``breakdown`` holds ``correlation``, ``norms``, ``omp_iterations`` and
        ``iteration_calls``; ``backend`` names the backend whose kernels were priced.
    """
    profile = load_profile(profile)
    m, l, k, n = (_pos(a, v) for a, v in (("m", m), ("l", l), ("k", k), ("n", n)))
    batch, block = _pos("batch", batch), _pos("block", block)
    if kernels not in ("backend", "execution"):
        raise ValueError(f"kernels must be 'backend' or 'execution', got {kernels!r}")
    backend = choose_backend(profile, backend)
    per_row = False
    if kernels == "execution":
        from .execution import execution_kernels
        xname = execution_kernels(backend)
        per_row = xname == "native"
        if xname in profile.backend_names:  # else the training backend's figures
            backend = xname
    _, size = _dtype(dtype)
    tr = profile.transform
    P = transform_parts(profile, m, l, k, n, dtype, backend, batch, block, per_row=per_row)
    omp_t = tr.c1_flops * P["u1"] + tr.c2_flops * P["u2"]
    omp_t = max(omp_t, P["omp_b"] / (profile.memory.bandwidth_gbs * 1e9))
    calls_t = P["u_calls"] if per_row else tr.calls_per_iteration * P["u_calls"]
    kk = min(k, l)
    omp_f = n * (tr.c1_flops * kk * l + tr.c2_flops * l * kk * (kk - 1) / 2.0)
    flops = P["corr_f"] + omp_f + 2.0 * n * m
    nbytes = P["corr_b"] + P["omp_b"] + size * n * m
    bc = min(batch, n)
    workspace = size * (bc * (4 * l + kk * l + kk * kk + kk + 3) + block * (m + l)) + bc * 10
    peak = size * (n * m + l * m + l * l) + workspace + n * (kk * (4 + size) + 4 + size)
    parts = [("correlation", P["corr_t"]), ("norms", P["fixed_t"]),
             ("omp_iterations", omp_t), ("iteration_calls", calls_t)]
    return _finish(profile, backend, parts, peak, flops, nbytes)


def _check_layers(layer_sizes) -> Tuple[int, ...]:
    sizes = tuple(layer_sizes)
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least 2 entries (inputs, outputs), got {sizes}")
    return tuple(_pos(f"layer_sizes[{i}]", s) for i, s in enumerate(sizes))


def _layers_pass(profile, backend, sizes, rows, dtype, backward, sparse_input_k,
                 fused=False):
    """Seconds, flops and bytes of one forward (and backward) pass over ``rows`` samples.
    ``fused``: the layers run inside one kernel call priced elsewhere (the native fused
    one-sample predict): no call overhead of their own."""
    _, size = _dtype(dtype)
    spec = profile.backend(backend)
    per_call = 0.0 if fused else 1.0
    mm_t = vec_t = 0.0
    flops = nbytes = 0.0
    n_layers = len(sizes) - 1
    for i, (p, q) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i == 0 and sparse_input_k:
            # a gather over the k non-zero rows of W: 2 k q per sample and per pass
            kk = min(sparse_input_k, p)
            passes = 2 if backward else 1
            f = 2.0 * rows * kk * q * passes
            b = size * rows * kk * q * passes
            mm_t += vector_cost(profile, backend, f, b, kk * passes * per_call, rows * q,
                                dtype)
            flops, nbytes = flops + f, nbytes + b
        else:
            products = [(rows, p, q)]
            if backward:
                products.append((p, rows, q))        # dW = X.T @ dY
                if i > 0:
                    products.append((rows, q, p))    # dX = dY @ W.T
            for a, b_, c in products:
                t, f, b = matmul_cost(profile, backend, a, b_, c, dtype)
                t -= (1.0 - per_call) * spec.call_overhead_s
                mm_t, flops, nbytes = mm_t + t, flops + f, nbytes + b
        # bias, activation (and its derivative, the bias gradient, the momentum update)
        f = rows * q * (2.0 + (4.0 if backward else 0.0)) + (4.0 * p * q if backward else 0.0)
        b = size * (rows * q * (2 + (4 if backward else 0)) + (5 * p * q if backward else 0))
        vec_t += vector_cost(profile, backend, f, b, 0, rows * q, dtype)
        flops, nbytes = flops + f, nbytes + b
    calls = (profile.training_model.calls_per_layer if backward else 3.0) * n_layers
    return mm_t, vec_t, calls * spec.call_overhead_s * per_call, flops, nbytes


def predict_training_epoch(profile, layer_sizes: Sequence[int], n_samples: int,
                           batch_size: int = 32, dtype="float32",
                           backend: Optional[str] = None,
                           sparse_input_k: Optional[int] = None,
                           optimizer: Optional[str] = None) -> Prediction:
    """Predict one epoch of mini-batch SGD (with momentum) on a dense network.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_inputs, hidden..., n_outputs]``.
    n_samples, batch_size : int
    sparse_input_k : int, optional
        Inputs are k-sparse codes: the first layer is a gather over ``k`` rows of W.
    optimizer : str, optional
        ``"adafactor"`` adds its step's small calls per tensor (:data:`ADAFACTOR_CALLS`) to
        each batch; SGD's and Adam's few whole-buffer passes are in the calibrated per-layer
        calls and vector work already (None: as those).

    Raises
    ------
    ValueError
        For an inference-only profile (``training = false``), or bad sizes.
    """
    profile = load_profile(profile)
    if not profile.training:
        raise ValueError(f"profile {profile.tag!r} is inference-only (training = false): "
                         "it cannot train; use predict_inference")
    sizes = _check_layers(layer_sizes)
    n = _pos("n_samples", n_samples)
    bs = _pos("batch_size", batch_size)
    if sparse_input_k is not None:
        sparse_input_k = _pos("sparse_input_k", sparse_input_k)
    backend = choose_backend(profile, backend)
    _, size = _dtype(dtype)
    mm = vec = calls = flops = nbytes = 0.0
    full, rest = divmod(n, bs)
    for rows, count in ((bs, full), (rest, 1 if rest else 0)):
        if count:
            a, b, c, f, by = _layers_pass(profile, backend, sizes, rows, dtype, True,
                                          sparse_input_k)
            mm, vec, calls = mm + count * a, vec + count * b, calls + count * c
            flops, nbytes = flops + count * f, nbytes + count * by
    n_params = sum(p * q + q for p, q in zip(sizes[:-1], sizes[1:]))
    if optimizer == "adafactor":
        n_layers = len(sizes) - 1
        calls += (full + (1 if rest else 0)) * n_layers * sum(ADAFACTOR_CALLS) \
            * profile.backend(backend).call_overhead_s
    # per batch: gathering the shuffled rows into the batch buffer and a finiteness check of
    # the flat gradient; per epoch: validating the data set (a read and a copy-sized pass)
    width = min(sparse_input_k, sizes[0]) * 2 if sparse_input_k else sizes[0]
    n_batches = full + (1 if rest else 0)
    data_b = size * (2.0 * n * width + n_batches * n_params) + 2.0 * size * n * width
    data_t = vector_cost(profile, backend, 2.0 * n_batches * n_params, data_b,
                         3 * n_batches, bs * width, dtype)
    nbytes += data_b
    # parameters, gradients and momentum; activations and their gradients; the data set
    peak = size * (3 * n_params + 3 * bs * sum(sizes) + n * width + n)
    parts = [("matmul", mm), ("vector", vec), ("data", data_t), ("call_overhead", calls)]
    return _finish(profile, backend, parts, peak, flops, nbytes)


#: NumPy calls of one Adafactor step per (weight matrix, bias vector) of a layer
#: (tinydl.nn.optim.Adafactor.step: its row and column statistics, factors and clip, each a
#: small call whose overhead dominates at these sizes)
ADAFACTOR_CALLS = (24, 11)


def predict_inference(profile, layer_sizes: Sequence[int], n_samples: int = 1,
                      dtype="float32", backend: Optional[str] = None,
                      transform: Optional[Tuple[int, int, int]] = None,
                      sparse_input_k: Optional[int] = None) -> Prediction:
    """Predict one inference call on ``n_samples`` samples.

    Parameters
    ----------
    layer_sizes : sequence of int
        The network, ``[n_inputs, hidden..., n_outputs]``.
    transform : (m, l, k), optional
        Code raw samples of ``m`` features first (the TinyDL pipeline); then the network's
        input is the ``l`` atoms and ``sparse_input_k`` defaults to ``k``.

    Notes
    -----
    ``peak_bytes`` counts weights in RAM; on a profile with ``flash_bytes > 0`` weights stay in
    flash and only activations (and the transform's workspace) count.
    """
    profile = load_profile(profile)
    sizes = _check_layers(layer_sizes)
    n = _pos("n_samples", n_samples)
    backend = choose_backend(profile, backend)
    _, size = _dtype(dtype)
    parts = []
    flops = nbytes = 0.0
    peak_extra = 0
    if transform is not None:
        m, l, k = transform
        if sizes[0] != l:
            raise ValueError(f"layer_sizes[0] must equal the transform's l={l}, got {sizes[0]}")
        # the execution phase: priced on the kernels the execution rule picks
        tp = predict_transform(profile, m, l, k, n, dtype, backend, kernels="execution")
        parts += [(f"transform_{name}", s) for name, s in tp.breakdown]
        flops, nbytes, peak_extra = tp.flops, tp.bytes, tp.peak_bytes
        if sparse_input_k is None:
            sparse_input_k = k
        from .execution import execution_kernels
        # one sample on the native kernels: encode and network are one fused call (the
        # learner's one-sample predict), already counted in the transform's one call
        fused = n == 1 and execution_kernels(backend) == "native"
        if fused:
            backend = tp.backend
    else:
        fused = False
    mm, vec, calls, f, b = _layers_pass(profile, backend, sizes, n, dtype, False,
                                        sparse_input_k, fused)
    parts += [("matmul", mm), ("vector", vec), ("call_overhead", calls)]
    n_params = sum(p * q + q for p, q in zip(sizes[:-1], sizes[1:]))
    weights = 0 if profile.memory.flash_bytes > 0 else size * n_params
    peak = max(peak_extra, weights + size * n * (sizes[0] + 2 * max(sizes)))
    return _finish(profile, backend, parts, peak, flops + f, nbytes + b)


def fits_in_memory(profile, prediction: Prediction) -> bool:
    """Whether ``prediction.peak_bytes`` fits the profile's memory capacity."""
    profile = load_profile(profile)
    return prediction.peak_bytes <= profile.memory.capacity_bytes
