/* The compiled inference engine of dwn-train (dwn_train/export/compiled.py builds and loads it).
 *
 * This file is C: compiled.py replaces the marker line below with a generated block of #defines,
 * typedefs and static const data for one frozen network, compiles the result once with the
 * system C compiler (-O3 -march=native -pthread) and calls dwn_run through ctypes. With AVX-512
 * (BW, and VBMI + GFNI for the transpose) it uses intrinsics; elsewhere the same steps in plain C
 * that compilers vectorise. The contract (input codes, thermometer comparators, LUT address bit
 * order, popcounts, lowest class on ties) is dwn_train/export/freeze.py's.
 *
 * A signal is a dwn_vec: one bit per sample for a block of DWN_BLOCK = 512 samples, sample s at
 * bit s % 64 of word s / 64. Signals live in one array per thread: first the comparator bits the
 * network reads, 64 per encoder block, then every LUT output in evaluation order.
 *
 * The generated block provides:
 *   DWN_NUM_FEATURES, DWN_NUM_CLASSES    features per sample, classes
 *   dwn_input_t, DWN_INPUT_LO/HI         the type of an input code and its range
 *   DWN_INPUT_BYTES, DWN_INPUT_SIGNED    its size (1, 2 or 4) and signedness
 *   dwn_scale[DWN_NUM_FEATURES]          2^frac_bits of each feature as a float: real features are scaled by it
 *   DWN_NUM_BLOCKS                       encoder blocks: 64 comparators of one threshold index
 *                                        over a chunk of 64 consecutive features; only blocks that
 *                                        hold a comparator the network reads (at least one block)
 *   dwn_block_thresholds[..][64]         their thresholds, clipped to the code range (padding: HI)
 *   DWN_NUM_CHUNKS                       chunks with at least one block
 *   dwn_chunk_first[DWN_NUM_CHUNKS]      a chunk's first feature (a multiple of 64)
 *   dwn_chunk_blocks[DWN_NUM_CHUNKS + 1] its blocks are dwn_chunk_blocks[c] .. [c + 1] - 1
 *   DWN_NUM_SIGNALS                      signals: 64 * DWN_NUM_BLOCKS comparators, then LUTs
 *   DWN_NUM_LUTS                         LUTs in evaluation order; LUT k is signal 64 * blocks + k
 *   dwn_wire_t                           an unsigned type that holds a signal index
 *   dwn_lut_inputs[DWN_NUM_LUTS][6]      its input signals, address bit 0 first (narrower LUTs
 *                                        repeat an input; their tables do not depend on it)
 *   dwn_lut_nibbles[DWN_NUM_LUTS][16]    its truth table, 4 bits at a time: nibble k is entries
 *                                        4k..4k+3 (entry = address, bit 0 = input 0)
 *   DWN_LAST, DWN_LAST_WIDTH, DWN_GROUP  the last layer's first signal and width; bits per class
 *   DWN_SCORE_BITS, DWN_CLASS_BITS       bits of a score (DWN_GROUP < 2^DWN_SCORE_BITS), of a class
 *   DWN_KEY                              the cache key the library is built under
 * (dwn_train/export/simplify.py says how the network becomes these signals.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* @DWN_GENERATED@ */

#define DWN_BLOCK 512
typedef uint64_t dwn_vec __attribute__((vector_size(64), aligned(64)));

/* ---- LUTs: bit-sliced multiplexer trees -------------------------------------------------------
 * A LUT-6 with inputs a..f is a multiplexer tree. Its 64-entry table is 16 nibbles; nibble k is a
 * function of (a, b) for one value k of (c, d, e, f). All 16 functions of (a, b) are computed once
 * per LUT (v[n] is the function whose truth table is n), so the table only picks which of them
 * feed the 8 + 4 + 2 + 1 multiplexers on c, d, e and f. The code is the same for every LUT: the
 * network is data, the loop stays small, and the compiler sees constant immediates only. */
#if defined(__AVX512F__)
#define DWN_TERN(x, y, z, imm) ((dwn_vec)_mm512_ternarylogic_epi64((__m512i)(x), (__m512i)(y), (__m512i)(z), (imm)))
#define DWN_MUX(s, one, zero) DWN_TERN(one, zero, s, 0xE4) /* s ? one : zero, bit by bit */
/* ternlog's immediate indexes (x, y, z) as 0xF0, 0xCC, 0xAA; with x = b and y = z = a, truth table
 * n (bit a + 2b) of (a, b) is this byte */
