/* The native backend's one translation unit: omp.c, sparse.c, basis.c, correlate.c, stream.c and
   predict.c instantiated for
   float (suffix _f32) and double (_f64) by the preprocessor.  Inside them F(name) is
   name_f32 or name_f64, REAL the type, SQRT its square root, UINT/ABSMASK its bit pattern's
   integer and |.| mask, QB the columns per register block of OMP's direction update. */
#include <math.h>
#include <stdint.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "kernels.h"

/* the basis kernels' vector width in bytes (32: AVX2, two NEON registers); PCHUNK: their
   column chunk in bytes (x and u chunks stay in L1); PGROUP: rows per group (even) */
#define VBYTES 32
#define PCHUNK 8192
#define PGROUP 64
/* correlate.c: samples per block sharing a chunk of DT, and the features per chunk (l=200
   float atoms: 200 KB of DT, in L2) */
#define CSB 48
#define CKC 256

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define F(name) CAT(name, SUF)

#define REAL float
#define SQRT sqrtf
#define UINT uint32_t
#define ABSMASK 0x7fffffffu
#define QB 64
#define SUF f32
#include "omp.c"
#include "sparse.c"
#include "basis.c"
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#include "correlate.c"
#include "stream.c"
#pragma GCC pop_options
#include "predict.c"
#undef REAL
#undef SQRT
#undef UINT
#undef ABSMASK
#undef QB
#undef SUF

#define REAL double
#define SQRT sqrt
#define UINT uint64_t
#define ABSMASK 0x7fffffffffffffffull
#define QB 32
#define SUF f64
#include "omp.c"
#include "sparse.c"
#include "basis.c"
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#include "correlate.c"
#include "stream.c"
#pragma GCC pop_options
#include "predict.c"
#undef REAL
#undef SQRT
#undef UINT
#undef ABSMASK
#undef QB
#undef SUF

/* stored.c: float16 / int8 atoms with float32 compute, once (it calls the float kernels) */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#include "stored.c"
#pragma GCC pop_options
