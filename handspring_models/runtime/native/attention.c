/* Multi-head self-attention straight from a fused q/k/v projection's output, for the short sequences
 * of CLIP-like towers (tens to hundreds of tokens):
 *
 *   qkv [batch, n, 3, heads, dh] (fp32 or bf16)  ->  out [batch, n, heads, dh] (same dtype)
 *   out = softmax(q k^T / sqrt(dh)) v per (batch, head), optionally causal (key j <= query i).
 *
 * Reading the projection's layout and writing the output projection's input directly saves the two
 * transposing copies around PyTorch's attention; at these lengths a whole (batch, head) fits in L2,
 * so each one is done in one go by one thread, all in fp32:
 *   1. its q (scaled), k (transposed) and v are copied to fp32 scratch;
 *   2. scores for 8 query rows at a time against 32 keys at a time, in 16 accumulators;
 *   3. softmax per row (max, exp, sum), masked past the row's last key;
 *   4. the weighted sum of v, 4 rows x 64 dims at a time, times 1 / the row's sum once.
 * bf16 results are rounded to nearest even, as PyTorch rounds. Two builds of the same steps, AVX2
 * (8 lanes: scores 4 rows x 16 keys, sums 4 rows x 16 dims at a time) and AVX-512 (16 lanes),
 * sharing the scratch layout and the split between threads. */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "epilogue.h"

#define AVX512_ATTN __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define QUERY_ROWS 8 /* query rows per score block */
#define KEY_STEP 32  /* keys per score block: two registers */
#define OUT_ROWS 4   /* rows per weighted-sum block */

typedef struct {
    const char *qkv;
    char *out;
    int64_t n, heads, dh;
    int bf16, causal;
    float scale;
} attention_args;

static inline __attribute__((always_inline)) AVX512_ATTN __m512 load16(const char *p, int bf16) {
    if (!bf16) return _mm512_loadu_ps(p);
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

static inline __attribute__((always_inline)) AVX512_ATTN void store16(char *p, __m512 v, int bf16) {
    if (!bf16) {
        _mm512_storeu_ps(p, v);
        return;
    }
    __m512i x = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    x = _mm512_add_epi32(x, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
    x = _mm512_mask_mov_epi32(x, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc00000));
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(_mm512_srli_epi32(x, 16)));
}

static inline int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

/* Floats of scratch one thread needs for sequences of n tokens. */
static int64_t scratch_floats(int64_t n, int64_t dh) {
    const int64_t keys = round_up(n, KEY_STEP);
    return 2 * keys * dh /* q, v */ + dh * keys /* k^T */ + QUERY_ROWS * keys /* scores */ + 16;
}

/* Rows [i0, i0 + rows) of the weighted sum, `vecs` registers of dims from c0, into `out`. */
static inline __attribute__((always_inline)) AVX512_ATTN void weighted_sum(
    const attention_args *a, const float *v, const float *p, int64_t keys_pad, const float *inv, int64_t i0,
    int64_t rows, int64_t limit, int64_t c0, const int vecs, char *out) {
    const int64_t dh = a->dh, width = a->heads * dh, es = a->bf16 ? 2 : 4;
    __m512 acc[OUT_ROWS][4];
    for (int r = 0; r < OUT_ROWS; ++r)
        for (int c = 0; c < vecs; ++c) acc[r][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < limit; ++j) {
        __m512 vj[4];
        for (int c = 0; c < vecs; ++c) vj[c] = _mm512_loadu_ps(v + j * dh + c0 + 16 * c);
        for (int r = 0; r < OUT_ROWS; ++r) {
            const __m512 pr = _mm512_set1_ps(p[r * keys_pad + j]);
            for (int c = 0; c < vecs; ++c) acc[r][c] = _mm512_fmadd_ps(pr, vj[c], acc[r][c]);
        }
    }
    for (int r = 0; r < OUT_ROWS && r < rows; ++r)
        for (int c = 0; c < vecs; ++c)
            store16(out + ((i0 + r) * width + c0 + 16 * c) * es, _mm512_mul_ps(acc[r][c], _mm512_set1_ps(inv[r])), a->bf16);
}

