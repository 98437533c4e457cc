/* fastnn GEMM: ISA dispatch, thread grid, scratch memory, and the float64 GEMM. */
#include "gemm.h"
#include "gemm_internal.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { GK_PORTABLE = 0, GK_AVX2 = 1, GK_AVX512 = 2 };
static const char *const gk_isa_names[] = {"portable", "avx2", "avx512"};

/* -------------------------------------------------------------------------------------------
   ISA selection */

static int gk_best_isa(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
        return GK_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return GK_AVX2;
#endif
    return GK_PORTABLE;
}

static int gk_isa_from_name(const char *name, int best)
{
    int i;
    if (name == NULL || name[0] == '\0')
        return best;
    for (i = 0; i <= GK_AVX512; i++)
        if (strcmp(name, gk_isa_names[i]) == 0)
            return i < best ? i : best; /* never above what the CPU runs */
    return best;
}

/* -1 until first use. Racing first calls compute the same value, so no lock is needed. */
static volatile int gk_isa = -1;

static int gk_current_isa(void)
{
    int isa = gk_isa;
    if (isa < 0) {
        isa = gk_isa_from_name(getenv("FASTNN_GEMM_ISA"), gk_best_isa());
        gk_isa = isa;
    }
    return isa;
}

const char *fastnn_gemm_isa(void) { return gk_isa_names[gk_current_isa()]; }

const char *fastnn_gemm_set_isa(const char *name)
{
    gk_isa = gk_isa_from_name(name, gk_best_isa());
    return fastnn_gemm_isa();
}

/* -------------------------------------------------------------------------------------------
   Threads and scratch memory */

static int gk_resolve_threads(int nthreads)
{
#ifdef _OPENMP
    if (nthreads <= 0)
        nthreads = omp_get_max_threads();
    return nthreads < 1 ? 1 : nthreads;
#else
    (void)nthreads;
    return 1;
#endif
}

/* Below this many flops per thread, waking another thread costs more than it saves. */
#define GK_MIN_FLOPS_PER_THREAD 400000.0

void gk_thread_grid(int M, int N, int K, int mr, int nr, int nthreads, int *tm, int *tn)
{
    int mpanels = (M + mr - 1) / mr, npanels = (N + nr - 1) / nr;
    double flops = 2.0 * M * N * (K > 0 ? K : 1);
    int nt = nthreads, best_tm = 1, best_tn = 1;
    double best_cost = -1.0;

    if (flops / GK_MIN_FLOPS_PER_THREAD < nt)
        nt = (int)(flops / GK_MIN_FLOPS_PER_THREAD);
    if (nt > mpanels * npanels)
        nt = mpanels * npanels;
    if (nt < 1)
        nt = 1;
    /* largest usable thread count first; among its factorizations the least packing */
    for (; nt > 1 && best_cost < 0; nt--) {
        int a;
        for (a = 1; a <= nt; a++) {
            int b = nt / a;
            double cost;
            if (a * b != nt || a > mpanels || b > npanels)
                continue;
            cost = (double)b * M + (double)a * N;
            if (best_cost < 0 || cost < best_cost) {
                best_cost = cost;
                best_tm = a;
                best_tn = b;
            }
        }
    }
    *tm = best_tm;
    *tn = best_tn;
}

void gk_split(int len, int unit, int parts, int part, int *begin, int *end)
{
    long units = (len + unit - 1) / unit;
    long b = units * part / parts * unit, e = units * (part + 1) / parts * unit;
    *begin = (int)(b < len ? b : len);
    *end = (int)(e < len ? e : len);
}

#if defined(__GNUC__) || defined(__clang__)
#define GK_THREAD_LOCAL __thread
#elif defined(_MSC_VER)
#define GK_THREAD_LOCAL __declspec(thread)
#endif

#ifdef GK_THREAD_LOCAL
static GK_THREAD_LOCAL void *gk_scratch_raw;
static GK_THREAD_LOCAL size_t gk_scratch_size;

void *gk_scratch(size_t nbytes)
{
    if (nbytes > gk_scratch_size) {
        void *raw = malloc(nbytes + 64);
        if (raw == NULL)
            return NULL;
        free(gk_scratch_raw);
        gk_scratch_raw = raw;
        gk_scratch_size = nbytes;
    }
    return (void *)(((size_t)gk_scratch_raw + 63) & ~(size_t)63);
}

void gk_scratch_release(void *p) { (void)p; }
#else
/* No thread-local storage: a fresh buffer per call, the aligned pointer's raw block kept just
   before it. */
void *gk_scratch(size_t nbytes)
{
    char *raw = (char *)malloc(nbytes + 64 + sizeof(void *));
    char *p;
    if (raw == NULL)
        return NULL;
    p = (char *)(((size_t)raw + sizeof(void *) + 63) & ~(size_t)63);
    ((void **)p)[-1] = raw;
    return p;
}

void gk_scratch_release(void *p)
{
    if (p != NULL)
        free(((void **)p)[-1]);
}
#endif

