"""The execution runtime ratios of ``tinydl reproduce`` alone (minutes, not the whole run).

    python benchmarks/reproduce_exec.py --data ../shared/data/dsa_subset20_f16.npz \\
        --data ../shared/data/ujiindoorloc.npz [--backend native] [--from-json r.json] \\
        [--epochs 1] [--json OUT]

For each data set: the same split, stream and timing as ``tinydl reproduce``
(:func:`tinydl.reproduce.exec_timing.exec_timing`), the raw network and TinyDL trained once each
at the settings a full run chose (``--from-json``: its JSON, default ``docs/results/r.json``
when it names the data set; else the protocol's reference size), with ``--epochs`` epochs per
update (the execution time depends on the sizes, not on the training).  Prints
``exec_us_raw``, ``exec_us_tinydl`` (the network on codes), ``exec_us_tinydl_with_transform``
(end to end) and the ratios ``exec_time_ratio`` / ``exec_time_ratio_with_transform`` (raw /
TinyDL, both in the same process).  One BLAS thread.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse  # noqa: E402
import json  # noqa: E402

from benchmarks._common import REPO_ROOT, print_table, write_json  # noqa: E402

DEFAULT_JSON = os.path.join(REPO_ROOT, "docs", "results", "r.json")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, metavar="PATH")
    ap.add_argument("--from-json", default=DEFAULT_JSON, metavar="PATH",
                    help="a full run's JSON (tinydl reproduce --json): its chosen settings")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per update (default 1)")
    ap.add_argument("--backend", default=None, metavar="NAME",
                    help="run both learners on this hal backend (as tinydl reproduce "
                         "--backend; default: hal.select_backend's choice)")
    ap.add_argument("--json", default=None, metavar="OUT")
    args = ap.parse_args(argv)
    import hal.threads
    from tinydl.reproduce import Settings
    from tinydl.reproduce.exec_timing import chosen_settings, exec_timing
    hal.threads.set_num_threads(1)
    full = {}
    if args.from_json and os.path.exists(args.from_json):
        with open(args.from_json) as f:
            full = json.load(f)
    results, rows = {}, []
    for path in args.data:
        key = os.path.basename(os.path.normpath(path))
        chosen = chosen_settings(full[key]) if key in full else None
        r = exec_timing(path, Settings(epochs=args.epochs, backend=args.backend),
                        chosen=chosen)
        r["chosen_from"] = args.from_json if chosen else "the protocol's reference size"
        results[key] = r
        rows.append([key, "-".join(map(str, r["raw_sizes"])),
                     "-".join(map(str, r["tinydl_sizes"])) + f" k={r['chosen']['k']}",
                     f"{r['exec_us_raw']:.1f}", f"{r['exec_us_tinydl']:.1f}",
                     f"{r['exec_us_tinydl_with_transform']:.1f}",
                     f"{r['exec_time_ratio']:.1f}x", f"{r['exec_time_ratio_with_transform']:.2f}x"])
        print(f"{key}: done in {r['wall_s']:.0f} s", file=sys.stderr, flush=True)
    print(f"backend={results[key]['backend']} (execution phase on "
          f"{results[key].get('exec_kernels', '?')} kernels), one BLAS thread, us per sample "
          "(best of 3 passes over 200 test rows, one at a time)")
    print_table(["data", "raw", "tinydl", "raw us", "net us", "e2e us", "net ratio",
                 "e2e ratio"], rows)
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
