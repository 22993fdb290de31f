"""Device profiles: what a platform can do, as frozen data loaded from ``platforms/<tag>.toml``.

A profile holds the figures the cost model (:mod:`hal.cost`) needs and says where each came
from (``published``: a datasheet or paper; ``measured``: ``tinydl calibrate`` on the machine;
``modeled``: derived from other figures).  Every figure carries its unit in its key name
(``bandwidth_gbs``, ``idle_w``, ``call_overhead_us``...), so a file with a unit the schema does not
know fails with the key, the file and what was expected, rather than being silently misread.

Search order for a tag: an explicit path, ``$TINYDL_PLATFORMS`` (a folder, or several separated
by ``os.pathsep``), the source checkout's ``platforms/`` next to the ``hal`` package, then
``<sys.prefix>/share/tinydl/platforms`` (where ``setup.cfg`` installs them).
"""
from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["DeviceProfile", "MemorySpec", "PowerSpec", "BackendSpec", "TransformModel",
           "TrainingModel", "ProfileError", "load_profile", "list_profiles", "profile_dirs",
           "parse_profile", "SOURCES", "OP_CLASSES", "SIZE_CLASSES", "SIZE_CLASS_FLOPS",
           "VECTOR_CLASS_ELEMS", "DTYPES", "POWER_SOURCES"]

SCHEMA_VERSION = 1
SOURCES = ("published", "measured", "modeled")
OP_CLASSES = ("matmul", "vector")
SIZE_CLASSES = ("small", "medium", "large")
#: FLOPs of the representative call of each size class; throughput is interpolated in
#: log(FLOPs) between them (calibration measures exactly these sizes, see hal.calibrate)
SIZE_CLASS_FLOPS = {"small": 2.0 * 32 * 128 * 64, "medium": 2.0 * 64 * 1024 * 128,
                    "large": 2.0 * 64 * 4096 * 256}
#: elements of the representative call of each size class for ``vector`` ops (elementwise and
#: small batched work: OMP iterations, optimizer updates)
VECTOR_CLASS_ELEMS = {"small": 1024, "medium": 32768, "large": 1048576}
DTYPES = ("float32", "float64")
POWER_SOURCES = ("model", "rapl", "ina3221", "battery", "meter-csv")


#: refuse profile files larger than this (bytes) before reading them
MAX_PROFILE_BYTES = 1 << 20


class ProfileError(ValueError):
    """A profile is absent, unreadable or breaks the schema; the message names the file and
    the key."""


@dataclass(frozen=True)
class MemorySpec:
    """Memory figures.  ``capacity_bytes``: RAM (SRAM on a microcontroller);
    ``bandwidth_gbs``: sustained bandwidth in GB/s (1e9 bytes/s); ``flash_bytes``: read-only
    storage for weights (0 where weights live in RAM)."""

    capacity_bytes: int
    bandwidth_gbs: float
    flash_bytes: int = 0
    source: str = "modeled"
    note: str = ""


@dataclass(frozen=True)
class PowerSpec:
    """Power model: ``idle_w + busy_units * active_w_per_unit`` watts while computing, or,
    where given, ``energy_per_flop_pj`` and ``energy_per_byte_pj`` on top of idle power.
    ``measured_with`` names the source the figures came from (one of ``POWER_SOURCES``)."""

    idle_w: float
    active_w_per_unit: float
    units: int = 1
    energy_per_flop_pj: Optional[float] = None
    energy_per_byte_pj: Optional[float] = None
    measured_with: str = "model"
    source: str = "modeled"
    note: str = ""

    @property
    def max_w(self) -> float:
        """Board power with every unit busy."""
        return self.idle_w + self.units * self.active_w_per_unit


@dataclass(frozen=True)
class TransformModel:
    """Constants of the OMP-iteration cost: per sample, iteration ``t`` (0-based) costs
    ``c1_flops * l + c2_flops * t * l`` FLOP-equivalents at the backend's ``vector``
    throughput, plus ``calls_per_iteration`` backend calls per batch."""

    c1_flops: float = 8.0
    c2_flops: float = 2.0
    calls_per_iteration: float = 20.0
    source: str = "modeled"
    note: str = ""


@dataclass(frozen=True)
class TrainingModel:
    """Per layer and mini-batch, a trainer makes about ``calls_per_layer`` backend calls
    (products, bias, activation, its derivative, the optimizer update)."""

    calls_per_layer: float = 14.0
    source: str = "modeled"
    note: str = ""


