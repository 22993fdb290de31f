/* The streaming transform (TinyDL's Algorithm 2) on a batch of standardized rows: the Wp
   test, the joins and the OMP codes, one row after the other, in one call.  Included by
   kernels.c once per type, after basis.c and correlate.c.  The specification is
   hal/backends/numpy/basis.py (BasisWorkspace.run).

   State (struct tdl_stream_*): the atoms D (lb rows of m), their transpose DT (m rows of
   ldt, the layout correlate reads), the Gram matrix G = D D^T (lb x lb) and Li, the inverse
   of G's Cholesky factor L (G[:n, :n] = L L^T, lower triangular, lb x lb).  For a row x with
   correlations c = D[:n] x (correlate, fixed order) and z = Li[:n, :n] c:

       Wp^2 = 1 - |z|^2 / |x|^2,

   or, where that difference cancels (Wp^2 below refine2), the explicit residual
   |x - D^T w|^2 / |x|^2 with w = Li^T z (project, fixed order).  One pass over the atoms per
   row serves the test and, when the row does not join, its OMP code (the same c).  A join
   appends D[n] = x / |x|, its column of DT, G's row and column (c / |x|, and d . d) and Li's
   row: with h = z / |x| (L's new row) and L[n, n] = Wp (the row's own Wp, >= alpha, so L stays
   well conditioned), Li[n, :n] = -(h Li[:n, :n]) / Wp and Li[n, n] = 1 / Wp.  Every value
   depends only on the row and the state at its time: the results do not depend on the
   batch split.  Once n = lmax the rest of the batch is coded in blocks (encode's path). */

/* a . b over n values in a fixed order of its own (VL lanes, the tail zero-padded, the lane
   tree): the triangular products below, vectorized */
static REAL F(dotv)(long n, const REAL *a, const REAL *b)
{
    enum { VL = (int)(VBYTES / sizeof(REAL)) };
    F(VEC) acc = {0};
    long t = 0;
    for (; t + VL <= n; t += VL) acc = F(madd)(acc, F(vload)(a + t), F(vload)(b + t));
    if (t < n) {
        REAL ta[VL], tb[VL];
        __builtin_memset(ta, 0, sizeof ta);
        __builtin_memset(tb, 0, sizeof tb);
        __builtin_memcpy(ta, a + t, (unsigned long)(n - t) * sizeof(REAL));
        __builtin_memcpy(tb, b + t, (unsigned long)(n - t) * sizeof(REAL));
        acc = F(madd)(acc, F(vload)(ta), F(vload)(tb));
    }
    return F(lanes)(acc);
}

/* Wp^2 of the row x (|x|^2 = x2) against the first n atoms from its correlations c (n
   values); z (n) is left for a join.  refine2: the explicit residual below this Wp^2. */
static REAL F(wp2_of)(const struct CAT(tdl_stream, SUF) *s, long n, const REAL *x, REAL x2,
                      const REAL *c)
{
    const long m = s->m, lb = s->lb;
    REAL *z = s->z;
    if (!(x2 > 0)) return 0;            /* a zero sample: Wp = 0, it never joins */
    if (n == 0) return 1;               /* line 8 of Algorithm 2 */
    REAL pp = 0;
    for (long i = 0; i < n; i++) {      /* z = Li c (Li lower triangular) */
        z[i] = F(dotv)(i + 1, s->Li + i * lb, c);
        pp += z[i] * z[i];
    }
    REAL wp2 = 1 - pp / x2;
    if (wp2 < s->refine2) {             /* explicit residual x - D^T (Li^T z) */
        REAL *w = s->w, *r = s->r;
        for (long j = 0; j < n; j++) w[j] = 0;
        for (long i = 0; i < n; i++)    /* w += z_i Li[i, :i + 1], i ascending */
            for (long j = 0; j <= i; j++) w[j] += z[i] * s->Li[i * lb + j];
        for (long t = 0; t < m; t++) r[t] = x[t];
        F(project)(n, m, s->D, 0, 0, w, r);
        wp2 = F(sqnorm)(m, r) / x2;
    }
    return wp2 < 0 ? 0 : (wp2 > 1 ? 1 : wp2);
}

/* Append the row x (|x|^2 = xx, Wp^2 = wp2 > 0, its correlations c and z from wp2_of) as
   atom n. */
