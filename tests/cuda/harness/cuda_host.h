// Just enough CUDA to run fastnn's .cu kernels on the CPU, for testing without a GPU.
//
// One host thread per CUDA thread. The blocks of a grid run one after another (in reverse
// order, so code that assumes block 0 runs first shows up); the threads of a block run at
// once, and __syncthreads is a barrier that also reports divergence (threads waiting at
// different __syncthreads, or one returning while others wait). __shared__ becomes a
// function-local static, which is per block because blocks do not overlap. atomicAdd is
// std::atomic_ref. Built with -fsanitize=thread, a missing __syncthreads is a reported race.
#pragma once

#include <atomic>
#include <cmath>
#include <cstring>
#include <math.h>

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace fastnn_host {
extern thread_local uint3 thread_index;
extern thread_local uint3 block_index;
extern dim3 block_dim;
extern dim3 grid_dim;
void syncthreads(int line);
}  // namespace fastnn_host

#define threadIdx (::fastnn_host::thread_index)
#define blockIdx (::fastnn_host::block_index)
#define blockDim (::fastnn_host::block_dim)
#define gridDim (::fastnn_host::grid_dim)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __syncthreads() ::fastnn_host::syncthreads(__LINE__)

inline float atomicAdd(float* address, float value) {
    return std::atomic_ref<float>(*address).fetch_add(value);
}

inline int atomicAdd(int* address, int value) {
    return std::atomic_ref<int>(*address).fetch_add(value);
}

inline float __int_as_float(int bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

inline float __int_as_float(unsigned bits) { return __int_as_float(static_cast<int>(bits)); }
