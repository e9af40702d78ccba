/* How long the event loop works between two waits for I/O: every iteration's busy time (the
 * iteration's wall time less what it spent blocked in the kernel waiting for events,
 * uv_metrics_idle_time()) and the loop thread's CPU time over it. A gateway's ack waits behind
 * a long iteration, so its busy wall time is the stall a sender feels; its CPU time tells our
 * own work (a long export step, a huge batch) from the thread being descheduled on a crowded
 * machine. Exported in /metrics as intake_loop_busy_seconds (a histogram) and the maxima. */
#ifndef INTAKE_CORE_LOOPWATCH_H
#define INTAKE_CORE_LOOPWATCH_H

#include <stdint.h>
#include <uv.h>

#define INTAKE_LOOPWATCH_BUCKETS 9
/* Upper bounds of the histogram's buckets in ms; the last is +Inf. */
extern const double intake_loopwatch_bounds_ms[INTAKE_LOOPWATCH_BUCKETS];

typedef struct {
  uint64_t iterations;                        /* iterations measured */
  uint64_t counts[INTAKE_LOOPWATCH_BUCKETS];  /* by busy wall time (not cumulative) */
  uint64_t busy_ns;                           /* their busy wall time, summed */
  uint64_t busy_max_ns;                       /* the longest busy wall time */
  uint64_t cpu_max_ns;                        /* the most CPU time one iteration used */
} intake_loopwatch_stats_t;

typedef struct intake_loopwatch intake_loopwatch_t;

/* Starts watching `loop` (enables its idle-time metric); call before uv_run(). The watch does
 * not keep the loop alive. Returns NULL when out of memory. */
intake_loopwatch_t *intake_loopwatch_start(uv_loop_t *loop);

void intake_loopwatch_stats(const intake_loopwatch_t *w, intake_loopwatch_stats_t *out);

/* Stops watching; the memory is released in the handle's close callback. NULL is fine. */
void intake_loopwatch_close(intake_loopwatch_t *w);

#endif
