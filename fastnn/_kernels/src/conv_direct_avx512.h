/* The direct one-input-channel kernels (see conv_direct.h) for AVX-512, on the shapes of image
   models' first layers: 5-wide kernels, output rows of at most 32 columns (two 16-float
   vectors). Included by conv_direct.c after the AVX2 build, whose pad_input and pool_plane it
   reuses.

   Forward: two output rows of six channels at a time (24 accumulators), so each input vector
   loaded serves both rows; each output is the same chain of FMAs in tap order as the AVX2
   kernel's, so both give the same bits. A 2x2 max-pool is done in registers, on the way out.
   Backward (dW, db): the batch is cut into a fixed number of parts (not one per thread, so the
   sums do not depend on the thread count), each summed in vectors over the output columns and
   added in part order at the end; 3 or 4 channels x one kernel row (5 taps) of accumulators. */

#define D512 __attribute__((target("avx512f,avx2,fma")))

/* Parts the batch is cut into for dW and db (fewer for smaller batches). */
#define D512_PARTS 4

static int d512_parts(int n) { return n < D512_PARTS ? n : D512_PARTS; }

/* Channels per register block of the dW kernel: 4 where co divides by 4, else 3. */
static int d512_gcb(int co) { return co % 4 == 0 ? 4 : 3; }

/* Workspace of the backward pass, floats: accumulators [part][cop][taps][16] and db's
   [part][cop][16], then per thread the padded input and the gradient planes [cop][ho][32]. */
static size_t d512_bwd_floats(const direct_plan *p, int nthreads)
{
    int gcb = d512_gcb(p->s.co), cop = (p->s.co + gcb - 1) / gcb * gcb;
    size_t parts = (size_t)d512_parts(p->s.n);
    size_t per_thread = p->xp_floats + conv_round16((size_t)cop * p->ho * 32);
    return parts * (size_t)cop * (p->taps + 1) * 16 + (size_t)nthreads * per_thread;
}

static inline __mmask16 d512_mask(int lanes)
{
    return lanes >= 16 ? (__mmask16)0xFFFF : lanes <= 0 ? 0 : (__mmask16)((1u << lanes) - 1);
}

/* max(v, 0) that keeps NaN (and -0), as vmax0 */
D512 static inline __m512 d512_relu(__m512 v)
{
    return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ),
                              _mm512_setzero_ps());
}

/* acc[r][c][v] = output rows r = 0 (and 1 when two) of six channels, columns 16 v .. 16 v + 15,
   from xr (the padded input at the first output row) and wb (six kernels, taps floats apart).
   Each output sums its taps in row-major order, one FMA each. */
D512 static inline __attribute__((always_inline)) void d512_rows(
    const float *xr, ptrdiff_t wp, int kh, const float *wb, int taps, int two,
    __m512 acc[2][6][2])
{
    int k, j, c, v;
    WN_UNROLL for (c = 0; c < 6; c++) WN_UNROLL for (v = 0; v < 2; v++)
        acc[0][c][v] = acc[1][c][v] = _mm512_setzero_ps();
    for (k = 0; k < kh + two; k++) {
        const float *xrow = xr + (ptrdiff_t)k * wp;
        int top = k < kh, bottom = two && k >= 1;   /* input row k is kernel row k / k - 1 */
        WN_UNROLL for (j = 0; j < 5; j++) {
            __m512 xv[2];
            xv[0] = _mm512_loadu_ps(xrow + j);
            xv[1] = _mm512_loadu_ps(xrow + j + 16);
            if (top)
                WN_UNROLL for (c = 0; c < 6; c++) {
                    __m512 a = _mm512_set1_ps(wb[c * taps + k * 5 + j]);
                    WN_UNROLL for (v = 0; v < 2; v++)
                        acc[0][c][v] = _mm512_fmadd_ps(a, xv[v], acc[0][c][v]);
                }
            if (bottom)
                WN_UNROLL for (c = 0; c < 6; c++) {
                    __m512 a = _mm512_set1_ps(wb[c * taps + (k - 1) * 5 + j]);
                    WN_UNROLL for (v = 0; v < 2; v++)
                        acc[1][c][v] = _mm512_fmadd_ps(a, xv[v], acc[1][c][v]);
                }
        }
    }
}

