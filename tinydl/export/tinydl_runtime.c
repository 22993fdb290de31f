/* tinydl's exported inference kernels (C99, no malloc, no libm beyond sqrtf/expf).

   Written by tinydl.export; the model file (tinydl_model.c) holds the weights (const: flash)
   and every working buffer (static, sized at export) and calls these kernels.  Only the
   kernels the model needs are compiled: tinydl_config.h defines TDL_NEED_<KERNEL>.

   Weights are a tdl_mat: float rows (f), or int8 rows (q) times one float scale per row
   (s: the per-channel scale); products accumulate in float either way. */
#include "tinydl_runtime.h"

#include <string.h>

#if defined(TDL_NEED_I8)
/* int8 -> float by a table: on a core without an FPU a conversion is a library call of ~20
   instructions, a table read is one load (1 KB of flash, only where a weight is int8) */
static const float tdl_i8f[256] = {
    0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f,
    16.0f, 17.0f, 18.0f, 19.0f, 20.0f, 21.0f, 22.0f, 23.0f, 24.0f, 25.0f, 26.0f, 27.0f, 28.0f, 29.0f, 30.0f, 31.0f,
    32.0f, 33.0f, 34.0f, 35.0f, 36.0f, 37.0f, 38.0f, 39.0f, 40.0f, 41.0f, 42.0f, 43.0f, 44.0f, 45.0f, 46.0f, 47.0f,
    48.0f, 49.0f, 50.0f, 51.0f, 52.0f, 53.0f, 54.0f, 55.0f, 56.0f, 57.0f, 58.0f, 59.0f, 60.0f, 61.0f, 62.0f, 63.0f,
    64.0f, 65.0f, 66.0f, 67.0f, 68.0f, 69.0f, 70.0f, 71.0f, 72.0f, 73.0f, 74.0f, 75.0f, 76.0f, 77.0f, 78.0f, 79.0f,
    80.0f, 81.0f, 82.0f, 83.0f, 84.0f, 85.0f, 86.0f, 87.0f, 88.0f, 89.0f, 90.0f, 91.0f, 92.0f, 93.0f, 94.0f, 95.0f,
    96.0f, 97.0f, 98.0f, 99.0f, 100.0f, 101.0f, 102.0f, 103.0f, 104.0f, 105.0f, 106.0f, 107.0f, 108.0f, 109.0f, 110.0f, 111.0f,
    112.0f, 113.0f, 114.0f, 115.0f, 116.0f, 117.0f, 118.0f, 119.0f, 120.0f, 121.0f, 122.0f, 123.0f, 124.0f, 125.0f, 126.0f, 127.0f,
    -128.0f, -127.0f, -126.0f, -125.0f, -124.0f, -123.0f, -122.0f, -121.0f, -120.0f, -119.0f, -118.0f, -117.0f, -116.0f, -115.0f, -114.0f, -113.0f,
    -112.0f, -111.0f, -110.0f, -109.0f, -108.0f, -107.0f, -106.0f, -105.0f, -104.0f, -103.0f, -102.0f, -101.0f, -100.0f, -99.0f, -98.0f, -97.0f,
    -96.0f, -95.0f, -94.0f, -93.0f, -92.0f, -91.0f, -90.0f, -89.0f, -88.0f, -87.0f, -86.0f, -85.0f, -84.0f, -83.0f, -82.0f, -81.0f,
    -80.0f, -79.0f, -78.0f, -77.0f, -76.0f, -75.0f, -74.0f, -73.0f, -72.0f, -71.0f, -70.0f, -69.0f, -68.0f, -67.0f, -66.0f, -65.0f,
    -64.0f, -63.0f, -62.0f, -61.0f, -60.0f, -59.0f, -58.0f, -57.0f, -56.0f, -55.0f, -54.0f, -53.0f, -52.0f, -51.0f, -50.0f, -49.0f,
    -48.0f, -47.0f, -46.0f, -45.0f, -44.0f, -43.0f, -42.0f, -41.0f, -40.0f, -39.0f, -38.0f, -37.0f, -36.0f, -35.0f, -34.0f, -33.0f,
    -32.0f, -31.0f, -30.0f, -29.0f, -28.0f, -27.0f, -26.0f, -25.0f, -24.0f, -23.0f, -22.0f, -21.0f, -20.0f, -19.0f, -18.0f, -17.0f,
    -16.0f, -15.0f, -14.0f, -13.0f, -12.0f, -11.0f, -10.0f, -9.0f, -8.0f, -7.0f, -6.0f, -5.0f, -4.0f, -3.0f, -2.0f, -1.0f
};
#define TDL_I8F(w) (tdl_i8f[(uint8_t)(w)])
#else
#define TDL_I8F(w) ((float)(w))
#endif

