// Per-element work of the LUT kernels, as __host__ __device__ functions so that the host harness
// (tests/harness/lut_host.cpp, compiled with g++) runs exactly this code on the CPU.
// The address bit order and the EFD formulas are documented once, in dwn_train/lut.py.
#pragma once

#ifndef DWN_HD
#define DWN_HD __host__ __device__
#endif

#define DWN_EFD_EXPONENTIAL 0
#define DWN_EFD_PAPER 1
#define DWN_EFD_FD 2

DWN_HD inline int dwn_popcount(unsigned int v)
{
    int count = 0;
    while (v) {
        v &= v - 1u;
        ++count;
    }
    return count;
}

// Address of one LUT for one sample: bit l is x_row[map_row[l]] > 0, least significant first.
// x_row: (I,) one sample's inputs; map_row: (n,) that LUT's input indices.
DWN_HD inline unsigned int dwn_address(const float* x_row, const long long* map_row, int n)
{
    unsigned int address = 0u;
    for (int l = 0; l < n; ++l) {
        address |= (x_row[map_row[l]] > 0.0f ? 1u : 0u) << l;
    }
    return address;
}

// EFD weight of a table entry at Hamming distance `hamming` (bit l excluded) from the address.
DWN_HD inline float dwn_efd_weight(int variant, int hamming, float alpha, float beta)
{
    if (variant == DWN_EFD_PAPER) {
        return 1.0f / (float)(hamming + 1);
    }
    if (variant == DWN_EFD_FD) {
        return hamming == 0 ? 1.0f : 0.0f;
    }
    float weight = alpha;
    for (int h = 0; h < hamming; ++h) {
        weight *= beta;
    }
    return weight;
}

// D[l, a] of one LUT: sum_k table[k] * w(popcount((a ^ k) & ~(1 << l))) * (+1 if bit l of k else -1).
// table: (2^n,) one LUT's entries.
DWN_HD inline float dwn_derivative(const float* table, int n, unsigned int a, int l, int variant, float alpha,
                                   float beta)
{
    float total = 0.0f;
    const unsigned int size = 1u << n;
    const unsigned int mask = ~(1u << l);
    for (unsigned int k = 0u; k < size; ++k) {
        const float weight = dwn_efd_weight(variant, dwn_popcount((a ^ k) & mask), alpha, beta);
        total += ((k >> l) & 1u) ? table[k] * weight : -table[k] * weight;
    }
    return total;
}