#define DWN_AB(n) ((((n) & 1) ? 0x0F & 0x55 : 0) | (((n) & 2) ? 0x0F & 0xAA : 0) | (((n) & 4) ? 0xF0 & 0x55 : 0) \
                   | (((n) & 8) ? 0xF0 & 0xAA : 0))
#define DWN_FN(n, a, b) DWN_TERN(b, a, a, DWN_AB(n))
#else
#define DWN_MUX(s, one, zero) (((one) & (s)) | ((zero) & ~(s)))
#define DWN_BIT(n, k) ((dwn_vec){0} - (uint64_t)(((n) >> (k)) & 1u)) /* all ones where bit k of n is set */
#define DWN_FN(n, a, b) DWN_MUX(b, DWN_MUX(a, DWN_BIT(n, 3), DWN_BIT(n, 2)), DWN_MUX(a, DWN_BIT(n, 1), DWN_BIT(n, 0)))
#endif

static void dwn_network(dwn_vec *restrict sig)
{
    dwn_vec *restrict out = sig + 64 * DWN_NUM_BLOCKS;
    long k;
    int j;
    for (k = 0; k < DWN_NUM_LUTS; k++) {
        const dwn_wire_t *in = dwn_lut_inputs[k];
        const uint8_t *nibble = dwn_lut_nibbles[k];
        dwn_vec a = sig[in[0]], b = sig[in[1]], c = sig[in[2]], v[16], m[8];
        v[0] = DWN_FN(0, a, b), v[1] = DWN_FN(1, a, b), v[2] = DWN_FN(2, a, b), v[3] = DWN_FN(3, a, b);
        v[4] = DWN_FN(4, a, b), v[5] = DWN_FN(5, a, b), v[6] = DWN_FN(6, a, b), v[7] = DWN_FN(7, a, b);
        v[8] = DWN_FN(8, a, b), v[9] = DWN_FN(9, a, b), v[10] = DWN_FN(10, a, b), v[11] = DWN_FN(11, a, b);
        v[12] = DWN_FN(12, a, b), v[13] = DWN_FN(13, a, b), v[14] = DWN_FN(14, a, b), v[15] = DWN_FN(15, a, b);
        for (j = 0; j < 8; j++) {
            m[j] = DWN_MUX(c, v[nibble[2 * j + 1]], v[nibble[2 * j]]);
        }
        for (j = 0; j < 4; j++) {
            m[j] = DWN_MUX(sig[in[3]], m[2 * j + 1], m[2 * j]);
        }
        for (j = 0; j < 2; j++) {
            m[j] = DWN_MUX(sig[in[4]], m[2 * j + 1], m[2 * j]);
        }
        out[k] = DWN_MUX(sig[in[5]], m[1], m[0]);
    }
}

/* ---- Encoder: comparators of 64 samples x 64 features, then a 64 x 64 bit transpose ----------
 * Row-wise comparisons (one sample's 64 consecutive features, a chunk, against one threshold
 * index) give a 64-bit mask per sample; transposing 64 such masks gives one word per feature,
 * bit s = sample s. One block at a time: its thresholds stay in registers for the 64 rows. */
#define DWN_PER_ZMM (64 / DWN_INPUT_BYTES) /* input codes per 64 bytes */
#if defined(__AVX512BW__)
#if DWN_INPUT_BYTES == 1 && DWN_INPUT_SIGNED
#define DWN_GREATER _mm512_cmpgt_epi8_mask
#elif DWN_INPUT_BYTES == 1
#define DWN_GREATER _mm512_cmpgt_epu8_mask
#elif DWN_INPUT_BYTES == 2 && DWN_INPUT_SIGNED
#define DWN_GREATER _mm512_cmpgt_epi16_mask
#elif DWN_INPUT_BYTES == 2
#define DWN_GREATER _mm512_cmpgt_epu16_mask
#elif DWN_INPUT_SIGNED
#define DWN_GREATER _mm512_cmpgt_epi32_mask
#else
#define DWN_GREATER _mm512_cmpgt_epu32_mask
#endif

