// The host harness: runs fastnn's CUDA kernels (included through kernel_list.inc, which
// tests/cuda/harness/host_harness.py generates) on CPU threads, behind a small C API that
// Python calls with ctypes, with kernel arguments passed as cuLaunchKernel takes them (an
// array of pointers to each argument's value).
#include "cuda_host.h"

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace fastnn_host {

thread_local uint3 thread_index;
thread_local uint3 block_index;
dim3 block_dim;
dim3 grid_dim;

struct Divergence {};  // thrown in the kernel threads of a block whose barrier was misused

// The barrier behind __syncthreads for the block that is running.
class BlockBarrier {
public:
    explicit BlockBarrier(unsigned threads) : threads_(threads) {}

    void arrive(int line) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (!error_.empty()) throw Divergence{};
        if (exited_ > 0) fail("a thread reached __syncthreads (line " + std::to_string(line) +
                              ") after another thread of its block returned");
        if (arrived_ == 0) {
            line_ = line;
        } else if (line != line_) {
            fail("threads of one block wait at different __syncthreads (lines " +
                 std::to_string(line_) + " and " + std::to_string(line) + ")");
        }
        if (++arrived_ == threads_) {
            arrived_ = 0;
            ++generation_;
            released_.notify_all();
            return;
        }
        const unsigned long generation = generation_;
        released_.wait(lock, [&] { return generation_ != generation || !error_.empty(); });
        if (generation_ == generation) throw Divergence{};
    }

    void exit_thread() {
        std::lock_guard<std::mutex> lock(mutex_);
        ++exited_;
        if (arrived_ > 0 && error_.empty()) {
            error_ = "a thread returned while others of its block wait at __syncthreads (line " +
                     std::to_string(line_) + ")";
            released_.notify_all();
        }
    }

    std::string error() {
        std::lock_guard<std::mutex> lock(mutex_);
        return error_;
    }

private:
    [[noreturn]] void fail(std::string message) {  // called with mutex_ held
        error_ = std::move(message);
        released_.notify_all();
        throw Divergence{};
    }

    std::mutex mutex_;
    std::condition_variable released_;
    const unsigned threads_;
    unsigned arrived_ = 0;
    unsigned exited_ = 0;
    unsigned long generation_ = 0;
    int line_ = -1;
    std::string error_;
};

BlockBarrier* current_barrier = nullptr;

void syncthreads(int line) { current_barrier->arrive(line); }

template <typename T> struct TypeName;
template <> struct TypeName<float> { static std::string get() { return "float"; } };
template <> struct TypeName<int> { static std::string get() { return "int"; } };
template <> struct TypeName<long long> { static std::string get() { return "long long"; } };
template <typename T> struct TypeName<T*> {
    static std::string get() { return TypeName<T>::get() + "*"; }
};
template <typename T> struct TypeName<const T> {
    static std::string get() { return "const " + TypeName<T>::get(); }
};

struct Entry {
    const char* name;
    std::string (*signature)();
    std::string (*launch)(const unsigned* grid, const unsigned* block, void** args);
};

// Runs `kernel` over the grid; returns "" or what went wrong.
template <typename... Params, std::size_t... I>
std::string run_grid(void (*kernel)(Params...), const unsigned* grid, const unsigned* block,
                     void** args, std::index_sequence<I...>) {
    const std::tuple<Params...> values(*static_cast<Params*>(args[I])...);
    grid_dim = dim3{grid[0], grid[1], grid[2]};
    block_dim = dim3{block[0], block[1], block[2]};
    const unsigned threads = block[0] * block[1] * block[2];
    const unsigned blocks = grid[0] * grid[1] * grid[2];
    for (unsigned b = blocks; b-- > 0;) {
        const uint3 block_at{b % grid[0], (b / grid[0]) % grid[1], b / (grid[0] * grid[1])};
        BlockBarrier barrier(threads);
        current_barrier = &barrier;
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
                thread_index = uint3{t % block[0], (t / block[0]) % block[1],
                                     t / (block[0] * block[1])};
                block_index = block_at;
                try {
                    std::apply(kernel, values);
                } catch (const Divergence&) {
                }
                barrier.exit_thread();
            });
        }
        for (auto& thread : pool) thread.join();
        current_barrier = nullptr;
        std::string error = barrier.error();
        if (!error.empty()) {
            return error + " in block (" + std::to_string(block_at.x) + ", " +
                   std::to_string(block_at.y) + ", " + std::to_string(block_at.z) + ")";
        }
    }
    return "";
}

template <typename... Params>
std::string signature_of(void (*)(Params...)) {
    std::string text;
    ((text += (text.empty() ? "" : ",") + TypeName<Params>::get()), ...);
    return text;
}

template <typename... Params>
std::string launch_of(void (*kernel)(Params...), const unsigned* grid, const unsigned* block,
                      void** args) {
    return run_grid(kernel, grid, block, args, std::index_sequence_for<Params...>{});
}

}  // namespace fastnn_host

#include "kernel_list.inc"  // #include "dense.cu" ... for every kernel file

#define FASTNN_ENTRY(kernel)                                                          \
    fastnn_host::Entry {                                                              \
        #kernel, [] { return fastnn_host::signature_of(&kernel); },                   \
            [](const unsigned* grid, const unsigned* block, void** args) {            \
                return fastnn_host::launch_of(&kernel, grid, block, args);            \
            }                                                                         \
    }

static const fastnn_host::Entry entries[] = {
#include "kernel_entries.inc"  // FASTNN_ENTRY(bias_act), ... for every kernel
};

static const fastnn_host::Entry* find(const char* name) {
    for (const auto& entry : entries) {
        if (std::strcmp(entry.name, name) == 0) return &entry;
    }
    return nullptr;
}

static void copy_message(const std::string& text, char* out, int size) {
    std::snprintf(out, static_cast<std::size_t>(size), "%s", text.c_str());
}

// Writes the kernel's parameter types ("float*,const float*,int,...") into `out`;
// returns 0, or -1 if there is no such kernel.
extern "C" int fastnn_harness_signature(const char* name, char* out, int size) {
    const auto* entry = find(name);
    if (entry == nullptr) return -1;
    copy_message(entry->signature(), out, size);
    return 0;
}

// Runs the kernel; returns 0, or -1 with the reason in `message`.
extern "C" int fastnn_harness_launch(const char* name, const unsigned* grid,
                                     const unsigned* block, void** args, char* message,
                                     int size) {
    const auto* entry = find(name);
    if (entry == nullptr) {
        copy_message(std::string("no kernel named ") + name, message, size);
        return -1;
    }
    const std::string error = entry->launch(grid, block, args);
    copy_message(error, message, size);
    return error.empty() ? 0 : -1;
}
