"""Trainer benchmark: tinydl (through the HAL) against PyTorch CPU, one thread each.

tinydl runs on the first backend of ``native``, ``blas``, ``numpy`` that can run here
(``hal.select_backend``; ``TINYDL_BACKEND`` or ``--backend NAME`` decide instead); the
printout and the JSON (``backend``) say which.

For the [100, 64, 32, 19] ("small") and [5625, 1024, 512, 19] ("large") MLPs at batch 32, 128
and 512: training samples/s (SGD with momentum, L2 loss, same shuffled mini-batches), batch-1
and batch-256 inference latency (the bare network call: tinydl ``Network.forward`` on its
workspaces - one row runs the network's one-sample plan, ``tinydl/nn/infer.py`` - PyTorch
``model(x)`` under ``inference_mode``).  Also compact codes (l=100, k=20)
through the first layer (64 units, batch 32): ``backend.gather_matmul`` against the dense
product on the scattered codes, forward and weight gradients (a training step's work; the
JSON's first-layer figures), forward alone printed too, and the footprint reported before a run
against tracemalloc's peak during it.

    python benchmarks/train.py [--json PATH] [--quick] [--backend NAME]
"""
import os
import sys

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

import hal  # noqa: E402
from tinydl.codes import SparseCodes  # noqa: E402
from tinydl.nn import MLPClassifier  # noqa: E402
from tinydl.nn.layers import Dense  # noqa: E402
from tinydl.nn.network import Network  # noqa: E402

NETS = {"small": [100, 64, 32, 19], "large": [5625, 1024, 512, 19]}
#: tinydl's backend, first that can run here (a missing one is skipped)
PREFERENCES = ["native", "blas", "numpy"]


def best_of(f, repeats, inner):
    f()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def tinydl_train(sizes, batch, X, y, repeats, backend):
    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), batch_size=batch, epochs=1,
                        learning_rate=1e-3, momentum=0.9, loss="l2", backend=backend)
    clf.partial_fit(X[:batch], y[:batch], classes=np.arange(sizes[-1]))
    t = best_of(lambda: clf.partial_fit(X, y), repeats, 1)
    return len(y) / t, clf


