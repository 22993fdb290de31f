"""The native backend: small C kernels for the loops NumPy cannot vectorize well.

Batch-OMP spends, after the correlation GEMM, k iterations of small per-sample work (an
argmax over l atoms, a triangular solve of size t, an update of l correlations): O(k^2 l)
operations per sample that NumPy runs as dozens of array calls per iteration.  Here they are
one C loop per sample, and the k-sparse first-layer products of the trainer
(``gather_matmul`` and its transpose) are too.  Every matrix product still goes through the
BLAS backend (OpenBLAS through cffi), which this backend extends.

The streaming transform's joins have kernels too (:meth:`NativeBackend.prepare_basis`): the
Gram-Schmidt append of an atom (its rows of D, Q, L and G) in one call, whose pass over the
basis Q also computes the next row's projections for its Wp test.  Their projections are dot
products in a fixed order of their own (vectors of VBYTES, a fixed reduction tree), so the
fused result equals a separate call's bit for bit and the transform keeps its batch-split
identity; their specification is the transform's Python code (``_add_atom``, ``_wp_block``).

Building.  The C source below is compiled on first use with the system C compiler (``cc``,
or ``$CC``) into a shared library that cffi loads in ABI mode: no Python headers are needed,
only a compiler.  The library is cached under ``$TINYDL_CACHE`` (default
``~/.cache/tinydl``), keyed by a hash of the source, the flags, the machine and the compiler,
and written atomically (temporary name, then rename), so concurrent first uses are safe.
``-march=native`` is tried first, then portable flags.  :meth:`NativeBackend.probe` says why
the backend cannot run (no cffi, no compiler, a failed build).

Semantics.  The OMP kernel implements the contract of
:meth:`hal.backends.numpy.NumpyBackend.omp_encode` (the specification): the same stopping
rules (k atoms, the relative residual tolerance, a dependent atom - ``d^2 <= 16 k eps G_jj``
- or a zero correlation), the same all-zero-sample behaviour and the same warning count.  It
uses the textbook Batch-OMP form (progressive Cholesky factor ``L`` of the chosen atoms'
Gram matrix, coefficients from two triangular solves, ``alpha = alpha0 - G_I gamma``) rather
than NumPy's scaled-direction form, so results are **not bit-identical** to NumPy's:
coefficients agree within ``rtol`` (below) and supports agree wherever the argmax is not a
near tie.  Each sample is coded on its own, so results do not depend on the batch split
(the correlations come from the same fixed-size row blocks as NumPy's).
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Optional

import numpy as np

from ..backend import BackendUnavailable, OMPWorkspace, SparseCodes
from .blas import BlasBackend
from .numpy import PRODUCT_ROWS

__all__ = ["NativeBackend", "build_library"]

# One template, instantiated for float (suffix f32) and double (f64).
_TEMPLATE = r"""
/* Batch-OMP of n samples from their correlations alpha0 = D x (rows of corr, length l),
   the Gram matrix G = D D^T (l x l, row-major) and |x|^2 (xx), in the scaled-direction form
   of the specification (hal/backends/numpy.py): Y[t] = b_t (G[j_t] - sum_s rho_s u_s Y[s]),
   c -= Y[t], coefficients by one back substitution at the end.
   Outputs: idx/val (n x k, row-major; -1 / 0 pad samples that stopped early), nnz, resid
   (squared residual norm).  tol2 < 0: no tolerance; else stop once |r|^2 <= tol2 |x|^2.
   ws: l + k*l + k*k + 4*k scratch values.  Returns the number of samples stopped by a
   dependent atom while a residual above rounding level was left (the caller warns). */
