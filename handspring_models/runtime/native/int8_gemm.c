/* int8 linear layers with AVX512-VNNI: y = act(dequant(q(x) Wq^T) + b) + residual.
 *
 * Weights are quantized once, at load, per output channel and symmetric (w ~ s_n * q, q in
 * [-127, 127]). Activations are quantized here, per row (token) and asymmetric (x ~ s_m * (u - z_m),
 * u in [0, 255]), so every row uses all 256 levels between its own minimum and maximum. vpdpbusd
 * multiplies unsigned by signed bytes, four k at a time, into int32 sums that are exact; then
 *   y[m, n] = float(sum_k u[m, k] q[n, k] - z_m * sum_k q[n, k]) * (s_m * s_n) + b[n]
 * in that order of fp32 operations, unfused (a reference in PyTorch reproduces the bits).
 *
 * Layout of a packed weight (N a multiple of 16, K rounded up to K4, a multiple of 4, with zero
 * weights): panels [N/16][K4/4][16][4] bytes, so one 64-byte load is 4 k of a panel's 16 columns,
 * the operand vpdpbusd takes. The weights stream from memory at a quarter of fp32's bytes, which
 * is what a single request's few rows are bound by.
 *
 * Tiles of up to 12 rows x 2 panels (24 int32 accumulators), as the AVX-512 build of the fp32
 * kernel. The activation and residual are epilogue.c's, the split between threads schedule.c's. */

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "epilogue.h"
#include "schedule.h"

#define TILE_ROWS 12
/* Rows per chunk: a chunk's quantized rows (rows x K4 bytes) stay in cache while the panels pass. */
#define CHUNK_BYTES 524288
#define MIN_CHUNK_ROWS 96
#define PREFETCH_BYTES 1024
#define VNNI __attribute__((target("avx512f,avx512vnni")))

/* acc += a . w, four u8 x s8 products per int32 lane. In asm so that the sum is updated in its
 * own register: with the intrinsic, GCC copied every accumulator once per step (a third more
 * instructions in the tile's loop). */
static inline __attribute__((always_inline)) VNNI __m512i dpbusd(__m512i acc, __m512i a, __m512i w) {
    __asm__("vpdpbusd %[w], %[a], %[acc]" : [acc] "+v"(acc) : [a] "v"(a), [w] "v"(w));
    return acc;
}

/* Row x[0..K) -> u[0..K4) (zero past K), its scale and zero point. A row of zeros gets scale 1. */
static VNNI void quantize_row(const float *x, int64_t K, int64_t K4, uint8_t *u, float *scale, int32_t *zero) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();  /* the range always holds 0 */
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        const __m512 v = _mm512_loadu_ps(x + k);
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    const __mmask16 tail = (__mmask16)((1u << (K - k)) - 1u);
    if (tail) {
        const __m512 v = _mm512_maskz_loadu_ps(tail, x + k);
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    const float l = _mm512_reduce_min_ps(lo), h = _mm512_reduce_max_ps(hi);
    float s = (h - l) / 255.0f;
    if (!(s > 0.0f)) s = 1.0f;
    const float inv = 1.0f / s;
    const int32_t z = (int32_t)rintf(-l / s);
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i vz = _mm512_set1_epi32(z), vmin = _mm512_setzero_si512(), vmax = _mm512_set1_epi32(255);
    for (k = 0; k + 16 <= K; k += 16) {
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv)), vz);
        q = _mm512_min_epi32(_mm512_max_epi32(q, vmin), vmax);
        _mm_storeu_si128((__m128i *)(u + k), _mm512_cvtepi32_epi8(q));
    }
    if (tail) {
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + k), vinv)), vz);
        q = _mm512_min_epi32(_mm512_max_epi32(q, vmin), vmax);
        _mm512_mask_cvtepi32_storeu_epi8(u + k, tail, q);
    }
    memset(u + K, 0, (size_t)(K4 - K));
    *scale = s;
    *zero = z;
}

