/* The float32 GEMM, written once over an abstract vector type and included by each ISA's .c file
   (gemm_avx512.c, gemm_avx2.c, gemm_portable.c) after it defines:

     GK_SUFFIX             name suffix of the entry point fastnn_sgemm_<GK_SUFFIX>
     GK_TARGET             function attribute selecting the ISA (empty for portable)
     GK_W, GK_MR, GK_NV    vector lanes; micro-tile GK_MR rows x (GK_NV * GK_W) columns
     gk_vec                the vector type, and these operations on it:
       gk_load(p) gk_store(p, v) (unaligned), gk_set1(x), gk_zero(),
       gk_fma(a, b, c) = a*b + c, gk_add(a, b),
       gk_max0(v) = max(0, v) keeping NaN and -0.0 as they are

   Algorithm (BLIS-like): C is cut into thread blocks; each thread packs its own panels of
   op(A) (GK_MR rows, k-major) and op(B) (GK_NR columns, k-major, zero padded) and runs the
   register-blocked micro-kernel over GK_MR x GK_NR tiles. K is cut into near-equal blocks of at
   most GK_KC; the first block applies beta, the last the bias and ReLU, all in the store of the
   tile that is already in registers. Edge tiles run the same micro-kernel and the same store on
   a small buffer, so every C element gets the same arithmetic wherever it lies, and the K
   blocking depends only on K: results do not depend on the thread count. */

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GK_NR (GK_NV * GK_W)
#define GK_CAT_(a, b) a##_##b
#define GK_CAT(a, b) GK_CAT_(a, b)
#define GK_NAME(x) GK_CAT(x, GK_SUFFIX)

#if defined(__clang__)
#define GK_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && __GNUC__ >= 8
#define GK_UNROLL _Pragma("GCC unroll 16")
#else
#define GK_UNROLL
#endif

#if defined(__GNUC__) || defined(__clang__)
#define GK_INLINE static inline __attribute__((always_inline))
#define GK_RESTRICT __restrict__
#else
#define GK_INLINE static inline
#define GK_RESTRICT
#endif

/* Cache blocking. KC: a B micro-panel (KC x NR) stays in L1 while the A block streams from L2;
   MC: the packed A block (MC x KC) stays in L2; NC: the packed B block (KC x NC) in L2/L3. */
#ifndef GK_KC
#define GK_KC 256
#endif
#ifndef GK_MC
#define GK_MC (GK_MR * 20)
#endif
#ifndef GK_NC
#define GK_NC (GK_NR * 64)
#endif

/* What the store of a tile does besides writing acc. */
typedef struct {
    float beta;
    int first, last; /* first K block: C = beta*C + acc (or acc), later blocks: C += acc */
    int bias_mode, relu;
} GK_NAME(gk_epilogue);

/* One row of a tile: combine the accumulators with C and apply the epilogue. bias_n points at
   GK_NR valid bias values (mode 1), bias_m is this row's bias (mode 2). */
GK_TARGET GK_INLINE void GK_NAME(gk_store_row)(const gk_vec *acc, float *GK_RESTRICT c,
                                               const GK_NAME(gk_epilogue) *ep,
                                               const float *bias_n, float bias_m)
{
    int v;
    GK_UNROLL
    for (v = 0; v < GK_NV; v++) {
        gk_vec x = acc[v];
        if (!ep->first)
            x = gk_add(gk_load(c + v * GK_W), x);
        else if (ep->beta != 0.0f)
            x = gk_fma(gk_set1(ep->beta), gk_load(c + v * GK_W), x);
        if (ep->last) {
            if (ep->bias_mode == 1)
                x = gk_add(x, gk_load(bias_n + v * GK_W));
            else if (ep->bias_mode == 2)
                x = gk_add(x, gk_set1(bias_m));
            if (ep->relu)
                x = gk_max0(x);
        }
        gk_store(c + v * GK_W, x);
    }
}

