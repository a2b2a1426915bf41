/* bf16 linear layers with AVX512-BF16: y = bf16(act(x W^T + b) + residual), with x, W, b, residual
 * and y in bfloat16 and every sum in fp32.
 *
 * vdpbf16ps multiplies pairs of bf16 values and adds both products to an fp32 lane, so W is packed
 * in pairs of k: panels [N/16][K/2][16][2] (K even), one 64-byte load holding two k of a panel's 16
 * columns. Each pair of x values is broadcast into a register once, for both panels of the tile:
 * the instruction's own broadcast from memory would load it for each, and loads, not products,
 * would bound the tile.
 *
 * The tile keeps its sums in fp32 from the bias to the end of k, applies the activation and adds
 * the residual (widened to fp32) in registers, and rounds to bf16 once, to nearest even, as it
 * stores. PyTorch's bf16 operators round after the product, the activation's every step and the
 * add; this rounds once, so it is no less exact than they are, but not their bits.
 *
 * Tiles of up to 12 rows x 2 panels (24 fp32 accumulators), as the AVX-512 build of the fp32
 * kernel; the split between threads is schedule.c's. */

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "epilogue.h"
#include "schedule.h"

#define TILE_ROWS 12
#define CHUNK_BYTES 524288
#define MIN_CHUNK_ROWS 96
#define PREFETCH_BYTES 1024
#define BF16 __attribute__((target("avx512f,avx512bf16")))

/* acc += the two products of a's pair (the same in every lane) and each lane's pair of w. In asm
 * so that the sum is updated in its own register and the broadcast stays in one. */
static inline __attribute__((always_inline)) BF16 __m512 dpbf16(__m512 acc, __m512 a, __m512 w) {
    __asm__("vdpbf16ps %[w], %[a], %[acc]" : [acc] "+v"(acc) : [a] "v"(a), [w] "v"(w));
    return acc;
}

/* 16 bf16 -> 16 fp32 (exact: a bf16 is the top half of an fp32). */
static inline __attribute__((always_inline)) BF16 __m512 widen(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

/* One tile: `rows` (1..12) rows of x times `np` (1 or 2) panels, finished and stored in bf16. */
static inline __attribute__((always_inline)) BF16 void tile(int rows, int np, const uint16_t *x, int64_t K,
                                                            const uint16_t *panel, const uint16_t *bias,
                                                            const uint16_t *residual, int activation,
                                                            uint16_t *y, int64_t N) {
    __m512 acc[2][TILE_ROWS];
#pragma GCC unroll 2
    for (int j = 0; j < np; ++j) {
        const __m512 b = bias ? widen(bias + j * PANEL) : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) acc[j][r] = b;
    }
    const uint16_t *second = panel + K * PANEL;  /* the next panel, when np == 2 */
    for (int64_t k = 0; k < K; k += 2) {
        __m512 w[2];
        _mm_prefetch((const char *)(panel + k * PANEL) + PREFETCH_BYTES, _MM_HINT_T0);
        w[0] = _mm512_loadu_ps(panel + k * PANEL);
        if (np == 2) {
            _mm_prefetch((const char *)(second + k * PANEL) + PREFETCH_BYTES, _MM_HINT_T0);
            w[1] = _mm512_loadu_ps(second + k * PANEL);
        }
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) {
            uint32_t pair;
            memcpy(&pair, x + r * K + k, sizeof pair);
            const __m512 a = _mm512_castsi512_ps(_mm512_set1_epi32((int)pair));
#pragma GCC unroll 2
            for (int j = 0; j < np; ++j) acc[j][r] = dpbf16(acc[j][r], a, w[j]);
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < np; ++j) {
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) {
            __m512 v = acc[j][r];
            if (activation == ACT_QUICK_GELU) v = quick_gelu16(v);
            if (residual) v = _mm512_add_ps(widen(residual + r * N + j * PANEL), v);
            _mm256_storeu_si256((__m256i *)(y + r * N + j * PANEL), (__m256i)_mm512_cvtneps_pbh(v));
        }
    }
}

typedef struct {
    const uint16_t *x, *w, *b, *residual;
    uint16_t *y;
    int64_t N, K;
    int activation;
} bf16_work;

#define TILE_CASE(r)                                                                  \
    case r:                                                                           \
        if (np == 2) tile(r, 2, xm, k->K, panel, bias, res, k->activation, ym, k->N); \
        else tile(r, 1, xm, k->K, panel, bias, res, k->activation, ym, k->N);         \
        break;

/* Rows [m0, m1) times panels [p0, p1), two at a time. */
static BF16 void block(const void *ctx, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    const bf16_work *k = ctx;
    for (int64_t p = p0; p < p1; p += 2) {
        const int np = p + 2 <= p1 ? 2 : 1;
        const uint16_t *panel = k->w + p * k->K * PANEL, *bias = k->b ? k->b + p * PANEL : 0;
        for (int64_t m = m0; m < m1; m += TILE_ROWS) {
            const uint16_t *xm = k->x + m * k->K, *res = k->residual ? k->residual + m * k->N + p * PANEL : 0;
            uint16_t *ym = k->y + m * k->N + p * PANEL;
            switch (m1 - m < TILE_ROWS ? m1 - m : TILE_ROWS) {
                TILE_CASE(12) TILE_CASE(11) TILE_CASE(10) TILE_CASE(9) TILE_CASE(8) TILE_CASE(7)
                TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3) TILE_CASE(2) TILE_CASE(1)
                default: break;
            }
        }
    }
}

/* y [M, N] = bf16(act(x [M, K] @ W^T + b) + residual); x, y and residual ([M, N]) row-major and
 * contiguous, K even, w packed as above; b and residual may be NULL. */
void bf16_linear_avx512(const uint16_t *x, const uint16_t *w, const uint16_t *b, uint16_t *y, int64_t M, int64_t N,
                        int64_t K, int threads, int activation, const uint16_t *residual) {
    const bf16_work ctx = {x, w, b, residual, y, N, K, activation};
    const linear_work work = {0, block, &ctx};
    run_blocks(&work, M, N / PANEL, 2, chunk_rows(CHUNK_BYTES, K * 2, TILE_ROWS, MIN_CHUNK_ROWS), threads);
}
