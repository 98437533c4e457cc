/* AVX2 + FMA float32 path: 6 x 16 micro-tile, 12 ymm accumulators. */
#include "gemm_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GK_SUFFIX avx2
#define GK_TARGET __attribute__((target("avx2,fma")))
#define GK_W 8
#define GK_MR GK_AVX2_MR
#define GK_NV GK_AVX2_NV
/* One pass over C for every K <= 1024 (all of fastnn's layers): on Zen 3 this beat KC = 256
   by some 5% at 128x512x784 and 15% at 1000x512x784. */
#define GK_KC 1024

typedef __m256 gk_vec;
#define gk_load(p) _mm256_loadu_ps(p)
#define gk_store(p, v) _mm256_storeu_ps((p), (v))
#define gk_set1(x) _mm256_set1_ps(x)
#define gk_zero() _mm256_setzero_ps()
#define gk_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define gk_fma1(a, b, c) _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)))
#define gk_add(a, b) _mm256_add_ps((a), (b))
/* maxps returns its second operand when either is NaN or both are zero: NaN and -0.0 pass */
#define gk_max0(v) _mm256_max_ps(_mm256_setzero_ps(), (v))

#include "gemm_transpose8_avx.h"
#include "gemm_kernel.h"

#else
/* Not x86-64 GCC/clang: never selected by the dispatcher. */
void fastnn_sgemm_avx2(const gk_sgemm_args *g) { fastnn_sgemm_portable(g); }
#endif
