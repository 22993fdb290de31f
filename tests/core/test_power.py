"""Energy sources: fake sysfs trees for RAPL, INA3221 and the battery, meter CSV files
(good and malformed), and the recorded fallback to the profile's model."""
from __future__ import annotations

import time

import pytest

from hal.power import (
    BatterySource,
    Ina3221Source,
    MeterCSV,
    MeterCSVError,
    ModelSource,
    RaplSource,
    detect_source,
    measure_energy,
)
from hal.profile import load_profile


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(text))


def _rapl(root, energy_uj, max_uj=262143328850):
    zone = root / "sys/class/powercap/intel-rapl:0"
    _write(zone / "name", "package-0")
    _write(zone / "energy_uj", energy_uj)
    _write(zone / "max_energy_range_uj", max_uj)
    # a sub-zone (the cores) is inside the package: it must not be counted twice
    _write(root / "sys/class/powercap/intel-rapl:0:0/energy_uj", 5)
    return zone / "energy_uj"


def _ina(root, rails, name="ina3221"):
    hw = root / "sys/class/hwmon/hwmon0"
    _write(hw / "name", name)
    for ch, (label, mv, ma) in enumerate(rails, 1):
        if label:
            _write(hw / f"in{ch}_label", label)
        _write(hw / f"in{ch}_input", mv)
        _write(hw / f"curr{ch}_input", ma)


def test_rapl_counts_package_energy_and_wraps(tmp_path):
    counter = _rapl(tmp_path, 1_000_000)
    src = RaplSource(str(tmp_path))
    assert src.probe() is None
    src.start()
    counter.write_text("3500000")
    r = src.stop()
    assert r.source == "rapl" and r.joules == pytest.approx(2.5)
    # the counter wraps at max_energy_range_uj
    counter.write_text(str(262143328850 - 1_000_000))
    src.start()
    counter.write_text("500000")
    assert src.stop().joules == pytest.approx(1.5)


@pytest.mark.parametrize("content", ["not-a-number", None])
def test_unreadable_rapl_is_a_recorded_fallback(tmp_path, content):
    counter = _rapl(tmp_path, 0)
    counter.unlink()
    if content is None:
        counter.mkdir()  # reading a directory fails with an OSError
    else:
        counter.write_text(content)
    assert "RAPL energy_uj unreadable" in RaplSource(str(tmp_path)).probe()
    src, decisions = detect_source(str(tmp_path), profile=load_profile("x86-64-host"))
    assert isinstance(src, ModelSource)
    assert dict(decisions)["rapl"].startswith("skipped: RAPL energy_uj unreadable")
    assert decisions[-1] == ("model", "chosen")


def test_absent_counters_fall_back_to_the_model(tmp_path):
    src, decisions = detect_source(str(tmp_path), profile=load_profile("jetson-tk1"))
    assert isinstance(src, ModelSource)
    names = [n for n, _ in decisions]
    assert names == ["meter-csv", "rapl", "ina3221", "battery", "model"]
    assert "no RAPL zones" in dict(decisions)["rapl"]
    with pytest.raises(ValueError, match="give a profile"):
        detect_source(str(tmp_path), profile=None)


def test_ina3221_uses_the_board_total_rail(tmp_path):
    _ina(tmp_path, [("VDD_GPU", 1000, 500), ("POM_5V_IN", 5000, 2000), ("VDD_CPU", 1000, 900)])
    src = Ina3221Source(str(tmp_path))
    assert src.watts() == pytest.approx(10.0)  # 5 V x 2 A, not the sum of the rails
    src.interval = 0.01
    _, r = measure_energy(lambda: time.sleep(0.1), src)
    assert r.watts == pytest.approx(10.0) and r.seconds >= 0.1
    chosen, decisions = detect_source(str(tmp_path), profile=load_profile("jetson-tk1"))
    assert chosen.name == "ina3221" and dict(decisions)["ina3221"] == "chosen"


def test_ina3221_without_labels_sums_rails_and_ignores_other_chips(tmp_path):
    _ina(tmp_path, [(None, 5000, 1000), (None, 1000, 1000)])
    assert Ina3221Source(str(tmp_path)).watts() == pytest.approx(6.0)
    other = tmp_path / "other"
    _ina(other, [(None, 5000, 1000)], name="nct6775")
    assert "no INA3221" in Ina3221Source(str(other)).probe()


def test_battery_power(tmp_path):
    bat = tmp_path / "sys/class/power_supply/BAT0"
    _write(bat / "power_now", 7_500_000)
    assert BatterySource(str(tmp_path), check_plugged=False).watts() == pytest.approx(7.5)
    (bat / "power_now").unlink()
    _write(bat / "current_now", 500_000)
    _write(bat / "voltage_now", 12_000_000)
    assert BatterySource(str(tmp_path), check_plugged=False).watts() == pytest.approx(6.0)
    assert "no battery" in BatterySource(str(tmp_path / "empty"), check_plugged=False).probe()


def test_meter_csv_integrates_over_the_window(tmp_path):
    path = tmp_path / "meter.csv"
    # a ramp from 10 W to 30 W over 0..10 s; header and a comment are allowed
    rows = ["timestamp,watts", "# logged by the bench meter"]
    rows += [f"{t},{10 + 2 * t}" for t in range(11)]
    path.write_text("\n".join(rows) + "\n")
    m = MeterCSV(str(path))
    assert m.probe() is None
    assert m.energy_between(0, 10) == pytest.approx(200.0)
    assert m.energy_between(2.5, 3.5) == pytest.approx(16.0)  # 10 + 2 * 3 W over 1 s
    with pytest.raises(MeterCSVError, match="start the meter before the run"):
        m.energy_between(5, 20)


@pytest.mark.parametrize("text,needle", [
    ("t,w\n1,5\n2,abc\n3,5\n", "line 3: expected 'timestamp,watts'"),
    ("1,5\n2,5,7\n", "line 2"),
    ("1,5\n2,-4\n", "line 2: watts must be a finite number >= 0"),
    ("1,5\n2,nan\n", "line 2: watts must be"),
    ("t,w\n1,5\n", "needs at least 2 samples, found 1"),
])
def test_malformed_meter_csv(tmp_path, text, needle):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(MeterCSVError, match=needle):
        MeterCSV(str(path)).rows()
    assert issubclass(MeterCSVError, ValueError)
    # in detection it is a recorded skip, and the model takes over
    src, decisions = detect_source(str(tmp_path), csv=str(path),
                                   profile=load_profile("x86-64-host"))
    assert isinstance(src, ModelSource) and needle.split(":")[0] in dict(decisions)["meter-csv"]


def test_absent_meter_csv_is_skipped(tmp_path):
    src, decisions = detect_source(str(tmp_path), csv=str(tmp_path / "nope.csv"),
                                   profile=load_profile("x86-64-host"))
    assert isinstance(src, ModelSource) and "cannot read meter CSV" in decisions[0][1]


def test_model_source_uses_the_profile_figures():
    p = load_profile("jetson-tk1")
    src = ModelSource(p, busy_units=4)
    _, r = measure_energy(lambda: time.sleep(0.05), src)
    assert r.source == "model"
    assert r.watts == pytest.approx(p.power.idle_w + 4 * p.power.active_w_per_unit)
