/* The learner's one-sample predict in one call: encode (finiteness check, the learner's
   standardization, the fixed-order correlations, Batch-OMP: correlate.c's F(encode)), the
   code scale, the network's first layer on the compact codes (sparse.c's F(layer_fwd)), its
   dense and activation layers, and the argmax of the outputs.  Included by kernels.c once
   per type, after correlate.c.  The specification is tinydl/onesample.py's NumPy path: the
   same codes and first layer bit for bit; the dense layers sum in order of the input units
   (NumPy's ?gemv may not) and tanh is libm's, so later outputs agree to rounding only. */

/* the dense and activation layers after the first (kind: TDL_DENSE, TDL_RELU, TDL_TANH,
   TDL_SIGMOID; an activation works in place on the previous layer's buffer) */
static void F(dense1)(long n_in, long q, const REAL *h, const REAL *W, const REAL *b, REAL *y)
{
    for (long c = 0; c < q; c++) y[c] = 0;
    for (long j = 0; j < n_in; j++) {
        const REAL a = h[j];
        const REAL *Wr = W + j * q;
        for (long c = 0; c < q; c++) y[c] += a * Wr[c];
    }
    for (long c = 0; c < q; c++) y[c] += b[c];
}

/* Predict one raw sample x (p->enc->m values): codes into idx/val (p->enc->ldo each, scaled
   by p->code_scale), the layers' outputs into their buffers (the last is p->layers[nl-1].y).
   Returns the index of the largest output (the first of equals; a NaN output wins, as in
   NumPy's argmax), or -(1 + t) for the first non-finite x[t] (nothing written).  p->dep
   receives encode's count of samples stopped early (0 or 1). */
long F(predict1)(struct CAT(tdl_predict, SUF) *p, const REAL *x, int *idx, REAL *val)
{
    const struct CAT(tdl_encode, SUF) *e = p->enc;
    const long dep = F(encode)(e, 1, x, idx, val);
    if (dep < 0) return dep;
    p->dep = dep;
    const long kc = e->ldo;
    for (long t = 0; t < kc; t++) val[t] *= p->code_scale;
    const struct CAT(tdl_layer, SUF) *L = p->layers;
    if (F(layer_fwd)(1, kc, L[0].n_out, L[0].n_in, idx, val, L[0].W, L[0].b, L[0].y))
        return -(1 + e->m);  /* an index OMP cannot write: refused, never reached */
    const REAL *h = L[0].y;
    long q = L[0].n_out;
    for (long i = 1; i < p->n_layers; i++) {
        REAL *y = L[i].y;
        q = L[i].n_out;
        switch (L[i].kind) {
        case 0: F(dense1)(L[i].n_in, q, h, L[i].W, L[i].b, y); break;
        case 1: for (long c = 0; c < q; c++) y[c] = h[c] < 0 ? 0 : h[c]; break;
        case 2: for (long c = 0; c < q; c++) y[c] = (REAL)tanh((double)h[c]); break;
        default:  /* sigmoid as the layer computes it: (tanh(x / 2) + 1) / 2 */
            for (long c = 0; c < q; c++)
                y[c] = ((REAL)tanh((double)(h[c] * (REAL)0.5)) + 1) * (REAL)0.5;
        }
        h = y;
    }
    long best = 0;
    for (long c = 0; c < q; c++) {
        if (h[c] != h[c]) return c;
        if (h[c] > h[best]) best = c;
    }
    return best;
}

/* predict1 with the plan and the codes' arrays bound (b): the learner's prepared one-sample
   predict (tinydl/onesample.py) in a two-argument call (cffi's ABI mode costs ~0.1 us an
   argument). */
long F(predict1b)(const struct CAT(tdl_predict1, SUF) *b, const REAL *x)
{
    return F(predict1)(b->p, x, b->idx, b->val);
}