long omp_SFX(long n, long l, long k, const REAL *corr, const REAL *xx, const REAL *G,
             REAL tol2, REAL eps, REAL *ws, int *idx, REAL *val, int *nnz, REAL *resid)
{
    long dependent = 0;
    REAL *c = ws;                /* the residual's correlations */
    REAL *Y = c + l;             /* Y[s] = b_s D q_s, row s of k x l */
    REAL *U = Y + k * l;         /* U[t * k + s] = Y[s][j_t], s < t */
    REAL *B = U + k * k;         /* b_t = c_j / d_t^2 */
    REAL *CJ = B + k;            /* c_j at step t */
    REAL *NRHO = CJ + k;         /* -d_t^2 / c_j^2 */
    REAL *RU = NRHO + k;         /* -rho_s u_s of this step */
    const REAL kk = (REAL)(k > 1 ? k : 1);
    const REAL tiny = 16 * kk * eps;
    for (long i = 0; i < n; i++) {
        const REAL *a0 = corr + i * l;
        int *J = idx + i * k;
        REAL *v = val + i * k;
        for (long t = 0; t < k; t++) { J[t] = -1; v[t] = 0; }
        const REAL x2 = xx[i];
        REAL proj = 0;           /* sum_t b_t c_j(t) = |projection|^2 */
        long T = 0;
        const REAL limit = tol2 >= 0 ? x2 * tol2 : 0;
        /* an all-zero sample takes no atom; under a tolerance, nor does one already within */
        if (x2 > 0 && !(tol2 >= 0 && !(x2 > limit))) {
            const REAL noise = x2 * 4 * kk * eps;
            for (long q = 0; q < l; q++) c[q] = a0[q];
            for (long t = 0; t < k; t++) {
                /* argmax |c|, the first of ties.  |c| compared as the integers of its bits
                   (sign bit cleared: the same order for finite values), which the compiler
                   vectorizes; a float max reduction it keeps scalar */
                const UINT *bits = (const UINT *)c;
                UINT best = 0;
                for (long q = 0; q < l; q++) {
                    UINT b = bits[q] & ABSMASK;
                    best = b > best ? b : best;
                }
                long j = 0;
                while (j < l - 1 && (bits[j] & ABSMASK) != best) j++;
                const REAL cj = c[j];
                const REAL gj = G[j * l + j];
                REAL d2 = 0;
                REAL *u = U + t * k;
                for (long s = 0; s < t; s++) {
                    u[s] = Y[s * l + j];
                    RU[s] = NRHO[s] * u[s];
                    d2 += RU[s] * u[s];
                }
                d2 += gj;                     /* d^2 = G_jj - sum_s rho_s u_s^2 */
                if (!(d2 > gj * tiny)) {      /* j lies in the span of the chosen atoms */
                    if (x2 - proj > noise) dependent++;
                    break;
                }
                const REAL b = cj / d2;
                if (b == 0) break;            /* residual orthogonal to every atom */
                REAL *Yt = Y + t * l;
                const REAL *Gj = G + j * l;
                /* Y[t] = b (G[j] + sum_s RU[s] Y[s]) in blocks of QB columns held in
                   registers across the sum (one pass over each Y[s], one store of Y[t]) */
                long q0 = 0;
                for (; q0 + QB <= l; q0 += QB) {
                    REAL acc[QB];
                    for (long q = 0; q < QB; q++) acc[q] = Gj[q0 + q];
                    for (long s = 0; s < t; s++) {
                        const REAL r = RU[s];
                        const REAL *restrict Ys = Y + s * l + q0;
                        for (long q = 0; q < QB; q++) acc[q] += r * Ys[q];
                    }
                    for (long q = 0; q < QB; q++) {
                        Yt[q0 + q] = acc[q] * b;
                        c[q0 + q] -= acc[q] * b;
                    }
                }
                for (long q = q0; q < l; q++) {
                    REAL acc = Gj[q];
                    for (long s = 0; s < t; s++) acc += RU[s] * Y[s * l + q];
                    Yt[q] = acc * b;
                    c[q] -= acc * b;
                }
                /* the chosen atom's correlation is 0 up to rounding: make it exact, so that
                   it is picked again only when every correlation is rounding noise (d^2 ~ 0
                   then stops the sample) */
                c[j] = 0;
                B[t] = b;
                CJ[t] = cj;
                NRHO[t] = -(d2 / (cj * cj));
                J[t] = (int)j;
                T = t + 1;
                proj += b * cj;               /* |z_t|^2 = c_j^2 / d^2 */
                if (tol2 >= 0 && !(x2 - proj > limit)) break;
            }
            /* gamma_t = b_t - (1 / c_j(t)) sum_{s > t} U[s, t] gamma_s */
            for (long t = T - 1; t >= 0; t--) {
                REAL acc = 0;
                for (long s = t + 1; s < T; s++) acc += U[s * k + t] * v[s];
                v[t] = t < T - 1 ? B[t] - acc / CJ[t] : B[t];
            }
        }
        nnz[i] = (int)T;
        resid[i] = x2 - proj > 0 ? x2 - proj : 0;
    }
    return dependent;
}

/* 0 if every index lies in [-1, rows), else 1 + the flat position of the first that does
   not (checked before anything is read or written through them) */
static long bad_index_SFX(long nk, const int *idx, long rows)
{
    for (long p = 0; p < nk; p++)
        if (idx[p] < -1 || idx[p] >= rows) return p + 1;
    return 0;
}

/* out[i, :] = sum_t val[i, t] * W[idx[i, t], :] (idx < 0: nothing); W is (rows, q). */
long gather_SFX(long n, long k, long q, long rows, const int *idx, const REAL *val,
                const REAL *W, REAL *out)
{
    long bad = bad_index_SFX(n * k, idx, rows);
    if (bad) return bad;
    for (long i = 0; i < n; i++) {
        REAL *o = out + i * q;
        for (long c = 0; c < q; c++) o[c] = 0;
        for (long t = 0; t < k; t++) {
            const int r = idx[i * k + t];
            if (r < 0) continue;
            const REAL a = val[i * k + t];
            const REAL *Wr = W + (long)r * q;
            for (long c = 0; c < q; c++) o[c] += a * Wr[c];
        }
    }
    return 0;
}

/* out = beta * out + sum_i sum_t val[i, t] * outer(e_idx[i, t], dy[i, :]): the transposed
   k-sparse product codes^T @ dy, out (rows, q), dy (n, q).  beta is 0 or 1 (or any value). */
long scatter_SFX(long n, long k, long q, long rows, const int *idx, const REAL *val,
                 const REAL *dy, REAL beta, REAL *out)
{
    long bad = bad_index_SFX(n * k, idx, rows);
    if (bad) return bad;
    if (beta == 0) { for (long c = 0; c < rows * q; c++) out[c] = 0; }
    else if (beta != 1) { for (long c = 0; c < rows * q; c++) out[c] *= beta; }
    for (long i = 0; i < n; i++) {
        const REAL *g = dy + i * q;
        for (long t = 0; t < k; t++) {
            const int r = idx[i * k + t];
            if (r < 0) continue;
            const REAL a = val[i * k + t];
            REAL *o = out + (long)r * q;
            for (long c = 0; c < q; c++) o[c] += a * g[c];
        }
    }
    return 0;
}

/* A dense layer fed compact codes, forward: out[i] = b + sum_t val[i, t] W[idx[i, t]] */
long layer_fwd_SFX(long n, long k, long q, long rows, const int *idx, const REAL *val,
                   const REAL *W, const REAL *b, REAL *out)
{
    long bad = gather_SFX(n, k, q, rows, idx, val, W, out);
    if (bad) return bad;
    for (long i = 0; i < n; i++)
        for (long c = 0; c < q; c++) out[i * q + c] += b[c];
    return 0;
}

