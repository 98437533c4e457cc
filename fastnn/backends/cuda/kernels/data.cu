// The training loop's batch gather: the shuffled rows of the inputs and their labels, in one
// launch (two CuPy takes otherwise).
#include "common.cuh"

// xb[r, :] = x[index[r], :] and yb[r] = y[index[r]] for r < rows; one thread per element of xb.
// An index outside [0, samples) gives a NaN row and label -1 (the loss then flags the step)
// rather than a read out of bounds.
extern "C" __global__ void gather_batch(const float* __restrict__ x,
                                        const long long* __restrict__ y,
                                        const long long* __restrict__ index,
                                        float* __restrict__ xb, long long* __restrict__ yb,
                                        int total, int row_size, int samples) {
    for (long long e = fastnn_first_index(); e < total; e += fastnn_grid_stride()) {
        const long long r = e / row_size;
        const long long k = e - r * row_size;
        const long long source = index[r];
        const bool valid = source >= 0 && source < samples;
        xb[e] = valid ? x[source * row_size + k] : __int_as_float(0x7fc00000);
        if (k == 0) yb[r] = valid ? y[source] : -1;
    }
}
