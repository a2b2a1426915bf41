/* How every linear kernel of the library splits its work between threads: each thread owns a
 * contiguous range of the weight's panels (16 output columns each), in steps of the panels one tile
 * covers, and for each chunk of rows it runs its panels. A chunk's rows stay in cache while the
 * thread's panels stream past them; each panel is read from memory once per chunk. */

#ifndef HANDSPRING_SCHEDULE_H
#define HANDSPRING_SCHEDULE_H

#include <stdint.h>

#define PANEL 16

typedef struct {
    /* Optional: run once for every row m, all before any block (the int8 kernel quantizes rows). */
    void (*row)(const void *ctx, int64_t m);
    /* Rows [m0, m1) times this thread's panels [p0, p1) (p0 a multiple of the step), epilogue
     * included. */
    void (*block)(const void *ctx, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
    const void *ctx;
} linear_work;

/* M rows, `panels` panels taken `step` at a time, chunks of `chunk` rows, on at most `threads`
 * threads of the OpenMP team PyTorch uses (one parallel region per call). */
__attribute__((visibility("hidden"))) void run_blocks(const linear_work *work, int64_t M, int64_t panels, int step,
                                                      int64_t chunk, int threads);

/* Rows per chunk: the chunk's rows take about `bytes` (row_bytes each), in whole tiles, but never
 * fewer than `min_rows`. */
static inline int64_t chunk_rows(int64_t bytes, int64_t row_bytes, int tile_rows, int64_t min_rows) {
    const int64_t rows = (bytes / row_bytes) / tile_rows * tile_rows;
    return rows < min_rows ? min_rows : rows;
}

#endif
