// In-place optimizer updates, one thread per parameter, PyTorch's formulas. Every kernel
// skips its update while guard[2] != 0: the training loop's step_metrics (loss.cu) sets it
// when a loss becomes non-finite, so no NaN update reaches the weights before the host looks.
#include "common.cuh"

// g = grad + wd*p; with momentum: v = momentum*v + g, g = nesterov ? g + momentum*v : v;
// p -= lr*g. `velocity` is untouched when momentum == 0.
__device__ __forceinline__ void fastnn_sgd_element(float* param, const float* grad,
                                                   float* velocity, long long i, float lr,
                                                   float momentum, float weight_decay,
                                                   int nesterov) {
    float g = grad[i];
    if (weight_decay != 0.0f) g += weight_decay * param[i];
    if (momentum != 0.0f) {
        const float v = momentum * velocity[i] + g;
        velocity[i] = v;
        g = nesterov ? g + momentum * v : v;
    }
    param[i] -= lr * g;
}

// Adam with L2 weight decay added to the gradient. bias1 = 1 - beta1^step and
// bias2 = 1 - beta2^step are computed on the host in double precision.
__device__ __forceinline__ void fastnn_adam_element(float* param, const float* grad, float* m,
                                                    float* v, long long i, float lr, float beta1,
                                                    float beta2, float eps, float weight_decay,
                                                    float bias1, float bias2) {
    float g = grad[i];
    if (weight_decay != 0.0f) g += weight_decay * param[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= lr * (mi / bias1) / (sqrtf(vi / bias2) + eps);
}

// One parameter. `velocity` may be any buffer when momentum == 0 (it is not touched).
extern "C" __global__ void sgd_update(float* __restrict__ param, const float* __restrict__ grad,
                                      float* __restrict__ velocity, int total, float lr,
                                      float momentum, float weight_decay, int nesterov,
                                      const float* __restrict__ guard) {
    if (guard[2] != 0.0f) return;
    for (long long i = fastnn_first_index(); i < total; i += fastnn_grid_stride()) {
        fastnn_sgd_element(param, grad, velocity, i, lr, momentum, weight_decay, nesterov);
    }
}

extern "C" __global__ void adam_update(float* __restrict__ param, const float* __restrict__ grad,
                                       float* __restrict__ m, float* __restrict__ v, int total,
                                       float lr, float beta1, float beta2, float eps,
                                       float weight_decay, float bias1, float bias2,
                                       const float* __restrict__ guard) {
    if (guard[2] != 0.0f) return;
    for (long long i = fastnn_first_index(); i < total; i += fastnn_grid_stride()) {
        fastnn_adam_element(param, grad, m, v, i, lr, beta1, beta2, eps, weight_decay, bias1,
                            bias2);
    }
}

// Every parameter of a model in one launch: blockIdx.y picks the parameter, the x blocks stride
// over its elements. `table` holds one row of 64-bit device addresses per parameter, then its
// size: (param, grad, velocity or 0, size) for SGD, (param, grad, m, v, size) for Adam.
extern "C" __global__ void sgd_update_many(const long long* __restrict__ table, float lr,
                                           float momentum, float weight_decay, int nesterov,
                                           const float* __restrict__ guard) {
    if (guard[2] != 0.0f) return;
    const long long* row = table + 4 * (long long)blockIdx.y;
    float* param = (float*)row[0];
    const float* grad = (const float*)row[1];
    float* velocity = (float*)row[2];
    for (long long i = fastnn_first_index(); i < row[3]; i += fastnn_grid_stride()) {
        fastnn_sgd_element(param, grad, velocity, i, lr, momentum, weight_decay, nesterov);
    }
}

extern "C" __global__ void adam_update_many(const long long* __restrict__ table, float lr,
                                            float beta1, float beta2, float eps,
                                            float weight_decay, float bias1, float bias2,
                                            const float* __restrict__ guard) {
    if (guard[2] != 0.0f) return;
    const long long* row = table + 5 * (long long)blockIdx.y;
    float* param = (float*)row[0];
    const float* grad = (const float*)row[1];
    float* m = (float*)row[2];
    float* v = (float*)row[3];
    for (long long i = fastnn_first_index(); i < row[4]; i += fastnn_grid_stride()) {
        fastnn_adam_element(param, grad, m, v, i, lr, beta1, beta2, eps, weight_decay, bias1,
                            bias2);
    }
}
