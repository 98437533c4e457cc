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

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int wino_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#if defined(__GNUC__) || defined(__clang__)
#define WINO_HAVE_VECTORS 1
#else
#define WINO_HAVE_VECTORS 0
#endif

/* Sizes shared by the passes; all counts of floats are multiples of 16 (64-byte blocks). */
typedef struct {
    fastnn_wino_shape s;
    int ho, wo, th, tw, hp, wp;   /* output size, tiles per row/column, padded input size */
    int cp, kp, cb, kb;           /* channels rounded up to 8, and in blocks of 8 */
    int chunk, parts;             /* samples per chunk; partitions of the batch for dW */
    size_t xb_sample, xb_floats, v_floats, m_floats, u_floats;
    size_t fwd_thread_floats, bwd_thread_floats;
} wino_plan;

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Per-thread working set (packed input, V and M for one chunk) of about this many floats, so
   that it stays in a core's L2 cache beside the transformed weights. */
#define WINO_CHUNK_FLOATS (96 * 1024)
/* The batch is cut into this many parts (fewer for small batches) for the weight gradient;
   each part is summed by one thread and the parts are added in order. */
#define WINO_PARTS 4

static void wino_make_plan(const fastnn_wino_shape *s, wino_plan *p)
{
    size_t per_tile, per_sample;
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
    p->xb_sample = (size_t)p->cb * p->hp * p->wp * 8;
    per_tile = (size_t)64 * (p->cp + p->kp + p->cp);
    per_sample = per_tile * p->th * p->tw + p->xb_sample;
    p->chunk = (int)(WINO_CHUNK_FLOATS / per_sample);
    if (p->chunk < 1)
        p->chunk = 1;
    if (p->chunk > s->n)
        p->chunk = s->n;
    p->parts = s->n < WINO_PARTS ? s->n : WINO_PARTS;
    p->xb_floats = round16((size_t)p->chunk * p->xb_sample);
    p->v_floats = round16((size_t)64 * p->chunk * p->th * p->tw * p->cp);
    p->m_floats = round16((size_t)64 * p->chunk * p->th * p->tw * p->kp);
    p->u_floats = round16((size_t)64 * p->cp * p->kp);
    p->fwd_thread_floats = p->xb_floats + p->v_floats + p->m_floats;
    p->bwd_thread_floats = p->xb_floats + p->v_floats + p->m_floats + p->v_floats;
}

static const double WG[8][5] = {
    {1.0, 0.0, 0.0, 0.0, 0.0},
    {-2.0 / 9, -2.0 / 9, -2.0 / 9, -2.0 / 9, -2.0 / 9},
    {-2.0 / 9, 2.0 / 9, -2.0 / 9, 2.0 / 9, -2.0 / 9},
    {1.0 / 90, 1.0 / 45, 2.0 / 45, 4.0 / 45, 8.0 / 45},
    {1.0 / 90, -1.0 / 45, 2.0 / 45, -4.0 / 45, 8.0 / 45},
    {32.0 / 45, 16.0 / 45, 8.0 / 45, 4.0 / 45, 2.0 / 45},
    {32.0 / 45, -16.0 / 45, 8.0 / 45, -4.0 / 45, 2.0 / 45},
    {0.0, 0.0, 0.0, 0.0, 1.0},
};

/* U[f][ci][co] = (G g G^T)[f] (or UT[f][co][ci]), zero in the padding channels. Called inside a
   parallel region (work-shared over channel pairs). */
