/* The correlations of samples with atoms, each accumulated in one fixed order, and the
   one-call encode of a batch (standardize, correlate, Batch-OMP).  Included by kernels.c once
   per type, after basis.c (whose F(VEC), F(vload), F(vstore) it uses), with floating-point
   contraction off (see F(madd)).  The specification is NumPy's X @ D.T
   (hal/backends/numpy/omp.py, _chunk_correlations): the same values up to rounding.

   The fixed order.  C[i, j] = X[i] . D[j] is accumulated one feature at a time, in order:
   acc = fma(X[i, t], D[j, t], acc) for t = 0 .. m-1 from acc = 0 (the product form of a
   GEMM, with the atoms along the vector lanes of DT, the dictionary transposed and padded
   to a whole number of vectors).  That order depends on nothing but t: not on the other rows
   or atoms, on how many there are, on where a row sits in its batch, on the register block
   it falls in or on the chunking over t (accumulators are carried across chunks in memory,
   unchanged).  A lone sample gets the same bits as the same sample in any batch, which keeps
   the streaming transform's results independent of the batch split without the zero-padded
   16-row tiles a BLAS GEMM needs.  |X[i]|^2 has an order of its own (F(sqnorm)).

   The atoms may be stored narrower than REAL (float instantiation only: stored.c): DT's
   values are then read by F(vload_as) as KIND 1 float16 or 2 int8 and converted exactly to
   float, in registers, before the same multiply-adds (KIND 0: REAL itself).  The order above
   does not depend on the kind: a product over decoded atoms is the product over the float
   atoms they decode to, so one kernel serves every storage (and stored.c's batches, which
   decode a chunk of DT into a float tile once per group of rows and run the float kernel on
   it, give a row the bits its lone product over the stored values gives).

   The blocking is for speed only: NS samples x NV vectors of atoms per register block
   (NS * NV <= 12 accumulators: 6 x 2 for batches; up to 1 x 14 for a lone sample, so that a
   lone sample has enough independent FMA chains and reads each row of DT in one pass), chunks of CKC features (the DT rows of a chunk stay
   in L2 while the samples of a block of CSB pass over them). */

#ifndef TDL_DECODE_ONCE
#define TDL_DECODE_ONCE
/* The storage kinds' exact conversion to float, 8 values at a time (shared by both
   instantiations, defined once). */
typedef float tdl_v8 __attribute__((vector_size(32)));

/* IEEE binary16 bits to float (normal, subnormal, zero, Inf and NaN): the scalar fallback */
static inline float tdl_half(uint16_t h)
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

/* 8 float16 values (F16C's vcvtph2ps where the target has it) */
static inline tdl_v8 tdl_load_f16(const uint16_t *p)
{
#if defined(__F16C__)
    return (tdl_v8)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    tdl_v8 v;
    for (int u = 0; u < 8; u++) {
        uint16_t h;
        __builtin_memcpy(&h, p + u, sizeof h);
        v[u] = tdl_half(h);
    }
    return v;
#endif
}

/* 8 int8 values, sign-extended and converted (exact) */
static inline tdl_v8 tdl_load_i8(const int8_t *p)
{
#if defined(__AVX2__)
    return (tdl_v8)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#else
    tdl_v8 v;
    for (int u = 0; u < 8; u++) v[u] = (float)p[u];
    return v;
#endif
}

/* A second exact decoding of 8 stored values, by integer operations and no conversion
   instruction, for a lone row's product (F(cblock)): there the conversion is the bound (one
   vector of 8 values a cycle on the x86 host measured, vcvtph2ps for float16, vcvtdq2ps for
   int8), and decoding some of a row's vectors this way keeps other pipes busy.  Measured by
   benchmarks/one_row_decode.py (bare loops of the one-row block, l = 112, 14 vectors): at
   m = 5625 float16 26.9 us with 5 of 14 vectors by integer ops and int8 28.1 with 4, against
   35.4 and 34.0 by conversion alone and float32's 30.7 (read from L3); at m = 520 (in L2)
   2.40 and 2.61 against 3.24, 3.13 and float32's 2.22 (two loads a cycle).  3 to 7 of 14
   were tried: fewer leave the conversion the bound, more the integer pipes.

   * float16: the half's sign in bit 31 and its exponent and mantissa shifted up 13 places
     are the bits of a float equal to the half times 2^-112, exactly (a subnormal half
     becomes a float subnormal).  The caller multiplies by x * 2^112 instead of x: the
     product is the same real number, so the multiply-add rounds it to the same bits.  Valid
     for finite halves (stored atoms are), |x| < 2^16 (else x * 2^112 overflows: such a
     feature takes the conversion) and subnormal inputs not flushed to zero (MXCSR's DAZ
     clear: tdl_daz; with it set, a lone row takes the conversion alone).
   * int8: q + 2^23 + 128 as integer bits is the float 2^23 + 128 + q; less 2^23 + 128 it is
     q, exactly (integers below 2^24).  No condition. */
