"""The cost model (roofline + call overheads, energy = power x time) and calibration: formulas
checked against hand counts, and predictions from a profile calibrated here checked against
measured times."""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest

import hal
from hal.calibrate import (
    calibrate,
    check_backend,
    fit_transform,
    measure_transform_grid,
    nnls_small,
    time_call,
)
from hal.cost import (
    energy_joules,
    fits_in_memory,
    matmul_cost,
    predict_inference,
    predict_training_epoch,
    predict_transform,
)
from hal.profile import BackendSpec, ProfileError, _toml_module, load_profile, parse_profile

SIZES = ("small", "medium", "large")


def _flat_profile(gflops=10.0, bw=1.0, overhead_us=2.0, **power):
    """x86-64-host with one flat throughput, so that formulas are easy to check by hand."""
    p = load_profile("x86-64-host")
    rows = tuple((dt, op, sc, gflops) for dt in ("float32", "float64")
                 for op in ("matmul", "vector") for sc in SIZES)
    p = replace(p, backends=(BackendSpec("numpy", overhead_us * 1e-6, rows),),
                backend_preference=("numpy",),
                memory=replace(p.memory, bandwidth_gbs=bw))
    if power:
        p = replace(p, power=replace(p.power, **power))
    return p


def test_matmul_is_a_roofline():
    n, k, m = 64, 512, 256
    flops, nbytes = 2.0 * n * k * m, 4.0 * (n * k + k * m + n * m)
    # compute-bound: fast memory
    t, f, b = matmul_cost(_flat_profile(gflops=10, bw=1e6), "numpy", n, k, m, "float32")
    assert (f, b) == (flops, nbytes)
    assert t == pytest.approx(2e-6 + flops / 10e9)
    # memory-bound: slow memory
    t, _, _ = matmul_cost(_flat_profile(gflops=1e6, bw=0.1), "numpy", n, k, m, "float32")
    assert t == pytest.approx(2e-6 + nbytes / 0.1e9)
    # float64 moves twice the bytes
    _, _, b64 = matmul_cost(_flat_profile(), "numpy", n, k, m, "float64")
    assert b64 == 2 * nbytes


def test_transform_counts_and_scaling():
    p = load_profile("x86-64-host")
    m, l, k = 5625, 100, 20
    a = predict_transform(p, m, l, k, 512, "float32", "numpy")
    b = predict_transform(p, m, l, k, 1024, "float32", "numpy")
    # the correlation is 2 m l per (block-padded) sample, and whole batches scale linearly
    corr_flops = 2.0 * m * l * 512
    assert a.flops >= corr_flops
    assert b.seconds == pytest.approx(2 * a.seconds, rel=1e-9)
    assert b.flops == pytest.approx(2 * a.flops, rel=1e-9)
    # more atoms, more non-zeros, more features: never cheaper
    for kw in (dict(m=2 * m), dict(l=2 * l), dict(k=2 * k)):
        args = {**dict(m=m, l=l, k=k), **kw}
        assert predict_transform(p, n=512, dtype="float32", backend="numpy",
                                 **args).seconds > a.seconds
    assert {n for n, _ in a.breakdown} == {"correlation", "norms", "omp_iterations",
                                          "iteration_calls"}
    assert sum(s for _, s in a.breakdown) == pytest.approx(a.seconds)
    # peak memory holds at least the batch and the dictionary
    assert a.peak_bytes >= 4 * (512 * m + l * m)


def test_energy_is_power_times_time():
    p = _flat_profile(idle_w=3.0, active_w_per_unit=2.0, units=4)
    pred = predict_transform(p, 256, 64, 8, 256, "float64", "numpy")
    assert pred.joules == pytest.approx(pred.seconds * (3.0 + 2.0))  # numpy keeps one unit busy
    q = _flat_profile(idle_w=3.0, active_w_per_unit=2.0, energy_per_flop_pj=10.0,
                      energy_per_byte_pj=100.0)
    pred = predict_transform(q, 256, 64, 8, 256, "float64", "numpy")
    assert pred.joules == pytest.approx(3.0 * pred.seconds + pred.flops * 1e-11
                                        + pred.bytes * 1e-10)
    assert energy_joules(p, 2.0, busy_units=4) == pytest.approx(2.0 * 11.0)


