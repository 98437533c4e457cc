// Fused softmax cross-entropy: one pass per row computes the loss and its gradient.
#include "common.cuh"

// One block per row of logits (rows x classes). Stable: works on logits - max(row).
// row_loss[r] = log(sum(exp(shifted))) - shifted[label]  (NaN if the label is out of range);
// dlogits[r] = (softmax(row) - onehot(label)) / rows, the gradient of the mean loss.
extern "C" __global__ void __launch_bounds__(FASTNN_REDUCE_THREADS)
softmax_xent(const float* __restrict__ logits, const long long* __restrict__ labels,
             float* __restrict__ dlogits, float* __restrict__ row_loss, int rows, int classes) {
    __shared__ float partial[FASTNN_REDUCE_THREADS];
    const long long row = blockIdx.x;
    const float* x = logits + row * classes;
    float* d = dlogits + row * classes;

    float m = fastnn_neg_inf();
    for (int c = threadIdx.x; c < classes; c += blockDim.x) m = x[c] > m ? x[c] : m;
    m = fastnn_block_max(m, partial);

    float s = 0.0f;
    for (int c = threadIdx.x; c < classes; c += blockDim.x) s += expf(x[c] - m);
    const float log_sum = logf(fastnn_block_sum(s, partial));

    const long long label = labels[row];
    const bool valid = label >= 0 && label < classes;
    const float n = (float)rows;
    for (int c = threadIdx.x; c < classes; c += blockDim.x) {
        const float p = expf(x[c] - m - log_sum);
        d[c] = (c == label ? p - 1.0f : p) / n;
    }
    if (threadIdx.x == 0) {
        row_loss[row] = valid ? log_sum - (x[label] - m) : __int_as_float(0x7fc00000);
    }
}
