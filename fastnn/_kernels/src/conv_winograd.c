/* Winograd F(4x4, 5x5) convolution: plan, weight transforms and ISA dispatch.
   The per-tile kernels are in conv_winograd_impl.h, compiled once for AVX2+FMA and once
   portably; see conv_winograd.h for what is computed.

   The matrices (points 0, 1, -1, 2, -2, 1/2, -1/2, infinity; row 0 of B^T and G negated, which
   leaves their product unchanged):
     B^T = [ 1    0  -21/4    0   21/4    0   -1  0 ]    G = [  1      0      0      0     0   ]
           [ 0    1    1   -17/4 -17/4    1    1  0 ]        [ -2/9  -2/9   -2/9   -2/9  -2/9  ]
           [ 0   -1    1    17/4 -17/4   -1    1  0 ]        [ -2/9   2/9   -2/9    2/9  -2/9  ]
           [ 0   1/2  1/4   -5/2  -5/4    2    1  0 ]        [ 1/90  1/45   2/45   4/45  8/45  ]
           [ 0  -1/2  1/4    5/2  -5/4   -2    1  0 ]        [ 1/90 -1/45   2/45  -4/45  8/45  ]
           [ 0    2    4    -5/2   -5    1/2   1  0 ]        [ 32/45 16/45  8/45   4/45  2/45  ]
           [ 0   -2    4     5/2   -5   -1/2   1  0 ]        [ 32/45 -16/45 8/45  -4/45  2/45  ]
           [ 0   -1    0    21/4    0  -21/4   0  1 ]        [  0      0      0      0     1   ]
     A^T = [ 1  1   1  1   1   1    1    0 ]
           [ 0  1  -1  2  -2  1/2 -1/2   0 ]
           [ 0  1   1  4   4  1/4  1/4   0 ]
           [ 0  1  -1  8  -8  1/8 -1/8   1 ]
*/
#include "conv_winograd.h"

#include <string.h>
#include "conv_simd.h"

/* Sizes shared by the passes; all counts of floats are multiples of 16 (64-byte blocks). */
typedef struct {
    fastnn_wino_shape s;
    int ho, wo, th, tw, hp, wp;   /* output size, tiles per column/row, padded input size */
    int cp, kp, cb, kb;           /* channels rounded up to 8, and in blocks of 8 */
    int tsc, tsk;                 /* floats per tile in V and dV / in M and Z (see the impl) */
    size_t xb_sample, yb_sample;  /* one sample's padded input / output in blocks of 8 */
    size_t u_floats;              /* transformed weights */
    /* forward: per thread, chunks of `chunk` samples */
    int chunk;
    size_t xb_floats, v_floats, m_floats, fwd_thread_floats;
    /* backward: shared by the threads, chunks of `bchunk` samples */
    int bchunk;
    size_t bxb_floats, bgb_floats, bv_floats, bz_floats;
    /* a max-pool after the convolution: per thread (forward) or sample (backward) scratch */
    int pool;
    size_t pool_floats;
} wino_plan;

#define round16 conv_round16

/* Transformed tiles (V and M) of a forward chunk: about this many floats per thread, so that
   they stay in the core's L2 cache beside the transformed weights. */
#ifndef WINO_FWD_CHUNK_FLOATS
#define WINO_FWD_CHUNK_FLOATS (72 * 1024)
#endif
/* Transformed tiles (V, Z and dV) of a backward chunk, shared by the threads: large, so that
   a batch takes few chunks (each costs three barriers) and dW's GEMMs have a long K. */
#ifndef WINO_BWD_CHUNK_FLOATS
#define WINO_BWD_CHUNK_FLOATS (1024 * 1024)
#endif

static int wino_chunk(size_t budget, size_t per_sample, int n)
{
    int chunk = (int)(budget / per_sample);
    if (chunk < 1)
        chunk = 1;
    return chunk > n ? n : chunk;
}

static void wino_make_plan(const fastnn_wino_shape *s, int pool, wino_plan *p)
{
    size_t tiles;
    p->s = *s;
    p->ho = s->h + 2 * s->pad - 4;
    p->wo = s->w + 2 * s->pad - 4;
    p->th = (p->ho + 3) / 4;
    p->tw = (p->wo + 3) / 4;
    p->hp = 4 * p->th + 4;
    p->wp = 4 * p->tw + 4;
    p->cp = (s->ci + 7) & ~7;
    p->kp = (s->co + 7) & ~7;
    p->cb = p->cp / 8;
    p->kb = p->kp / 8;
    p->tsc = 64 * p->cp + 16;
    p->tsk = 64 * p->kp + 16;
    p->xb_sample = round16((size_t)p->cb * p->hp * p->wp * 8);
    p->yb_sample = round16((size_t)p->kb * p->ho * p->wo * 8);
    p->u_floats = round16((size_t)64 * p->cp * p->kp);
    tiles = (size_t)p->th * p->tw;

    p->chunk = wino_chunk(WINO_FWD_CHUNK_FLOATS, tiles * (p->tsc + p->tsk), s->n);
    p->xb_floats = p->xb_sample > p->yb_sample ? p->xb_sample : p->yb_sample;
    p->v_floats = round16((size_t)p->chunk * tiles * p->tsc);
    p->m_floats = round16((size_t)p->chunk * tiles * p->tsk);
    p->pool = pool;
    p->pool_floats = pool ? conv_round16((size_t)3 * 8 * (p->ho / pool) * (p->wo / pool)) : 0;
    p->fwd_thread_floats = p->xb_floats + p->v_floats + p->m_floats + p->pool_floats;

    p->bchunk = wino_chunk(WINO_BWD_CHUNK_FLOATS, tiles * (2 * p->tsc + p->tsk), s->n);
    p->bxb_floats = p->bchunk * p->xb_sample;
    p->bgb_floats = p->bchunk * p->yb_sample;
    p->bv_floats = round16((size_t)p->bchunk * tiles * p->tsc);
    p->bz_floats = round16((size_t)p->bchunk * tiles * p->tsk);
}

