/* A test harness for an exported model (host, or a Cortex-M3 under QEMU with semihosting):
   reads samples from tdl_input.bin (int32 n, int32 m, then n x m float32), writes one
   predicted class index per line to standard output and the scores (n x TINYDL_N_OUTPUTS
   float32) to tdl_scores.bin.  On the MPS2 board it also times each tinydl_predict call with
   the CMSDK APB timer 0 (25 MHz) and prints "ticks <total> samples <n>" at the end. */
#include <stdint.h>
#include <stdio.h>

#include "tinydl_model.h"

#if defined(__ARM_ARCH) && defined(TDL_MPS2_TIMER)
#define TDL_TIMER ((volatile uint32_t *)0x40000000u) /* CTRL, VALUE, RELOAD */
static void timer_start(void)
{
    TDL_TIMER[0] = 0;
    TDL_TIMER[2] = 0xffffffffu;
    TDL_TIMER[1] = 0xffffffffu;
    TDL_TIMER[0] = 1;
}
static uint32_t timer_now(void) { return TDL_TIMER[1]; }
#else
static void timer_start(void) {}
static uint32_t timer_now(void) { return 0; }
#endif

static float x[TINYDL_N_FEATURES];
static float scores[TINYDL_N_OUTPUTS];

int main(void)
{
    FILE *in = fopen("tdl_input.bin", "rb");
    FILE *out = fopen("tdl_scores.bin", "wb");
    int32_t head[2];
    if (!in || !out || fread(head, sizeof head[0], 2, in) != 2 || head[1] != TINYDL_N_FEATURES) {
        printf("error: cannot read tdl_input.bin (or it has the wrong number of features)\n");
        return 1;
    }
    uint64_t ticks = 0;
    timer_start();
    for (int32_t i = 0; i < head[0]; i++) {
        if (fread(x, sizeof x[0], TINYDL_N_FEATURES, in) != TINYDL_N_FEATURES) {
            printf("error: tdl_input.bin ends at sample %ld\n", (long)i);
            return 1;
        }
        const uint32_t t0 = timer_now();
        const int c = tinydl_predict(x, scores);
        const uint32_t t1 = timer_now();
        ticks += (uint32_t)(t0 - t1);   /* the timer counts down */
        printf("%d\n", c);
        fwrite(scores, sizeof scores[0], TINYDL_N_OUTPUTS, out);
    }
    fclose(out);
    fclose(in);
    printf("ticks %llu samples %ld\n", (unsigned long long)ticks, (long)head[0]);
    return 0;
}
