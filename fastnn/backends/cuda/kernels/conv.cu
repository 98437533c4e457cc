// im2col / col2im for Conv2d as GEMMs. The column matrix of sample n is (K, P) with
// K = C_in*kH*kW (row (c*kH + i)*kW + j is kernel tap (i, j) of channel c) and P = H_out*W_out,
// so y[n] = w.reshape(C_out, K) @ col[n] is NCHW without a transpose.
#include "common.cuh"

// col[n, (c*kh + i)*kw + j, oh*out_w + ow] = x[n, c, oh*stride - pad + i, ow*stride - pad + j],
// zero where that falls in the padding. One thread per element of col.
extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ col,
                                  int total, int channels, int height, int width, int kh, int kw,
                                  int stride, int pad, int out_h, int out_w) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        long long t = e;
        const int ow = (int)(t % out_w); t /= out_w;
        const int oh = (int)(t % out_h); t /= out_h;
        const int j = (int)(t % kw); t /= kw;
        const int i = (int)(t % kh); t /= kh;
        const int c = (int)(t % channels);
        const long long n = t / channels;
        const int h = oh * stride - pad + i;
        const int w = ow * stride - pad + j;
        float v = 0.0f;
        if (h >= 0 && h < height && w >= 0 && w < width) {
            v = x[((n * channels + c) * height + h) * width + w];
        }
        col[e] = v;
    }
}

// The adjoint of im2col: dx[n, c, h, w] sums every col entry that im2col read from there.
// One thread per element of dx gathers its taps, so no two threads write one address.
extern "C" __global__ void col2im(const float* __restrict__ col, float* __restrict__ dx,
                                  int total, int channels, int height, int width, int kh, int kw,
                                  int stride, int pad, int out_h, int out_w) {
    const long long taps = (long long)channels * kh * kw;
    const long long positions = (long long)out_h * out_w;
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        long long t = e;
        const int w = (int)(t % width); t /= width;
        const int h = (int)(t % height); t /= height;
        const int c = (int)(t % channels);
        const long long n = t / channels;
        const float* sample = col + n * taps * positions;
        float sum = 0.0f;
        for (int i = 0; i < kh; ++i) {
            const int hp = h + pad - i;
            if (hp < 0 || hp % stride != 0 || hp / stride >= out_h) continue;
            for (int j = 0; j < kw; ++j) {
                const int wp = w + pad - j;
                if (wp < 0 || wp % stride != 0 || wp / stride >= out_w) continue;
                const long long row = ((long long)c * kh + i) * kw + j;
                sum += sample[row * positions + (long long)(hp / stride) * out_w + wp / stride];
            }
        }
        dx[e] = sum;
    }
}