#if defined(__AVX2__) && defined(__FMA__)
#define TDL_INTDEC 1
static inline tdl_v8 tdl_load_f16_scaled(const uint16_t *p)
{
    const __m256i w = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)p));
    return (tdl_v8)_mm256_castsi256_ps(
        _mm256_and_si256(_mm256_slli_epi32(w, 13), _mm256_set1_epi32((int)0x8fffe000u)));
}

static inline tdl_v8 tdl_load_i8_int(const int8_t *p)
{
    const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return (tdl_v8)_mm256_sub_ps(
        _mm256_castsi256_ps(_mm256_add_epi32(w, _mm256_set1_epi32(0x4b000080))),
        _mm256_set1_ps(8388736.0f));
}

/* subnormal inputs read as zero (MXCSR's DAZ bit, set by some libraries for speed) */
static inline int tdl_daz(void) { return (_mm_getcsr() & 0x40) != 0; }
#else
#define TDL_INTDEC 0
#endif

/* whether vector v of a lone row's block over KIND is decoded by integer ops: float16 5 of
   14 (v = 0, 3, 6, 9, 12), int8 4 of 14 (v = 0, 4, 7, 11), spread through the row */
#define TDL_BY_INT(v, KIND) ((KIND) == 1 ? (5 * (v)) % 14 < 5 : (4 * (v)) % 14 < 4)

/* the bytes of one value of KIND (0: the compute type, of size r) */
#define TDL_ESIZE(KIND, r) ((KIND) == 1 ? 2L : (KIND) == 2 ? 1L : (long)(r))
#endif

/* VL values of KIND from element i of p on, as REAL (KIND 1 float16, 2 int8: the float
   instantiation only, VL = 8) */
static inline F(VEC) F(vload_as)(const void *p, long i, const int KIND)
{
    if (KIND == 1) return (F(VEC))tdl_load_f16((const uint16_t *)p + i);
    if (KIND == 2) return (F(VEC))tdl_load_i8((const int8_t *)p + i);
    return F(vload)((const REAL *)p + i);
}

/* acc + x * d with one rounding, the same in every block shape: explicit where the target
   has an FMA (GCC contracts a + b * c in some inlined variants of a loop and not in others:
   measured, the last atom of a 3-sample block rounded differently from the same atom of a
   lone sample), else two roundings (contraction is off for this file) */
static inline F(VEC) F(madd)(F(VEC) acc, F(VEC) x, F(VEC) d)
{
#if defined(__FMA__) && VBYTES == 32
    if (sizeof(REAL) == 4)
        return (F(VEC))_mm256_fmadd_ps((__m256)x, (__m256)d, (__m256)acc);
    return (F(VEC))_mm256_fmadd_pd((__m256d)x, (__m256d)d, (__m256d)acc);
#else
    return acc + x * d;
#endif
}

static inline F(VEC) F(splat)(REAL x)
{
#if defined(__AVX__) && VBYTES == 32
    if (sizeof(REAL) == 4) return (F(VEC))_mm256_set1_ps((float)x);
    return (F(VEC))_mm256_set1_pd((double)x);
#else
    return x - (F(VEC)){0};  /* a broadcast (x - 0 is x, -0 included) */
#endif
}

static inline REAL F(lanes)(F(VEC) a)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    REAL v[VL];
    __builtin_memcpy(v, &a, sizeof a);
    for (int w = VL / 2; w >= 1; w /= 2)   /* a fixed pairwise tree */
        for (int i = 0; i < w; i++) v[i] += v[i + w];
    return v[0];
}

