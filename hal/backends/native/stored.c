/* Products with a dictionary stored narrower than it is computed with: float16 atoms, or int8
   atoms with one float32 scale per atom (atom j = ascale[j] * q[j]), compute in float32.  The
   specification is hal/backends/numpy/stored.py (which decodes tiles of 16 atoms into float32
   and multiplies them); here the stored values are decoded in registers as they are read, so
   a product reads 2 (float16) or 1 (int8) bytes per atom value instead of 4: the one-sample
   correlations, a gemv over the whole dictionary, are bound by those bytes.

   Included once by kernels.c, after the float instantiation (it calls omp_f32 and the static
   nonfinite_f32 / sqnorm_f32 of correlate.c), with floating-point contraction off (the sums
   use explicit FMAs where the target has them, so every block shape rounds alike).

   Storage kinds: 0 float16 (IEEE binary16 bits, decoded by F16C's vcvtph2ps where the target
   has it, else by sd_half), 1 int8 (sign-extended and converted: exact; the atom's scale
   multiplies the finished dot product once: C[i, j] = ascale[j] * (X[i] . q[j])).

   The fixed order.  C[i, j] is accumulated in 8 lanes, lane u holding the features t = 8 s +
   u, one fma per step s in order from 0 (the tail zero-padded into a last step), then the
   fixed lane tree of sd_lanes (and the scale, int8).  That order depends on nothing
   but m: not on the other rows or atoms, on how many there are or on the register block a
   value falls in, so a lone sample gets the same bits as in any batch (the streaming
   transform's results do not depend on the batch split). */

typedef float sd_v8 __attribute__((vector_size(32)));

/* samples per register block (batches), and atoms per block: NS x NA accumulators */
#define SD_NS 3
#define SD_NA 4
/* atoms per block for a lone sample: enough independent FMA chains to cover their latency */
#define SD_NA1 10
/* rows per group sharing each decoded chunk of the atoms, and the features per chunk (the
   group's rows' chunks, 48 x 1024 floats, stay in L2) */
#define SD_RG 48
#define SD_TC 1024

/* IEEE binary16 bits to float (normal, subnormal, zero, Inf and NaN): the scalar fallback */
static inline float sd_half(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, f = h & 0x3ffu, bits;
    if (e == 0x1f)
        bits = sign | 0x7f800000u | (f << 13);
    else if (e)
        bits = sign | ((e + 112u) << 23) | (f << 13);
    else if (f) {  /* subnormal: f * 2^-24, exact in float */
        float v = (float)f * 5.9604644775390625e-8f;
        __builtin_memcpy(&bits, &v, 4);
        bits |= sign;
    } else
        bits = sign;
    float out;
    __builtin_memcpy(&out, &bits, 4);
    return out;
}

