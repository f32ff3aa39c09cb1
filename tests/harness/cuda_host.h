// The CUDA built-ins that kernels/*.cu use, for the host, so that g++ compiles exactly the kernel
// text NVRTC compiles (dwn_train.kernels.source) and the tests run it on the CPU
// (tests/kernel_host.py generates the glue and drives it through dwn_train.cuda_lut).
//
// A block runs as blockDim.x host threads (one per CUDA thread, so __syncthreads is a real
// barrier), from a pool reused across blocks and launches; the blocks of a grid run one after
// the other. The block's dynamic shared memory is filled with the float 0x7FA5A5A5 (a signalling
// NaN) before the block, so a kernel that reads it before writing it computes NaN, and is followed
// by a guard of the same words that must be intact after the block (a too-small `shared=` fails;
// adding to a signalling NaN gives a quiet one, so even an atomicAdd into the guard shows).
// A block whose threads reach __syncthreads a different number of times is an error too.
#pragma once

#define DWN_HOST
#define DWN_HD
#define DWN_SHARED(type, name) type* name = reinterpret_cast<type*>(dwn_host::shared_memory)
#define __global__
#define __device__
#define __host__

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

struct uint3 {
    unsigned int x = 0, y = 0, z = 0;
};
struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline thread_local uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace dwn_host {

inline thread_local unsigned char* shared_memory = nullptr;
inline thread_local unsigned long long syncs = 0;  // __syncthreads calls of this thread in this block

// Waiting on a 32-bit word: a few yields, then the futex (a condition variable wakes 256 threads
// several times slower, and __syncthreads is most of the host run time).
inline void wait_while(const std::atomic<unsigned int>& word, unsigned int value)
{
    for (int spin = 0; spin < 2 && word.load(std::memory_order_acquire) == value; ++spin) {
        std::this_thread::yield();
    }
    while (word.load(std::memory_order_acquire) == value) {
#if defined(__linux__)
        syscall(SYS_futex, reinterpret_cast<const unsigned int*>(&word), FUTEX_WAIT_PRIVATE, value, nullptr,
                nullptr, 0);
#else
        std::this_thread::yield();
#endif
    }
}

inline void advance(std::atomic<unsigned int>& word)
{
    word.fetch_add(1u, std::memory_order_acq_rel);
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<unsigned int*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#endif
}

// __syncthreads for the threads of one block. A thread that returns from the kernel leaves, so
// the others are not left waiting forever (the count check in Pool::run_block reports it).
// state: threads expected (high 32 bits) and arrived (low 32 bits), changed together.
class Barrier {
public:
    void reset(unsigned int threads) { state_.store((unsigned long long)threads << 32, std::memory_order_relaxed); }
    void wait()
    {
        const unsigned int generation = generation_.load(std::memory_order_acquire);
        if (change(0u, 1u)) {
            advance(generation_);
        } else {
            wait_while(generation_, generation);
        }
    }
    void leave()
    {
        if (change(1u, 0u)) {
            advance(generation_);
        }
    }

private:
    // expected -= leaving, arrived += arriving; true (and arrived reset) when that completes the barrier
    bool change(unsigned int leaving, unsigned int arriving)
    {
        unsigned long long state = state_.load(std::memory_order_acquire);
        for (;;) {
            const unsigned long long expected = (state >> 32) - leaving, arrived = (state & 0xFFFFFFFFull) + arriving;
            const bool complete = arrived != 0 && arrived == expected;
            const unsigned long long next = (expected << 32) | (complete ? 0ull : arrived);
            if (state_.compare_exchange_weak(state, next, std::memory_order_acq_rel)) {
                return complete;
            }
        }
    }
    std::atomic<unsigned long long> state_{0};
    std::atomic<unsigned int> generation_{0};
};

inline thread_local Barrier* current_barrier = nullptr;  // the barrier of this thread's block

using Kernel = void (*)(void** args);

// blockDim.x threads, started once and kept (never joined: the pools live until the process ends).
class Pool {
public:
    explicit Pool(unsigned int threads) : counts_(threads)
    {
        for (unsigned int t = 0; t < threads; ++t) {
            std::thread([this, t] { loop(t); }).detach();
        }
    }
    // Runs one block; returns false (with a message) when its threads disagree on __syncthreads.
    bool run_block(Kernel kernel, void** args, uint3 block, unsigned char* shared, char* message, int size)
    {
        const unsigned int threads = (unsigned int)counts_.size();
        kernel_ = kernel;
        args_ = args;
        block_ = block;
        shared_ = shared;
        barrier_.reset(threads);
        pending_.store(threads, std::memory_order_relaxed);
        const unsigned int done = done_.load(std::memory_order_acquire);
        advance(start_);  // publishes the fields above
        wait_while(done_, done);
        for (unsigned int t = 1; t < threads; ++t) {
            if (counts_[t] != counts_[0]) {
                std::snprintf(message, size,
                              "block (%u, %u): thread 0 called __syncthreads %llu times, thread %u %llu times",
                              block.x, block.y, counts_[0], t, counts_[t]);
                return false;
            }
        }
        return true;
    }

private:
    void loop(unsigned int t)
    {
        unsigned int seen = 0;
        for (;;) {
            wait_while(start_, seen);
            seen = start_.load(std::memory_order_acquire);
            threadIdx = uint3{t, 0, 0};
            blockIdx = block_;
            shared_memory = shared_;
            current_barrier = &barrier_;
            syncs = 0;
            kernel_(args_);
            barrier_.leave();
            counts_[t] = syncs;
            if (pending_.fetch_sub(1u, std::memory_order_acq_rel) == 1u) {
                advance(done_);  // publishes counts_ and the kernel's writes
            }
        }
    }
    Barrier barrier_;
    std::vector<unsigned long long> counts_;
    std::atomic<unsigned int> start_{0}, done_{0}, pending_{0};
    Kernel kernel_ = nullptr;
    void** args_ = nullptr;
    uint3 block_;
    unsigned char* shared_ = nullptr;
};

// the bytes of the float 0x7FA5A5A5, little-endian
constexpr unsigned char fill[4] = {0xA5, 0xA5, 0xA5, 0x7F};

// Runs a grid of blocks of `threads` threads with `shared` bytes of dynamic shared memory.
// Returns 0, or 1 with a message (shared-memory overrun, __syncthreads mismatch).
inline int run_grid(Kernel kernel, void** args, unsigned int grid_x, unsigned int grid_y, unsigned int threads,
                    unsigned long long shared, char* message, int size)
{
    static std::mutex launches;  // one launch at a time: blockDim and gridDim are global
    static std::map<unsigned int, Pool*> pools;
    std::lock_guard<std::mutex> lock(launches);
    Pool*& pool = pools[threads];
    if (pool == nullptr) {
        pool = new Pool(threads);
    }
    const unsigned long long guard = shared > 4096 ? shared : 4096;
    std::vector<unsigned char> memory(shared + guard);
    blockDim = dim3{threads, 1, 1};
    gridDim = dim3{grid_x, grid_y, 1};
    for (unsigned int y = 0; y < grid_y; ++y) {
        for (unsigned int x = 0; x < grid_x; ++x) {
            for (unsigned long long b = 0; b < memory.size(); ++b) {
                memory[b] = fill[b % 4];
            }
            if (!pool->run_block(kernel, args, uint3{x, y, 0}, memory.data(), message, size)) {
                return 1;
            }
            for (unsigned long long b = shared; b < memory.size(); ++b) {
                if (memory[b] != fill[b % 4]) {
                    std::snprintf(message, size,
                                  "block (%u, %u) wrote shared memory byte %llu, past the %llu bytes launched",
                                  x, y, b, shared);
                    return 1;
                }
            }
        }
    }
    return 0;
}

}  // namespace dwn_host

inline void __syncthreads()
{
    ++dwn_host::syncs;
    dwn_host::current_barrier->wait();
}

// A real atomic on the host: compare-and-swap on the float's bits.
inline float atomicAdd(float* address, float value)
{
    unsigned int* bits = reinterpret_cast<unsigned int*>(address);
    unsigned int expected = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
        float old, sum;
        std::memcpy(&old, &expected, sizeof old);
        sum = old + value;
        unsigned int desired;
        std::memcpy(&desired, &sum, sizeof desired);
        if (__atomic_compare_exchange_n(bits, &expected, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            return old;
        }
    }
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