/* ... and backward: gW = codes^T dy, gb = sum_i dy[i] (rows in order) */
long layer_bwd_SFX(long n, long k, long q, long rows, const int *idx, const REAL *val,
                   const REAL *dy, REAL *gW, REAL *gb)
{
    long bad = scatter_SFX(n, k, q, rows, idx, val, dy, 0, gW);
    if (bad) return bad;
    for (long c = 0; c < q; c++) gb[c] = 0;
    for (long i = 0; i < n; i++)
        for (long c = 0; c < q; c++) gb[c] += dy[i * q + c];
    return 0;
}

/* Projections on orthonormal rows, with an optional Gram-Schmidt update in the same pass:
   p[j] = Q[j] . x (if x), and u -= h[j] Q[j] (if u), for j = 0 .. n-1, Q (n, m) row-major.
   Each p[j] is an independent dot product in a fixed order (4 vectors of VL lanes over the
   row, the tail zero-padded into the same vectors, a fixed reduction tree) that depends on
   nothing but Q[j] and x: not on n, on the other rows, on the pointers' alignment or on
   whether u is updated.  The streaming transform relies on this: the projection of the row
   after a joining one comes out of the joining row's Gram-Schmidt pass bit for bit as a
   separate call would give it, whatever the batch split.  Rows go in pairs (x and u are
   read once per pair); u's update depends on n only. */
typedef REAL VEC_SFX __attribute__((vector_size(VBYTES)));

static inline VEC_SFX vload_SFX(const REAL *p)
{
    VEC_SFX v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore_SFX(REAL *p, VEC_SFX v) { __builtin_memcpy(p, &v, sizeof v); }

/* one step of 4 VL values at t: the dots of rows 0..R-1 with x, and u -= sum_r h_r q_r (in
   the order of r) */
#define PASS_STEP_SFX(LQ, LOADX, LOADU, STOREU)                                            \
    for (int c = 0; c < 4; c++) {                                                         \
        VEC_SFX qv[4];                                                                    \
        for (int r = 0; r < R; r++) qv[r] = LQ(r, c);                                     \
        if (dox) {                                                                        \
            VEC_SFX xv = LOADX(c);                                                        \
            for (int r = 0; r < R; r++) A[r][c] += qv[r] * xv;                            \
        }                                                                                 \
        if (dou) {                                                                        \
            VEC_SFX uv = LOADU(c);                                                        \
            for (int r = 0; r < R; r++) uv = uv - hh[r] * qv[r];                          \
            STOREU(c, uv);                                                                \
        }                                                                                 \
    }

/* R <= 4 rows q[0..R-1] over the columns [t0, t1) (t1 == m: the row's tail, zero-padded into
   a whole step); their 4 accumulators each live in acc between calls.  A row's dot sees the
   same operations in the same order whatever R is. */
static inline __attribute__((always_inline)) void
pass_SFX(long t0, long t1, const REAL *const *q, const REAL *x, REAL *u, const REAL *hh,
         VEC_SFX (*acc)[4], const int R, const int dox, const int dou)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    long t = t0;
    /* the accumulators in registers for the whole chunk (through memory, each step would
       wait on a store-to-load forwarding) */
    VEC_SFX A[4][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) A[r][c] = acc[r][c];
#define LQ(r, c) vload_SFX(q[r] + t + (c) * VL)
#define LX(c) vload_SFX(x + t + (c) * VL)
#define LU(c) vload_SFX(u + t + (c) * VL)
#define SU(c, v) vstore_SFX(u + t + (c) * VL, v)
    for (; t + 4 * VL <= t1; t += 4 * VL) {
        PASS_STEP_SFX(LQ, LX, LU, SU)
    }
    if (t < t1) {  /* the tail of the row (t1 == m), zero-padded */
        REAL tq[4][4 * VL], tx[4 * VL], tu[4 * VL];
        const long rem = t1 - t;
        __builtin_memset(tq, 0, sizeof tq);
        __builtin_memset(tx, 0, sizeof tx);
        __builtin_memset(tu, 0, sizeof tu);
        for (int r = 0; r < R; r++) __builtin_memcpy(tq[r], q[r] + t, rem * sizeof(REAL));
        if (dox) __builtin_memcpy(tx, x + t, rem * sizeof(REAL));
        if (dou) __builtin_memcpy(tu, u + t, rem * sizeof(REAL));
#define TQ(r, c) vload_SFX(tq[r] + (c) * VL)
#define TX(c) vload_SFX(tx + (c) * VL)
#define TU(c) vload_SFX(tu + (c) * VL)
#define TSU(c, v) vstore_SFX(tu + (c) * VL, v)
        PASS_STEP_SFX(TQ, TX, TU, TSU)
        if (dou) __builtin_memcpy(u + t, tu, rem * sizeof(REAL));
#undef TQ
#undef TX
#undef TU
#undef TSU
    }
#undef LQ
#undef LX
#undef LU
#undef SU
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = A[r][c];
}

static inline REAL reduce_SFX(const VEC_SFX *acc)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    VEC_SFX a = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    REAL lanes[VL];
    __builtin_memcpy(lanes, &a, sizeof a);
    for (int w = VL / 2; w >= 1; w /= 2)   /* a fixed pairwise tree */
        for (int i = 0; i < w; i++) lanes[i] += lanes[i + w];
    return lanes[0];
}

/* rows [j0, j0 + g) of Q (g <= PGROUP) over the whole row, in column chunks of PCHUNK bytes:
   each chunk of x and u stays in L1 while every row of the group passes over it, so Q is read
   once and x, u once per group.  Rows go 4 at a time (x and u read once per 4), the last
   g % 4 together. */