@dataclass(frozen=True)
class BackendSpec:
    """Throughput of one backend: GFLOP/s for each (dtype, op class, size class), and the
    fixed cost of one call in seconds."""

    name: str
    call_overhead_s: float
    gflops: Tuple[Tuple[str, str, str, float], ...]
    source: str = "modeled"
    note: str = ""

    @functools.lru_cache(maxsize=8192)  # noqa: B019 - frozen, hashable, few instances
    def throughput(self, op: str, dtype: str, flops_per_call: Optional[float] = None) -> float:
        """GFLOP/s for a call of ``flops_per_call`` FLOPs (for ``vector`` ops: elements per
        call), log-interpolated between the size classes and clamped outside them.
        float64 falls back to half the float32 figure and vice versa at twice, when only one dtype
        is listed."""
        table = {(d, o, s): v for d, o, s, v in self.gflops}
        ref = VECTOR_CLASS_ELEMS if op == "vector" else SIZE_CLASS_FLOPS
        pts = [(ref[s], table.get((dtype, op, s))) for s in SIZE_CLASSES]
        if all(v is None for _, v in pts):
            other = "float32" if dtype == "float64" else "float64"
            scale = 0.5 if dtype == "float64" else 2.0
            pts = [(ref[s], table.get((other, op, s))) for s in SIZE_CLASSES]
            pts = [(f, None if v is None else v * scale) for f, v in pts]
        pts = [(f, v) for f, v in pts if v is not None]
        if not pts:
            raise ProfileError(f"backend {self.name!r} lists no {op!r} throughput for "
                               f"{dtype}; listed: {sorted({(d, o) for d, o, _, _ in self.gflops})}")
        if flops_per_call is None or len(pts) == 1:
            return pts[-1][1] if flops_per_call is None else pts[0][1]
        x = math.log(max(float(flops_per_call), 1.0))
        xs = [math.log(f) for f, _ in pts]
        if x <= xs[0]:
            return pts[0][1]
        if x >= xs[-1]:
            return pts[-1][1]
        for (x0, (_, v0)), (x1, (_, v1)) in zip(zip(xs, pts), zip(xs[1:], pts[1:])):
            if x <= x1:
                return v0 + (v1 - v0) * (x - x0) / (x1 - x0)
        return pts[-1][1]  # pragma: no cover


@dataclass(frozen=True)
class DeviceProfile:
    """A platform's figures (frozen).  Build with :func:`load_profile` or
    :func:`parse_profile`; derive a changed copy with :func:`dataclasses.replace`.

    Attributes
    ----------
    tag : str
        Short name, also the file name (``platforms/<tag>.toml``).
    training : bool
        False for inference-only targets (microcontrollers).
    threads : int
        BLAS/worker threads the figures were taken with (the default for a run).
    backend_preference : tuple of str
        Backends to try in order (:func:`hal.select_backend`).
    memory, power, transform, training_model, backends
        The figures; ``backends`` is a tuple of :class:`BackendSpec`.
    """

    tag: str
    name: str
    description: str
    training: bool
    threads: int
    backend_preference: Tuple[str, ...]
    memory: MemorySpec
    power: PowerSpec
    transform: TransformModel
    training_model: TrainingModel
    backends: Tuple[BackendSpec, ...]
    path: Optional[str] = field(default=None, compare=False)

    def backend(self, name: str) -> BackendSpec:
        """The figures of backend ``name``; a backend the profile does not list is an error."""
        for b in self.backends:
            if b.name == name:
                return b
        raise ProfileError(f"profile {self.tag!r} has no figures for backend {name!r}; it "
                           f"lists: {', '.join(b.name for b in self.backends)}")

    @property
    def backend_names(self) -> Tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    def to_toml(self) -> str:
        """The profile as TOML text that :func:`parse_profile` reads back to an equal profile."""
        return _to_toml(self)

    def save(self, path) -> None:
        """Write :meth:`to_toml` to ``path`` atomically (a crash leaves the old file)."""
        from ._files import atomic_write_text
        atomic_write_text(path, self.to_toml())

    def with_path(self, path: Optional[str]) -> "DeviceProfile":
        return replace(self, path=path)


# -- schema -------------------------------------------------------------------------------
# key -> (kind, required); kinds: "str", "bool", "int+", "num+", "num>0", "strlist", "source"
_TOP = {"schema_version": ("int+", True), "tag": ("str", True), "name": ("str", True),
        "description": ("str", False), "training": ("bool", True), "threads": ("int>0", False),
        "backend_preference": ("strlist", True), "memory": ("table", True),
        "power": ("table", True), "transform": ("table", False), "training_model":
            ("table", False), "backends": ("table", True)}