/* out[s] bit f = row s's feature f > t[f], for 64 rows DWN_NUM_FEATURES apart and f < width
 * (features past the row's end are not read: masked loads, slow when they split cache lines,
 * only there). */
static void dwn_compare_block(const dwn_input_t *row, int width, const dwn_input_t *t, uint64_t *out)
{
    __m512i limit[DWN_INPUT_BYTES];
    __mmask64 take[DWN_INPUT_BYTES];
    int p, s, bytes = width * DWN_INPUT_BYTES;
    for (p = 0; p < DWN_INPUT_BYTES; p++, bytes -= 64) {
        limit[p] = _mm512_load_si512(t + p * DWN_PER_ZMM);
        take[p] = bytes >= 64 ? ~(__mmask64)0 : bytes <= 0 ? 0 : (((__mmask64)1 << bytes) - 1);
    }
    for (s = 0; s < 64; s++, row += DWN_NUM_FEATURES) {
        uint64_t mask = 0;
        for (p = 0; p < DWN_INPUT_BYTES; p++) {
            __m512i x = width == 64 ? _mm512_loadu_si512(row + p * DWN_PER_ZMM)
                                    : _mm512_maskz_loadu_epi8(take[p], row + p * DWN_PER_ZMM);
            mask |= (uint64_t)DWN_GREATER(x, limit[p]) << (p * DWN_PER_ZMM);
        }
        out[s] = mask;
    }
}
#else
static void dwn_compare_block(const dwn_input_t *row, int width, const dwn_input_t *t, uint64_t *out)
{
    uint8_t bits[64];
    int s, f, k;
    memset(bits, 0, sizeof(bits));
    for (s = 0; s < 64; s++, row += DWN_NUM_FEATURES) {
        uint64_t mask = 0;
        for (f = 0; f < width; f++) {
            bits[f] = row[f] > t[f];
        }
        for (k = 0; k < 8; k++) { /* 8 bytes of 0/1, gathered into one byte by a carry-free multiply */
            uint64_t eight;
            memcpy(&eight, bits + 8 * k, 8);
            mask |= ((eight * (uint64_t)0x0102040810204080u) >> 56) << (8 * k);
        }
        out[s] = mask;
    }
}
#endif

#if defined(__AVX512F__)
/* r[i] qword j -> r[j] qword i for 8 registers: unpack, then swap 256- and 128-bit halves. */
static inline void dwn_qwords8x8(__m512i *r)
{
    __m512i t[8];
    int k;
    for (k = 0; k < 8; k += 2) {
        t[k] = _mm512_unpacklo_epi64(r[k], r[k + 1]);
        t[k + 1] = _mm512_unpackhi_epi64(r[k], r[k + 1]);
    }
    for (k = 0; k < 8; k += 4) {
        r[k] = _mm512_shuffle_i64x2(t[k], t[k + 2], 0x88);
        r[k + 1] = _mm512_shuffle_i64x2(t[k + 1], t[k + 3], 0x88);
        r[k + 2] = _mm512_shuffle_i64x2(t[k], t[k + 2], 0xDD);
        r[k + 3] = _mm512_shuffle_i64x2(t[k + 1], t[k + 3], 0xDD);
    }
    for (k = 0; k < 4; k++) {
        t[k] = _mm512_shuffle_i64x2(r[k], r[k + 4], 0x88);
        t[k + 4] = _mm512_shuffle_i64x2(r[k], r[k + 4], 0xDD);
    }
    memcpy(r, t, sizeof(t));
}
#endif

#if defined(__AVX512VBMI__) && defined(__GFNI__) && defined(__AVX512BW__)
/* m[s] bit f -> out[f] bit s for a 64 x 64 bit matrix (s, f < 64), in 8 zmm registers:
 * vpermb gathers each 8 x 8 bit tile into one qword, gf2p8affineqb transposes the tiles, and a
 * qword transpose across registers plus one more vpermb put the tiles in place. */
