"""The C text of an export: its constants (flash), its static buffers (RAM) and the calls of
``tinydl_predict``, laid out once (:func:`layout`) for both the emitted sources and the
footprint prediction (:mod:`.footprint`)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from .program import ELEMENTWISE, Mat

__all__ = ["layout", "model_c", "model_h", "config_h"]

_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.int8): "int8_t",
          np.dtype(np.int32): "int32_t", np.dtype(np.uint16): "uint16_t"}
#: kernels (tinydl_runtime.c's TDL_NEED_ macros) each op kind calls
NEEDS = {"standardize": ("STANDARDIZE",), "omp": ("OMP",), "gather": ("GATHER",),
         "dense": ("DENSE",), "factored": ("DENSE",), "sparse": ("DENSE", "SPARSE"),
         "conv": ("CONV",), "ksep": ("KSEP",), "maxpool": ("POOL",), "avgpool": ("POOL",),
         "relu": ("RELU",), "tanh": ("TANH",), "sigmoid": ("SIGMOID",),
         "softmax": ("SOFTMAX",)}


class Layout:
    """``consts``: (name, ndarray) in flash; ``mats``: names of ``tdl_mat`` structs;
    ``buffers``: (name, ctype, count) in RAM; ``calls``: C statements; ``needs``: kernels."""

    def __init__(self):
        self.consts: List[Tuple[str, np.ndarray]] = []
        self.mats: List[Tuple[str, str, str, str]] = []
        self.buffers: Dict[str, List] = {}
        self.calls: List[str] = []
        self.needs: List[str] = []
        #: bytes of the class-label table (a 32-bit long per class on the target)
        self.labels_bytes = 0

    def const(self, name, a) -> str:
        a = np.ascontiguousarray(a)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        self.consts.append((name, a))
        return name

    def mat(self, name, m: Mat) -> str:
        """A ``static const tdl_mat`` named ``name``; returns its address expression."""
        if m.f is not None:
            self.mats.append((name, self.const(name + "_f", m.f), "0", "0"))
        else:
            self.int8()
            self.mats.append((name, "0", self.const(name + "_q", m.q),
                              self.const(name + "_s", m.s)))
        return "&" + name

    def int8(self) -> None:
        """Some weights are int8: the runtime's int8-to-float table is compiled in."""
        if "I8" not in self.needs:
            self.needs.append("I8")

    def buffer(self, name, ctype, count) -> str:
        b = self.buffers.setdefault(name, [ctype, 0])
        b[1] = max(b[1], int(count))
        return name

    @property
    def flash_const_bytes(self) -> int:
        # each array starts 4-byte aligned (the linker's placement of float/int32 data)
        return int(sum(-(-a.nbytes // 4) * 4 for _, a in self.consts)) + 12 * len(self.mats) \
            + self.labels_bytes

    @property
    def ram_bytes(self) -> int:
        return int(sum(4 * n for _, n in self.buffers.values()))


def _f(v: float) -> str:
    return f"{float(np.float32(v)):.8e}f"


def layout(prog) -> Layout:
    """Lay out ``prog`` (:func:`.program.program_of`) as C: constants, buffers, calls."""
    L = Layout()
    if prog["classes"].dtype.kind in "iub":
        L.labels_bytes = 4 * len(prog["classes"])
    ops = prog["ops"]
    cur = "x"
    last = len(ops) - 1
    A, B = "tdl_a", "tdl_b"
    for i, op in enumerate(ops):
        k = op["kind"]
        p = f"L{i}"
        L.needs.extend(n for n in NEEDS.get(k, ()) if n not in L.needs)
        out = "scores" if i == last else (B if cur == A else A)
        if k in ELEMENTWISE and i != last and cur in (A, B):
            out = cur  # in place
        if out in (A, B) and k not in ("standardize", "omp"):
            L.buffer(out, "float", op["n"])
        if k == "standardize":
            out = L.buffer("tdl_xs", "float", op["n"])
            L.calls.append(f"tdl_standardize({cur}, {L.const(p + '_mean', op['mean'])}, "
                           f"{L.const(p + '_scale', op['scale'])}, {op['n']}, {out});")
        elif k == "omp":
            l, kk = op["l"], op["k"]
            L.buffer("tdl_idx", "int", max(kk, 1))
            L.buffer("tdl_val", "float", max(kk, 1))
            if l == 0:
                L.needs.remove("OMP")
                L.calls.append("T = 0;  /* an empty dictionary codes every sample as zero */")
            else:
                ws = L.buffer("tdl_omp_ws", "float", l + kk * l + kk * kk + 4 * kk)
                L.calls.append(
                    f"T = tdl_omp({cur}, {op['m']}, {l}, {kk}, {L.mat(p + '_D', op['D'])}, "
                    f"{L.const(p + '_G', op['G'])}, {_f(op['tol2'])}, {ws}, tdl_idx, "
                    "tdl_val);")
            continue  # the code lives in tdl_idx / tdl_val
        elif k == "gather":
            W = op["W"]
            if W.f is not None:
                wf, wq, ws_ = L.const(p + "_W_f", W.f), "0", "0"
            else:
                L.int8()
                wf, wq, ws_ = "0", L.const(p + "_W_q", W.q), L.const(p + "_W_s", W.s)
            L.calls.append(f"tdl_gather_dense(tdl_idx, tdl_val, T, {_f(op['vscale'])}, "
                           f"{op['n']}, {wf}, {wq}, {ws_}, {L.const(p + '_b', op['b'])}, "
                           f"{out});")
        elif k == "dense":
            n_in = op["W"].shape[1]
            L.calls.append(f"tdl_dense({cur}, {n_in}, {op['n']}, {L.mat(p + '_W', op['W'])}, "
                           f"{L.const(p + '_b', op['b'])}, {out});")
        elif k in ("factored", "sparse"):
            r = op["r"]
            z = L.buffer("tdl_z", "float", r)
            first = "U" if k == "factored" else "B"
            n_in = op[first].shape[1]
            L.calls.append(f"tdl_dense({cur}, {n_in}, {r}, {L.mat(p + '_' + first, op[first])},"
                           f" 0, {z});")
            b = L.const(p + "_b", op["b"])
            if k == "factored":
                L.calls.append(f"tdl_dense({z}, {r}, {op['n']}, {L.mat(p + '_V', op['V'])}, "
                               f"{b}, {out});")
            else:
                ind = np.asarray(op["indices"])
                wide = ind.size and int(ind.max()) > 65535
                ind = L.const(p + "_ind", ind.astype(np.int32 if wide else np.uint16))
                i16, i32 = ("0", ind) if wide else (ind, "0")
                L.calls.append(
                    f"tdl_sparse_cols({z}, {op['n']}, {L.const(p + '_ptr', op['indptr'])}, "
                    f"{i16}, {i32}, {L.mat(p + '_S', op['data'])}, {b}, {out});")
        elif k == "conv":
            c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = op["geom"]
            L.calls.append(f"tdl_conv({cur}, {c}, {h}, {w}, {L.mat(p + '_W', op['W'])}, "
                           f"{L.const(p + '_b', op['b'])}, {f}, {kh}, {kw}, {sh}, {sw}, {ph}, "
                           f"{pw}, {ho}, {wo}, {out});")
        elif k == "ksep":
            c, h, w, f, kh, kw, sh, sw, ph, pw, ho, wo = op["geom"]
            r = op["r"]
            z = L.buffer("tdl_z", "float", c * f * r * ho * (w + 2 * pw))
            L.calls.append(f"tdl_kernel_sep({cur}, {c}, {h}, {w}, {L.mat(p + '_v', op['v'])}, "
                           f"{L.mat(p + '_h', op['h'])}, {L.const(p + '_b', op['b'])}, {f}, "
                           f"{r}, {kh}, {kw}, {sh}, {sw}, {ph}, {pw}, {ho}, {wo}, {z}, {out});")
        elif k in ("maxpool", "avgpool"):
            c, h, w, kh, kw, sh, sw, ho, wo = op["geom"]
            L.calls.append(f"tdl_pool({cur}, {c}, {h}, {w}, {kh}, {kw}, {sh}, {sw}, {ho}, "
                           f"{wo}, {int(k == 'maxpool')}, {out});")
        else:  # relu, tanh, sigmoid, softmax
            L.calls.append(f"tdl_{k}({cur}, {op['n']}, {out});")
        cur = out
    if cur != "scores":  # a program with no op after OMP cannot be exported
        raise ValueError("the model's last op does not write the scores")
    return L


def _array_text(name, a, per_line=8) -> str:
    ctype = _CTYPE[a.dtype]
    flat = a.reshape(-1)
    if a.dtype == np.float32:
        items = [f"{v:.8e}f" for v in flat.tolist()]
    else:
        items = [str(v) for v in flat.tolist()]
    if not items:
        items = ["0"]  # C has no empty arrays: one unused element
    lines = [", ".join(items[s:s + per_line]) for s in range(0, len(items), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{max(flat.size, 1)}] = {{\n    {body}\n}};\n"


def config_h(L: Layout) -> str:
    defs = "".join(f"#define TDL_NEED_{n} 1\n" for n in L.needs)
    return ("/* which kernels of tinydl_runtime.c this model needs (written by tinydl export) */\n"
            "#ifndef TINYDL_CONFIG_H\n#define TINYDL_CONFIG_H\n" + defs + "#endif\n")


def model_h(prog, L: Layout, fp) -> str:
    classes = prog["classes"]
    labels = ""
    if classes.dtype.kind in "iub":
        labels = (f"/* the label of each output (tinydl_predict returns an index into it) */\n"
                  f"extern const long tinydl_class_labels[{len(classes)}];\n")
    return f"""/* {prog['source']} exported by tinydl (C99): see README.md beside this file. */
#ifndef TINYDL_MODEL_H
#define TINYDL_MODEL_H

#define TINYDL_N_FEATURES {prog['n_features']}
#define TINYDL_N_OUTPUTS {prog['n_outputs']}
/* predicted footprint (flash: constants and code; RAM: static buffers) */
#define TINYDL_FLASH_BYTES {fp['flash_bytes']}
#define TINYDL_RAM_BYTES {fp['ram_bytes']}

{labels}/* Scores of the TINYDL_N_OUTPUTS outputs for one sample x (TINYDL_N_FEATURES floats,
   raw features: any standardization is inside); returns the index of the largest score
   (the first of ties).  Not reentrant: the working buffers are static. */
int tinydl_predict(const float *x, float *scores);

#endif
"""


def model_c(prog, L: Layout, weights_dtype: str) -> str:
    parts = [f"/* {prog['source']} exported by tinydl: weights {weights_dtype} (const: flash), "
             "working buffers static (RAM). */\n",
             '#include "tinydl_model.h"\n#include "tinydl_runtime.h"\n\n']
    parts.extend(_array_text(name, a) for name, a in L.consts)
    for name, f, q, s in L.mats:
        parts.append(f"static const tdl_mat {name} = {{{f}, {q}, {s}}};\n")
    parts.append("\n")
    for name, (ctype, n) in L.buffers.items():
        parts.append(f"static {ctype} {name}[{n}];\n")
    classes = prog["classes"]
    if classes.dtype.kind in "iub":
        vals = ", ".join(str(int(c)) for c in classes)
        parts.append(f"\nconst long tinydl_class_labels[{len(classes)}] = {{{vals}}};\n")
    uses_t = any(op["kind"] == "omp" for op in prog["ops"])
    body = "\n    ".join(L.calls)
    decl = "    int T;\n" if uses_t else ""
    parts.append(f"\nint tinydl_predict(const float *x, float *scores)\n{{\n{decl}    {body}\n"
                 f"    (void)x;\n    return tdl_argmax(scores, {prog['n_outputs']});\n}}\n")
    return "".join(parts)
