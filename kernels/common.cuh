// Per-element work of the LUT kernels and the few portable macros they use. The address bit
// order and the EFD formulas are documented once, in dwn_train/lut.py; the data layout (LUT-major,
// samples fastest) in the same place.
//
// The kernels also run on the CPU in the tests: tests/harness/cuda_host.h defines DWN_HOST and
// the CUDA built-ins (threadIdx, __syncthreads, atomicAdd, ...) for the host, so exactly this code
// is executed there, one host thread per CUDA thread.
#pragma once

#ifndef DWN_HOST
#define DWN_HD __host__ __device__
// dynamic shared memory of the block, as an array of `type`
#define DWN_SHARED(type, name) extern __shared__ type name[]
#endif

// Address of one LUT for one sample: bit l is x[map_row[l] * stride] > 0, least significant first.
// x: that sample's first input; stride: the distance between inputs (B for the (I, B) layout);
// map_row: (n,) the LUT's input indices.
DWN_HD inline unsigned int dwn_address(const float* x, long long stride, const long long* map_row, int n)
{
    unsigned int address = 0u;
    for (int l = 0; l < n; ++l) {
        address |= (x[map_row[l] * stride] > 0.0f ? 1u : 0u) << l;
    }
    return address;
}

// Index of pair p (0 <= p < 2^(n-1)) of bit m's transform: p with a zero bit inserted at m.
DWN_HD inline unsigned int dwn_pair_low(unsigned int p, int m)
{
    const unsigned int below = p & ((1u << m) - 1u);
    return ((p >> m) << (m + 1)) | below;
}
