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

WTARGET static void WN(forward)(const direct_plan *p, const float *x, const float *w,
                                const float *bias, int relu, float *y, float *work, int nthreads)
{
    float *wb = work;                          /* [cop][taps], zero-padded channels */
    float *bb = wb + p->wb_floats;             /* [cop] */
    float *thread_base = bb + p->bb_floats;
    size_t plane = (size_t)p->ho * p->wo;
    int n, o;
    memset(wb, 0, sizeof(float) * (p->wb_floats + p->bb_floats));
    memcpy(wb, w, sizeof(float) * (size_t)p->s.co * p->taps);
    for (o = 0; o < p->s.co; o++)
        bb[o] = bias != NULL ? bias[o] : 0.0f;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads)
#endif
    for (n = 0; n < p->s.n; n++) {
        float *xp = thread_base + (size_t)conv_thread_num() * p->fwd_thread_floats;
        int oh, o0, v0;
        WN(pad_input)(p, x, n, xp);
        for (oh = 0; oh < p->ho; oh++)
            for (o0 = 0; o0 < p->s.co; o0 += p->cb) {
                int nch = p->s.co - o0 < p->cb ? p->s.co - o0 : p->cb;
                float *yrow = y + ((size_t)n * p->s.co + o0) * plane + (size_t)oh * p->wo;
                for (v0 = 0; v0 < p->nv; v0 += p->vc) {
                    int vc = p->nv - v0 < p->vc ? p->nv - v0 : p->vc;
                    WN(dfwd)(p, vc, xp + (size_t)oh * p->wp + 8 * v0, wb + (size_t)o0 * p->taps,
                             bb + o0, relu, nch, yrow + 8 * v0, (ptrdiff_t)plane,
                             p->wo - 8 * v0);
                }
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

WTARGET static void WN(backward)(const direct_plan *p, const float *x, const float *y,
                                 const float *dy, int relu, float *dw, float *db, float *work,
                                 int nthreads)
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
