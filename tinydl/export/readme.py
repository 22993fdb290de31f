"""The README.md written beside an export."""
from __future__ import annotations

__all__ = ["readme_text"]


def _kib(n: int) -> str:
    return f"{n:,} bytes ({n / 1024:.1f} KiB)"


def readme_text(prog, info) -> str:
    ops = " -> ".join(info["ops"]) + " -> argmax"
    classes = prog["classes"]
    labels = ", ".join(str(c) for c in classes[:32]) + (" ..." if len(classes) > 32 else "")
    return f"""# tinydl C export ({info['source']}, {info['weights']} weights)

C99, no `malloc`, no libm beyond `sqrtf`/`expf`; weights are `const` (flash), every working
buffer is `static` and sized here.  Computes: {ops}.

```c
#include "tinydl_model.h"
float scores[TINYDL_N_OUTPUTS];
int c = tinydl_predict(x, scores);   /* x: TINYDL_N_FEATURES = {info['n_features']} raw features */
```

`tinydl_predict` returns the index of the largest of the {info['n_outputs']} scores (the network's
raw outputs); the labels of the indices: {labels}.  It is not reentrant (static buffers).
It does not check `x`: a NaN or Inf feature reads and writes nothing out of bounds but gives a
meaningless class (`tinydl predict` refuses such a row); check inputs where a sensor can
produce them.

Build: compile `tinydl_model.c` and `tinydl_runtime.c` (C99) with your firmware; e.g. for a
Cortex-M3: `arm-none-eabi-gcc -std=c99 -O2 -mcpu=cortex-m3 -mthumb -c tinydl_*.c`; on a host,
link the maths library: `cc -std=c99 -O2 main.c tinydl_model.c tinydl_runtime.c -lm`.

## Memory (predicted at export)

| | bytes |
|---|---|
| flash (constants + code) | {_kib(info['flash_bytes'])} |
| - constants (weights, scales, statistics) | {_kib(info['const_bytes'])} |
| - code (kernels and calls, arm-none-eabi-gcc -O2, Cortex-M3) | {_kib(info['code_bytes'])} |
| RAM (static buffers) | {_kib(info['ram_bytes'])} |

Not included: the caller's `x` ({4 * info['n_features']:,} bytes) and `scores`
({4 * info['n_outputs']:,} bytes), the stack (the kernels are leaf functions with frames under
100 bytes) and the C library's soft-float routines, `sqrtf` and `expf` (linked once per
firmware).  `arm-none-eabi-size` of the two objects gives flash = text + data and
RAM = data + bss.
"""