static void wino_transform_weights(const wino_plan *p, const float *w, float *U, int transpose)
{
    int idx, total = p->kp * p->cp;
    size_t fs = (size_t)p->cp * p->kp;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (idx = 0; idx < total; idx++) {
        int o = idx / p->cp, c = idx % p->cp;
        size_t at = transpose ? (size_t)o * p->cp + c : (size_t)c * p->kp + o;
        double t[8][5], u;
        int i, j, k;
        if (o >= p->s.co || c >= p->s.ci) {
            for (i = 0; i < 64; i++)
                U[i * fs + at] = 0.0f;
            continue;
        }
        {
            const float *g = w + ((size_t)o * p->s.ci + c) * 25;
            for (i = 0; i < 8; i++)
                for (k = 0; k < 5; k++) {
                    double sum = 0.0;
                    for (j = 0; j < 5; j++)
                        sum += WG[i][j] * g[j * 5 + k];
                    t[i][k] = sum;
                }
            for (i = 0; i < 8; i++)
                for (j = 0; j < 8; j++) {
                    u = 0.0;
                    for (k = 0; k < 5; k++)
                        u += t[i][k] * WG[j][k];
                    U[(size_t)(8 * i + j) * fs + at] = (float)u;
                }
        }
    }
}

/* dW = G^T (sum of the parts' dU, in order) G and db = sum of the parts' db. Called inside a
   parallel region. */
static void wino_finish_dw(const wino_plan *p, const float *dU, const float *dbp, float *dw,
                           float *db)
{
    int idx, total = p->s.co * p->s.ci;
    size_t fs = (size_t)p->cp * p->kp;
#ifdef _OPENMP
#pragma omp for schedule(static) nowait
#endif
    for (idx = 0; idx < total; idx++) {
        int o = idx / p->s.ci, c = idx % p->s.ci;
        size_t at = (size_t)o * p->cp + c;
        double du[8][8], t[5][8];
        int i, j, k, part;
        for (i = 0; i < 64; i++) {
            double sum = 0.0;
            for (part = 0; part < p->parts; part++)
                sum += dU[(size_t)part * p->u_floats + i * fs + at];
            du[i / 8][i % 8] = sum;
        }
        for (k = 0; k < 5; k++)
            for (j = 0; j < 8; j++) {
                double sum = 0.0;
                for (i = 0; i < 8; i++)
                    sum += WG[i][k] * du[i][j];
                t[k][j] = sum;
            }
        for (k = 0; k < 5; k++)
            for (j = 0; j < 5; j++) {
                double sum = 0.0;
                for (i = 0; i < 8; i++)
                    sum += t[k][i] * WG[i][j];
                dw[(size_t)idx * 25 + k * 5 + j] = (float)sum;
            }
    }
#ifdef _OPENMP
#pragma omp single nowait
#endif
    {
        int o, part;
        for (o = 0; o < p->s.co; o++) {
            double sum = 0.0;
            for (part = 0; part < p->parts; part++)
                sum += dbp[(size_t)part * p->kp + o];
            db[o] = (float)sum;
        }
    }
}

#if WINO_HAVE_VECTORS

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));

#define vload(p) ((v8)(*(const v8u *)(p)))
#define vstore(p, v) (*(v8u *)(p) = (v))
#define vzero() ((v8){0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f})
#define vbroadcast(x) __extension__({ float x_ = (x); (v8){x_, x_, x_, x_, x_, x_, x_, x_}; })
/* max(v, 0) that keeps NaN, as np.maximum does */
#define vmax0(v) __extension__({ v8 v_ = (v); (v8)((v8i)v_ & ~(v8i)(v_ < vzero())); })

#if defined(__clang__)
#define WN_UNROLL _Pragma("unroll")
#else
#define WN_UNROLL _Pragma("GCC unroll 16")
#endif

#if defined(__x86_64__) || defined(__i386__)
#define WN(name) wino_avx2_##name
#define WTARGET __attribute__((target("avx2,fma")))
#include "conv_winograd_impl.h"
#undef WN
#undef WTARGET
#define WINO_HAVE_AVX2 1
#else
#define WINO_HAVE_AVX2 0
#endif

#define WN(name) wino_portable_##name
#define WTARGET
#include "conv_winograd_impl.h"
#undef WN
#undef WTARGET

static int wino_chosen = -1;   /* 1: AVX2, 0: portable, -1: not chosen yet */