_MEMORY = {"capacity_bytes": ("int>0", True), "bandwidth_gbs": ("num>0", True),
           "flash_bytes": ("int+", False), "source": ("source", True), "note": ("str", False)}
_POWER = {"idle_w": ("num+", True), "active_w_per_unit": ("num+", True),
          "units": ("int>0", False), "energy_per_flop_pj": ("num+", False),
          "energy_per_byte_pj": ("num+", False), "measured_with": ("powersrc", False),
          "source": ("source", True), "note": ("str", False)}
_TRANSFORM = {"c1_flops": ("num+", True), "c2_flops": ("num+", True),
              "calls_per_iteration": ("num+", False), "source": ("source", True),
              "note": ("str", False)}
_TRAINING = {"calls_per_layer": ("num+", True), "source": ("source", True),
             "note": ("str", False)}
_BACKEND = {"call_overhead_us": ("num+", True), "source": ("source", True),
            "note": ("str", False), "gflops": ("table", True)}
_EXPECT = {"str": "a string", "bool": "true or false", "int+": "an integer >= 0",
           "int>0": "an integer >= 1", "num+": "a number >= 0", "num>0": "a number > 0",
           "strlist": "a list of strings", "source": f"one of {', '.join(SOURCES)}",
           "powersrc": f"one of {', '.join(POWER_SOURCES)}", "table": "a table"}


def _check(where: str, fname: str, table: Any, schema: Dict[str, Tuple[str, bool]]) -> Dict:
    if not isinstance(table, dict):
        raise ProfileError(f"{fname}: [{where}] must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ProfileError(f"{fname}: unknown key {key!r}; allowed under "
                           f"[{where or 'top level'}]: {', '.join(schema)} (figures carry "
                           "their unit in the key name, e.g. bandwidth_gbs, idle_w)")
    out = {}
    for key, (kind, required) in schema.items():
        full = f"{where}.{key}" if where else key
        if key not in table:
            if required:
                raise ProfileError(f"{fname}: missing key {full!r} ({_EXPECT[kind]})")
            continue
        out[key] = _value(fname, full, table[key], kind)
    return out


def _value(fname: str, full: str, v: Any, kind: str):
    bad = None
    if kind in ("str", "source", "powersrc"):
        if not isinstance(v, str):
            bad = True
        elif kind == "source" and v not in SOURCES:
            bad = True
        elif kind == "powersrc" and v not in POWER_SOURCES:
            bad = True
    elif kind == "bool":
        bad = not isinstance(v, bool)
    elif kind in ("int+", "int>0"):
        bad = isinstance(v, bool) or not isinstance(v, int) or v < (1 if kind == "int>0" else 0)
    elif kind in ("num+", "num>0"):
        try:  # an integer too large for a float is refused like an infinite one
            bad = (isinstance(v, bool) or not isinstance(v, (int, float))
                   or not math.isfinite(v) or v < 0 or (kind == "num>0" and v == 0))
        except OverflowError:
            bad = True
        if not bad:
            v = float(v)
    elif kind == "strlist":
        bad = not isinstance(v, list) or not all(isinstance(s, str) for s in v)
        if not bad:
            v = tuple(v)
    elif kind == "table":
        bad = not isinstance(v, dict)
    if bad:
        raise ProfileError(f"{fname}: key {full!r} must be {_EXPECT[kind]}, got {v!r}")
    return v


def _known_backends():
    from . import BACKENDS
    return set(BACKENDS)


