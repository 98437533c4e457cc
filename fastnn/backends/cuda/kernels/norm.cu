// Batch normalization, average pooling and leaky ReLU (the layers of fastnn/extra_layers.py).
// Batch norm sees its input as (n, channels, positions), positions = H*W (1 for BatchNorm1d).
// Per-channel sums are one block per channel, each thread taking a fixed stride of the values
// and the block adding the partial sums in a fixed tree: the same bits on every run.
#include "common.cuh"

// mean[c] and the biased variance var[c] over n and positions; sums shifted by the channel's
// first value so a large common offset does not cancel the variance away.
extern "C" __global__ void batchnorm_stats(const float* __restrict__ x, float* __restrict__ mean,
                                           float* __restrict__ var, int n, int channels,
                                           int positions) {
    __shared__ float partial[FASTNN_REDUCE_THREADS];
    const int c = blockIdx.x;
    const long long count = (long long)n * positions;
    const float shift = x[(long long)c * positions];
    float total = 0.0f;
    float squares = 0.0f;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        const long long i = e / positions;
        const long long k = e % positions;
        const float d = x[(i * channels + c) * positions + k] - shift;
        total += d;
        squares += d * d;
    }
    total = fastnn_block_sum(total, partial);
    squares = fastnn_block_sum(squares, partial);
    if (threadIdx.x == 0) {
        const float m = total / (float)count;
        const float v = squares / (float)count - m * m;
        mean[c] = shift + m;
        var[c] = v > 0.0f ? v : 0.0f;
    }
}

// y = x * scale[c] + shift[c], then max(y, 0) when relu. y may be x.
extern "C" __global__ void batchnorm_scale_shift(const float* x, const float* __restrict__ scale,
                                                 const float* __restrict__ shift, float* y,
                                                 int total, int channels, int positions,
                                                 int relu) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const int c = (int)((e / positions) % channels);
        float v = x[e] * scale[c] + shift[c];
        if (relu && !(v > 0.0f)) v = 0.0f;
        y[e] = v;
    }
}

// Per channel: dbeta[c] = sum(g), dgamma[c] = inv_std[c] * sum(g * (x - mean[c])), where
// g = dy masked by y > 0 when relu.
extern "C" __global__ void batchnorm_backward_sums(const float* __restrict__ x,
                                                   const float* __restrict__ y,
                                                   const float* __restrict__ dy,
                                                   const float* __restrict__ mean,
                                                   const float* __restrict__ inv_std,
                                                   float* __restrict__ dgamma,
                                                   float* __restrict__ dbeta, int n, int channels,
                                                   int positions, int relu) {
    __shared__ float partial[FASTNN_REDUCE_THREADS];
    const int c = blockIdx.x;
    const long long count = (long long)n * positions;
    float sum_g = 0.0f;
    float sum_gx = 0.0f;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        const long long at = (e / positions * channels + c) * positions + e % positions;
        float g = dy[at];
        if (relu && !(y[at] > 0.0f)) g = 0.0f;
        sum_g += g;
        sum_gx += g * (x[at] - mean[c]);
    }
    sum_g = fastnn_block_sum(sum_g, partial);
    sum_gx = fastnn_block_sum(sum_gx, partial);
    if (threadIdx.x == 0) {
        dbeta[c] = sum_g;
        dgamma[c] = sum_gx * inv_std[c];
    }
}

// dx = gamma * inv_std * (g - dbeta / M - (x - mean) * inv_std * dgamma / M), M = n*positions.
extern "C" __global__ void batchnorm_backward_dx(const float* __restrict__ x,
                                                 const float* __restrict__ y, const float* dy,
                                                 const float* __restrict__ gamma,
                                                 const float* __restrict__ mean,
                                                 const float* __restrict__ inv_std,
                                                 const float* __restrict__ dgamma,
                                                 const float* __restrict__ dbeta, float* dx,
                                                 int total, int channels, int positions,
                                                 int relu) {
    const float count = (float)(total / channels);
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const int c = (int)((e / positions) % channels);
        float g = dy[e];
        if (relu && !(y[e] > 0.0f)) g = 0.0f;
        const float xhat = (x[e] - mean[c]) * inv_std[c];
        dx[e] = gamma[c] * inv_std[c] * (g - dbeta[c] / count - xhat * dgamma[c] / count);
    }
}

// Average over kernel x kernel windows at stride `stride`, no padding; one thread per output.
extern "C" __global__ void avgpool_forward(const float* __restrict__ x, float* __restrict__ y,
                                           int total, int height, int width, int out_h,
                                           int out_w, int kernel, int stride) {
    const float inv = 1.0f / (float)(kernel * kernel);
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const int ow = (int)(e % out_w);
        const int oh = (int)((e / out_w) % out_h);
        const float* src = x + e / ((long long)out_w * out_h) * height * width;
        float sum = 0.0f;
        for (int i = 0; i < kernel; ++i)
            for (int j = 0; j < kernel; ++j) sum += src[(oh * stride + i) * width + ow * stride + j];
        y[e] = sum * inv;
    }
}

// dx of avgpool_forward as a gather: each input adds the outputs whose windows cover it, in
// output order (no atomics, the same bits every run); one thread per input.
extern "C" __global__ void avgpool_backward(const float* __restrict__ dy, float* __restrict__ dx,
                                            int total, int height, int width, int out_h,
                                            int out_w, int kernel, int stride) {
    const float inv = 1.0f / (float)(kernel * kernel);
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const int w = (int)(e % width);
        const int h = (int)((e / width) % height);
        const float* grad = dy + e / ((long long)width * height) * out_h * out_w;
        const int oh_low = h - kernel + 1 > 0 ? (h - kernel + 1 + stride - 1) / stride : 0;
        const int ow_low = w - kernel + 1 > 0 ? (w - kernel + 1 + stride - 1) / stride : 0;
        const int oh_high = h / stride < out_h - 1 ? h / stride : out_h - 1;
        const int ow_high = w / stride < out_w - 1 ? w / stride : out_w - 1;
        float sum = 0.0f;
        for (int oh = oh_low; oh <= oh_high; ++oh)
            for (int ow = ow_low; ow <= ow_high; ++ow) sum += grad[oh * out_w + ow];
        dx[e] = sum * inv;
    }
}

// y[p] = mean of plane p (size values), summed in order by one thread per plane.
extern "C" __global__ void global_avgpool_forward(const float* __restrict__ x,
                                                  float* __restrict__ y, int planes, int size) {
    for (long long p = fastnn_first_index(); p < planes; p += fastnn_grid_stride()) {
        const float* src = x + p * size;
        float sum = 0.0f;
        for (int k = 0; k < size; ++k) sum += src[k];
        y[p] = sum / (float)size;
    }
}

// dx[p, :] = dy[p] / size; one thread per input value.
extern "C" __global__ void global_avgpool_backward(const float* __restrict__ dy,
                                                   float* __restrict__ dx, int total, int size) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride())
        dx[e] = dy[e / size] / (float)size;
}

// y = x where x > 0, else slope * x. y may be x.
extern "C" __global__ void leaky_relu_forward(const float* x, float* y, int total, float slope) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const float v = x[e];
        y[e] = v > 0.0f ? v : v * slope;
    }
}

// dx = dy where x > 0, else slope * dy. dx may be dy.
extern "C" __global__ void leaky_relu_backward(const float* __restrict__ x, const float* dy,
                                               float* dx, int total, float slope) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride())
        dx[e] = x[e] > 0.0f ? dy[e] : dy[e] * slope;
}
