"""Importing tinydl and hal pulls in no optional dependency (checked in a fresh interpreter)."""
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]

OPTIONAL = ["pyopencl", "cffi", "mpi4py", "matplotlib", "onnx", "onnxruntime", "torch",
            "sklearn", "spams", "scipy_openblas32"]


def _modules_after(code):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_tinydl_and_hal_imports_no_optional_dependency():
    mods = _modules_after("import tinydl, hal")
    assert "hal" in mods and "tinydl" in mods  # the check itself sees imports
    leaked = sorted(m for m in mods if m.split(".")[0] in OPTIONAL)
    assert not leaked, f"import tinydl, hal imported optional modules: {leaked}"


def test_backend_modules_import_their_dependency_lazily():
    # importing a backend module (as the registry's probe does) must not import its library
    mods = _modules_after("import hal.backends.blas, hal.backends.opencl, "
                          "hal.backends.multiprocessing, hal.backends.null, hal.threads")
    leaked = sorted(m for m in mods if m.split(".")[0] in ("pyopencl", "cffi", "mpi4py"))
    assert not leaked, leaked