#define GROUP_CALL_SFX(RR)                                                                \
    do {                                                                                  \
        if (dox && dou) pass_SFX(t0, t1, qs, x, u, hh, acc + j, RR, 1, 1);                \
        else if (dox) pass_SFX(t0, t1, qs, x, u, hh, acc + j, RR, 1, 0);                  \
        else pass_SFX(t0, t1, qs, x, u, hh, acc + j, RR, 0, 1);                           \
    } while (0)

static void group_SFX(long g, long m, const REAL *Q, const REAL *x, REAL *p, const REAL *h,
                      REAL *u, const int dox, const int dou)
{
    enum { CH = PCHUNK / (int)sizeof(REAL) };
    VEC_SFX acc[PGROUP][4];
    __builtin_memset(acc, 0, sizeof acc);
    for (long t0 = 0; t0 < m; t0 += CH) {
        const long t1 = t0 + CH < m ? t0 + CH : m;
        for (long j = 0; j < g; j += 4) {
            const long R = g - j < 4 ? g - j : 4;
            const REAL *qs[4];
            REAL hh[4] = {0, 0, 0, 0};
            for (long r = 0; r < R; r++) {
                qs[r] = Q + (j + r) * m;
                if (dou) hh[r] = h[j + r];
            }
            switch (R) {
            case 4: GROUP_CALL_SFX(4); break;
            case 3: GROUP_CALL_SFX(3); break;
            case 2: GROUP_CALL_SFX(2); break;
            default: GROUP_CALL_SFX(1); break;
            }
        }
    }
    if (dox)
        for (long j = 0; j < g; j++) p[j] = reduce_SFX(acc[j]);
}

void project_SFX(long n, long m, const REAL *Q, const REAL *x, REAL *p, const REAL *h,
                 REAL *u)
{
    if (!x && !u) return;
    for (long j0 = 0; j0 < n; j0 += PGROUP) {
        const long g = n - j0 < PGROUP ? n - j0 : PGROUP;
        group_SFX(g, m, Q + j0 * m, x, x ? p + j0 : 0, u ? h + j0 : 0, u, x != 0, u != 0);
    }
}

/* a dot product in project's fixed order */
static REAL dot_SFX(long m, const REAL *a, const REAL *b)
{
    REAL r;
    group_SFX(1, m, a, b, &r, 0, 0, 1, 0);
    return r;
}

static REAL sumsq_SFX(long n, const REAL *p)
{
    REAL s = 0;
    for (long j = 0; j < n; j++) s += p[j] * p[j];
    return s;
}

/* The projection-error inputs of one row x against the basis Q[:n]: p = Q[:n] x, and
   out2 = (|x|^2, |p|^2); the caller forms Wp^2 = 1 - |p|^2 / |x|^2. */
void wp_row_SFX(long n, long m, const REAL *Q, const REAL *x, REAL *p, REAL *out2)
{
    if (n) project_SFX(n, m, Q, x, p, 0, 0);
    out2[0] = dot_SFX(m, x, x);
    out2[1] = sumsq_SFX(n, p);
}

/* Append the atom a / |a| as row n of D (lb x m), its new direction as row n of Q, and
   its rows of L (D = L Q, lb x lb) and of G = D D^T (lb x lb): the Gram-Schmidt step of
   tinydl/transform.py's StreamingDictionary._add_atom (the specification), with
   re-orthogonalization when the first step removed more than half of |d|^2.
   proj: Q[:n] a from the atom's projection-error test, or NULL; it may be p itself (the
   transform passes the last wp_row's output): it is read into h before p is written.
   x: the next row of the stream or NULL; if given, its projections on Q[:n + 1] go to p (the
   first n from the same pass over Q as the update) and out[1], out[2] get what wp_row would
   give for it, bit for bit.  out[0] = |a|.  ws: 2 m + 2 lb values.  Returns 1 if it re-orthogonalized. */
long append_SFX(long n, long m, long lb, const REAL *a, const REAL *proj, const REAL *x,
                REAL *D, REAL *Q, REAL *L, REAL *G, REAL *p, REAL *out, REAL *ws)
{
    REAL *u = ws, *h = ws + m, *h2 = h + lb;
    const REAL norm = SQRT(dot_SFX(m, a, a));
    REAL *d = D + n * m;
    for (long t = 0; t < m; t++) {
        d[t] = a[t] / norm;
        u[t] = d[t];
    }
    long reorth = 0;
    const REAL dd = dot_SFX(m, d, d);
    if (n) {
        if (proj) for (long j = 0; j < n; j++) h[j] = proj[j] / norm;
        else project_SFX(n, m, Q, u, h, 0, 0);
        project_SFX(n, m, Q, x, x ? p : 0, h, u);
        if (dot_SFX(m, u, u) < (REAL)0.5 * dd) {
            project_SFX(n, m, Q, u, h2, 0, 0);
            project_SFX(n, m, Q, 0, 0, h2, u);
            for (long j = 0; j < n; j++) h[j] += h2[j];
            reorth = 1;
        }
        REAL *Ln = L + n * lb;
        for (long j = 0; j < n; j++) Ln[j] = h[j];
        for (long i = 0; i < n; i++) {   /* D[:n] d = L[:n, :n] h (L lower triangular) */
            REAL g = 0;
            for (long j = 0; j <= i; j++) g += L[i * lb + j] * h[j];
            G[n * lb + i] = g;
            G[i * lb + n] = g;
        }
    }
    G[n * lb + n] = dd;
    const REAL unorm = SQRT(dot_SFX(m, u, u));
    L[n * lb + n] = unorm;
    REAL *q = Q + n * m;
    for (long t = 0; t < m; t++) q[t] = u[t] / unorm;
    out[0] = norm;
    if (x) {
        p[n] = dot_SFX(m, q, x);
        out[1] = dot_SFX(m, x, x);
        out[2] = sumsq_SFX(n + 1, p);
    }
    return reorth;
}
"""


def _source() -> str:
    # VBYTES: the basis kernels' vector width (32: AVX2, two NEON registers); PCHUNK: their
    # column chunk in bytes (x and u chunks stay in L1); PGROUP: rows per group (even)
    head = ("#include <math.h>\n#include <stdint.h>\n"
            "#define VBYTES 32\n#define PCHUNK 8192\n#define PGROUP 64\n")
    parts = [head]
    # QB: columns per register block of the direction update (4 AVX2 registers)
    for real, sfx, sqrt, uint, mask, qb in (
            ("float", "f32", "sqrtf", "uint32_t", "0x7fffffffu", 32),
            ("double", "f64", "sqrt", "uint64_t", "0x7fffffffffffffffull", 16)):
        parts.append(f"#define REAL {real}\n#define SQRT {sqrt}\n#define UINT {uint}\n"
                     f"#define ABSMASK {mask}\n#define QB {qb}\n" + _TEMPLATE.replace("SFX", sfx)
                     + "#undef REAL\n#undef SQRT\n#undef UINT\n#undef ABSMASK\n#undef QB\n")
    return "".join(parts)


_CDEF = """
long omp_f32(long, long, long, const float *, const float *, const float *, float, float,
             float *, int *, float *, int *, float *);
