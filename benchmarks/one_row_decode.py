"""What bounds a lone row's product over stored atoms: bare loops of the native one-row
correlation block (``hal/backends/native/correlate.c``) over float32, float16 and int8 atoms.

A one-sample transform reads every atom value once (a gemv over the dictionary).  Over
float32 atoms it is bound by that read (from L3 at m=5625 on the x86 host here); over stored
atoms decoded by their conversion instruction alone (F16C's ``vcvtph2ps``; for int8 a sign
extension and ``vcvtdq2ps``) by the conversion, one vector of 8 values a cycle there.  The
kernel decodes 5 of each 14 float16 vectors (4 of 14 int8) by exact integer operations instead
(``tdl_load_f16_scaled``, ``tdl_load_i8_int``), which run beside the conversions.  This
script builds ``benchmarks/one_row_decode.c`` for each size (``gcc -O3 -march=native``, the
native backend's flags) and prints each variant's best time per call and its throughput
against float32 in the same run (interleaved rounds), and whether the mixed decodings gave
the conversion's bits.  ``--mixed-f16 N`` and ``--mixed-int8 N`` (default 5 and 4, the
kernel's choice: the fastest here of 3..7 at both sizes) set how many of the 14 vectors take
the integer decoding.

    python benchmarks/one_row_decode.py --json one_row_decode.json
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import print_table, write_json  # noqa: E402, I001
import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "one_row_decode.c")
VARIANTS = ("float32", "float16_convert", "float16_mixed", "int8_convert", "int8_mixed")


def run_size(m: int, mixed: tuple, rounds: int, tmp: str) -> dict:
    exe = os.path.join(tmp, f"ord_{m}")
    cmd = ["gcc", "-O3", "-march=native", "-ffp-contract=off", f"-DM={m}",
           f"-DNI16={mixed[0]}", f"-DNI8={mixed[1]}", SRC, "-o", exe]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"building {SRC} failed (needs gcc and an x86 CPU with AVX2, FMA "
                         f"and F16C):\n{res.stderr}")
    out = subprocess.run([exe, str(rounds)], capture_output=True, text=True, check=True).stdout
    vals = dict(line.split() for line in out.split("\n") if line.strip())
    r = {k: float(vals[k]) for k in VARIANTS}
    r["bits_equal"] = vals["bits_equal"] == "1"
    r["throughput_vs_float32"] = {k: r["float32"] / r[k] for k in VARIANTS[1:]}
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="5625,520", help="feature counts m (l = 112)")
    ap.add_argument("--mixed-f16", type=int, default=5, help="float16 vectors of 14 by integer ops")
    ap.add_argument("--mixed-int8", type=int, default=4, help="int8 vectors of 14 by integer ops")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args(argv)
    if shutil.which("gcc") is None or platform.machine() not in ("x86_64", "AMD64"):
        print("one_row_decode: needs gcc on an x86-64 host: skipped")
        return 0
    sizes = [int(s) for s in a.sizes.split(",") if s]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in sizes:
            results[str(m)] = run_size(m, (a.mixed_f16, a.mixed_int8), a.rounds, tmp)
    rows = []
    for m, r in results.items():
        for k in VARIANTS:
            rows.append([m, k, f"{r[k]:.2f}",
                         "1.00" if k == "float32" else f"{r['throughput_vs_float32'][k]:.2f}",
                         "" if k == "float32" else ("yes" if r["bits_equal"] else "NO")])
    print(f"one-row block, l = 112 (14 vectors); *_mixed: {a.mixed_f16} (float16) and "
          f"{a.mixed_int8} (int8) of 14 by integer ops; best of {a.rounds} interleaved rounds")
    print_table(["m", "atoms", "us per call", "throughput x float32", "bits = conversion"],
                rows)
    if a.json:
        write_json(a.json, {"l": 112, "mixed_vectors": {"float16": a.mixed_f16,
                                                         "int8": a.mixed_int8},
                            "rounds": a.rounds,
                            "sizes": results})
    return 0 if all(r["bits_equal"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
