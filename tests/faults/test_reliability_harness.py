"""Issue 17: ``benchmarks/reliability.py`` without the optional extras, and with a worker
that dies or hangs: the run finishes with a message, it never waits forever."""
import importlib.util
import os
import signal
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def rel(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "_reliability", os.path.join(REPO, "benchmarks", "reliability.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    make = mod.mut.make_seeds

    def no_onnx(root):  # what make_seeds gives without the onnx extra
        seeds = make(root)
        seeds["onnx"] = []
        return seeds
    monkeypatch.setattr(mod.mut, "make_seeds", no_onnx)
    return mod


def test_fuzz_without_the_onnx_extra_skips_it_saying_so(rel, tmp_path):
    lines = []
    tried, crashes, _ = rel.run_fuzz(24, 0, 10.0, str(tmp_path), lines.append)
    assert (tried, crashes) == (24, 0)      # the onnx share goes to the other kinds
    assert any("skipped: onnx inputs" in s and "onnx' extra" in s for s in lines)


@pytest.mark.parametrize("how", ["dies", "hangs"])
def test_a_crashed_or_hung_worker_is_a_crash_with_a_message(rel, tmp_path, monkeypatch, how):
    def dies(path):
        os.kill(os.getpid(), signal.SIGKILL)

    def hangs(path):
        time.sleep(60)
    monkeypatch.setitem(rel.mut.READERS, "data_csv", (dies if how == "dies" else hangs,))
    lines = []
    t0 = time.monotonic()
    tried, crashes, _ = rel.run_fuzz(16, 0, 2.0, str(tmp_path), lines.append)
    assert time.monotonic() - t0 < 45
    assert tried == 16 and crashes == 2     # inputs 7 and 15 are the csv ones
    word = "worker died (exit code -9)" if how == "dies" else "hang past 2.0 s"
    assert sum(word in s for s in lines) == 2, lines