/* a lone sample is bound by the transfer of DT (each value is used once): PFD rows ahead,
   its block's lines of DT are prefetched; where its atoms take two register blocks or
   more, chunks of LONE_CKC features, so that the blocks over a chunk read lines the first
   one brought in (measured at m=617, l=200: -15%; one block: no change).  8 rows ahead
   rather than 4: at m=5625, l=100 (DT in L3) a bare loop of this block ran 2.5% faster
   and a one-row partial_fit ~1%; at m=617 and 520 (DT in L2) no change */
#define PFD 8
#define LONE_CKC 32

/* NS samples x NV vectors of atoms over the features [t0, t1): x[s] the sample rows, dt the
   first DT column of the block (rows of ldt values of KIND), acc[s * lda + v * VL] the
   accumulators carried between calls; pfn > 0 (a lone sample): the pfn bytes from pf of the
   row PFD values of REAL's size ahead are prefetched (an address, never read: it may lie
   past DT's end); WRITE: each vector read is also stored, as REAL, at w + t * ldw + v * VL
   (a decoded tile the next blocks read); byint (a lone sample over stored atoms, not
   WRITE): the vectors TDL_BY_INT picks are decoded by integer ops (see tdl_load_f16_scaled) */
static inline __attribute__((always_inline)) void
F(cblock)(long t0, long t1, const REAL *const *x, const void *dt, long ldt, REAL *acc,
          long lda, const char *pf, long pfn, REAL *w, long ldw, const int NS, const int NV,
          const int KIND, const int WRITE, int byint)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    const long es = TDL_ESIZE(KIND, sizeof(REAL)), ahead = PFD * (long)sizeof(REAL) / es;
    F(VEC) A[6][14];
    (void)byint;  /* (unused where the target has no AVX2 and FMA) */
    for (int s = 0; s < NS; s++)
        for (int v = 0; v < NV; v++) A[s][v] = F(vload)(acc + s * lda + v * VL);
    for (long t = t0; t < t1; t++) {
        const void *row = KIND ? (const void *)((const char *)dt + t * ldt * es)
                               : (const void *)((const REAL *)dt + t * ldt);
        if (NS == 1 && pfn)
            for (long b = 0; b < pfn; b += 64)
                __builtin_prefetch((const void *)((uintptr_t)pf + (uintptr_t)(
                    ((t + ahead) * ldt) * es + b)));
        if (KIND && NS == 1) {  /* each decoded vector used at once: NV accumulators, the
                                   broadcast and one decoded vector fill the 16 registers
                                   (decoding all NV first spilled the accumulators) */
            const REAL xt = x[0][t];
            const F(VEC) xb = F(splat)(xt);
#if TDL_INTDEC
            if (!WRITE && byint && (KIND == 2 || (xt < (REAL)0x1p16 && xt > -(REAL)0x1p16))) {
                /* float16's integer-decoded values are 2^-112 times the atom's */
                const F(VEC) xs = KIND == 1 ? F(splat)(xt * (REAL)0x1p112) : xb;
                for (int v = 0; v < NV; v++) {
                    if (!TDL_BY_INT(v, KIND))
                        A[0][v] = F(madd)(A[0][v], xb, F(vload_as)(row, v * VL, KIND));
                    else if (KIND == 1)
                        A[0][v] = F(madd)(A[0][v], xs, (F(VEC))tdl_load_f16_scaled(
                                                           (const uint16_t *)row + v * VL));
                    else
                        A[0][v] = F(madd)(A[0][v], xb, (F(VEC))tdl_load_i8_int(
                                                           (const int8_t *)row + v * VL));
                }
                continue;
            }
#endif
            for (int v = 0; v < NV; v++) {
                const F(VEC) d = F(vload_as)(row, v * VL, KIND);
                if (WRITE) F(vstore)(w + t * ldw + v * VL, d);
                A[0][v] = F(madd)(A[0][v], xb, d);
            }
            continue;
        }
        F(VEC) dv[14];
        for (int v = 0; v < NV; v++) {
            dv[v] = F(vload_as)(row, v * VL, KIND);
            if (WRITE) F(vstore)(w + t * ldw + v * VL, dv[v]);
        }
        for (int s = 0; s < NS; s++) {
            const F(VEC) xb = F(splat)(x[s][t]);
            for (int v = 0; v < NV; v++) A[s][v] = F(madd)(A[s][v], xb, dv[v]);
        }
    }
    for (int s = 0; s < NS; s++)
        for (int v = 0; v < NV; v++) F(vstore)(acc + s * lda + v * VL, A[s][v]);
}

