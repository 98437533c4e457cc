/* The run-time choice of the conv kernels' build: see conv_simd.h. */
#include "conv_simd.h"

#include <stdlib.h>

enum { ISA_PORTABLE, ISA_AVX2, ISA_AVX512 };
static int conv_chosen = -1;   /* one of the above; -1: not chosen yet */

/* The best build this CPU runs. */
static int conv_cpu_isa(void)
{
#if CONV_HAVE_AVX2 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return ISA_PORTABLE;
    return __builtin_cpu_supports("avx512f") ? ISA_AVX512 : ISA_AVX2;
#else
    return ISA_PORTABLE;
#endif
}

/* The build `name` asks for, or -1 for none. */
static int conv_isa_named(const char *name)
{
    if (name == NULL)
        return -1;
    if (strcmp(name, "avx512") == 0)
        return ISA_AVX512;
    if (strcmp(name, "avx2") == 0)
        return ISA_AVX2;
    if (strcmp(name, "portable") == 0)
        return ISA_PORTABLE;
    return -1;
}

static int conv_isa_level(void)
{
    if (conv_chosen < 0) {
        int cap = conv_isa_named(getenv("FASTNN_CONV_ISA"));
        conv_chosen = conv_cpu_isa();
        if (cap >= 0 && cap < conv_chosen)
            conv_chosen = cap;
    }
    return conv_chosen;
}

int fastnn_conv_simd_available(void) { return CONV_HAVE_VECTORS; }

int fastnn_conv_use_avx2(void) { return conv_isa_level() >= ISA_AVX2; }

int fastnn_conv_use_avx512(void) { return conv_isa_level() >= ISA_AVX512; }

const char *fastnn_conv_isa(void)
{
    static const char *names[] = {"portable", "avx2", "avx512"};
    if (!CONV_HAVE_VECTORS)
        return "none";
    return names[conv_isa_level()];
}

const char *fastnn_conv_set_isa(const char *name)
{
    int want = conv_isa_named(name), best = conv_cpu_isa();
    if (name == NULL || name[0] == '\0')
        conv_chosen = -1;
    else
        conv_chosen = want < 0 ? ISA_PORTABLE : want < best ? want : best;
    return fastnn_conv_isa();
}