static int wino_cpu_has_avx2(void)
{
#if WINO_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int wino_use_avx2(void)
{
    if (wino_chosen < 0) {
        const char *env = getenv("FASTNN_CONV_ISA");
        wino_chosen = wino_cpu_has_avx2() && !(env != NULL && strcmp(env, "portable") == 0);
    }
    return wino_chosen;
}

const char *fastnn_wino_set_isa(const char *name)
{
    if (name == NULL || name[0] == '\0')
        wino_chosen = -1;
    else
        wino_chosen = strcmp(name, "avx2") == 0 && wino_cpu_has_avx2();
    return fastnn_wino_isa();
}

int fastnn_wino_available(void) { return 1; }

const char *fastnn_wino_isa(void) { return wino_use_avx2() ? "avx2" : "portable"; }

#else /* no vector extensions: never called (fastnn_wino_available() is 0) */

int fastnn_wino_available(void) { return 0; }
const char *fastnn_wino_isa(void) { return "none"; }
const char *fastnn_wino_set_isa(const char *name) { (void)name; return "none"; }

#endif

/* The workspace starts at the first 64-byte boundary of the caller's buffer. */
#define WINO_ALIGN_SLACK 16

static float *wino_align(float *work)
{
    size_t addr = (size_t)work;
    return (float *)((addr + 63) & ~(size_t)63);
}

static int wino_threads(int nthreads)
{
#ifdef _OPENMP
    return nthreads > 0 ? nthreads : omp_get_max_threads();
#else
    (void)nthreads;
    return 1;
#endif
}

size_t fastnn_wino_forward_floats(const fastnn_wino_shape *s, int nthreads)
{
    wino_plan p;
    wino_make_plan(s, &p);
    return WINO_ALIGN_SLACK + p.u_floats + (size_t)wino_threads(nthreads) * p.fwd_thread_floats;
}

size_t fastnn_wino_backward_floats(const fastnn_wino_shape *s, int nthreads)
{
    wino_plan p;
    wino_make_plan(s, &p);
    return WINO_ALIGN_SLACK + p.u_floats * (1 + (size_t)p.parts) + round16((size_t)p.parts * p.kp)
        + (size_t)wino_threads(nthreads) * p.bwd_thread_floats;
}

void fastnn_wino_forward(const fastnn_wino_shape *s, const float *x, const float *w,
                         const float *bias, int relu, float *y, float *work, int nthreads)
{
#if WINO_HAVE_VECTORS
    wino_plan p;
    int nt = wino_threads(nthreads);
    wino_make_plan(s, &p);
#if WINO_HAVE_AVX2
    if (wino_use_avx2()) {
        wino_avx2_forward(&p, x, w, bias, relu, y, wino_align(work), nt);
        return;
    }
#endif
    wino_portable_forward(&p, x, w, bias, relu, y, wino_align(work), nt);
#else
    (void)s; (void)x; (void)w; (void)bias; (void)relu; (void)y; (void)work; (void)nthreads;
#endif
}

void fastnn_wino_backward(const fastnn_wino_shape *s, const float *x, const float *w,
                          const float *y, const float *dy, int relu, float *dx, float *dw,
                          float *db, float *work, int nthreads)
{
#if WINO_HAVE_VECTORS
    wino_plan p;
    int nt = wino_threads(nthreads);
    wino_make_plan(s, &p);
#if WINO_HAVE_AVX2
    if (wino_use_avx2()) {
        wino_avx2_backward(&p, x, w, y, dy, relu, dx, dw, db, wino_align(work), nt);
        return;
    }
#endif
    wino_portable_backward(&p, x, w, y, dy, relu, dx, dw, db, wino_align(work), nt);
#else
    (void)s; (void)x; (void)w; (void)y; (void)dy; (void)relu; (void)dx; (void)dw; (void)db;
    (void)work; (void)nthreads;
#endif
}
