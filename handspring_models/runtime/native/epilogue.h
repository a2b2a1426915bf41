/* What is done to a block of a linear layer's output once its sums are complete, while the block
 * is still in cache: y = act(y) + residual. The fp32 (panel_gemm.c) and int8 (int8_gemm.c) kernels
 * call finish_block_* on their fp32 blocks; the bf16 kernel (bf16_gemm.c) applies quick_gelu16 to
 * its sums in registers, before it rounds them. */

#ifndef HANDSPRING_EPILOGUE_H
#define HANDSPRING_EPILOGUE_H

#include <immintrin.h>
#include <stdint.h>

enum { ACT_NONE = 0, ACT_QUICK_GELU = 1 };

/* QuickGELU, z * sigmoid(1.702 z), with the exp below: within about 2 ulp of PyTorch's (a correctly
 * rounded division, no reciprocal estimate). */
#define AVX512F __attribute__((target("avx512f")))
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

static inline __attribute__((always_inline)) AVX512F __m512 exp16(__m512 x) {
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

static inline __attribute__((always_inline)) AVX512F __m512 quick_gelu16(__m512 z) {
    const __m512 t = _mm512_mul_ps(z, _mm512_set1_ps(QUICK_GELU_SCALE));
    const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), t));
    return _mm512_mul_ps(z, _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
}


/* Rows [m0, m1), columns [c0, c1) of y [., N] (c0, c1 multiples of 16), in place; residual may be
 * NULL. The two builds give the same bits. */
#define HIDDEN __attribute__((visibility("hidden")))  /* inside the library only */
HIDDEN void finish_block_avx2(float *y, const float *residual, int activation, int64_t m0, int64_t m1,
                              int64_t c0, int64_t c1, int64_t N);
HIDDEN void finish_block_avx512(float *y, const float *residual, int activation, int64_t m0, int64_t m1,
                                int64_t c0, int64_t c1, int64_t N);

#endif
