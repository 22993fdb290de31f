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

/* Wp^2 of the row x against the first n atoms; c (n) and z (n) are left for the join or the
   code; *xx gets |x|^2.  refine2: the explicit residual below this Wp^2. */
static REAL F(wp2_row)(const struct CAT(tdl_stream, SUF) *s, long n, const REAL *x, REAL *xx)
{
    const long m = s->m, lb = s->lb;
    REAL *c = s->c, *z = s->z;
    const REAL x2 = F(sqnorm)(m, x);
    *xx = x2;
    if (!(x2 > 0)) return 0;            /* a zero sample: Wp = 0, it never joins */
    if (n == 0) return 1;               /* line 8 of Algorithm 2 */
    F(correlate)(1, n, m, x, m, s->DT, s->ldt, c, n, 0, s->acc);
    REAL pp = 0;
    for (long i = 0; i < n; i++) {
        const REAL *Lr = s->Li + i * lb;
        REAL a = 0;
        for (long j = 0; j <= i; j++) a += Lr[j] * c[j];
        z[i] = a;
        pp += a * a;
    }
    REAL wp2 = 1 - pp / x2;
    if (wp2 < s->refine2) {             /* explicit residual x - D^T (Li^T z) */
        REAL *w = s->w, *r = s->r;
        for (long j = 0; j < n; j++) {
            REAL a = 0;
            for (long i = j; i < n; i++) a += z[i] * s->Li[i * lb + j];
            w[j] = a;
        }
        for (long t = 0; t < m; t++) r[t] = x[t];
        F(project)(n, m, s->D, 0, 0, w, r);
        wp2 = F(sqnorm)(m, r) / x2;
    }
    return wp2 < 0 ? 0 : (wp2 > 1 ? 1 : wp2);
}

/* Append the row x (|x|^2 = xx, Wp^2 = wp2 > 0, c and z from wp2_row) as atom n. */
static void F(join)(const struct CAT(tdl_stream, SUF) *s, long n, const REAL *x, REAL xx,
                    REAL wp2)
{
    const long m = s->m, lb = s->lb, ldt = s->ldt;
    const REAL norm = SQRT(xx);
    REAL *d = s->D + n * m;
    for (long t = 0; t < m; t++) {
        d[t] = x[t] / norm;
        s->DT[t * ldt + n] = d[t];
    }
    REAL *G = s->G, *Li = s->Li, *h = s->w;
    for (long j = 0; j < n; j++) {
        G[n * lb + j] = G[j * lb + n] = s->c[j] / norm;
        h[j] = s->z[j] / norm;
    }
    G[n * lb + n] = F(sqnorm)(m, d);
    const REAL lnn = SQRT(wp2);
    for (long j = 0; j < n; j++) {
        REAL a = 0;
        for (long i = j; i < n; i++) a += h[i] * Li[i * lb + j];
        Li[n * lb + j] = -a / lnn;
    }
    for (long j = n + 1; j < lb; j++) Li[n * lb + j] = 0;
    Li[n * lb + n] = 1 / lnn;
}

/* Algorithm 2 on the N standardized rows of X (N x m) from n atoms, at most lmax: codes into
   idx/val (rows of ldo; a joining row gets its new atom and |x|), the Wp threshold thr.
   Returns the atoms after the batch; s->dep gets the samples OMP stopped early. */
long F(stream)(struct CAT(tdl_stream, SUF) *s, long n, long lmax, long N, const REAL *X,
               REAL thr, int *idx, REAL *val)
{
    const long m = s->m, ldo = s->ldo;
    long dep = 0;
    for (long i = 0; i < N; i++) {
        const REAL *x = X + i * m;
        int *J = idx + i * ldo;
        REAL *V = val + i * ldo;
        if (n >= lmax) {                /* full: nothing can join, plain OMP for the rest */
            const long kk = s->k < n ? s->k : n;
            for (long i0 = i; i0 < N; i0 += CSB) {
                const long nb = N - i0 < CSB ? N - i0 : CSB;
                F(correlate)(nb, n, m, X + i0 * m, m, s->DT, s->ldt, s->corr, n, s->xx, s->acc);
                dep += F(omp)(nb, n, kk, ldo, s->corr, s->xx, s->G, s->lb, s->tol2, s->eps,
                              s->ows, idx + i0 * ldo, val + i0 * ldo, s->nnz, s->resid);
            }
            break;
        }
        REAL xx;
        const REAL wp2 = F(wp2_row)(s, n, x, &xx);
        if (SQRT(wp2) > thr) {
            F(join)(s, n, x, xx, wp2);
            for (long t = 0; t < ldo; t++) { J[t] = -1; V[t] = 0; }
            J[0] = (int)n;
            V[0] = SQRT(xx);
            n++;
        } else if (n == 0) {            /* an empty dictionary codes everything as zero */
            for (long t = 0; t < ldo; t++) { J[t] = -1; V[t] = 0; }
        } else {
            const long kk = s->k < n ? s->k : n;
            dep += F(omp)(1, n, kk, ldo, s->c, &xx, s->G, s->lb, s->tol2, s->eps, s->ows, J,
                          V, s->nnz, s->resid);
        }
    }
    s->dep = dep;
    return n;
}

/* Wp of each of the N standardized rows of X against the first n atoms (always with the
   explicit residual where the difference cancels) into out. */
void F(wp_rows)(struct CAT(tdl_stream, SUF) *s, long n, long N, const REAL *X, REAL *out)
{
    for (long i = 0; i < N; i++) {
        REAL xx;
        out[i] = SQRT(F(wp2_row)(s, n, X + i * s->m, &xx));
    }
}
