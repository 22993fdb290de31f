/* Products with a dictionary stored narrower than it is computed with: float16 atoms, or int8
   atoms with one float32 scale per atom (atom j = ascale[j] * q[j]), compute in float32.  The
   specification is hal/backends/numpy/stored.py (which decodes tiles of 16 atoms into float32
   and multiplies them).

   Included once by kernels.c, after the float instantiation (it calls correlate.c's and
   omp.c's _f32 kernels), with floating-point contraction off.

   Storage kinds (correlate.c's KIND): 1 float16 (IEEE binary16 bits), 2 int8 (the atom's
   scale multiplies the finished sum once: C[i, j] = ascale[j] * (X[i] . q[j])).  The
   correlations read the atoms transposed, DqT (m rows of ldt >= correlate_width_f32(l)
   stored values, DqT[t * ldt + j] = atom j's value t, the padding columns zero), the layout
   of float32's DT, so that they run correlate.c's kernels themselves:

   * a lone row: correlate1_f32 reading DqT as stored (decoded in registers as it is read,
     5 of each 14 float16 vectors (4 of 14 int8) by integer ops and the rest by the
     conversion instructions, so that the decoding is not bound by the one conversion pipe:
     correlate.c's tdl_load_f16_scaled; the one-sample product, a gemv over the dictionary,
     then reads 2 or 1 bytes per atom value instead of 4);
   * a group of up to CSB rows: each chunk of CKC features of DqT decoded once into a float
     tile (CKC x lw floats) by the group's first block of rows as it reads them (the
     decoding overlaps their multiply-adds), then float32's batch kernel over the tile for
     the rest of the group (correlate_chunkk_f32): the decoding is amortized over the
     group's rows.

   The order is correlate.c's (acc = fma(X[i, t], atom j's value t, acc) for t = 0 .. m-1,
   then the scale): the decoded values are exact, so the lone path and the tile give every
   row the same bits (the streaming transform's results do not depend on the batch split). */

/* the group's tile: SD_CKC features of the decoded atoms at a time (float32's chunk: 256
   features, 104 KB at l = 100, in L2; measured at m = 5625 and 520, 64-feature tiles (in L1)
   and 128 ran 3-4% slower, 512 about 2%) */
#define SD_CKC CKC
static long sd_chunk(long m) { return SD_CKC < m ? SD_CKC : m; }

/* The rows a scratch for up to cap rows per call groups (1: every row alone). */
static long sd_group(long cap) { return cap < 1 ? 1 : cap < CSB ? cap : CSB; }

/* The rows per group for n rows in groups of at most g: as even as possible (256 rows as 6
   x 43, not 5 x 48 + 16: each group decodes the atoms once) */
static long sd_even(long n, long g)
{
    const long ng = (n + g - 1) / g;
    return ng > 1 ? (n + ng - 1) / ng : g;
}

/* the floats a scratch spends on aligning its start to 64 bytes: the tile's and the
   accumulators' vectors then never straddle a cache line (lw is a whole number of 32-byte
   vectors; measured on float32's kernel, a DT 16 bytes off ran ~7% slower) */
#define SD_SLACK 16

/* The float scratch stored_correlate needs for l atoms of m features and calls of up to
   rows rows: a lone row lw = correlate_width_f32(l) accumulators; a group of g = min(rows,
   CSB) rows g * lw accumulators and a decoded tile of sd_chunk(m) x lw floats; and SD_SLACK
   (a one-row scratch is all a one-sample encode needs: 480 bytes at l = 100). */
long stored_scratch(long l, long m, long rows)
{
    const long g = sd_group(rows), lw = correlate_width_f32(l);
    return (g == 1 ? lw : (g + sd_chunk(m)) * lw) + SD_SLACK;
}

/* C[i * ldc + j] = X[i] . atom j for i < n, j < l, in correlate.c's order: DqT the atoms
   transposed (see above; kind 1 float16 bits, 2 int8), ascale the int8 atoms' scales
   (unused for float16); X rows at stride ldx; acc: stored_scratch(l, m, cap) floats (any
   float alignment), for groups of up to min(cap, CSB) rows.  C[i, j] depends on X[i] and atom j
   only (not on l, n or the group a row falls in). */