/* One (batch, head): the whole attention of its n queries. */
static AVX512_ATTN void attend_avx512(const attention_args *a, int64_t task, float *scratch) {
    const int64_t n = a->n, dh = a->dh, width = a->heads * dh, keys_pad = round_up(n, KEY_STEP);
    const int64_t b = task / a->heads, h = task % a->heads, es = a->bf16 ? 2 : 4;
    const char *in = a->qkv + (b * n * 3 * width + h * dh) * es;
    char *out = a->out + (b * n * width + h * dh) * es;
    float *q = scratch, *v = q + keys_pad * dh, *kt = v + keys_pad * dh, *s = kt + dh * keys_pad;
    const __m512 scale = _mm512_set1_ps(a->scale);

    /* 1. fp32 copies; rows and keys past n are zeros (their scores are masked below) */
    memset(q + n * dh, 0, (keys_pad - n) * dh * sizeof(float));
    for (int64_t c = 0; c < dh; ++c) memset(kt + c * keys_pad + n, 0, (keys_pad - n) * sizeof(float));
    for (int64_t j = 0; j < n; ++j) {
        const char *row = in + j * 3 * width * es;
        for (int64_t c = 0; c < dh; c += 16) {
            _mm512_storeu_ps(q + j * dh + c, _mm512_mul_ps(load16(row + c * es, a->bf16), scale));
            _mm512_storeu_ps(v + j * dh + c, load16(row + (2 * width + c) * es, a->bf16));
            float k[16];
            _mm512_storeu_ps(k, load16(row + (width + c) * es, a->bf16));
            for (int i = 0; i < 16; ++i) kt[(c + i) * keys_pad + j] = k[i];
        }
    }

    for (int64_t i0 = 0; i0 < n; i0 += QUERY_ROWS) {
        const int64_t rows = n - i0 < QUERY_ROWS ? n - i0 : QUERY_ROWS;
        const int64_t limit = a->causal ? i0 + rows : n; /* keys any row of the block sees */

        /* 2. scores */
        for (int64_t j0 = 0; j0 < limit; j0 += KEY_STEP) {
            __m512 acc[QUERY_ROWS][2];
            for (int r = 0; r < QUERY_ROWS; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
            for (int64_t c = 0; c < dh; ++c) {
                const __m512 k0 = _mm512_loadu_ps(kt + c * keys_pad + j0);
                const __m512 k1 = _mm512_loadu_ps(kt + c * keys_pad + j0 + 16);
                for (int r = 0; r < QUERY_ROWS; ++r) {
                    const __m512 qr = _mm512_set1_ps(q[(i0 + r) * dh + c]);
                    acc[r][0] = _mm512_fmadd_ps(qr, k0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(qr, k1, acc[r][1]);
                }
            }
            for (int r = 0; r < QUERY_ROWS; ++r) {
                _mm512_storeu_ps(s + r * keys_pad + j0, acc[r][0]);
                _mm512_storeu_ps(s + r * keys_pad + j0 + 16, acc[r][1]);
            }
        }

        /* 3. softmax, unnormalized: p = exp(s - max), zero past the row's last key */
        float inv[QUERY_ROWS];
        for (int64_t r = 0; r < rows; ++r) {
            float *sr = s + r * keys_pad;
            const int64_t seen = a->causal ? i0 + r + 1 : n;
            __m512 top = _mm512_set1_ps(-INFINITY);
            for (int64_t j = 0; j < seen; j += 16) {
                const __mmask16 m = seen - j >= 16 ? 0xffff : (__mmask16)((1u << (seen - j)) - 1);
                top = _mm512_mask_max_ps(top, m, top, _mm512_loadu_ps(sr + j));
            }
            const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(top));
            __m512 sum = _mm512_setzero_ps();
            int64_t j = 0;
            for (; j < seen; j += 16) {
                const __mmask16 m = seen - j >= 16 ? 0xffff : (__mmask16)((1u << (seen - j)) - 1);
                const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_loadu_ps(sr + j), max)));
                _mm512_storeu_ps(sr + j, e);
                sum = _mm512_add_ps(sum, e);
            }
            for (; j < limit; j += 16) _mm512_storeu_ps(sr + j, _mm512_setzero_ps());
            inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
        }

        /* 4. weighted sum of v */
        for (int64_t r0 = 0; r0 < rows; r0 += OUT_ROWS) {
            const int64_t group = rows - r0 < OUT_ROWS ? rows - r0 : OUT_ROWS;
            const int64_t seen = a->causal ? i0 + r0 + group : n;
            int64_t c0 = 0;
            for (; c0 + 64 <= dh; c0 += 64)
                weighted_sum(a, v, s + r0 * keys_pad, keys_pad, inv + r0, i0 + r0, group, seen, c0, 4, out);
            for (; c0 < dh; c0 += 16)
                weighted_sum(a, v, s + r0 * keys_pad, keys_pad, inv + r0, i0 + r0, group, seen, c0, 1, out);
        }
    }
}

