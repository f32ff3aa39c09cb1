// LUT layer forward and EFD backward, fp32. Loaded at run time by dwn_train/kernels.py (CuPy
// RawModule) and launched by dwn_train/cuda_lut.py on torch's current stream.
// Conventions and the LUT-major layout (samples along the fastest axis): dwn_train/lut.py.
#include "common.cuh"

// One thread per (LUT j, sample i), samples fastest: address and table lookup; keeps the address
// for the backward.
extern "C" __global__ void lut_forward_f32(
    const float* x,            // (I, B) inputs, LUT-major
    const long long* mapping,  // (N, n) input index of address bit l
    const float* luts,         // (N, 2^n) tables
    float* out,                // (N, B) outputs: (value > 0) if ste else value
    unsigned short* addr,      // (N, B) addresses, saved for the backward
    int B, int I, int N, int n, int ste)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)B * N) {
        return;
    }
    const int j = (int)(index / B), i = (int)(index % B);
    const unsigned int a = dwn_address(x + i, B, mapping + (long long)j * n, n);
    const float value = luts[((long long)j << n) + a];
    addr[index] = (unsigned short)a;
    out[index] = ste ? (value > 0.0f ? 1.0f : 0.0f) : value;
}

// One block per LUT j: the derivative table D[j, l, :] for every bit l by the factorised
// transforms of dwn_train/torch_lut.py (per term (c, t): [[1, t], [t, 1]] along every bit m != l,
// (v0, v1) -> (v1 - v0, v1 - v0) along bit l), in shared memory: O(T n^2 2^n) per LUT.
// Shared memory: 2 * 2^n floats.
extern "C" __global__ void efd_table_f32(
    const float* luts,   // (N, 2^n) tables
    const float* terms,  // (T, 2) EFD terms (c, t): w(H) = sum c * t^H
    float* table,        // (N, n, 2^n) D[j, l, a]
    int N, int n, int T)
{
    DWN_SHARED(float, smem);
    const int size = 1 << n, half = size >> 1;
    float* source = smem;
    float* work = smem + size;
    const long long j = blockIdx.x;
    for (int a = threadIdx.x; a < size; a += blockDim.x) {
        source[a] = luts[j * size + a];
    }
    __syncthreads();
    for (int l = 0; l < n; ++l) {
        float* out = table + (j * n + l) * size;
        for (int k = 0; k < T; ++k) {
            const float c = terms[2 * k], t = terms[2 * k + 1];
            for (int a = threadIdx.x; a < size; a += blockDim.x) {
                work[a] = source[a];
            }
            __syncthreads();
            for (int m = 0; m < n; ++m) {
                for (int p = threadIdx.x; p < half; p += blockDim.x) {
                    const unsigned int lo = dwn_pair_low((unsigned int)p, m), hi = lo | (1u << m);
                    const float v0 = work[lo], v1 = work[hi];
                    work[lo] = m == l ? v1 - v0 : v0 + t * v1;
                    work[hi] = m == l ? v1 - v0 : t * v0 + v1;
                }
                __syncthreads();
            }
            for (int a = threadIdx.x; a < size; a += blockDim.x) {
                out[a] = (k == 0 ? 0.0f : out[a]) + c * work[a];
            }
            __syncthreads();
        }
    }
}

// One thread per (LUT j, sample i), samples fastest: g[j, i] * D[j, l, addr[j, i]] for every bit l.
extern "C" __global__ void lut_backward_wires_f32(
    const float* grad,           // (N, B) dLoss/d out, LUT-major
    const unsigned short* addr,  // (N, B) forward addresses
    const float* table,          // (N, n, 2^n) derivative table
    float* wires,                // (N, n, B) gradient reaching address bit l of LUT j
    int B, int N, int n)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)B * N) {
        return;
    }
    const long long j = index / B, i = index % B;
    const float g = grad[index];
    const long long size = 1ll << n;
    const float* d = table + j * n * size + addr[index];
    float* w = wires + j * n * B + i;
    for (int l = 0; l < n; ++l) {
        w[l * (long long)B] = g * d[l * size];
    }
}

