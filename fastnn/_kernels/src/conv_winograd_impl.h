/* The Winograd F(4x4, 5x5) kernels, written once over 8-float GCC vectors and included by
   conv_winograd.c once per instruction set after it defines
     WN(name)   the name with the ISA's suffix
     WTARGET    the function attribute that selects the ISA (empty for the portable path)

   Layouts inside (channels padded to multiples of 8 with zeros, "tile" = one 4x4 output block):
     U   [64 freq][Cp][Kp]   transformed weights for the forward pass (vectors over co)
     UT  [64 freq][Kp][Cp]   the same, transposed, for dX (vectors over ci)
     V   [tile][64 freq][Cp] transformed input tiles (tile-major: a tile's transform is stored
                             in one stretch of tsc = 64*Cp + 16 floats; each frequency's GEMM
                             reads rows tsc apart, a cache line off the power of two that would
                             put them all in the same cache sets)
     M,Z [tile][64 freq][Kp] products (forward) / transformed output gradient (backward)
     xb  [sample][Cp/8][Hp][Wp][8]  padded input, channels innermost, so a tile element is a vector
     yb  [sample][Kp/8][Ho][Wo][8]  output (forward) or masked output gradient (backward), same
   Every transform works on vectors of 8 channels; every GEMM broadcasts one operand and loads the
   other as vectors, 6 rows x 16 columns (12 accumulators) at a time. NCHW arrays are converted to
   and from the channel-blocked layouts 8 x 8 at a time with register transposes. */

/* ---- 1-D transforms on 8-channel vectors (see the matrices in conv_winograd.c) -------------
   Each reads vectors at in + k * is and writes out + k * os (strides in floats), so the 2-D
   transforms run straight from their source to their destination through one buffer. */

/* V = B^T d: 8 -> 8 */
WTARGET static inline void WN(t_in)(const float *in, ptrdiff_t is, float *out, ptrdiff_t os)
{
    v8 d0 = vload(in), d1 = vload(in + is), d2 = vload(in + 2 * is), d3 = vload(in + 3 * is);
    v8 d4 = vload(in + 4 * is), d5 = vload(in + 5 * is), d6 = vload(in + 6 * is);
    v8 d7 = vload(in + 7 * is);
    v8 a, b;
    vstore(out, (d0 - d6) + (d4 - d2) * 5.25f);
    vstore(out + 7 * os, (d7 - d1) + (d3 - d5) * 5.25f);
    a = (d2 + d6) - d4 * 4.25f;
    b = (d1 + d5) - d3 * 4.25f;
    vstore(out + os, a + b);
    vstore(out + 2 * os, a - b);
    a = (d6 + d2 * 0.25f) - d4 * 1.25f;
    b = (d1 * 0.5f - d3 * 2.5f) + d5 * 2.0f;
    vstore(out + 3 * os, a + b);
    vstore(out + 4 * os, a - b);
    a = (d6 + d2 * 4.0f) - d4 * 5.0f;
    b = (d1 * 2.0f - d3 * 2.5f) + d5 * 0.5f;
    vstore(out + 5 * os, a + b);
    vstore(out + 6 * os, a - b);
}

/* Y = A^T m: 8 -> 4, into out[0..3] */
WTARGET static inline void WN(t_out)(const float *in, ptrdiff_t is, v8 *out)
{
    v8 m1 = vload(in + is), m2 = vload(in + 2 * is), m3 = vload(in + 3 * is);
    v8 m4 = vload(in + 4 * is), m5 = vload(in + 5 * is), m6 = vload(in + 6 * is);
    v8 s1 = m1 + m2, t1 = m1 - m2, s2 = m3 + m4, t2 = m3 - m4, s3 = m5 + m6, t3 = m5 - m6;
    out[0] = vload(in) + s1 + s2 + s3;
    out[1] = t1 + t2 * 2.0f + t3 * 0.5f;
    out[2] = s1 + s2 * 4.0f + s3 * 0.25f;
    out[3] = t1 + t2 * 8.0f + t3 * 0.125f + vload(in + 7 * is);
}

/* Z = A dy: 4 -> 8 (transpose of t_out) */
WTARGET static inline void WN(t_dout)(const v8 *in, ptrdiff_t is, float *out, ptrdiff_t os)
{
    v8 g0 = in[0], g1 = in[is], g2 = in[2 * is], g3 = in[3 * is];
    v8 e, o;
    vstore(out, g0);
    vstore(out + 7 * os, g3);
    e = g0 + g2;
    o = g1 + g3;
    vstore(out + os, e + o);
    vstore(out + 2 * os, e - o);
    e = g0 + g2 * 4.0f;
    o = g1 * 2.0f + g3 * 8.0f;
    vstore(out + 3 * os, e + o);
    vstore(out + 4 * os, e - o);
    e = g0 + g2 * 0.25f;
    o = g1 * 0.5f + g3 * 0.125f;
    vstore(out + 5 * os, e + o);
    vstore(out + 6 * os, e - o);
}