static void F(join)(const struct CAT(tdl_stream, SUF) *s, long n, const REAL *x, REAL xx,
                    REAL wp2, const REAL *c)
{
    const long m = s->m, lb = s->lb, ldt = s->ldt;
    const REAL norm = SQRT(xx);
    REAL *d = s->D + n * m;
    for (long t = 0; t < m; t++) {
        d[t] = x[t] / norm;
        s->DT[t * ldt + n] = d[t];
    }
    REAL *G = s->G, *Li = s->Li, *h = s->w, *row = Li + n * lb;
    for (long j = 0; j < n; j++) {
        G[n * lb + j] = G[j * lb + n] = c[j] / norm;
        h[j] = s->z[j] / norm;
    }
    G[n * lb + n] = F(sqnorm)(m, d);
    const REAL lnn = SQRT(wp2);
    for (long j = 0; j < lb; j++) row[j] = 0;
    for (long i = 0; i < n; i++)        /* row[:n] = h Li[:n, :n], i ascending */
        for (long j = 0; j <= i; j++) row[j] += h[i] * Li[i * lb + j];
    for (long j = 0; j < n; j++) row[j] = -row[j] / lnn;
    row[n] = 1 / lnn;
}

/* Algorithm 2 on the N standardized rows of X (N x m) from n atoms, at most lmax: codes into
   idx/val (rows of ldo; a joining row gets its new atom and |x|), the Wp threshold thr.
   Rows go CSB at a time: their correlations with the atoms present come from one blocked
   call, and after a join each later row of the block gets only its correlations with the
   new atoms (every value in the fixed order: the same bits as one row at a time).
   Returns the atoms after the batch; s->dep gets the samples OMP stopped early. */
long F(stream)(struct CAT(tdl_stream, SUF) *s, long n, long lmax, long N, const REAL *X,
               REAL thr, int *idx, REAL *val)
{
    const long m = s->m, ldo = s->ldo, lb = s->lb;
    long dep = 0;
    for (long i0 = 0; i0 < N; i0 += CSB) {
        const long nb = N - i0 < CSB ? N - i0 : CSB;
        if (n >= lmax) {                /* full: nothing can join, plain OMP for the rest */
            const long kk = s->k < n ? s->k : n;
            for (long j0 = i0; j0 < N; j0 += CSB) {
                const long mb = N - j0 < CSB ? N - j0 : CSB;
                F(correlate)(mb, n, m, X + j0 * m, m, s->DT, s->ldt, s->corr, n, s->xx,
                             s->acc);
                dep += F(omp)(mb, n, kk, ldo, s->corr, s->xx, s->G, s->lb, s->tol2, s->eps,
                              s->ows, idx + j0 * ldo, val + j0 * ldo, s->nnz, s->resid);
            }
            break;
        }
        /* the block's correlations with the n0 atoms present (rows lb apart), and |x|^2 */
        const long n0 = n;
        F(correlate)(nb, n0, m, X + i0 * m, m, s->DT, s->ldt, s->corr, lb, s->xx, s->acc);
        for (long r = 0; r < nb; r++) {
            const long i = i0 + r;
            const REAL *x = X + i * m;
            REAL *c = s->corr + r * lb;
            int *J = idx + i * ldo;
            REAL *V = val + i * ldo;
            const REAL xx = s->xx[r];
            if (n > n0)                 /* atoms that joined since: their correlations */
                F(correlate)(1, n - n0, m, x, m, s->DT + n0, s->ldt, c + n0, lb, 0, s->acc);
            if (n >= lmax) {            /* filled within this block */
                const long kk = s->k < n ? s->k : n;
                dep += F(omp)(1, n, kk, ldo, c, &xx, s->G, lb, s->tol2, s->eps, s->ows, J, V,
                              s->nnz, s->resid);
                continue;
            }
            const REAL wp2 = F(wp2_of)(s, n, x, xx, c);
            if (SQRT(wp2) > thr) {
                F(join)(s, n, x, xx, wp2, c);
                for (long t = 0; t < ldo; t++) { J[t] = -1; V[t] = 0; }
                J[0] = (int)n;
                V[0] = SQRT(xx);
                n++;
            } else if (n == 0) {        /* an empty dictionary codes everything as zero */
                for (long t = 0; t < ldo; t++) { J[t] = -1; V[t] = 0; }
            } else {
                const long kk = s->k < n ? s->k : n;
                dep += F(omp)(1, n, kk, ldo, c, &xx, s->G, lb, s->tol2, s->eps, s->ows, J, V,
                              s->nnz, s->resid);
            }
        }
    }
    s->dep = dep;
    return n;
}

/* stream on raw rows: nothing is done (and -(1 + i * m + t) returned) if X[i, t] is the
   first non-finite value; else each row is standardized into s->xs (if s->mean: (x - mean) /
   scale, NumPy's rounding) and the batch streamed as above.  N <= s->xs_rows. */
