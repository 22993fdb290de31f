"""The C export on a Cortex-M3: cross-compiled (arm-none-eabi-gcc, picolibc), run under
qemu-system-arm (MPS2 AN385, semihosting), sized with arm-none-eabi-size.  In CI
(TINYDL_REQUIRE_ARM=1) a missing toolchain fails these tests."""
import subprocess

import numpy as np
import pytest

from tests.export.conftest import all_kinds_model, need_tools
from tinydl.customize import plan_export_footprint
from tinydl.export import export_c
from tinydl.export import toolchain as tc


@pytest.fixture(params=["digits", "uji"])
def model(request):
    return request.getfixturevalue("digits_model" if request.param == "digits" else "uji_slice")


def test_cortex_m3_under_qemu_matches_python_and_host(model, tmp_path):
    need_tools("cc", "arm_gcc", "arm_size", "qemu")
    clf, _, Xte, _ = model
    X = Xte[:24]
    info = export_c(clf, tmp_path / "export")
    elf = tc.build_arm(info["out_dir"], tmp_path / "elf")
    arm = tc.run(elf, X, tmp_path / "arm", arm=True, timeout=120)
    host = tc.run(tc.build_host(info["out_dir"], tmp_path / "host"), X, tmp_path / "host-run")
    py = np.searchsorted(clf.classes_, clf.predict(X))
    assert np.count_nonzero(arm["classes"] != py) <= 1
    # IEEE single precision in the same order on both (no FMA on either): the same scores
    np.testing.assert_allclose(arm["scores"], host["scores"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(arm["classes"], host["classes"])
    # instructions counted under -icount: the correlations alone are l*m multiply-adds
    assert arm["insns_per_inference"] > clf.transform_.n_atoms_ * clf.n_features_in_


def test_every_layer_kind_under_qemu(tmp_path):
    need_tools("arm_gcc", "qemu")
    cm, X = all_kinds_model()
    info = export_c(cm, tmp_path / "export")
    arm = tc.run(tc.build_arm(info["out_dir"], tmp_path / "elf"), X[:10], tmp_path / "arm",
                 arm=True, timeout=120)
    ref = cm.decision_function(X[:10])
    np.testing.assert_allclose(arm["scores"], ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(arm["classes"], np.argmax(ref, axis=1))


def test_arm_size_within_5_percent_of_predictions(model, tmp_path):
    need_tools("arm_gcc", "arm_size")
    clf, Xcal = model[:2]
    for w in ("float32", "int8"):
        info = export_c(clf, tmp_path / w, weights=w, calibrate=Xcal)
        got = tc.arm_object_sizes(info["out_dir"], tmp_path / (w + "-obj"))
        planned = plan_export_footprint(
            dict(m=clf.n_features_in_, n_classes=len(clf.classes_), l=clf.l, k=clf.k,
                 hidden_layer_sizes=clf.hidden_layer_sizes), weights=w, profile="cortex-m3")
        assert clf.transform_.n_atoms_ == clf.l  # full dictionaries: the plan's shapes
        for key in ("flash_bytes", "ram_bytes"):
            assert abs(got[key] / info[key] - 1) <= 0.05, (w, key, got, info)
            assert abs(got[key] / planned[key] - 1) <= 0.05, (w, key, got, planned)
        assert planned["fits"] and got["flash_bytes"] <= planned["flash_limit"]
        assert got["ram_bytes"] <= planned["ram_limit"]
    # what the objects call outside themselves: soft-float helpers, memcpy/memset and their
    # own kernels; no malloc, no libm (this model has no tanh, sigmoid or softmax)
    nm = tc.tools()["arm_gcc"].replace("gcc", "nm")
    objs = [str(tmp_path / "int8-obj" / f) for f in ("tinydl_model.o", "tinydl_runtime.o")]
    out = subprocess.run([nm, "-u"] + objs, capture_output=True, text=True, check=True).stdout
    undef = {s for s in out.split() if s != "U" and not s.endswith(":")}
    assert all(s.startswith(("__aeabi_", "tdl_")) or s in ("memcpy", "memset")
               for s in undef), undef


def test_instruction_count_of_a_known_loop(tmp_path):
    """The counting itself: a loop of exactly 2 instructions per pass (subs, bne), timed
    by the harness's timer under -icount shift=0, reads 2 x passes instructions."""
    need_tools("arm_gcc", "qemu")
    src = tmp_path / "loop.c"
    src.write_text(r'''
#include <stdint.h>
#include <stdio.h>
#define T ((volatile uint32_t *)0x40000000u)
int main(void)
{
    uint32_t n = 2000000;
    T[0] = 0; T[2] = 0xffffffffu; T[1] = 0xffffffffu; T[0] = 1;
    uint32_t a = T[1];
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc");
    uint32_t b = T[1];
    printf("ticks %lu\n", (unsigned long)(a - b));
    return 0;
}
''')
    elf = str(tmp_path / "loop.elf")
    subprocess.run([tc.tools()["arm_gcc"]] + tc.ARM_CFLAGS + [
        "--oslib=semihost", "--crt0=semihost", "-o", elf, str(src)] + tc.MPS2_LDFLAGS,
        check=True)
    ticks = int(tc.run_qemu(elf, tmp_path).split()[1])
    assert abs(ticks * tc.INSNS_PER_TICK - 2 * 2000000) <= 2 * tc.INSNS_PER_TICK


def test_a_missing_toolchain_fails_where_required(monkeypatch, tmp_path):
    none = {"cc": None, "arm_gcc": None, "arm_size": None, "qemu": None}
    monkeypatch.setattr(tc, "tools", lambda: none)
    monkeypatch.setenv("TINYDL_REQUIRE_ARM", "1")
    with pytest.raises(pytest.fail.Exception, match="TINYDL_REQUIRE_ARM=1 but not installed: "
                                                    "arm_gcc, qemu"):
        need_tools("arm_gcc", "qemu")
    monkeypatch.delenv("TINYDL_REQUIRE_ARM")
    with pytest.raises(pytest.skip.Exception, match="not installed: arm_gcc"):
        need_tools("arm_gcc")
    with pytest.raises(tc.MissingToolchain, match="arm_gcc"):
        tc.build_arm(tmp_path, tmp_path / "b")