/* dd = B dv: 8 -> 8 (transpose of t_in), into out[0..7] */
WTARGET static inline void WN(t_din)(const float *in, ptrdiff_t is, v8 *out)
{
    v8 v0 = vload(in), v7 = vload(in + 7 * is);
    v8 i1 = vload(in + is), i2 = vload(in + 2 * is), i3 = vload(in + 3 * is);
    v8 i4 = vload(in + 4 * is), i5 = vload(in + 5 * is), i6 = vload(in + 6 * is);
    v8 p1 = i1 + i2, m1 = i1 - i2, p2 = i3 + i4, m2 = i3 - i4, p3 = i5 + i6, m3 = i5 - i6;
    out[0] = v0;
    out[1] = (m1 + m2 * 0.5f) + (m3 * 2.0f - v7);
    out[2] = (p1 + p2 * 0.25f) + (p3 * 4.0f - v0 * 5.25f);
    out[3] = (v7 * 5.25f - m1 * 4.25f) - (m2 + m3) * 2.5f;
    out[4] = (v0 * 5.25f - p1 * 4.25f) - (p2 * 1.25f + p3 * 5.0f);
    out[5] = (m1 + m2 * 2.0f) + (m3 * 0.5f - v7 * 5.25f);
    out[6] = (p1 + p2) + (p3 - v0);
    out[7] = v7;
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

/* ---- 8 x 8 transposes between NCHW planes and channel-blocked vectors ---------------------- */

#if WN_AVX2
WTARGET static inline void WN(transpose8)(v8 *r)
{
    __m256 t0 = _mm256_unpacklo_ps((__m256)r[0], (__m256)r[1]);
    __m256 t1 = _mm256_unpackhi_ps((__m256)r[0], (__m256)r[1]);
    __m256 t2 = _mm256_unpacklo_ps((__m256)r[2], (__m256)r[3]);
    __m256 t3 = _mm256_unpackhi_ps((__m256)r[2], (__m256)r[3]);
    __m256 t4 = _mm256_unpacklo_ps((__m256)r[4], (__m256)r[5]);
    __m256 t5 = _mm256_unpackhi_ps((__m256)r[4], (__m256)r[5]);
    __m256 t6 = _mm256_unpacklo_ps((__m256)r[6], (__m256)r[7]);
    __m256 t7 = _mm256_unpackhi_ps((__m256)r[6], (__m256)r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = (v8)_mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = (v8)_mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = (v8)_mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = (v8)_mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = (v8)_mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = (v8)_mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = (v8)_mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = (v8)_mm256_permute2f128_ps(s3, s7, 0x31);
}
#else
WTARGET static inline void WN(transpose8)(v8 *r)
{
    float a[8][8], b[8][8];
    int i, j;
    memcpy(a, r, sizeof(a));
    for (i = 0; i < 8; i++)
        for (j = 0; j < 8; j++)
            b[j][i] = a[i][j];
    memcpy(r, b, sizeof(b));
}
#endif

/* dst[p][l] = src[l * cs + p] for p < P, l < nl, and 0 in lanes l >= nl. */
WTARGET static void WN(to_blocked)(const float *src, ptrdiff_t cs, int nl, int P, float *dst)
{
    int p0, l, j;
    for (p0 = 0; p0 < P && P >= 8; p0 += 8) {
        v8 r[8];
        if (p0 + 8 > P)
            p0 = P - 8;   /* the last block overlaps the one before: same values again */
        for (l = 0; l < 8; l++)
            r[l] = l < nl ? vload(src + l * cs + p0) : vzero();
        WN(transpose8)(r);
        for (j = 0; j < 8; j++)
            vstore(dst + (ptrdiff_t)(p0 + j) * 8, r[j]);
    }
    for (p0 = P >= 8 ? P : 0; p0 < P; p0++)
        for (l = 0; l < 8; l++)
            dst[(ptrdiff_t)p0 * 8 + l] = l < nl ? src[l * cs + p0] : 0.0f;
}

/* dst[l * cs + p] = src[p][l] for p < P, l < nl. */
WTARGET static void WN(from_blocked)(const float *src, int P, int nl, float *dst, ptrdiff_t cs)
{
    int p0, l, j;
    for (p0 = 0; p0 < P && P >= 8; p0 += 8) {
        v8 r[8];
        if (p0 + 8 > P)
            p0 = P - 8;   /* the last block overlaps the one before: same values again */
        for (j = 0; j < 8; j++)
            r[j] = vload(src + (ptrdiff_t)(p0 + j) * 8);
        WN(transpose8)(r);
        for (l = 0; l < nl; l++)
            vstore(dst + l * cs + p0, r[l]);
    }
    for (p0 = P >= 8 ? P : 0; p0 < P; p0++)
        for (l = 0; l < nl; l++)
            dst[l * cs + p0] = src[(ptrdiff_t)p0 * 8 + l];
}

/* The gradient dy, masked to where y > 0 when relu, of nl planes into P vectors (as
   to_blocked); returns the planes' sums in the lanes of a vector. */
WTARGET static void WN(grad_to_blocked)(const float *dy, const float *y, ptrdiff_t cs, int nl,
                                         int P, int relu, float *dst, float *sums)
{
    v8 sum = vzero();
    float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int p0, l, j, done = 0;
    for (p0 = 0; p0 < P && P >= 8; p0 += 8) {
        v8 r[8];
        if (p0 + 8 > P)
            p0 = P - 8;   /* overlaps the block before; its first positions are not summed */
        for (l = 0; l < 8; l++) {
            if (l >= nl) {
                r[l] = vzero();
                continue;
            }
            r[l] = vload(dy + l * cs + p0);
            if (relu)
                r[l] = (v8)((v8i)r[l] & (v8i)(vload(y + l * cs + p0) > vzero()));
        }
        WN(transpose8)(r);
        for (j = 0; j < 8; j++) {
            vstore(dst + (ptrdiff_t)(p0 + j) * 8, r[j]);
            if (p0 + j >= done)
                sum += r[j];
        }
        done = p0 + 8;
    }
    for (p0 = P >= 8 ? P : 0; p0 < P; p0++)
        for (l = 0; l < 8; l++) {
            float g = 0.0f;
            if (l < nl && !(relu && !(y[l * cs + p0] > 0.0f)))
                g = dy[l * cs + p0];
            dst[(ptrdiff_t)p0 * 8 + l] = g;
            tail[l] += g;
        }
    vstore(sums, sum + vload(tail));
}

/* ---- weight transforms -------------------------------------------------------------------- */

/* u = G g: 5 -> 8 */
WTARGET static inline void WN(t_w)(const v8 *in, ptrdiff_t is, v8 *out, ptrdiff_t os)
{
    v8 g0 = in[0], g1 = in[is], g2 = in[2 * is], g3 = in[3 * is], g4 = in[4 * is];
    v8 e, o;
    out[0] = g0;
    out[7 * os] = g4;
    e = g0 + g2 + g4;
    o = g1 + g3;
    out[os] = (e + o) * (-2.0f / 9);
    out[2 * os] = (e - o) * (-2.0f / 9);
    e = g0 * (1.0f / 90) + g2 * (2.0f / 45) + g4 * (8.0f / 45);
    o = g1 * (1.0f / 45) + g3 * (4.0f / 45);
    out[3 * os] = e + o;
    out[4 * os] = e - o;
    e = g0 * (32.0f / 45) + g2 * (8.0f / 45) + g4 * (2.0f / 45);
    o = g1 * (16.0f / 45) + g3 * (4.0f / 45);
    out[5 * os] = e + o;
    out[6 * os] = e - o;
}

/* dg = G^T du: 8 -> 5 (transpose of t_w) */
WTARGET static inline void WN(t_dw)(const v8 *in, ptrdiff_t is, v8 *out, ptrdiff_t os)
{
    v8 p1 = in[is] + in[2 * is], m1 = in[is] - in[2 * is];
    v8 p2 = in[3 * is] + in[4 * is], m2 = in[3 * is] - in[4 * is];
    v8 p3 = in[5 * is] + in[6 * is], m3 = in[5 * is] - in[6 * is];
    out[0] = in[0] + p1 * (-2.0f / 9) + p2 * (1.0f / 90) + p3 * (32.0f / 45);
    out[os] = m1 * (-2.0f / 9) + m2 * (1.0f / 45) + m3 * (16.0f / 45);
    out[2 * os] = p1 * (-2.0f / 9) + p2 * (2.0f / 45) + p3 * (8.0f / 45);
    out[3 * os] = m1 * (-2.0f / 9) + m2 * (4.0f / 45) + m3 * (4.0f / 45);
    out[4 * os] = p1 * (-2.0f / 9) + p2 * (8.0f / 45) + p3 * (2.0f / 45) + in[7 * is];
}

/* U[f][c][Kp] (vectors over output channels, for the forward pass) or, when transpose,
   UT[f][o][Cp] (vectors over input channels, for dX): G g G^T of every kernel, zero in the
   padding channels. Work-shared over the threads of the enclosing parallel region. */
WTARGET static void WN(transform_weights)(const wino_plan *p, const float *w, float *U,
                                          int transpose)
{
    int blocks = transpose ? p->kp * p->cb : p->cp * p->kb;
    size_t fs = (size_t)p->cp * p->kp;
    int idx;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (idx = 0; idx < blocks; idx++) {
        v8 g[25], t[40], u[64];
        const float *src;
        float *dst;
        ptrdiff_t cs;
        int nl, i;
        if (transpose) {     /* lanes: input channels 8 cb + l of output channel o */
            int o = idx / p->cb, cb = idx % p->cb;
            dst = U + (size_t)o * p->cp + 8 * cb;
            nl = o < p->s.co ? (p->s.ci - 8 * cb < 8 ? p->s.ci - 8 * cb : 8) : 0;
            src = w + ((size_t)o * p->s.ci + 8 * cb) * 25;
            cs = 25;
        } else {             /* lanes: output channels 8 kb + l of input channel c */
            int c = idx / p->kb, kb = idx % p->kb;
            dst = U + (size_t)c * p->kp + 8 * kb;
            nl = c < p->s.ci ? (p->s.co - 8 * kb < 8 ? p->s.co - 8 * kb : 8) : 0;
            src = w + ((size_t)8 * kb * p->s.ci + c) * 25;
            cs = (ptrdiff_t)p->s.ci * 25;
        }
        if (nl == 0) {
            for (i = 0; i < 64; i++)
                vstore(dst + i * fs, vzero());
            continue;
        }
        WN(to_blocked)(src, cs, nl, 25, (float *)g);
        for (i = 0; i < 5; i++)
            WN(t_w)(g + i, 5, t + i, 5);           /* columns: t[a][i], a < 8 */
        for (i = 0; i < 8; i++)
            WN(t_w)(t + 5 * i, 1, u + 8 * i, 1);   /* rows: u[a][b] */
        for (i = 0; i < 64; i++)
            vstore(dst + i * fs, u[i]);
    }
}

/* U of the forward pass on the calling thread (no enclosing parallel region). */
WTARGET static void WN(transform_forward_weights)(const wino_plan *p, const float *w, float *U)
{
    WN(transform_weights)(p, w, U, 0);
}

/* dW = G^T dU G from dU[f][Kp][Cp]. Work-shared. */
WTARGET static void WN(finish_dw)(const wino_plan *p, const float *dU, float *dw)
{
    int blocks = p->s.co * p->cb;
    size_t fs = (size_t)p->cp * p->kp;
    int idx;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (idx = 0; idx < blocks; idx++) {
        int o = idx / p->cb, cb = idx % p->cb, i;
        int nl = p->s.ci - 8 * cb < 8 ? p->s.ci - 8 * cb : 8;
        v8 du[64], t[40], g[25];
        for (i = 0; i < 64; i++)
            du[i] = vload(dU + i * fs + (size_t)o * p->cp + 8 * cb);
        for (i = 0; i < 8; i++)
            WN(t_dw)(du + i, 8, t + i, 8);          /* columns: t[k][i], k < 5 */
        for (i = 0; i < 5; i++)
            WN(t_dw)(t + 8 * i, 1, g + 5 * i, 1);   /* rows: g[k][l] */
        WN(from_blocked)((const float *)g, 25, nl, dw + ((size_t)o * p->s.ci + 8 * cb) * 25, 25);
    }
}

/* ---- tile transforms ---------------------------------------------------------------------- */

/* The 8x8 block of xb at src (row stride rs floats) -> V[f * fs], f = 8 i + j. */
WTARGET static void WN(input_tile)(const float *src, ptrdiff_t rs, float *V, ptrdiff_t fs)
{
    float t[64 * 8];
    int c, i;
    WN_UNROLL for (c = 0; c < 8; c++)
        WN(t_in)(src + 8 * c, rs, t + 8 * c, 64);      /* columns: t[i][c] */
    WN_UNROLL for (i = 0; i < 8; i++)
        WN(t_in)(t + 64 * i, 8, V + 8 * i * fs, fs);  /* rows: V[8 i + j] */
}

/* M[f * fs] -> the rows x cols corner of the 4x4 output block at dst (row stride rs floats),
   plus bias, ReLU'd when relu. */
WTARGET static void WN(output_tile)(const float *M, ptrdiff_t fs, const float *bias, int relu,
                                    int rows, int cols, float *dst, ptrdiff_t rs)
{
    float t[32 * 8];
    v8 out[4], b = vload(bias);
    int r, c;
    WN_UNROLL for (c = 0; c < 8; c++) {
        WN(t_out)(M + c * fs, 8 * fs, out);            /* columns: t[i][c], i < 4 */
        WN_UNROLL for (r = 0; r < 4; r++)
            vstore(t + 64 * r + 8 * c, out[r]);
    }
    for (r = 0; r < rows; r++) {
        WN(t_out)(t + 64 * r, 8, out);
        for (c = 0; c < cols; c++) {
            v8 v = out[c] + b;
            vstore(dst + r * rs + 8 * c, relu ? vmax0(v) : v);
        }
    }
}

/* The rows x cols corner (zero elsewhere) of a 4x4 gradient block at src -> Z[f * fs]. */
WTARGET static void WN(dout_tile)(const float *src, ptrdiff_t rs, int rows, int cols, float *Z,
                                  ptrdiff_t fs)
{
    v8 g[16];
    float t[32 * 8];
    int r, c;
    for (r = 0; r < 4; r++)
        for (c = 0; c < 4; c++)
            g[4 * r + c] = r < rows && c < cols ? vload(src + r * rs + 8 * c) : vzero();
    WN_UNROLL for (c = 0; c < 4; c++)
        WN(t_dout)(g + c, 4, t + 8 * c, 32);            /* columns: t[i][c], i < 8 */
    WN_UNROLL for (r = 0; r < 8; r++)
        WN(t_dout)((const v8 *)(t + 32 * r), 1, Z + 8 * r * fs, fs);
}

/* dV[f * fs] -> the 8x8 input-gradient block, added into dst (row stride rs floats). */
WTARGET static void WN(din_tile)(const float *dV, ptrdiff_t fs, float *dst, ptrdiff_t rs)
{
    float t[64 * 8];
    v8 out[8];
    int r, c;
    WN_UNROLL for (c = 0; c < 8; c++) {
        WN(t_din)(dV + c * fs, 8 * fs, out);           /* columns: t[i][c] */
        WN_UNROLL for (r = 0; r < 8; r++)
            vstore(t + 64 * r + 8 * c, out[r]);
    }
    WN_UNROLL for (r = 0; r < 8; r++) {
        WN(t_din)(t + 64 * r, 8, out);
        WN_UNROLL for (c = 0; c < 8; c++)
            vstore(dst + r * rs + 8 * c, vload(dst + r * rs + 8 * c) + out[c]);
    }
}

/* ---- one sample's passes ------------------------------------------------------------------- */

/* x[n] (NCHW) -> xb (one sample, zero borders) -> V rows [t0, t0 + th*tw), input channel
   blocks [cb0, cb1) (each block's part of xb and of V is its own). */
WTARGET static void WN(sample_input_blocks)(const wino_plan *p, const float *x, int n, float *xb,
                                            float *V, int t0, int cb0, int cb1)
{
    size_t plane = (size_t)p->s.h * p->s.w;
    ptrdiff_t rs = (ptrdiff_t)p->wp * 8;
    int cb, r, ty, tx;
    if (p->hp != p->s.h || p->wp != p->s.w)
        memset(xb + (size_t)cb0 * p->hp * rs, 0, sizeof(float) * (cb1 - cb0) * p->hp * rs);
    for (cb = cb0; cb < cb1; cb++) {
        const float *src = x + ((size_t)n * p->s.ci + 8 * cb) * plane;
        float *dst = xb + (size_t)cb * p->hp * rs + (size_t)p->s.pad * rs + (size_t)p->s.pad * 8;
        int nl = p->s.ci - 8 * cb < 8 ? p->s.ci - 8 * cb : 8;
        for (r = 0; r < p->s.h; r++)
            WN(to_blocked)(src + (size_t)r * p->s.w, (ptrdiff_t)plane, nl, p->s.w, dst + r * rs);
    }
    for (ty = 0; ty < p->th; ty++)
        for (tx = 0; tx < p->tw; tx++) {
            int t = t0 + ty * p->tw + tx;
            for (cb = cb0; cb < cb1; cb++)
                WN(input_tile)(xb + (size_t)cb * p->hp * rs + (size_t)(4 * ty) * rs + 32 * tx,
                               rs, V + (ptrdiff_t)t * p->tsc + 8 * cb, p->cp);
        }
}

WTARGET static void WN(sample_input)(const wino_plan *p, const float *x, int n, float *xb,
                                     float *V, int t0)
{
    WN(sample_input_blocks)(p, x, n, xb, V, t0, 0, p->cb);
}

/* ---- a k x k max-pool (stride k) on channel-blocked planes -------------------------------- */

/* The ho x wo plane of vectors at src -> pooled vectors out[ph][pw] and, as int bits, each
   maximum's index in the plane (the first maximum in window order; NaN wins, as np.argmax). */
WTARGET static void WN(pool_blocked)(const float *src, int wo, int k, int ph, int pw, float *out,
                                     float *arg)
{
    int r, c, i, j;
    for (r = 0; r < ph; r++)
        for (c = 0; c < pw; c++) {
            int at = k * r * wo + k * c;
            v8 best = vload(src + (size_t)at * 8);
            v8i bi = (v8i){at, at, at, at, at, at, at, at};
            for (i = 0; i < k; i++)
                for (j = 0; j < k; j++) {
                    int q = at + i * wo + j;
                    v8 v = vload(src + (size_t)q * 8);
                    v8i take = (v > best) | ((v != v) & (best == best));
                    if (i == 0 && j == 0)
                        continue;
                    best = (v8)(((v8i)v & take) | ((v8i)best & ~take));
                    bi = (bi & ~take) | ((v8i){q, q, q, q, q, q, q, q} & take);
                }
            vstore(out + ((size_t)r * pw + c) * 8, best);
            vstore(arg + ((size_t)r * pw + c) * 8, (v8)bi);
        }
}

/* The gradient at the convolution's output (ho x wo vectors into g, zero outside the windows'
   maxima) from the pooled gradient dyp, the pooled output yp (its > 0 mask when relu) and the
   argmax (int bits), all ph x pw vectors; the lanes' sums of what it placed into sums, added
   position by position as grad_to_blocked adds them, so db has the unfused kernels' bits. */
WTARGET static void WN(unpool_blocked)(const float *dyp, const float *yp, const float *arg,
                                       int relu, int wo, int k, int ph, int pw, float *g,
                                       size_t plane, float *sums)
{
    v8 sum = vzero();
    size_t q0;
    int r, c, i, j;
    memset(g, 0, sizeof(float) * plane * 8);
    for (r = 0; r < ph; r++)
        for (c = 0; c < pw; c++) {
            size_t pq = ((size_t)r * pw + c) * 8;
            v8 d = vload(dyp + pq);
            v8i a = (v8i)vload(arg + pq);
            int at = k * r * wo + k * c;
            if (relu)
                d = (v8)((v8i)d & (vload(yp + pq) > vzero()));
            for (i = 0; i < k; i++)
                for (j = 0; j < k; j++) {
                    int q = at + i * wo + j;
                    v8i hit = a == (v8i){q, q, q, q, q, q, q, q};
                    vstore(g + (size_t)q * 8, (v8)((v8i)d & hit));
                }
        }
    for (q0 = 0; q0 < plane; q0++)
        sum += vload(g + q0 * 8);
    vstore(sums, sum);
}

/* M rows [t0, t0 + th*tw) -> yb (one sample) -> y[n] (NCHW), plus bias, ReLU'd, output
   channel blocks [kb0, kb1). With pool = k > 0, y and argmax get the k x k max-pool of that
   instead (pb: scratch for it). */
WTARGET static void WN(sample_output_blocks)(const wino_plan *p, const float *M, int t0,
                                             const float *bias, int relu, float *yb, float *y,
                                             int n, int pool, int *argmax, float *pb, int kb0,
                                             int kb1)
{
    size_t plane = (size_t)p->ho * p->wo;
    ptrdiff_t rs = (ptrdiff_t)p->wo * 8;
    int ph = pool ? p->ho / pool : 0, pw = pool ? p->wo / pool : 0;
    int kb, ty, tx;
    for (kb = kb0; kb < kb1; kb++) {
        float *ybk = yb + (size_t)kb * plane * 8;
        int nl = p->s.co - 8 * kb < 8 ? p->s.co - 8 * kb : 8;
        for (ty = 0; ty < p->th; ty++)
            for (tx = 0; tx < p->tw; tx++) {
                int t = t0 + ty * p->tw + tx;
                int rows = p->ho - 4 * ty < 4 ? p->ho - 4 * ty : 4;
                int cols = p->wo - 4 * tx < 4 ? p->wo - 4 * tx : 4;
                WN(output_tile)(M + (ptrdiff_t)t * p->tsk + 8 * kb, p->kp, bias + 8 * kb, relu,
                                rows, cols, ybk + (4 * ty) * rs + 32 * tx, rs);
            }
        if (pool) {
            size_t pplane = (size_t)ph * pw, at = ((size_t)n * p->s.co + 8 * kb) * pplane;
            WN(pool_blocked)(ybk, p->wo, pool, ph, pw, pb, pb + pplane * 8);
            WN(from_blocked)(pb, (int)pplane, nl, y + at, (ptrdiff_t)pplane);
            WN(from_blocked)(pb + pplane * 8, (int)pplane, nl, (float *)(argmax + at),
                             (ptrdiff_t)pplane);
        } else {
            WN(from_blocked)(ybk, (int)plane, nl, y + ((size_t)n * p->s.co + 8 * kb) * plane,
                             (ptrdiff_t)plane);
        }
    }
}

WTARGET static void WN(sample_output)(const wino_plan *p, const float *M, int t0,
                                      const float *bias, int relu, float *yb, float *y, int n,
                                      int pool, int *argmax, float *pb)
{
    WN(sample_output_blocks)(p, M, t0, bias, relu, yb, y, n, pool, argmax, pb, 0, p->kb);
}

/* dy[n] (masked by y > 0 when relu) -> gb (one sample) -> Z rows [t0, t0 + th*tw); the
   sample's per-channel sums of the masked gradient into dbs[Kp]. With pool = k > 0, y and dy
   are the k x k max-pool's output and gradient and argmax its argmax: the gradient goes to
   each window's maximum (pb: scratch). */
WTARGET static void WN(sample_grad)(const wino_plan *p, const float *y, const float *dy,
                                    int relu, int n, float *gb, float *Z, int t0, float *dbs,
                                    int pool, const int *argmax, float *pb)
{
    size_t plane = (size_t)p->ho * p->wo;
    ptrdiff_t rs = (ptrdiff_t)p->wo * 8;
    int ph = pool ? p->ho / pool : 0, pw = pool ? p->wo / pool : 0;
    int kb, ty, tx;
    for (kb = 0; kb < p->kb; kb++) {
        float *gbk = gb + (size_t)kb * plane * 8;
        int nl = p->s.co - 8 * kb < 8 ? p->s.co - 8 * kb : 8;
        if (pool) {
            size_t pplane = (size_t)ph * pw, at = ((size_t)n * p->s.co + 8 * kb) * pplane;
            float *dpb = pb, *ypb = pb + pplane * 8, *apb = pb + 2 * pplane * 8;
            WN(to_blocked)(dy + at, (ptrdiff_t)pplane, nl, (int)pplane, dpb);
            WN(to_blocked)(y + at, (ptrdiff_t)pplane, nl, (int)pplane, ypb);
            WN(to_blocked)((const float *)(argmax + at), (ptrdiff_t)pplane, nl, (int)pplane, apb);
            WN(unpool_blocked)(dpb, ypb, apb, relu, p->wo, pool, ph, pw, gbk, plane,
                               dbs + 8 * kb);
        } else {
            size_t off = ((size_t)n * p->s.co + 8 * kb) * plane;
            WN(grad_to_blocked)(dy + off, y + off, (ptrdiff_t)plane, nl, (int)plane, relu, gbk,
                                dbs + 8 * kb);
        }
        for (ty = 0; ty < p->th; ty++)
            for (tx = 0; tx < p->tw; tx++) {
                int t = t0 + ty * p->tw + tx;
                int rows = p->ho - 4 * ty < 4 ? p->ho - 4 * ty : 4;
                int cols = p->wo - 4 * tx < 4 ? p->wo - 4 * tx : 4;
                WN(dout_tile)(gbk + (4 * ty) * rs + 32 * tx, rs, rows, cols,
                              Z + (ptrdiff_t)t * p->tsk + 8 * kb, p->kp);
            }
    }
}

/* dV rows [t0, t0 + th*tw) -> dxb (one sample, overlapping tiles add) -> dx[n] (NCHW). */
WTARGET static void WN(sample_dinput)(const wino_plan *p, const float *dV, int t0,
                                      float *dxb, float *dx, int n)
{
    size_t plane = (size_t)p->s.h * p->s.w;
    ptrdiff_t rs = (ptrdiff_t)p->wp * 8;
    int cb, r, ty, tx;
    memset(dxb, 0, sizeof(float) * p->xb_sample);
    for (ty = 0; ty < p->th; ty++)
        for (tx = 0; tx < p->tw; tx++) {
            int t = t0 + ty * p->tw + tx;
            for (cb = 0; cb < p->cb; cb++)
                WN(din_tile)(dV + (ptrdiff_t)t * p->tsc + 8 * cb, p->cp,
                             dxb + (size_t)cb * p->hp * rs + (size_t)(4 * ty) * rs + 32 * tx, rs);
        }
    for (cb = 0; cb < p->cb; cb++) {
        const float *src = dxb + (size_t)cb * p->hp * rs + (size_t)p->s.pad * rs
            + (size_t)p->s.pad * 8;
        float *dst = dx + ((size_t)n * p->s.ci + 8 * cb) * plane;
        int nl = p->s.ci - 8 * cb < 8 ? p->s.ci - 8 * cb : 8;
        for (r = 0; r < p->s.h; r++)
            WN(from_blocked)(src + r * rs, p->s.w, nl, dst + (size_t)r * p->s.w,
                             (ptrdiff_t)plane);
    }
}

/* ---- entry points ----------------------------------------------------------------------------- */

/* Fewer chunks than threads (a few samples: batch-1 inference): each chunk is split over the
   team instead, by input channel blocks for the transform in, by frequency for the 64 GEMMs
   and by output channel blocks for the transform out. Thread 0's tile buffers (its xb for the
   blocked input, V, M) are shared; each thread writes output blocks into its own xb and pools
   in its own scratch. Every element gets the arithmetic of the one-thread pass: the same bits. */
WTARGET static void WN(forward_split)(const wino_plan *p, const float *x, const float *w,
                                      const float *bias8, int relu, float *y, int pool,
                                      int *argmax, float *thread_base, float *U, int transform,
                                      int team)
{
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
#endif
    {
        float *shared_xb = thread_base, *V = shared_xb + p->xb_floats, *M = V + p->v_floats;
        float *xb = thread_base + (size_t)conv_thread_num() * p->fwd_thread_floats;
        float *pb = xb + p->xb_floats + p->v_floats + p->m_floats;
        int nchunks = (p->s.n + p->chunk - 1) / p->chunk, chunk, block, f, s;
        if (transform)
            WN(transform_weights)(p, w, U, 0);
        for (chunk = 0; chunk < nchunks; chunk++) {
            int n0 = chunk * p->chunk;
            int ns = p->s.n - n0 < p->chunk ? p->s.n - n0 : p->chunk;
            int per = p->th * p->tw, tiles = ns * per;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (block = 0; block < p->cb; block++)
                for (s = 0; s < ns; s++)
                    WN(sample_input_blocks)(p, x, n0 + s, shared_xb, V, s * per, block,
                                            block + 1);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (f = 0; f < 64; f++)
                WN(gemm)(tiles, p->kb, p->cp, V + (size_t)f * p->cp, p->tsc, 1,
                         U + (size_t)f * p->cp * p->kp, p->kp, M + (size_t)f * p->kp,
                         p->tsk, 0);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (block = 0; block < p->kb; block++)
                for (s = 0; s < ns; s++)
                    WN(sample_output_blocks)(p, M, s * per, bias8, relu, xb, y, n0 + s, pool,
                                             argmax, pb, block, block + 1);
        }
    }
}

/* Each thread takes whole chunks of samples: transform, 64 GEMMs, transform back. */
WTARGET static void WN(forward)(const wino_plan *p, const float *x, const float *w,
                                const float *bias, int relu, float *y, int pool, int *argmax,
                                float *work, int nthreads, const float *U_ready)
{
    float *U = U_ready != NULL ? (float *)U_ready : work;   /* U_ready: already transformed */
    float *bias8 = work + p->u_floats;          /* bias, zero-padded to Kp */
    float *thread_base = bias8 + round16(p->kp);
    int nchunks = (p->s.n + p->chunk - 1) / p->chunk, o;
    for (o = 0; o < p->kp; o++)
        bias8[o] = bias != NULL && o < p->s.co ? bias[o] : 0.0f;
    if (nthreads > 1 && nchunks < nthreads
        && 25.0 * p->s.n * p->ho * p->wo * p->s.ci * p->s.co >= CONV_SPLIT_MACS) {
        WN(forward_split)(p, x, w, bias8, relu, y, pool, argmax, thread_base, U,
                          U_ready == NULL, nthreads);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(U_ready != NULL ? conv_team(nthreads, nchunks) : nthreads)
#endif
    {
        float *xb = thread_base + (size_t)conv_thread_num() * p->fwd_thread_floats;
        float *V = xb + p->xb_floats;
        float *M = V + p->v_floats;
        float *pb = M + p->m_floats;
        int chunk;
        if (U_ready == NULL)
            WN(transform_weights)(p, w, U, 0);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (chunk = 0; chunk < nchunks; chunk++) {
            int n0 = chunk * p->chunk, s, f;
            int ns = p->s.n - n0 < p->chunk ? p->s.n - n0 : p->chunk;
            int per = p->th * p->tw, tiles = ns * per;
            for (s = 0; s < ns; s++)
                WN(sample_input)(p, x, n0 + s, xb, V, s * per);
            for (f = 0; f < 64; f++)
                WN(gemm)(tiles, p->kb, p->cp, V + (size_t)f * p->cp, p->tsc, 1,
                         U + (size_t)f * p->cp * p->kp, p->kp, M + (size_t)f * p->kp,
                         p->tsk, 0);
            for (s = 0; s < ns; s++)   /* xb is free again: it holds the output blocks */
                WN(sample_output)(p, M, s * per, bias8, relu, xb, y, n0 + s, pool, argmax, pb);
        }
    }
}

/* Chunks of samples in order, each in three work-shared steps: transform the chunk's samples;
   per frequency (each owned by one thread), dU[f] += Z[f]^T V[f] and dV[f] = Z[f] UT[f];
   transform dV back onto dX. Each dU[f] is summed by one thread in chunk order, so the result
   does not depend on the thread count. */
WTARGET static void WN(backward)(const wino_plan *p, const float *x, const float *w,
                                 const float *y, const float *dy, int relu, int pool,
                                 const int *argmax, float *dx, float *dw, float *db, float *work,
                                 int nthreads)
{
    float *UT = work;
    float *dU = UT + p->u_floats;
    float *dbs = dU + p->u_floats;                          /* [sample in chunk][Kp] */
    float *xb = dbs + round16((size_t)p->bchunk * p->kp);   /* [sample in chunk][xb_sample] */
    float *gb = xb + p->bxb_floats;                         /* [sample in chunk][yb_sample] */
    float *V = gb + p->bgb_floats;
    float *Z = V + p->bv_floats;
    float *dV = Z + p->bz_floats;
    float *pb = dV + p->bv_floats;                          /* [sample in chunk][pool_floats] */
    int nchunks = (p->s.n + p->bchunk - 1) / p->bchunk, o;
    for (o = 0; o < p->s.co; o++)
        db[o] = 0.0f;
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
#endif
    {
        int chunk;
        if (dx != NULL)
            WN(transform_weights)(p, w, UT, 1);
        for (chunk = 0; chunk < nchunks; chunk++) {
            int n0 = chunk * p->bchunk, s, f;
            int ns = p->s.n - n0 < p->bchunk ? p->s.n - n0 : p->bchunk;
            int per = p->th * p->tw, tiles = ns * per;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (s = 0; s < ns; s++) {
                WN(sample_input)(p, x, n0 + s, xb + (size_t)s * p->xb_sample, V, s * per);
                WN(sample_grad)(p, y, dy, relu, n0 + s, gb + (size_t)s * p->yb_sample, Z,
                                s * per, dbs + (size_t)s * p->kp, pool, argmax,
                                pb + (size_t)s * p->pool_floats);
            }
#ifdef _OPENMP
#pragma omp master
#endif
            {   /* db in sample order, by one thread */
                int i, c;
                for (i = 0; i < ns; i++)
                    for (c = 0; c < p->s.co; c++)
                        db[c] += dbs[(size_t)i * p->kp + c];
            }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (f = 0; f < 64; f++) {
                const float *Zf = Z + (size_t)f * p->kp;
                /* dU[f] (Kp x Cp) (+)= Z[f]^T (Kp x tiles) V[f] (tiles x Cp) */
                WN(gemm)(p->kp, p->cb, tiles, Zf, 1, p->tsk, V + (size_t)f * p->cp,
                         p->tsc, dU + (size_t)f * p->kp * p->cp, p->cp, chunk > 0);
                if (dx != NULL)   /* dV[f] (tiles x Cp) = Z[f] (tiles x Kp) UT[f] (Kp x Cp) */
                    WN(gemm)(tiles, p->cb, p->kp, Zf, p->tsk, 1,
                             UT + (size_t)f * p->kp * p->cp, p->cp, dV + (size_t)f * p->cp,
                             p->tsc, 0);
            }
            if (dx != NULL) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (s = 0; s < ns; s++)
                    WN(sample_dinput)(p, dV, s * per, xb + (size_t)s * p->xb_sample, dx,
                                      n0 + s);
            }
        }
        WN(finish_dw)(p, dU, dw);
    }
}
