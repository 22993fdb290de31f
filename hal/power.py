"""Energy sources: RAPL counters, INA3221 rails (Jetson), the battery, an external meter's CSV,
or the profile's power model -- whichever is readable, and always saying which was used.

Every source has the same small interface: :meth:`EnergySource.probe` returns ``None`` if it
can be read here (else why not), :meth:`~EnergySource.start` / :meth:`~EnergySource.stop`
bracket a run and return joules.  :func:`detect_source` tries them in order and falls back to
the model rather than fail: an unreadable counter is a recorded fallback, never a crash.

Sysfs paths are read under a ``root`` (default ``/``) so tests can build fake trees.
"""
from __future__ import annotations

import glob
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

__all__ = ["EnergySource", "RaplSource", "Ina3221Source", "BatterySource", "MeterCSV",
           "MeterCSVError", "ModelSource", "EnergyReading", "detect_source", "measure_energy"]


class MeterCSVError(ValueError):
    """A power meter's CSV file cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class EnergyReading:
    """Energy of one run: ``joules`` over ``seconds`` (``watts`` is their ratio), and the
    source that measured it."""

    joules: float
    seconds: float
    source: str

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0


class EnergySource:
    """Base class.  Subclasses set :attr:`name` and implement probe/start/stop."""

    name = "abstract"

    def probe(self) -> Optional[str]:
        """``None`` if readable here, else a one-line reason.  Never raises."""
        return "not implemented"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> EnergyReading:
        raise NotImplementedError


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def _read_num(path: str) -> float:
    return float(_read(path))


# -- RAPL ---------------------------------------------------------------------------------
class RaplSource(EnergySource):
    """Intel/AMD RAPL package counters under ``<root>/sys/class/powercap/intel-rapl:N``
    (microjoules, wrapping at ``max_energy_range_uj``; root-only since Linux 5.10)."""

    name = "rapl"

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self._start: List[float] = []
        self._t0 = 0.0

    def zones(self) -> List[str]:
        pattern = os.path.join(self.root, "sys", "class", "powercap", "intel-rapl:*")
        # top-level zones only (intel-rapl:0); sub-zones (intel-rapl:0:0) are inside them
        return sorted(z for z in glob.glob(pattern) if os.path.basename(z).count(":") == 1)

    def _energies(self) -> List[float]:
        return [_read_num(os.path.join(z, "energy_uj")) for z in self.zones()]

    def probe(self) -> Optional[str]:
        zones = self.zones()
        if not zones:
            return "no RAPL zones under /sys/class/powercap (absent in many VMs)"
        try:
            self._energies()
        except PermissionError:
            return "RAPL energy_uj is not readable (root-only since Linux 5.10)"
        except (OSError, ValueError) as exc:
            return f"RAPL energy_uj unreadable: {exc}"
        return None

    def start(self) -> None:
        self._start = self._energies()
        self._t0 = time.perf_counter()

    def stop(self) -> EnergyReading:
        end = self._energies()
        seconds = time.perf_counter() - self._t0
        total = 0.0
        for z, a, b in zip(self.zones(), self._start, end):
            if b < a:  # the counter wrapped
                try:
                    b += _read_num(os.path.join(z, "max_energy_range_uj"))
                except (OSError, ValueError):
                    b = a
            total += b - a
        return EnergyReading(total * 1e-6, seconds, self.name)


# -- sampled sources (rails, battery) -----------------------------------------------------
class _SampledSource(EnergySource):
    """A source that reads instantaneous watts; a thread samples it during the run and the
    energy is the trapezoid integral."""

    interval = 0.05

    def watts(self) -> float:
        raise NotImplementedError

    def probe(self) -> Optional[str]:
        try:
            w = self.watts()
        except (OSError, ValueError, LookupError) as exc:
            return f"{self.name}: {exc}"
        return None if w >= 0 else f"{self.name}: negative power reading {w}"

    def start(self) -> None:
        self._samples: List[Tuple[float, float]] = [(time.perf_counter(), self.watts())]
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.interval):
                try:
                    self._samples.append((time.perf_counter(), self.watts()))
                except (OSError, ValueError):
                    pass
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> EnergyReading:
        self._stop.set()
        self._thread.join()
        self._samples.append((time.perf_counter(), self.watts()))
        s = self._samples
        joules = sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(s, s[1:]))
        return EnergyReading(joules, s[-1][0] - s[0][0], self.name)


class Ina3221Source(_SampledSource):
    """INA3221 rails exposed through hwmon (Jetson TX1/TX2/Nano/Xavier; not the TK1):
    ``in<N>_input`` in mV, ``curr<N>_input`` in mA, ``in<N>_label`` the rail name.  Uses the
    board-total rail (``POM_5V_IN`` / ``VDD_IN``) when labelled, else the sum of the rails."""

    name = "ina3221"
    TOTAL_RAILS = ("POM_5V_IN", "VDD_IN", "VIN_SYS_5V0")

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def channels(self) -> List[Tuple[str, str, str]]:
        """``(label, voltage_path, current_path)`` of every INA3221 channel found."""
        out = []
        for hw in sorted(glob.glob(os.path.join(self.root, "sys", "class", "hwmon", "hwmon*"))):
            try:
                name = _read(os.path.join(hw, "name"))
            except OSError:
                continue
            if not name.startswith("ina3221"):
                continue
            for vin in sorted(glob.glob(os.path.join(hw, "in*_input"))):
                ch = os.path.basename(vin)[2:-6]
                cur = os.path.join(hw, f"curr{ch}_input")
                if not os.path.exists(cur):
                    continue
                try:
                    label = _read(os.path.join(hw, f"in{ch}_label"))
                except OSError:
                    label = f"{os.path.basename(hw)}/in{ch}"
                out.append((label, vin, cur))
        return out

    def watts(self) -> float:
        chans = self.channels()
        if not chans:
            raise LookupError("no INA3221 hwmon device (name 'ina3221*') found")
        total = [c for c in chans if c[0] in self.TOTAL_RAILS]
        use = total[:1] or chans
        return sum(_read_num(v) * _read_num(c) * 1e-6 for _, v, c in use)


class BatterySource(_SampledSource):
    """Discharge power of a laptop battery (``power_now`` in µW, or ``current_now`` x
    ``voltage_now``).  Only meaningful on battery: on AC power it reports unavailable."""

    name = "battery"

    def __init__(self, root: str = "/", check_plugged: bool = True) -> None:
        self.root = root
        self.check_plugged = check_plugged

    def _supply(self) -> str:
        bats = sorted(glob.glob(os.path.join(self.root, "sys", "class", "power_supply", "BAT*")))
        if not bats:
            raise LookupError("no battery under /sys/class/power_supply")
        return bats[0]

    def probe(self) -> Optional[str]:
        if self.check_plugged:
            try:
                import psutil
                bat = psutil.sensors_battery()
            except Exception as exc:  # psutil lacks battery support on some platforms
                return f"battery: psutil cannot read it ({type(exc).__name__})"
            if bat is None:
                return "battery: psutil finds no battery"
            if bat.power_plugged:
                return "battery: on AC power, so its discharge does not measure the run"
        return super().probe()

    def watts(self) -> float:
        bat = self._supply()
        p = os.path.join(bat, "power_now")
        if os.path.exists(p):
            return _read_num(p) * 1e-6
        return _read_num(os.path.join(bat, "current_now")) * \
            _read_num(os.path.join(bat, "voltage_now")) * 1e-12


# -- an external meter's log --------------------------------------------------------------
class MeterCSV(EnergySource):
    """An external power meter's log: rows ``timestamp,watts`` (Unix seconds, watts), with an
    optional header row.  The run's energy is the log integrated over the run's wall-clock
    window, so the meter must be logging while the run happens."""

    name = "meter-csv"

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._rows: Optional[List[Tuple[float, float]]] = None

    def rows(self) -> List[Tuple[float, float]]:
        """The parsed samples, sorted by time.

        Raises
        ------
        MeterCSVError
            Unreadable file, a malformed row (with its line number), a negative or non-finite
            figure, fewer than two samples.
        """
        if self._rows is not None:
            return self._rows
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise MeterCSVError(f"cannot read meter CSV {self.path}: {exc}") from None
        rows: List[Tuple[float, float]] = []
        seen_header = False
        for no, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            cells = [c.strip() for c in line.split(",")]
            try:
                if len(cells) != 2:
                    raise ValueError
                t, w = float(cells[0]), float(cells[1])
            except ValueError:
                if not rows and not seen_header:
                    seen_header = True  # the first content row may be a header
                    continue
                raise MeterCSVError(f"{self.path}, line {no}: expected 'timestamp,watts' "
                                    f"(two numbers), got {line[:60]!r}") from None
            if not (math.isfinite(w) and math.isfinite(t)) or w < 0:
                raise MeterCSVError(f"{self.path}, line {no}: watts must be a finite number "
                                    f">= 0, got {cells[1]!r}")
            rows.append((t, w))
        if len(rows) < 2:
            raise MeterCSVError(f"{self.path}: needs at least 2 samples, found {len(rows)}")
        rows.sort()
        self._rows = rows
        return rows

    def probe(self) -> Optional[str]:
        try:
            self.rows()
        except MeterCSVError as exc:
            return str(exc)
        return None

    def energy_between(self, t0: float, t1: float) -> float:
        """Joules between Unix times ``t0`` and ``t1`` (trapezoid, interpolated at the ends).

        Raises
        ------
        MeterCSVError
            If the log does not cover the window.
        """
        rows = self.rows()
        if t0 < rows[0][0] or t1 > rows[-1][0]:
            raise MeterCSVError(f"{self.path} covers {rows[0][0]:.3f}-{rows[-1][0]:.3f}; the "
                                f"run was {t0:.3f}-{t1:.3f}: start the meter before the run")

        def at(t):
            for (ta, wa), (tb, wb) in zip(rows, rows[1:]):
                if ta <= t <= tb:
                    return wa if tb == ta else wa + (wb - wa) * (t - ta) / (tb - ta)
            return rows[-1][1]
        pts = [(t0, at(t0))] + [r for r in rows if t0 < r[0] < t1] + [(t1, at(t1))]
        return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))

    def start(self) -> None:
        self._t0 = time.time()

    def stop(self) -> EnergyReading:
        t1 = time.time()
        return EnergyReading(self.energy_between(self._t0, t1), t1 - self._t0, self.name)


# -- the model ----------------------------------------------------------------------------
class ModelSource(EnergySource):
    """The profile's power model: ``idle_w + busy_units * active_w_per_unit`` watts."""

    name = "model"

    def __init__(self, profile=None, busy_units: int = 1) -> None:
        self.profile = profile
        self.busy_units = busy_units

    def probe(self) -> Optional[str]:
        return None if self.profile is not None else "model: no profile given"

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> EnergyReading:
        s = time.perf_counter() - self._t0
        p = self.profile.power
        units = max(1, min(self.busy_units, p.units))
        return EnergyReading(s * (p.idle_w + units * p.active_w_per_unit), s, self.name)


