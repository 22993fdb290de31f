/* Projections in a fixed order: the explicit residual of the streaming transform's Wp test
   (stream.c; the specification: hal/backends/numpy/basis.py).  Included by kernels.c once
   per type. */

/* Projections on orthonormal rows, with an optional Gram-Schmidt update in the same pass:
   p[j] = Q[j] . x (if x), and u -= h[j] Q[j] (if u), for j = 0 .. n-1, Q (n, m) row-major.
   Each p[j] is an independent dot product in a fixed order (4 vectors of VL lanes over the
   row, the tail zero-padded into the same vectors, a fixed reduction tree) that depends on
   nothing but Q[j] and x: not on n, on the other rows, on the pointers' alignment or on
   whether u is updated.  The streaming transform relies on this: the projection of the row
   after a joining one comes out of the joining row's Gram-Schmidt pass bit for bit as a
   separate call would give it, whatever the batch split.  Rows go in pairs (x and u are
   read once per pair); u's update depends on n only. */
typedef REAL F(VEC) __attribute__((vector_size(VBYTES)));

static inline F(VEC) F(vload)(const REAL *p)
{
    F(VEC) v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void F(vstore)(REAL *p, F(VEC) v) { __builtin_memcpy(p, &v, sizeof v); }

/* one step of 4 VL values at t: the dots of rows 0..R-1 with x, and u -= sum_r h_r q_r (in
   the order of r) */
#define PASS_STEP(LQ, LOADX, LOADU, STOREU)                                            \
    for (int c = 0; c < 4; c++) {                                                         \
        F(VEC) qv[4];                                                                    \
        for (int r = 0; r < R; r++) qv[r] = LQ(r, c);                                     \
        if (dox) {                                                                        \
            F(VEC) xv = LOADX(c);                                                        \
            for (int r = 0; r < R; r++) A[r][c] += qv[r] * xv;                            \
        }                                                                                 \
        if (dou) {                                                                        \
            F(VEC) uv = LOADU(c);                                                        \
            for (int r = 0; r < R; r++) uv = uv - hh[r] * qv[r];                          \
            STOREU(c, uv);                                                                \
        }                                                                                 \
    }

/* R <= 4 rows q[0..R-1] over the columns [t0, t1) (t1 == m: the row's tail, zero-padded into
   a whole step); their 4 accumulators each live in acc between calls.  A row's dot sees the
   same operations in the same order whatever R is. */
static inline __attribute__((always_inline)) void
F(pass)(long t0, long t1, const REAL *const *q, const REAL *x, REAL *u, const REAL *hh,
         F(VEC) (*acc)[4], const int R, const int dox, const int dou)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    long t = t0;
    /* the accumulators in registers for the whole chunk (through memory, each step would
       wait on a store-to-load forwarding) */
    F(VEC) A[4][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) A[r][c] = acc[r][c];
#define LQ(r, c) F(vload)(q[r] + t + (c) * VL)
#define LX(c) F(vload)(x + t + (c) * VL)
#define LU(c) F(vload)(u + t + (c) * VL)
#define SU(c, v) F(vstore)(u + t + (c) * VL, v)
    for (; t + 4 * VL <= t1; t += 4 * VL) {
        PASS_STEP(LQ, LX, LU, SU)
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
#define TQ(r, c) F(vload)(tq[r] + (c) * VL)
#define TX(c) F(vload)(tx + (c) * VL)
#define TU(c) F(vload)(tu + (c) * VL)
#define TSU(c, v) F(vstore)(tu + (c) * VL, v)
        PASS_STEP(TQ, TX, TU, TSU)
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

static inline REAL F(reduce)(const F(VEC) *acc)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    F(VEC) a = (acc[0] + acc[1]) + (acc[2] + acc[3]);
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
#define GROUP_CALL(RR)                                                                \
    do {                                                                                  \
        if (dox && dou) F(pass)(t0, t1, qs, x, u, hh, acc + j, RR, 1, 1);                \
        else if (dox) F(pass)(t0, t1, qs, x, u, hh, acc + j, RR, 1, 0);                  \
        else F(pass)(t0, t1, qs, x, u, hh, acc + j, RR, 0, 1);                           \
    } while (0)

static void F(group)(long g, long m, const REAL *Q, const REAL *x, REAL *p, const REAL *h,
                      REAL *u, const int dox, const int dou)
{
    enum { CH = PCHUNK / (int)sizeof(REAL) };
    F(VEC) acc[PGROUP][4];
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
            case 4: GROUP_CALL(4); break;
            case 3: GROUP_CALL(3); break;
            case 2: GROUP_CALL(2); break;
            default: GROUP_CALL(1); break;
            }
        }
    }
    if (dox)
        for (long j = 0; j < g; j++) p[j] = F(reduce)(acc[j]);
}

void F(project)(long n, long m, const REAL *Q, const REAL *x, REAL *p, const REAL *h,
                 REAL *u)
{
    if (!x && !u) return;
    for (long j0 = 0; j0 < n; j0 += PGROUP) {
        const long g = n - j0 < PGROUP ? n - j0 : PGROUP;
        F(group)(g, m, Q + j0 * m, x, x ? p + j0 : 0, u ? h + j0 : 0, u, x != 0, u != 0);
    }
}

#undef PASS_STEP
#undef GROUP_CALL
