/* The streaming transform's basis: the one-row Wp test and the atom append (the
   specification: hal/backends/numpy/basis.py).  Included by kernels.c once per type. */

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

/* a dot product in project's fixed order */
static REAL F(dot)(long m, const REAL *a, const REAL *b)
{
    REAL r;
    F(group)(1, m, a, b, &r, 0, 0, 1, 0);
    return r;
}

static REAL F(sumsq)(long n, const REAL *p)
{
    REAL s = 0;
    for (long j = 0; j < n; j++) s += p[j] * p[j];
    return s;
}

/* The projection-error inputs of one row x against the basis Q[:n]: p = Q[:n] x, and
   out2 = (|x|^2, |p|^2); the caller forms Wp^2 = 1 - |p|^2 / |x|^2. */
void F(wp_row)(long n, long m, const REAL *Q, const REAL *x, REAL *p, REAL *out2)
{
    if (n) F(project)(n, m, Q, x, p, 0, 0);
    out2[0] = F(dot)(m, x, x);
    out2[1] = F(sumsq)(n, p);
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
long F(append)(long n, long m, long lb, const REAL *a, const REAL *proj, const REAL *x,
                REAL *D, REAL *Q, REAL *L, REAL *G, REAL *p, REAL *out, REAL *ws)
{
    REAL *u = ws, *h = ws + m, *h2 = h + lb;
    const REAL norm = SQRT(F(dot)(m, a, a));
    REAL *d = D + n * m;
    for (long t = 0; t < m; t++) {
        d[t] = a[t] / norm;
        u[t] = d[t];
    }
    long reorth = 0;
    const REAL dd = F(dot)(m, d, d);
    if (n) {
        if (proj) for (long j = 0; j < n; j++) h[j] = proj[j] / norm;
        else F(project)(n, m, Q, u, h, 0, 0);
        F(project)(n, m, Q, x, x ? p : 0, h, u);
        if (F(dot)(m, u, u) < (REAL)0.5 * dd) {
            F(project)(n, m, Q, u, h2, 0, 0);
            F(project)(n, m, Q, 0, 0, h2, u);
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
    const REAL unorm = SQRT(F(dot)(m, u, u));
    L[n * lb + n] = unorm;
    REAL *q = Q + n * m;
    for (long t = 0; t < m; t++) q[t] = u[t] / unorm;
    out[0] = norm;
    if (x) {
        p[n] = F(dot)(m, q, x);
        out[1] = F(dot)(m, x, x);
        out[2] = F(sumsq)(n + 1, p);
    }
    return reorth;
}

#undef PASS_STEP
#undef GROUP_CALL
