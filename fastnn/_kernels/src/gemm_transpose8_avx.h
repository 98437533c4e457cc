/* gk_transpose8 for the AVX2 and AVX-512 paths (256-bit shuffles); see gemm_kernel.h.
   Included after GK_TARGET is defined. */
GK_TARGET static inline __attribute__((always_inline)) void
gk_transpose8(const float *src, ptrdiff_t lds, int rows, float *dst, ptrdiff_t ldd)
{
    __m256 r[8], t[8], u[8];
    int i;
    if (rows >= 8) /* the common case, without a test per row */
        for (i = 0; i < 8; i++)
            r[i] = _mm256_loadu_ps(src + i * lds);
    else
        for (i = 0; i < 8; i++)
            r[i] = i < rows ? _mm256_loadu_ps(src + i * lds) : _mm256_setzero_ps();
    for (i = 0; i < 8; i += 2) { /* r[i] = a0..a7, r[i+1] = b0..b7 */
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);     /* a0 b0 a1 b1 | a4 b4 a5 b5 */
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]); /* a2 b2 a3 b3 | a6 b6 a7 b7 */
    }
    for (i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);     /* a0 b0 c0 d0 | a4 b4 c4 d4 */
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE); /* column 1 | column 5 */
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44); /* column 2 | column 6 */
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE); /* column 3 | column 7 */
    }
    for (i = 0; i < 4; i++) /* low halves: columns 0-3, high halves: columns 4-7 */
        _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    for (i = 0; i < 4; i++)
        _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
}
