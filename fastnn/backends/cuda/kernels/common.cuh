// Shared by every fastnn kernel file.
//
// Each .cu file is compiled three ways from this one source: by NVRTC at run time (CuPy's
// RawModule, which gets the file with this header pasted in), by nvcc and NVRTC in the tests
// for sm_80 and sm_90, and by g++ through tests/cuda/harness, which runs every kernel on the
// CPU with one host thread per CUDA thread. So this code includes no headers and uses only
// what all three understand: no INFINITY (NVRTC lacks it), no warp intrinsics, no dynamic
// shared memory.
//
// Signature rules (tests and the launch wrapper parse them): kernels are
//   extern "C" __global__ void name(TYPE name, ...)
// with TYPE one of float, int, float*, int*, long long*, optionally const, __restrict__.
#ifndef FASTNN_COMMON_CUH
#define FASTNN_COMMON_CUH

// Threads per block of the kernels that reduce through shared memory (any count up to this).
#define FASTNN_REDUCE_THREADS 256

// The first element this thread handles and the step between its elements (grid-stride loop).
__device__ __forceinline__ long long fastnn_first_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long fastnn_grid_stride() {
    return (long long)blockDim.x * gridDim.x;
}

__device__ __forceinline__ float fastnn_neg_inf() {
    return __int_as_float(0xff800000);
}

// Sum of `value` over the block; every thread gets the total. `partial` holds blockDim.x floats.
// Works for any block size (not only powers of two); every thread of the block must call it.
__device__ __forceinline__ float fastnn_block_sum(float value, float* partial) {
    const unsigned tid = threadIdx.x;
    partial[tid] = value;
    __syncthreads();
    for (unsigned active = blockDim.x; active > 1;) {
        const unsigned half = (active + 1) / 2;
        if (tid + half < active) partial[tid] += partial[tid + half];
        __syncthreads();
        active = half;
    }
    const float total = partial[0];
    __syncthreads();  // the caller may reuse `partial` right away
    return total;
}

// Maximum of `value` over the block, as fastnn_block_sum.
__device__ __forceinline__ float fastnn_block_max(float value, float* partial) {
    const unsigned tid = threadIdx.x;
    partial[tid] = value;
    __syncthreads();
    for (unsigned active = blockDim.x; active > 1;) {
        const unsigned half = (active + 1) / 2;
        if (tid + half < active && partial[tid + half] > partial[tid]) {
            partial[tid] = partial[tid + half];
        }
        __syncthreads();
        active = half;
    }
    const float best = partial[0];
    __syncthreads();
    return best;
}

#endif  // FASTNN_COMMON_CUH
