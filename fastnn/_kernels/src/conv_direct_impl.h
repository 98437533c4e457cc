/* The direct one-input-channel kernels (see conv_direct.h), written once over 8-float vectors and
   included by conv_direct.c once per instruction set (see conv_simd.h).

   xp is one sample's input, zero-padded, rows wp floats apart; output row oh, columns
   8 v .. 8 v + 7 read xp rows oh .. oh + kH - 1 from column 8 v on. */

/* Forward: VC vectors of one output row (8 VC columns from the one at xr) for CB channels;
   wb holds the CB channels' kernels (taps floats each), `valid` columns are stored. The tap
   loop and the store are spelled out for the common cases (5 taps a row, all CB channels real)
   so that the accumulators stay in registers. */
#define WN_DFWD_TAPS(KW)                                                                        \
    for (i = 0; i < p->s.kh; i++) {                                                             \
        const float *xrow = xr + (ptrdiff_t)i * p->wp;                                          \
        const float *wrow = wb + i * (KW);                                                      \
        for (j = 0; j < (KW); j++) {                                                            \
            v8 xv[VC_];                                                                         \
            WN_UNROLL for (v = 0; v < VC_; v++) xv[v] = vload(xrow + j + 8 * v);                \
            WN_UNROLL for (c = 0; c < CB_; c++) {                                               \
                v8 a = vbroadcast(wrow[c * taps + j]);                                          \
                WN_UNROLL for (v = 0; v < VC_; v++) acc[c][v] += a * xv[v];                     \
            }                                                                                   \
        }                                                                                       \
    }
#define WN_DFWD_STORE(NCH)                                                                      \
    for (c = 0; c < (NCH); c++) {                                                               \
        v8 b = vbroadcast(bias[c]);                                                             \
        WN_UNROLL for (v = 0; v < VC_; v++) {                                                   \
            v8 out = acc[c][v] + b;                                                             \
            if (relu)                                                                           \
                out = vmax0(out);                                                               \
            if (8 * v + 8 <= valid) {                                                           \
                vstore(y + c * ys + 8 * v, out);                                                \
            } else if (8 * v < valid) {                                                         \
                float tail[8];                                                                  \
                vstore(tail, out);                                                              \
                memcpy(y + c * ys + 8 * v, tail, sizeof(float) * (size_t)(valid - 8 * v));      \
            }                                                                                   \
        }                                                                                       \
    }
#define WN_DFWD(VC, CB)                                                                         \
    WTARGET static void WN(dfwd_##VC##_##CB)(const direct_plan *p, const float *xr,             \
                                             const float *wb, const float *bias, int relu,      \
                                             int nch, float *y, ptrdiff_t ys, int valid)        \
    {                                                                                           \
        enum { VC_ = VC, CB_ = CB };                                                            \
        v8 acc[CB][VC];                                                                         \
        int c, v, i, j, taps = p->taps;                                                         \
        WN_UNROLL for (c = 0; c < CB; c++) WN_UNROLL for (v = 0; v < VC; v++)                   \
            acc[c][v] = vzero();                                                                \
        if (p->s.kw == 5) {                                                                     \
            WN_DFWD_TAPS(5)                                                                     \
        } else {                                                                                \
            WN_DFWD_TAPS(p->s.kw)                                                               \
        }                                                                                       \
        if (nch == CB) {                                                                        \
            WN_UNROLL WN_DFWD_STORE(CB)                                                         \
        } else {                                                                                \
            WN_DFWD_STORE(nch)                                                                  \
        }                                                                                       \
    }
WN_DFWD(4, 3) WN_DFWD(3, 4) WN_DFWD(2, 6) WN_DFWD(1, 12)
WN_DFWD(3, 3) WN_DFWD(2, 3) WN_DFWD(1, 3)
#undef WN_DFWD
#undef WN_DFWD_TAPS
#undef WN_DFWD_STORE

