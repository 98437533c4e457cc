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
#define GK_OMP(directive) _Pragma(#directive)
#else
#define GK_OMP(directive)
#endif

/* At most this many rows take the one-region path (the dot path's row limit). */
#define GK_CHAIN_ROWS 4
/* Layers with fewer weights than this run on one thread: splitting them costs more than the
   streaming it saves. */
#define GK_CHAIN_SPLIT_WEIGHTS 16384

/* Layer i of the table: its weights, bias (or NULL), output and sizes. */
typedef struct {
    const float *w, *b;
    float *y;
    int fin, fout, relu;
} gk_layer;

static gk_layer gk_chain_layer(const int64_t *table, int i)
{
    const int64_t *row = table + 6 * (ptrdiff_t)i;
    gk_layer l;
    l.w = (const float *)(intptr_t)row[0];
    l.b = (const float *)(intptr_t)row[1];
    l.y = (float *)(intptr_t)row[2];
    l.fin = (int)row[3];
    l.fout = (int)row[4];
    l.relu = row[5] != 0;
    return l;
}

static void gk_chain_slice(int M, const float *h, gk_layer l, int part, int parts)
{
    int nb, ne;
    if ((long)l.fin * l.fout < GK_CHAIN_SPLIT_WEIGHTS) {
        if (part != 0)
            return;
        parts = 1;
    }
    gk_split(l.fout, 8, parts, part, &nb, &ne);
    if (nb < ne)
        fastnn_sgemm(0, 1, M, ne - nb, l.fin, h, l.fin, l.w + (ptrdiff_t)nb * l.fin, l.fin,
                     0.0f, l.y + nb, l.fout, l.b != NULL ? l.b + nb : NULL, l.b != NULL,
                     l.relu, 1);
}

void fastnn_sgemm_chain(int M, int layers, const float *x, const int64_t *table, int nthreads)
{
    int i, nt;
    if (M <= 0 || layers <= 0)
        return;
    if (M > GK_CHAIN_ROWS) { /* enough rows to keep each GEMM busy: one call per layer */
        const float *h = x;
        for (i = 0; i < layers; i++) {
            gk_layer l = gk_chain_layer(table, i);
            fastnn_sgemm(0, 1, M, l.fout, l.fin, h, l.fin, l.w, l.fin, 0.0f, l.y, l.fout, l.b,
                         l.b != NULL, l.relu, nthreads);
            h = l.y;
        }
        return;
    }
#ifdef _OPENMP
    nt = nthreads > 0 ? nthreads : omp_get_max_threads();
    if (nt < 1)
        nt = 1;
    if (nt > 1) { /* no layer worth splitting: no parallel region (nor its barriers) */
        int split = 0;
        for (i = 0; i < layers; i++) {
            gk_layer l = gk_chain_layer(table, i);
            split |= (long)l.fin * l.fout >= GK_CHAIN_SPLIT_WEIGHTS;
        }
        if (!split)
            nt = 1;
    }
#else
    nt = 1;
    (void)nthreads;
#endif
    if (nt == 1) { /* the same slices, on this thread */
        const float *h = x;
        for (i = 0; i < layers; i++) {
            gk_layer l = gk_chain_layer(table, i);
            gk_chain_slice(M, h, l, 0, 1);
            h = l.y;
        }
        return;
    }
    GK_OMP(omp parallel num_threads(nt) private(i))
    {
#ifdef _OPENMP
        int part = omp_get_thread_num(), parts = omp_get_num_threads();
#else
        int part = 0, parts = 1;
#endif
        const float *h = x;
        for (i = 0; i < layers; i++) {
            gk_layer l = gk_chain_layer(table, i);
            gk_chain_slice(M, h, l, part, parts);
            GK_OMP(omp barrier)
            h = l.y;
        }
    }
}
