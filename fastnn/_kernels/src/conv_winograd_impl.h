/* The Winograd F(4x4, 5x5) kernels, written once over 8-float GCC vectors and included by
   conv_winograd.c once per instruction set after it defines
     WN(name)   the name with the ISA's suffix
     WTARGET    the function attribute that selects the ISA (empty for the portable path)

   Layouts inside (channels padded to multiples of 8 with zeros, "tile" = one 4x4 output block):
     U   [64 freq][Cp][Kp]   transformed weights for the forward pass (vectors over co)
     UT  [64 freq][Kp][Cp]   the same, transposed, for dX (vectors over ci)
     V   [64 freq][tile][Cp] transformed input tiles
     M,Z [64 freq][tile][Kp] products (forward) / transformed output gradient (backward)
     xb  [sample][Cp/8][Hp][Wp][8]  padded input, channels innermost, so a tile element is a vector
   Every transform works on vectors of 8 channels; every GEMM broadcasts one operand and loads the
   other as vectors, 6 rows x 16 columns (12 accumulators) at a time. */

/* ---- 1-D transforms on 8-channel vectors (see the matrices in conv_winograd.c) ------------- */

/* V = B^T d: 8 -> 8 */
WTARGET static inline void WN(t_in)(const v8 *in, ptrdiff_t is, v8 *out, ptrdiff_t os)
{
    v8 d0 = in[0], d1 = in[is], d2 = in[2 * is], d3 = in[3 * is];
    v8 d4 = in[4 * is], d5 = in[5 * is], d6 = in[6 * is], d7 = in[7 * is];
    v8 a, b;
    out[0] = (d0 - d6) + (d4 - d2) * 5.25f;
    out[7 * os] = (d7 - d1) + (d3 - d5) * 5.25f;
    a = (d2 + d6) - d4 * 4.25f;
    b = (d1 + d5) - d3 * 4.25f;
    out[os] = a + b;
    out[2 * os] = a - b;
    a = (d6 + d2 * 0.25f) - d4 * 1.25f;
    b = (d1 * 0.5f - d3 * 2.5f) + d5 * 2.0f;
    out[3 * os] = a + b;
    out[4 * os] = a - b;
    a = (d6 + d2 * 4.0f) - d4 * 5.0f;
    b = (d1 * 2.0f - d3 * 2.5f) + d5 * 0.5f;
    out[5 * os] = a + b;
    out[6 * os] = a - b;
}

/* Y = A^T m: 8 -> 4 */
WTARGET static inline void WN(t_out)(const v8 *in, ptrdiff_t is, v8 *out, ptrdiff_t os)
{
    v8 s1 = in[is] + in[2 * is], t1 = in[is] - in[2 * is];
    v8 s2 = in[3 * is] + in[4 * is], t2 = in[3 * is] - in[4 * is];
    v8 s3 = in[5 * is] + in[6 * is], t3 = in[5 * is] - in[6 * is];
    out[0] = in[0] + s1 + s2 + s3;
    out[os] = t1 + t2 * 2.0f + t3 * 0.5f;
    out[2 * os] = s1 + s2 * 4.0f + s3 * 0.25f;
    out[3 * os] = t1 + t2 * 8.0f + t3 * 0.125f + in[7 * is];
}

/* Z = A dy: 4 -> 8 (transpose of t_out) */
WTARGET static inline void WN(t_dout)(const v8 *in, ptrdiff_t is, v8 *out, ptrdiff_t os)
{
    v8 g0 = in[0], g1 = in[is], g2 = in[2 * is], g3 = in[3 * is];
    v8 e, o;
    out[0] = g0;
    out[7 * os] = g3;
    e = g0 + g2;
    o = g1 + g3;
    out[os] = e + o;
    out[2 * os] = e - o;
    e = g0 + g2 * 4.0f;
    o = g1 * 2.0f + g3 * 8.0f;
    out[3 * os] = e + o;
    out[4 * os] = e - o;
    e = g0 + g2 * 0.25f;
    o = g1 * 0.5f + g3 * 0.125f;
    out[5 * os] = e + o;
    out[6 * os] = e - o;
}

