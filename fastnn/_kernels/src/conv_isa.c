/* The run-time choice of the conv kernels' build: see conv_simd.h. */
#include "conv_simd.h"

#include <stdlib.h>

static int conv_chosen = -1;   /* 1: AVX2, 0: portable, -1: not chosen yet */

static int conv_cpu_has_avx2(void)
{
#if CONV_HAVE_AVX2 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int fastnn_conv_simd_available(void) { return CONV_HAVE_VECTORS; }

int fastnn_conv_use_avx2(void)
{
    if (conv_chosen < 0) {
        const char *env = getenv("FASTNN_CONV_ISA");
        conv_chosen = conv_cpu_has_avx2() && !(env != NULL && strcmp(env, "portable") == 0);
    }
    return conv_chosen;
}

const char *fastnn_conv_isa(void)
{
    if (!CONV_HAVE_VECTORS)
        return "none";
    return fastnn_conv_use_avx2() ? "avx2" : "portable";
}

const char *fastnn_conv_set_isa(const char *name)
{
    if (name == NULL || name[0] == '\0')
        conv_chosen = -1;
    else
        conv_chosen = strcmp(name, "avx2") == 0 && conv_cpu_has_avx2();
    return fastnn_conv_isa();
}