#define CB(NS_, NV_) \
    case (NS_) * 16 + (NV_): \
        F(cblock)(t0, t1, xs, dt, ldt, acc, lda, 0, 0, w, ldw, NS_, NV_, KIND, WRITE, 0); break;

/* the register block for ns samples (<= 6) and nv vectors (<= 12 / ns; 14 for a lone
   sample: 14 FMA chains and the broadcast fill the 16 AVX2 registers) */
static inline __attribute__((always_inline)) void
F(cblock_anyk)(long t0, long t1, const REAL *const *xs, const void *dt, long ldt, REAL *acc,
               long lda, int ns, int nv, REAL *w, long ldw, const int KIND, const int WRITE)
{
    switch (ns * 16 + nv) {
    CB(6, 2) CB(6, 1) CB(5, 2) CB(5, 1) CB(4, 3) CB(4, 2) CB(4, 1)
    CB(3, 4) CB(3, 3) CB(3, 2) CB(3, 1) CB(2, 6) CB(2, 5) CB(2, 4) CB(2, 3) CB(2, 2) CB(2, 1)
    CB(1, 14) CB(1, 13) CB(1, 12) CB(1, 11) CB(1, 10) CB(1, 9) CB(1, 8) CB(1, 7) CB(1, 6) CB(1, 5) CB(1, 4)
    CB(1, 3) CB(1, 2)
    default: F(cblock)(t0, t1, xs, dt, ldt, acc, lda, 0, 0, w, ldw, 1, 1, KIND, WRITE, 0);
    }
}
#undef CB

/* the register block over float atoms */
static void F(cblock_any)(long t0, long t1, const REAL *const *xs, const REAL *dt, long ldt,
                           REAL *acc, long lda, int ns, int nv)
{
    F(cblock_anyk)(t0, t1, xs, dt, ldt, acc, lda, ns, nv, 0, 0, 0, 0);
}

#define CB1(NV_) \
    case NV_: \
        F(cblock)(t0, t1, &x, dt, ldt, acc, 0, (const char *)dt, NV_ * VL * es, 0, 0, 1, NV_, \
                  KIND, 0, byint); \
        break;

/* a lone sample's block of nv <= 14 vectors (values of KIND), its lines of DT prefetched
   PFD rows of REAL ahead; byint: see F(cblock) */
static inline __attribute__((always_inline)) void
F(cblock1_anyk)(long t0, long t1, const REAL *x, const void *dt, long ldt, REAL *acc, int nv,
                const int KIND, int byint)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    const long es = TDL_ESIZE(KIND, sizeof(REAL));
    switch (nv) {
    CB1(14) CB1(13) CB1(12) CB1(11) CB1(10) CB1(9) CB1(8) CB1(7) CB1(6) CB1(5) CB1(4) CB1(3)
    CB1(2) default: F(cblock)(t0, t1, &x, dt, ldt, acc, 0, (const char *)dt, VL * es, 0, 0, 1, 1,
                              KIND, 0, byint);
    }
}
#undef CB1

/* a lone sample's block over float atoms (a function of its own, as the batch's) */
static void F(cblock1_any)(long t0, long t1, const REAL *x, const REAL *dt, long ldt,
                           REAL *acc, int nv)
{
    F(cblock1_anyk)(t0, t1, x, dt, ldt, acc, nv, 0, 0);
}

/* correlate's acc (lw values) for one sample x from DT of KIND: groups of at most 14
   vectors, as even as possible; chunks of LONE_CKC features where there are two groups or
   more (see PFD) */
static inline __attribute__((always_inline)) void
F(correlate1)(long m, const REAL *x, const void *DT, long ldt, REAL *acc, long nvec,
              const int KIND)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    const long es = TDL_ESIZE(KIND, sizeof(REAL));
    const long ng = (nvec + 13) / 14, nvb = (nvec + ng - 1) / ng;
    const long ckc = ng > 1 ? LONE_CKC : CKC;
#if TDL_INTDEC
    const int byint = KIND == 2 || (KIND == 1 && !tdl_daz());
#else
    const int byint = 0;
