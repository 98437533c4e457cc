/* The float32 GEMM template instantiated with another path's tile shape (GK_PORTABLE_W/MR/NV
   set on the command line) but portable vector code, so the blocking, packing and edge handling
   of e.g. the AVX-512 path are checked on a CPU that cannot run AVX-512. Prints the worst error
   relative to a float64 reference over many shapes and options; exits 1 on any failure. */
#define GK_PORTABLE_SUFFIX emulated
#include "gemm_portable.c"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* gemm.c dispatches to these; this program links neither (it calls the emulation directly) */
void fastnn_sgemm_avx512(const gk_sgemm_args *g) { fastnn_sgemm_emulated(g); }
void fastnn_sgemm_avx2(const gk_sgemm_args *g) { fastnn_sgemm_emulated(g); }

static float rnd(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0);
}

int main(void)
{
    static const int sizes[] = {1, 2, 5, 8, 15, 16, 17, 31, 33, 47, 64, 65, 97, 129};
    const int ns = (int)(sizeof sizes / sizeof sizes[0]);
    unsigned seed = 12345;
    double worst = 0.0;
    int c, fails = 0;
    for (c = 0; c < 300; c++) {
        gk_sgemm_args g;
        int M, N, K, m, n, k, i, ta, tb;
        float *A, *B, *C, *C0, *bias;
        double scale = 1e-30, err = 0.0;
        seed = seed * 1103515245u + 12345u;
        M = sizes[(seed >> 3) % ns];
        N = sizes[(seed >> 9) % ns];
        K = c == 0 ? 600 : sizes[(seed >> 15) % ns]; /* 600: several K blocks */
        ta = (seed >> 21) & 1;
        tb = (seed >> 22) & 1;
        A = malloc(sizeof(float) * M * K);
        B = malloc(sizeof(float) * K * N);
        C = malloc(sizeof(float) * M * N);
        C0 = malloc(sizeof(float) * M * N);
        bias = malloc(sizeof(float) * (M + N));
        for (i = 0; i < M * K; i++) A[i] = rnd(&seed);
        for (i = 0; i < K * N; i++) B[i] = rnd(&seed);
        for (i = 0; i < M * N; i++) C[i] = C0[i] = rnd(&seed);
        for (i = 0; i < M + N; i++) bias[i] = rnd(&seed);
        g.transa = ta; g.transb = tb; g.M = M; g.N = N; g.K = K;
        g.A = A; g.lda = ta ? M : K; g.B = B; g.ldb = tb ? K : N;
        g.beta = (c % 3) == 0 ? 0.0f : (c % 3) == 1 ? 1.0f : -0.5f;
        g.C = C; g.ldc = N; g.bias = bias; g.bias_mode = (c / 3) % 3; g.relu = (c / 9) % 2;
        g.nthreads = 1 + c % 2;
        fastnn_sgemm_emulated(&g);
        for (m = 0; m < M; m++)
            for (n = 0; n < N; n++) {
                double s = 0.0, d;
                for (k = 0; k < K; k++)
                    s += (double)(ta ? A[k * M + m] : A[m * K + k]) * (tb ? B[n * K + k] : B[k * N + n]);
                s += g.beta * (double)C0[m * N + n];
                s += g.bias_mode == 1 ? bias[n] : g.bias_mode == 2 ? bias[m] : 0.0;
                if (g.relu && s < 0) s = 0;
                d = fabs(s - C[m * N + n]);
                if (!(d <= err)) err = isnan(d) ? INFINITY : d;
                if (fabs(s) > scale) scale = fabs(s);
            }
        err /= scale;
        if (err > worst || isnan(err)) worst = isnan(err) ? INFINITY : err;
        if (!(err < 1e-5)) {
            fails++;
            printf("FAIL ta=%d tb=%d M=%d N=%d K=%d beta=%g bias_mode=%d relu=%d: %g\n", ta, tb,
                   M, N, K, g.beta, g.bias_mode, g.relu, err);
        }
        free(A); free(B); free(C); free(C0); free(bias);
    }
    printf("W=%d MR=%d NV=%d: worst relative error %.3g, %d failures\n", GK_W, GK_MR, GK_NV,
           worst, fails);
    return fails != 0;
}