def test_training_epoch_counts_every_product():
    p = _flat_profile(gflops=10, bw=1e6, overhead_us=0.0)
    sizes, n, bs = (100, 64, 32, 19), 4096, 32
    pred = predict_training_epoch(p, sizes, n, bs, "float32", "numpy")
    # forward + weight gradient for every layer, input gradient for all but the first
    layers = list(zip(sizes[:-1], sizes[1:]))
    products = sum(2.0 * n * a * b * (3 if i else 2) for i, (a, b) in enumerate(layers))
    assert pred.part("matmul") == pytest.approx(products / 10e9, rel=1e-9)
    assert pred.flops >= products
    # a k-sparse input replaces the first layer's products with a gather
    sparse = predict_training_epoch(p, sizes, n, bs, "float32", "numpy", sparse_input_k=5)
    assert sparse.part("matmul") < pred.part("matmul")
    n_params = sum(a * b + b for a, b in layers)
    assert pred.peak_bytes >= 4 * 3 * n_params


def test_inference_and_memory_budgets():
    m3 = load_profile("cortex-m3")
    small = predict_inference(m3, [16, 8, 4], 1, transform=(64, 16, 4))
    assert fits_in_memory(m3, small)
    paper = predict_inference(m3, [100, 64, 32, 19], 1, transform=(5625, 100, 20))
    assert not fits_in_memory(m3, paper)  # a 5625 x 100 dictionary alone is 2.25 MB
    with pytest.raises(ValueError, match="inference-only"):
        predict_training_epoch(m3, [16, 8, 4], 100, 10)
    with pytest.raises(ValueError, match="layer_sizes\\[0\\] must equal the transform's l=16"):
        predict_inference(m3, [15, 8], 1, transform=(64, 16, 4))


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="m must be an integer >= 1, got 0"):
        predict_transform("x86-64-host", 0, 10, 2, 10)
    with pytest.raises(TypeError, match="float32 or float64"):
        predict_transform("x86-64-host", 10, 10, 2, 10, dtype="int32")
    # multiprocessing runs everywhere (no optional extra) and cortex-m3 has no figures for it
    with pytest.raises(ProfileError, match="no figures for backend 'multiprocessing'"):
        predict_transform("cortex-m3", 10, 10, 2, 10, backend="multiprocessing")
    with pytest.raises(ValueError, match="at least 2 entries"):
        predict_training_epoch("x86-64-host", [10], 10, 2)


def test_jetson_paper_setting_is_priced():
    pred = predict_transform("jetson-tk1", 5625, 100, 20, 1024, "float32")
    per_sample_ms = pred.seconds / 1024 * 1e3
    # priced on the backend that would run here: the profile's first runnable preference
    # (mpi under mpiexec, as in the paper; else multiprocessing)
    assert pred.backend == hal.select_backend(profile=load_profile("jetson-tk1"))[0]
    assert 0.005 < per_sample_ms < 5.0


def test_choose_backend_is_select_backend_and_names_calibrate(monkeypatch):
    from hal.cost import choose_backend
    for tag in ("x86-64-host", "jetson-tk1", "raspberry-pi-4", "cortex-m3"):
        prof = load_profile(tag)
        assert choose_backend(prof) == hal.select_backend(profile=prof)[0]
    monkeypatch.setenv("TINYDL_BACKEND", "multiprocessing")  # runs without optional extras
    with pytest.raises(ProfileError,
                       match="no figures for backend 'multiprocessing'.*tinydl calibrate"):
        choose_backend(load_profile("cortex-m3"))


def test_nnls_small_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    A = rng.random((30, 3))
    assert nnls_small(A, A @ np.array([1.0, 0.0, 2.5])) == pytest.approx([1.0, 0.0, 2.5])
    # a negative true coefficient is clipped to the best non-negative answer
    coef = nnls_small(A, A @ np.array([1.0, -1.0, 2.0]))
    assert (coef >= 0).all()
    brute = min((np.sum((A[:, list(c)] @ np.linalg.lstsq(A[:, list(c)], A @ [1, -1, 2],
                                                          rcond=None)[0] - A @ [1, -1, 2]) ** 2)
                 for c in ([0], [2], [0, 2], [0, 1], [1, 2], [1])))
    assert np.sum((A @ coef - A @ [1, -1, 2]) ** 2) <= brute + 1e-12