// One thread per (input c, sample i), samples fastest: the input gradient as a fixed-order sum over
// the wires that read c (the inverse mapping as CSR), bit-identical run to run (no atomics).
extern "C" __global__ void gather_wires_f32(
    const float* wires,         // (W, B) wire gradients, wire j*n + l, W = N * n
    const long long* offsets,   // (I + 1) start of input c's wires in `order`
    const long long* order,     // (W) wire indices grouped by input, ascending
    float* grad_x,              // (I, B) input gradient, LUT-major
    int B, int I)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)B * I) {
        return;
    }
    const long long c = index / B, i = index % B;
    float total = 0.0f;
    for (long long k = offsets[c]; k < offsets[c + 1]; ++k) {
        total += wires[order[k] * B + i];
    }
    grad_x[index] = total;
}

// One block per (LUT j, chunk of samples): a shared-memory histogram of the output gradient over
// the 2^n addresses, then one global add per entry (float atomics: the order of additions varies).
// Shared memory: 2^n floats.
extern "C" __global__ void lut_backward_luts_f32(
    const float* grad,           // (N, B) dLoss/d out, LUT-major
    const unsigned short* addr,  // (N, B) forward addresses
    float* grad_luts,            // (N, 2^n) accumulated (must start at zero)
    int B, int N, int n, int chunk)
{
    DWN_SHARED(float, hist);
    const long long j = blockIdx.x;
    const int size = 1 << n;
    for (int a = threadIdx.x; a < size; a += blockDim.x) {
        hist[a] = 0.0f;
    }
    __syncthreads();
    const long long start = (long long)blockIdx.y * chunk;
    const long long stop = min((long long)B, start + chunk);
    for (long long i = start + threadIdx.x; i < stop; i += blockDim.x) {
        atomicAdd(&hist[addr[j * B + i]], grad[j * B + i]);
    }
    __syncthreads();
    for (int a = threadIdx.x; a < size; a += blockDim.x) {
        if (hist[a] != 0.0f) {
            atomicAdd(&grad_luts[j * size + a], hist[a]);
        }
    }
}

// The same table gradient without atomics, bit-identical run to run. One block per LUT j. Samples
// pass through shared memory in tiles of blockDim; S = max(1, blockDim / 2^n) partial histograms,
// thread t owns the entries a = t (mod Q), Q = min(2^n, blockDim), of partial t / Q and adds the
// tile's samples i = t / Q (mod S) that hit them, in order. Then the partials are summed in order.
// Shared memory: max(2^n, blockDim) floats + blockDim floats + blockDim unsigned shorts.
extern "C" __global__ void lut_backward_luts_det_f32(
    const float* grad,           // (N, B) dLoss/d out, LUT-major
    const unsigned short* addr,  // (N, B) forward addresses
    float* grad_luts,            // (N, 2^n) written
    int B, int N, int n)
{
    DWN_SHARED(float, smem);
    const int size = 1 << n, threads = blockDim.x;
    const int Q = size < threads ? size : threads, S = size < threads ? threads / size : 1;
    float* hist = smem;                  // (S, 2^n) partial histograms
    float* tile_grad = smem + S * size;  // (blockDim,)
    unsigned short* tile_addr = (unsigned short*)(tile_grad + threads);
    const long long j = blockIdx.x;
    const int t = threadIdx.x, r = t % Q, s = t / Q;
    for (int a = t; a < S * size; a += threads) {
        hist[a] = 0.0f;
    }
    for (long long base = 0; base < B; base += threads) {
        const int count = (int)min((long long)threads, B - base);
        __syncthreads();  // the previous tile is consumed
        if (t < count) {
            tile_grad[t] = grad[j * B + base + t];
            tile_addr[t] = addr[j * B + base + t];
        }
        __syncthreads();
        for (int k = s; k < count; k += S) {
            const int a = tile_addr[k];
            if (a % Q == r) {
                hist[s * size + a] += tile_grad[k];
            }
        }
    }
    __syncthreads();
    for (int a = t; a < size; a += threads) {
        float total = 0.0f;
        for (int p = 0; p < S; ++p) {
            total += hist[p * size + a];
        }
        grad_luts[j * size + a] = total;
    }
}