/* One tile: `rows` (1..12) quantized rows times `np` (1 or 2) panels, dequantized into y. */
static inline __attribute__((always_inline)) VNNI void tile(int rows, int np, const uint8_t *u, int64_t K4,
                                                            const int8_t *panel, const float *x_scale,
                                                            const int32_t *x_zero, const float *w_scale,
                                                            const int32_t *w_sum, const float *bias,
                                                            float *y, int64_t N) {
    __m512i acc[2][TILE_ROWS];
#pragma GCC unroll 2
    for (int j = 0; j < np; ++j) {
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) acc[j][r] = _mm512_setzero_si512();
    }
    const int8_t *second = panel + K4 * PANEL;  /* the next panel, when np == 2 */
    for (int64_t g = 0; g < K4; g += 4) {
        __m512i w[2];
        _mm_prefetch((const char *)(panel + g * PANEL + PREFETCH_BYTES), _MM_HINT_T0);
        w[0] = _mm512_loadu_si512(panel + g * PANEL);
        if (np == 2) {
            _mm_prefetch((const char *)(second + g * PANEL + PREFETCH_BYTES), _MM_HINT_T0);
            w[1] = _mm512_loadu_si512(second + g * PANEL);
        }
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) {
            int32_t four;
            memcpy(&four, u + r * K4 + g, sizeof four);
            const __m512i a = _mm512_set1_epi32(four);
#pragma GCC unroll 2
            for (int j = 0; j < np; ++j) acc[j][r] = dpbusd(acc[j][r], a, w[j]);
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < np; ++j) {
        const __m512 s_n = _mm512_loadu_ps(w_scale + j * PANEL);
        const __m512i sum_n = _mm512_loadu_si512(w_sum + j * PANEL);
        const __m512 b = bias ? _mm512_loadu_ps(bias + j * PANEL) : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) {
            const __m512i exact = _mm512_sub_epi32(acc[j][r], _mm512_mullo_epi32(_mm512_set1_epi32(x_zero[r]), sum_n));
            /* _round_ forms: the compiler does not fuse these two into one FMA, so y has the bits
             * of the separate multiply and add */
            __m512 v = _mm512_mul_round_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(_mm512_set1_ps(x_scale[r]), s_n),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            if (bias) v = _mm512_add_round_ps(v, b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm512_storeu_ps(y + r * N + j * PANEL, v);
        }
    }
}

#define TILE_CASE(r)                                                                            \
    case r:                                                                                     \
        if (np == 2) tile(r, 2, um, K4, panel, x_scale + m, x_zero + m, ws, wsum, bias, ym, N); \
        else tile(r, 1, um, K4, panel, x_scale + m, x_zero + m, ws, wsum, bias, ym, N);         \
        break;

/* Rows [m0, m1) times panels p..p+np-1. */
static VNNI void rows_times_panels(const uint8_t *u, const float *x_scale, const int32_t *x_zero, const int8_t *w,
                                   const float *w_scale, const int32_t *w_sum, const float *b, float *y,
                                   int64_t m0, int64_t m1, int64_t p, int np, int64_t N, int64_t K4) {
    const int8_t *panel = w + p * K4 * PANEL;
    const float *ws = w_scale + p * PANEL, *bias = b ? b + p * PANEL : 0;
    const int32_t *wsum = w_sum + p * PANEL;
    for (int64_t m = m0; m < m1; m += TILE_ROWS) {
        const uint8_t *um = u + m * K4;
        float *ym = y + m * N + p * PANEL;
        switch (m1 - m < TILE_ROWS ? m1 - m : TILE_ROWS) {
            TILE_CASE(12) TILE_CASE(11) TILE_CASE(10) TILE_CASE(9) TILE_CASE(8) TILE_CASE(7)
            TILE_CASE(6) TILE_CASE(5) TILE_CASE(4) TILE_CASE(3) TILE_CASE(2) TILE_CASE(1)
            default: break;
        }
    }
}

