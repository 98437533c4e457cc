/* The float32 GEMM, written once over an abstract vector type and included by each ISA's .c file
   (gemm_avx512.c, gemm_avx2.c, gemm_portable.c) after it defines:

     GK_SUFFIX             name suffix of the entry point fastnn_sgemm_<GK_SUFFIX>
     GK_TARGET             function attribute selecting the ISA (empty for portable)
     GK_W, GK_MR, GK_NV    vector lanes; micro-tile GK_MR rows x (GK_NV * GK_W) columns
     gk_vec                the vector type, and these operations on it:
       gk_load(p) gk_store(p, v) (unaligned), gk_set1(x), gk_zero(),
       gk_fma(a, b, c) = a*b + c, gk_add(a, b), gk_fma1(a, b, c): the same on one float,
       gk_max0(v) = max(0, v) keeping NaN and -0.0 as they are
     gk_transpose8(src, lds, rows, dst, ldd)
                           dst[j*ldd + i] = src[i*lds + j] for i, j < 8, rows i >= `rows`
                           read as zero; written as 8 rows of 8 in increasing j, so with
                           ldd < 8 each row overwrites the tail of the one before

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

#if GK_MR > 8 || GK_MR < 4 || GK_MR == 5 || GK_MR == 7 || GK_NR % 8 != 0
#error "the packing routines assume GK_MR in {4, 6, 8} and GK_NR a multiple of 8"
#endif

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

/* Cache blocking. KC: depth of one pass over C (each extra pass re-reads C; a B micro-panel of
   KC x NR then streams from L2 rather than sitting in L1, which measured no slower);
   MC: the packed A block (MC x KC) stays in L2; NC: the packed B block (KC x NC) in L2/L3. */
#ifndef GK_KC
#define GK_KC 512
#endif
#ifndef GK_MC
#define GK_MC (GK_MR * 20)
#endif
#ifndef GK_NC
#define GK_NC (GK_NR * 64)
#endif
/* Paths without packed A (see gk_choose_path): dot products for op(A) of at most GK_SMALL_M
   rows with B transposed; scaled rows of B for op(A) of at most GK_SMALL_M_AXPY rows, or for
   B transposed with at most GK_SMALL_N rows (one packed panel). Crossovers measured at
   N, K ~ 500-800 on Zen 3. */
#ifndef GK_SMALL_M
#define GK_SMALL_M 4
#endif
#ifndef GK_SMALL_M_AXPY
#define GK_SMALL_M_AXPY 16
#endif
#ifndef GK_SMALL_N
#define GK_SMALL_N (2 * GK_NR)
#endif

