/* Portable C float32 path: the same algorithm with short fixed-size arrays as "vectors", which
   compilers keep in registers and usually vectorize for the baseline ISA.  Also instantiated with
   other tile shapes by the self-test (GK_PORTABLE_* overrides) to emulate the x86 paths' blocking
   on any CPU. */
#include "gemm_internal.h"

#ifndef GK_PORTABLE_SUFFIX
#define GK_SUFFIX portable
#define GK_W 4
#define GK_MR 4
#define GK_NV 2
#else
#define GK_SUFFIX GK_PORTABLE_SUFFIX
#define GK_W GK_PORTABLE_W
#define GK_MR GK_PORTABLE_MR
#define GK_NV GK_PORTABLE_NV
#endif
#define GK_TARGET

typedef struct { float v[GK_W]; } gk_vec;

static inline gk_vec gk_load(const float *p)
{ gk_vec r; int l; for (l = 0; l < GK_W; l++) r.v[l] = p[l]; return r; }
static inline void gk_store(float *p, gk_vec x)
{ int l; for (l = 0; l < GK_W; l++) p[l] = x.v[l]; }
static inline gk_vec gk_set1(float x)
{ gk_vec r; int l; for (l = 0; l < GK_W; l++) r.v[l] = x; return r; }
static inline gk_vec gk_zero(void) { return gk_set1(0.0f); }
/* a*b + c with two roundings: a fused multiply-add is a slow library call without FMA hardware */
static inline gk_vec gk_fma(gk_vec a, gk_vec b, gk_vec c)
{ gk_vec r; int l; for (l = 0; l < GK_W; l++) r.v[l] = a.v[l] * b.v[l] + c.v[l]; return r; }
static inline float gk_fma1(float a, float b, float c) { return a * b + c; }
static inline gk_vec gk_add(gk_vec a, gk_vec b)
{ gk_vec r; int l; for (l = 0; l < GK_W; l++) r.v[l] = a.v[l] + b.v[l]; return r; }
/* keeps NaN (comparison false) and -0.0, like maxps(0, v) */
static inline gk_vec gk_max0(gk_vec a)
{ gk_vec r; int l; for (l = 0; l < GK_W; l++) r.v[l] = a.v[l] < 0.0f ? 0.0f : a.v[l]; return r; }

/* see gemm_kernel.h: rows beyond `rows` are zero, rows of dst written in order */
static inline void gk_transpose8(const float *src, ptrdiff_t lds, int rows, float *dst,
                                 ptrdiff_t ldd)
{
    int i, j;
    for (j = 0; j < 8; j++)
        for (i = 0; i < 8; i++)
            dst[j * ldd + i] = i < rows ? src[i * lds + j] : 0.0f;
}

#include "gemm_kernel.h"