#if defined(TDL_NEED_OMP)
/* |x| as the integer of its bits (sign cleared): the same order as |x| for finite values,
   and an integer compare where the target has no FPU */
static uint32_t tdl_absbits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}
#endif

#if defined(TDL_NEED_OMP) || defined(TDL_NEED_DENSE)
static float tdl_dot_f32(const float *w, const float *x, int n)
{
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += w[i] * x[i];
    return acc;
}

static float tdl_dot_i8(const int8_t *w, const float *x, int n)
{
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += TDL_I8F(w[i]) * x[i];
    return acc;
}

/* row `row` (n values) of W dotted with x */
static float tdl_row_dot(const tdl_mat *W, int row, int n, const float *x)
{
    if (W->f) return tdl_dot_f32(W->f + (long)row * n, x, n);
    return W->s[row] * tdl_dot_i8(W->q + (long)row * n, x, n);
}
#endif

#if defined(TDL_NEED_STANDARDIZE)
void tdl_standardize(const float *x, const float *mean, const float *scale, int m, float *out)
{
    /* (x - mean) / scale: NumPy's arithmetic, element by element (the same bits) */
    for (int i = 0; i < m; i++) out[i] = (x[i] - mean[i]) / scale[i];
}
#endif

#if defined(TDL_NEED_OMP)
/* One sample's Batch-OMP on l atoms (rows of D, m features), the Gram matrix G (l x l) and at
   most k atoms: hal/backends/numpy/omp.py's specification, as hal/backends/native/omp.c codes
   it (the same stopping rules: a best correlation at rounding level, a dependent atom with
   d^2 <= 16 k eps G_jj, a zero step, and |r|^2 <= tol2 |x|^2 when tol2 >= 0).
   ws: l + k*l + k*k + 4*k floats.  Writes idx/val (the first T entries) and returns T. */
int tdl_omp(const float *x, int m, int l, int k, const tdl_mat *D, const float *G, float tol2,
            float *ws, int *idx, float *val)
{
    const float eps = 1.1920928955078125e-07f;   /* FLT_EPSILON */
    float *c = ws;                /* the residual's correlations */
    float *Y = c + l;             /* Y[s] = b_s D q_s, row s of k x l */
    float *U = Y + (long)k * l;   /* U[t * k + s] = Y[s][j_t], s < t */
    float *B = U + k * k;         /* b_t = c_j / d_t^2 */
    float *CJ = B + k;            /* c_j at step t */
    float *NRHO = CJ + k;         /* -d_t^2 / c_j^2 */
    float *RU = NRHO + k;         /* -rho_s u_s of this step */
    const float tiny = 16.0f * (float)(k > 1 ? k : 1) * eps;
    const float ctol = tiny * tiny;
    float x2 = 0.0f, proj = 0.0f;
    int T = 0;
    for (int i = 0; i < m; i++) x2 += x[i] * x[i];
    for (int q = 0; q < l; q++) c[q] = tdl_row_dot(D, q, m, x);
    const float limit = tol2 >= 0.0f ? x2 * tol2 : 0.0f;
    /* an all-zero sample takes no atom; under a tolerance, nor does one already within */
    if (!(x2 > 0.0f) || (tol2 >= 0.0f && !(x2 > limit))) return 0;
    for (int t = 0; t < k; t++) {
        /* argmax |c|, the first of ties */
        uint32_t best = 0;
        int j = 0;
        for (int q = 0; q < l; q++) {
            uint32_t b = tdl_absbits(c[q]);
            if (b > best) { best = b; j = q; }
        }
        const float cj = c[j];
        const float gj = G[(long)j * l + j];
        /* the best correlation at rounding level: x is represented, or what is left lies
           outside the atoms' span; a further atom would be fitted to rounding noise */
        if (cj * cj <= x2 * gj * ctol) break;
        float d2 = 0.0f;
        float *u = U + t * k;
        for (int s = 0; s < t; s++) {
            u[s] = Y[(long)s * l + j];
            RU[s] = NRHO[s] * u[s];
            d2 += RU[s] * u[s];
        }
        d2 += gj;                             /* d^2 = G_jj - sum_s rho_s u_s^2 */
        if (!(d2 > gj * tiny)) break;         /* j lies in the span of the chosen atoms */
        const float b = cj / d2;
        if (b == 0.0f) break;                 /* residual orthogonal to every atom */
        float *Yt = Y + (long)t * l;
        const float *Gj = G + (long)j * l;
        for (int q = 0; q < l; q++) {
            float acc = Gj[q];
            for (int s = 0; s < t; s++) acc += RU[s] * Y[(long)s * l + q];
            Yt[q] = acc * b;
            c[q] -= acc * b;
        }
        c[j] = 0.0f;   /* exact: picked again only when every correlation is noise */
        B[t] = b;
        CJ[t] = cj;
        NRHO[t] = -(d2 / (cj * cj));
        idx[t] = j;
        T = t + 1;
        proj += b * cj;                       /* |z_t|^2 = c_j^2 / d^2 */
        if (tol2 >= 0.0f && !(x2 - proj > limit)) break;
    }
    /* gamma_t = b_t - (1 / c_j(t)) sum_{s > t} U[s, t] gamma_s */
    for (int t = T - 1; t >= 0; t--) {
        float acc = 0.0f;
        for (int s = t + 1; s < T; s++) acc += U[s * k + t] * val[s];
        val[t] = t < T - 1 ? B[t] - acc / CJ[t] : B[t];
    }
    return T;
}
#endif

