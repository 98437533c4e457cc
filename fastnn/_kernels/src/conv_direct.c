/* Direct convolution for one input channel: plan and ISA dispatch; the loops are in
   conv_direct_impl.h, the contract in conv_direct.h. */
#include "conv_direct.h"
#include "conv_simd.h"

typedef struct {
    fastnn_direct_shape s;
    int ho, wo, taps;
    int nv, wo8;            /* output row in vectors of 8 (the last one zero-padded) */
    int hp, wp;             /* padded input plane: hp rows wp floats apart */
    int vc, cb;             /* forward: vectors per row chunk, channels per register block */
    int gcb, tb, nblk, tapsp;   /* backward: channels x taps per register block, blocks,
                                   taps padded to a multiple of tb */
    int fit512;             /* the AVX-512 kernels take this shape (conv_direct_avx512.h) */
    int wq, nq;             /* AVX-512 forward: input rows wq = W + 2 pad floats apart, the
                               outputs' rows as nq vectors of 16 over that stride */
    size_t xq_floats, yq_floats;
    size_t xp_floats, ys_floats, g_floats, wb_floats, bb_floats;
    size_t acc_floats, dbv_floats, toff_floats;
    size_t fwd_thread_floats, bwd_thread_floats;
} direct_plan;

static void direct_make_plan(const fastnn_direct_shape *s, direct_plan *p)
{
    p->s = *s;
    p->ho = s->h + 2 * s->pad - s->kh + 1;
    p->wo = s->w + 2 * s->pad - s->kw + 1;
    p->taps = s->kh * s->kw;
    p->nv = (p->wo + 7) / 8;
    p->wo8 = 8 * p->nv;
    p->hp = s->h + 2 * s->pad;
    p->wp = p->wo8 + s->kw - 1;
    if (p->wp < s->w + 2 * s->pad)
        p->wp = s->w + 2 * s->pad;
    /* the AVX-512 kernels read two 16-float vectors from each tap's column on; rows 64-byte
       aligned, so that the first tap's loads do not straddle cache lines */
    p->fit512 = s->kw == 5 && p->wo <= 32;
    if (p->fit512)
        p->wp = ((p->wp > 32 + s->kw - 1 ? p->wp : 32 + s->kw - 1) + 15) & ~15;
    /* 12 accumulators: 3 channels x 4 vectors, 4 x 3, 6 x 2 or 12 x 1 */
    p->vc = p->nv < 4 ? p->nv : 4;
    p->cb = 12 / p->vc;
    p->xp_floats = conv_round16((size_t)p->hp * p->wp);
    /* channels padded for the widest register block (12 here, 6 in the AVX-512 kernel) */
    p->wb_floats = conv_round16((size_t)(s->co + 12) * p->taps);
    p->bb_floats = conv_round16((size_t)s->co + 12);
    p->ys_floats = conv_round16((size_t)s->co * p->ho * p->wo);
    p->fwd_thread_floats = p->xp_floats;
    /* the AVX-512 forward's buffers (conv_direct_avx512.h): the padded input with rows wq
       floats apart, and the outputs of every channel (padded to blocks of 6) at that stride;
       in the workspace whichever build runs, so that its size does not depend on the ISA */
    p->wq = s->w + 2 * s->pad;
    p->nq = (p->ho * p->wq + 63) / 64 * 4;
    p->xq_floats = conv_round16((size_t)16 * p->nq + (size_t)(s->kh - 1) * p->wq + s->kw + 16);
    p->yq_floats = conv_round16((size_t)(s->co + 5) / 6 * 6 * 16 * p->nq + 32);
    if (p->fit512 && p->xq_floats + p->yq_floats > p->fwd_thread_floats)
        p->fwd_thread_floats = p->xq_floats + p->yq_floats;
    /* 12 accumulators: 4 channels x 3 taps, 3 x 4 or 2 x 6, whichever wastes no channels */
    p->gcb = s->co % 4 == 0 ? 4 : s->co % 3 == 0 ? 3 : s->co % 2 == 0 ? 2 : 4;
    p->tb = 12 / p->gcb;
    p->nblk = (s->co + p->gcb - 1) / p->gcb;
    p->tapsp = (p->taps + p->tb - 1) / p->tb * p->tb;
    p->g_floats = (size_t)p->gcb * p->ho * p->wo8;
    p->acc_floats = (size_t)p->nblk * p->tapsp * p->gcb * 8;
    p->dbv_floats = (size_t)p->nblk * p->gcb * 8;
    p->toff_floats = conv_round16((size_t)p->tapsp);   /* ints, as many as floats */
    p->bwd_thread_floats = p->xp_floats + conv_round16(p->g_floats);
}

