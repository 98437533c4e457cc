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
// `relu` and dz = dy otherwise. dz is written when `relu` or `transposed`: in dy's layout
// (outer, channels, inner), or with `transposed` as (channels, outer, inner), the layout the
// conv backward's single dw GEMM takes (see conv.cu).
extern "C" __global__ void __launch_bounds__(FASTNN_REDUCE_THREADS)
bias_grad(const float* __restrict__ dy, const float* __restrict__ y, float* __restrict__ dz,
          float* __restrict__ db, int outer, int channels, int inner, int relu, int transposed) {
    __shared__ float partial[FASTNN_REDUCE_THREADS];
    const int channel = blockIdx.x;
    const int count = outer * inner;
    float sum = 0.0f;
    for (int k = threadIdx.x; k < count; k += blockDim.x) {
        const int o = k / inner;
        const long long idx = ((long long)o * channels + channel) * inner + (k - o * inner);
        float g = dy[idx];
        if (relu) g *= (y[idx] > 0.0f) ? 1.0f : 0.0f;  // a multiply, as the reference does
        if (transposed) {
            dz[(long long)channel * count + k] = g;
        } else if (relu) {
            dz[idx] = g;
        }
        sum += g;
    }
    sum = fastnn_block_sum(sum, partial);
    if (threadIdx.x == 0) db[channel] = sum;
}

// bias_grad for Linear (inner == 1, dy is rows x channels): a block covers blockDim.x adjacent
// channels, so a warp's loads of one row are contiguous (one block per channel would read a
// column, strided); blockDim.y threads per channel split the rows, and their partial sums are
// added in a fixed order (deterministic). dz = dy * (y > 0) is written when `relu`.
extern "C" __global__ void __launch_bounds__(FASTNN_REDUCE_THREADS)
bias_grad_rows(const float* __restrict__ dy, const float* __restrict__ y,
               float* __restrict__ dz, float* __restrict__ db, int rows, int channels,
               int relu) {
    __shared__ float partial[FASTNN_REDUCE_THREADS];
    const int channel = blockIdx.x * blockDim.x + threadIdx.x;
    float sum = 0.0f;
    if (channel < channels) {
        for (int r = threadIdx.y; r < rows; r += blockDim.y) {
            const long long idx = (long long)r * channels + channel;
            float g = dy[idx];
            if (relu) {
                g *= (y[idx] > 0.0f) ? 1.0f : 0.0f;
                dz[idx] = g;
            }
            sum += g;
        }
    }
    partial[threadIdx.y * blockDim.x + threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && channel < channels) {
        float total = 0.0f;
        for (unsigned k = 0; k < blockDim.y; ++k) total += partial[k * blockDim.x + threadIdx.x];
        db[channel] = total;
    }
}