#if defined(TDL_NEED_GATHER)
/* y = b + sum_t (vscale val[t]) W[idx[t]]: the first dense layer on the k-sparse code (the
   rows its atoms name).  W (l x n_out) float, or int8 with one scale per output unit. */
void tdl_gather_dense(const int *idx, const float *val, int T, float vscale, int n_out,
                      const float *Wf, const int8_t *Wq, const float *Ws, const float *b,
                      float *y)
{
    for (int o = 0; o < n_out; o++) y[o] = 0.0f;
    for (int t = 0; t < T; t++) {
        const float v = val[t] * vscale;
        if (Wf) {
            const float *w = Wf + (long)idx[t] * n_out;
            for (int o = 0; o < n_out; o++) y[o] += v * w[o];
        } else {
            const int8_t *w = Wq + (long)idx[t] * n_out;
            for (int o = 0; o < n_out; o++) y[o] += v * TDL_I8F(w[o]);
        }
    }
    for (int o = 0; o < n_out; o++) y[o] = (Wf ? y[o] : Ws[o] * y[o]) + b[o];
}
#endif

#if defined(TDL_NEED_DENSE)
/* y = W x + b, W stored (n_out x n_in): one row per output unit */
void tdl_dense(const float *x, int n_in, int n_out, const tdl_mat *W, const float *b, float *y)
{
    for (int o = 0; o < n_out; o++) {
        const float acc = tdl_row_dot(W, o, n_in, x);
        y[o] = b ? acc + b[o] : acc;
    }
}
#endif

#if defined(TDL_NEED_SPARSE)
/* y[o] = b[o] + sum_{p in column o} data[p] z[indices[p]] (CSC by output column; the int8
   data have one scale per column) */
void tdl_sparse_cols(const float *z, int n_out, const int32_t *indptr, const uint16_t *ind16,
                     const int32_t *ind32, const tdl_mat *data, const float *b, float *y)
{
    for (int o = 0; o < n_out; o++) {
        float acc = 0.0f;
        for (int32_t p = indptr[o]; p < indptr[o + 1]; p++) {
            const int32_t r = ind16 ? (int32_t)ind16[p] : ind32[p];
            const float w = data->f ? data->f[p] : TDL_I8F(data->q[p]);
            acc += z[r] * w;
        }
        y[o] = (data->f ? acc : data->s[o] * acc) + b[o];
    }
}
#endif

#if defined(TDL_NEED_CONV)
/* 2-D cross-correlation, channels first; W (F x C x kh x kw), one scale per filter */
void tdl_conv(const float *x, int C, int H, int W_, const tdl_mat *Wt, const float *b, int F,
              int kh, int kw, int sh, int sw, int ph, int pw, int Ho, int Wo, float *y)
{
    const int per = C * kh * kw;
    for (int f = 0; f < F; f++) {
        const float s = Wt->f ? 1.0f : Wt->s[f];
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                float acc = 0.0f;
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < kh; i++) {
                        const int ih = oh * sh + i - ph;
                        if (ih < 0 || ih >= H) continue;
                        for (int j = 0; j < kw; j++) {
                            const int iw = ow * sw + j - pw;
                            if (iw < 0 || iw >= W_) continue;
                            const long wi = (long)f * per + (c * kh + i) * kw + j;
                            const float w = Wt->f ? Wt->f[wi] : TDL_I8F(Wt->q[wi]);
                            acc += w * x[((long)c * H + ih) * W_ + iw];
                        }
                    }
                y[((long)f * Ho + oh) * Wo + ow] = s * acc + b[f];
            }
    }
}
#endif

#if defined(TDL_NEED_KSEP)
/* each (f, c) kernel as r rank-1 pairs: vertical v (C x F*r x kh), then horizontal
   h (F x C*r*kw); z: C*F*r*Ho*Wp floats of scratch (Wp = W + 2 pw) */
