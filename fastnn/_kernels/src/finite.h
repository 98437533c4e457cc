/* Whether an array of float32 (as uint32 bits) or float64 (as uint64 bits) holds no NaN or
   infinity. A value's exponent field is all ones exactly when adding one to the field's
   lowest bit carries into the sign bit, so the test is an OR of those sums: a plain vector
   loop. The loop is the same for every ISA; the AVX2 and AVX-512 builds (picked at run time)
   only load wider, which matters because the scan is bound by loads. */
#ifndef FASTNN_FINITE_H
#define FASTNN_FINITE_H

#include <stddef.h>
#include <stdint.h>

#define FASTNN_FINITE_LOOP(T, EXP, LOW, SIGN)                                                  \
    {                                                                                          \
        T acc = 0;                                                                             \
        size_t i;                                                                              \
        for (i = 0; i < n; i++)                                                                \
            acc |= (b[i] & (EXP)) + (LOW);                                                     \
        return (acc & (SIGN)) == 0;                                                            \
    }
#define FASTNN_FINITE_32 FASTNN_FINITE_LOOP(uint32_t, 0x7f800000u, 0x00800000u, 0x80000000u)
#define FASTNN_FINITE_64                                                                       \
    FASTNN_FINITE_LOOP(uint64_t, 0x7ff0000000000000ull, 0x0010000000000000ull,                 \
                       0x8000000000000000ull)

static int fastnn_finite32_base(const uint32_t *restrict b, size_t n) FASTNN_FINITE_32
static int fastnn_finite64_base(const uint64_t *restrict b, size_t n) FASTNN_FINITE_64

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2"))) static int
fastnn_finite32_avx2(const uint32_t *restrict b, size_t n) FASTNN_FINITE_32
__attribute__((target("avx2"))) static int
fastnn_finite64_avx2(const uint64_t *restrict b, size_t n) FASTNN_FINITE_64
__attribute__((target("avx512f"))) static int
fastnn_finite32_avx512(const uint32_t *restrict b, size_t n) FASTNN_FINITE_32
__attribute__((target("avx512f"))) static int
fastnn_finite64_avx512(const uint64_t *restrict b, size_t n) FASTNN_FINITE_64

/* 2: AVX-512F, 1: AVX2, 0: baseline; found once (racing first calls agree) */
static int fastnn_finite_level(void)
{
    static volatile int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        level = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return level;
}

static int fastnn_all_finite32(const uint32_t *b, size_t n)
{
    switch (fastnn_finite_level()) {
    case 2: return fastnn_finite32_avx512(b, n);
    case 1: return fastnn_finite32_avx2(b, n);
    default: return fastnn_finite32_base(b, n);
    }
}

static int fastnn_all_finite64(const uint64_t *b, size_t n)
{
    switch (fastnn_finite_level()) {
    case 2: return fastnn_finite64_avx512(b, n);
    case 1: return fastnn_finite64_avx2(b, n);
    default: return fastnn_finite64_base(b, n);
    }
}
#else
static int fastnn_all_finite32(const uint32_t *b, size_t n) { return fastnn_finite32_base(b, n); }
static int fastnn_all_finite64(const uint64_t *b, size_t n) { return fastnn_finite64_base(b, n); }
#endif

#endif