WTARGET static void WN(dfwd)(const direct_plan *p, int vc, const float *xr, const float *wb,
                             const float *bias, int relu, int nch, float *y, ptrdiff_t ys,
                             int valid)
{
    switch (p->cb * 16 + vc) {
    case 3 * 16 + 4: WN(dfwd_4_3)(p, xr, wb, bias, relu, nch, y, ys, valid); break;
    case 3 * 16 + 3: WN(dfwd_3_3)(p, xr, wb, bias, relu, nch, y, ys, valid); break;
    case 3 * 16 + 2: WN(dfwd_2_3)(p, xr, wb, bias, relu, nch, y, ys, valid); break;
    case 3 * 16 + 1: WN(dfwd_1_3)(p, xr, wb, bias, relu, nch, y, ys, valid); break;
    case 4 * 16 + 3: WN(dfwd_3_4)(p, xr, wb, bias, relu, nch, y, ys, valid); break;
    case 6 * 16 + 2: WN(dfwd_2_6)(p, xr, wb, bias, relu, nch, y, ys, valid); break;
    default: WN(dfwd_1_12)(p, xr, wb, bias, relu, nch, y, ys, valid); break;
    }
}

/* dW: acc[c][t] (+)= sum over the output positions of g[c] * (input under tap t), for G
   channels (g rows wo8 floats apart, channels gs apart) and T taps (offsets toff into xp). */
