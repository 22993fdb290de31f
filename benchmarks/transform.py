"""OMP coding and the streaming transform against their peers, one BLAS thread, one run.

For (m, l, k) = (5625, 100, 20), (617, 200, 10), (520, 100, 20) in float32 and float64, on
the same samples: tinydl's ``omp`` (Gram computed inside), scikit-learn's
``orthogonal_mp_gram`` (its precompute ``D @ D.T`` and ``D @ X.T`` inside the timed region),
the literal Algorithm 1 of the paper (per sample, least squares with an explicit inverse each
iteration; timed on a few samples, it is slow) and SPAMS ``spams.omp`` in float64 (when
``spams-bin`` is installed; its float32 path is unreliable, so every case is compared with
SPAMS float64 on the float64 copy of the same data).  The floor is the FLOPs of the D^T X
product (2 m l per sample) at the GFLOP/s of that very product on all samples in one call,
measured in this run (a square 1024 GEMM's rate is printed too: a stricter, shape-free peak).

Also the whole streaming transform (``StreamingDictionary.partial_fit_transform``: Wp test and
coding, at the paper's m=5625, l=100, k=20) against plain ``omp`` of the same samples on the
final dictionary; and, on the shared streams (Daily and Sports, UJIIndoorLoc in file order),
the per-sample pre-processing with the fill phase included against the steady state (JSON key
``shared_streams``: ``stream_us``, ``steady_us``, ``ratio`` per file).

tinydl runs on ``--backend`` (default: the first of ``native``, ``blas``, ``numpy`` that can
run here, the x86-64-host profile's preference); the NumPy reference backend's time is
printed beside it (``tinydl_numpy_us``), and each JSON row names the backend.

    python benchmarks/transform.py [--json PATH] [--quick] [--backend NAME]

Data: ``../shared/data`` (or ``$TINYDL_DATA``) when it holds a file with m features that
``tinydl.data.load_dataset`` reads; otherwise synthetic data (a rank-200 mixture plus noise,
dictionary atoms = unit-normalized samples, as TinyDL builds them), with a note printed.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# one BLAS thread, as the docstring says, set before NumPy loads OpenBLAS (an idle OpenBLAS
# worker spins after each call and took a core from the single-threaded kernels: the shared
# streams measured 2x their one-thread time on this 2-core machine)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks._common import blas_threads, fmt, print_table, time_call, write_json  # noqa: E402
from tinydl.omp import omp  # noqa: E402

CASES = [(5625, 100, 20), (617, 200, 10), (520, 100, 20)]


def paper_omp(a, Dp, k):
    """Algorithm 1 as written: Dp (m x l) atoms as columns, least squares each iteration via
    the explicit (D^T D)^-1."""
    r = a.copy()
    support = []
    code = np.zeros(Dp.shape[1], a.dtype)
    for _ in range(k):
        support.append(int(np.argmax(np.abs(Dp.T @ r))))
        DL = Dp[:, support]
        c = np.linalg.inv(DL.T @ DL) @ DL.T @ r
        r = r - DL @ c
        code[support] += c
    return code


def data_dir():
    env = os.environ.get("TINYDL_DATA")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in ([env] if env else []) + [os.path.join(os.path.dirname(here), "shared", "data")]:
        if cand and os.path.isdir(cand):
            return cand
    return None


def real_samples(m, n):
    """Up to n rows with m features from the shared data folder, or None."""
    d = data_dir()
    if d is None:
        return None, None
    from tinydl.data import DataError, load_dataset

    for root, _, files in os.walk(d):
        for f in sorted(files):
            if os.path.splitext(f)[1].lower() not in (".npz", ".npy", ".csv"):
                continue
            try:
                ds = load_dataset(os.path.join(root, f))
            except (DataError, ValueError, OSError):
                continue
            if ds.n_features == m and ds.X_train.shape[0] >= 2:
                X = np.asarray(ds.X_train, np.float64)[:n]
                sd = X.std(axis=0)
                X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1)
                return X, os.path.join(root, f)
    return None, None


def synthetic(m, n, rng):
    rank = 200
    Z = rng.standard_normal((n, rank))
    W = rng.standard_normal((rank, m)) / np.sqrt(rank)
    return Z @ W + 0.3 * rng.standard_normal((n, m))


def dictionary_from(X, l, rng):
    D = X[rng.choice(X.shape[0], l, replace=False)].copy()
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    return D


def bench_case(m, l, k, X64, D64, n_peer, n_naive, repeat, spams, backend):
    rows = {}
    # the floor's GFLOP/s: this product on all samples in one call, and a square GEMM
    rng = np.random.default_rng(1)
    for dt in (np.float32, np.float64):
        X, D = X64.astype(dt), D64.astype(dt)
        n = X.shape[0]
        prod = time_call(lambda: X @ D.T, repeat)
        sq = rng.standard_normal((1024, 1024)).astype(dt)
        sqt = time_call(lambda: sq @ sq, 3)
        rate = 2.0 * n * m * l / prod
        floor_us = 2.0 * m * l / rate * 1e6
        t_ours = time_call(lambda: omp(X, D, k, backend=backend), repeat) / n * 1e6
        t_np = t_ours if backend.name == "numpy" else \
            time_call(lambda: omp(X, D, k, backend="numpy"), repeat) / n * 1e6

        from sklearn.linear_model import orthogonal_mp_gram

        Xs = X[:n_peer]

        def sk():
            G = D @ D.T
            Xy = D @ Xs.T
            return orthogonal_mp_gram(G, Xy, n_nonzero_coefs=k)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_sk = time_call(sk, max(1, repeat // 2)) / n_peer * 1e6
            ref = sk().T
        ours_peer = omp(Xs, D, k, backend=backend)
        agree_sk = float(np.mean((ours_peer != 0) == (ref != 0)))

        Xn = X[:n_naive]
        t_naive = time_call(lambda: [paper_omp(x, D.T, k) for x in Xn], 1, warmup=0) \
            / n_naive * 1e6

        t_spams = None
        if spams is not None:
            Xf = np.asfortranarray(X64.T)
            Df = np.asfortranarray(D64.T)
            t_spams = time_call(lambda: spams.omp(Xf, Df, L=k, numThreads=1),
                                max(1, repeat // 2)) / X64.shape[0] * 1e6
        rows[f"{m}-{l}-{k}-{np.dtype(dt).name}"] = {
            "tinydl_us": t_ours, "sklearn_us": t_sk, "naive_us": t_naive,
            "spams_us": t_spams, "floor_us": floor_us,
            "backend": backend.name, "tinydl_numpy_us": t_np,
            "_gflops": rate / 1e9, "_sq_gflops": 2.0 * 1024 ** 3 / sqt / 1e9,
            "_agree": agree_sk}
    return rows


def paired(fa, fb, repeat):
    """Median seconds of ``fa`` and ``fb`` timed in alternation (after one warm-up each), and
    the median of the per-pair ratios: on a shared machine a load that comes and goes then
    weighs on both alike."""
    import time
    fa()
    fb()
    ta, tb = [], []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return (float(np.median(ta)), float(np.median(tb)),
            float(np.median(np.array(ta) / np.array(tb))))


def first_pass(fn, label):
    """``fn()`` untimed, its warnings said once.  OMP stops early, by rule, on some rows of a
    stream (a chosen atom linearly dependent on the others) and warns for each chunk: the
    timed passes (:func:`quiet_paired`) would repeat that once per chunk and pass."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = fn()
    if seen:
        print(f"{label}: {len(seen)} warning(s) in the untimed first pass (silenced in the "
              f"timed ones), the first: {seen[0].message}")
    return out