/* dd = B dv: 8 -> 8 (transpose of t_in) */
WTARGET static inline void WN(t_din)(const v8 *in, ptrdiff_t is, v8 *out, ptrdiff_t os)
{
    v8 v0 = in[0], v7 = in[7 * is];
    v8 p1 = in[is] + in[2 * is], m1 = in[is] - in[2 * is];
    v8 p2 = in[3 * is] + in[4 * is], m2 = in[3 * is] - in[4 * is];
    v8 p3 = in[5 * is] + in[6 * is], m3 = in[5 * is] - in[6 * is];
    out[0] = v0;
    out[os] = (m1 + m2 * 0.5f) + (m3 * 2.0f - v7);
    out[2 * os] = (p1 + p2 * 0.25f) + (p3 * 4.0f - v0 * 5.25f);
    out[3 * os] = (v7 * 5.25f - m1 * 4.25f) - (m2 + m3) * 2.5f;
    out[4 * os] = (v0 * 5.25f - p1 * 4.25f) - (p2 * 1.25f + p3 * 5.0f);
    out[5 * os] = (m1 + m2 * 2.0f) + (m3 * 0.5f - v7 * 5.25f);
    out[6 * os] = (p1 + p2) + (p3 - v0);
    out[7 * os] = v7;
}

/* ---- GEMM on the transformed data ----------------------------------------------------------

   C[i][vector j] (+)= sum_k A(i, k) * B[k][vector j], A(i, k) = A[i * ars + k * acs] broadcast.
   R rows and NV vectors per call; the caller passes constants, so each use is unrolled with the
   accumulators in registers. */
#define WN_UKR(R, NV)                                                                           \
    WTARGET static void WN(ukr_##R##_##NV)(int K, const float *A, ptrdiff_t ars, ptrdiff_t acs, \
                                           const float *B, ptrdiff_t ldb, float *C,             \
                                           ptrdiff_t ldc, int accumulate)                       \
    {                                                                                           \
        v8 acc[R][NV];                                                                          \
        int i, j, k;                                                                            \
        WN_UNROLL for (i = 0; i < R; i++) WN_UNROLL for (j = 0; j < NV; j++)                    \
            acc[i][j] = accumulate ? vload(C + i * ldc + 8 * j) : vzero();                     \
        for (k = 0; k < K; k++) {                                                               \
            v8 b[NV];                                                                           \
            WN_UNROLL for (j = 0; j < NV; j++) b[j] = vload(B + (ptrdiff_t)k * ldb + 8 * j);    \
            WN_UNROLL for (i = 0; i < R; i++) {                                                 \
                v8 a = vbroadcast(A[i * ars + (ptrdiff_t)k * acs]);                             \
                WN_UNROLL for (j = 0; j < NV; j++) acc[i][j] += a * b[j];                       \
            }                                                                                   \
        }                                                                                       \
        WN_UNROLL for (i = 0; i < R; i++) WN_UNROLL for (j = 0; j < NV; j++)                    \
            vstore(C + i * ldc + 8 * j, acc[i][j]);                                             \
    }
WN_UKR(6, 2) WN_UKR(5, 2) WN_UKR(4, 2) WN_UKR(3, 2) WN_UKR(2, 2) WN_UKR(1, 2)
WN_UKR(12, 1) WN_UKR(8, 1) WN_UKR(4, 1) WN_UKR(2, 1) WN_UKR(1, 1)
#undef WN_UKR