static inline sd_v8 sd_loadx(const float *p)
{
    sd_v8 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline sd_v8 sd_load_f16(const uint16_t *p)
{
#if defined(__F16C__)
    return (sd_v8)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    sd_v8 v;
    for (int u = 0; u < 8; u++) {
        uint16_t h;  /* by memcpy: p may point into a buffer of another type (the tail's) */
        __builtin_memcpy(&h, p + u, sizeof h);
        v[u] = sd_half(h);
    }
    return v;
#endif
}

static inline sd_v8 sd_load_i8(const int8_t *p)
{
#if defined(__AVX2__)
    return (sd_v8)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#else
    sd_v8 v;
    for (int u = 0; u < 8; u++) v[u] = (float)p[u];
    return v;
#endif
}

/* 8 values of kind KIND at element t of row d, as floats (kind 2: float32, a decoded tile) */
static inline sd_v8 sd_load(const void *d, long t, const int KIND)
{
    if (KIND == 2) return sd_loadx((const float *)d + t);
    if (KIND) return sd_load_i8((const int8_t *)d + t);
    return sd_load_f16((const uint16_t *)d + t);
}

/* The bytes of one value of kind KIND. */
static inline long sd_size(long kind) { return kind == 2 ? 4 : kind ? 1 : 2; }

/* acc + x * d with one rounding where the target has an FMA, else two (contraction is off) */
static inline sd_v8 sd_madd(sd_v8 acc, sd_v8 x, sd_v8 d)
{
#if defined(__FMA__)
    return (sd_v8)_mm256_fmadd_ps((__m256)x, (__m256)d, (__m256)acc);
#else
    return acc + x * d;
#endif
}

/* v is in a register from here on: GCC would otherwise fold each use of a loaded vector into
   the FMA as a memory operand, loading it once per use (a block of 3 x 3 did 12 loads per 9
   FMAs, bound by the load ports) */
#if defined(__GNUC__) && defined(__AVX__)
#define SD_PIN(v) __asm__("" : "+x"(v))
#else
#define SD_PIN(v) (void)0
#endif

/* The fixed lane tree: w[i] = v[i] + v[i + 4], then (w[0] + w[1]) + (w[2] + w[3]) (the
   pairs of sd_lanes4v's horizontal adds: the same bits) */
static inline float sd_lanes(sd_v8 a)
{
    float v[8];
    __builtin_memcpy(v, &a, sizeof a);
    for (int i = 0; i < 4; i++) v[i] += v[i + 4];
    return (v[0] + v[1]) + (v[2] + v[3]);
}

/* out[k] = sd_lanes(a[k]) for 4 accumulators at once (at m = 520 the scalar trees were ~10%
   of a batch's correlations) */
static inline void sd_lanes4v(const sd_v8 *a, float *out)
{
#if defined(__AVX__)
    __m128 s[4];
    for (int k = 0; k < 4; k++) {
        const __m256 v = (__m256)a[k];
        s[k] = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    }
    _mm_storeu_ps(out, _mm_hadd_ps(_mm_hadd_ps(s[0], s[1]), _mm_hadd_ps(s[2], s[3])));
#else
    for (int k = 0; k < 4; k++) out[k] = sd_lanes(a[k]);
#endif
}

/* out[a] = sd_lanes(A[a]) (times sc[a] if sc) for a < na: the finished correlations */
static inline __attribute__((always_inline)) void
sd_finish(const sd_v8 *A, int na, const float *sc, float *out)
{
    int a = 0;
    for (; a + 4 <= na; a += 4) sd_lanes4v(A + a, out + a);
    for (; a < na; a++) out[a] = sd_lanes(A[a]);
    if (sc)
        for (a = 0; a < na; a++) out[a] *= sc[a];
}

/* NS samples x NA atoms over len features from x[s] (the sample rows) and d[a] (the atom
   rows, values of kind KIND) on, in steps of 8; a last partial step (tail: the end of the
   rows) zero-padded.  The accumulators acc[(s * lda + a) * 8 ...] carried between calls, from
   zero where first; where out, finished instead of stored (the lane tree, times sc[a] if sc)
   into out[s * ldo + a].
   WRITE (stored kinds only): each decoded vector is also stored at w + a * ldw + t (the
   group's float tile, zero-padded to the step: the rows after this block read it as kind 2,
   so the decoding is done once per group, overlapped with this block's FMAs, without a pass
   of its own) */
static inline __attribute__((always_inline)) void
sd_block(long len, int tail, const float *const *x, const void *const *d, float *acc,
         long lda, int first, float *out, long ldo, const float *sc, float *w, long ldw,
         const int NS, const int NA, const int KIND, const int WRITE)
{
    sd_v8 A[SD_NS][SD_NA1];
    for (int s = 0; s < NS; s++)
        for (int a = 0; a < NA; a++)
            if (first) A[s][a] = (sd_v8){0};
            else A[s][a] = sd_loadx(acc + (s * lda + a) * 8);
    long t = 0;
    for (; t + 8 <= len; t += 8) {
        sd_v8 xv[SD_NS];
        for (int s = 0; s < NS; s++) {
            xv[s] = sd_loadx(x[s] + t);
            SD_PIN(xv[s]);
        }
        for (int a = 0; a < NA; a++) {
            sd_v8 dv = sd_load(d[a], t, KIND);
            SD_PIN(dv);
            if (WRITE) __builtin_memcpy(w + a * ldw + t, &dv, sizeof dv);
            for (int s = 0; s < NS; s++) A[s][a] = sd_madd(A[s][a], xv[s], dv);
        }
    }
    if (tail && t < len) {
        const long r = len - t;
        float xt[SD_NS][8];
        for (int s = 0; s < NS; s++) {
            __builtin_memset(xt[s], 0, sizeof xt[s]);
            __builtin_memcpy(xt[s], x[s] + t, (unsigned long)r * sizeof(float));
        }
        for (int a = 0; a < NA; a++) {
            unsigned char dt[32] = {0};  /* room for 8 values of any kind */
            __builtin_memcpy(dt, (const char *)d[a] + t * sd_size(KIND),
                             (unsigned long)(r * sd_size(KIND)));
            const sd_v8 dv = sd_load(dt, 0, KIND);
            if (WRITE) __builtin_memcpy(w + a * ldw + t, &dv, sizeof dv);
            for (int s = 0; s < NS; s++) A[s][a] = sd_madd(A[s][a], sd_loadx(xt[s]), dv);
        }
    }
    if (out)
        for (int s = 0; s < NS; s++) sd_finish(A[s], NA, sc, out + s * ldo);
    else
        for (int s = 0; s < NS; s++)
            for (int a = 0; a < NA; a++)
                __builtin_memcpy(acc + (s * lda + a) * 8, &A[s][a], sizeof A[s][a]);
}

/* kind: 0 float16, 1 int8, 2 float (a decoded tile), 3 float16 and 4 int8 written to the
   tile w as they are decoded (WRITE) */
#define SDB(NS_, NA_) \
    case (NS_) * 16 + (NA_): \
        switch (kind) { \
        case 2: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, NS_, NA_, 2, 0); break; \
        case 1: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, NS_, NA_, 1, 0); break; \
        case 0: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, NS_, NA_, 0, 0); break; \
        case 4: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, NS_, NA_, 1, 1); break; \
        default: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, NS_, NA_, 0, 1); \
        } \
        break;