/* -------------------------------------------------------------------------------------------
   Plain loops: K == 0, the out-of-memory fallback, and float64 */

/* The epilogue of one element, shared by the plain loops. */
#define GK_PLAIN_STORE(T, C, ldc, m, n, sum, beta, bias, bias_mode, relu)                     \
    do {                                                                                       \
        T *c_ = &(C)[(ptrdiff_t)(m) * (ldc) + (n)];                                            \
        T v_ = (sum);                                                                          \
        if ((beta) != 0)                                                                       \
            v_ += (beta) * *c_;                                                                \
        if ((bias_mode) == 1)                                                                  \
            v_ += (bias)[n];                                                                   \
        else if ((bias_mode) == 2)                                                             \
            v_ += (bias)[m];                                                                   \
        if ((relu) && v_ < 0)                                                                  \
            v_ = 0;                                                                            \
        *c_ = v_;                                                                              \
    } while (0)

void gk_sgemm_unpacked(const gk_sgemm_args *g, int mb, int me, int nb, int ne)
{
    int m, n, k;
    for (m = mb; m < me; m++)
        for (n = nb; n < ne; n++) {
            float s = 0.0f;
            for (k = 0; k < g->K; k++) {
                float a = g->transa ? g->A[k * g->lda + m] : g->A[m * g->lda + k];
                float b = g->transb ? g->B[n * g->ldb + k] : g->B[k * g->ldb + n];
                s += a * b;
            }
            GK_PLAIN_STORE(float, g->C, g->ldc, m, n, s, g->beta, g->bias, g->bias_mode,
                           g->relu);
        }
}

void fastnn_sgemm(int transa, int transb, int M, int N, int K, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc, const float *bias,
                  int bias_mode, int relu, int nthreads)
{
    gk_sgemm_args g;
    if (M <= 0 || N <= 0)
        return;
    if (bias == NULL)
        bias_mode = 0;
    if (K <= 0) { /* no products: only beta*C and the epilogue */
        int m, n;
        for (m = 0; m < M; m++)
            for (n = 0; n < N; n++)
                GK_PLAIN_STORE(float, C, ldc, m, n, 0.0f, beta, bias, bias_mode, relu);
        return;
    }
    g.transa = transa != 0;
    g.transb = transb != 0;
    g.M = M;
    g.N = N;
    g.K = K;
    g.A = A;
    g.lda = lda;
    g.B = B;
    g.ldb = ldb;
    g.beta = beta;
    g.C = C;
    g.ldc = ldc;
    g.bias = bias;
    g.bias_mode = bias_mode;
    g.relu = relu != 0;
    g.nthreads = gk_resolve_threads(nthreads);
    switch (gk_current_isa()) {
    case GK_AVX512:
        fastnn_sgemm_avx512(&g);
        break;
    case GK_AVX2:
        fastnn_sgemm_avx2(&g);
        break;
    default:
        fastnn_sgemm_portable(&g);
    }
}

/* float64: row by row, each C element's products summed in k order, either as a row of sums
   over contiguous rows of B (B not transposed) or as dot products over contiguous rows of B.
   Rows are independent, so threads never change a result. */
void fastnn_dgemm(int transa, int transb, int M, int N, int K, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc, const double *bias,
                  int bias_mode, int relu, int nthreads)
{
    int m, nt;
    if (M <= 0 || N <= 0)
        return;
    if (bias == NULL)
        bias_mode = 0;
    if (K < 0)
        K = 0;
    nt = gk_resolve_threads(nthreads);
    if (2.0 * M * N * (K > 0 ? K : 1) < 2 * GK_MIN_FLOPS_PER_THREAD)
        nt = 1;
    (void)nt;

#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (m = 0; m < M; m++) {
        int n, k;
        const double *arow = transa ? A + m : A + (ptrdiff_t)m * lda;
        ptrdiff_t astep = transa ? lda : 1;
        double *sum = transb ? NULL : (double *)gk_scratch((size_t)N * sizeof(double));
        if (sum != NULL) {
            for (n = 0; n < N; n++)
                sum[n] = 0.0;
            for (k = 0; k < K; k++) {
                double a = arow[k * astep];
                const double *brow = B + (ptrdiff_t)k * ldb;
                for (n = 0; n < N; n++)
                    sum[n] += a * brow[n];
            }
            for (n = 0; n < N; n++)
                GK_PLAIN_STORE(double, C, ldc, m, n, sum[n], beta, bias, bias_mode, relu);
            gk_scratch_release(sum);
        } else { /* B transposed, or no memory for the row of sums */
            ptrdiff_t bstep_n = transb ? ldb : 1, bstep_k = transb ? 1 : ldb;
            for (n = 0; n < N; n++) {
                const double *bcol = B + n * bstep_n;
                double s = 0.0;
                for (k = 0; k < K; k++)
                    s += arow[k * astep] * bcol[k * bstep_k];
                GK_PLAIN_STORE(double, C, ldc, m, n, s, beta, bias, bias_mode, relu);
            }
        }
    }
}
