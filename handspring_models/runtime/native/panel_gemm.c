/* fp32 linear layers, y = x W^T + b, for the row counts one request brings (a text's tokens, an
 * image's patches) up to full batches, with W stored in panels of 16 output columns.
 *
 * A single short text multiplies a few rows by every weight of the model once, so its speed is how
 * fast the weights stream from memory. oneDNN's AVX2 kernels read them at about half the machine's
 * bandwidth there; this kernel reads each panel front to back, once per chunk of rows, and keeps a
 * 6 x 16 tile of the output in registers (12 of the 16 ymm registers) while it does.
 *
 * Layout of a packed weight W [N, K] (N a multiple of 16): panels [N/16][K][16], panel p holding
 * output columns 16p..16p+15, each k's 16 weights contiguous. Every output is a plain fp32 sum
 * over k in order, with FMA; bias first.
 *
 * Two builds of the same loop: AVX2 (a panel row is two ymm registers, 6-row tiles) and AVX-512 (one
 * zmm register, 12-row tiles, twice the FMA width on CPUs that run 512-bit FMAs at full rate). Both
 * sum in the same order, so they give the same bits. The file is built with -mavx2 -mfma; the
 * AVX-512 functions carry their own target attribute, and the Python side picks them only where
 * PyTorch reports AVX-512. The activation and residual are applied by epilogue.c, the threads split
 * the work as schedule.c says. */

#include <immintrin.h>
#include <stdint.h>

#include "epilogue.h"
#include "schedule.h"

#define TILE_ROWS 6
/* Rows per chunk: each panel is read from memory once per chunk, so a chunk holds 512 KB of x
 * (rows x K floats, kept in L2/L3 while the panels pass) but never fewer than 96 rows. */
#define CHUNK_BYTES 524288
#define MIN_CHUNK_ROWS 96
/* How far ahead in the panel to prefetch (1 KB): a few rows' tiles are bound by the weights'
 * stream from memory, which the hardware prefetcher alone leaves 10-30% slower here. */
#define PREFETCH_FLOATS 256

/* One tile: `rows` (1..6, a constant after inlining) rows of x times one panel, bias first. */
static inline __attribute__((always_inline)) void tile(int rows, const float *x, int64_t K,
                                                       const float *panel, const float *bias,
                                                       float *y, int64_t N) {
    __m256 lo[TILE_ROWS], hi[TILE_ROWS];
    const __m256 b_lo = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    const __m256 b_hi = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int r = 0; r < rows; ++r) {
        lo[r] = b_lo;
        hi[r] = b_hi;
    }
    for (int64_t k = 0; k < K; ++k) {
        _mm_prefetch((const char *)(panel + k * PANEL + PREFETCH_FLOATS), _MM_HINT_T0);
        const __m256 w_lo = _mm256_loadu_ps(panel + k * PANEL);
        const __m256 w_hi = _mm256_loadu_ps(panel + k * PANEL + 8);
#pragma GCC unroll 6
        for (int r = 0; r < rows; ++r) {
            const __m256 a = _mm256_broadcast_ss(x + r * K + k);
            lo[r] = _mm256_fmadd_ps(a, w_lo, lo[r]);
            hi[r] = _mm256_fmadd_ps(a, w_hi, hi[r]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < rows; ++r) {
        _mm256_storeu_ps(y + r * N, lo[r]);
        _mm256_storeu_ps(y + r * N + 8, hi[r]);
    }
}

/* Rows [m0, m1) of x times panel p (AVX2: one panel per tile; `np` is always 1 here). */
static void rows_times_panels_avx2(const float *x, const float *w, const float *b, float *y,
                                   int64_t m0, int64_t m1, int64_t p, int np, int64_t N, int64_t K,
                                   int64_t k0, int64_t k1) {
    (void)np, (void)k0, (void)k1;  /* never sliced */
    const float *panel = w + p * K * PANEL;
    const float *bias = b ? b + p * PANEL : 0;
    int64_t m = m0;
    for (; m + TILE_ROWS <= m1; m += TILE_ROWS)
        tile(6, x + m * K, K, panel, bias, y + m * N + p * PANEL, N);
    const float *xm = x + m * K;
    float *ym = y + m * N + p * PANEL;
    switch (m1 - m) {  /* a constant row count per case, so each tile keeps its sums in registers */
        case 5: tile(5, xm, K, panel, bias, ym, N); break;
        case 4: tile(4, xm, K, panel, bias, ym, N); break;
        case 3: tile(3, xm, K, panel, bias, ym, N); break;
        case 2: tile(2, xm, K, panel, bias, ym, N); break;
        case 1: tile(1, xm, K, panel, bias, ym, N); break;
        default: break;
    }
}

/* ---- AVX-512: a panel row is one zmm register; a tile is up to 12 rows x 2 panels ----
 * 24 accumulators of the 32 zmm registers, and each x value feeds two FMAs. */

#define TILE_ROWS_512 12
#define SLICE_K 512

static inline __attribute__((always_inline)) AVX512F void tile512(int rows, int np, const float *x, int64_t K,
                                                                 int64_t k0, int64_t k1, const float *panel,
                                                                 const float *bias, float *y, int64_t N) {
    __m512 acc[2][TILE_ROWS_512];
#pragma GCC unroll 2
    for (int j = 0; j < np; ++j) {
        /* the first slice of k starts from the bias, the others from the sums stored so far */
        const __m512 b = bias ? _mm512_loadu_ps(bias + j * PANEL) : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) acc[j][r] = k0 ? _mm512_loadu_ps(y + r * N + j * PANEL) : b;
    }
    const float *second = panel + K * PANEL;  /* the next panel, when np == 2 */
    for (int64_t k = k0; k < k1; ++k) {
        __m512 w[2];
        _mm_prefetch((const char *)(panel + k * PANEL + PREFETCH_FLOATS), _MM_HINT_T0);
        w[0] = _mm512_loadu_ps(panel + k * PANEL);
        if (np == 2) {
            _mm_prefetch((const char *)(second + k * PANEL + PREFETCH_FLOATS), _MM_HINT_T0);
            w[1] = _mm512_loadu_ps(second + k * PANEL);
        }
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) {
            const __m512 a = _mm512_set1_ps(x[r * K + k]);
#pragma GCC unroll 2
            for (int j = 0; j < np; ++j) acc[j][r] = _mm512_fmadd_ps(a, w[j], acc[j][r]);
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < np; ++j) {
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) _mm512_storeu_ps(y + r * N + j * PANEL, acc[j][r]);
    }
}