/* C tile (mr x nr at row m0, column n0 of C) from kc steps of packed A and B panels. */
GK_TARGET static void GK_NAME(gk_micro_kernel)(int kc, const float *GK_RESTRICT a,
                                              const float *GK_RESTRICT b, float *c,
                                              ptrdiff_t ldc, int mr, int nr,
                                              const GK_NAME(gk_epilogue) *ep,
                                              const float *bias, int m0, int n0)
{
    gk_vec acc[GK_MR][GK_NV];
    int i, v, k;

    GK_UNROLL
    for (i = 0; i < GK_MR; i++) {
        GK_UNROLL
        for (v = 0; v < GK_NV; v++)
            acc[i][v] = gk_zero();
    }
    for (k = 0; k < kc; k++) {
        gk_vec bv[GK_NV];
        GK_UNROLL
        for (v = 0; v < GK_NV; v++)
            bv[v] = gk_load(b + v * GK_W);
        GK_UNROLL
        for (i = 0; i < GK_MR; i++) {
            gk_vec av = gk_set1(a[i]);
            GK_UNROLL
            for (v = 0; v < GK_NV; v++)
                acc[i][v] = gk_fma(av, bv[v], acc[i][v]);
        }
        a += GK_MR;
        b += GK_NR;
    }

    if (mr == GK_MR && nr == GK_NR) {
        const float *bias_n = ep->bias_mode == 1 ? bias + n0 : NULL;
        GK_UNROLL
        for (i = 0; i < GK_MR; i++)
            GK_NAME(gk_store_row)(acc[i], c + i * ldc, ep, bias_n,
                                  ep->bias_mode == 2 ? bias[m0 + i] : 0.0f);
    } else {
        /* Edge tile: same store on a padded copy, so the arithmetic matches full tiles. */
        float tile[GK_MR * GK_NR];
        float bias_n[GK_NR];
        int j;
        int read_c = !ep->first || ep->beta != 0.0f;
        if (read_c)
            for (i = 0; i < mr; i++)
                memcpy(tile + i * GK_NR, c + i * ldc, (size_t)nr * sizeof(float));
        if (ep->last && ep->bias_mode == 1) {
            for (j = 0; j < GK_NR; j++)
                bias_n[j] = j < nr ? bias[n0 + j] : 0.0f;
        }
        GK_UNROLL
        for (i = 0; i < GK_MR; i++) {
            if (i < mr)
                GK_NAME(gk_store_row)(acc[i], tile + i * GK_NR, ep, bias_n,
                                      ep->last && ep->bias_mode == 2 ? bias[m0 + i] : 0.0f);
        }
        for (i = 0; i < mr; i++)
            memcpy(c + i * ldc, tile + i * GK_NR, (size_t)nr * sizeof(float));
    }
}

/* Rows [m0, m0+mc) x depth [k0, k0+kc) of op(A) into GK_MR-row panels: dst[panel][k][i]. */
GK_TARGET static void GK_NAME(gk_pack_a)(int transa, const float *A, ptrdiff_t lda, int m0,
                                        int mc, int k0, int kc, float *GK_RESTRICT dst)
{
    int p, i, k;
    for (p = 0; p < mc; p += GK_MR) {
        int mr = mc - p < GK_MR ? mc - p : GK_MR;
        if (!transa) {
            const float *src = A + (ptrdiff_t)(m0 + p) * lda + k0;
            for (k = 0; k < kc; k++) {
                for (i = 0; i < mr; i++)
                    dst[k * GK_MR + i] = src[i * lda + k];
                for (; i < GK_MR; i++)
                    dst[k * GK_MR + i] = 0.0f;
            }
        } else {
            const float *src = A + (ptrdiff_t)k0 * lda + m0 + p;
            for (k = 0; k < kc; k++) {
                for (i = 0; i < mr; i++)
                    dst[k * GK_MR + i] = src[k * lda + i];
                for (; i < GK_MR; i++)
                    dst[k * GK_MR + i] = 0.0f;
            }
        }
        dst += (ptrdiff_t)GK_MR * kc;
    }
}

/* Depth [k0, k0+kc) x columns [n0, n0+nc) of op(B) into GK_NR-column panels: dst[panel][k][j]. */
GK_TARGET static void GK_NAME(gk_pack_b)(int transb, const float *B, ptrdiff_t ldb, int k0,
                                        int kc, int n0, int nc, float *GK_RESTRICT dst)
{
    int q, j, k;
    for (q = 0; q < nc; q += GK_NR) {
        int nr = nc - q < GK_NR ? nc - q : GK_NR;
        if (!transb) {
            const float *src = B + (ptrdiff_t)k0 * ldb + n0 + q;
            for (k = 0; k < kc; k++) {
                if (nr == GK_NR) {
                    int v;
                    GK_UNROLL
                    for (v = 0; v < GK_NV; v++)
                        gk_store(dst + k * GK_NR + v * GK_W, gk_load(src + k * ldb + v * GK_W));
                } else {
                    for (j = 0; j < nr; j++)
                        dst[k * GK_NR + j] = src[k * ldb + j];
                    for (; j < GK_NR; j++)
                        dst[k * GK_NR + j] = 0.0f;
                }
            }
        } else {
            const float *src = B + (ptrdiff_t)(n0 + q) * ldb + k0;
            for (k = 0; k < kc; k++) {
                for (j = 0; j < nr; j++)
                    dst[k * GK_NR + j] = src[j * ldb + k];
                for (; j < GK_NR; j++)
                    dst[k * GK_NR + j] = 0.0f;
            }
        }
        dst += (ptrdiff_t)GK_NR * kc;
    }
}