#if CONV_HAVE_VECTORS

#if CONV_HAVE_AVX2
#define WN(name) wino_avx2_##name
#define WTARGET __attribute__((target("avx2,fma")))
#define WN_AVX2 1
#include "conv_winograd_impl.h"
#undef WN
#undef WTARGET
#undef WN_AVX2
#endif

#define WN(name) wino_portable_##name
#define WTARGET
#define WN_AVX2 0
#include "conv_winograd_impl.h"
#undef WN
#undef WTARGET
#undef WN_AVX2

#endif

size_t fastnn_wino_forward_floats(const fastnn_wino_shape *s, int pool, int nthreads)
{
    wino_plan p;
    wino_make_plan(s, pool, &p);
    return CONV_ALIGN_SLACK + p.u_floats + round16(p.kp)
        + (size_t)conv_threads(nthreads) * p.fwd_thread_floats;
}

size_t fastnn_wino_backward_floats(const fastnn_wino_shape *s, int pool, int nthreads)
{
    wino_plan p;
    wino_make_plan(s, pool, &p);
    (void)nthreads;   /* the backward pass's buffers are shared by its threads */
    return CONV_ALIGN_SLACK + 2 * p.u_floats + round16((size_t)p.bchunk * p.kp) + p.bxb_floats
        + p.bgb_floats + 2 * p.bv_floats + p.bz_floats + (size_t)p.bchunk * p.pool_floats;
}

#if CONV_HAVE_VECTORS
/* The forward pass of the AVX2 build (avx2) or the portable one; U: transformed weights kept
   by the caller, made by the same build, or NULL. */
static void wino_run_forward(int avx2, const wino_plan *p, const float *x, const float *w,
                             const float *bias, int relu, float *y, int pool, int *argmax,
                             float *work, int nt, const float *U)
{
#if CONV_HAVE_AVX2
    if (avx2) {
        wino_avx2_forward(p, x, w, bias, relu, y, pool, argmax, conv_align(work), nt, U);
        return;
    }
#else
    (void)avx2;
#endif
    wino_portable_forward(p, x, w, bias, relu, y, pool, argmax, conv_align(work), nt, U);
}
#endif

void fastnn_wino_forward(const fastnn_wino_shape *s, const float *x, const float *w,
                         const float *bias, int relu, float *y, int pool, int *argmax,
                         float *work, int nthreads)
{
#if CONV_HAVE_VECTORS
    wino_plan p;
    wino_make_plan(s, pool, &p);
    wino_run_forward(fastnn_conv_use_avx2(), &p, x, w, bias, relu, y, pool, argmax, work,
                     conv_threads(nthreads), NULL);
#else
    (void)s; (void)x; (void)w; (void)bias; (void)relu; (void)y; (void)pool; (void)argmax;
    (void)work; (void)nthreads;
#endif
}

void fastnn_wino_backward(const fastnn_wino_shape *s, const float *x, const float *w,
                          const float *y, const float *dy, int relu, int pool, const int *argmax,
                          float *dx, float *dw, float *db, float *work, int nthreads)
{
#if CONV_HAVE_VECTORS
    wino_plan p;
    int nt = conv_threads(nthreads);
    wino_make_plan(s, pool, &p);
#if CONV_HAVE_AVX2
    if (fastnn_conv_use_avx2()) {
        wino_avx2_backward(&p, x, w, y, dy, relu, pool, argmax, dx, dw, db, conv_align(work), nt);
        return;
    }
#endif
    wino_portable_backward(&p, x, w, y, dy, relu, pool, argmax, dx, dw, db, conv_align(work), nt);
#else
    (void)s; (void)x; (void)w; (void)y; (void)dy; (void)relu; (void)pool; (void)argmax;
    (void)dx; (void)dw; (void)db; (void)work; (void)nthreads;
#endif
}

size_t fastnn_wino_kept_floats(const fastnn_wino_shape *s)
{
    wino_plan p;
    wino_make_plan(s, 0, &p);
    return CONV_ALIGN_SLACK + p.u_floats;
}

void fastnn_wino_forward_kept(const fastnn_wino_shape *s, const float *x, const float *w,
                              const float *bias, int relu, float *y, int pool, int *argmax,
                              float *work, int nthreads, float *kept, float *w_kept,
                              int64_t *state)
{
#if CONV_HAVE_VECTORS
    wino_plan p;
    int nt = conv_threads(nthreads);
    size_t wsize = sizeof(float) * (size_t)s->co * s->ci * 25;
    float *U = conv_align(kept);
    int64_t build = 1;
    wino_make_plan(s, pool, &p);
#if CONV_HAVE_AVX2
    if (fastnn_conv_use_avx2())
        build = 2;
#endif
    if (*state != build || memcmp(w, w_kept, wsize) != 0) {
        *state = 0;
#if CONV_HAVE_AVX2
        if (build == 2)
            wino_avx2_transform_forward_weights(&p, w, U);
        else
#endif
            wino_portable_transform_forward_weights(&p, w, U);
        memcpy(w_kept, w, wsize);
        *state = build;
    }
    wino_run_forward(build == 2, &p, x, w, bias, relu, y, pool, argmax, work, nt, U);
#else
    (void)s; (void)x; (void)w; (void)bias; (void)relu; (void)y; (void)pool; (void)argmax;
    (void)work; (void)nthreads; (void)kept; (void)w_kept; (void)state;
#endif
}