/* Rows [m0, m1) of x times panels p..p+np-1 (np 1 or 2), each row count a constant for tile512. */
#define TILE512_CASE(r)                                                  \
    case r:                                                              \
        if (np == 2) tile512(r, 2, xm, K, k0, k1, panel, bias, ym, N);   \
        else tile512(r, 1, xm, K, k0, k1, panel, bias, ym, N);           \
        break;

static AVX512F void rows_times_panels_avx512(const float *x, const float *w, const float *b, float *y,
                                             int64_t m0, int64_t m1, int64_t p, int np, int64_t N, int64_t K,
                                             int64_t k0, int64_t k1) {
    const float *panel = w + p * K * PANEL;
    const float *bias = b ? b + p * PANEL : 0;
    for (int64_t m = m0; m < m1; m += TILE_ROWS_512) {
        const float *xm = x + m * K;
        float *ym = y + m * N + p * PANEL;
        switch (m1 - m < TILE_ROWS_512 ? m1 - m : TILE_ROWS_512) {
            TILE512_CASE(12) TILE512_CASE(11) TILE512_CASE(10) TILE512_CASE(9) TILE512_CASE(8)
            TILE512_CASE(7) TILE512_CASE(6) TILE512_CASE(5) TILE512_CASE(4) TILE512_CASE(3)
            TILE512_CASE(2) TILE512_CASE(1)
            default: break;
        }
    }
}

typedef void (*rows_times_panels_fn)(const float *, const float *, const float *, float *,
                                     int64_t, int64_t, int64_t, int, int64_t, int64_t, int64_t, int64_t);
typedef void (*finish_block_fn)(float *, const float *, int, int64_t, int64_t, int64_t, int64_t, int64_t);

typedef struct {
    rows_times_panels_fn rows_times;
    finish_block_fn finish;  /* NULL: no activation and no residual */
    const float *x, *w, *b, *residual;
    float *y;
    int64_t N, K, slice_k;  /* slice_k 0: the whole of k at once */
    int step, tile_rows, activation;
} fp32_work;

/* A chunk's rows times a thread's panels, a step of panels (one tile's) at a time. With more rows
 * than one tile, k goes in slices, so that a slice of the step's panels (SLICE_K x 2 x 64 bytes)
 * stays in cache across the chunk's tiles; each sum stops and resumes at a slice's edge, which
 * changes no bit of it. The epilogue follows each step, while its block is in cache. */
static void block(const void *ctx, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    const fp32_work *k = ctx;
    const int64_t slice = k->slice_k && m1 - m0 > k->tile_rows ? k->slice_k : k->K;
    for (int64_t p = p0; p < p1; p += k->step) {
        const int np = p + k->step <= p1 ? k->step : (int)(p1 - p);
        for (int64_t k0 = 0; k0 < k->K; k0 += slice)
            k->rows_times(k->x, k->w, k->b, k->y, m0, m1, p, np, k->N, k->K, k0, k0 + slice < k->K ? k0 + slice : k->K);
        if (k->finish) k->finish(k->y, k->residual, k->activation, m0, m1, p * PANEL, (p + np) * PANEL, k->N);
    }
}

/* y [M, N] = act(x [M, K] @ W^T + b) + residual; x, y and residual ([M, N]) row-major and
 * contiguous, w packed as above; b and residual may be NULL. */
static void run(rows_times_panels_fn rows_times, finish_block_fn finish_block, int tile_rows, int step,
                int64_t slice_k, const float *x, const float *w, const float *b, float *y, int64_t M, int64_t N,
                int64_t K, int threads, int activation, const float *residual) {
    const fp32_work ctx = {rows_times, activation != ACT_NONE || residual ? finish_block : 0,
                           x, w, b, residual, y, N, K, slice_k, step, tile_rows, activation};
    const linear_work work = {0, block, &ctx};
    run_blocks(&work, M, N / PANEL, step, chunk_rows(CHUNK_BYTES, K * (int64_t)sizeof(float), tile_rows, MIN_CHUNK_ROWS),
               threads);
}

void panel_linear_avx2(const float *x, const float *w, const float *b, float *y,
                       int64_t M, int64_t N, int64_t K, int threads, int activation, const float *residual) {
    run(rows_times_panels_avx2, finish_block_avx2, TILE_ROWS, 1, 0, x, w, b, y, M, N, K, threads, activation, residual);
}

void panel_linear_avx512(const float *x, const float *w, const float *b, float *y,
                         int64_t M, int64_t N, int64_t K, int threads, int activation, const float *residual) {
    run(rows_times_panels_avx512, finish_block_avx512, TILE_ROWS_512, 2, SLICE_K, x, w, b, y, M, N, K, threads, activation,
        residual);
}
