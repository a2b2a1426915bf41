/* The split of a linear layer's work between threads (see schedule.h). Threads come from the OpenMP
 * runtime PyTorch has already loaded (same soname), so the kernels and PyTorch's own operators
 * share one thread team rather than competing for the cores. */

#include <omp.h>

#include "schedule.h"

void run_blocks(const linear_work *work, int64_t M, int64_t panels, int step, int64_t chunk, int threads) {
    const int64_t steps = (panels + step - 1) / step;
    if (threads > steps) threads = (int)steps;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        if (work->row) {
#pragma omp for schedule(static)
            for (int64_t m = 0; m < M; ++m) work->row(work->ctx, m);
            /* (the loop's barrier: every row is done before any block reads it) */
        }
        const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t p0 = step * (steps * t / team);
        int64_t p1 = step * (steps * (t + 1) / team);
        if (p1 > panels) p1 = panels;
        for (int64_t m0 = 0; m0 < M && p0 < p1; m0 += chunk)
            work->block(work->ctx, m0, m0 + chunk < M ? m0 + chunk : M, p0, p1);
    }
}
