/* Bare loops of the native one-row correlation block (hal/backends/native/correlate.c,
   F(cblock) for one sample and 14 vectors of atoms: l = 112) over atoms stored as float32,
   float16 and int8, each stored dtype decoded by its conversion instruction alone
   (vcvtph2ps; vpmovsxbd + vcvtdq2ps) and mixed with the exact integer decoding of NI of the
   14 vectors (correlate.c's tdl_load_f16_scaled / tdl_load_i8_int; NI = 4 is the kernel's
   choice, TDL_BY_INT).  Built and run by benchmarks/one_row_decode.py; needs AVX2, FMA, F16C.

   Prints one line per variant: "<name> <best microseconds per call>", and "bits_equal 0|1"
   (the mixed decodings give the conversion's bits). */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifndef M
#define M 5625
#endif
#ifndef NI16
#define NI16 5
#endif
#ifndef NI8
#define NI8 4
#endif
#define LW 112
#define BY_INT(v, NI) (((v) * (NI)) % 14 < (NI))
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
/* the kernel's prefetch: 8 rows of float32 ahead, in bytes (16 rows of float16, 32 of int8) */
#define PF(es) \
    for (long b = 0; b < LW * (es); b += 64) \
        __builtin_prefetch((const char *)DT + ((t + 32 / (es)) * LW) * (es) + b);
__attribute__((noinline)) static void f32(const float *x, const float *DT, float *acc)
{
    __m256 A[14];
    for (int v = 0; v < 14; v++) A[v] = _mm256_setzero_ps();
    for (long t = 0; t < M; t++) {
        const float *row = DT + t * LW;
        PF(4)
        __m256 xb = _mm256_set1_ps(x[t]);
#pragma GCC unroll 14
        for (int v = 0; v < 14; v++) A[v] = _mm256_fmadd_ps(xb, _mm256_loadu_ps(row + v * 8), A[v]);
    }
    for (int v = 0; v < 14; v++) _mm256_storeu_ps(acc + v * 8, A[v]);
}
__attribute__((noinline)) static void f16(const float *x, const uint16_t *DT, float *acc, int mix)
{
    __m256 A[14];
    const __m256i mask = _mm256_set1_epi32((int)0x8FFFE000u);
    for (int v = 0; v < 14; v++) A[v] = _mm256_setzero_ps();
    for (long t = 0; t < M; t++) {
        const uint16_t *row = DT + t * LW;
        PF(2)
        __m256 xs = _mm256_set1_ps(x[t] * 0x1p112f), xb = _mm256_set1_ps(x[t]);
#pragma GCC unroll 14
        for (int v = 0; v < 14; v++) {
            if (mix && BY_INT(v, NI16)) {
                __m256i w = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(row + v * 8)));
                __m256 d = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(w, 13), mask));
                A[v] = _mm256_fmadd_ps(xs, d, A[v]);
            } else
                A[v] = _mm256_fmadd_ps(
                    xb, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + v * 8))), A[v]);
        }
    }
    for (int v = 0; v < 14; v++) _mm256_storeu_ps(acc + v * 8, A[v]);
}
__attribute__((noinline)) static void i8(const float *x, const int8_t *DT, float *acc, int mix)
{
    __m256 A[14];
    const __m256i mg = _mm256_set1_epi32(0x4B000080);
    const __m256 C = _mm256_set1_ps(8388736.0f);
    for (int v = 0; v < 14; v++) A[v] = _mm256_setzero_ps();
    for (long t = 0; t < M; t++) {
        const int8_t *row = DT + t * LW;
        PF(1)
        __m256 xb = _mm256_set1_ps(x[t]);
#pragma GCC unroll 14
        for (int v = 0; v < 14; v++) {
            __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + v * 8)));
            __m256 d = (mix && BY_INT(v, NI8))
                           ? _mm256_sub_ps(_mm256_castsi256_ps(_mm256_add_epi32(w, mg)), C)
                           : _mm256_cvtepi32_ps(w);
            A[v] = _mm256_fmadd_ps(xb, d, A[v]);
        }
    }
    for (int v = 0; v < 14; v++) _mm256_storeu_ps(acc + v * 8, A[v]);
}
int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 40;
    const long n = (long)(M + 64) * LW;  /* rows past M: the prefetches' addresses */
    uint16_t *D16 = aligned_alloc(64, 2 * n);
    float *D32 = aligned_alloc(64, 4 * n);
    int8_t *D8 = aligned_alloc(64, n + 64);
    float *x = malloc(4 * M), a[LW], b[LW];
    for (long i = 0; i < n; i++) {
        D16[i] = (uint16_t)(0x3c00 + (i % 13) + ((i % 3) << 15));
        D32[i] = (float)(i % 7) * .1f;
        D8[i] = (int8_t)((i * 37) % 255 - 127);
    }
    for (int i = 0; i < M; i++) x[i] = 1.0f / (float)(i + 1) - 0.3f;
    int ok = 1;
    f16(x, D16, a, 0); f16(x, D16, b, 1);
    for (int j = 0; j < LW; j++) ok &= a[j] == b[j];
    i8(x, D8, a, 0); i8(x, D8, b, 1);
    for (int j = 0; j < LW; j++) ok &= a[j] == b[j];
    double best[5] = {1e9, 1e9, 1e9, 1e9, 1e9};
    for (int r = 0; r < rounds; r++) {  /* interleaved: a load spike hits all alike */
        for (int k = 0; k < 5; k++) {
            const double t0 = now();
            for (int q = 0; q < 20; q++) {
                if (k == 0) f32(x, D32, a);
                else if (k < 3) f16(x, D16, a, k == 2);
                else i8(x, D8, a, k == 4);
            }
            const double t = (now() - t0) / 20;
            if (t < best[k]) best[k] = t;
        }
    }
    const char *names[5] = {"float32", "float16_convert", "float16_mixed", "int8_convert",
                            "int8_mixed"};
    for (int k = 0; k < 5; k++) printf("%s %.3f\n", names[k], best[k] * 1e6);
    printf("bits_equal %d\n", ok);
    return 0;
}
