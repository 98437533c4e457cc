/* Standalone check and timing of fastnn's C GEMM, for tuning it without Python.

   gcc -O3 -fopenmp -Ifastnn/_kernels/src benchmarks/gemm_bench.c fastnn/_kernels/src/gemm*.c \
       -o /tmp/gemm_bench -lm
   /tmp/gemm_bench check              all paths against a float64 reference, many shapes
   /tmp/gemm_bench [nthreads [reps [shape]]]  GFLOP/s on the MLP and conv shapes (or only the
                                      shape-th, or transa,transb,M,N,K), current path
   FASTNN_GEMM_ISA=avx2|portable|avx512 picks the path. */
#include "gemm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* With nthreads 1 the calling thread's CPU time: others share these cores, and time spent
   descheduled is not the kernel's. Otherwise wall time. */
static int use_cpu_clock;

static double now(void)
{
    struct timespec ts;
    clock_gettime(use_cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void fill(float *x, size_t n, unsigned *seed)
{
    size_t i;
    for (i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        x[i] = (float)((*seed >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0);
    }
}

/* one case against a float64 reference; returns the error relative to the result's scale */
static double check(int ta, int tb, int M, int N, int K, float beta, int bias_mode, int relu,
                    int nthreads, unsigned seed)
{
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2; /* padded strides */
    float *A = malloc(sizeof(float) * (size_t)(ta ? K : M) * lda + 4);
    float *B = malloc(sizeof(float) * (size_t)(tb ? N : K) * ldb + 4);
    float *C = malloc(sizeof(float) * (size_t)M * ldc + 4);
    float *C0 = malloc(sizeof(float) * (size_t)M * ldc + 4);
    float *bias = malloc(sizeof(float) * (size_t)(M > N ? M : N) + 4);
    double err = 0.0, scale = 1e-30;
    int m, n, k;
    fill(A, (size_t)(ta ? K : M) * lda, &seed);
    fill(B, (size_t)(tb ? N : K) * ldb, &seed);
    fill(C, (size_t)M * ldc, &seed);
    fill(bias, (size_t)(M > N ? M : N), &seed);
    if (beta == 0.0f) /* C must not be read: poison it */
        for (m = 0; m < M * ldc; m++)
            C[m] = NAN;
    memcpy(C0, C, sizeof(float) * (size_t)M * ldc);
    fastnn_sgemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, bias_mode ? bias : NULL,
                 bias_mode, relu, nthreads);
    for (m = 0; m < M; m++)
        for (n = 0; n < N; n++) {
            double s = 0.0, d;
            for (k = 0; k < K; k++)
                s += (double)(ta ? A[k * lda + m] : A[m * lda + k]) *
                     (tb ? B[n * ldb + k] : B[k * ldb + n]);
            if (beta != 0.0f)
                s += beta * (double)C0[m * ldc + n];
            if (bias_mode == 1)
                s += bias[n];
            if (bias_mode == 2)
                s += bias[m];
            if (relu && s < 0)
                s = 0;
            d = fabs(s - C[m * ldc + n]);
            if (!(d <= err)) /* NaN counts as worst */
                err = isnan(d) ? INFINITY : d;
            if (fabs(s) > scale)
                scale = fabs(s);
        }
    for (m = 0; m < M; m++) /* the padding between rows must be untouched */
        for (n = N; n < ldc; n++)
            if (memcmp(&C[m * ldc + n], &C0[m * ldc + n], sizeof(float)) != 0)
                err = INFINITY;
    free(A);
    free(B);
    free(C);
    free(C0);
    free(bias);
    return err / scale;
}

static int run_checks(void)
{
    static const int sizes[] = {1, 2, 3, 5, 7, 8, 13, 16, 17, 31, 33, 48, 65, 97, 130, 257, 300};
    const int ns = (int)(sizeof sizes / sizeof sizes[0]);
    const char *isas[] = {"portable", "avx2", "avx512"};
    int i, fails = 0, count = 0;
    unsigned seed = 1;
    for (i = 0; i < 3; i++) {
        const char *isa = fastnn_gemm_set_isa(isas[i]);
        double worst = 0.0;
        int c;
        if (strcmp(isa, isas[i]) != 0) {
            printf("%-8s not supported here (runs %s)\n", isas[i], isa);
            continue;
        }
        for (c = 0; c < 400; c++) {
            int M, N, K, ta, tb, bm, relu, nt;
            float beta;
            double e;
            seed = seed * 1103515245u + 12345u;
            M = sizes[(seed >> 4) % ns];
            N = sizes[(seed >> 10) % ns];
            K = sizes[(seed >> 16) % ns];
            ta = (seed >> 22) & 1;
            tb = (seed >> 23) & 1;
            bm = (seed >> 24) % 3;
            relu = (seed >> 26) & 1;
            beta = ((seed >> 27) & 3) == 0 ? 0.0f : ((seed >> 27) & 3) == 1 ? 1.0f : -0.5f;
            nt = 1 + ((seed >> 29) & 1);
            e = check(ta, tb, M, N, K, beta, bm, relu, nt, seed);
            count++;
            if (e > worst)
                worst = e;
            if (!(e < 1e-5)) {
                fails++;
                printf("FAIL %s ta=%d tb=%d M=%d N=%d K=%d beta=%g bias=%d relu=%d nt=%d: %g\n",
                       isa, ta, tb, M, N, K, beta, bm, relu, nt, e);
            }
        }
        {
            double e = check(0, 1, 1000, 512, 784, 0.0f, 1, 1, 2, 7);
            count++;
            if (e > worst)
                worst = e;
            if (!(e < 1e-5)) {
                fails++;
                printf("FAIL %s big: %g\n", isa, e);
            }
        }
        printf("%-8s worst relative error %.3g\n", isa, worst);
    }
    fastnn_gemm_set_isa(NULL);
    printf("%d cases, %d failures\n", count, fails);
    return fails != 0;
}

typedef struct {
    const char *name;
    int ta, tb, M, N, K, bias_mode, relu;
} shape;

static const shape shapes[] = {
    {"mlp fwd 128x512x784 (X W^T)", 0, 1, 128, 512, 784, 1, 1},
    {"mlp dX 128x784x512 (dY W)", 0, 0, 128, 784, 512, 0, 0},
    {"mlp dW 512x784x128 (dY^T X)", 1, 0, 512, 784, 128, 0, 0},
    {"mlp fwd 128x256x512", 0, 1, 128, 256, 512, 1, 1},
    {"mlp dX 128x512x256", 0, 0, 128, 512, 256, 0, 0},
    {"mlp dW 256x512x128", 1, 0, 256, 512, 128, 0, 0},
    {"mlp fwd 128x10x256", 0, 1, 128, 10, 256, 1, 0},
    {"mlp dW 10x256x128", 1, 0, 10, 256, 128, 0, 0},
    {"mlp dX 128x256x10", 0, 0, 128, 256, 10, 0, 0},
    {"mlp fwd 1000x512x784", 0, 1, 1000, 512, 784, 1, 1},
    {"mlp fwd 1x512x784", 0, 1, 1, 512, 784, 1, 1},
    {"mlp fwd 1x256x512", 0, 1, 1, 256, 512, 1, 1},
    {"mlp fwd 1x10x256", 0, 1, 1, 10, 256, 1, 0},
    {"conv 64x576x800 (W col)", 0, 0, 64, 576, 800, 2, 1},
    {"conv 32x576x25", 0, 0, 32, 576, 25, 2, 1},
    {"cnn conv2 fwd 64x64x800", 0, 0, 64, 64, 800, 2, 1},
    {"cnn conv2 dW 64x800x64 (tb)", 0, 1, 64, 800, 64, 0, 0},
    {"cnn conv2 dX 800x64x64 (ta)", 1, 0, 800, 64, 64, 0, 0},
    {"cnn conv1 dW 32x25x576 (tb)", 0, 1, 32, 25, 576, 0, 0},
    {"cnn fc 128x128x1024 (tb)", 0, 1, 128, 128, 1024, 1, 1},
    {"lenet conv2 fwd 16x100x150", 0, 0, 16, 100, 150, 2, 1},
    {"lenet conv2 dW 16x150x100 (tb)", 0, 1, 16, 150, 100, 0, 0},
    {"lenet conv2 dX 150x100x16 (ta)", 1, 0, 150, 100, 16, 0, 0},
    {"lenet conv1 fwd 6x784x25", 0, 0, 6, 784, 25, 2, 1},
    {"big 1024^3", 0, 0, 1024, 1024, 1024, 0, 0},
};

static void run_bench(int nthreads, int reps, int only, const shape *custom)
{
    int s;
    use_cpu_clock = nthreads == 1;
    printf("path %s, nthreads %d (%s time)\n", fastnn_gemm_isa(), nthreads,
           use_cpu_clock ? "cpu" : "wall");
    for (s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {
        if (only >= 0 && s != only)
            continue;
        const shape *p = custom ? custom : &shapes[s];
        unsigned seed = 3;
        size_t na = (size_t)p->M * p->K, nb = (size_t)p->K * p->N, nc = (size_t)p->M * p->N;
        float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4);
        float *bias = malloc(4 * (size_t)(p->M > p->N ? p->M : p->N));
        double flops = 2.0 * p->M * p->N * p->K, best = 1e30, t;
        int r, inner;
        fill(A, na, &seed);
        fill(B, nb, &seed);
        fill(bias, (size_t)(p->M > p->N ? p->M : p->N), &seed);
        inner = (int)(5e7 / flops) + 1;
        for (r = 0; r < reps; r++) {
            int i;
            t = now();
            for (i = 0; i < inner; i++)
                fastnn_sgemm(p->ta, p->tb, p->M, p->N, p->K, A, p->ta ? p->M : p->K, B,
                             p->tb ? p->K : p->N, 0.0f, C, p->N, bias, p->bias_mode, p->relu,
                             nthreads);
            t = (now() - t) / inner;
            if (t < best)
                best = t;
        }
        printf("%-32s %9.2f us %7.1f GFLOP/s\n", p->name, best * 1e6, flops / best * 1e-9);
        free(A);
        free(B);
        free(C);
        free(bias);
        if (custom)
            break;
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "check") == 0)
        return run_checks();
    shape custom = {"custom", 0, 0, 0, 0, 0, 0, 0};
    if (argc > 3 && strchr(argv[3], ',') != NULL &&
        sscanf(argv[3], "%d,%d,%d,%d,%d", &custom.ta, &custom.tb, &custom.M, &custom.N,
               &custom.K) == 5) {
        run_bench(atoi(argv[1]), argc > 2 ? atoi(argv[2]) : 5, -1, &custom);
        return 0;
    }
    run_bench(argc > 1 ? atoi(argv[1]) : 1, argc > 2 ? atoi(argv[2]) : 5,
              argc > 3 ? atoi(argv[3]) : -1, NULL);
    return 0;
}