static void sd_block_any(long len, int tail, const float *const *x, const void *const *d,
                         float *acc, long lda, int first, float *out, long ldo,
                         const float *sc, float *w, long ldw, int ns, int na, long kind)
{
    switch (ns * 16 + na) {
    SDB(3, 4) SDB(3, 3) SDB(3, 2) SDB(3, 1) SDB(2, 6) SDB(2, 5) SDB(2, 4) SDB(2, 3) SDB(2, 2)
    SDB(2, 1)
    SDB(1, 10) SDB(1, 9) SDB(1, 8) SDB(1, 7) SDB(1, 6) SDB(1, 5) SDB(1, 4) SDB(1, 3) SDB(1, 2)
    default:
        switch (kind) {
        case 2: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, 1, 1, 2, 0); break;
        case 1: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, 1, 1, 1, 0); break;
        case 0: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, 1, 1, 0, 0); break;
        case 4: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, 1, 1, 1, 1); break;
        default: sd_block(len, tail, x, d, acc, lda, first, out, ldo, sc, w, ldw, 1, 1, 0, 1);
        }
    }
}
#undef SDB

/* sd_block for nt triples of rows from the decoded tile (kind 2): row 3 i + s of the triples
   at X0 + (3 i + s) * ldx, accumulators at acc + 3 i * lda * 8, results at out + 3 i * ldo;
   one dispatch for a whole atom block (a call per triple cost ~5% at m = 520) */
static inline __attribute__((always_inline)) void
sd_triples(long nt, long len, int tail, const float *X0, long ldx, const void *const *d,
           float *acc, long lda, int first, float *out, long ldo, const float *sc, const int NA)
{
    for (long i = 0; i < nt; i++) {
        const float *x[SD_NS];
        for (int s = 0; s < SD_NS; s++) x[s] = X0 + (3 * i + s) * ldx;
        sd_block(len, tail, x, d, acc + 3 * i * lda * 8, lda, first, out ? out + 3 * i * ldo : 0,
                 ldo, sc, 0, 0, SD_NS, NA, 2, 0);
    }
}

static void sd_triples_any(long nt, long len, int tail, const float *X0, long ldx,
                           const void *const *d, float *acc, long lda, int first, float *out,
                           long ldo, const float *sc, int na)
{
    switch (na) {
    case 4: sd_triples(nt, len, tail, X0, ldx, d, acc, lda, first, out, ldo, sc, 4); break;
    case 3: sd_triples(nt, len, tail, X0, ldx, d, acc, lda, first, out, ldo, sc, 3); break;
    case 2: sd_triples(nt, len, tail, X0, ldx, d, acc, lda, first, out, ldo, sc, 2); break;
    default: sd_triples(nt, len, tail, X0, ldx, d, acc, lda, first, out, ldo, sc, 1);
    }
}