/* ------------------------------------------------------------------ AVX2 */

static inline __attribute__((always_inline)) __m256 load8(const char *p, int bf16) {
    if (!bf16) return _mm256_loadu_ps((const float *)p);
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

static inline __attribute__((always_inline)) void store8(char *p, __m256 v, int bf16) {
    if (!bf16) {
        _mm256_storeu_ps((float *)p, v);
        return;
    }
    __m256i x = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    x = _mm256_add_epi32(x, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff)));
    x = _mm256_blendv_epi8(x, _mm256_set1_epi32(0x7fc00000), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    /* the 8 high halves, in order: pack within each 128-bit lane, then take qwords 0 and 2 */
    const __m256i packed = _mm256_packus_epi32(_mm256_srli_epi32(x, 16), _mm256_setzero_si256());
    _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08)));
}

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* Lanes j .. j+7 below `seen`. */
static inline __m256 below(int64_t j, int64_t seen) {
    const __m256i lane = _mm256_add_epi32(_mm256_set1_epi32((int)j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)seen), lane));
}

static void attend_avx2(const attention_args *a, int64_t task, float *scratch) {
    const int64_t n = a->n, dh = a->dh, width = a->heads * dh, keys_pad = round_up(n, KEY_STEP);
    const int64_t b = task / a->heads, h = task % a->heads, es = a->bf16 ? 2 : 4;
    const char *in = a->qkv + (b * n * 3 * width + h * dh) * es;
    char *out = a->out + (b * n * width + h * dh) * es;
    float *q = scratch, *v = q + keys_pad * dh, *kt = v + keys_pad * dh, *s = kt + dh * keys_pad;
    const __m256 scale = _mm256_set1_ps(a->scale);

    memset(q + n * dh, 0, (keys_pad - n) * dh * sizeof(float));
    for (int64_t c = 0; c < dh; ++c) memset(kt + c * keys_pad + n, 0, (keys_pad - n) * sizeof(float));
    for (int64_t j = 0; j < n; ++j) {
        const char *row = in + j * 3 * width * es;
        for (int64_t c = 0; c < dh; c += 8) {
            _mm256_storeu_ps(q + j * dh + c, _mm256_mul_ps(load8(row + c * es, a->bf16), scale));
            _mm256_storeu_ps(v + j * dh + c, load8(row + (2 * width + c) * es, a->bf16));
            float k[8];
            _mm256_storeu_ps(k, load8(row + (width + c) * es, a->bf16));
            for (int i = 0; i < 8; ++i) kt[(c + i) * keys_pad + j] = k[i];
        }
    }

    for (int64_t i0 = 0; i0 < n; i0 += QUERY_ROWS) {
        const int64_t rows = n - i0 < QUERY_ROWS ? n - i0 : QUERY_ROWS;
        const int64_t limit = a->causal ? i0 + rows : n;

        for (int half = 0; half < QUERY_ROWS; half += 4)
            for (int64_t j0 = 0; j0 < limit; j0 += 16) {
                __m256 acc[4][2];
                for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
                for (int64_t c = 0; c < dh; ++c) {
                    const __m256 k0 = _mm256_loadu_ps(kt + c * keys_pad + j0);
                    const __m256 k1 = _mm256_loadu_ps(kt + c * keys_pad + j0 + 8);
                    for (int r = 0; r < 4; ++r) {
                        const __m256 qr = _mm256_broadcast_ss(q + (i0 + half + r) * dh + c);
                        acc[r][0] = _mm256_fmadd_ps(qr, k0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(qr, k1, acc[r][1]);
                    }
                }
                for (int r = 0; r < 4; ++r) {
                    _mm256_storeu_ps(s + (half + r) * keys_pad + j0, acc[r][0]);
                    _mm256_storeu_ps(s + (half + r) * keys_pad + j0 + 8, acc[r][1]);
                }
            }

        float inv[QUERY_ROWS];
        for (int64_t r = 0; r < rows; ++r) {
            float *sr = s + r * keys_pad;
            const int64_t seen = a->causal ? i0 + r + 1 : n;
            const __m256 lowest = _mm256_set1_ps(-INFINITY);
            __m256 top = lowest;
            for (int64_t j = 0; j < seen; j += 8)
                top = _mm256_max_ps(top, _mm256_blendv_ps(lowest, _mm256_loadu_ps(sr + j), below(j, seen)));
            const __m256 max = _mm256_set1_ps(hmax8(top));
            __m256 sum = _mm256_setzero_ps();
            int64_t j = 0;
            for (; j < seen; j += 8) {
                const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), max)), below(j, seen));
                _mm256_storeu_ps(sr + j, e);
                sum = _mm256_add_ps(sum, e);
            }
            for (; j < limit; j += 8) _mm256_storeu_ps(sr + j, _mm256_setzero_ps());
            inv[r] = 1.0f / hsum8(sum);
        }

        for (int64_t r0 = 0; r0 < rows; r0 += OUT_ROWS) {
            const int64_t group = rows - r0 < OUT_ROWS ? rows - r0 : OUT_ROWS;
            const int64_t seen = a->causal ? i0 + r0 + group : n;
            const float *p = s + r0 * keys_pad;
            for (int64_t c0 = 0; c0 < dh; c0 += 16) {
                __m256 acc[OUT_ROWS][2];
                for (int r = 0; r < OUT_ROWS; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
                for (int64_t j = 0; j < seen; ++j) {
                    const __m256 v0 = _mm256_loadu_ps(v + j * dh + c0), v1 = _mm256_loadu_ps(v + j * dh + c0 + 8);
                    for (int r = 0; r < OUT_ROWS; ++r) {
                        const __m256 pr = _mm256_broadcast_ss(p + r * keys_pad + j);
                        acc[r][0] = _mm256_fmadd_ps(pr, v0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(pr, v1, acc[r][1]);
                    }
                }
                for (int r = 0; r < OUT_ROWS && r < group; ++r) {
                    const __m256 scale_r = _mm256_set1_ps(inv[r0 + r]);
                    char *o = out + ((i0 + r0 + r) * width + c0) * es;
                    store8(o, _mm256_mul_ps(acc[r][0], scale_r), a->bf16);
                    store8(o + 8 * es, _mm256_mul_ps(acc[r][1], scale_r), a->bf16);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ the split between threads */

typedef void (*attend_fn)(const attention_args *, int64_t, float *);

/* Returns 0, or -1 where a thread's scratch could not be allocated (nothing is then reliable). */
static int run(attend_fn attend_one, const void *qkv, void *out, int64_t batch, int64_t n, int64_t heads, int64_t dh,
               int bf16, int causal, int threads) {
    const attention_args args = {qkv, out, n, heads, dh, bf16, causal, 1.0f / sqrtf((float)dh)};
    const int64_t tasks = batch * heads;
    const size_t bytes = (size_t)scratch_floats(n, dh) * sizeof(float);
    int failed = 0;
    if (threads > tasks) threads = (int)tasks;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        /* zeroed: the scores of rows past n in the last block are read, never kept */
        float *scratch = calloc(1, bytes);
        if (scratch == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t)
            if (scratch != NULL) attend_one(&args, t, scratch);
        free(scratch);
    }
    return failed ? -1 : 0;
}

int attention_avx2(const void *qkv, void *out, int64_t batch, int64_t n, int64_t heads, int64_t dh, int bf16,
                   int causal, int threads) {
    return run(attend_avx2, qkv, out, batch, n, heads, dh, bf16, causal, threads);
}

int attention_avx512(const void *qkv, void *out, int64_t batch, int64_t n, int64_t heads, int64_t dh, int bf16,
                     int causal, int threads) {
    return run(attend_avx512, qkv, out, batch, n, heads, dh, bf16, causal, threads);
}