/* What the store of a tile does besides writing acc. */
typedef struct {
    float beta;
    int first, last; /* first K block: C = beta*C + acc (or acc), later blocks: C += acc */
    int bias_mode, relu;
    int plain; /* C = acc: the store alone (worth some 5% when K is short) */
    int fused; /* one K pass, beta == 0: C = epilogue(acc) */
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

/* The store of a whole tile's rows computed in one K pass with beta == 0, the epilogue fixed
   at compile time (the forward layers: bias, then maybe ReLU). */
GK_TARGET GK_INLINE void GK_NAME(gk_store_fused)(const int bias_mode, const int relu,
                                                 const int R, gk_vec acc[GK_MR][GK_NV],
                                                 float *c, ptrdiff_t ldc, int mr,
                                                 const float *bias, int m0, int n0)
{
    int i, v;
    GK_UNROLL
    for (i = 0; i < GK_MR; i++) {
        if (i < R && i < mr) {
            gk_vec bm = bias_mode == 2 ? gk_set1(bias[m0 + i]) : gk_zero();
            GK_UNROLL
            for (v = 0; v < GK_NV; v++) {
                gk_vec x = acc[i][v];
                if (bias_mode == 1)
                    x = gk_add(x, gk_load(bias + n0 + v * GK_W));
                else if (bias_mode == 2)
                    x = gk_add(x, bm);
                if (relu)
                    x = gk_max0(x);
                gk_store(c + i * ldc + v * GK_W, x);
            }
        }
    }
}

/* C tile (mr x nr at row m0, column n0 of C) from kc steps of packed A and B panels, computing
   only the first R (>= mr) rows: edge panels of A do not pay for their zero rows. Every row's
   lanes see the same FMAs whatever R is. */
GK_TARGET GK_INLINE void GK_NAME(gk_tile)(const int R, int kc, const float *GK_RESTRICT a,
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
            if (i < R)
                acc[i][v] = gk_zero();
    }
    for (k = 0; k < kc; k++) {
        gk_vec bv[GK_NV];
        GK_UNROLL
        for (v = 0; v < GK_NV; v++)
            bv[v] = gk_load(b + v * GK_W);
        GK_UNROLL
        for (i = 0; i < GK_MR; i++) {
            if (i < R) {
                gk_vec av = gk_set1(a[i]);
                GK_UNROLL
                for (v = 0; v < GK_NV; v++)
                    acc[i][v] = gk_fma(av, bv[v], acc[i][v]);
            }
        }
        a += GK_MR;
        b += GK_NR;
    }

    if (nr == GK_NR && ep->fused) {
        switch (ep->bias_mode * 2 + ep->relu) {
        case 1: GK_NAME(gk_store_fused)(0, 1, R, acc, c, ldc, mr, bias, m0, n0); return;
        case 2: GK_NAME(gk_store_fused)(1, 0, R, acc, c, ldc, mr, bias, m0, n0); return;
        case 3: GK_NAME(gk_store_fused)(1, 1, R, acc, c, ldc, mr, bias, m0, n0); return;
        case 4: GK_NAME(gk_store_fused)(2, 0, R, acc, c, ldc, mr, bias, m0, n0); return;
        case 5: GK_NAME(gk_store_fused)(2, 1, R, acc, c, ldc, mr, bias, m0, n0); return;
        default: break; /* no epilogue: plain */
        }
    }
    if (nr == GK_NR && ep->plain) { /* nothing but acc to store: no per-vector tests */
        GK_UNROLL
        for (i = 0; i < GK_MR; i++)
            if (i < R && i < mr) {
                GK_UNROLL
                for (v = 0; v < GK_NV; v++)
                    gk_store(c + i * ldc + v * GK_W, acc[i][v]);
            }
        return;
    }
    if (nr == GK_NR) {
        const float *bias_n = ep->bias_mode == 1 ? bias + n0 : NULL;
        GK_UNROLL
        for (i = 0; i < GK_MR; i++)
            if (i < R && i < mr)
                GK_NAME(gk_store_row)(acc[i], c + i * ldc, ep, bias_n,
                                      ep->bias_mode == 2 ? bias[m0 + i] : 0.0f);
    } else {
        /* Columns past the edge: the same store on a padded copy, so the arithmetic matches
           full tiles. */
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
            if (i < R && i < mr)
                GK_NAME(gk_store_row)(acc[i], tile + i * GK_NR, ep, bias_n,
                                      ep->last && ep->bias_mode == 2 ? bias[m0 + i] : 0.0f);
        }
        for (i = 0; i < mr; i++)
            memcpy(c + i * ldc, tile + i * GK_NR, (size_t)nr * sizeof(float));
    }
}

GK_TARGET static void GK_NAME(gk_micro_kernel)(int kc, const float *GK_RESTRICT a,
                                              const float *GK_RESTRICT b, float *c,
                                              ptrdiff_t ldc, int mr, int nr,
                                              const GK_NAME(gk_epilogue) *ep,
                                              const float *bias, int m0, int n0)
{
    if (mr > GK_MR / 2 || GK_MR <= 2)
        GK_NAME(gk_tile)(GK_MR, kc, a, b, c, ldc, mr, nr, ep, bias, m0, n0);
    else if (mr > GK_MR / 4 || GK_MR <= 4)
        GK_NAME(gk_tile)(GK_MR / 2, kc, a, b, c, ldc, mr, nr, ep, bias, m0, n0);
    else
        GK_NAME(gk_tile)(GK_MR / 4, kc, a, b, c, ldc, mr, nr, ep, bias, m0, n0);
}

