"""Issue 14, must-show 3: one backend decision.  With no ``--backend``, the backend the plan
records, the one ``tinydl fit`` and ``tinydl evaluate`` report in ``--json`` (the one that
ran) and the one ``tinydl devices --json`` names as chosen are the same; with
``TINYDL_BACKEND=numpy`` all of them say ``numpy``, the fitted network included."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROFILE = "x86-64-host"
FIT = ("--l", 16, "--k", 4, "--hidden", "8", "--window", 128, "--n-batch", 64, "--epochs", 1,
       "--quiet")


def _run(env, *args):
    import subprocess
    import sys
    full = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full.pop("TINYDL_BACKEND", None)
    full.update(env)
    r = subprocess.run([sys.executable, "-m", "tinydl", *map(str, args)], env=full,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    X = rng.standard_normal((3, 24))[y] + 0.5 * rng.standard_normal((600, 24))
    path = str(tmp_path_factory.mktemp("data") / "s.npz")
    np.savez(path, X_train=X.astype(np.float32), y_train=y, X_test=X[:100].astype(np.float32),
             y_test=y[:100])
    return path


@pytest.mark.parametrize("env", [{}, {"TINYDL_BACKEND": "numpy"}], ids=["auto", "env-numpy"])
def test_plan_fit_evaluate_and_devices_name_one_backend(data, tmp_path, env):
    from tinydl.learner import TinyDLClassifier
    devices = _run(env, "devices", "--profile", PROFILE, "--json", "-")
    plan = _run(env, "plan", "--data", data, "--profile", PROFILE, "--json", "-",
                "-o", tmp_path / "plan.json")
    model = tmp_path / "model"
    fit = _run(env, "fit", data, "-o", model, "--plan", tmp_path / "plan.json", *FIT,
               "--json", "-")
    ev = _run(env, "evaluate", model, "--data", data, "--json", "-")
    names = {"devices": devices["chosen"], "plan": plan["backend"], "fit": fit["backend"],
             "fit's plan": fit["plan"]["backend"], "evaluate": ev["backend"]}
    assert len(set(names.values())) == 1, names
    if env:
        assert set(names.values()) == {"numpy"}, names
    learner = TinyDLClassifier.load(model)
    assert learner.backend_ == devices["chosen"]
    assert learner.network_.network_.backend.name == devices["chosen"]