void stored_correlate(long n, long l, long m, const float *X, long ldx, const void *DqT,
                      long ldt, long kind, const float *ascale, float *C, long ldc, float *acc,
                      long cap)
{
    const long lw = correlate_width_f32(l), nvec = lw / 8, g = sd_even(n, sd_group(cap));
    acc = (float *)(((uintptr_t)acc + 63) & ~(uintptr_t)63);  /* (SD_SLACK) */
    float *tile = acc + sd_group(cap) * lw;
    for (long g0 = 0; g0 < n; g0 += g) {
        const long nb = n - g0 < g ? n - g0 : g;
        __builtin_memset(acc, 0, (unsigned long)(nb * lw) * sizeof(float));
        if (nb == 1) {
            if (kind == 2) correlate1_f32(m, X + g0 * ldx, DqT, ldt, acc, nvec, 2);
            else correlate1_f32(m, X + g0 * ldx, DqT, ldt, acc, nvec, 1);
        } else for (long t0 = 0; t0 < m; t0 += SD_CKC) {
            const long len = t0 + SD_CKC < m ? SD_CKC : m - t0;
            const char *dq = (const char *)DqT + t0 * ldt * TDL_ESIZE(kind, 4);
            const float *x = X + g0 * ldx + t0;
            if (kind == 2) correlate_chunkk_f32(nb, 0, len, x, ldx, dq, ldt, acc, lw, tile, 2);
            else correlate_chunkk_f32(nb, 0, len, x, ldx, dq, ldt, acc, lw, tile, 1);
        }
        for (long s = 0; s < nb; s++) {
            float *c = C + (g0 + s) * ldc;
            const float *a = acc + s * lw;
            if (kind == 2)
                for (long j = 0; j < l; j++) c[j] = a[j] * ascale[j];
            else
                __builtin_memcpy(c, a, (unsigned long)l * sizeof(float));
        }
    }
}

/* R[i] -= sum_j W[i * ldw + j] * atom j for i < n, j < l (the explicit residual of the Wp
   test), one atom at a time in order j = 0 .. l-1, each a multiply-add per feature (the
   coefficient of an int8 atom is W[i, j] * ascale[j]): Dq the atoms as rows of m stored
   values (kind 1 float16 bits, 2 int8).  R rows at stride ldr. */
void stored_combine(long n, long l, long m, const float *W, long ldw, const void *Dq,
                    long kind, const float *ascale, float *R, long ldr)
{
    const char *base = (const char *)Dq;
    const long row = m * TDL_ESIZE(kind, 4);
    for (long i = 0; i < n; i++) {
        float *r = R + i * ldr;
        for (long j = 0; j < l; j++) {
            const float w = kind == 2 ? W[i * ldw + j] * ascale[j] : W[i * ldw + j];
            if (w == 0) continue;  /* the zero atoms past n (and zero weights): no change */
            const void *d = base + j * row;
            const VEC_f32 nw = splat_f32(-w);
            long t = 0;
            for (; t + 8 <= m; t += 8) {
                const VEC_f32 dv = kind == 2 ? vload_as_f32(d, t, 2) : vload_as_f32(d, t, 1);
                vstore_f32(r + t, madd_f32(vload_f32(r + t), nw, dv));
            }
            for (; t < m; t++) {
                const float dv = kind == 2 ? (float)((const int8_t *)d)[t]
                                           : tdl_half(((const uint16_t *)d)[t]);
                r[t] = r[t] - w * dv;
            }
        }
    }
}

/* Code the n rows of X (n x m, C order) on the bound stored dictionary p, as encode_f32 does
   on a float one: check that X is finite, standardize each row (if p->mean), correlate it
   with the stored atoms, run Batch-OMP (omp_f32) on the Gram matrix of the decoded atoms,
   in groups of at most CSB rows, as even as possible (sd_even).  Returns the samples stopped early by a dependent atom (>= 0), or
   -(1 + i * m + t) for the first non-finite X[i, t] (then nothing is written). */
long stored_encode(const struct tdl_stored *p, long n, const float *X, int *idx, float *val)
{
    const long m = p->m, l = p->l;
    const long bad = nonfinite_f32(n, m, X);
    if (bad) return -bad;
    const long g = sd_even(n, CSB);
    long dep = 0;
    for (long i0 = 0; i0 < n; i0 += g) {
        const long nb = n - i0 < g ? n - i0 : g;
        const float *rows = standardized_f32(nb, m, X + i0 * m, p->mean, p->scale, p->xs);
        stored_correlate(nb, l, m, rows, m, p->DqT, p->ldt, p->kind, p->ascale, p->corr, l,
                         p->acc, p->rows);
        for (long s = 0; s < nb; s++) p->xx[s] = sqnorm_f32(m, rows + s * m);
        dep += omp_f32(nb, l, p->k, p->ldo, p->corr, p->xx, p->G, p->ldg, p->tol2, p->eps,
                       p->ows, idx + i0 * p->ldo, val + i0 * p->ldo, p->nnz, p->resid);
    }
    return dep;
}
