"""Measure this machine and write platforms/<tag>.toml (the same as `tinydl calibrate`).

    python calibration/run_calibration.py -o platforms/my-host.toml [--quick] [--power-csv F]

The measuring code lives in hal.calibrate (this folder is not installed); every flag of
`tinydl calibrate` is accepted.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinydl.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["calibrate"] + sys.argv[1:]))