static void dwn_transpose64(const uint64_t *m, uint64_t *out)
{
    /* tile (rows 8r.., byte c) -> qword c, rows reversed (gf2p8affine reads row 7 - i for bit i) */
    static const uint8_t gather[64] __attribute__((aligned(64))) = {
        56, 48, 40, 32, 24, 16, 8, 0, 57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2,
        59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36, 28, 20, 12, 4, 61, 53, 45, 37, 29, 21, 13, 5,
        62, 54, 46, 38, 30, 22, 14, 6, 63, 55, 47, 39, 31, 23, 15, 7};
    static const uint8_t place[64] __attribute__((aligned(64))) = {
        0, 8, 16, 24, 32, 40, 48, 56, 1, 9, 17, 25, 33, 41, 49, 57, 2, 10, 18, 26, 34, 42, 50, 58,
        3, 11, 19, 27, 35, 43, 51, 59, 4, 12, 20, 28, 36, 44, 52, 60, 5, 13, 21, 29, 37, 45, 53, 61,
        6, 14, 22, 30, 38, 46, 54, 62, 7, 15, 23, 31, 39, 47, 55, 63};
    const __m512i g = _mm512_load_si512(gather), p = _mm512_load_si512(place);
    const __m512i unit = _mm512_set1_epi64((long long)0x8040201008040201ull);
    __m512i r[8];
    int k;
    for (k = 0; k < 8; k++) { /* r[k] qword c, byte j: bits of samples 8k..8k+7 for feature 8c+j */
        r[k] = _mm512_gf2p8affine_epi64_epi8(unit, _mm512_permutexvar_epi8(g, _mm512_loadu_si512(m + 8 * k)), 0);
    }
    dwn_qwords8x8(r); /* r[c] qword k: tile (samples 8k.., features 8c..) */
    for (k = 0; k < 8; k++) { /* byte k of feature 8c + j's word: samples 8k..8k+7 */
        _mm512_storeu_si512(out + 8 * k, _mm512_permutexvar_epi8(p, r[k]));
    }
}
#else
/* m[s] bit f -> out[f] bit s: swap the off-diagonal halves of ever smaller square tiles. */
static void dwn_transpose64(const uint64_t *m, uint64_t *out)
{
    uint64_t mask = 0x00000000FFFFFFFFu;
    int width, k;
    memcpy(out, m, 64 * sizeof(uint64_t));
    for (width = 32; width > 0; width >>= 1, mask ^= mask << width) {
        for (k = 0; k < 64; k = ((k | width) + 1) & ~width) {
            uint64_t swap = ((out[k] >> width) ^ out[k | width]) & mask;
            out[k] ^= swap << width;
            out[k | width] ^= swap;
        }
    }
}
#endif

/* ---- From 64-sample words to signals ------------------------------------------------------------
 * words[part][f] holds feature f's bits for samples 64 * part ..; a signal holds all 8 parts. */
#if defined(__AVX512F__)
static void dwn_regroup(const uint64_t *words /* [8][64] */, dwn_vec *sig /* [64] */)
{
    __m512i r[8];
    int group, part;
    for (group = 0; group < 64; group += 8) {
        for (part = 0; part < 8; part++) {
            r[part] = _mm512_loadu_si512(words + 64 * part + group);
        }
        dwn_qwords8x8(r);
        for (part = 0; part < 8; part++) {
            sig[group + part] = (dwn_vec)r[part];
        }
    }
}
#else
static void dwn_regroup(const uint64_t *words /* [8][64] */, dwn_vec *sig /* [64] */)
{
    int f, part;
    for (f = 0; f < 64; f++) {
        for (part = 0; part < 8; part++) {
            sig[f][part] = words[64 * part + f];
        }
    }
}
#endif

typedef struct {
    dwn_vec *sig;       /* [DWN_NUM_SIGNALS] */
    uint64_t *masks;    /* [DWN_NUM_BLOCKS][64]: comparator masks of 64 samples, bit = feature */
    uint64_t *words;    /* [DWN_NUM_BLOCKS][8][64]: transposed, bit = sample */
    dwn_input_t *rows;  /* [DWN_BLOCK][DWN_NUM_FEATURES]: a partial block padded, or quantised */
} dwn_work;