/* Rows [m0, m0+mc) x depth [k0, k0+kc) of op(A) into GK_MR-row panels: dst[panel][k][i].
   Writes up to 8 floats past the end (transposed stores of GK_MR < 8 rows). */
GK_TARGET static void GK_NAME(gk_pack_a)(int transa, const float *A, ptrdiff_t lda, int m0,
                                        int mc, int k0, int kc, float *GK_RESTRICT dst)
{
    int p, i, k;
    for (p = 0; p < mc; p += GK_MR) {
        int mr = mc - p < GK_MR ? mc - p : GK_MR;
        if (!transa) { /* rows of A become columns of the panel: 8 x 8 transposes */
            const float *src = A + (ptrdiff_t)(m0 + p) * lda + k0;
            for (k = 0; k + 8 <= kc; k += 8)
                gk_transpose8(src + k, lda, mr, dst + k * GK_MR, GK_MR);
            for (; k < kc; k++) {
                for (i = 0; i < mr; i++)
                    dst[k * GK_MR + i] = src[i * lda + k];
                for (; i < GK_MR; i++)
                    dst[k * GK_MR + i] = 0.0f;
            }
        } else {
            const float *src = A + (ptrdiff_t)k0 * lda + m0 + p;
            for (k = 0; k < kc; k++) {
                if (mr == GK_MR) {
                    memcpy(dst + k * GK_MR, src + k * lda, GK_MR * sizeof(float));
                } else {
                    for (i = 0; i < mr; i++)
                        dst[k * GK_MR + i] = src[k * lda + i];
                    for (; i < GK_MR; i++)
                        dst[k * GK_MR + i] = 0.0f;
                }
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
        } else { /* rows of B become columns of the panel: 8 x 8 transposes */
            const float *src = B + (ptrdiff_t)(n0 + q) * ldb + k0;
            int g;
            for (k = 0; k + 8 <= kc; k += 8)
                for (g = 0; g < GK_NR; g += 8)
                    gk_transpose8(g < nr ? src + g * ldb + k : src, ldb, nr - g,
                                  dst + k * GK_NR + g, GK_NR);
            for (; k < kc; k++) {
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
    int jc, pc, ic, jr, ir, mcb;

    /* near-equal row blocks of whole panels: no small leftover block */
    mcb = (me - mb + GK_MC - 1) / GK_MC;
    mcb = ((me - mb + mcb - 1) / mcb + GK_MR - 1) / GK_MR * GK_MR;

    ep.beta = g->beta;
    ep.bias_mode = g->bias_mode;
    ep.relu = g->relu;
    for (jc = nb; jc < ne; jc += GK_NC) {
        int nc = ne - jc < GK_NC ? ne - jc : GK_NC;
        for (pc = 0; pc < g->K; pc += kcb) {
            int kc = g->K - pc < kcb ? g->K - pc : kcb;
            ep.first = pc == 0;
            ep.last = pc + kc == g->K;
            ep.plain = ep.first && ep.beta == 0.0f && !(ep.last && (ep.bias_mode || ep.relu));
            ep.fused = ep.first && ep.last && ep.beta == 0.0f;
            GK_NAME(gk_pack_b)(g->transb, g->B, g->ldb, pc, kc, jc, nc, bpack);
            for (ic = mb; ic < me; ic += mcb) {
                int mc = me - ic < mcb ? me - ic : mcb;
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

/* ---------------------------------------------------------------------------------------
   Unpacked paths, for shapes where packing would cost more than it saves: few rows of op(A)
   (batch-1 inference), or few columns of a transposed B (the 10-way output layer). */

/* The epilogue of one element, for the unpacked paths. */
GK_TARGET GK_INLINE float GK_NAME(gk_finish)(const gk_sgemm_args *g, float v, int m, int n)
{
    float *c = g->C + (ptrdiff_t)m * g->ldc + n;
    if (g->beta != 0.0f)
        v = gk_fma1(g->beta, *c, v);
    if (g->bias_mode == 1)
        v += g->bias[n];
    else if (g->bias_mode == 2)
        v += g->bias[m];
    if (g->relu && v < 0.0f) /* NaN stays NaN */
        v = 0.0f;
    return v;
}

/* R dot products of the contiguous row a (length K) with rows b, b+ldb, ... of B: lane-wise
   vector sums, then the lanes in order, then the K tail. The same steps for every R, so an
   element's value does not depend on how its row of B was grouped. */
GK_TARGET GK_INLINE void GK_NAME(gk_dots)(int R, const float *GK_RESTRICT a,
                                          const float *GK_RESTRICT b, ptrdiff_t ldb, int K,
                                          float *sums)
{
    gk_vec acc[8];
    float lanes[8][GK_W];
    int r, k, l, kv = K / GK_W * GK_W;
    GK_UNROLL
    for (r = 0; r < 8; r++)
        if (r < R)
            acc[r] = gk_zero();
    for (k = 0; k < kv; k += GK_W) {
        gk_vec av = gk_load(a + k);
        GK_UNROLL
        for (r = 0; r < 8; r++)
            if (r < R)
                acc[r] = gk_fma(av, gk_load(b + r * ldb + k), acc[r]);
    }
    GK_UNROLL
    for (r = 0; r < 8; r++)
        if (r < R)
            gk_store(lanes[r], acc[r]);
    for (r = 0; r < R; r++) {
        float s = lanes[r][0];
        for (l = 1; l < GK_W; l++)
            s += lanes[r][l];
        for (k = kv; k < K; k++)
            s = gk_fma1(a[k], b[r * ldb + k], s);
        sums[r] = s;
    }
}

/* C[m, nb:ne] for B transposed (B[n] is a contiguous row): dot products, 8 rows of B at once. */
GK_TARGET static void GK_NAME(gk_dot_path)(const gk_sgemm_args *g, const float *arows,
                                          ptrdiff_t lda, int nb, int ne)
{
    int m, n, j;
    float sums[8];
    for (n = nb; n < ne; n += 8) {
        const float *b = g->B + (ptrdiff_t)n * g->ldb;
        int R = ne - n < 8 ? ne - n : 8;
        for (m = 0; m < g->M; m++) {
            const float *a = arows + (ptrdiff_t)m * lda;
            switch (R) { /* constant R: each case its own unrolled code */
            case 8: GK_NAME(gk_dots)(8, a, b, g->ldb, g->K, sums); break;
            case 7: GK_NAME(gk_dots)(7, a, b, g->ldb, g->K, sums); break;
            case 6: GK_NAME(gk_dots)(6, a, b, g->ldb, g->K, sums); break;
            case 5: GK_NAME(gk_dots)(5, a, b, g->ldb, g->K, sums); break;
            case 4: GK_NAME(gk_dots)(4, a, b, g->ldb, g->K, sums); break;
            case 3: GK_NAME(gk_dots)(3, a, b, g->ldb, g->K, sums); break;
            case 2: GK_NAME(gk_dots)(2, a, b, g->ldb, g->K, sums); break;
            default: GK_NAME(gk_dots)(1, a, b, g->ldb, g->K, sums);
            }
            for (j = 0; j < R; j++)
                g->C[(ptrdiff_t)m * g->ldc + n + j] = GK_NAME(gk_finish)(g, sums[j], m, n + j);
        }
    }
}

/* C[m:m+R, n:n+ncols] (ncols <= NV * GK_W) for B not transposed: rows of B (b, row stride
   ldb, GK_NR readable columns) scaled by elements of op(A) and summed, each lane a
   k-sequential chain of FMAs, so the grouping of rows never changes a value. Only the first
   NV vectors of each row are computed: a 10-way output layer needs one, not GK_NV. */
GK_TARGET GK_INLINE void GK_NAME(gk_axpy_rows)(const int R, const int NV,
                                               const gk_sgemm_args *g, int m, const float *b,
                                               ptrdiff_t ldb, int n, int ncols)
{
    const ptrdiff_t ars = g->transa ? 1 : g->lda, acs = g->transa ? g->lda : 1;
    const float *a = g->A + m * ars;
    gk_vec acc[GK_MR][GK_NV];
    int k, i, v, j;
    GK_UNROLL
    for (i = 0; i < GK_MR; i++)
        GK_UNROLL
        for (v = 0; v < GK_NV; v++)
            if (i < R && v < NV)
                acc[i][v] = gk_zero();
    for (k = 0; k < g->K; k++) {
        gk_vec bv[GK_NV];
        GK_UNROLL
        for (v = 0; v < GK_NV; v++)
            if (v < NV)
                bv[v] = gk_load(b + k * ldb + v * GK_W);
        GK_UNROLL
        for (i = 0; i < GK_MR; i++) {
            if (i < R) {
                gk_vec av = gk_set1(a[i * ars + k * acs]);
                GK_UNROLL
                for (v = 0; v < GK_NV; v++)
                    if (v < NV)
                        acc[i][v] = gk_fma(av, bv[v], acc[i][v]);
            }
        }
    }
    if (ncols == GK_NR) { /* the packed path's vector store */
        GK_NAME(gk_epilogue) ep;
        ep.beta = g->beta;
        ep.first = ep.last = 1;
        ep.plain = ep.fused = 0;
        ep.bias_mode = g->bias_mode;
        ep.relu = g->relu;
        GK_UNROLL
        for (i = 0; i < GK_MR; i++)
            if (i < R)
                GK_NAME(gk_store_row)(acc[i], g->C + (ptrdiff_t)(m + i) * g->ldc + n, &ep,
                                      g->bias_mode == 1 ? g->bias + n : NULL,
                                      g->bias_mode == 2 ? g->bias[m + i] : 0.0f);
        return;
    }
    GK_UNROLL
    for (i = 0; i < GK_MR; i++) {
        if (i < R) {
            float out[GK_NR];
            GK_UNROLL
            for (v = 0; v < GK_NV; v++)
                if (v < NV)
                    gk_store(out + v * GK_W, acc[i][v]);
            for (j = 0; j < ncols; j++)
                g->C[(ptrdiff_t)(m + i) * g->ldc + n + j] =
                    GK_NAME(gk_finish)(g, out[j], m + i, n + j);
        }
    }
}

/* C[mb:me, n:n+ncols], GK_MR rows at a time (the micro-kernel's register budget), NV
   vectors of columns. */
#define GK_AXPY_CASES(NV)                                                                      \
    switch (me - m < GK_MR ? me - m : GK_MR) { /* constant R: unrolled code for each */       \
    GK_AXPY_CASES_8(NV)                                                                        \
    GK_AXPY_CASES_6(NV)                                                                        \
    case 4: GK_NAME(gk_axpy_rows)(4, NV, g, m, b, ldb, n, ncols); break;                      \
    case 3: GK_NAME(gk_axpy_rows)(3, NV, g, m, b, ldb, n, ncols); break;                      \
    case 2: GK_NAME(gk_axpy_rows)(2, NV, g, m, b, ldb, n, ncols); break;                      \
    default: GK_NAME(gk_axpy_rows)(1, NV, g, m, b, ldb, n, ncols);                            \
    }
#if GK_MR >= 8
#define GK_AXPY_CASES_8(NV)                                                                    \
    case 8: GK_NAME(gk_axpy_rows)(8, NV, g, m, b, ldb, n, ncols); break;                      \
    case 7: GK_NAME(gk_axpy_rows)(7, NV, g, m, b, ldb, n, ncols); break;
#else
#define GK_AXPY_CASES_8(NV)
#endif
#if GK_MR >= 6
#define GK_AXPY_CASES_6(NV)                                                                    \
    case 6: GK_NAME(gk_axpy_rows)(6, NV, g, m, b, ldb, n, ncols); break;                      \
    case 5: GK_NAME(gk_axpy_rows)(5, NV, g, m, b, ldb, n, ncols); break;
#else
#define GK_AXPY_CASES_6(NV)
#endif

GK_TARGET static void GK_NAME(gk_axpy_columns)(const gk_sgemm_args *g, int mb, int me,
                                              const float *b, ptrdiff_t ldb, int n, int ncols)
{
    int m;
    for (m = mb; m < me; m += GK_MR) {
        if (ncols <= GK_W) {
            GK_AXPY_CASES(1)
        } else {
            GK_AXPY_CASES(GK_NV)
        }
    }
}
#undef GK_AXPY_CASES
#undef GK_AXPY_CASES_8
#undef GK_AXPY_CASES_6

/* C[mb:me, nb:ne] from rows of B scaled by elements of op(A), op(A) read in place. Columns
   come GK_NR at a time straight from B when it is not transposed; otherwise, and for the last
   few columns (reading B's rows past their end could fault), from a packed zero-padded panel. */
GK_TARGET static void GK_NAME(gk_axpy_path)(const gk_sgemm_args *g, int mb, int me, int nb,
                                           int ne)
{
    float *panel = NULL;
    int n;
    for (n = nb; n < ne; n += GK_NR) {
        int ncols = ne - n < GK_NR ? ne - n : GK_NR;
        if (!g->transb && ncols == GK_NR) {
            GK_NAME(gk_axpy_columns)(g, mb, me, g->B + n, g->ldb, n, GK_NR);
            continue;
        }
        if (panel == NULL) /* room for the transposing pack's 8-float overrun */
            panel = (float *)gk_scratch(((size_t)g->K * GK_NR + 16) * sizeof(float));
        if (panel == NULL) { /* out of memory: these columns without a panel */
            gk_sgemm_unpacked(g, mb, me, n, n + ncols);
            continue;
        }
        GK_NAME(gk_pack_b)(g->transb, g->B, g->ldb, 0, g->K, n, ncols, panel);
        GK_NAME(gk_axpy_columns)(g, mb, me, panel, GK_NR, n, ncols);
    }
    if (panel != NULL)
        gk_scratch_release(panel);
}

enum { GK_PACKED, GK_DOT, GK_AXPY };

/* The dot path reads every element of B once per call, from L2 or L3: for a thread split it
   weighs like this many rows of FMAs (measured: a 256 x 512 B, batch 1, runs 5.0 -> 3.0 us
   on two threads). */
#define GK_DOT_WEIGHT 4

/* Which path: depends on the shape only, never on the thread count. */
static int GK_NAME(gk_choose_path)(const gk_sgemm_args *g)
{
    if (g->transb && g->M <= GK_SMALL_M)
        return GK_DOT; /* transposing all of B would cost more than the products */
    if ((!g->transb && g->M <= GK_SMALL_M_AXPY) || (g->transb && g->N <= GK_SMALL_N))
        return GK_AXPY; /* packing op(A) would cost more than it saves */
    return GK_PACKED;
}

/* C[:, nb:ne] by the dot path. */
static void GK_NAME(gk_run_dot)(const gk_sgemm_args *g, int nb, int ne)
{
    float *arows;
    int m, k;
    if (!g->transa) {
        GK_NAME(gk_dot_path)(g, g->A, g->lda, nb, ne);
        return;
    }
    /* the few rows of op(A) made contiguous */
    arows = (float *)gk_scratch((size_t)g->M * g->K * sizeof(float));
    if (arows == NULL) {
        gk_sgemm_unpacked(g, 0, g->M, nb, ne);
        return;
    }
    for (m = 0; m < g->M; m++)
        for (k = 0; k < g->K; k++)
            arows[(ptrdiff_t)m * g->K + k] = g->A[(ptrdiff_t)k * g->lda + m];
    GK_NAME(gk_dot_path)(g, arows, g->K, nb, ne);
    gk_scratch_release(arows);
}

/* Runs the thread block `blk` of a tm x tn grid of the packed path. */
static void GK_NAME(gk_run_block)(const gk_sgemm_args *g, int mb, int me, int nb, int ne,
                                  int kcb)
{
    size_t mcap, ncap, kcap;
    float *ws;

    mcap = (size_t)(me - mb < GK_MC ? me - mb : GK_MC);
    mcap = (mcap + GK_MR - 1) / GK_MR * GK_MR;
    ncap = (size_t)(ne - nb < GK_NC ? ne - nb : GK_NC);
    ncap = (ncap + GK_NR - 1) / GK_NR * GK_NR;
    kcap = (size_t)kcb;
    ws = (float *)gk_scratch(((mcap + ncap) * kcap + 16) * sizeof(float));
    if (ws == NULL) { /* no memory for the panels (a few MB at most): compute without them */
        gk_sgemm_unpacked(g, mb, me, nb, ne);
        return;
    }
    /* B's panels first: ncap*kcap is a multiple of 16 floats, so A stays 64-byte aligned */
    GK_NAME(gk_block)(g, mb, me, nb, ne, kcb, ws + ncap * kcap, ws);
    gk_scratch_release(ws);
}

/* Block `part` of the tm x tn grid over C, cut at whole tiles (the dot path: whole groups of
   8 columns). */
static void GK_NAME(gk_run_part)(const gk_sgemm_args *g, int path, int tm, int tn, int part,
                                 int kcb)
{
    int mb, me, nb, ne;
    gk_split(g->M, GK_MR, tm, part / tn, &mb, &me);
    gk_split(g->N, path == GK_DOT ? 8 : GK_NR, tn, part % tn, &nb, &ne);
    if (mb >= me || nb >= ne)
        return;
    if (path == GK_PACKED)
        GK_NAME(gk_run_block)(g, mb, me, nb, ne, kcb);
    else if (path == GK_AXPY)
        GK_NAME(gk_axpy_path)(g, mb, me, nb, ne);
    else
        GK_NAME(gk_run_dot)(g, nb, ne);
}

void GK_NAME(fastnn_sgemm)(const gk_sgemm_args *g)
{
    int path = GK_NAME(gk_choose_path)(g);
    int tm = 1, tn = 1, kblocks, kcb, nparts;

    kblocks = (g->K + GK_KC - 1) / GK_KC;
    kcb = (g->K + kblocks - 1) / kblocks;
    if (path == GK_DOT) /* a few rows: split N only. Streaming B, not the FMAs, is the cost
                           here: each element of B counts as GK_DOT_WEIGHT rows' work */
        gk_thread_grid(1, g->N, g->K * (g->M > GK_DOT_WEIGHT ? g->M : GK_DOT_WEIGHT), 1, 8,
                       g->nthreads, &tm, &tn);
    else
        gk_thread_grid(g->M, g->N, g->K, GK_MR, GK_NR, g->nthreads, &tm, &tn);
    nparts = tm * tn;
    if (nparts == 1) {
        GK_NAME(gk_run_part)(g, path, 1, 1, 0, kcb);
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(nparts)
        {
            int part;
            for (part = omp_get_thread_num(); part < nparts; part += omp_get_num_threads())
                GK_NAME(gk_run_part)(g, path, tm, tn, part, kcb);
        }
#else
        int part;
        for (part = 0; part < nparts; part++)
            GK_NAME(gk_run_part)(g, path, tm, tn, part, kcb);
#endif
    }
}