long omp_f64(long, long, long, const double *, const double *, const double *, double, double,
             double *, int *, double *, int *, double *);
long gather_f32(long, long, long, long, const int *, const float *, const float *, float *);
long gather_f64(long, long, long, long, const int *, const double *, const double *,
                double *);
long scatter_f32(long, long, long, long, const int *, const float *, const float *, float,
                 float *);
long scatter_f64(long, long, long, long, const int *, const double *, const double *, double,
                 double *);
void project_f32(long, long, const float *, const float *, float *, const float *, float *);
void project_f64(long, long, const double *, const double *, double *, const double *,
                 double *);
long layer_fwd_f32(long, long, long, long, const int *, const float *, const float *,
                   const float *, float *);
long layer_fwd_f64(long, long, long, long, const int *, const double *, const double *,
                   const double *, double *);
long layer_bwd_f32(long, long, long, long, const int *, const float *, const float *, float *,
                   float *);
long layer_bwd_f64(long, long, long, long, const int *, const double *, const double *,
                   double *, double *);
void wp_row_f32(long, long, const float *, const float *, float *, float *);
void wp_row_f64(long, long, const double *, const double *, double *, double *);
long append_f32(long, long, long, const float *, const float *, const float *, float *, float *,
                float *, float *, float *, float *, float *);
long append_f64(long, long, long, const double *, const double *, const double *, double *,
                double *, double *, double *, double *, double *, double *);
"""

# -O3 vectorizes the inner loops; no -ffast-math: the kernels must keep IEEE semantics
# (NaN comparisons in the stopping rules, no reassociation of the reductions)
_FLAG_SETS = (["-O3", "-march=native", "-fPIC", "-shared"], ["-O2", "-fPIC", "-shared"])

_LOCK = threading.Lock()
_LIB = None     # (ffi, lib, path)
_ERROR: Optional[str] = None


def _compiler() -> Optional[str]:
    cc = os.environ.get("CC", "").strip()
    if cc:
        return shutil.which(cc.split()[0]) and cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _cache_dir() -> str:
    base = os.environ.get("TINYDL_CACHE", "").strip()
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "tinydl")
    return os.path.join(base, "native")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("model name", "flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def build_library(force: bool = False) -> str:
    """Compile the kernels (or find them in the cache); return the shared library's path.

    Raises
    ------
    BackendUnavailable
        No C compiler, or every flag set failed (the compiler's last message is included).
    """
    cc = _compiler()
    src = _source()
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256("\0".join([src, " ".join(flags), str(cc), platform.machine(),
                                        sys.platform, _cpu_model()]).encode()).hexdigest()[:16]
        path = os.path.join(_cache_dir(), f"tinydl_native_{key}.so")
        if os.path.exists(path) and not force:
            return path
        if cc is None:
            raise BackendUnavailable("backend 'native' needs a C compiler to build its kernels "
                                     "(none of $CC, cc, gcc, clang found; e.g. apt-get install "
                                     "gcc)")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
            c_file = os.path.join(tmp, "kernels.c")
            with open(c_file, "w", encoding="utf-8") as fh:
                fh.write(src)
            out = os.path.join(tmp, "kernels.so")
            cmd = cc.split() + flags + ["-o", out, c_file, "-lm"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{' '.join(cmd)}: {exc}")
                continue
            if proc.returncode != 0:
                errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-400:]}")
                continue
            os.replace(out, path)  # atomic: a concurrent build writes the same bytes
        return path
    raise BackendUnavailable("backend 'native' could not build its kernels with "
                             f"{cc}: " + " | ".join(errors))


def _load():
    global _LIB, _ERROR
    with _LOCK:
        if _LIB is not None or _ERROR is not None:
            return _LIB
        try:
            import cffi
        except ImportError:
            _ERROR = "cffi is not installed (pip install cffi)"
            return None
        try:
            path = build_library()
            ffi = cffi.FFI()
            ffi.cdef(_CDEF)
            lib = ffi.dlopen(path)
        except BackendUnavailable as exc:
            _ERROR = str(exc)
            return None
        except OSError as exc:
            _ERROR = f"backend 'native': cannot load its kernels: {exc}"
            return None
        _LIB = (ffi, lib, path)
        return _LIB


def _bad_index(idx: np.ndarray, pos: int, rows: int) -> IndexError:
    """The error for a kernel's report of an index outside [-1, rows) (nothing was written)."""
    i, t = divmod(pos - 1, idx.shape[1])
    return IndexError(f"code indices must lie in [-1, {rows}), got {int(idx[i, t])} at "
                      f"({i}, {t})")


_CTYPES = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]",
           np.dtype(np.int32): "int[]"}