def parse_profile(data: Mapping[str, Any], fname: str = "<profile>") -> DeviceProfile:
    """Check a decoded TOML document against the schema and build a :class:`DeviceProfile`.

    Raises
    ------
    ProfileError
        Naming ``fname``, the offending key and what was expected.
    """
    if not isinstance(data, Mapping):
        raise ProfileError(f"{fname}: a profile is a table of keys, got "
                           f"{type(data).__name__}")
    top = _check("", fname, dict(data), _TOP)
    if top["schema_version"] != SCHEMA_VERSION:
        raise ProfileError(f"{fname}: schema_version is {top['schema_version']}; this tinydl "
                           f"reads version {SCHEMA_VERSION}")
    known = _known_backends()
    for name in top["backend_preference"]:
        if name not in known:
            raise ProfileError(f"{fname}: backend_preference names unknown backend {name!r}; "
                               f"known backends: {', '.join(sorted(known))}")
    mem = MemorySpec(**_check("memory", fname, top["memory"], _MEMORY))
    pw = _check("power", fname, top["power"], _POWER)
    power = PowerSpec(**pw)
    tr = TransformModel(**_check("transform", fname, top["transform"], _TRANSFORM)) \
        if "transform" in top else TransformModel()
    tm = TrainingModel(**_check("training_model", fname, top["training_model"], _TRAINING)) \
        if "training_model" in top else TrainingModel()
    backends = []
    for name, tbl in top["backends"].items():
        if name not in known:
            raise ProfileError(f"{fname}: [backends.{name}] is not a known backend; known "
                               f"backends: {', '.join(sorted(known))}")
        b = _check(f"backends.{name}", fname, tbl, _BACKEND)
        rows = []
        for dt, ops in b["gflops"].items():
            if dt not in DTYPES:
                raise ProfileError(f"{fname}: [backends.{name}.gflops] has key {dt!r}; "
                                   f"expected a dtype: {', '.join(DTYPES)}")
            ops = _value(fname, f"backends.{name}.gflops.{dt}", ops, "table")
            for op, sizes in ops.items():
                if op not in OP_CLASSES:
                    raise ProfileError(f"{fname}: key 'backends.{name}.gflops.{dt}.{op}' is "
                                       f"not an op class; expected {', '.join(OP_CLASSES)}")
                where = f"backends.{name}.gflops.{dt}.{op}"
                sizes = _value(fname, where, sizes, "table")
                for sc, val in sizes.items():
                    if sc not in SIZE_CLASSES:
                        raise ProfileError(f"{fname}: key '{where}.{sc}' is not a size "
                                           f"class; expected {', '.join(SIZE_CLASSES)}")
                    rows.append((dt, op, sc, _value(fname, f"{where}.{sc}", val, "num>0")))
        if not rows:
            raise ProfileError(f"{fname}: [backends.{name}.gflops] lists no throughput")
        missing = [op for op in OP_CLASSES if not any(r[1] == op for r in rows)]
        if missing:  # the cost model prices every op class (hal.cost)
            raise ProfileError(f"{fname}: [backends.{name}.gflops] lists no "
                               f"{' or '.join(repr(o) for o in missing)} throughput; each of "
                               f"{', '.join(OP_CLASSES)} needs a figure for float32 or "
                               "float64")
        backends.append(BackendSpec(name, b["call_overhead_us"] * 1e-6, tuple(rows),
                                    b["source"], b.get("note", "")))
    if not backends:
        raise ProfileError(f"{fname}: [backends] must list at least one backend")
    listed = {b.name for b in backends}
    for name in top["backend_preference"]:
        if name == "null" and top["training"]:
            raise ProfileError(f"{fname}: backend_preference names 'null', which computes "
                               "zeros (it counts work for the cost model): a training "
                               "profile's learner would train on them; name a computing "
                               "backend")
        if name not in listed and name != "null":
            raise ProfileError(f"{fname}: backend_preference names {name!r}, which has no "
                               f"[backends.{name}] figures; listed: {', '.join(sorted(listed))}")
    return DeviceProfile(tag=top["tag"], name=top["name"],
                         description=top.get("description", ""), training=top["training"],
                         threads=top.get("threads", 1),
                         backend_preference=top["backend_preference"], memory=mem,
                         power=power, transform=tr, training_model=tm,
                         backends=tuple(backends), path=None if fname.startswith("<")
                         else fname)


# -- finding and loading ------------------------------------------------------------------
def profile_dirs() -> List[str]:
    """Folders searched for ``<tag>.toml``, in order (existing ones only)."""
    dirs = []
    env = os.environ.get("TINYDL_PLATFORMS", "")
    dirs += [d for d in env.split(os.pathsep) if d]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs.append(os.path.join(here, "platforms"))
    dirs.append(os.path.join(sys.prefix, "share", "tinydl", "platforms"))
    seen, out = set(), []
    for d in dirs:
        real = os.path.realpath(d)
        if real not in seen and os.path.isdir(d):
            seen.add(real)
            out.append(d)
    return out


def list_profiles() -> Dict[str, str]:
    """``{tag: path}`` of every profile found (the first folder that has a tag wins)."""
    out: Dict[str, str] = {}
    for d in profile_dirs():
        for fn in sorted(os.listdir(d)):
            if fn.endswith(".toml") and fn[:-5] not in out:
                out[fn[:-5]] = os.path.join(d, fn)
    return out


