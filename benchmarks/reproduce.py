"""The paper's evaluation (Table I and the noise experiment) on real data.

The same code as ``tinydl reproduce`` (:mod:`tinydl.reproduce`), run with one BLAS thread::

    python benchmarks/reproduce.py --data ../shared/data/dsa_subset20_f16.npz \\
        --data ../shared/data/ujiindoorloc.npz --json reproduce.json

See ``docs/reproduce.md`` for the protocol.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _common  # noqa: E402,F401  (one BLAS thread before NumPy loads)


def main(argv=None) -> int:
    from tinydl.cli import main as cli_main
    return cli_main(["reproduce", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
