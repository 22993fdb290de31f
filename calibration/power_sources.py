"""Which energy source can this machine read?  Prints every source tried and why it was chosen
or skipped, then measures idle and busy power with the chosen one (or says it is the model).

    python calibration/power_sources.py [--power-csv METER.csv] [--root /] [--profile TAG]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hal.power import ModelSource, detect_source  # noqa: E402
from hal.profile import load_profile  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--power-csv", help="an external meter's log: unix timestamp, watts")
    ap.add_argument("--root", default="/", help="sysfs root (default /)")
    ap.add_argument("--profile", default="x86-64-host", help="profile for the model fallback")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of each measurement")
    args = ap.parse_args(argv)
    src, decisions = detect_source(args.root, args.power_csv, load_profile(args.profile))
    for name, why in decisions:
        print(f"{name:<10} {why}")
    if isinstance(src, ModelSource):
        print("no counter readable: the cost model uses the profile's power figures")
        return 0
    import numpy as np
    src.start()
    time.sleep(args.seconds)
    idle = src.stop()
    a = np.ones((256, 256))
    src.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        a @ a
    busy = src.stop()
    print(f"idle {idle.watts:.2f} W, one core busy {busy.watts:.2f} W (source {src.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