/* rows[DWN_BLOCK][DWN_NUM_FEATURES] -> the first 64 * DWN_NUM_BLOCKS signals. */
static void dwn_encode(const dwn_input_t *rows, dwn_work *w)
{
    int part, c, b;
    for (part = 0; part < 8; part++) {
        for (c = 0; c < DWN_NUM_CHUNKS; c++) {
            int first = dwn_chunk_first[c], width = DWN_NUM_FEATURES - first < 64 ? DWN_NUM_FEATURES - first : 64;
            const dwn_input_t *chunk = rows + (long)64 * part * DWN_NUM_FEATURES + first;
            for (b = dwn_chunk_blocks[c]; b < dwn_chunk_blocks[c + 1]; b++) {
                dwn_compare_block(chunk, width, dwn_block_thresholds[b], w->masks + 64 * b);
            }
        }
        for (b = 0; b < DWN_NUM_BLOCKS; b++) {
            dwn_transpose64(w->masks + 64 * b, w->words + 64 * (8 * b + part));
        }
    }
    for (b = 0; b < DWN_NUM_BLOCKS; b++) {
        dwn_regroup(w->words + 512 * b, w->sig + 64 * b);
    }
}

/* ---- Head: bit-sliced popcounts and argmax ------------------------------------------------------ */
#if defined(__AVX512F__)
#define DWN_XOR3(a, b, c) DWN_TERN(a, b, c, 0x96)
#define DWN_MAJ(a, b, c) DWN_TERN(a, b, c, 0xE8)
#else
#define DWN_XOR3(a, b, c) ((a) ^ (b) ^ (c))
#define DWN_MAJ(a, b, c) (((a) & (b)) | ((c) & ((a) ^ (b))))
#endif

/* planes[p] = bit p of how many of in[0..m-1] are set, per sample. Carry-save: a third vector of
 * one weight turns the two held there into their sum (kept) and carry (one weight up). */
static void dwn_popcount(const dwn_vec *in, int m, dwn_vec *planes /* [DWN_SCORE_BITS] */)
{
    dwn_vec held[DWN_SCORE_BITS + 1][2], carry = {0}, zero = {0};
    int count[DWN_SCORE_BITS + 1] = {0}, k, p;
    for (k = 0; k < m; k++) {
        dwn_vec x = in[k];
        for (p = 0; count[p] == 2; p++) {
            dwn_vec sum = DWN_XOR3(held[p][0], held[p][1], x);
            x = DWN_MAJ(held[p][0], held[p][1], x);
            held[p][0] = sum;
            count[p] = 1;
        }
        held[p][count[p]++] = x;
    }
    for (p = 0; p < DWN_SCORE_BITS; p++) { /* add the two rows left, rippling the carry */
        dwn_vec a = count[p] > 0 ? held[p][0] : zero, b = count[p] > 1 ? held[p][1] : zero;
        planes[p] = DWN_XOR3(a, b, carry);
        carry = DWN_MAJ(a, b, carry);
    }
}

/* classes[b] = bit b of the index of the highest score, the lowest index on ties. */
static void dwn_argmax(const dwn_vec scores[][DWN_SCORE_BITS], dwn_vec *classes /* [DWN_CLASS_BITS] */)
{
    dwn_vec best[DWN_SCORE_BITS];
    int c, p, b;
    memcpy(best, scores[0], sizeof(best));
    for (b = 0; b < DWN_CLASS_BITS; b++) {
        classes[b] = (dwn_vec){0};
    }
    for (c = 1; c < DWN_NUM_CLASSES; c++) {
        dwn_vec above = {0}, equal = ~(dwn_vec){0}; /* scores[c] > best, compared from the top bit */
        for (p = DWN_SCORE_BITS - 1; p >= 0; p--) {
            above |= equal & scores[c][p] & ~best[p];
            equal &= ~(scores[c][p] ^ best[p]);
        }
        for (p = 0; p < DWN_SCORE_BITS; p++) {
            best[p] = DWN_MUX(above, scores[c][p], best[p]);
        }
        for (b = 0; b < DWN_CLASS_BITS; b++) {
            classes[b] = (c >> b) & 1 ? classes[b] | above : classes[b] & ~above;
        }
    }
}

