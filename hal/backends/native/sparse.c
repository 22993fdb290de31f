/* The k-sparse products of compact codes (the specification: hal/backends/numpy/sparse.py).
   Included by kernels.c once per type. */

/* 0 if every index lies in [-1, rows), else 1 + the flat position of the first that does
   not (checked before anything is read or written through them) */
static long F(bad_index)(long nk, const int *idx, long rows)
{
    for (long p = 0; p < nk; p++)
        if (idx[p] < -1 || idx[p] >= rows) return p + 1;
    return 0;
}

/* out[i, :] = sum_t val[i, t] * W[idx[i, t], :] (idx < 0: nothing); W is (rows, q). */
long F(gather)(long n, long k, long q, long rows, const int *idx, const REAL *val,
                const REAL *W, REAL *out)
{
    long bad = F(bad_index)(n * k, idx, rows);
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
long F(scatter)(long n, long k, long q, long rows, const int *idx, const REAL *val,
                 const REAL *dy, REAL beta, REAL *out)
{
    long bad = F(bad_index)(n * k, idx, rows);
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
long F(layer_fwd)(long n, long k, long q, long rows, const int *idx, const REAL *val,
                   const REAL *W, const REAL *b, REAL *out)
{
    long bad = F(gather)(n, k, q, rows, idx, val, W, out);
    if (bad) return bad;
    for (long i = 0; i < n; i++)
        for (long c = 0; c < q; c++) out[i * q + c] += b[c];
    return 0;
}

/* ... and backward: gW = codes^T dy, gb = sum_i dy[i] (rows in order) */
long F(layer_bwd)(long n, long k, long q, long rows, const int *idx, const REAL *val,
                   const REAL *dy, REAL *gW, REAL *gb)
{
    long bad = F(scatter)(n, k, q, rows, idx, val, dy, 0, gW);
    if (bad) return bad;
    for (long c = 0; c < q; c++) gb[c] = 0;
    for (long i = 0; i < n; i++)
        for (long c = 0; c < q; c++) gb[c] += dy[i * q + c];
    return 0;
}