def test_check_backend_catches_a_wrong_kernel():
    be = hal.get_backend("numpy")
    rng = np.random.default_rng(0)
    assert check_backend(be, "float64", rng) is None

    class Wrong(type(be)):
        def matmul(self, a, b, out=None):
            return super().matmul(a, b, out=out) * 1.001
    assert "matmul differs from numpy" in check_backend(Wrong(), "float64", rng)


def test_fit_recovers_the_model_it_was_generated_with():
    # times generated from known constants: the fit must give them back
    p = _flat_profile(gflops=5.0, bw=1e3)
    truth = replace(p, transform=replace(p.transform, c1_flops=11.0, c2_flops=3.0,
                                         calls_per_iteration=40.0))
    rows = [dict(m=m, l=l, k=k, n=512,
                 seconds=predict_transform(truth, m, l, k, 512, "float64", "numpy").seconds)
            for m in (128, 1024) for l in (32, 128) for k in (4, 16)]
    fit = fit_transform(p, rows, "numpy", "float64")
    assert (fit.c1_flops, fit.c2_flops, fit.calls_per_iteration) == \
        pytest.approx((11.0, 3.0, 40.0), rel=1e-6)
    assert fit.source == "measured"


@pytest.fixture(scope="module")
def quick_profile():
    prof, report = calibrate("test-host", quick=True, backends=["numpy"],
                             dtypes=("float64",), progress=False, power_root="/nonexistent")
    return prof, report


def test_quick_calibration_predicts_this_machine(quick_profile):
    prof, report = quick_profile
    assert prof.memory.source == "measured" and prof.backend("numpy").source == "measured"
    assert prof.transform.source == "measured" and len(report["transform_grid"]) == 8
    assert prof.power.measured_with == "model"  # no counters under /nonexistent
    # an (m, l, k) outside the calibration grid, timed now.  How close the prediction is, is
    # benchmarks/cost_model.py's job (it holds the 25% target on a quiet machine); a unit test
    # on a shared machine only catches a wrong unit or a broken fit: within a factor of 10 of
    # the best of three timings, and monotone in the dictionary's size
    be = hal.get_backend("numpy")
    best = min(measure_transform_grid(be, "float64", {"m": (300,), "l": (48,), "k": (6,),
                                                      "n": 512}, quick=False)[0]["seconds"]
               for _ in range(3))
    pred = predict_transform(prof, 300, 48, 6, 512, "float64", "numpy").seconds
    assert 0.1 < pred / best < 10.0
    bigger = predict_transform(prof, 600, 96, 12, 512, "float64", "numpy").seconds
    assert bigger > pred
    # the profile it wrote reads back equal
    again = parse_profile(_toml_module().loads(prof.to_toml()), "<calibrated>")
    assert again == prof


def test_calibrate_cli_with_a_meter_csv(tmp_path):
    from tinydl.cli import main
    now = time.time()
    csv = tmp_path / "meter.csv"
    csv.write_text("timestamp,watts\n" + "".join(
        f"{now - 5 + 0.5 * i:.3f},{20.0 + (i % 2)}\n" for i in range(400)))
    out = tmp_path / "my-host.toml"
    js = tmp_path / "summary.json"
    rc = main(["calibrate", "-o", str(out), "--quick", "--backends", "numpy,null",
               "--dtypes", "float32", "--no-progress", "--power-csv", str(csv),
               "--power-root", str(tmp_path), "--json", str(js)])
    assert rc == 0
    prof = load_profile(str(out))
    assert prof.tag == "my-host" and prof.backend_names == ("numpy",)
    assert prof.power.measured_with == "meter-csv" and prof.power.source == "measured"
    assert 19.5 <= prof.power.idle_w <= 21.5  # the meter read 20-21 W throughout
    summary = json.loads(js.read_text())
    assert summary["power_source"] == "meter-csv"
    assert math.isfinite(summary["bandwidth_gbs"]) and summary["bandwidth_gbs"] > 0
    # the null backend is a counter: asked for, it is recorded as not timed
    assert "not timed" in summary["skipped"]["null"] and "null" not in summary["backends"]


def test_time_call_measures_sleep():
    t = time_call(lambda: time.sleep(0.002), min_time=0.0, repeats=3)
    assert 0.0015 < t < 0.05