def _ptr(ffi, _ctype, a: np.ndarray):
    """A C pointer into a C-contiguous array (``from_buffer``: ~4x cheaper than casting
    ``__array_interface__``'s address, which matters for the trainer's small products)."""
    return ffi.from_buffer(_CTYPES[a.dtype], a)


class SparseLayerPlan:
    """A dense layer fed compact codes, bound to its arrays (W (rows, q), b (q,), the output
    workspace y (batch, q) and the gradients gW, gb): forward and backward are one kernel call
    each, with pointers made once (the per-call cost of a cffi call with fresh pointers was
    most of these small products' time).  Results within the backend's ``rtol`` of
    :class:`hal.backend.SparseLayerPlan` (the bias is added in another order)."""

    def __init__(self, ffi, lib, W, b, y, gW, gb):
        dt = W.dtype
        rows, q = W.shape
        for name, a, shape in (("b", b, (q,)), ("gW", gW, (rows, q)), ("gb", gb, (q,))):
            if a.shape != shape:
                raise ValueError(f"sparse layer: {name} should have shape {shape}, got "
                                 f"{a.shape}")
        if y.ndim != 2 or y.shape[1] != q:
            raise ValueError(f"sparse layer: y should be (batch, {q}), got {y.shape}")
        for name, a in (("W", W), ("b", b), ("y", y), ("gW", gW), ("gb", gb)):
            if a.dtype != dt or not a.flags.c_contiguous or dt not in (np.float32, np.float64):
                raise ValueError(f"sparse layer: {name} should be C-contiguous float32 or "
                                 f"float64 like W, got {a.dtype}")
        self.W, self.b, self.y, self.gW, self.gb = W, b, y, gW, gb
        self.dtype, self.rows, self.q = dt, rows, q
        sfx, ct = ("f32", "float *") if dt == np.float32 else ("f64", "double *")
        self._ffi, self._ct = ffi, ct
        self._fwd, self._bwd = getattr(lib, "layer_fwd_" + sfx), getattr(lib, "layer_bwd_" + sfx)
        self._Wp, self._bp, self._yp, self._gWp, self._gbp = (
            _ptr(ffi, ct, a) for a in (W, b, y, gW, gb))

    def _codes(self, indices, values):
        if indices.dtype != np.int32 or values.dtype != self.dtype \
                or not indices.flags.c_contiguous or not values.flags.c_contiguous:
            indices = np.ascontiguousarray(indices, dtype=np.int32)
            values = np.ascontiguousarray(values, dtype=self.dtype)
        if indices.ndim != 2 or values.shape != indices.shape:
            raise ValueError(f"codes: indices and values should be (n, k) alike, got "
                             f"{indices.shape} and {values.shape}")
        return indices, values, _ptr(self._ffi, "int *", indices), _ptr(self._ffi, self._ct,
                                                                        values)

    def forward(self, indices, values):
        """``y[:n] = codes @ W + b``; returns that view."""
        idx, val, ip, vp = self._codes(indices, values)
        n, k = idx.shape
        if n > self.y.shape[0]:
            raise ValueError(f"batch of {n} rows, the workspace holds {self.y.shape[0]}")
        bad = self._fwd(n, k, self.q, self.rows, ip, vp, self._Wp, self._bp, self._yp)
        if bad:
            raise _bad_index(idx, bad, self.rows)
        return self.y[:n]

    def backward(self, indices, values, dy):
        """``gW = codes.T @ dy``, ``gb = dy.sum(0)``."""
        idx, val, ip, vp = self._codes(indices, values)
        n, k = idx.shape
        if dy.dtype != self.dtype or not dy.flags.c_contiguous:
            dy = np.ascontiguousarray(dy, dtype=self.dtype)
        if dy.shape != (n, self.q):
            raise ValueError(f"dy should be ({n}, {self.q}), got {dy.shape}")
        bad = self._bwd(n, k, self.q, self.rows, ip, vp, _ptr(self._ffi, self._ct, dy),
                        self._gWp, self._gbp)
        if bad:
            raise _bad_index(idx, bad, self.rows)


