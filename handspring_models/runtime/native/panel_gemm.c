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
 * PyTorch reports AVX-512.
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

/* ---- What is done to a block of y once its sums are complete, while it is still in cache ----
 * Activation first, then the residual: y = act(x W^T + b) + residual. The residual add is the
 * same fp32 add as PyTorch's, so it gives the same bits; QuickGELU, z * sigmoid(1.702 z), uses
 * the exp below, within about 2 ulp of PyTorch's (a correctly rounded division, no reciprocal
 * estimate). */

enum { ACT_NONE = 0, ACT_QUICK_GELU = 1 };

/* exp(x): x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial (Cephes'
 * coefficients), 2^n built in the exponent bits. x is clamped so 2^n stays a normal float. One set
 * of constants for both widths (exp8, exp16), so that both builds give the same bits. */
#define EXP_LO -87.3f
#define EXP_HI 88.3f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f /* ln2 in two parts */
#define LN2_LO -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f
#define QUICK_GELU_SCALE 1.702f

static inline __attribute__((always_inline)) __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __attribute__((always_inline)) __m256 quick_gelu8(__m256 z) {
    const __m256 t = _mm256_mul_ps(z, _mm256_set1_ps(QUICK_GELU_SCALE));
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), t));
    return _mm256_mul_ps(z, _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
}

/* Rows [m0, m1), columns [c0, c1) of y (c0, c1 multiples of 16). */
static void finish_block_avx2(float *y, const float *residual, int activation, int64_t m0, int64_t m1,
                              int64_t c0, int64_t c1, int64_t N) {
    for (int64_t m = m0; m < m1; ++m) {
        float *row = y + m * N;
        const float *res = residual ? residual + m * N : 0;
        for (int64_t c = c0; c < c1; c += 8) {
            __m256 v = _mm256_loadu_ps(row + c);
            if (activation == ACT_QUICK_GELU) v = quick_gelu8(v);
            if (res) v = _mm256_add_ps(_mm256_loadu_ps(res + c), v);
            _mm256_storeu_ps(row + c, v);
        }
    }
}

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
                                   int64_t m0, int64_t m1, int64_t p, int np, int64_t N, int64_t K) {
    (void)np;
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
 * 24 accumulators of the 32 zmm registers, and each x value broadcast once for two FMAs. */

#define TILE_ROWS_512 12
#define SLICE_K 512
#define AVX512 __attribute__((target("avx512f")))

/* exp, QuickGELU and the finish of a block as above, on 16 lanes. */
static inline __attribute__((always_inline)) AVX512 __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

static inline __attribute__((always_inline)) AVX512 __m512 quick_gelu16(__m512 z) {
    const __m512 t = _mm512_mul_ps(z, _mm512_set1_ps(QUICK_GELU_SCALE));
    const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), t));
    return _mm512_mul_ps(z, _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
}

static AVX512 void finish_block_avx512(float *y, const float *residual, int activation, int64_t m0, int64_t m1,
                                       int64_t c0, int64_t c1, int64_t N) {
    for (int64_t m = m0; m < m1; ++m) {
        float *row = y + m * N;
        const float *res = residual ? residual + m * N : 0;
        for (int64_t c = c0; c < c1; c += PANEL) {
            __m512 v = _mm512_loadu_ps(row + c);
            if (activation == ACT_QUICK_GELU) v = quick_gelu16(v);
            if (res) v = _mm512_add_ps(_mm512_loadu_ps(res + c), v);
            _mm512_storeu_ps(row + c, v);
        }
    }
}

static inline __attribute__((always_inline)) AVX512 void tile512(int rows, int np, const float *x, int64_t K,
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

static AVX512 void rows_times_panels_avx512(const float *x, const float *w, const float *b, float *y,
                                            int64_t m0, int64_t m1, int64_t p, int np, int64_t N, int64_t K) {
    const float *panel = w + p * K * PANEL;
    const float *bias = b ? b + p * PANEL : 0;
    /* Slices of k, so that a slice of the panels (SLICE_K x 2 x 64 bytes) stays in cache across the
     * chunk's tiles: stopping and resuming each sum at a slice's edge changes no bit of it. 512
     * measured 1.11x faster than 256 on 32 images (Zen 5), and level with 1024. */
    const int64_t slice = m1 - m0 > TILE_ROWS_512 ? SLICE_K : K;
    for (int64_t k0 = 0; k0 < K; k0 += slice) {
        const int64_t k1 = k0 + slice < K ? k0 + slice : K;
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
}

typedef void (*rows_times_panels_fn)(const float *, const float *, const float *, float *,
                                     int64_t, int64_t, int64_t, int, int64_t, int64_t);
typedef void (*finish_block_fn)(float *, const float *, int, int64_t, int64_t, int64_t, int64_t, int64_t);

/* y [M, N] = act(x [M, K] @ W^T + b) + residual; x, y and residual ([M, N]) row-major and
 * contiguous, w packed as above; b and residual may be NULL. Each thread owns a contiguous range of panels (in steps of `step`, the panels one tile covers);
 * for each chunk of rows it runs its panels. */
static void run(rows_times_panels_fn rows_times, finish_block_fn finish_block, int tile_rows, int step,
                const float *x, const float *w,
                const float *b, float *y, int64_t M, int64_t N, int64_t K, int threads, int activation,
                const float *residual) {
    const int finish = activation != ACT_NONE || residual;
    const int64_t panels = N / PANEL, steps = (panels + step - 1) / step;
    int64_t chunk = (CHUNK_FLOATS / K) / tile_rows * tile_rows;
    if (chunk < MIN_CHUNK_ROWS) chunk = MIN_CHUNK_ROWS;
    if (threads > steps) threads = (int)steps;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t p0 = step * (steps * t / team);
        int64_t p1 = step * (steps * (t + 1) / team);
        if (p1 > panels) p1 = panels;
        for (int64_t m0 = 0; m0 < M; m0 += chunk) {
            const int64_t m1 = m0 + chunk < M ? m0 + chunk : M;
            for (int64_t p = p0; p < p1; p += step) {
                const int np = p + step <= p1 ? step : (int)(p1 - p);
                rows_times(x, w, b, y, m0, m1, p, np, N, K);
                if (finish) finish_block(y, residual, activation, m0, m1, p * PANEL, (p + np) * PANEL, N);
            }
        }
    }
}

void panel_linear_avx2(const float *x, const float *w, const float *b, float *y,
                       int64_t M, int64_t N, int64_t K, int threads, int activation, const float *residual) {
    run(rows_times_panels_avx2, finish_block_avx2, TILE_ROWS, 1, x, w, b, y, M, N, K, threads, activation, residual);
}

void panel_linear_avx512(const float *x, const float *w, const float *b, float *y,
                         int64_t M, int64_t N, int64_t K, int threads, int activation, const float *residual) {
    run(rows_times_panels_avx512, finish_block_avx512, TILE_ROWS_512, 2, x, w, b, y, M, N, K, threads, activation, residual);
}
