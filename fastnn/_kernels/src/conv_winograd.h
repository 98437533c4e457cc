/* fastnn Winograd convolution F(4x4, 5x5): 5x5 kernels, stride 1, any zero padding, float32,
   NCHW in and out, weights (Co, Ci, 5, 5).

   Each 4x4 block of the output comes from an 8x8 block of the (padded) input with 64 multiplies
   per (input, output) channel pair instead of 400 for the direct form: the transformed input
   V = B^T d B and weights U = G g G^T are multiplied element by element, summed over input
   channels (64 small GEMMs, one per "frequency"), and transformed back, Y = A^T M A.
   The backward pass is the same algorithm transposed: dU = sum over tiles of (A dY A^T) . V
   gives dW = G^T dU G, and dX tiles are B (sum over output channels of U . (A dY A^T)) B^T,
   overlapped and added. Interpolation points 0, +-1, +-2, +-1/2 and infinity; in float32 the
   result differs from the direct sum by a few 1e-6 of its norm.

   Results do not depend on the thread count: every output element is computed by one thread
   with the same arithmetic, and each frequency of the weight gradient is summed by one thread
   over the batch in order.

   The kernels exist where fastnn_conv_simd_available() (conv_simd.h) is 1. Workspace sizes are in floats; pass a buffer of at least that many
   (any alignment). */
#ifndef FASTNN_CONV_WINOGRAD_H
#define FASTNN_CONV_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int n, ci, h, w;   /* input (N, Ci, H, W) */
    int co, pad;       /* output channels, zero padding on every side */
} fastnn_wino_shape;

/* y = conv(x, w) + bias, ReLU'd when relu. With pool = k > 0, the k x k max-pool (stride k)
   of that instead: y (N, Co, Ho/k, Wo/k) and argmax (each maximum's index in its Ho x Wo
   plane; the first maximum in window order, NaN wins), as the reference's maxpool2d_forward;
   the convolution's output never leaves the cache. */
size_t fastnn_wino_forward_floats(const fastnn_wino_shape *s, int pool, int nthreads);
void fastnn_wino_forward(const fastnn_wino_shape *s, const float *x, const float *w,
                         const float *bias, int relu, float *y, int pool, int *argmax,
                         float *work, int nthreads);

/* fastnn_wino_forward, with the transformed weights kept between calls (inference):
   `kept` (fastnn_wino_kept_floats floats), `w_kept` (Co*Ci*25 floats: the weights they were
   made from) and *state (0 at first) belong to the caller; the weights are transformed again
   when w differs from w_kept or another build (ISA) runs. The same bits as
   fastnn_wino_forward. */
size_t fastnn_wino_kept_floats(const fastnn_wino_shape *s);
void fastnn_wino_forward_kept(const fastnn_wino_shape *s, const float *x, const float *w,
                              const float *bias, int relu, float *y, int pool, int *argmax,
                              float *work, int nthreads, float *kept, float *w_kept,
                              int64_t *state);

/* pool == 0: dy is the gradient at the convolution's output, masked with y > 0 when relu (y
   may be NULL otherwise). pool = k > 0: y, dy and argmax are the pooled output, its gradient
   and the forward pass's argmax; the gradient goes to each window's argmax where y > 0 (when
   relu). dx may be NULL (not wanted). */
size_t fastnn_wino_backward_floats(const fastnn_wino_shape *s, int pool, int nthreads);
void fastnn_wino_backward(const fastnn_wino_shape *s, const float *x, const float *w,
                          const float *y, const float *dy, int relu, int pool, const int *argmax,
                          float *dx, float *dw, float *db, float *work, int nthreads);

#ifdef __cplusplus
}
#endif

#endif
