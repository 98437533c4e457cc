// im2col / col2im for Conv2d as GEMMs. Row k = (c*kH + i)*kW + j of a column matrix is kernel
// tap (i, j) of channel c; K = C_in*kH*kW taps, P = H_out*W_out positions. Two layouts:
// sample-major (N, K, P), so the forward pass's y[n] = w.reshape(C_out, K) @ col[n] is NCHW
// without a transpose; and tap-major (K, N, P), one (K, N*P) matrix, so the backward pass's
// dw = dz (C_out, N*P) @ col.T is a single GEMM that sums over the samples itself.
#include "common.cuh"

// col[...] = x[n, c, oh*stride - pad + i, ow*stride - pad + j], zero in the padding. One thread
// per element of col; `samples` = total / (K*P).
extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ col,
                                  int total, int channels, int height, int width, int kh, int kw,
                                  int stride, int pad, int out_h, int out_w, int tap_major) {
    const long long taps = (long long)channels * kh * kw;
    const long long positions = (long long)out_h * out_w;
    const long long samples = total / (taps * positions);
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const long long p = e % positions;
        const long long rest = e / positions;
        const long long n = tap_major ? rest % samples : rest / taps;
        long long t = tap_major ? rest / samples : rest % taps;
        const int ow = (int)(p % out_w);
        const int oh = (int)(p / out_w);
        const int j = (int)(t % kw); t /= kw;
        const int i = (int)(t % kh); t /= kh;
        const int c = (int)t;
        const int h = oh * stride - pad + i;
        const int w = ow * stride - pad + j;
        float v = 0.0f;
        if (h >= 0 && h < height && w >= 0 && w < width) {
            v = x[((n * channels + c) * height + h) * width + w];
        }
        col[e] = v;
    }
}

// The adjoint of im2col (same layouts): dx[n, c, h, w] sums every col entry that im2col read
// from there. One thread per element of dx gathers its taps, so no two threads write one
// address; `samples` = total / (C*H*W).
extern "C" __global__ void col2im(const float* __restrict__ col, float* __restrict__ dx,
                                  int total, int channels, int height, int width, int kh, int kw,
                                  int stride, int pad, int out_h, int out_w, int tap_major) {
    const long long taps = (long long)channels * kh * kw;
    const long long positions = (long long)out_h * out_w;
    const long long samples = total / ((long long)channels * height * width);
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        long long t = e;
        const int w = (int)(t % width); t /= width;
        const int h = (int)(t % height); t /= height;
        const int c = (int)(t % channels);
        const long long n = t / channels;
        // element (row, n, p) lives at row*row_step + sample_offset + p
        const long long row_step = tap_major ? samples * positions : positions;
        const long long sample_offset = tap_major ? n * positions : n * taps * positions;
        float sum = 0.0f;
        for (int i = 0; i < kh; ++i) {
            const int hp = h + pad - i;
            if (hp < 0 || hp % stride != 0 || hp / stride >= out_h) continue;
            for (int j = 0; j < kw; ++j) {
                const int wp = w + pad - j;
                if (wp < 0 || wp % stride != 0 || wp / stride >= out_w) continue;
                const long long row = ((long long)c * kh + i) * kw + j;
                sum += col[row * row_step + sample_offset + (long long)(hp / stride) * out_w +
                           wp / stride];
            }
        }
        dx[e] = sum;
    }
}