/* C (M x 8*NV8 floats, row stride ldc) (+)= A (M x K) B (K x 8*NV8). */
WTARGET static void WN(gemm)(int M, int NV8, int K, const float *A, ptrdiff_t ars, ptrdiff_t acs,
                             const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, int accumulate)
{
    int i0, j0;
    for (j0 = 0; j0 + 2 <= NV8; j0 += 2) {
        const float *b = B + 8 * j0;
        float *c = C + 8 * j0;
        for (i0 = 0; i0 + 6 <= M; i0 += 6)
            WN(ukr_6_2)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate);
        switch (M - i0) {
        case 5: WN(ukr_5_2)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate); break;
        case 4: WN(ukr_4_2)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate); break;
        case 3: WN(ukr_3_2)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate); break;
        case 2: WN(ukr_2_2)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate); break;
        case 1: WN(ukr_1_2)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate); break;
        default: break;
        }
    }
    if (j0 < NV8) {
        const float *b = B + 8 * j0;
        float *c = C + 8 * j0;
        for (i0 = 0; i0 + 12 <= M; i0 += 12)
            WN(ukr_12_1)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate);
        for (; i0 + 8 <= M; i0 += 8)
            WN(ukr_8_1)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate);
        for (; i0 + 4 <= M; i0 += 4)
            WN(ukr_4_1)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate);
        for (; i0 + 2 <= M; i0 += 2)
            WN(ukr_2_1)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate);
        for (; i0 < M; i0++)
            WN(ukr_1_1)(K, A + i0 * ars, ars, acs, b, ldb, c + i0 * ldc, ldc, accumulate);
    }
}

/* ---- tile transforms ---------------------------------------------------------------------- */

/* The 8x8 input block at xb (row stride rs vectors) -> V[f * fs], f = 8 i + j. */
WTARGET static void WN(input_tile)(const v8 *xb, ptrdiff_t rs, float *V, ptrdiff_t fs)
{
    v8 t[64], u[64];
    int r, c;
    for (c = 0; c < 8; c++)
        WN(t_in)(xb + c, rs, t + c, 8);          /* columns: t[i][c] */
    for (r = 0; r < 8; r++)
        WN(t_in)(t + 8 * r, 1, u + 8 * r, 1);    /* rows: u[i][j] */
    for (r = 0; r < 64; r++)
        vstore(V + r * fs, u[r]);
}

/* M[f * fs] -> the 4x4 output block out[4 * r + c] (+ bias, ReLU). */
WTARGET static void WN(output_tile)(const float *M, ptrdiff_t fs, v8 bias, int relu, v8 *out)
{
    v8 m[64], t[32];
    int r, c;
    for (r = 0; r < 64; r++)
        m[r] = vload(M + r * fs);
    for (c = 0; c < 8; c++)
        WN(t_out)(m + c, 8, t + c, 8);           /* t[i][c], i < 4 */
    for (r = 0; r < 4; r++)
        WN(t_out)(t + 8 * r, 1, out + 4 * r, 1);
    for (r = 0; r < 16; r++) {
        out[r] += bias;
        if (relu)
            out[r] = vmax0(out[r]);
    }
}

/* 4x4 output-gradient block g[4 * r + c] -> Z[f * fs]. */
WTARGET static void WN(dout_tile)(const v8 *g, float *Z, ptrdiff_t fs)
{
    v8 t[32], u[64];
    int r, c;
    for (c = 0; c < 4; c++)
        WN(t_dout)(g + c, 4, t + c, 4);          /* t[i][c], i < 8 */
    for (r = 0; r < 8; r++)
        WN(t_dout)(t + 4 * r, 1, u + 8 * r, 1);
    for (r = 0; r < 64; r++)
        vstore(Z + r * fs, u[r]);
}

/* dV[f * fs] -> the 8x8 input-gradient block, added into dxb (row stride rs vectors). */
WTARGET static void WN(din_tile)(const float *dV, ptrdiff_t fs, v8 *dxb, ptrdiff_t rs)
{
    v8 m[64], t[64], u[64];
    int r, c;
    for (r = 0; r < 64; r++)
        m[r] = vload(dV + r * fs);
    for (c = 0; c < 8; c++)
        WN(t_din)(m + c, 8, t + c, 8);
    for (r = 0; r < 8; r++)
        WN(t_din)(t + 8 * r, 1, u + 8 * r, 1);
    for (r = 0; r < 8; r++)
        for (c = 0; c < 8; c++)
            dxb[r * rs + c] += u[8 * r + c];
}

/* ---- the passes over one chunk of samples -------------------------------------------------- */

