/* tinydl's exported inference kernels: see tinydl_runtime.c. */
#ifndef TINYDL_RUNTIME_H
#define TINYDL_RUNTIME_H

#include <stdint.h>

#include "tinydl_config.h"

/* weights: float rows (f != 0), or int8 rows (q) times one scale per row (s) */
typedef struct {
    const float *f;
    const int8_t *q;
    const float *s;
} tdl_mat;

void tdl_standardize(const float *x, const float *mean, const float *scale, int m, float *out);
int tdl_omp(const float *x, int m, int l, int k, const tdl_mat *D, const float *G, float tol2,
            float *ws, int *idx, float *val);
void tdl_gather_dense(const int *idx, const float *val, int T, float vscale, int n_out,
                      const float *Wf, const int8_t *Wq, const float *Ws, const float *b,
                      float *y);
void tdl_dense(const float *x, int n_in, int n_out, const tdl_mat *W, const float *b, float *y);
void tdl_sparse_cols(const float *z, int n_out, const int32_t *indptr, const uint16_t *ind16,
                     const int32_t *ind32, const tdl_mat *data, const float *b, float *y);
void tdl_conv(const float *x, int C, int H, int W_, const tdl_mat *Wt, const float *b, int F,
              int kh, int kw, int sh, int sw, int ph, int pw, int Ho, int Wo, float *y);
void tdl_kernel_sep(const float *x, int C, int H, int W_, const tdl_mat *v, const tdl_mat *h,
                    const float *b, int F, int r, int kh, int kw, int sh, int sw, int ph,
                    int pw, int Ho, int Wo, float *z, float *y);
void tdl_pool(const float *x, int C, int H, int W_, int kh, int kw, int sh, int sw, int Ho,
              int Wo, int is_max, float *y);
void tdl_relu(const float *x, int n, float *y);
void tdl_tanh(const float *x, int n, float *y);
void tdl_sigmoid(const float *x, int n, float *y);
void tdl_softmax(const float *x, int n, float *y);
int tdl_argmax(const float *x, int n);

#endif