#define WN_DWK(G, T)                                                                            \
    WTARGET static void WN(dwk_##G##_##T)(const direct_plan *p, const float *g, ptrdiff_t gs,   \
                                          const float *xp, const int *toff, float *acc_mem)     \
    {                                                                                           \
        v8 acc[G][T];                                                                           \
        int c, t, r, v;                                                                         \
        WN_UNROLL for (c = 0; c < G; c++) WN_UNROLL for (t = 0; t < T; t++)                     \
            acc[c][t] = vload(acc_mem + 8 * (c * T + t));                                       \
        for (r = 0; r < p->ho; r++) {                                                           \
            const float *gr = g + (ptrdiff_t)r * p->wo8;                                        \
            const float *xr = xp + (ptrdiff_t)r * p->wp;                                        \
            for (v = 0; v < p->nv; v++) {                                                       \
                v8 gv[G];                                                                       \
                WN_UNROLL for (c = 0; c < G; c++) gv[c] = vload(gr + c * gs + 8 * v);           \
                WN_UNROLL for (t = 0; t < T; t++) {                                             \
                    v8 xv = vload(xr + toff[t] + 8 * v);                                        \
                    WN_UNROLL for (c = 0; c < G; c++) acc[c][t] += gv[c] * xv;                  \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        WN_UNROLL for (c = 0; c < G; c++) WN_UNROLL for (t = 0; t < T; t++)                     \
            vstore(acc_mem + 8 * (c * T + t), acc[c][t]);                                       \
    }
WN_DWK(4, 3) WN_DWK(3, 4) WN_DWK(2, 6)
#undef WN_DWK

WTARGET static void WN(dwk)(const direct_plan *p, const float *g, ptrdiff_t gs, const float *xp,
                            const int *toff, float *acc)
{
    switch (p->gcb) {
    case 4: WN(dwk_4_3)(p, g, gs, xp, toff, acc); break;
    case 3: WN(dwk_3_4)(p, g, gs, xp, toff, acc); break;
    default: WN(dwk_2_6)(p, g, gs, xp, toff, acc); break;
    }
}

/* Sample n's input plane into xp (zero borders). */
WTARGET static void WN(pad_input)(const direct_plan *p, const float *x, int n, float *xp)
{
    int r;
    const float *src = x + (size_t)n * p->s.h * p->s.w;
    if (p->s.pad > 0 || p->wp != p->s.w || p->hp != p->s.h)
        memset(xp, 0, sizeof(float) * p->xp_floats);
    for (r = 0; r < p->s.h; r++)
        memcpy(xp + (size_t)(r + p->s.pad) * p->wp + p->s.pad, src + (size_t)r * p->s.w,
               sizeof(float) * p->s.w);
}

/* Max-pool rows [0, ph) of one plane (rows wo floats apart) with k x k windows, stride k, into
   out (ph x pw) and arg (each maximum's index in the plane). The first maximum in row-major
   window order wins and NaN wins over numbers, as the reference's np.argmax. */
WTARGET static void WN(pool_plane)(const float *src, int wo, int k, int ph, int pw, float *out,
                                   int *arg)
{
    int r, c, i, j;
    for (r = 0; r < ph; r++) {
        c = 0;
#if WN_AVX2
        if (k == 2 && pw >= 8) {
            const __m256i lanes2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
            for (; c < pw; c += 8) {
                if (c + 8 > pw)
                    c = pw - 8;   /* the last block overlaps the one before: same values */
                const float *r0 = src + (size_t)(2 * r) * wo + 2 * c, *r1 = r0 + wo;
                __m256 a0 = _mm256_loadu_ps(r0), a1 = _mm256_loadu_ps(r0 + 8);
                __m256 b0 = _mm256_loadu_ps(r1), b1 = _mm256_loadu_ps(r1 + 8);
                /* even and odd columns, in window order (r0, 2c), (r0, 2c+1), (r1, ...) */
                __m256 win[4];
                __m256 best, take;
                __m256i off = _mm256_setzero_si256();
                int t;
                win[0] = _mm256_castpd_ps(_mm256_permute4x64_pd(
                    _mm256_castps_pd(_mm256_shuffle_ps(a0, a1, 0x88)), 0xD8));
                win[1] = _mm256_castpd_ps(_mm256_permute4x64_pd(
                    _mm256_castps_pd(_mm256_shuffle_ps(a0, a1, 0xDD)), 0xD8));
                win[2] = _mm256_castpd_ps(_mm256_permute4x64_pd(
                    _mm256_castps_pd(_mm256_shuffle_ps(b0, b1, 0x88)), 0xD8));
                win[3] = _mm256_castpd_ps(_mm256_permute4x64_pd(
                    _mm256_castps_pd(_mm256_shuffle_ps(b0, b1, 0xDD)), 0xD8));
                best = win[0];
                for (t = 1; t < 4; t++) {
                    int o = (t >> 1) * wo + (t & 1);
                    take = _mm256_or_ps(_mm256_cmp_ps(win[t], best, _CMP_GT_OQ),
                                        _mm256_and_ps(_mm256_cmp_ps(win[t], win[t], _CMP_UNORD_Q),
                                                      _mm256_cmp_ps(best, best, _CMP_ORD_Q)));
                    best = _mm256_blendv_ps(best, win[t], take);
                    off = _mm256_castps_si256(_mm256_blendv_ps(
                        _mm256_castsi256_ps(off), _mm256_castsi256_ps(_mm256_set1_epi32(o)), take));
                }
                _mm256_storeu_ps(out + (size_t)r * pw + c, best);
                _mm256_storeu_si256((__m256i *)(arg + (size_t)r * pw + c), _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_set1_epi32(2 * r * wo + 2 * c), lanes2), off));
            }
        }
#endif
        for (; c < pw; c++) {
            int at = k * r * wo + k * c, bi = at;
            float best = src[at];
            for (i = 0; i < k; i++)
                for (j = 0; j < k; j++) {
                    int q = at + i * wo + j;
                    float v = src[q];
                    if (v > best || (v != v && best == best)) {
                        best = v;
                        bi = q;
                    }
                }
            out[(size_t)r * pw + c] = best;
            arg[(size_t)r * pw + c] = bi;
        }
    }
}

/* pool == 0: y = conv(x) (+ bias, ReLU). pool = k > 0: the k x k max-pool (stride k) of that
   instead, into y (N, Co, Ho/k, Wo/k) and argmax (index into each Ho x Wo plane); the
   convolution's output stays in a per-thread buffer in cache. */
WTARGET static void WN(forward)(const direct_plan *p, const float *x, const float *w,
                                const float *bias, int relu, float *y, int pool, int *argmax,
                                float *work, int nthreads)
{
    float *wb = work;                          /* [cop][taps], zero-padded channels */
    float *bb = wb + p->wb_floats;             /* [cop] */
    float *thread_base = bb + p->bb_floats;
    size_t plane = (size_t)p->ho * p->wo;
    int ph = pool ? p->ho / pool : 0, pw = pool ? p->wo / pool : 0;
    int o;
    memset(wb, 0, sizeof(float) * (p->wb_floats + p->bb_floats));
    memcpy(wb, w, sizeof(float) * (size_t)p->s.co * p->taps);
    for (o = 0; o < p->s.co; o++)
        bb[o] = bias != NULL ? bias[o] : 0.0f;
    /* fewer samples than threads (batch-1 inference): each sample's channels are cut into
       parts too, at whole register blocks, so every output is computed as it is otherwise */
    int parts = conv_sample_parts(p->s.n, p->s.co, p->cb,
                                  (double)p->s.co * p->ho * p->wo * p->taps, nthreads);
    int unit, units = p->s.n * parts;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(conv_team(nthreads, units))
#endif
    for (unit = 0; unit < units; unit++) {
        int n = unit / parts, part = unit % parts, cb, ce;
        float *xp = thread_base + (size_t)conv_thread_num() * p->fwd_thread_floats;
        float *ys = pool ? xp + p->xp_floats : y + (size_t)n * p->s.co * plane;
        int oh, o0, v0, c;
        conv_part_channels(p->s.co, p->cb, part, parts, &cb, &ce);
        WN(pad_input)(p, x, n, xp);
        for (oh = 0; oh < p->ho; oh++)
            for (o0 = cb; o0 < ce; o0 += p->cb) {
                int nch = p->s.co - o0 < p->cb ? p->s.co - o0 : p->cb;
                float *yrow = ys + (size_t)o0 * plane + (size_t)oh * p->wo;
                for (v0 = 0; v0 < p->nv; v0 += p->vc) {
                    int vc = p->nv - v0 < p->vc ? p->nv - v0 : p->vc;
                    WN(dfwd)(p, vc, xp + (size_t)oh * p->wp + 8 * v0, wb + (size_t)o0 * p->taps,
                             bb + o0, relu, nch, yrow + 8 * v0, (ptrdiff_t)plane,
                             p->wo - 8 * v0);
                }
            }
        if (pool)
            for (c = cb; c < ce; c++) {
                size_t at = ((size_t)n * p->s.co + c) * ph * pw;
                WN(pool_plane)(ys + c * plane, p->wo, pool, ph, pw, y + at, argmax + at);
            }
    }
}

/* The gradient of channels o0 .. o0 + nch - 1 of sample n, masked by y > 0 when relu, into g
   ([gcb][ho][wo8], zero beyond the real columns and channels); their sums added into dbv. */
WTARGET static void WN(mask_grad)(const direct_plan *p, const float *y, const float *dy,
                                  int relu, int n, int o0, int nch, float *g, float *dbv)
{
    size_t plane = (size_t)p->ho * p->wo;
    int c, r, v, l;
    memset(g, 0, sizeof(float) * p->g_floats);
    for (c = 0; c < nch; c++) {
        const float *dyc = dy + ((size_t)n * p->s.co + o0 + c) * plane;
        const float *yc = y != NULL ? y + ((size_t)n * p->s.co + o0 + c) * plane : NULL;
        v8 sum = vload(dbv + 8 * c);
        for (r = 0; r < p->ho; r++) {
            float *gr = g + ((size_t)c * p->ho + r) * p->wo8;
            for (v = 0; v < p->nv; v++) {
                size_t at = (size_t)r * p->wo + 8 * v;
                v8 gv;
                if (8 * v + 8 <= p->wo) {
                    gv = vload(dyc + at);
                    if (relu)
                        gv = (v8)((v8i)gv & (v8i)(vload(yc + at) > vzero()));
                } else {
                    float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    for (l = 0; 8 * v + l < p->wo; l++)
                        tail[l] = relu && !(yc[at + l] > 0.0f) ? 0.0f : dyc[at + l];
                    gv = vload(tail);
                }
                vstore(gr + 8 * v, gv);
                sum += gv;
            }
        }
        vstore(dbv + 8 * c, sum);
    }
}

/* The 8 lanes of v added in a fixed order. */
static inline float WN(hsum)(const float *v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* Adds channel c's gradient plane of g into the vector dbv[8 c] in mask_grad's order (row by
   row, 8 columns a lane): the fused backward's db is then the same bits as the unfused one. */
WTARGET static void WN(sum_grad)(const direct_plan *p, const float *g, int c, float *dbv)
{
    const float *gc = g + (size_t)c * p->ho * p->wo8;
    v8 sum = vload(dbv + 8 * c);
    size_t i;
    for (i = 0; i < (size_t)p->ho * p->wo8; i += 8)
        sum += vload(gc + i);
    vstore(dbv + 8 * c, sum);
}

/* The gradient at the convolution's output for channels o0 .. o0 + nch - 1 of sample n when
   a k x k max-pool followed it: zero except at each window's argmax, which gets the pooled
   gradient dyp (where the pooled output yp > 0, when relu). Into g as mask_grad, and its sums
   into dbv as mask_grad adds them. Argmax values outside their window are skipped. */
WTARGET static void WN(scatter_grad)(const direct_plan *p, const float *yp, const int *argmax,
                                     const float *dyp, int relu, int n, int o0, int nch, int k,
                                     float *g, float *dbv)
{
    int ph = p->ho / k, pw = p->wo / k, c, r, q, i;
    memset(g, 0, sizeof(float) * p->g_floats);
    for (c = 0; c < nch; c++) {
        size_t at = ((size_t)n * p->s.co + o0 + c) * ph * pw;
        float *gc = g + (size_t)c * p->ho * p->wo8;
        for (r = 0; r < ph; r++) {
            q = 0;
#if WN_AVX2
            if (k == 2 && pw >= 8) {
                const __m256i lanes2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
                const __m256i wo_ = _mm256_set1_epi32(p->wo);
                for (; q < pw; q += 8) {
                    size_t pq = at + (size_t)r * pw;
                    __m256 d, e0, o0v, e1, o1, lo, hi;
                    __m256i off;
                    if (q + 8 > pw)
                        q = pw - 8;   /* overlaps the block before: the same stores */
                    d = _mm256_loadu_ps(dyp + pq + q);
                    if (relu)
                        d = _mm256_and_ps(d, _mm256_cmp_ps(_mm256_loadu_ps(yp + pq + q),
                                                           _mm256_setzero_ps(), _CMP_GT_OQ));
                    /* argmax - the window's first index: 0, 1, wo or wo + 1 */
                    off = _mm256_sub_epi32(
                        _mm256_loadu_si256((const __m256i *)(argmax + pq + q)),
                        _mm256_add_epi32(_mm256_set1_epi32(2 * r * p->wo + 2 * q), lanes2));
                    e0 = _mm256_and_ps(d, _mm256_castsi256_ps(
                        _mm256_cmpeq_epi32(off, _mm256_setzero_si256())));
                    o0v = _mm256_and_ps(d, _mm256_castsi256_ps(
                        _mm256_cmpeq_epi32(off, _mm256_set1_epi32(1))));
                    e1 = _mm256_and_ps(d, _mm256_castsi256_ps(_mm256_cmpeq_epi32(off, wo_)));
                    o1 = _mm256_and_ps(d, _mm256_castsi256_ps(
                        _mm256_cmpeq_epi32(off, _mm256_add_epi32(wo_, _mm256_set1_epi32(1)))));
                    /* interleave even and odd columns back: row 2r, then row 2r + 1 */
                    lo = _mm256_unpacklo_ps(e0, o0v);
                    hi = _mm256_unpackhi_ps(e0, o0v);
                    _mm256_storeu_ps(gc + (size_t)(2 * r) * p->wo8 + 2 * q,
                                     _mm256_permute2f128_ps(lo, hi, 0x20));
                    _mm256_storeu_ps(gc + (size_t)(2 * r) * p->wo8 + 2 * q + 8,
                                     _mm256_permute2f128_ps(lo, hi, 0x31));
                    lo = _mm256_unpacklo_ps(e1, o1);
                    hi = _mm256_unpackhi_ps(e1, o1);
                    _mm256_storeu_ps(gc + (size_t)(2 * r + 1) * p->wo8 + 2 * q,
                                     _mm256_permute2f128_ps(lo, hi, 0x20));
                    _mm256_storeu_ps(gc + (size_t)(2 * r + 1) * p->wo8 + 2 * q + 8,
                                     _mm256_permute2f128_ps(lo, hi, 0x31));
                }
                continue;
            }
#endif
            for (; q < pw; q++) {
                size_t pq = at + (size_t)r * pw + q;
                /* argmax = (k r + i) * wo + k q + j, with i, j in [0, k) */
                int off = argmax[pq] - k * r * p->wo - k * q;
                if (relu && !(yp[pq] > 0.0f))
                    continue;
                if (off < 0)
                    continue;
                for (i = 0; i < k && off >= p->wo; i++)
                    off -= p->wo;
                if (i >= k || off >= k)
                    continue;
                gc[(size_t)(k * r + i) * p->wo8 + k * q + off] += dyp[pq];
            }
        }
        WN(sum_grad)(p, g, c, dbv);
    }
}

/* pool == 0: dW and db from dy at the convolution's output (masked by y > 0 when relu).
   pool = k > 0: from the gradient dy of the k x k max-pool that followed it, whose output y
   and argmax the forward pass gave. */
WTARGET static void WN(backward)(const direct_plan *p, const float *x, const float *y,
                                 const float *dy, int relu, int pool, const int *argmax,
                                 float *dw, float *db, float *work, int nthreads)
{
    float *acc = work;                         /* [block][tap block][gcb][tb] vectors */
    float *dbv = acc + p->acc_floats;          /* [block][gcb] vectors */
    int *toff = (int *)(dbv + p->dbv_floats);  /* [tapsp] */
    float *thread_base = (float *)toff + p->toff_floats;
    int t, nblk = p->nblk;
    for (t = 0; t < p->tapsp; t++)   /* padding taps read tap 0's input; their sums are dropped */
        toff[t] = t < p->taps ? (t / p->s.kw) * p->wp + t % p->s.kw : 0;
    memset(acc, 0, sizeof(float) * (p->acc_floats + p->dbv_floats));
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
#endif
    {
        int tid = conv_thread_num(), nt = conv_num_threads();
        /* each block of output channels belongs to one thread, whatever the thread count */
        int b0 = (int)((long long)nblk * tid / nt), b1 = (int)((long long)nblk * (tid + 1) / nt);
        float *xp = thread_base + (size_t)tid * p->bwd_thread_floats;
        float *g = xp + p->xp_floats;
        int n, b, tb, c, tap;
        for (n = 0; n < p->s.n && b0 < b1; n++) {
            WN(pad_input)(p, x, n, xp);
            for (b = b0; b < b1; b++) {
                int o0 = b * p->gcb;
                int nch = p->s.co - o0 < p->gcb ? p->s.co - o0 : p->gcb;
                if (pool)
                    WN(scatter_grad)(p, y, argmax, dy, relu, n, o0, nch, pool, g,
                                     dbv + (size_t)b * p->gcb * 8);
                else
                    WN(mask_grad)(p, y, dy, relu, n, o0, nch, g, dbv + (size_t)b * p->gcb * 8);
                for (tb = 0; tb < p->tapsp / p->tb; tb++)
                    WN(dwk)(p, g, (ptrdiff_t)p->ho * p->wo8, xp, toff + tb * p->tb,
                            acc + ((size_t)b * p->tapsp + (size_t)tb * p->tb) * p->gcb * 8);
            }
        }
        for (b = b0; b < b1; b++)
            for (c = 0; c < p->gcb && b * p->gcb + c < p->s.co; c++) {
                int o = b * p->gcb + c;
                for (tap = 0; tap < p->taps; tap++)
                    dw[(size_t)o * p->taps + tap] = WN(hsum)(
                        acc + (((size_t)b * p->tapsp + (size_t)(tap / p->tb) * p->tb) * p->gcb
                               + (size_t)c * p->tb + tap % p->tb) * 8);
                db[o] = WN(hsum)(dbv + ((size_t)b * p->gcb + c) * 8);
            }
    }
}
