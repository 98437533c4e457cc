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

// The same for few classes (MNIST's 10), in one launch: a single block, one thread per row (a
// block per row would keep 10 of a warp's 32 lanes busy), and the rows' losses summed in the
// block, so loss[0] is the mean loss (NaN if a label is out of range) without another kernel.
extern "C" __global__ void __launch_bounds__(FASTNN_REDUCE_THREADS)
softmax_xent_rows(const float* __restrict__ logits, const long long* __restrict__ labels,
                  float* __restrict__ dlogits, float* __restrict__ loss, int rows, int classes) {
    __shared__ float partial[FASTNN_REDUCE_THREADS];
    const float n = (float)rows;
    float total = 0.0f;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        const float* x = logits + (long long)r * classes;
        float* d = dlogits + (long long)r * classes;
        float m = fastnn_neg_inf();
        for (int c = 0; c < classes; ++c) m = x[c] > m ? x[c] : m;
        float s = 0.0f;
        for (int c = 0; c < classes; ++c) s += expf(x[c] - m);
        const float log_sum = logf(s);
        const long long label = labels[r];
        for (int c = 0; c < classes; ++c) {
            const float p = expf(x[c] - m - log_sum);
            d[c] = (c == label ? p - 1.0f : p) / n;
        }
        total += (label >= 0 && label < classes) ? log_sum - (x[label] - m)
                                                 : __int_as_float(0x7fc00000);
    }
    total = fastnn_block_sum(total, partial);
    if (threadIdx.x == 0) loss[0] = total / n;
}

// The training loop's running numbers of an epoch, in one block and without a sync:
// running[0] += loss * rows, running[1] += the rows whose argmax (first maximum, NaN wins, as
// np.argmax) is the label, and running[2] = the step (from 1) of the first non-finite loss,
// which the optimizer kernels honour by skipping their update, so the model keeps the weights
// from before that step. The host reads the three numbers at its sync points.
extern "C" __global__ void __launch_bounds__(FASTNN_REDUCE_THREADS)
step_metrics(const float* __restrict__ loss, const float* __restrict__ outputs,
             const long long* __restrict__ labels, float* __restrict__ running, int rows,
             int classes, int step) {
    __shared__ float partial[FASTNN_REDUCE_THREADS];
    float hits = 0.0f;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        const float* o = outputs + (long long)r * classes;
        int best = 0;
        float top = o[0];
        for (int c = 1; c < classes && top == top; ++c) {
            if (o[c] > top || o[c] != o[c]) {
                top = o[c];
                best = c;
            }
        }
        hits += (best == labels[r]) ? 1.0f : 0.0f;
    }
    hits = fastnn_block_sum(hits, partial);
    if (threadIdx.x == 0) {
        const float value = loss[0];
        running[0] += value * (float)rows;
        running[1] += hits;
        if (!(value - value == 0.0f) && running[2] == 0.0f) running[2] = (float)step;  // NaN, inf
    }
}