/* Samples [n0, n0 + ns) of x (NCHW) into xb with zero borders. */
WTARGET static void WN(pack_input)(const wino_plan *p, const float *x, int n0, int ns, float *xb)
{
    int s, cb, l, r, c;
    memset(xb, 0, sizeof(float) * (size_t)ns * p->xb_sample);
    for (s = 0; s < ns; s++) {
        for (cb = 0; cb < p->cb; cb++) {
            float *dst = xb + (size_t)s * p->xb_sample + (size_t)cb * p->hp * p->wp * 8;
            for (l = 0; l < 8 && cb * 8 + l < p->s.ci; l++) {
                const float *src = x + ((size_t)(n0 + s) * p->s.ci + cb * 8 + l) * p->s.h * p->s.w;
                for (r = 0; r < p->s.h; r++) {
                    float *d = dst + ((size_t)(r + p->s.pad) * p->wp + p->s.pad) * 8 + l;
                    const float *sr = src + (size_t)r * p->s.w;
                    for (c = 0; c < p->s.w; c++)
                        d[8 * c] = sr[c];
                }
            }
        }
    }
}

/* xb -> V[f][tile][Cp] for the chunk's tiles (tile = sample-major, then rows, then columns). */
WTARGET static void WN(transform_input)(const wino_plan *p, const float *xb, int ns, float *V,
                                        int tiles)
{
    int s, ty, tx, cb;
    ptrdiff_t fs = (ptrdiff_t)tiles * p->cp;
    for (s = 0; s < ns; s++)
        for (ty = 0; ty < p->th; ty++)
            for (tx = 0; tx < p->tw; tx++) {
                int t = (s * p->th + ty) * p->tw + tx;
                for (cb = 0; cb < p->cb; cb++) {
                    const float *src = xb + (size_t)s * p->xb_sample
                        + (((size_t)cb * p->hp + 4 * ty) * p->wp + 4 * tx) * 8;
                    WN(input_tile)((const v8 *)src, p->wp, V + (ptrdiff_t)t * p->cp + cb * 8, fs);
                }
            }
}

/* M[f][tile][Kp] -> y (NCHW) for samples [n0, n0 + ns). */
WTARGET static void WN(transform_output)(const wino_plan *p, const float *M, int n0, int ns,
                                         const float *bias, int relu, float *y, int tiles)
{
    int s, ty, tx, kb, r, c, l;
    ptrdiff_t fs = (ptrdiff_t)tiles * p->kp;
    size_t plane = (size_t)p->ho * p->wo;
    for (s = 0; s < ns; s++)
        for (ty = 0; ty < p->th; ty++)
            for (tx = 0; tx < p->tw; tx++) {
                int t = (s * p->th + ty) * p->tw + tx;
                int rows = p->ho - 4 * ty < 4 ? p->ho - 4 * ty : 4;
                int cols = p->wo - 4 * tx < 4 ? p->wo - 4 * tx : 4;
                for (kb = 0; kb < p->kb; kb++) {
                    v8 out[16], bv;
                    float lanes[16][8];
                    int nl = p->s.co - 8 * kb < 8 ? p->s.co - 8 * kb : 8;
                    for (l = 0; l < 8; l++)
                        bv[l] = bias != NULL && l < nl ? bias[8 * kb + l] : 0.0f;
                    WN(output_tile)(M + (ptrdiff_t)t * p->kp + kb * 8, fs, bv, relu, out);
                    memcpy(lanes, out, sizeof(lanes));
                    for (l = 0; l < nl; l++) {
                        float *dst = y + ((size_t)(n0 + s) * p->s.co + 8 * kb + l) * plane
                            + (size_t)(4 * ty) * p->wo + 4 * tx;
                        for (r = 0; r < rows; r++)
                            for (c = 0; c < cols; c++)
                                dst[(size_t)r * p->wo + c] = lanes[4 * r + c][l];
                    }
                }
            }
}

/* dy (masked by y > 0 when relu) for samples [n0, n0 + ns) -> Z[f][tile][Kp]; adds the masked
   gradient into db (Kp floats, summed in a fixed order). */
