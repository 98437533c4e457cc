/* A chain of dense layers on a few rows: h_i = relu_i(h_{i-1} @ W_i^T + b_i).

   Batch-1 inference of an MLP is a few matrix-vector products that stream the weights from
   L2/L3; with one GEMM call per layer, every layer pays a parallel region of its own. Here
   one region runs all layers: each thread computes the same slice of every layer's outputs
   (so its slice of the weights stays in its core's cache from call to call), with a barrier
   between layers. The slices go through fastnn_sgemm on one thread each, with few rows
   that is the dot path for any slice, and every output element is the same dot product
   however the columns are split: the result does not depend on the thread count. */
#include "gemm.h"
#include "gemm_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* At most this many rows take the one-region path (the dot path's row limit). */
#define GK_CHAIN_ROWS 4
/* Layers with fewer weights than this run on one thread: splitting them costs more than the
   streaming it saves. */
#define GK_CHAIN_SPLIT_WEIGHTS 16384

static void gk_chain_slice(int M, const float *h, const float *w, const float *b, float *y,
                           int fin, int fout, int relu, int part, int parts)
{
    int nb, ne;
    if ((long)fin * fout < GK_CHAIN_SPLIT_WEIGHTS) {
        if (part != 0)
            return;
        parts = 1;
    }
    gk_split(fout, 8, parts, part, &nb, &ne);
    if (nb < ne)
        fastnn_sgemm(0, 1, M, ne - nb, fin, h, fin, w + (ptrdiff_t)nb * fin, fin, 0.0f, y + nb,
                     fout, b != NULL ? b + nb : NULL, b != NULL ? 1 : 0, relu, 1);
}

void fastnn_sgemm_chain(int M, int layers, const float *x, const float *const *w,
                        const float *const *b, float *const *y, const int *fin,
                        const int *fout, const int *relu, int nthreads)
{
    int i, nt;
    if (M <= 0 || layers <= 0)
        return;
    if (M > GK_CHAIN_ROWS) { /* enough rows to keep each GEMM busy: one call per layer */
        const float *h = x;
        for (i = 0; i < layers; i++) {
            fastnn_sgemm(0, 1, M, fout[i], fin[i], h, fin[i], w[i], fin[i], 0.0f, y[i],
                         fout[i], b[i], b[i] != NULL ? 1 : 0, relu[i], nthreads);
            h = y[i];
        }
        return;
    }
#ifdef _OPENMP
    nt = nthreads > 0 ? nthreads : omp_get_max_threads();
    if (nt < 1)
        nt = 1;
#pragma omp parallel num_threads(nt) private(i)
    {
        int part = omp_get_thread_num(), parts = omp_get_num_threads();
        const float *h = x;
        for (i = 0; i < layers; i++) {
            gk_chain_slice(M, h, w[i], b[i], y[i], fin[i], fout[i], relu[i], part, parts);
#pragma omp barrier
            h = y[i];
        }
    }
#else
    (void)nt;
    (void)nthreads;
    {
        const float *h = x;
        for (i = 0; i < layers; i++) {
            gk_chain_slice(M, h, w[i], b[i], y[i], fin[i], fout[i], relu[i], 0, 1);
            h = y[i];
        }
    }
#endif
}