#endif
    for (long t0 = 0; t0 < m; t0 += ckc) {
        const long t1 = t0 + ckc < m ? t0 + ckc : m;
        for (long v0 = 0; v0 < nvec; v0 += nvb) {
            const int nv = nvec - v0 < nvb ? (int)(nvec - v0) : (int)nvb;
            if (!KIND)
                F(cblock1_any)(t0, t1, x, (const REAL *)DT + v0 * VL, ldt, acc + v0 * VL, nv);
            else
                F(cblock1_anyk)(t0, t1, x, (const char *)DT + v0 * VL * es, ldt, acc + v0 * VL,
                                nv, KIND, byint);
        }
    }
}

/* acc (nb rows of lw values, lw / VL vectors) += the products of the nb samples at X (rows
   at stride ldx) with the atoms of DT (values of KIND) over the features [t0, t1): blocks of
   up to 6 samples.  Stored atoms (KIND 1, 2): the first block also decodes them into the
   float tile w (rows of lw values, from feature t0 at row t0), as it reads them (the
   decoding overlaps its multiply-adds), and the blocks after it read the tile. */
static inline __attribute__((always_inline)) void
F(correlate_chunkk)(long nb, long t0, long t1, const REAL *X, long ldx, const void *DT,
                    long ldt, REAL *acc, long lw, REAL *w, const int KIND)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    const long nvec = lw / VL, es = TDL_ESIZE(KIND, sizeof(REAL));
    for (long s0 = 0; nvec && s0 < nb; s0 += 6) {  /* (no atoms: |x|^2 only) */
        const int ns = nb - s0 < 6 ? (int)(nb - s0) : 6;
        /* groups of at most 12 / ns vectors, as even as possible (13 vectors as 7 + 6, not
           12 + 1: a lone vector is one FMA chain, latency-bound) */
        const long cap = ns == 1 ? 14 : 12 / ns, ng = (nvec + cap - 1) / cap;
        const int nvb = (int)((nvec + ng - 1) / ng);
        const REAL *xs[6];
        for (int s = 0; s < ns; s++) xs[s] = X + (s0 + s) * ldx;
        for (long v0 = 0; v0 < nvec; v0 += nvb) {
            const int nv = nvec - v0 < nvb ? (int)(nvec - v0) : nvb;
            REAL *a = acc + s0 * lw + v0 * VL;
            if (!KIND)
                F(cblock_any)(t0, t1, xs, (const REAL *)DT + v0 * VL, ldt, a, lw, ns, nv);
            else if (!s0)
                F(cblock_anyk)(t0, t1, xs, (const char *)DT + v0 * VL * es, ldt, a, lw, ns, nv,
                               w + v0 * VL, lw, KIND, 1);
            else
                F(cblock_any)(t0, t1, xs, w + v0 * VL, lw, a, lw, ns, nv);
        }
    }
}

/* correlate_chunkk over float atoms */
static void F(correlate_chunk)(long nb, long t0, long t1, const REAL *X, long ldx,
                               const REAL *DT, long ldt, REAL *acc, long lw)
{
    F(correlate_chunkk)(nb, t0, t1, X, ldx, DT, ldt, acc, lw, 0, 0);
}

/* |x|^2 in a fixed order of its own: VL lanes stepping VL features at a time, the tail
   zero-padded into a last step, then the lane tree */
static REAL F(sqnorm)(long m, const REAL *x)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    F(VEC) a = {0}, b = {0};
    long t = 0;
    for (; t + 2 * VL <= m; t += 2 * VL) {
        const F(VEC) u = F(vload)(x + t), w = F(vload)(x + t + VL);
        a = F(madd)(a, u, u);
        b = F(madd)(b, w, w);
    }
    REAL tail[2 * VL];
    __builtin_memset(tail, 0, sizeof tail);
    __builtin_memcpy(tail, x + t, (unsigned long)(m - t) * sizeof(REAL));
    const F(VEC) u = F(vload)(tail), w = F(vload)(tail + VL);
    a = F(madd)(a, u, u);
    b = F(madd)(b, w, w);
    return F(lanes)(a + b);
}

/* The padded width of DT for l atoms: a whole number of vectors. */
long F(correlate_width)(long l)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    return (l + VL - 1) / VL * VL;
}