/* The 2x2 max-pool of rows a (2 vectors) and b below it: each window's maximum into out and its
   index in the plane into arg (lanes q < pw), for pooled row r of a plane wo columns wide.
   Window order (a, 2q), (a, 2q+1), (b, 2q), (b, 2q+1); the first maximum wins and NaN wins over
   numbers, as pool_plane. */
D512 static inline void d512_pool2(const __m512 a[2], const __m512 b[2], int r, int wo, int pw,
                                   float *out, int *arg)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    __m512 win[4], best;
    __m512i off = _mm512_setzero_si512();
    __mmask16 store = d512_mask(pw);
    int t;
    win[0] = _mm512_permutex2var_ps(a[0], even, a[1]);
    win[1] = _mm512_permutex2var_ps(a[0], odd, a[1]);
    win[2] = _mm512_permutex2var_ps(b[0], even, b[1]);
    win[3] = _mm512_permutex2var_ps(b[0], odd, b[1]);
    best = win[0];
    for (t = 1; t < 4; t++) {
        __mmask16 take = _mm512_cmp_ps_mask(win[t], best, _CMP_GT_OQ)
            | (_mm512_cmp_ps_mask(win[t], win[t], _CMP_UNORD_Q)
               & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
        best = _mm512_mask_mov_ps(best, take, win[t]);
        off = _mm512_mask_mov_epi32(off, take, _mm512_set1_epi32((t >> 1) * wo + (t & 1)));
    }
    _mm512_mask_storeu_ps(out, store, best);
    /* the window's first index is 2 r wo + 2 q; even holds 2 q */
    _mm512_mask_storeu_epi32(arg, store, _mm512_add_epi32(
        _mm512_set1_epi32(2 * r * wo), _mm512_add_epi32(even, off)));
}

/* Forward for pool 0 or 2, along flattened rows: the padded input's rows lie wq = W + 2 pad
   floats apart, and output (oh, ow) is taken at position oh * wq + ow of a plane with that
   stride (positions with ow >= wo are computed and dropped), so tap (i, j) of 16 consecutive
   positions is one load at offset i * wq + j. Blocks of 6 channels x 4 vectors (24
   accumulators): per tap 4 loads and 6 broadcasts feed 24 FMAs, and ~86% of the lanes are
   outputs on a 28 x 28 input (the row-pair kernel below: 75%, 12 broadcasts per 24 FMAs).
   Each output is the same chain of FMAs in tap order, then bias and ReLU: the same bits. */
D512 static inline __attribute__((always_inline)) void d512_flat_block(
    const float *xq, int wq, int kh, int kw, const float *wb, int taps, __m512 acc[6][4])
{
    int i, j, c, v;
    WN_UNROLL for (c = 0; c < 6; c++) WN_UNROLL for (v = 0; v < 4; v++)
        acc[c][v] = _mm512_setzero_ps();
    for (i = 0; i < kh; i++)
        for (j = 0; j < kw; j++) {
            const float *xt = xq + (ptrdiff_t)i * wq + j;
            __m512 xv[4];
            WN_UNROLL for (v = 0; v < 4; v++)
                xv[v] = _mm512_loadu_ps(xt + 16 * v);
            WN_UNROLL for (c = 0; c < 6; c++) {
                __m512 a = _mm512_set1_ps(wb[c * taps + i * kw + j]);
                WN_UNROLL for (v = 0; v < 4; v++)
                    acc[c][v] = _mm512_fmadd_ps(a, xv[v], acc[c][v]);
            }
        }
}

