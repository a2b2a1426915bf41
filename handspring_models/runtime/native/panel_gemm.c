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
 * Built with -mavx2 -mfma; the Python side calls it only where PyTorch reports AVX2 or better.
 * Threads come from the OpenMP runtime PyTorch has already loaded (same soname), so this kernel
 * and PyTorch's own operators share one thread team rather than competing for the cores. */

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>

#define PANEL 16
#define TILE_ROWS 6
/* Rows per chunk: each panel is read from memory once per chunk, so a chunk holds 512 KB of x
 * (rows x K floats, kept in L2/L3 while the panels pass) but never fewer than 96 rows. */
#define CHUNK_FLOATS 131072
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

/* Rows [m0, m1) of x times panel p. */
static void rows_times_panel(const float *x, const float *w, const float *b, float *y,
                             int64_t m0, int64_t m1, int64_t p, int64_t N, int64_t K) {
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

/* y [M, N] = x [M, K] @ W^T + b; x and y row-major and contiguous, w packed as above, b may be NULL.
 * Each thread owns a contiguous range of panels; for each chunk of rows it runs its panels. */
void panel_linear(const float *x, const float *w, const float *b, float *y,
                  int64_t M, int64_t N, int64_t K, int threads) {
    const int64_t panels = N / PANEL;
    int64_t chunk = (CHUNK_FLOATS / K) / TILE_ROWS * TILE_ROWS;
    if (chunk < MIN_CHUNK_ROWS) chunk = MIN_CHUNK_ROWS;
    if (threads > panels) threads = (int)panels;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t p0 = panels * t / team, p1 = panels * (t + 1) / team;
        for (int64_t m0 = 0; m0 < M; m0 += chunk) {
            const int64_t m1 = m0 + chunk < M ? m0 + chunk : M;
            for (int64_t p = p0; p < p1; ++p) rows_times_panel(x, w, b, y, m0, m1, p, N, K);
        }
    }
}