/* out[s * stride] = the number whose bit p is bit s of planes[p], for samples s < m. */
static void dwn_unslice(const dwn_vec *planes, int bits, int m, int32_t *out, int stride)
{
    int32_t values[64];
    int part, s, p;
    for (part = 0; part * 64 < m; part++) {
        int n = m - 64 * part < 64 ? m - 64 * part : 64;
#if defined(__AVX512F__)
        for (s = 0; s < 64; s += 16) { /* 16 samples at a time: bit p sets 1 << p where its mask says */
            __m512i v = _mm512_setzero_si512();
            for (p = 0; p < bits; p++) {
                v = _mm512_mask_or_epi32(v, (__mmask16)(planes[p][part] >> s), v, _mm512_set1_epi32(1 << p));
            }
            _mm512_storeu_si512(values + s, v);
        }
#else
        for (s = 0; s < 64; s++) {
            values[s] = 0;
        }
        for (p = 0; p < bits; p++) {
            uint64_t word = planes[p][part];
            for (s = 0; s < 64; s++) {
                values[s] |= (int32_t)((word >> s) & 1u) << p;
            }
        }
#endif
        for (s = 0; s < n; s++) {
            out[(long)(64 * part + s) * stride] = values[s];
        }
    }
}

static void dwn_head(const dwn_vec *sig, int m, int32_t *classes, int32_t *scores)
{
    dwn_vec counts[DWN_NUM_CLASSES][DWN_SCORE_BITS], best[DWN_CLASS_BITS > 0 ? DWN_CLASS_BITS : 1];
    int c;
    for (c = 0; c < DWN_NUM_CLASSES; c++) {
        int first = c * DWN_GROUP, end = first + DWN_GROUP < DWN_LAST_WIDTH ? first + DWN_GROUP : DWN_LAST_WIDTH;
        dwn_popcount(sig + DWN_LAST + first, end > first ? end - first : 0, counts[c]);
        if (scores != NULL) {
            dwn_unslice(counts[c], DWN_SCORE_BITS, m, scores + c, DWN_NUM_CLASSES);
        }
    }
    dwn_argmax(counts, best);
    dwn_unslice(best, DWN_CLASS_BITS, m, classes, 1);
}

/* ---- Batches: blocks of 512 samples shared out to threads ----------------------------------------- */
typedef struct {
    const void *x;      /* [count][DWN_NUM_FEATURES]: dwn_input_t codes, or float features if real */
    int real;
    long count;
    int32_t *classes;   /* [count] */
    int32_t *scores;    /* [count][DWN_NUM_CLASSES] or NULL */
    long next;          /* the next block to take (atomic) */
    long done;          /* samples classified (atomic) */
    int nan;            /* a real feature was NaN, which has no code */
} dwn_job;

/* The contract's quantiser on m samples; returns whether a feature was NaN (it has no code; it
 * gets DWN_INPUT_LO here and makes dwn_run fail). Scaling by a power of two is exact in float,
 * floorf rounds down, +-inf saturate, and every clamped value fits an int32_t. */
static int dwn_quantise(const float *restrict x, dwn_input_t *restrict rows, long m)
{
    long s;
    int f, nan = 0;
    for (s = 0; s < m; s++, x += DWN_NUM_FEATURES, rows += DWN_NUM_FEATURES) {
        for (f = 0; f < DWN_NUM_FEATURES; f++) {
            float q = floorf(x[f] * dwn_scale[f]);
            nan |= x[f] != x[f];
            q = q > (float)DWN_INPUT_LO ? q : (float)DWN_INPUT_LO;
            rows[f] = q < (float)DWN_INPUT_HI ? (dwn_input_t)(int32_t)q : DWN_INPUT_HI;
        }
    }
    return nan;
}

/* The block's rows: the caller's own when complete codes, else copied (padded) or quantised. */
static const dwn_input_t *dwn_rows(dwn_job *job, long start, int m, dwn_work *w)
{
    long n = (long)m * DWN_NUM_FEATURES;
    if (job->real) {
        if (dwn_quantise((const float *)job->x + start * DWN_NUM_FEATURES, w->rows, m)) {
            __atomic_store_n(&job->nan, 1, __ATOMIC_RELAXED);
        }
    } else if (m == DWN_BLOCK) {
        return (const dwn_input_t *)job->x + start * DWN_NUM_FEATURES;
    } else {
        memcpy(w->rows, (const dwn_input_t *)job->x + start * DWN_NUM_FEATURES, n * sizeof(dwn_input_t));
    }
    memset(w->rows + n, 0, (DWN_BLOCK * (long)DWN_NUM_FEATURES - n) * sizeof(dwn_input_t));
    return w->rows;
}

