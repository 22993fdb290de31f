/* The native kernels' prototypes: every function the Python side calls.

   build.py hands this file to cffi's cdef (preprocessor lines dropped), and kernels.c
   includes it, so a definition that drifts from its prototype fails to compile instead of
   being called with the wrong arguments.  Each kernel exists for float (_f32) and double
   (_f64): kernels.c includes omp.c, sparse.c and basis.c once per type. */
#ifndef TINYDL_NATIVE_KERNELS_H
#define TINYDL_NATIVE_KERNELS_H

long omp_f32(long, long, long, long, const float *, const float *, const float *, long, float,
             float, float *, int *, float *, int *, float *);
long omp_f64(long, long, long, long, const double *, const double *, const double *, long,
             double, double, double *, int *, double *, int *, double *);
void correlate_f32(long, long, long, const float *, long, const float *, long, float *, long,
                   float *, float *);
void correlate_f64(long, long, long, const double *, long, const double *, long, double *,
                   long, double *, double *);
long correlate_scratch_f32(long);
long correlate_scratch_f64(long);
long correlate_width_f32(long);
long correlate_width_f64(long);

/* a dictionary bound for encode (correlate.c): every array but the batch and its codes */
struct tdl_encode_f32 {
    long m, l, k, ldo, ldt, ldg;
    float tol2, eps;
    const float *DT, *G, *mean, *scale;
    float *xs, *corr, *xx, *acc, *ows, *resid;
    int *nnz;
};
struct tdl_encode_f64 {
    long m, l, k, ldo, ldt, ldg;
    double tol2, eps;
    const double *DT, *G, *mean, *scale;
    double *xs, *corr, *xx, *acc, *ows, *resid;
    int *nnz;
};
/* the streaming transform's state bound for stream (stream.c) */
struct tdl_stream_f32 {
    long m, lb, ldt, k, ldo, dep, xs_rows;
    float refine2, tol2, eps;
    float *D, *DT, *G, *Li, *xs;
    const float *mean, *scale;
    float *c, *z, *w, *r, *corr, *xx, *acc, *ows, *resid;
    int *nnz;
    /* stream_bound's other arguments, bound once: the atoms' limit, the Wp threshold and
       where the codes go */
    long lmax;
    float thr;
    int *bidx;
    float *bval;
};
struct tdl_stream_f64 {
    long m, lb, ldt, k, ldo, dep, xs_rows;
    double refine2, tol2, eps;
    double *D, *DT, *G, *Li, *xs;
    const double *mean, *scale;
    double *c, *z, *w, *r, *corr, *xx, *acc, *ows, *resid;
    int *nnz;
    /* stream_bound's other arguments, bound once: the atoms' limit, the Wp threshold and
       where the codes go */
    long lmax;
    double thr;
    int *bidx;
    double *bval;
};
long stream_f32(struct tdl_stream_f32 *, long, long, long, const float *, float, int *,
                float *);
long stream_f64(struct tdl_stream_f64 *, long, long, long, const double *, double, int *,
                double *);
long stream_raw_f32(struct tdl_stream_f32 *, long, long, long, const float *, float, int *,
                    float *);
long stream_raw_f64(struct tdl_stream_f64 *, long, long, long, const double *, double, int *,
                    double *);
long stream_bound_f32(struct tdl_stream_f32 *, long, long, const float *);
long stream_bound_f64(struct tdl_stream_f64 *, long, long, const double *);
long stream1_f32(struct tdl_stream_f32 *, const float *);
long stream1_f64(struct tdl_stream_f64 *, const double *);
/* encode's arguments for one row, bound (stream.c, encode1): the plan and the codes' arrays */
struct tdl_encode1_f32 {
    const struct tdl_encode_f32 *p;
    int *idx;
    float *val;
};
struct tdl_encode1_f64 {
    const struct tdl_encode_f64 *p;
    int *idx;
    double *val;
};
long encode1_f32(const struct tdl_encode1_f32 *, const float *);
long encode1_f64(const struct tdl_encode1_f64 *, const double *);
void wp_rows_f32(struct tdl_stream_f32 *, long, long, const float *, float *);
void wp_rows_f64(struct tdl_stream_f64 *, long, long, const double *, double *);
long encode_f32(const struct tdl_encode_f32 *, long, const float *, int *, float *);
long encode_f64(const struct tdl_encode_f64 *, long, const double *, int *, double *);
long gather_f32(long, long, long, long, const int *, const float *, const float *, float *);
long gather_f64(long, long, long, long, const int *, const double *, const double *,
                double *);
long scatter_f32(long, long, long, long, const int *, const float *, const float *, float,
                 float *);
long scatter_f64(long, long, long, long, const int *, const double *, const double *, double,
                 double *);
void project_f32(long, long, const float *, const float *, float *, const float *, float *);
void project_f64(long, long, const double *, const double *, double *, const double *,
                 double *);
long layer_fwd_f32(long, long, long, long, const int *, const float *, const float *,
                   const float *, float *);
long layer_fwd_f64(long, long, long, long, const int *, const double *, const double *,
                   const double *, double *);
long layer_bwd_f32(long, long, long, long, const int *, const float *, const float *, float *,
                   float *);
long layer_bwd_f64(long, long, long, long, const int *, const double *, const double *,
                   double *, double *);

/* the one-sample predict (predict.c): a layer after the encode (kind 0 dense, 1 ReLU,
   2 tanh, 3 sigmoid; layers[0] is the dense first layer fed the codes) */
struct tdl_layer_f32 {
    long kind, n_in, n_out;
    const float *W, *b;
    float *y;
};
struct tdl_layer_f64 {
    long kind, n_in, n_out;
    const double *W, *b;
    double *y;
};
struct tdl_predict_f32 {
    const struct tdl_encode_f32 *enc;
    const struct tdl_layer_f32 *layers;
    long n_layers, dep;
    float code_scale;
};
struct tdl_predict_f64 {
    const struct tdl_encode_f64 *enc;
    const struct tdl_layer_f64 *layers;
    long n_layers, dep;
    double code_scale;
};
long predict1_f32(struct tdl_predict_f32 *, const float *, int *, float *);
long predict1_f64(struct tdl_predict_f64 *, const double *, int *, double *);
/* predict1's arguments but the row, bound (predict.c, predict1b): the plan and the codes */
struct tdl_predict1_f32 {
    struct tdl_predict_f32 *p;
    int *idx;
    float *val;
};
struct tdl_predict1_f64 {
    struct tdl_predict_f64 *p;
    int *idx;
    double *val;
};
long predict1b_f32(const struct tdl_predict1_f32 *, const float *);
long predict1b_f64(const struct tdl_predict1_f64 *, const double *);

/* a dictionary stored narrower than float32, bound for stored_encode (stored.c): kind 1
   float16 atoms (binary16 bits), 2 int8 atoms with ascale (one float32 scale per atom);
   DqT the atoms transposed (m rows of ldt values) */
struct tdl_stored {
    long m, l, k, ldo, ldg, kind, rows, ldt;  /* rows: what acc holds (stored_scratch) */
    float tol2, eps;
    const void *DqT;
    const float *ascale, *G, *mean, *scale;
    float *xs, *corr, *xx, *acc, *ows, *resid;
    int *nnz;
};
void stored_correlate(long, long, long, const float *, long, const void *, long, long,
                      const float *, float *, long, float *, long);
long stored_scratch(long, long, long);
void stored_combine(long, long, long, const float *, long, const void *, long, const float *,
                    float *, long);
long stored_encode(const struct tdl_stored *, long, const float *, int *, float *);

#endif
