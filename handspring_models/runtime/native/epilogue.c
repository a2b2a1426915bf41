/* The epilogue of the linear kernels (see epilogue.h), applied to a block of fp32 outputs in
 * place: activation first, then the residual. The residual add is the same fp32 add as PyTorch's,
 * so it gives the same bits. Only the library's own kernels call these, on blocks they have just
 * computed. */

#include <immintrin.h>
#include <stdint.h>

#include "epilogue.h"

/* Rows [m0, m1), columns [c0, c1) of y (c0, c1 multiples of 16). */
void finish_block_avx2(float *y, const float *residual, int activation, int64_t m0, int64_t m1,
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

AVX512F void finish_block_avx512(float *y, const float *residual, int activation, int64_t m0, int64_t m1,
                                 int64_t c0, int64_t c1, int64_t N) {
    for (int64_t m = m0; m < m1; ++m) {
        float *row = y + m * N;
        const float *res = residual ? residual + m * N : 0;
        for (int64_t c = c0; c < c1; c += 16) {
            __m512 v = _mm512_loadu_ps(row + c);
            if (activation == ACT_QUICK_GELU) v = quick_gelu16(v);
            if (res) v = _mm512_add_ps(_mm512_loadu_ps(res + c), v);
            _mm512_storeu_ps(row + c, v);
        }
    }
}