def _toml_module():
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python < 3.11
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise ProfileError("reading profiles needs tomli on Python < 3.11 "
                               "(pip install tomli)") from exc
    return tomllib


def load_profile(tag_or_path) -> DeviceProfile:
    """Load a profile by tag (``"jetson-tk1"``) or by path (anything with a ``/`` or ending
    in ``.toml``), or return a :class:`DeviceProfile` given as is.

    Raises
    ------
    ProfileError
        Unknown tag (the message lists those available), unreadable file, bad TOML, or a
        schema violation.
    """
    if isinstance(tag_or_path, DeviceProfile):
        return tag_or_path
    spec = os.fspath(tag_or_path)
    if os.sep in spec or "/" in spec or spec.endswith(".toml"):
        path = spec
    else:
        found = list_profiles()
        if spec not in found:
            raise ProfileError(f"no profile named {spec!r}; available: "
                               f"{', '.join(sorted(found)) or 'none'} (searched "
                               f"{', '.join(profile_dirs()) or 'no folder'})")
        path = found[spec]
    tomllib = _toml_module()
    try:
        size = os.path.getsize(path)
        if size > MAX_PROFILE_BYTES:  # checked before reading: a profile is a few KiB
            raise ProfileError(f"{path} is {size} bytes, above the limit of "
                               f"{MAX_PROFILE_BYTES} for a profile")
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8
        raise ProfileError(f"{path} is not valid TOML: not UTF-8 at byte {exc.start}") \
            from None
    except RecursionError:  # arrays or inline tables nested hundreds deep
        raise ProfileError(f"{path} is not a usable profile: values nested too deeply") \
            from None
    return parse_profile(data, path)


# -- writing ------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(float(v))
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def _section(lines, header, pairs):
    lines.append("")
    lines.append(f"[{header}]")
    for k, v in pairs:
        if v is not None:
            lines.append(f"{k} = {_fmt(v)}")


def _to_toml(p: DeviceProfile) -> str:
    lines = [f"# tinydl device profile: {p.name}", f"schema_version = {SCHEMA_VERSION}",
             f"tag = {_fmt(p.tag)}", f"name = {_fmt(p.name)}",
             f"description = {_fmt(p.description)}", f"training = {_fmt(p.training)}",
             f"threads = {p.threads}", f"backend_preference = {_fmt(p.backend_preference)}"]
    m = p.memory
    _section(lines, "memory", [("capacity_bytes", m.capacity_bytes),
                               ("bandwidth_gbs", m.bandwidth_gbs),
                               ("flash_bytes", m.flash_bytes), ("source", m.source),
                               ("note", m.note)])
    w = p.power
    _section(lines, "power", [("idle_w", w.idle_w), ("active_w_per_unit", w.active_w_per_unit),
                              ("units", w.units), ("energy_per_flop_pj", w.energy_per_flop_pj),
                              ("energy_per_byte_pj", w.energy_per_byte_pj),
                              ("measured_with", w.measured_with), ("source", w.source),
                              ("note", w.note)])
    t = p.transform
    _section(lines, "transform", [("c1_flops", t.c1_flops), ("c2_flops", t.c2_flops),
                                  ("calls_per_iteration", t.calls_per_iteration),
                                  ("source", t.source), ("note", t.note)])
    tm = p.training_model
    _section(lines, "training_model", [("calls_per_layer", tm.calls_per_layer),
                                       ("source", tm.source), ("note", tm.note)])
    for b in p.backends:
        # 12 digits: seconds -> microseconds must not add a rounding tail (12.000000000000002)
        us = float(f"{b.call_overhead_s * 1e6:.12g}")
        _section(lines, f"backends.{b.name}", [("call_overhead_us", us),
                                               ("source", b.source), ("note", b.note)])
        by_dtype: Dict[str, Dict[str, Dict[str, float]]] = {}
        for dt, op, sc, v in b.gflops:
            by_dtype.setdefault(dt, {}).setdefault(op, {})[sc] = v
        for dt, ops in by_dtype.items():
            lines.append(f"[backends.{b.name}.gflops.{dt}]")
            for op, sizes in ops.items():
                inner = ", ".join(f"{sc} = {_fmt(float(v))}" for sc, v in sizes.items())
                lines.append(f"{op} = {{ {inner} }}")
    return "\n".join(lines) + "\n"