WTARGET static void WN(transform_dout)(const wino_plan *p, const float *y, const float *dy,
                                       int relu, int n0, int ns, float *Z, int tiles, float *db)
{
    int s, ty, tx, kb, r, c, l;
    ptrdiff_t fs = (ptrdiff_t)tiles * p->kp;
    size_t plane = (size_t)p->ho * p->wo;
    for (s = 0; s < ns; s++)
        for (ty = 0; ty < p->th; ty++)
            for (tx = 0; tx < p->tw; tx++) {
                int t = (s * p->th + ty) * p->tw + tx;
                int rows = p->ho - 4 * ty < 4 ? p->ho - 4 * ty : 4;
                int cols = p->wo - 4 * tx < 4 ? p->wo - 4 * tx : 4;
                for (kb = 0; kb < p->kb; kb++) {
                    float lanes[16][8];
                    v8 g[16], sum = vzero();
                    int nl = p->s.co - 8 * kb < 8 ? p->s.co - 8 * kb : 8;
                    memset(lanes, 0, sizeof(lanes));
                    for (l = 0; l < nl; l++) {
                        size_t off = ((size_t)(n0 + s) * p->s.co + 8 * kb + l) * plane
                            + (size_t)(4 * ty) * p->wo + 4 * tx;
                        for (r = 0; r < rows; r++)
                            for (c = 0; c < cols; c++) {
                                size_t i = off + (size_t)r * p->wo + c;
                                lanes[4 * r + c][l] = relu && !(y[i] > 0.0f) ? 0.0f : dy[i];
                            }
                    }
                    memcpy(g, lanes, sizeof(g));
                    for (r = 0; r < 16; r++)
                        sum += g[r];
                    vstore(db + 8 * kb, vload(db + 8 * kb) + sum);
                    WN(dout_tile)(g, Z + (ptrdiff_t)t * p->kp + kb * 8, fs);
                }
            }
}

/* dV[f][tile][Cp] -> dx (NCHW) for samples [n0, n0 + ns), through dxb (overlapping tiles add). */
WTARGET static void WN(transform_dinput)(const wino_plan *p, const float *dV, int n0, int ns,
                                         float *dxb, float *dx, int tiles)
{
    int s, ty, tx, cb, l, r, c;
    ptrdiff_t fs = (ptrdiff_t)tiles * p->cp;
    memset(dxb, 0, sizeof(float) * (size_t)ns * p->xb_sample);
    for (s = 0; s < ns; s++)
        for (ty = 0; ty < p->th; ty++)
            for (tx = 0; tx < p->tw; tx++) {
                int t = (s * p->th + ty) * p->tw + tx;
                for (cb = 0; cb < p->cb; cb++) {
                    float *dst = dxb + (size_t)s * p->xb_sample
                        + (((size_t)cb * p->hp + 4 * ty) * p->wp + 4 * tx) * 8;
                    WN(din_tile)(dV + (ptrdiff_t)t * p->cp + cb * 8, fs, (v8 *)dst, p->wp);
                }
            }
    for (s = 0; s < ns; s++)
        for (cb = 0; cb < p->cb; cb++) {
            const float *src = dxb + (size_t)s * p->xb_sample + (size_t)cb * p->hp * p->wp * 8;
            for (l = 0; l < 8 && cb * 8 + l < p->s.ci; l++) {
                float *d = dx + ((size_t)(n0 + s) * p->s.ci + cb * 8 + l) * p->s.h * p->s.w;
                for (r = 0; r < p->s.h; r++) {
                    const float *sr = src + ((size_t)(r + p->s.pad) * p->wp + p->s.pad) * 8 + l;
                    for (c = 0; c < p->s.w; c++)
                        d[(size_t)r * p->s.w + c] = sr[8 * c];
                }
            }
        }
}

/* ---- entry points ----------------------------------------------------------------------------- */