long F(stream_raw)(struct CAT(tdl_stream, SUF) *s, long n, long lmax, long N, const REAL *X,
                   REAL thr, int *idx, REAL *val)
{
    const long m = s->m;
    const long bad = F(nonfinite)(N, m, X);
    if (bad) return -bad;
    if (N > s->xs_rows) return -(N * m + 1);
    X = F(standardized)(N, m, X, s->mean, s->scale, s->xs);
    return F(stream)(s, n, lmax, N, X, thr, idx, val);
}

/* stream_raw from n atoms with its other arguments bound in the state (s->lmax, s->thr,
   the codes into s->bidx / s->bval): the call of a stream fed a row at a time, whose codes
   nobody reads (partial_fit).  Four arguments instead of eight: a foreign call through
   cffi's ABI mode costs per argument (~0.1 us each, measured), which is a tenth of a
   small row's work. */
long F(stream_bound)(struct CAT(tdl_stream, SUF) *s, long n, long N, const REAL *X)
{
    return F(stream_raw)(s, n, s->lmax, N, X, s->thr, s->bidx, s->bval);
}

/* one raw row X's standardization (into xs), its n correlations (corr) and |x|^2 (xx[0]),
   the steps stream1 and encode1 share; returns the count of its non-finite values, 0 for a
   finite row.  A finite |x|^2 means a finite row (a NaN or Inf makes the sum of squares NaN
   or Inf), so the scan of X (a second pass over it: 22 KB at m = 5625) runs only where
   |x|^2 is not finite - then as encode's, before anything is written to the codes. */
static inline long F(row_correlations)(long m, long n, const REAL *X, const REAL *mean,
                                       const REAL *scale, REAL *xs, const REAL *DT, long ldt,
                                       REAL *corr, REAL *xx, REAL *acc)
{
    const REAL *x = F(standardized)(1, m, X, mean, scale, xs);
    F(correlate)(1, n, m, x, m, DT, ldt, corr, n, xx, acc);
    return xx[0] - xx[0] == 0 ? 0 : F(nonfinite)(1, m, X);
}

/* stream_bound of one raw row in the steady state (s->lmax atoms: no Wp test, nothing
   joins: the row's standardization, finiteness check and OMP code, into s->bidx / s->bval):
   a one-row partial_fit once the dictionary is full, in a two-argument call.  Returns, as
   encode1 does, 1 if OMP stopped early on it (s->dep), else 0, or a negative number
   (nothing done) for a non-finite row. */
long F(stream1)(struct CAT(tdl_stream, SUF) *s, const REAL *X)
{
    /* stream's steady state (n >= lmax) for one row, with the finiteness check after the
       correlations as in encode1 */
    const long m = s->m, n = s->lmax, kk = s->k < n ? s->k : n;
    const long bad = F(row_correlations)(m, n, X, s->mean, s->scale, s->xs, s->DT, s->ldt,
                                         s->corr, s->xx, s->acc);
    if (bad) return -bad;
    s->dep = F(omp)(1, n, kk, s->ldo, s->corr, s->xx, s->G, s->lb, s->tol2, s->eps, s->ows,
                    s->bidx, s->bval, s->nnz, s->resid);
    return s->dep;
}

/* encode of one raw row with the plan and the codes' arrays bound (b): the one-row
   partial_fit of a stream whose steady state runs on the execution kernels
   (hal/backends/numpy/basis.py), in a two-argument call (cffi's ABI mode costs ~0.1 us an
   argument).  Returns encode's value. */
long F(encode1)(const struct CAT(tdl_encode1, SUF) *b, const REAL *X)
{
    /* encode's steps for one row, with its finiteness check after the correlations */
    const struct CAT(tdl_encode, SUF) *p = b->p;
    const long m = p->m, l = p->l;
    const long bad = F(row_correlations)(m, l, X, p->mean, p->scale, p->xs, p->DT, p->ldt,
                                         p->corr, p->xx, p->acc);
    if (bad) return -bad;
    return F(omp)(1, l, p->k, p->ldo, p->corr, p->xx, p->G, p->ldg, p->tol2, p->eps, p->ows,
                  b->idx, b->val, p->nnz, p->resid);
}

/* Wp of each of the N standardized rows of X against the first n atoms (always with the
   explicit residual where the difference cancels) into out. */
void F(wp_rows)(struct CAT(tdl_stream, SUF) *s, long n, long N, const REAL *X, REAL *out)
{
    for (long i = 0; i < N; i++) {
        const REAL *x = X + i * s->m;
        REAL xx;
        if (n) F(correlate)(1, n, s->m, x, s->m, s->DT, s->ldt, s->c, n, &xx, s->acc);
        else xx = F(sqnorm)(s->m, x);
        out[i] = SQRT(F(wp2_of)(s, n, x, xx, s->c));
    }
}
