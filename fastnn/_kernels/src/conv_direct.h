/* fastnn direct convolution for one input channel (the first layer of an image model): any
   kH x kW kernel, stride 1, any zero padding, float32, NCHW in and out, weights (Co, 1, kH, kW).

   With one input channel, im2col would copy each input value kH*kW times for a GEMM whose inner
   dimension is only kH*kW; these kernels instead run along output rows, 8 outputs to a vector,
   several output channels at a time, reading the input in place (forward, bias + ReLU fused in
   the store) and summing the weight gradient the same way. dX is not computed: the first layer
   never needs it (the caller uses im2col + GEMM when it does).

   Results do not depend on the thread count: forward parallelises over samples; backward gives
   each output channel's dW and db to one thread, which sums over the batch in order.
   The kernels exist where fastnn_conv_simd_available() (conv_simd.h) is 1; on AVX-512 CPUs,
   5-wide kernels with output rows of at most 32 columns run conv_direct_avx512.h's (the same
   forward bits; dW and db summed over a fixed partition of the batch instead). Workspace sizes
   are in floats. */
#ifndef FASTNN_CONV_DIRECT_H
#define FASTNN_CONV_DIRECT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int n, h, w;        /* input (N, 1, H, W) */
    int co, kh, kw;     /* output channels, kernel size */
    int pad;            /* zero padding on every side */
} fastnn_direct_shape;

/* y = conv(x, w) + bias, ReLU'd when relu. With pool = k > 0, the k x k max-pool (stride k,
   no padding) of that instead: y (N, Co, Ho/k, Wo/k) and argmax, each maximum's index in its
   Ho x Wo plane (the first maximum in window order; NaN wins), as the reference's
   maxpool2d_forward would give; the convolution's output never leaves the cache. */
size_t fastnn_direct_forward_floats(const fastnn_direct_shape *s, int pool, int nthreads);
void fastnn_direct_forward(const fastnn_direct_shape *s, const float *x, const float *w,
                           const float *bias, int relu, float *y, int pool, int *argmax,
                           float *work, int nthreads);

/* dW and db only. pool == 0: dy is the gradient at the convolution's output, masked with
   y > 0 when relu (y may be NULL otherwise). pool = k > 0: y, dy and argmax are the pooled
   output, its gradient and the forward pass's argmax (entries outside their window are
   ignored); the gradient goes to each window's argmax where y > 0 (when relu). */
size_t fastnn_direct_backward_floats(const fastnn_direct_shape *s, int nthreads);
void fastnn_direct_backward(const fastnn_direct_shape *s, const float *x, const float *y,
                            const float *dy, int relu, int pool, const int *argmax, float *dw,
                            float *db, float *work, int nthreads);

#ifdef __cplusplus
}
#endif

#endif