def torch_train(torch, sizes, batch, X, y, repeats):
    nn = torch.nn
    mods = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*mods, nn.Linear(sizes[-2], sizes[-1]))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    onehot = torch.nn.functional.one_hot(yt, sizes[-1]).float()
    gen = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.randperm(len(yt), generator=gen)
        for s in range(0, len(yt), batch):
            idx = order[s:s + batch]
            opt.zero_grad()
            out = model(Xt[idx])
            loss = 0.5 * ((out - onehot[idx]) ** 2).sum(dim=1).mean()
            loss.backward()
            opt.step()
    return len(y) / best_of(epoch, repeats, 1), model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    ap.add_argument("--backend", metavar="NAME",
                    help=f"tinydl's backend (default: the first of {', '.join(PREFERENCES)} "
                         "that can run here)")
    args = ap.parse_args(argv)
    be_name, decisions = hal.select_backend(args.backend, preferences=PREFERENCES)
    be = hal.get_backend(be_name)
    print(f"tinydl backend: {be_name} ("
          + "; ".join(f"{n}: {why}" for n, why in decisions) + ")")
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
        print("PyTorch not installed: its columns are left empty (pip install torch)")
    rng = np.random.default_rng(0)
    rows = []
    reps = 2 if args.quick else 3
    print(f"{'net':6} {'batch':>5} {'tinydl sps':>11} {'torch sps':>10} {'ratio':>6} | "
          f"{'b1 us':>7} {'torch':>7} {'ratio':>6} | {'b256 us':>8} {'torch':>8} {'ratio':>6}")
    for name, sizes in NETS.items():
        n = (4096 if name == "small" else 1024) // (2 if args.quick else 1)
        X = rng.standard_normal((n, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], n)
        for batch in (32, 128, 512):
            t_sps, clf = tinydl_train(sizes, batch, X, y, reps, be)
            net = clf.network_
            net.ensure(256)
            x1, x256 = X[:1].copy(), X[:256].copy()
            inner = 200 if name == "small" else 10
            t_b1 = best_of(lambda: net.forward(x1), reps, inner) * 1e6
            t_b256 = best_of(lambda: net.forward(x256), reps, max(inner // 20, 2)) * 1e6
            row = {"net": name, "batch": batch, "tinydl_train_sps": t_sps,
                   "tinydl_b1_us": t_b1, "tinydl_b256_us": t_b256, "torch_train_sps": None,
                   "torch_b1_us": None, "torch_b256_us": None}
            if torch is not None:
                p_sps, model = torch_train(torch, sizes, batch, X, y, reps)
                x1t, x256t = torch.from_numpy(x1), torch.from_numpy(x256)
                with torch.inference_mode():
                    p_b1 = best_of(lambda: model(x1t), reps, inner) * 1e6
                    p_b256 = best_of(lambda: model(x256t), reps, max(inner // 20, 2)) * 1e6
                row.update(torch_train_sps=p_sps, torch_b1_us=p_b1, torch_b256_us=p_b256)
            rows.append(row)
            def r(a, b):
                return f"{a / b:6.2f}" if b else "   n/a"

            def f(v, w):
                return f"{v:{w}.1f}" if v is not None else f"{'n/a':>{w}}"
            print(f"{name:6} {batch:5d} {t_sps:11.0f} {f(row['torch_train_sps'], 10)} "
                  f"{r(t_sps, row['torch_train_sps'])} | {t_b1:7.1f} {f(row['torch_b1_us'], 7)} "
                  f"{r(t_b1, row['torch_b1_us'])} | {t_b256:8.1f} {f(row['torch_b256_us'], 8)} "
                  f"{r(t_b256, row['torch_b256_us'])}")
    print("(ratios: tinydl / torch; training wants >= 1, latency <= 0.5 on the small net)")

    # compact codes through the first layer
    l, k, units, batch = 100, 20, 64, 32
    idx = np.stack([rng.choice(l, k, replace=False) for _ in range(batch)]).astype(np.int32)
    vals = rng.standard_normal((batch, k)).astype(np.float32)
    sb = SparseCodes(idx, vals, l)
    net = Network([Dense(units)], (l,), "float32", be)
    net.prepare(batch, sparse_input=True)
    first = net.layers[0]
    dy = rng.standard_normal((batch, units)).astype(np.float32)

    def step():  # what a training step runs: forward, then the weight gradients (no dx)
        first.forward(sb, train=True)
        first.backward(dy.copy(), need_dx=False)

    first.sparse_product = "gather"
    t_sparse = best_of(step, reps, 200) * 1e6
    t_sparse_fwd = best_of(lambda: first.forward(sb), reps, 200) * 1e6
    first.sparse_product = "dense"
    t_dense = best_of(step, reps, 200) * 1e6
    t_dense_fwd = best_of(lambda: first.forward(sb), reps, 200) * 1e6
    print(f"\nfirst layer on codes l={l}, k={k}, {units} units, batch {batch}, forward + "
          f"backward: gather {t_sparse:.1f} us, scatter + dense {t_dense:.1f} us (sparse / "
          f"dense {t_sparse / t_dense:.2f}); forward only: {t_sparse_fwd:.1f} us vs "
          f"{t_dense_fwd:.1f} us ({t_sparse_fwd / t_dense_fwd:.2f}); 'auto' picks "
          f"{net.choose_sparse_product(sb)}")

    # footprint in advance against the measured peak
    print(f"\n{'footprint':28} {'reported':>10} {'peak':>10} {'peak/rep':>8}")
    for sizes, batch, opt in [([100, 64, 32, 19], 32, "sgd"), ([100, 256, 128, 19], 128, "adam")]:
        n = 4096
        X = rng.standard_normal((n, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], n)
        clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), batch_size=batch,
                            optimizer=opt, epochs=1, dropout=0.1, learning_rate=1e-3,
                            backend=be)
        fp = clf.footprint(batch, sizes[0], sizes[-1], n_samples=n)
        tracemalloc.start()
        clf.fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{str(sizes) + ' b' + str(batch) + ' ' + opt:28} {fp['total']:10d} {peak:10d} "
              f"{peak / fp['total']:8.3f}")

    result = {"backend": be_name, "rows": rows, "sparse_first_layer_us": t_sparse,
              "dense_first_layer_us": t_dense}
    if args.json:
        from tinydl.io import atomic_write_text
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