/* Workspaces outlive a call (no page faults for fresh buffers on every batch); a worker takes a
 * free one, allocating it on first use. */
#define DWN_MAX_THREADS 256
static dwn_work dwn_pool[DWN_MAX_THREADS];
static int dwn_pool_busy[DWN_MAX_THREADS];

static int dwn_allocate(dwn_work *w)
{
    long rows = sizeof(dwn_input_t) * DWN_BLOCK * DWN_NUM_FEATURES;
    w->sig = (dwn_vec *)aligned_alloc(64, sizeof(dwn_vec) * DWN_NUM_SIGNALS);
    w->masks = (uint64_t *)aligned_alloc(64, 512 * DWN_NUM_BLOCKS);
    w->words = (uint64_t *)aligned_alloc(64, 4096 * DWN_NUM_BLOCKS);
    w->rows = (dwn_input_t *)aligned_alloc(64, (rows + 63) / 64 * 64);
    if (w->sig != NULL && w->masks != NULL && w->words != NULL && w->rows != NULL) {
        return 1;
    }
    free(w->sig), free(w->masks), free(w->words), free(w->rows);
    w->sig = NULL;
    return 0;
}

static dwn_work *dwn_acquire(void)
{
    int k;
    for (k = 0; k < DWN_MAX_THREADS; k++) {
        if (__atomic_exchange_n(&dwn_pool_busy[k], 1, __ATOMIC_ACQUIRE) == 0) {
            if (dwn_pool[k].sig != NULL || dwn_allocate(&dwn_pool[k])) {
                return &dwn_pool[k];
            }
            __atomic_store_n(&dwn_pool_busy[k], 0, __ATOMIC_RELEASE);
            return NULL;
        }
    }
    return NULL;
}

static void *dwn_worker(void *arg)
{
    dwn_job *job = (dwn_job *)arg;
    dwn_work *w = dwn_acquire();
    long block;
    if (w == NULL) {
        return NULL; /* the other workers take the blocks; dwn_run reports if none was left to */
    }
    while ((block = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED)) * DWN_BLOCK < job->count) {
        long start = block * DWN_BLOCK;
        int m = job->count - start < DWN_BLOCK ? (int)(job->count - start) : DWN_BLOCK;
        dwn_encode(dwn_rows(job, start, m, w), w);
        dwn_network(w->sig);
        dwn_head(w->sig, m, job->classes + start, job->scores ? job->scores + start * DWN_NUM_CLASSES : NULL);
        __atomic_fetch_add(&job->done, m, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&dwn_pool_busy[w - dwn_pool], 0, __ATOMIC_RELEASE);
    return NULL;
}

/* Classify count samples on `threads` threads (the caller's among them). x: codes (real = 0) or
 * float features to quantise (real = 1). Returns 0; -1 when no workspace could be allocated; -2
 * when a real feature was NaN (the classes are then meaningless). */
int dwn_run(const void *x, int real, long count, int32_t *classes, int32_t *scores, int threads)
{
    dwn_job job = {x, real, count, classes, scores, 0, 0, 0};
    pthread_t pool[DWN_MAX_THREADS];
    long blocks = (count + DWN_BLOCK - 1) / DWN_BLOCK;
    int k, started = 0;
    threads = threads < 1 ? 1 : threads > DWN_MAX_THREADS ? DWN_MAX_THREADS : threads;
    threads = blocks < threads ? (int)(blocks > 0 ? blocks : 1) : threads;
    for (k = 1; k < threads; k++) {
        started += pthread_create(&pool[started], NULL, dwn_worker, &job) == 0;
    }
    dwn_worker(&job);
    for (k = 0; k < started; k++) {
        pthread_join(pool[k], NULL);
    }
    return job.nan ? -2 : job.done == count ? 0 : -1;
}

/* The cache key this library was built under (compiled.py checks it after loading). */
const char *dwn_key(void)
{
    return DWN_KEY;
}