#if CONV_HAVE_VECTORS

#if CONV_HAVE_AVX2
#define WN(name) direct_avx2_##name
#define WTARGET __attribute__((target("avx2,fma")))
#define WN_AVX2 1
#include "conv_direct_impl.h"
#undef WN
#undef WTARGET
#undef WN_AVX2
#include "conv_direct_avx512.h"
#endif

#define WN(name) direct_portable_##name
#define WTARGET
#define WN_AVX2 0
#include "conv_direct_impl.h"
#undef WN
#undef WTARGET
#undef WN_AVX2

#endif

size_t fastnn_direct_forward_floats(const fastnn_direct_shape *s, int pool, int nthreads)
{
    direct_plan p;
    direct_make_plan(s, &p);
    return CONV_ALIGN_SLACK + p.wb_floats + p.bb_floats
        + (size_t)conv_threads(nthreads) * (p.fwd_thread_floats + (pool ? p.ys_floats : 0));
}

size_t fastnn_direct_backward_floats(const fastnn_direct_shape *s, int nthreads)
{
    direct_plan p;
    size_t floats;
    direct_make_plan(s, &p);
    floats = p.acc_floats + p.dbv_floats + p.toff_floats
        + (size_t)conv_threads(nthreads) * p.bwd_thread_floats;
#if CONV_HAVE_VECTORS && CONV_HAVE_AVX2
    /* whichever build runs: the size must not depend on the ISA (callers cache it) */
    if (p.fit512 && d512_bwd_floats(&p, conv_threads(nthreads)) > floats)
        floats = d512_bwd_floats(&p, conv_threads(nthreads));
#endif
    return CONV_ALIGN_SLACK + floats;
}

void fastnn_direct_forward(const fastnn_direct_shape *s, const float *x, const float *w,
                           const float *bias, int relu, float *y, int pool, int *argmax,
                           float *work, int nthreads)
{
#if CONV_HAVE_VECTORS
    direct_plan p;
    direct_make_plan(s, &p);
    if (p.fwd_thread_floats > 0 && pool)   /* each thread's buffers: xp, then the conv output */
        p.fwd_thread_floats += p.ys_floats;
#if CONV_HAVE_AVX2
    if (p.fit512 && fastnn_conv_use_avx512()) {
        direct512_forward(&p, x, w, bias, relu, y, pool, argmax, conv_align(work),
                          conv_threads(nthreads));
        return;
    }
    if (fastnn_conv_use_avx2()) {
        direct_avx2_forward(&p, x, w, bias, relu, y, pool, argmax, conv_align(work),
                            conv_threads(nthreads));
        return;
    }
#endif
    direct_portable_forward(&p, x, w, bias, relu, y, pool, argmax, conv_align(work),
                            conv_threads(nthreads));
#else
    (void)s; (void)x; (void)w; (void)bias; (void)relu; (void)y; (void)pool; (void)argmax;
    (void)work; (void)nthreads;
#endif
}

void fastnn_direct_backward(const fastnn_direct_shape *s, const float *x, const float *y,
                            const float *dy, int relu, int pool, const int *argmax, float *dw,
                            float *db, float *work, int nthreads)
{
#if CONV_HAVE_VECTORS
    direct_plan p;
    direct_make_plan(s, &p);
#if CONV_HAVE_AVX2
    if (p.fit512 && fastnn_conv_use_avx512()) {
        direct512_backward(&p, x, y, dy, relu, pool, argmax, dw, db, conv_align(work),
                           conv_threads(nthreads));
        return;
    }
    if (fastnn_conv_use_avx2()) {
        direct_avx2_backward(&p, x, y, dy, relu, pool, argmax, dw, db, conv_align(work),
                             conv_threads(nthreads));
        return;
    }
#endif
    direct_portable_backward(&p, x, y, dy, relu, pool, argmax, dw, db, conv_align(work),
                             conv_threads(nthreads));
#else
    (void)s; (void)x; (void)y; (void)dy; (void)relu; (void)pool; (void)argmax; (void)dw;
    (void)db; (void)work; (void)nthreads;
#endif
}