class BasisWorkspace:
    """The streaming transform's state bound for the basis kernels (pointers made once: the
    per-join calls pass only the rows that change).

    Methods
    -------
    wp_row(n, x) -> (xx, pp)
        ``p = Q[:n] x`` into :attr:`p`, and ``|x|^2``, ``|p|^2``.
    append(n, a, proj, x) -> (norm, reorth, xx, pp)
        The Gram-Schmidt append of atom ``a`` as row ``n`` (see the C source); if ``x`` (the
        next row) is given, :attr:`p` and ``xx, pp`` are what ``wp_row(n + 1, x)`` would give,
        bit for bit.
    """

    def __init__(self, ffi, lib, D, Q, L, G):
        dt = D.dtype
        lb, m = D.shape
        self.dtype, self.m, self.lb = dt, m, lb
        self._arrays = (D, Q, L, G)  # keep the memory the pointers point into alive
        self.p = np.zeros(lb, dt)
        self._out = np.zeros(3, dt)
        self._ws = np.zeros(2 * m + 2 * lb, dt)
        sfx, self._ct = ("f32", "float *") if dt == np.float32 else ("f64", "double *")
        self._ffi = ffi
        self._wp_row = getattr(lib, "wp_row_" + sfx)
        self._append = getattr(lib, "append_" + sfx)
        ptr = lambda a: _ptr(ffi, self._ct, a)  # noqa: E731
        self._D, self._Q, self._L, self._G = ptr(D), ptr(Q), ptr(L), ptr(G)
        self._pp, self._outp, self._wsp = ptr(self.p), ptr(self._out), ptr(self._ws)

    def _row(self, a):
        if a.dtype != self.dtype or a.shape != (self.m,) or not a.flags.c_contiguous:
            raise ValueError(f"basis kernels need a C-contiguous {self.dtype} row of "
                             f"{self.m} values, got {a.dtype} {a.shape}")
        return _ptr(self._ffi, self._ct, a)

    def wp_row(self, n: int, x: np.ndarray):
        self._wp_row(n, self.m, self._Q, self._row(x), self._pp, self._outp)
        return self._out[0], self._out[1]

    def append(self, n: int, a: np.ndarray, proj=None, x=None):
        if not 0 <= n < self.lb:
            raise ValueError(f"atom {n} does not fit the {self.lb} rows of the basis")
        null = self._ffi.NULL
        if proj is not None:
            proj = np.ascontiguousarray(proj, self.dtype)
            if proj.shape != (n,):
                raise ValueError(f"proj should have {n} values, got {proj.shape}")
        reorth = self._append(n, self.m, self.lb, self._row(a),
                              null if proj is None else _ptr(self._ffi, self._ct, proj),
                              null if x is None else self._row(x), self._D, self._Q, self._L,
                              self._G, self._pp, self._outp, self._wsp)
        out = self._out
        return out[0], bool(reorth), out[1], out[2]