/* The block [mb, me) x [nb, ne) of C, on the calling thread. */
GK_TARGET static void GK_NAME(gk_block)(const gk_sgemm_args *g, int mb, int me, int nb, int ne,
                                       int kcb, float *apack, float *bpack)
{
    GK_NAME(gk_epilogue) ep;
    int jc, pc, ic, jr, ir;

    ep.beta = g->beta;
    ep.bias_mode = g->bias_mode;
    ep.relu = g->relu;
    for (jc = nb; jc < ne; jc += GK_NC) {
        int nc = ne - jc < GK_NC ? ne - jc : GK_NC;
        for (pc = 0; pc < g->K; pc += kcb) {
            int kc = g->K - pc < kcb ? g->K - pc : kcb;
            ep.first = pc == 0;
            ep.last = pc + kc == g->K;
            GK_NAME(gk_pack_b)(g->transb, g->B, g->ldb, pc, kc, jc, nc, bpack);
            for (ic = mb; ic < me; ic += GK_MC) {
                int mc = me - ic < GK_MC ? me - ic : GK_MC;
                GK_NAME(gk_pack_a)(g->transa, g->A, g->lda, ic, mc, pc, kc, apack);
                for (jr = 0; jr < nc; jr += GK_NR) {
                    int nr = nc - jr < GK_NR ? nc - jr : GK_NR;
                    const float *bp = bpack + (ptrdiff_t)jr * kc;
                    for (ir = 0; ir < mc; ir += GK_MR) {
                        int mr = mc - ir < GK_MR ? mc - ir : GK_MR;
                        GK_NAME(gk_micro_kernel)(kc, apack + (ptrdiff_t)ir * kc, bp,
                                                 g->C + (ptrdiff_t)(ic + ir) * g->ldc + jc + jr,
                                                 g->ldc, mr, nr, &ep, g->bias, ic + ir,
                                                 jc + jr);
                    }
                }
            }
        }
    }
}

/* Runs the thread block `blk` of a tm x tn grid; returns 0, or -1 when out of memory. */
static int GK_NAME(gk_run_block)(const gk_sgemm_args *g, int tm, int tn, int blk, int kcb)
{
    int mb, me, nb, ne;
    size_t mcap, ncap, kcap;
    float *ws;

    gk_split(g->M, GK_MR, tm, blk / tn, &mb, &me);
    gk_split(g->N, GK_NR, tn, blk % tn, &nb, &ne);
    if (mb >= me || nb >= ne)
        return 0;
    mcap = (size_t)(me - mb < GK_MC ? me - mb : GK_MC);
    mcap = (mcap + GK_MR - 1) / GK_MR * GK_MR;
    ncap = (size_t)(ne - nb < GK_NC ? ne - nb : GK_NC);
    ncap = (ncap + GK_NR - 1) / GK_NR * GK_NR;
    kcap = (size_t)kcb;
    ws = (float *)gk_scratch((mcap + ncap) * kcap * sizeof(float) + 64);
    if (ws == NULL)
        return -1;
    /* B's panels first: ncap*kcap is a multiple of 16 floats, so A stays 64-byte aligned */
    GK_NAME(gk_block)(g, mb, me, nb, ne, kcb, ws + ncap * kcap, ws);
    gk_scratch_release(ws);
    return 0;
}

void GK_NAME(fastnn_sgemm)(const gk_sgemm_args *g)
{
    int tm, tn, nblocks, kblocks, kcb, failed = 0;

    kblocks = (g->K + GK_KC - 1) / GK_KC;
    kcb = (g->K + kblocks - 1) / kblocks;
    gk_thread_grid(g->M, g->N, g->K, GK_MR, GK_NR, g->nthreads, &tm, &tn);
    nblocks = tm * tn;
    if (nblocks == 1) {
        failed = GK_NAME(gk_run_block)(g, 1, 1, 0, kcb);
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(nblocks) reduction(| : failed)
        {
            int blk;
            for (blk = omp_get_thread_num(); blk < nblocks; blk += omp_get_num_threads())
                failed |= GK_NAME(gk_run_block)(g, tm, tn, blk, kcb);
        }
#else
        int blk;
        for (blk = 0; blk < nblocks; blk++)
            failed |= GK_NAME(gk_run_block)(g, tm, tn, blk, kcb);
#endif
    }
    if (failed) /* no memory for the panels (a few MB at most): compute without them */
        gk_sgemm_unpacked(g);
}