D512 static void direct512_flat_forward(const direct_plan *p, const float *x, const float *wb,
                                        const float *bb, int relu, float *y, int pool,
                                        int *argmax, float *thread_base, int nthreads)
{
    size_t plane = (size_t)p->ho * p->wo, sq = (size_t)16 * p->nq;
    int ph = pool ? p->ho / pool : 0, pw = pool ? p->wo / pool : 0;
    int taps = p->taps, wq = p->wq;
    int parts = conv_sample_parts(p->s.n, p->s.co, 6, (double)p->s.co * p->ho * p->wo * taps,
                                  nthreads);
    int unit, units = p->s.n * parts;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(conv_team(nthreads, units))
#endif
    for (unit = 0; unit < units; unit++) {
        int n = unit / parts, part = unit % parts, cb, ce;
        float *xq = thread_base + (size_t)conv_thread_num() * p->fwd_thread_floats;
        float *yq = xq + p->xq_floats;
        const float *src = x + (size_t)n * p->s.h * p->s.w;
        int o0, q0, c, v, r;
        conv_part_channels(p->s.co, 6, part, parts, &cb, &ce);
        memset(xq, 0, sizeof(float) * p->xq_floats);
        for (r = 0; r < p->s.h; r++)
            memcpy(xq + (size_t)(r + p->s.pad) * wq + p->s.pad, src + (size_t)r * p->s.w,
                   sizeof(float) * p->s.w);
        for (o0 = cb; o0 < ce; o0 += 6) {
            int nch = p->s.co - o0 < 6 ? p->s.co - o0 : 6;
            for (q0 = 0; q0 < p->nq; q0 += 4) {
                __m512 acc[6][4];
                d512_flat_block(xq + 16 * q0, wq, p->s.kh, p->s.kw, wb + (size_t)o0 * taps,
                                taps, acc);
                for (c = 0; c < nch; c++) {
                    __m512 b = _mm512_set1_ps(bb[o0 + c]);
                    for (v = 0; v < 4; v++) {
                        __m512 t = _mm512_add_ps(acc[c][v], b);
                        if (relu)
                            t = d512_relu(t);
                        _mm512_storeu_ps(yq + (size_t)(o0 + c) * sq + 16 * (q0 + v), t);
                    }
                }
            }
            for (c = o0; c < o0 + nch; c++) {
                const float *yc = yq + (size_t)c * sq;
                if (pool == 2) {
                    size_t at = ((size_t)n * p->s.co + c) * ph * pw;
                    for (r = 0; r < ph; r++) {
                        __m512 a[2], b2[2];
                        const float *top = yc + (size_t)(2 * r) * wq;
                        a[0] = _mm512_loadu_ps(top);
                        a[1] = _mm512_loadu_ps(top + 16);
                        b2[0] = _mm512_loadu_ps(top + wq);
                        b2[1] = _mm512_loadu_ps(top + wq + 16);
                        d512_pool2(a, b2, r, p->wo, pw, y + at + (size_t)r * pw,
                                   argmax + at + (size_t)r * pw);
                    }
                } else {
                    float *yo = y + ((size_t)n * p->s.co + c) * plane;
                    for (r = 0; r < p->ho; r++)
                        memcpy(yo + (size_t)r * p->wo, yc + (size_t)r * wq,
                               sizeof(float) * p->wo);
                }
            }
        }
    }
}

/* Pools 0 and 2 run along flattened rows (direct512_flat_forward); any other pool here, two
   output rows of six channels at a time into a plane buffer, then pool_plane. */