class NativeBackend(BlasBackend):
    """BLAS backend plus C kernels for Batch-OMP's iterations and the k-sparse products.

    Parameters
    ----------
    block : int, default=128
        Rows per matrix product, as for :class:`~hal.backends.numpy.NumpyBackend`.  Twice
        NumPy's default: with the iterations in C the correlation GEMM is most of the time,
        and at m=5625 128-row products ran ~10% faster per sample than 64-row ones
        (measured, one OpenBLAS thread).  The streaming transform passes its own ``block``.
    batch, threads
        As for :class:`~hal.backends.blas.BlasBackend`.

    Tolerances against NumPy (tests/backend): products, including the k-sparse ones,
    ``|got - ref| <= rtol * (|A| @ |B|)`` with rtol 1e-5 (float32), 1e-13 (float64); OMP: the
    same supports wherever the argmax is not a near tie, coefficients within 1e-4 (float32)
    and 1e-10 (float64) of the largest one.
    """

    name = "native"
    bit_identical = False
    sparse_kernels = True
    rtol = {"float32": 1e-5, "float64": 1e-13}

    def __init__(self, block: int = 128, batch: int = 256, threads: Optional[int] = None,
                 **options) -> None:
        super().__init__(block=block, batch=batch, threads=threads, **options)
        lib = _load()
        if lib is None:
            raise BackendUnavailable(f"backend 'native' cannot run: {_ERROR}")
        self._nffi, self._nlib, self.kernel_path = lib

    #: products up to this many multiply-adds go to ``numpy.matmul`` (see BlasBackend): a
    #: (1, 5625) x (5625, 50) projection-error product took 28 us through cffi and 15 us
    #: through NumPy (measured); the choice depends only on the shapes
    small_product = 1 << 22

    @classmethod
    def probe(cls) -> Optional[str]:
        why = BlasBackend.probe()
        if why is not None:
            return why
        return None if _load() is not None else _ERROR

    # -- Batch-OMP ----------------------------------------------------------------------
    def prepare_omp(self, batch, m, l, k, dtype) -> OMPWorkspace:
        """Buffers for chunks of up to ``batch`` samples: the correlations, |x|^2, the padded
        last block, and the kernel's per-sample scratch (no per-iteration state)."""
        dtype = np.dtype(dtype)
        batch = max(2, int(min(batch, self.batch)) if batch else self.batch)
        k = int(min(k, l))
        kk = max(k, 1)
        blk = self.block
        a = {
            "corr": np.empty((batch, l), dtype),
            "xx": np.zeros(batch, dtype),
            "scratch": np.zeros(l + kk * l + kk * kk + 4 * kk, dtype),
            "pad_in": np.empty((PRODUCT_ROWS, m), dtype),
            "pad_out": np.empty((l, PRODUCT_ROWS), dtype),
        }
        if dtype == np.float32:
            a["DT"] = np.empty((m, l), dtype)  # see NumpyBackend.prepare_omp
        return OMPWorkspace(batch=batch, m=m, l=l, k=k, dtype=dtype, block=blk, arrays=a)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> SparseCodes:
        if ws is not None and "scratch" not in ws.arrays:
            ws = None  # a NumPy backend's workspace
        return super().omp_encode(X, D, G, k, tol=tol, ws=ws)

    def _omp_chunk(self, X, DT, G, k, tol, ws, idx, val, nnz, resid_out, corr=None) -> int:
        n = X.shape[0]
        A = ws.arrays
        l = ws.l
        dt = X.dtype
        c, xx = self._chunk_correlations(X, DT, A, corr)
        G = np.ascontiguousarray(G, dtype=dt)
        ffi, lib = self._nffi, self._nlib
        if dt == np.float32:
            fn, ct = lib.omp_f32, "float *"
        else:
            fn, ct = lib.omp_f64, "double *"
        # the outputs are row slices of C-contiguous (N, k) arrays
        for arr in (idx, val):
            if not arr.flags.c_contiguous:
                raise ValueError("omp outputs must be C-contiguous")
        tol2 = -1.0 if tol is None else float(tol) ** 2
        return int(fn(n, l, k, _ptr(ffi, ct, c), _ptr(ffi, ct, xx), _ptr(ffi, ct, G), tol2,
                      float(np.finfo(dt).eps), _ptr(ffi, ct, A["scratch"]),
                      _ptr(ffi, "int *", idx), _ptr(ffi, ct, val), _ptr(ffi, "int *", nnz),
                      _ptr(ffi, ct, resid_out)))

    # -- the streaming transform's basis (its joins) -----------------------------------
    def prepare_basis(self, D, Q, L, G) -> "BasisWorkspace":
        """Bind the transform's state arrays (D and Q (lb, m), L and G (lb, lb); C-contiguous,
        one float dtype, kept for the workspace's life) and allocate the kernels' scratch."""
        dt = D.dtype
        lb, m = D.shape
        for name, a, shape in (("D", D, (lb, m)), ("Q", Q, (lb, m)), ("L", L, (lb, lb)),
                               ("G", G, (lb, lb))):
            if a.dtype != dt or a.shape != shape or not a.flags.c_contiguous \
                    or dt not in (np.float32, np.float64):
                raise ValueError(f"prepare_basis: {name} should be C-contiguous {dt} of shape "
                                 f"{shape}, got {a.dtype} {a.shape}")
        return BasisWorkspace(self._nffi, self._nlib, D, Q, L, G)

    def project(self, Q, x, out, h=None, u=None):
        """``out[:] = Q @ x`` and ``u -= h @ Q`` in one pass over Q (the basis kernels'
        primitive; each ``out[j]`` is a dot product in a fixed order of its own,
        bit-identical whatever the number of rows and whether ``u`` is updated)."""
        dt = Q.dtype
        arrays = [a for a in (Q, x, out, h, u) if a is not None]
        if dt not in (np.float32, np.float64) or Q.ndim != 2 or any(
                a.dtype != dt or not a.flags.c_contiguous for a in arrays) \
                or (x is None) != (out is None) or (u is None) != (h is None):
            raise ValueError("project needs C-contiguous float32 or float64 arrays of one "
                             "dtype, x with out and u with h")
        n, m = Q.shape
        if (x is not None and (x.shape != (m,) or out.shape != (n,))) or \
                (u is not None and (u.shape != (m,) or h.shape != (n,))):
            raise ValueError(f"project needs Q (n, m), x and u (m,), out and h (n,); got Q "
                             f"{Q.shape}")
        ffi, lib = self._nffi, self._nlib
        fn, ct = (lib.project_f32, "float *") if dt == np.float32 else \
            (lib.project_f64, "double *")
        null = ffi.NULL
        fn(n, m, _ptr(ffi, ct, Q), null if x is None else _ptr(ffi, ct, x),
           null if out is None else _ptr(ffi, ct, out), null if h is None else _ptr(ffi, ct, h),
           null if u is None else _ptr(ffi, ct, u))

    # -- k-sparse products --------------------------------------------------------------
    def prepare_sparse_layer(self, W, b, y, gW, gb):
        """A dense layer fed compact codes in one kernel call per pass (see
        :class:`SparseLayerPlan`)."""
        return SparseLayerPlan(self._nffi, self._nlib, W, b, y, gW, gb)

    def _sparse_args(self, indices, values, W):
        dt = W.dtype
        if not (indices.dtype == np.int32 and values.dtype == dt and indices.flags.c_contiguous
                and values.flags.c_contiguous and W.flags.c_contiguous):  # the trainer's case
            dt = np.result_type(values, W)
            indices = np.ascontiguousarray(indices, dtype=np.int32)
            values = np.ascontiguousarray(values, dtype=dt)
            W = np.ascontiguousarray(W, dtype=dt)
        if dt not in (np.float32, np.float64) or indices.ndim != 2 \
                or values.shape != indices.shape or W.ndim != 2:
            return None
        return dt, indices, values, W

    def gather_matmul(self, indices, values, W, out=None):
        args = self._sparse_args(indices, values, W)
        if args is None:
            return super().gather_matmul(indices, values, W, out=out)
        dt, idx, val, W = args
        n, k = idx.shape
        q = W.shape[1]
        if out is None:
            out = np.empty((n, q), dt)
        direct = out.dtype == dt and out.flags.c_contiguous
        dst = out if direct else np.empty((n, q), dt)
        ffi, lib = self._nffi, self._nlib
        fn, ct = (lib.gather_f32, "float *") if dt == np.float32 else (lib.gather_f64, "double *")
        bad = fn(n, k, q, W.shape[0], _ptr(ffi, "int *", idx), _ptr(ffi, ct, val),
                 _ptr(ffi, ct, W), _ptr(ffi, ct, dst))
        if bad:
            raise _bad_index(idx, bad, W.shape[0])
        if not direct:
            out[...] = dst
        return out

    def scatter_matmul(self, indices, values, dy, out, beta=0.0):
        """``out = beta * out + codes.T @ dy`` for compact codes (the gradient of
        :meth:`gather_matmul` with respect to ``W``); ``out`` (rows, q) is written in place."""
        args = self._sparse_args(indices, values, dy)
        if args is None or out.dtype != args[0] or not out.flags.c_contiguous:
            return super().scatter_matmul(indices, values, dy, out, beta=beta)
        dt, idx, val, dy = args
        n, k = idx.shape
        ffi, lib = self._nffi, self._nlib
        fn, ct = (lib.scatter_f32, "float *") if dt == np.float32 else \
            (lib.scatter_f64, "double *")
        bad = fn(n, k, dy.shape[1], out.shape[0], _ptr(ffi, "int *", idx), _ptr(ffi, ct, val),
                 _ptr(ffi, ct, dy), float(beta), _ptr(ffi, ct, out))
        if bad:
            raise _bad_index(idx, bad, out.shape[0])
        return out
