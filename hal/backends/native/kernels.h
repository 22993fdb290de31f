/* The native kernels' prototypes: every function the Python side calls.

   build.py hands this file to cffi's cdef (preprocessor lines dropped), and kernels.c
   includes it, so a definition that drifts from its prototype fails to compile instead of
   being called with the wrong arguments.  Each kernel exists for float (_f32) and double
   (_f64): kernels.c includes omp.c, sparse.c and basis.c once per type. */
#ifndef TINYDL_NATIVE_KERNELS_H
#define TINYDL_NATIVE_KERNELS_H

long omp_f32(long, long, long, const float *, const float *, const float *, float, float,
             float *, int *, float *, int *, float *);
long omp_f64(long, long, long, const double *, const double *, const double *, double, double,
             double *, int *, double *, int *, double *);
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
void wp_row_f32(long, long, const float *, const float *, float *, float *);
void wp_row_f64(long, long, const double *, const double *, double *, double *);
long append_f32(long, long, long, const float *, const float *, const float *, float *, float *,
                float *, float *, float *, float *, float *);
long append_f64(long, long, long, const double *, const double *, const double *, double *,
                double *, double *, double *, double *, double *, double *);

#endif
