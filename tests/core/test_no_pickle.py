"""No pickle, eval or exec on data anywhere in the package (tinydl/, hal/).

An AST scan (comments and strings do not count) for: imports of pickle-like modules,
``allow_pickle=True``, any ``np.load`` without an explicit ``allow_pickle=False``, calls to
``eval``/``exec``, and mpi4py's lower-case object methods on a communicator
(``comm.bcast``/``send``/``recv``... pickle Python objects; the upper-case buffer methods
do not).
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal",
            "joblib"}
MPI_OBJECT_METHODS = {"bcast", "send", "recv", "isend", "irecv", "ssend", "issend",
                      "sendrecv", "gather", "scatter", "allgather", "alltoall", "reduce",
                      "allreduce", "scan", "exscan", "ibcast", "igather", "iscatter",
                      "iallgather", "ialltoall", "ireduce", "iallreduce", "mprobe"}


def _files():
    for pkg in ("tinydl", "hal"):
        yield from sorted((ROOT / pkg).rglob("*.py"))


def _name(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return _name(node.value) + "." + node.attr
    return ""


def violations(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            out += [f"{where}: import {a.name}" for a in node.names
                    if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLERS:
                out.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            fn = _name(node.func)
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant)
                                                     and kw.value.value is False):
                    out.append(f"{where}: allow_pickle={ast.unparse(kw.value)}")
            if fn in ("eval", "exec", "builtins.eval", "builtins.exec", "compile"):
                out.append(f"{where}: {fn}(...)")
            if fn.split(".")[-1] == "load" and fn.split(".")[0] in ("np", "numpy") and not any(
                    kw.arg == "allow_pickle" for kw in node.keywords):
                out.append(f"{where}: {fn}(...) without allow_pickle=False")
            if isinstance(node.func, ast.Attribute) and node.func.attr in MPI_OBJECT_METHODS:
                owner = _name(node.func.value).split(".")[-1].lower()
                if owner in ("comm", "world", "mpi_comm", "comm_world", "_comm"):
                    out.append(f"{where}: {fn}(...) pickles Python objects (use the "
                               "upper-case buffer method)")
    return out


def test_scanner_finds_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport numpy as np\nnp.load('x', allow_pickle=True)\n"
                   "np.load('y')\neval('1')\nexec('x=1')\nself.comm.bcast(obj, root=0)\n"
                   "# eval( in a comment is fine\ns = 'exec(' \ncomm.Bcast(buf)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = violations(bad)
    finally:
        ROOT = saved
    assert len(found) == 6, found


@pytest.mark.parametrize("path", list(_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_eval_or_exec(path):
    assert violations(path) == []