/* C[i * ldc + j] = X[i] . D[j] for i < n, j < l, in the fixed order above, from DT (m rows
   of ldt >= correlate_width(l) values: DT[t * ldt + j] = D[j, t]; the columns from l to
   correlate_width(l) are computed and dropped, so they need only be finite); X rows at
   stride ldx; xx[i] = |X[i]|^2 if xx.  acc: scratch of CSB * correlate_width(l) values
   (correlate_scratch(l)), any alignment.  C[i, j] does not depend on l: the correlations
   with atoms added later extend a row without changing it. */
void F(correlate)(long n, long l, long m, const REAL *X, long ldx, const REAL *DT, long ldt,
                  REAL *C, long ldc, REAL *xx, REAL *acc)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    const long lw = F(correlate_width)(l), nvec = lw / VL;
    for (long i0 = 0; i0 < n; i0 += CSB) {
        const long nb = n - i0 < CSB ? n - i0 : CSB;
        __builtin_memset(acc, 0, (unsigned long)(nb * lw) * sizeof(REAL));
        if (nb == 1 && nvec)
            F(correlate1)(m, X + i0 * ldx, DT, ldt, acc, nvec, 0);
        else for (long t0 = 0; t0 < m; t0 += CKC)
            F(correlate_chunk)(nb, t0, t0 + CKC < m ? t0 + CKC : m, X + i0 * ldx, ldx, DT, ldt,
                               acc, lw);
        for (long s = 0; s < nb; s++) {
            __builtin_memcpy(C + (i0 + s) * ldc, acc + s * lw, (unsigned long)l * sizeof(REAL));
            if (xx) xx[i0 + s] = F(sqnorm)(m, X + (i0 + s) * ldx);
        }
    }
}

/* The scratch values correlate needs for l atoms. */
long F(correlate_scratch)(long l) { return CSB * F(correlate_width)(l); }

/* The first non-finite value of X (n x m) as 1 + its flat index, or 0: a vector pass
   (x - x is 0 for every finite x, NaN otherwise), then a scalar one only to locate it. */
static long F(nonfinite)(long n, long m, const REAL *X)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    const long N = n * m;
    F(VEC) z = {0};
    long q = 0;
    for (; q + VL <= N; q += VL) {
        const F(VEC) v = F(vload)(X + q);
        z = z + (v - v);
    }
    REAL s = F(lanes)(z);
    for (; q < N; q++) s += X[q] - X[q];
    if (s == 0) return 0;
    for (q = 0; q < N; q++)
        if (!(X[q] - X[q] == 0)) return q + 1;
    return 0;
}

/* The nb rows of X (nb x m) standardized into xs, (x - mean) / scale (the rounding of
   NumPy's apply_stats), or X itself without statistics: the rows an encode correlates. */
static const REAL *F(standardized)(long nb, long m, const REAL *X, const REAL *mean,
                                   const REAL *scale, REAL *xs)
{
    if (!mean) return X;
    for (long s = 0; s < nb; s++) {
        const REAL *x = X + s * m;
        REAL *y = xs + s * m;
        for (long t = 0; t < m; t++) y[t] = (x[t] - mean[t]) / scale[t];
    }
    return xs;
}

/* Code the n rows of X (n x m, C order) on the bound dictionary p: check that X is finite,
   standardize each row (if p->mean: (x - mean) / scale, the rounding of NumPy's
   apply_stats), correlate it with the atoms and run Batch-OMP, CSB rows at a time, into idx
   and val (n rows of p->ldo values).  Returns the samples stopped early by a dependent atom
   (>= 0), or -(1 + i * m + t) for the first non-finite X[i, t] (then nothing is written). */
long F(encode)(const struct CAT(tdl_encode, SUF) *p, long n, const REAL *X, int *idx,
               REAL *val)
{
    const long m = p->m, l = p->l;
    const long bad = F(nonfinite)(n, m, X);
    if (bad) return -bad;
    long dep = 0;
    for (long i0 = 0; i0 < n; i0 += CSB) {
        const long nb = n - i0 < CSB ? n - i0 : CSB;
        const REAL *rows = F(standardized)(nb, m, X + i0 * m, p->mean, p->scale, p->xs);
        F(correlate)(nb, l, m, rows, m, p->DT, p->ldt, p->corr, l, p->xx, p->acc);
        dep += F(omp)(nb, l, p->k, p->ldo, p->corr, p->xx, p->G, p->ldg, p->tol2, p->eps, p->ows,
                      idx + i0 * p->ldo, val + i0 * p->ldo, p->nnz, p->resid);
    }
    return dep;
}
