"""Build an export with the host's ``cc`` or for a Cortex-M3 (``arm-none-eabi-gcc`` with
picolibc), run it (natively, or under ``qemu-system-arm`` on the MPS2 AN385 board with
semihosting) and measure it (``arm-none-eabi-size``).

Counting under emulation: QEMU runs with ``-icount shift=0``, so its virtual clock advances
exactly 1 ns per guest instruction; the harness reads the board's CMSDK timer 0, which QEMU
clocks at the AN385's 25 MHz system clock, around each ``tinydl_predict`` call.  One timer
tick is therefore :data:`INSNS_PER_TICK` = 40 instructions (resolution: 40 instructions per
call).  QEMU does not model a Cortex-M3's pipeline, wait states or DWT cycle counter: these
are instructions executed, not cycles (a Cortex-M3 takes about 1.1-1.5 cycles per
instruction on such code).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, List, Optional

import numpy as np

__all__ = ["tools", "build_host", "build_arm", "run", "run_qemu", "arm_object_sizes",
           "INSNS_PER_TICK", "MissingToolchain", "ARM_CFLAGS", "MPS2_LDFLAGS"]

#: guest instructions per tick of the AN385 timer under ``-icount shift=0`` (1 ns / insn at
#: 25 MHz)
INSNS_PER_TICK = 40
HERE = os.path.dirname(os.path.abspath(__file__))
#: the AN385's code and data memories (QEMU hw/arm/mps2.c: 4 MiB SSRAM1 at 0, 4 MiB SSRAM2/3
#: at 0x20000000); the Cortex-M3 profile's 512 KiB / 64 KiB are checked on the sizes instead
MPS2_LDFLAGS = ["-Wl,--defsym=__flash=0x0", "-Wl,--defsym=__flash_size=0x400000",
             "-Wl,--defsym=__ram=0x20000000", "-Wl,--defsym=__ram_size=0x400000"]
ARM_CFLAGS = ["-mcpu=cortex-m3", "-mthumb", "-O2", "-std=c99", "-ffunction-sections",
              "-fdata-sections", "--specs=picolibc.specs"]
_SOURCES = ("tinydl_model.c", "tinydl_runtime.c")


class MissingToolchain(RuntimeError):
    """A compiler or emulator the step needs is not installed."""


def tools() -> Dict[str, Optional[str]]:
    """Paths of ``cc``, ``arm-none-eabi-gcc``, ``arm-none-eabi-size`` and
    ``qemu-system-arm`` (None where absent)."""
    return {"cc": shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc"),
            "arm_gcc": shutil.which("arm-none-eabi-gcc"),
            "arm_size": shutil.which("arm-none-eabi-size"),
            "qemu": shutil.which("qemu-system-arm")}


def _need(*names) -> Dict[str, str]:
    t = tools()
    missing = [n for n in names if not t[n]]
    if missing:
        raise MissingToolchain(
            f"not installed: {', '.join(missing)} (Debian: apt-get install gcc-arm-none-eabi "
            "picolibc-arm-none-eabi qemu-system-arm)")
    return t


def _run(cmd: List[str], cwd=None, timeout=600) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed ({p.returncode}): "
                           f"{(p.stderr or p.stdout)[-2000:]}")
    return p


def _sources(export_dir) -> List[str]:
    return [os.path.join(export_dir, s) for s in _SOURCES]


def build_host(export_dir, build_dir) -> str:
    """The harness and the export compiled by the host's C compiler (strict C99,
    warnings are errors); returns the executable."""
    t = _need("cc")
    os.makedirs(build_dir, exist_ok=True)
    exe = os.path.join(build_dir, "tinydl_host")
    _run([t["cc"], "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror",
          "-I", export_dir, "-o", exe, os.path.join(HERE, "tinydl_main.c")]
         + _sources(export_dir) + ["-lm"])
    return exe


def build_arm(export_dir, build_dir) -> str:
    """The harness and the export for a Cortex-M3 (picolibc, semihosting, the AN385's
    memory map); returns the ELF."""
    t = _need("arm_gcc")
    os.makedirs(build_dir, exist_ok=True)
    elf = os.path.join(build_dir, "tinydl_m3.elf")
    _run([t["arm_gcc"]] + ARM_CFLAGS + ["-Wall", "-Wextra", "-Werror", "-DTDL_MPS2_TIMER",
                                        "--oslib=semihost", "--crt0=semihost", "-I", export_dir,
                                        "-o", elf, os.path.join(HERE, "tinydl_main.c")]
         + _sources(export_dir) + MPS2_LDFLAGS + ["-Wl,--gc-sections", "-lm"])
    return elf


def arm_object_sizes(export_dir, build_dir) -> Dict[str, int]:
    """``arm-none-eabi-size`` of the export's own objects (model and kernels, Cortex-M3):
    flash = text + data, RAM = data + bss."""
    t = _need("arm_gcc", "arm_size")
    os.makedirs(build_dir, exist_ok=True)
    objs = []
    for src in _sources(export_dir):
        obj = os.path.join(build_dir, os.path.basename(src)[:-2] + ".o")
        _run([t["arm_gcc"]] + ARM_CFLAGS + ["-I", export_dir, "-c", "-o", obj, src])
        objs.append(obj)
    out = _run([t["arm_size"], "-B", "-t"] + objs).stdout.splitlines()
    text, data, bss = (int(v) for v in out[-1].split()[:3])  # the TOTALS line
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data,
            "ram_bytes": data + bss}


def run_qemu(elf, workdir, timeout: float = 600) -> str:
    """Run ``elf`` on QEMU's MPS2 AN385 (Cortex-M3) with semihosting (files in ``workdir``)
    and ``-icount shift=0``; returns what the guest wrote to its standard output."""
    t = _need("qemu")
    # the guest's standard output (semihosting) goes to a file: QEMU would send it to its own
    # standard error otherwise, beside its warnings
    log = os.path.join(os.path.abspath(workdir), "tdl_stdout.txt")
    cmd = [t["qemu"], "-M", "mps2-an385", "-nographic", "-monitor", "none", "-serial", "none",
           "-chardev", f"file,id=tdlout,path={log}", "-semihosting-config",
           "enable=on,target=native,chardev=tdlout", "-icount", "shift=0",
           "-kernel", os.path.abspath(elf)]
    _run(cmd, cwd=workdir, timeout=timeout)
    with open(log) as fh:
        return fh.read()


def run(binary, X, workdir, arm: bool = False, timeout: float = 600) -> Dict:
    """Run a harness built by :func:`build_host` / :func:`build_arm` on the rows of ``X``.

    Returns
    -------
    dict
        ``classes`` (n,) int, ``scores`` (n, n_outputs) float32, and with ``arm`` the timer's
        ``ticks``, ``insns_per_inference`` (``ticks * 40 / n``).
    """
    X = np.ascontiguousarray(X, np.float32)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "tdl_input.bin"), "wb") as fh:
        fh.write(np.array(X.shape, np.int32).tobytes())
        fh.write(X.tobytes())
    if arm:
        lines = run_qemu(binary, workdir, timeout).split()
    else:
        lines = _run([os.path.abspath(binary)], cwd=workdir, timeout=timeout).stdout.split()
    if lines[:1] == ["error:"]:
        raise RuntimeError("the harness failed: " + " ".join(lines))
    res: Dict = {}
    if "ticks" in lines:
        at = lines.index("ticks")
        ticks = int(lines[at + 1])
        lines = lines[:at]
        if arm:
            res["ticks"] = ticks
            res["insns_per_inference"] = ticks * INSNS_PER_TICK / max(len(X), 1)
    res["classes"] = np.array([int(v) for v in lines], np.int64)
    raw = np.fromfile(os.path.join(workdir, "tdl_scores.bin"), np.float32)
    res["scores"] = raw.reshape(len(X), -1) if len(X) else raw.reshape(0, 0)
    if len(res["classes"]) != len(X):
        raise RuntimeError(f"the harness printed {len(res['classes'])} classes for {len(X)} "
                           "samples")
    return res