D512 static void direct512_forward(const direct_plan *p, const float *x, const float *w,
                                   const float *bias, int relu, float *y, int pool,
                                   int *argmax, float *work, int nthreads)
{
    float *wb = work;                          /* [co + 12][taps], zero-padded channels */
    float *bb = wb + p->wb_floats;             /* [co + 12] */
    float *thread_base = bb + p->bb_floats;
    size_t plane = (size_t)p->ho * p->wo;
    int taps = p->taps, o;
    memset(wb, 0, sizeof(float) * (p->wb_floats + p->bb_floats));
    memcpy(wb, w, sizeof(float) * (size_t)p->s.co * taps);
    for (o = 0; o < p->s.co; o++)
        bb[o] = bias != NULL ? bias[o] : 0.0f;
    if (pool == 0 || pool == 2) {
        direct512_flat_forward(p, x, wb, bb, relu, y, pool, argmax, thread_base, nthreads);
        return;
    }
    /* fewer samples than threads (batch-1 inference): each sample's channels are cut into
       parts too, at whole register blocks, so every output is computed as it is otherwise */
    int ph = p->ho / pool, pw = p->wo / pool;
    int parts = conv_sample_parts(p->s.n, p->s.co, 6, (double)p->s.co * p->ho * p->wo * taps,
                                  nthreads);
    int unit, units = p->s.n * parts;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(conv_team(nthreads, units))
#endif
    for (unit = 0; unit < units; unit++) {
        int n = unit / parts, part = unit % parts, cb, ce;
        float *xp = thread_base + (size_t)conv_thread_num() * p->fwd_thread_floats;
        float *ys = xp + p->xp_floats;  /* the convolution's planes, pooled after */
        int oh, o0, c, r, v;
        conv_part_channels(p->s.co, 6, part, parts, &cb, &ce);
        direct_avx2_pad_input(p, x, n, xp);
        for (oh = 0; oh < p->ho; oh += 2) {
            int two = oh + 1 < p->ho;
            for (o0 = cb; o0 < ce; o0 += 6) {
                int nch = p->s.co - o0 < 6 ? p->s.co - o0 : 6;
                __m512 acc[2][6][2];
                d512_rows(xp + (size_t)oh * p->wp, p->wp, p->s.kh, wb + (size_t)o0 * taps, taps,
                          two, acc);
                for (c = 0; c < nch; c++) {
                    __m512 b = _mm512_set1_ps(bb[o0 + c]);
                    for (r = 0; r < 2; r++)
                        for (v = 0; v < 2; v++) {
                            acc[r][c][v] = _mm512_add_ps(acc[r][c][v], b);
                            if (relu)
                                acc[r][c][v] = d512_relu(acc[r][c][v]);
                        }
                    for (r = 0; r < 1 + two; r++)
                        for (v = 0; v < 2; v++)
                            _mm512_mask_storeu_ps(
                                ys + (o0 + c) * plane + (size_t)(oh + r) * p->wo + 16 * v,
                                d512_mask(p->wo - 16 * v), acc[r][c][v]);
                }
            }
        }
        for (c = cb; c < ce; c++) {
            size_t at = ((size_t)n * p->s.co + c) * ph * pw;
            direct_avx2_pool_plane(ys + c * plane, p->wo, pool, ph, pw, y + at, argmax + at);
        }
    }
}

/* Sample n's gradient at the convolution's output into g ([cop][ho][32], zero beyond the real
   columns and channels): dy masked by y > 0 when relu (pool 0), or each k x k window's pooled
   gradient placed at its argmax (pool k; entries outside their window are dropped). */