/* The features per decoded chunk for m features: SD_TC, at most m rounded up to a multiple
   of 8. */
static long sd_chunk(long m)
{
    const long m8 = (m + 7) / 8 * 8;
    return SD_TC < m8 ? SD_TC : m8;
}

/* The rows a scratch for up to cap rows per call groups (1: every row alone). */
static long sd_group(long cap) { return cap < 1 ? 1 : cap < SD_RG ? cap : SD_RG; }

/* The float scratch stored_correlate needs for l atoms of m features and calls of up to
   rows rows: a lone row l 8-lane accumulators; a group of g = min(rows, SD_RG) rows g * l
   accumulators and a decoded tile of SD_NA atoms x sd_chunk(m) features (a one-row scratch
   is all a one-sample encode needs: 3.2 KB at l = 100). */
long stored_scratch(long l, long m, long rows)
{
    const long g = sd_group(rows);
    return g == 1 ? l * 8 : g * l * 8 + SD_NA * sd_chunk(m);
}

/* C[i * ldc + j] = X[i] . atom j for i < n, j < l, in the fixed order above: Dq the atoms as
   rows of m stored values (kind 0 float16 bits, 1 int8), ascale the int8 atoms' scales
   (unused for float16); X rows at stride ldx; acc: stored_scratch(l, m, cap) floats (any
   alignment), for groups of up to min(cap, SD_RG) rows.  C[i, j] depends on X[i] and atom j
   only.  The blocking is for speed only (a value's sum is the same, the decoded values being
   exact): a lone row reads the stored atoms directly, decoding in registers (each value is
   used once), its sums finished in the block.  A group of rows meets each block of SD_NA
   atoms a chunk of sd_chunk(m) features at a time: its first SD_NS rows read the stored
   atoms, decoding in registers, and store the decoded chunk into a float tile (in L1) as
   they go (the decoding overlaps their FMAs: a separate decoding pass cost ~5% at m = 5625);
   the whole triples after them read the tile in one call, then the last one or two rows.
   Rows SD_NS at a time (3 x 4: 12 accumulators, 3 rows and 1 atom vector in the 16 AVX
   registers; 4 x 3 spilled and ran at 0.4x); the accumulators start at zero in registers,
   are carried in acc between chunks, and the last chunk finishes them (lane tree, scale)
   in the block.  Measured at m = 5625, l = 100 (batches of 48): chunks of 256 features ran
   at 0.8x float32's correlate, 512 and 1536 below 1024 (per-chunk overhead; L1). */
void stored_correlate(long n, long l, long m, const float *X, long ldx, const void *Dq,
                      long kind, const float *ascale, float *C, long ldc, float *acc, long cap)
{
    const char *base = (const char *)Dq;
    const long row = m * sd_size(kind), g = sd_group(cap);
    float *tile = acc + g * l * 8;
    if (m <= 0) {  /* no features: no chunk finishes the sums */
        for (long i = 0; i < n; i++)
            for (long j = 0; j < l; j++) C[i * ldc + j] = 0;
        return;
    }
    for (long g0 = 0; g0 < n; g0 += g) {
        const long nr = n - g0 < g ? n - g0 : g;
        const long tc = nr == 1 ? m : sd_chunk(m);
        /* atom blocks as even as possible (11 atoms as 6 + 5, not 10 + 1) */
        const long most = nr == 1 ? SD_NA1 : SD_NA, ng = (l + most - 1) / most;
        const long nab = ng ? (l + ng - 1) / ng : 1;
        for (long t0 = 0; t0 < m; t0 += tc) {
            const long len = t0 + tc < m ? tc : m - t0;
            const int tail = t0 + len == m;
            for (long j0 = 0; j0 < l; j0 += nab) {
                const int na = l - j0 < nab ? (int)(l - j0) : (int)nab;
                const void *d[SD_NA1];
                for (int a = 0; a < na; a++)
                    d[a] = base + (j0 + a) * row + t0 * sd_size(kind);
                /* a group: its first rows decode the block's chunk into the tile as they
                   read it, the whole triples after them read the tile (in L1) in one call,
                   then the last one or two rows */
                long i0 = 0;
                while (i0 < nr) {
                    const int ns = nr - i0 < SD_NS ? (int)(nr - i0) : SD_NS;
                    float *out = tail ? C + (g0 + i0) * ldc + j0 : 0;
                    const float *sc = kind ? ascale + j0 : 0;
                    float *ac = acc + (i0 * l + j0) * 8;
                    if (i0 && ns == SD_NS) {  /* the whole triples after the first */
                        const long nt = (nr - i0) / SD_NS;
                        sd_triples_any(nt, len, tail, X + (g0 + i0) * ldx + t0, ldx, d, ac, l,
                                       t0 == 0, out, ldc, sc, na);
                        i0 += nt * SD_NS;
                        continue;
                    }
                    const float *x[SD_NS];
                    for (int s = 0; s < ns; s++) x[s] = X + (g0 + i0 + s) * ldx + t0;
                    sd_block_any(len, tail, x, d, ac, l, t0 == 0, out, ldc, sc, tile, tc, ns,
                                 na, nr == 1 ? kind : i0 ? 2 : kind + 3);
                    if (nr > 1 && !i0)
                        for (int a = 0; a < na; a++) d[a] = tile + a * tc;
                    i0 += ns;
                }
            }
        }
    }
}