void tdl_kernel_sep(const float *x, int C, int H, int W_, const tdl_mat *v, const tdl_mat *h,
                    const float *b, int F, int r, int kh, int kw, int sh, int sw, int ph,
                    int pw, int Ho, int Wo, float *z, float *y)
{
    const int Wp = W_ + 2 * pw, FR = F * r;
    for (int c = 0; c < C; c++)
        for (int fr = 0; fr < FR; fr++) {
            const long row = (long)c * FR + fr;
            const float s = v->f ? 1.0f : v->s[row];
            for (int oh = 0; oh < Ho; oh++)
                for (int wp = 0; wp < Wp; wp++) {
                    const int iw = wp - pw;
                    float acc = 0.0f;
                    if (iw >= 0 && iw < W_)
                        for (int i = 0; i < kh; i++) {
                            const int ih = oh * sh + i - ph;
                            if (ih < 0 || ih >= H) continue;
                            const float w = v->f ? v->f[row * kh + i] : TDL_I8F(v->q[row * kh + i]);
                            acc += x[((long)c * H + ih) * W_ + iw] * w;
                        }
                    z[((row * Ho) + oh) * Wp + wp] = s * acc;
                }
        }
    const int per = C * r * kw;
    for (int f = 0; f < F; f++) {
        const float s = h->f ? 1.0f : h->s[f];
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                float acc = 0.0f;
                for (int c = 0; c < C; c++)
                    for (int rr = 0; rr < r; rr++) {
                        const long zrow = ((long)c * FR + f * r + rr) * Ho + oh;
                        for (int j = 0; j < kw; j++) {
                            const long wi = (long)f * per + (c * r + rr) * kw + j;
                            const float w = h->f ? h->f[wi] : TDL_I8F(h->q[wi]);
                            acc += z[zrow * Wp + ow * sw + j] * w;
                        }
                    }
                y[((long)f * Ho + oh) * Wo + ow] = s * acc + b[f];
            }
    }
}
#endif

#if defined(TDL_NEED_POOL)
/* max (is_max) or mean over kh x kw windows, stride sh x sw, no padding */
void tdl_pool(const float *x, int C, int H, int W_, int kh, int kw, int sh, int sw, int Ho,
              int Wo, int is_max, float *y)
{
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                const float *p = x + ((long)c * H + oh * sh) * W_ + ow * sw;
                float acc = is_max ? p[0] : 0.0f;
                for (int i = 0; i < kh; i++)
                    for (int j = 0; j < kw; j++) {
                        const float v = p[i * W_ + j];
                        if (is_max) acc = v > acc ? v : acc;
                        else acc += v;
                    }
                y[((long)c * Ho + oh) * Wo + ow] = is_max ? acc : acc / (float)(kh * kw);
            }
}
#endif

#if defined(TDL_NEED_RELU)
void tdl_relu(const float *x, int n, float *y)
{
    for (int i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
#endif

#if defined(TDL_NEED_TANH) || defined(TDL_NEED_SIGMOID) || defined(TDL_NEED_SOFTMAX)
#include <math.h>
#endif

#if defined(TDL_NEED_TANH) || defined(TDL_NEED_SIGMOID)
static float tdl_tanhf(float x)
{
    /* tanh |x| = 1 - 2 / (exp(2 |x|) + 1): no overflow (exp -> inf gives 1) */
    const float a = x < 0.0f ? -x : x;
    const float t = 1.0f - 2.0f / (expf(2.0f * a) + 1.0f);
    return x < 0.0f ? -t : t;
}
#endif

#if defined(TDL_NEED_TANH)
void tdl_tanh(const float *x, int n, float *y)
{
    for (int i = 0; i < n; i++) y[i] = tdl_tanhf(x[i]);
}
#endif

#if defined(TDL_NEED_SIGMOID)
void tdl_sigmoid(const float *x, int n, float *y)
{
    /* 1 / (1 + exp(-x)) through tanh, as tinydl's NumPy layers */
    for (int i = 0; i < n; i++) y[i] = (tdl_tanhf(0.5f * x[i]) + 1.0f) * 0.5f;
}
#endif

#if defined(TDL_NEED_SOFTMAX)
void tdl_softmax(const float *x, int n, float *y)
{
    float mx = x[0], sum = 0.0f;
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) { y[i] = expf(x[i] - mx); sum += y[i]; }
    for (int i = 0; i < n; i++) y[i] /= sum;
}
#endif

int tdl_argmax(const float *x, int n)
{
    int j = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[j]) j = i;
    return j;
}
