/* AVX-512F float32 path: 8 x 32 micro-tile, 16 zmm accumulators. */
#include "gemm_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GK_SUFFIX avx512
#define GK_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define GK_W 16
#define GK_MR GK_AVX512_MR
#define GK_NV GK_AVX512_NV

typedef __m512 gk_vec;
#define gk_load(p) _mm512_loadu_ps(p)
#define gk_store(p, v) _mm512_storeu_ps((p), (v))
#define gk_set1(x) _mm512_set1_ps(x)
#define gk_zero() _mm512_setzero_ps()
#define gk_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define gk_fma1(a, b, c) _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)))
#define gk_add(a, b) _mm512_add_ps((a), (b))
/* maxps returns its second operand when either is NaN or both are zero: NaN and -0.0 pass */
#define gk_max0(v) _mm512_max_ps(_mm512_setzero_ps(), (v))

#include "gemm_transpose8_avx.h"
#include "gemm_kernel.h"

#else
void fastnn_sgemm_avx512(const gk_sgemm_args *g) { fastnn_sgemm_portable(g); }
#endif