/* R[i] -= sum_j W[i * ldw + j] * atom j for i < n, j < l (the explicit residual of the Wp
   test), one atom at a time in order j = 0 .. l-1, each a multiply-add per feature (the
   coefficient of an int8 atom is W[i, j] * ascale[j]).  R rows at stride ldr. */
void stored_combine(long n, long l, long m, const float *W, long ldw, const void *Dq,
                    long kind, const float *ascale, float *R, long ldr)
{
    const char *base = (const char *)Dq;
    const long row = m * sd_size(kind);
    for (long i = 0; i < n; i++) {
        float *r = R + i * ldr;
        for (long j = 0; j < l; j++) {
            const float w = kind ? W[i * ldw + j] * ascale[j] : W[i * ldw + j];
            if (w == 0) continue;  /* the zero atoms past n (and zero weights): no change */
            const void *d = base + j * row;
            const sd_v8 nw = (sd_v8){0} - w;
            long t = 0;
            for (; t + 8 <= m; t += 8) {
                const sd_v8 dv = kind ? sd_load(d, t, 1) : sd_load(d, t, 0);
                const sd_v8 v = sd_madd(sd_loadx(r + t), nw, dv);
                __builtin_memcpy(r + t, &v, sizeof v);
            }
            for (; t < m; t++) {
                const float dv = kind ? (float)((const int8_t *)d)[t]
                                      : sd_half(((const uint16_t *)d)[t]);
                r[t] = r[t] - w * dv;
            }
        }
    }
}

/* Code the n rows of X (n x m, C order) on the bound stored dictionary p, as encode_f32 does
   on a float one: check that X is finite, standardize each row (if p->mean), correlate it
   with the stored atoms, run Batch-OMP (omp_f32) on the Gram matrix of the decoded atoms,
   CSB rows at a time.  Returns the samples stopped early by a dependent atom (>= 0), or
   -(1 + i * m + t) for the first non-finite X[i, t] (then nothing is written). */
long stored_encode(const struct tdl_stored *p, long n, const float *X, int *idx, float *val)
{
    const long m = p->m, l = p->l;
    const long bad = nonfinite_f32(n, m, X);
    if (bad) return -bad;
    long dep = 0;
    for (long i0 = 0; i0 < n; i0 += CSB) {
        const long nb = n - i0 < CSB ? n - i0 : CSB;
        const float *rows = standardized_f32(nb, m, X + i0 * m, p->mean, p->scale, p->xs);
        stored_correlate(nb, l, m, rows, m, p->Dq, p->kind, p->ascale, p->corr, l, p->acc,
                         p->rows);
        for (long s = 0; s < nb; s++) p->xx[s] = sqnorm_f32(m, rows + s * m);
        dep += omp_f32(nb, l, p->k, p->ldo, p->corr, p->xx, p->G, p->ldg, p->tol2, p->eps,
                       p->ows, idx + i0 * p->ldo, val + i0 * p->ldo, p->nnz, p->resid);
    }
    return dep;
}