def detect_source(root: str = "/", csv: Optional[str] = None, profile=None,
                  order: Sequence[str] = ("meter-csv", "rapl", "ina3221", "battery", "model")
                  ) -> Tuple[EnergySource, List[Tuple[str, str]]]:
    """The best readable source, and ``(name, why chosen or skipped)`` for each one tried.

    An explicit meter CSV comes first (the user asked for it); the model is the fallback.
    """
    makers = {"meter-csv": lambda: MeterCSV(csv) if csv else None,
              "rapl": lambda: RaplSource(root), "ina3221": lambda: Ina3221Source(root),
              "battery": lambda: BatterySource(root), "model": lambda: ModelSource(profile)}
    decisions: List[Tuple[str, str]] = []
    for name in order:
        src = makers[name]()
        if src is None:
            decisions.append((name, "skipped: no --power-csv given"))
            continue
        try:
            why = src.probe()
        except Exception as exc:  # a broken counter must not take calibration down
            why = f"{type(exc).__name__}: {exc}"
        if why is None:
            decisions.append((name, "chosen"))
            return src, decisions
        decisions.append((name, f"skipped: {why}"))
    raise ValueError("no energy source: give a profile for the model fallback")


def measure_energy(fn, source: EnergySource) -> Tuple[object, EnergyReading]:
    """Run ``fn()`` between ``source.start()`` and ``source.stop()``; its result and the
    reading."""
    source.start()
    result = fn()
    return result, source.stop()
