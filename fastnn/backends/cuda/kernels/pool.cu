// Max-pool over (kernel x kernel) windows, no padding. The input is seen as `planes` = N*C
// planes of height*width; argmax is the index of the maximum within its plane.
#include "common.cuh"

// One thread per output. Ties go to the first maximum in row-major window order and a NaN
// beats any number (the first NaN wins), as np.argmax does.
extern "C" __global__ void maxpool_forward(const float* __restrict__ x, float* __restrict__ y,
                                           int* __restrict__ argmax, int total, int height,
                                           int width, int out_h, int out_w, int kernel,
                                           int stride) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const int ow = (int)(e % out_w);
        const int oh = (int)((e / out_w) % out_h);
        const long long plane = e / ((long long)out_w * out_h);
        const float* src = x + plane * height * width;
        const int top = oh * stride;
        const int left = ow * stride;
        int best_index = top * width + left;
        float best = src[best_index];
        for (int i = 0; i < kernel; ++i) {
            for (int j = 0; j < kernel; ++j) {
                const int index = (top + i) * width + left + j;
                const float v = src[index];
                if (best == best && (v > best || v != v)) {  // best is not NaN; v is larger or NaN
                    best = v;
                    best_index = index;
                }
            }
        }
        y[e] = best;
        argmax[e] = best_index;
    }
}

// dx (zeroed by the caller) += dy at each output's argmax. Overlapping windows (stride <
// kernel) can send several gradients to one input, hence atomicAdd. An argmax outside the
// plane is skipped rather than written out of bounds (the Python side validates it first).
extern "C" __global__ void maxpool_backward(const float* __restrict__ dy,
                                            const int* __restrict__ argmax,
                                            float* __restrict__ dx, int total, int plane_size,
                                            int out_size) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const int a = argmax[e];
        if (a >= 0 && a < plane_size) {
            atomicAdd(dx + (e / out_size) * plane_size + a, dy[e]);
        }
    }
}