def quiet_paired(*args):
    """:func:`paired` with warnings silenced (:func:`first_pass` said them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return paired(*args)


def bench_streaming(X, repeat, backend):
    try:
        from tinydl.transform import StreamingDictionary
    except ImportError:
        print("streaming: tinydl.transform not available")
        return None
    l, k, alpha = 100, 20, 0.3

    def stream():
        return StreamingDictionary(l=l, k=k, alpha=alpha,
                                   backend=backend).partial_fit_transform(X)

    sd = StreamingDictionary(l=l, k=k, alpha=alpha, backend=backend)
    first_pass(lambda: sd.partial_fit_transform(X), "streaming")
    D = np.asarray(sd.dictionary_, X.dtype)
    t_stream, t_omp, ratio = quiet_paired(stream, lambda: omp(X, D, k, backend=backend),
                                          repeat)
    n = X.shape[0]
    print(f"streaming: {n} samples, m={X.shape[1]}, dictionary filled to "
          f"{D.shape[0]} atoms, dtype {X.dtype}")
    return {"streaming_us": t_stream / n * 1e6, "omp_us": t_omp / n * 1e6,
            "ratio": ratio, "backend": backend.name}


#: the shared streams: file, how its rows read as samples, and how many are streamed
SHARED_STREAMS = (("dsa_subset20_f16.npz", "X", 1824), ("ujiindoorloc.npz", "X_train", 4096))


def bench_shared_streams(repeat, backend, quick=False):
    """The per-sample pre-processing of the shared streams, fill phase included, against the
    steady state: ``partial_fit_transform`` of the stream in file order from an empty
    dictionary (l=100, k=20, alpha=0.3, standardization fixed from the first 256 samples, the
    learner's defaults) per sample, over ``transform`` of the same samples on the dictionary
    it ended with (plain OMP, the cost once nothing can join).  Files absent: skipped, said."""
    from tinydl.transform import StreamingDictionary
    d = data_dir()
    out = {}
    for name, key, n in SHARED_STREAMS:
        path = None if d is None else os.path.join(d, name)
        if path is None or not os.path.exists(path):
            print(f"shared stream {name}: absent (../shared/data or $TINYDL_DATA), skipped")
            continue
        with np.load(path, allow_pickle=False) as z:
            X = z[key]
        n = min(n // 4 if quick else n, X.shape[0])
        X = np.ascontiguousarray(X[:n].reshape(n, -1), dtype=np.float32)

        def fresh():
            return StreamingDictionary(l=100, k=20, alpha=0.3, standardize=True,
                                       dtype="float32", backend=backend)

        sd = fresh()
        first_pass(lambda: sd.partial_fit_transform(X, dense=False), f"shared stream {name}")
        t_stream, t_steady, ratio = quiet_paired(
            lambda: fresh().partial_fit_transform(X, dense=False),
            lambda: sd.transform(X, dense=False), repeat)
        out[os.path.splitext(name)[0]] = {
            "stream_us": t_stream / n * 1e6, "steady_us": t_steady / n * 1e6,
            "ratio": ratio, "n_samples": n, "n_features": X.shape[1],
            "n_atoms": int(sd.n_atoms_), "backend": backend.name}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    ap.add_argument("--backend", help="tinydl's HAL backend (default: the first of native, "
                    "blas, numpy that can run here, as the x86-64-host profile prefers)")
    args = ap.parse_args(argv)
    import hal
    name = args.backend or hal.select_backend(None, ["native", "blas", "numpy"])[0]
    backend = hal.get_backend(name)
    n = 256 if args.quick else 1024
    n_peer = 64 if args.quick else 256
    repeat = 3 if args.quick else 5
    try:
        import spams
    except ImportError:
        spams = None
        print("note: spams not installed (pip install spams-bin): spams_us is null")
    print(f"BLAS threads: {blas_threads()}; {n} samples per case (peers: sklearn "
          f"{n_peer}, Algorithm 1 a few); tinydl backend: {backend.name} (the NumPy "
          "reference's time in the last column)")
    rng = np.random.default_rng(0)
    results = {}
    table = []
    for m, l, k in CASES:
        X, src = real_samples(m, n + l)
        if X is None or X.shape[0] < n + l:
            print(f"note: no real data with m={m} (../shared/data absent or without it): "
                  "synthetic rank-200 mixture plus noise")
            X = synthetic(m, n + l, rng)
        else:
            print(f"data for m={m}: {src}")
        # atoms are other samples than the coded ones (a coded sample equal to an atom would
        # leave a zero residual, which Algorithm 1's explicit inverse cannot handle)
        D = dictionary_from(X[n:], l, rng)
        X = X[:n]
        n_naive = 4 if m > 2000 else 16
        if args.quick:
            n_naive = max(2, n_naive // 4)
        rows = bench_case(m, l, k, X, D, n_peer, n_naive, repeat, spams, backend)
        for key, r in rows.items():
            t = r["tinydl_us"]
            table.append([key, fmt(t), fmt(r["sklearn_us"]), fmt(r["sklearn_us"] / t, 1) + "x",
                          fmt(r["naive_us"], 0), fmt(r["naive_us"] / t, 0) + "x",
                          fmt(r["spams_us"]),
                          "-" if r["spams_us"] is None else fmt(r["spams_us"] / t, 2) + "x",
                          fmt(r["floor_us"]), fmt(t / r["floor_us"], 2) + "x",
                          fmt(r["_gflops"], 0), fmt(r["_sq_gflops"], 0), fmt(r["_agree"], 4),
                          fmt(r["tinydl_numpy_us"])])
            results[key] = {kk: v for kk, v in r.items() if not kk.startswith("_")}
    print()
    print_table(["case (m-l-k-dtype)", "tinydl us", "sklearn us", "sk/tinydl", "Alg.1 us",
                 "Alg.1/tinydl", "spams64 us", "spams/tinydl", "floor us", "tinydl/floor",
                 "GFLOP/s", "sq GFLOP/s", "support agree sk", "numpy-backend us"], table)
    print("\n(us per sample; ratios > 1x for peers mean tinydl is faster; tinydl/floor is how "
          "far above the D^T X product at this run's rate for it; 'support agree sk' is the "
          "fraction of code entries whose zero pattern matches scikit-learn's)")

    m, l, k = CASES[0]
    ns = 512 if args.quick else 2048
    Xs, _ = real_samples(m, ns)
    if Xs is None:
        Xs = synthetic(m, ns, rng)
    print()
    results["streaming"] = bench_streaming(Xs.astype(np.float32), repeat, backend)
    if results["streaming"] is not None:
        s = results["streaming"]
        print_table(["streaming (5625-100-20-float32)", "us/sample"],
                    [["partial_fit_transform (Wp test + coding)", fmt(s["streaming_us"])],
                     ["omp on the final dictionary", fmt(s["omp_us"])],
                     ["ratio (median of paired runs)", fmt(s["ratio"], 2) + "x"]])
    print()
    results["shared_streams"] = bench_shared_streams(repeat, backend, args.quick)
    if results["shared_streams"]:
        print_table(["shared stream (l=100, k=20, alpha=0.3, f32)", "m", "atoms",
                     "stream us/sample", "steady us/sample", "stream/steady (paired)"],
                    [[k, str(r["n_features"]), str(r["n_atoms"]), fmt(r["stream_us"]),
                      fmt(r["steady_us"]), fmt(r["ratio"], 2) + "x"]
                     for k, r in results["shared_streams"].items()])
    if args.json:
        write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