typedef struct {
    const float *x, *w_scale, *b, *residual;
    const int8_t *w;
    const int32_t *w_sum;
    uint8_t *u;
    float *x_scale, *y;
    int32_t *x_zero;
    int64_t N, K, K4;
    int activation;
} int8_work;

static void row(const void *ctx, int64_t m) {
    const int8_work *k = ctx;
    quantize_row(k->x + m * k->K, k->K, k->K4, k->u + m * k->K4, k->x_scale + m, k->x_zero + m);
}

static void block(const void *ctx, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    const int8_work *k = ctx;
    for (int64_t p = p0; p < p1; p += 2) {
        const int np = p + 2 <= p1 ? 2 : 1;
        rows_times_panels(k->u, k->x_scale, k->x_zero, k->w, k->w_scale, k->w_sum, k->b, k->y, m0, m1, p, np, k->N, k->K4);
        if (k->activation != ACT_NONE || k->residual)
            finish_block_avx512(k->y, k->residual, k->activation, m0, m1, p * PANEL, (p + np) * PANEL, k->N);
    }
}

/* y [M, N] from x [M, K] (fp32, row-major, contiguous), w packed as above with its per-channel
 * w_scale [N] and w_sum [N] (sum of each channel's quantized weights); b and residual may be NULL.
 * Returns 0, or -1 where the scratch rows could not be allocated (y is then not written). */
int int8_linear_avx512(const float *x, const int8_t *w, const float *w_scale, const int32_t *w_sum,
                       const float *b, float *y, int64_t M, int64_t N, int64_t K, int threads, int activation,
                       const float *residual) {
    const int64_t K4 = (K + 3) & ~(int64_t)3;
    uint8_t *u = malloc((size_t)(M * K4));
    float *x_scale = malloc((size_t)M * sizeof(float));
    int32_t *x_zero = malloc((size_t)M * sizeof(int32_t));
    if (!u || !x_scale || !x_zero) {
        free(u), free(x_scale), free(x_zero);
        return -1;
    }
    const int8_work ctx = {x, w_scale, b, residual, w, w_sum, u, x_scale, y, x_zero, N, K, K4, activation};
    const linear_work work = {row, block, &ctx};
    run_blocks(&work, M, N / PANEL, 2, chunk_rows(CHUNK_BYTES, K4, TILE_ROWS, MIN_CHUNK_ROWS), threads);
    free(u), free(x_scale), free(x_zero);
    return 0;
}

/* Quantizes w [N, K] (fp32, row-major) per output channel into the packed layout above: scale [N]
 * = max|w[n]| / 127 (1 for a channel of zeros), q = w / scale rounded to nearest even, sums [N].
 * The same arithmetic as int8_gemm.quantize_weight in PyTorch, so the same bits, in one pass over
 * the weights per channel rather than one per PyTorch operator. */
void int8_quantize_weight(const float *w, int64_t N, int64_t K, int8_t *panels, float *scale, int32_t *sums,
                          int threads) {
    const int64_t K4 = (K + 3) & ~(int64_t)3;
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
    for (int64_t n = 0; n < N; ++n) {
        const float *row = w + n * K;
        float amax = 0.0f;
        for (int64_t k = 0; k < K; ++k) amax = fmaxf(amax, fabsf(row[k]));
        float s = amax / 127.0f;
        if (!(s > 0.0f)) s = 1.0f;
        int8_t *panel = panels + (n / PANEL) * K4 * PANEL + (n % PANEL) * 4;
        int32_t sum = 0;
        for (int64_t k = 0; k < K4; ++k) {
            float q = k < K ? rintf(row[k] / s) : 0.0f;
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            panel[(k / 4) * PANEL * 4 + k % 4] = (int8_t)q;
            sum += (int32_t)q;
        }
        scale[n] = s;
        sums[n] = sum;
    }
}