WTARGET static void WN(forward)(const wino_plan *p, const float *x, const float *w,
                                const float *bias, int relu, float *y, float *work, int nthreads)
{
    float *U = work;
    float *thread_base = U + p->u_floats;
    int nchunks = (p->s.n + p->chunk - 1) / p->chunk;
#pragma omp parallel num_threads(nthreads)
    {
        int tid = wino_thread_num();
        float *xb = thread_base + (size_t)tid * p->fwd_thread_floats;
        float *V = xb + p->xb_floats;
        float *M = V + p->v_floats;
        int chunk, f;
        wino_transform_weights(p, w, U, 0);
#pragma omp barrier
#pragma omp for schedule(dynamic, 1)
        for (chunk = 0; chunk < nchunks; chunk++) {
            int n0 = chunk * p->chunk;
            int ns = p->s.n - n0 < p->chunk ? p->s.n - n0 : p->chunk;
            int tiles = ns * p->th * p->tw;
            WN(pack_input)(p, x, n0, ns, xb);
            WN(transform_input)(p, xb, ns, V, tiles);
            for (f = 0; f < 64; f++)
                WN(gemm)(tiles, p->kb, p->cp, V + (size_t)f * tiles * p->cp, p->cp, 1,
                         U + (size_t)f * p->cp * p->kp, p->kp, M + (size_t)f * tiles * p->kp,
                         p->kp, 0);
            WN(transform_output)(p, M, n0, ns, bias, relu, y, tiles);
        }
    }
}

WTARGET static void WN(backward)(const wino_plan *p, const float *x, const float *w,
                                 const float *y, const float *dy, int relu, float *dx, float *dw,
                                 float *db, float *work, int nthreads)
{
    float *UT = work;
    float *dU = UT + p->u_floats;                        /* [part][64][Kp][Cp] */
    float *dbp = dU + (size_t)p->parts * p->u_floats;    /* [part][Kp] */
    float *thread_base = dbp + (size_t)p->parts * p->kp;
#pragma omp parallel num_threads(nthreads)
    {
        int tid = wino_thread_num();
        float *xb = thread_base + (size_t)tid * p->bwd_thread_floats;
        float *V = xb + p->xb_floats;
        float *Z = V + p->v_floats;
        float *dV = Z + p->m_floats;
        int part, f;
        if (dx != NULL)
            wino_transform_weights(p, w, UT, 1);
#pragma omp barrier
#pragma omp for schedule(static, 1)
        for (part = 0; part < p->parts; part++) {
            int begin = (int)((long long)p->s.n * part / p->parts);
            int end = (int)((long long)p->s.n * (part + 1) / p->parts);
            float *dUp = dU + (size_t)part * p->u_floats;
            float *dbpp = dbp + (size_t)part * p->kp;
            int n0, first = 1;
            memset(dbpp, 0, sizeof(float) * p->kp);
            for (n0 = begin; n0 < end; n0 += p->chunk) {
                int ns = end - n0 < p->chunk ? end - n0 : p->chunk;
                int tiles = ns * p->th * p->tw;
                WN(pack_input)(p, x, n0, ns, xb);
                WN(transform_input)(p, xb, ns, V, tiles);
                WN(transform_dout)(p, y, dy, relu, n0, ns, Z, tiles, dbpp);
                for (f = 0; f < 64; f++) {
                    const float *Zf = Z + (size_t)f * tiles * p->kp;
                    /* dU[f] (Kp x Cp) += Z[f]^T (Kp x tiles) V[f] (tiles x Cp) */
                    WN(gemm)(p->kp, p->cb, tiles, Zf, 1, p->kp, V + (size_t)f * tiles * p->cp,
                             p->cp, dUp + (size_t)f * p->kp * p->cp, p->cp, !first);
                    if (dx != NULL)   /* dV[f] (tiles x Cp) = Z[f] (tiles x Kp) UT[f] (Kp x Cp) */
                        WN(gemm)(tiles, p->cb, p->kp, Zf, p->kp, 1,
                                 UT + (size_t)f * p->kp * p->cp, p->cp,
                                 dV + (size_t)f * tiles * p->cp, p->cp, 0);
                }
                if (dx != NULL)
                    WN(transform_dinput)(p, dV, n0, ns, xb, dx, tiles);
                first = 0;
            }
        }
#pragma omp barrier
        wino_finish_dw(p, dU, dbp, dw, db);
    }
}
