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

// dx[plane, h, w] = the sum of dy over the outputs whose window holds (h, w) and whose argmax
// is (h, w): one thread per input element gathers, so no two threads write one address and
// the sum runs in output order, as the reference's np.add.at adds (deterministic, no atomics,
// also where windows overlap, stride < kernel). An argmax outside its own window is ignored.
extern "C" __global__ void maxpool_backward(const float* __restrict__ dy,
                                            const int* __restrict__ argmax,
                                            float* __restrict__ dx, int total, int height,
                                            int width, int out_h, int out_w, int kernel,
                                            int stride) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const int w = (int)(e % width);
        const int h = (int)((e / width) % height);
        const long long plane = e / ((long long)width * height);
        const int index = h * width + w;
        // the windows starting at top = oh*stride hold h when top <= h < top + kernel
        const int oh_first = h < kernel ? 0 : (h - kernel + stride) / stride;
        const int ow_first = w < kernel ? 0 : (w - kernel + stride) / stride;
        const int oh_last = h / stride < out_h - 1 ? h / stride : out_h - 1;
        const int ow_last = w / stride < out_w - 1 ? w / stride : out_w - 1;
        const long long base = plane * out_h * out_w;
        float sum = 0.0f;
        for (int oh = oh_first; oh <= oh_last; ++oh) {
            for (int ow = ow_first; ow <= ow_last; ++ow) {
                const long long o = base + (long long)oh * out_w + ow;
                if (argmax[o] == index) sum += dy[o];
            }
        }
        dx[e] = sum;
    }
}
