/* Batch-OMP's iterations (the specification: hal/backends/numpy/omp.py).  Included by
   kernels.c once per type; see there for F, REAL and SQRT. */

/* vectors of OVL values, loaded and stored at any alignment */
#define OVL ((long)(32 / sizeof(REAL)))
typedef REAL F(ovec) __attribute__((vector_size(32), aligned(sizeof(REAL))));

/* acc[0 .. NV OVL) = g + sum_{s < t} RU[s] Y[s * l + .] (s ascending, each column a sum of
   its own): NV vectors of independent sums held in registers across s, enough of them to
   hide the multiply-add latency */
static inline __attribute__((always_inline)) void
F(ysum)(REAL *acc, const REAL *g, const REAL *Y, long l, long t, const REAL *RU, const int NV)
{
    F(ovec) A[8];
    for (int v = 0; v < NV; v++) A[v] = *(const F(ovec) *)(g + v * OVL);
    for (long s = 0; s < t; s++) {
        const F(ovec) r = (F(ovec)){0} + RU[s];
        const REAL *Ys = Y + s * l;
        for (int v = 0; v < NV; v++) A[v] += r * *(const F(ovec) *)(Ys + v * OVL);
    }
    for (int v = 0; v < NV; v++) *(F(ovec) *)(acc + v * OVL) = A[v];
}

#define YS(NV_) case NV_: F(ysum)(acc, g, Y, l, t, RU, NV_); break;
static void F(ysum_any)(REAL *acc, const REAL *g, const REAL *Y, long l, long t,
                        const REAL *RU, int nv)
{
    switch (nv) { YS(1) YS(2) YS(3) YS(4) YS(5) YS(6) YS(7) default: F(ysum)(acc, g, Y, l, t, RU, 8); }
}
#undef YS


/* Batch-OMP of n samples from their correlations alpha0 = D x (rows of corr, length l),
   the Gram matrix G = D D^T (l x l, row-major, rows ldg >= l apart) and |x|^2 (xx), in the scaled-direction form
   of the specification (hal/backends/numpy/omp.py): Y[t] = b_t (G[j_t] - sum_s rho_s u_s Y[s]),
   c -= Y[t], coefficients by one back substitution at the end.
   Outputs: idx/val (n rows of ldo >= k values, row-major; -1 / 0 pad each row past its
   non-zeros), nnz, resid
   (squared residual norm).  tol2 < 0: no tolerance; else stop once |r|^2 <= tol2 |x|^2.
   ws: l + k*l + k*k + 4*k scratch values.  Returns the number of samples stopped by a
   dependent atom while a residual above rounding level was left (the caller warns). */
long F(omp)(long n, long l, long k, long ldo, const REAL *corr, const REAL *xx,
             const REAL *G, long ldg, REAL tol2, REAL eps, REAL *ws, int *idx, REAL *val,
             int *nnz, REAL *resid)
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
    const REAL ctol = tiny * tiny;
    for (long i = 0; i < n; i++) {
        const REAL *a0 = corr + i * l;
        int *J = idx + i * ldo;
        REAL *v = val + i * ldo;
        for (long t = 0; t < ldo; t++) { J[t] = -1; v[t] = 0; }
        const REAL x2 = xx[i];
        REAL proj = 0;           /* sum_t b_t c_j(t) = |projection|^2 */
        long T = 0;
        const REAL limit = tol2 >= 0 ? x2 * tol2 : 0;
        /* an all-zero sample takes no atom; under a tolerance, nor does one already within */
        if (x2 > 0 && !(tol2 >= 0 && !(x2 > limit))) {
            /* counted only clearly above rounding: see the specification */
            const REAL noise = x2 * SQRT(eps);
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
                const REAL gj = G[j * ldg + j];
                /* the best correlation at rounding level: the residual is orthogonal to
                   every atom - x is represented (stop silently), or what is left lies
                   outside the atoms' span (rank-deficient: count it) - and a further atom
                   would be fitted to rounding noise */
                if (cj * cj <= x2 * gj * ctol) {
                    if (x2 - proj > noise) dependent++;
                    break;
                }
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
                const REAL *Gj = G + j * ldg;
                /* Y[t] = b (G[j] + sum_s RU[s] Y[s]) in blocks of QB columns held in
                   registers across the sum (one pass over each Y[s], one store of Y[t]);
                   the last l - q0 < QB columns in a block of as many vectors as they need
                   (G's values copied, zero-padded; Y[s] read up to a vector past its end:
                   within the scratch, the extra sums dropped) */
                long q0 = 0;
                for (; q0 + QB <= l; q0 += QB) {
                    REAL acc[QB];
                    F(ysum)(acc, Gj + q0, Y + q0, l, t, RU, QB / OVL);
                    for (long q = 0; q < QB; q++) {
                        Yt[q0 + q] = acc[q] * b;
                        c[q0 + q] -= acc[q] * b;
                    }
                }
                if (q0 < l) {
                    const long w = l - q0;
                    REAL acc[QB], g[QB];
                    for (long q = 0; q < QB; q++) g[q] = q < w ? Gj[q0 + q] : 0;
                    F(ysum_any)(acc, g, Y + q0, l, t, RU, (int)((w + OVL - 1) / OVL));
                    for (long q = 0; q < w; q++) {
                        Yt[q0 + q] = acc[q] * b;
                        c[q0 + q] -= acc[q] * b;
                    }
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
