// Host harness: runs the kernels' __host__ __device__ functions (kernels/common.cuh) on the CPU.
// Reads from stdin: n N B I variant alpha beta, then x (B*I), mapping (N*n), luts (N*2^n).
// Prints the addresses (B*N) on one line, then the derivative table D (N*n*2^n) on the next.
#define DWN_HD
#include "common.cuh"

#include <cstdio>
#include <vector>

int main()
{
    int n, N, B, I, variant;
    float alpha, beta;
    if (std::scanf("%d %d %d %d %d %f %f", &n, &N, &B, &I, &variant, &alpha, &beta) != 7) {
        return 1;
    }
    const int size = 1 << n;
    std::vector<float> x(B * I), luts(N * size);
    std::vector<long long> mapping(N * n);
    for (float& v : x) std::scanf("%f", &v);
    for (long long& v : mapping) std::scanf("%lld", &v);
    for (float& v : luts) std::scanf("%f", &v);
    for (int i = 0; i < B; ++i) {
        for (int j = 0; j < N; ++j) {
            std::printf("%u ", dwn_address(&x[i * I], &mapping[j * n], n));
        }
    }
    std::printf("\n");
    for (int j = 0; j < N; ++j) {
        for (int l = 0; l < n; ++l) {
            for (int a = 0; a < size; ++a) {
                std::printf("%.9g ", dwn_derivative(&luts[j * size], n, (unsigned)a, l, variant, alpha, beta));
            }
        }
    }
    std::printf("\n");
    return 0;
}