D512 static void d512_grad(const direct_plan *p, const float *y, const float *dy, int relu,
                           int pool, const int *argmax, int n, int cop, float *g)
{
    int co = p->s.co, wo = p->wo, c, r, q, i;
    memset(g, 0, sizeof(float) * (size_t)cop * p->ho * 32);
    if (pool == 0) {
        size_t plane = (size_t)p->ho * wo;
        for (c = 0; c < co; c++)
            for (r = 0; r < p->ho; r++) {
                size_t at = ((size_t)n * co + c) * plane + (size_t)r * wo;
                int v;
                for (v = 0; v < 2; v++) {
                    __mmask16 m = d512_mask(wo - 16 * v);
                    __m512 d = _mm512_maskz_loadu_ps(m, dy + at + 16 * v);
                    if (relu)
                        d = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(
                            _mm512_maskz_loadu_ps(m, y + at + 16 * v), _mm512_setzero_ps(),
                            _CMP_GT_OQ), d);
                    _mm512_storeu_ps(g + ((size_t)c * p->ho + r) * 32 + 16 * v, d);
                }
            }
        return;
    }
    {
        int k = pool, ph = p->ho / k, pw = p->wo / k;
        /* even / odd columns back into rows: lanes 0..15 and 16..31 of the interleaving */
        const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22,
                                             7, 23);
        const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
        const __m512i lanes2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                                 26, 28, 30);
        for (c = 0; c < co; c++) {
            size_t at = ((size_t)n * co + c) * ph * pw;
            float *gc = g + (size_t)c * p->ho * 32;
            for (r = 0; r < ph; r++) {
                const float *dyr = dy + at + (size_t)r * pw, *yr = y + at + (size_t)r * pw;
                const int *ar = argmax + at + (size_t)r * pw;
                if (k == 2) {
                    __mmask16 m = d512_mask(pw);
                    __m512 d = _mm512_maskz_loadu_ps(m, dyr);
                    __m512i off = _mm512_sub_epi32(
                        _mm512_maskz_loadu_epi32(m, ar),
                        _mm512_add_epi32(_mm512_set1_epi32(2 * r * wo), lanes2));
                    __m512 e0, o0, e1, o1;
                    if (relu)
                        d = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(
                            _mm512_maskz_loadu_ps(m, yr), _mm512_setzero_ps(), _CMP_GT_OQ), d);
                    /* argmax - the window's first index: 0, 1, wo or wo + 1 */
                    e0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(
                        off, _mm512_setzero_si512()), d);
                    o0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(
                        off, _mm512_set1_epi32(1)), d);
                    e1 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(
                        off, _mm512_set1_epi32(wo)), d);
                    o1 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(
                        off, _mm512_set1_epi32(wo + 1)), d);
                    _mm512_storeu_ps(gc + (size_t)(2 * r) * 32, _mm512_permutex2var_ps(e0, lo, o0));
                    _mm512_storeu_ps(gc + (size_t)(2 * r) * 32 + 16,
                                     _mm512_permutex2var_ps(e0, hi, o0));
                    _mm512_storeu_ps(gc + (size_t)(2 * r + 1) * 32,
                                     _mm512_permutex2var_ps(e1, lo, o1));
                    _mm512_storeu_ps(gc + (size_t)(2 * r + 1) * 32 + 16,
                                     _mm512_permutex2var_ps(e1, hi, o1));
                    continue;
                }
                for (q = 0; q < pw; q++) {
                    /* argmax = (k r + i) * wo + k q + j, with i, j in [0, k) */
                    int off = ar[q] - k * r * wo - k * q;
                    if ((relu && !(yr[q] > 0.0f)) || off < 0)
                        continue;
                    for (i = 0; i < k && off >= wo; i++)
                        off -= wo;
                    if (i >= k || off >= k)
                        continue;
                    gc[(size_t)(k * r + i) * 32 + k * q + off] += dyr[q];
                }
            }
        }
    }
}

/* dW: acc[c][t] (+)= sum over the output positions of g[c] * (input under tap t) for G channels
   (planes gs floats apart) and the 5 taps of one kernel row (xr: the padded input at that row);
   acc_mem [G][taps][16]. g, xr and the input's rows are 64-byte aligned. */
#define D512_DWK(G)                                                                             \
    D512 static void d512_dwk_##G(const direct_plan *p, const float *g, size_t gs,              \
                                  const float *xr, float *acc_mem)                             \
    {                                                                                           \
        __m512 acc[G][5];                                                                       \
        int c, t, r, v, nv = p->wo > 16 ? 2 : 1;                                                \
        WN_UNROLL for (c = 0; c < G; c++) WN_UNROLL for (t = 0; t < 5; t++)                     \
            acc[c][t] = _mm512_loadu_ps(acc_mem + ((size_t)c * p->taps + t) * 16);              \
        for (r = 0; r < p->ho; r++)                                                             \
            for (v = 0; v < nv; v++) {                                                          \
                const float *gr = g + (size_t)r * 32 + 16 * v;                                  \
                const float *xv_at = xr + (size_t)r * p->wp + 16 * v;                           \
                __m512 gv[G];                                                                   \
                /* the taps' shifted vectors from two aligned loads (unaligned ones would */    \
                /* straddle cache lines and set the pace) */                                    \
                __m512i lo = _mm512_load_si512(xv_at), hi = _mm512_load_si512(xv_at + 16);      \
                WN_UNROLL for (c = 0; c < G; c++) gv[c] = _mm512_load_ps(gr + c * gs);          \
                WN_UNROLL for (t = 0; t < 5; t++) {                                             \
                    __m512 xv = _mm512_castsi512_ps(_mm512_alignr_epi32(hi, lo, t));            \
                    WN_UNROLL for (c = 0; c < G; c++)                                           \
                        acc[c][t] = _mm512_fmadd_ps(gv[c], xv, acc[c][t]);                      \
                }                                                                               \
            }                                                                                   \
        WN_UNROLL for (c = 0; c < G; c++) WN_UNROLL for (t = 0; t < 5; t++)                     \
            _mm512_storeu_ps(acc_mem + ((size_t)c * p->taps + t) * 16, acc[c][t]);              \
    }
