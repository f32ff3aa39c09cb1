// LUT layer forward and EFD backward, fp32. Loaded at run time by dwn_train/kernels.py (CuPy
// RawModule); launched on torch's current stream. Conventions: dwn_train/lut.py.
#include "common.cuh"

// One thread per (sample i, LUT j): address and table lookup; keeps the address for the backward.
extern "C" __global__ void lut_forward_f32(
    const float* x,            // (B, I) inputs
    const long long* mapping,  // (N, n) input index of address bit l
    const float* luts,         // (N, 2^n) tables
    float* out,                // (B, N) outputs: (value > 0) if ste else value
    unsigned short* addr,      // (B, N) addresses, saved for the backward
    int B, int I, int N, int n, int ste)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)B * N) {
        return;
    }
    const int i = (int)(index / N), j = (int)(index % N);
    const unsigned int a = dwn_address(x + (long long)i * I, mapping + (long long)j * n, n);
    const float value = luts[((long long)j << n) + a];
    addr[index] = (unsigned short)a;
    out[index] = ste ? (value > 0.0f ? 1.0f : 0.0f) : value;
}

// One thread per (LUT j, bit l, address a): the derivative table D, built once per backward.
extern "C" __global__ void efd_table_f32(
    const float* luts,  // (N, 2^n) tables
    float* table,       // (N, n, 2^n) D[j, l, a]
    int N, int n, int variant, float alpha, float beta)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long size = 1ll << n;
    if (index >= (long long)N * n * size) {
        return;
    }
    const int j = (int)(index / (n * size));
    const int l = (int)((index / size) % n);
    const unsigned int a = (unsigned int)(index % size);
    table[index] = dwn_derivative(luts + (long long)j * size, n, a, l, variant, alpha, beta);
}

// One thread per (sample i, LUT j): g[i, j] * D[j, l, addr] for every bit l, written per wire.
extern "C" __global__ void lut_backward_wires_f32(
    const float* grad,           // (B, N) dLoss/d out
    const unsigned short* addr,  // (B, N) forward addresses
    const float* table,          // (N, n, 2^n) derivative table
    float* wires,                // (B, N * n) gradient of wire j*n + l
    int B, int N, int n)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)B * N) {
        return;
    }
    const int i = (int)(index / N), j = (int)(index % N);
    const float g = grad[index];
    const long long size = 1ll << n;
    const float* d = table + (long long)j * n * size + addr[index];
    float* w = wires + (long long)i * N * n + (long long)j * n;
    for (int l = 0; l < n; ++l) {
        w[l] = g * d[l * size];
    }
}

// One thread per (sample i, input c): the input gradient as a fixed-order sum over the wires that
// read c (the inverse mapping as CSR), so results are bit-identical run to run (no atomics).
extern "C" __global__ void gather_wires_f32(
    const float* wires,         // (B, W) wire gradients, W = N * n
    const long long* offsets,   // (I + 1) start of input c's wires in `order`
    const long long* order,     // (W) wire indices grouped by input, ascending
    float* grad_x,              // (B, I) input gradient
    int B, int I, int W)
{
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)B * I) {
        return;
    }
    const int i = (int)(index / I), c = (int)(index % I);
    float total = 0.0f;
    for (long long k = offsets[c]; k < offsets[c + 1]; ++k) {
        total += wires[(long long)i * W + order[k]];
    }
    grad_x[index] = total;
}

// One block per (LUT j, chunk of samples): a shared-memory histogram of the output gradient over
// the 2^n addresses, then one global add per entry. With deterministic != 0 the chunk is the whole
// batch and each thread owns a fixed set of addresses, summing samples in order (no atomics).
extern "C" __global__ void lut_backward_luts_f32(
    const float* grad,           // (B, N) dLoss/d out
    const unsigned short* addr,  // (B, N) forward addresses
    float* grad_luts,            // (N, 2^n) accumulated (must start at zero)
    int B, int N, int n, int chunk, int deterministic)
{
    extern __shared__ float hist[];  // (2^n,)
    const int j = blockIdx.x;
    const int size = 1 << n;
    if (deterministic) {
        for (int a = threadIdx.x; a < size; a += blockDim.x) {
            float total = 0.0f;
            for (int i = 0; i < B; ++i) {
                if (addr[(long long)i * N + j] == a) {
                    total += grad[(long long)i * N + j];
                }
            }
            grad_luts[(long long)j * size + a] = total;
        }
        return;
    }
    for (int a = threadIdx.x; a < size; a += blockDim.x) {
        hist[a] = 0.0f;
    }
    __syncthreads();
    const int start = blockIdx.y * chunk;
    const int stop = min(B, start + chunk);
    for (int i = start + threadIdx.x; i < stop; i += blockDim.x) {
        atomicAdd(&hist[addr[(long long)i * N + j]], grad[(long long)i * N + j]);
    }
    __syncthreads();
    for (int a = threadIdx.x; a < size; a += blockDim.x) {
        if (hist[a] != 0.0f) {
            atomicAdd(&grad_luts[(long long)j * size + a], hist[a]);
        }
    }
}
