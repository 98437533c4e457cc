// Epilogues of the cuBLAS GEMMs behind Linear and Conv2d: bias (+ ReLU) forward, and the ReLU
// mask with the bias gradient backward. Both see the output as (outer, channels, inner):
// Linear is (N, out, 1), Conv2d is (N, C_out, H*W).
#include "common.cuh"

// y += b[channel], then ReLU when `relu`; in place, one pass over y.
extern "C" __global__ void bias_act(float* __restrict__ y, const float* __restrict__ b,
                                    int total, int channels, int inner, int relu) {
    for (long long i = fastnn_first_index(); i < total; i += fastnn_grid_stride()) {
        const int channel = (int)((i / inner) % channels);
        const float v = y[i] + b[channel];
        y[i] = (relu && v < 0.0f) ? 0.0f : v;  // NaN stays NaN, as np.maximum keeps it
    }
}

// max(y, 0) in place, for layers without a bias.
extern "C" __global__ void relu_inplace(float* __restrict__ y, int total) {
    for (long long i = fastnn_first_index(); i < total; i += fastnn_grid_stride()) {
        if (y[i] < 0.0f) y[i] = 0.0f;
    }
}

// One block per channel. db[c] = sum of dz over (outer, inner), where dz = dy * (y > 0) when
// `relu` (written to dz, the gradient the GEMMs need) and dz = dy otherwise (dz untouched).
extern "C" __global__ void __launch_bounds__(FASTNN_REDUCE_THREADS)
bias_grad(const float* __restrict__ dy, const float* __restrict__ y, float* __restrict__ dz,
          float* __restrict__ db, int outer, int channels, int inner, int relu) {
    __shared__ float partial[FASTNN_REDUCE_THREADS];
    const int channel = blockIdx.x;
    const int count = outer * inner;
    float sum = 0.0f;
    for (int k = threadIdx.x; k < count; k += blockDim.x) {
        const int o = k / inner;
        const long long idx = ((long long)o * channels + channel) * inner + (k - o * inner);
        float g = dy[idx];
        if (relu) {
            g *= (y[idx] > 0.0f) ? 1.0f : 0.0f;  // a multiply, as the reference does
            dz[idx] = g;
        }
        sum += g;
    }
    sum = fastnn_block_sum(sum, partial);
    if (threadIdx.x == 0) db[channel] = sum;
}