D512_DWK(4) D512_DWK(3)
#undef D512_DWK

/* The 16 lanes of v added in a fixed order. */
static inline float d512_hsum(const float *v)
{
    return direct_avx2_hsum(v) + direct_avx2_hsum(v + 8);
}

D512 static void direct512_backward(const direct_plan *p, const float *x, const float *y,
                                    const float *dy, int relu, int pool, const int *argmax,
                                    float *dw, float *db, float *work, int nthreads)
{
    int co = p->s.co, taps = p->taps, gcb = d512_gcb(co), cop = (co + gcb - 1) / gcb * gcb;
    int parts = d512_parts(p->s.n), part, o, t;
    size_t plane_g = (size_t)p->ho * 32;
    float *acc = work;                                        /* [part][cop][taps][16] */
    float *dbv = acc + (size_t)parts * cop * taps * 16;       /* [part][cop][16] */
    float *thread_base = dbv + (size_t)parts * cop * 16;
    size_t per_thread = p->xp_floats + conv_round16((size_t)cop * plane_g);
    memset(acc, 0, sizeof(float) * (size_t)parts * cop * (taps + 1) * 16);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads)
#endif
    for (part = 0; part < parts; part++) {
        float *xp = thread_base + (size_t)conv_thread_num() * per_thread;
        float *g = xp + p->xp_floats;
        float *pacc = acc + (size_t)part * cop * taps * 16;
        float *pdb = dbv + (size_t)part * cop * 16;
        int begin = (int)((long long)p->s.n * part / parts);
        int end = (int)((long long)p->s.n * (part + 1) / parts);
        int n, c, b, i;
        size_t q;
        for (n = begin; n < end; n++) {
            direct_avx2_pad_input(p, x, n, xp);
            d512_grad(p, y, dy, relu, pool, argmax, n, cop, g);
            for (c = 0; c < co; c++) {   /* db: row by row, 16 columns a lane */
                __m512 sum = _mm512_loadu_ps(pdb + (size_t)c * 16);
                for (q = 0; q < plane_g; q += 16)
                    sum = _mm512_add_ps(sum, _mm512_loadu_ps(g + (size_t)c * plane_g + q));
                _mm512_storeu_ps(pdb + (size_t)c * 16, sum);
            }
            for (b = 0; b < cop; b += gcb)
                for (i = 0; i < p->s.kh; i++) {
                    const float *gb = g + (size_t)b * plane_g;
                    const float *xr = xp + (size_t)i * p->wp;
                    float *ab = pacc + ((size_t)b * taps + (size_t)i * 5) * 16;
                    if (gcb == 4)
                        d512_dwk_4(p, gb, plane_g, xr, ab);
                    else
                        d512_dwk_3(p, gb, plane_g, xr, ab);
                }
        }
    }
    for (o = 0; o < co; o++) {   /* the parts, added in order */
        float sum_b = 0.0f;
        for (t = 0; t < taps; t++) {
            float sum = 0.0f;
            for (part = 0; part < parts; part++)
                sum += d512_hsum(acc + (((size_t)part * cop + o) * taps + t) * 16);
            dw[(size_t)o * taps + t] = sum;
        }
        for (part = 0; part < parts; part++)
            sum_b += d512_hsum(dbv + ((size_t)part * cop + o) * 16);
        db[o] = sum_b;
    }
}
