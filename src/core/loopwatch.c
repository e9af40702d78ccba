/* The event loop's busy time per iteration: see loopwatch.h. */
#include "core/loopwatch.h"

#include <stdlib.h>
#include <time.h>

const double intake_loopwatch_bounds_ms[INTAKE_LOOPWATCH_BUCKETS] = {1,  5,   10,   25, 50,
                                                                     100, 250, 1000, 1e300};

struct intake_loopwatch {
  uv_prepare_t prepare;    /* runs once an iteration, just before the loop waits for I/O */
  uint64_t wall_ns;        /* at the last prepare */
  uint64_t idle_ns;        /* uv_metrics_idle_time() then */
  uint64_t cpu_ns;         /* the thread's CPU time then */
  int primed;              /* the fields above hold a first reading */
  intake_loopwatch_stats_t st;
};

static uint64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* From one prepare to the next is one whole iteration: the wait for I/O, then the callbacks
 * of I/O, checks, closes, timers and idles. Less the wait, what remains is the work. */
static void on_prepare(uv_prepare_t *h) {
  intake_loopwatch_t *w = h->data;
  uint64_t wall = clock_ns(CLOCK_MONOTONIC), idle = uv_metrics_idle_time(h->loop);
  uint64_t cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  if (w->primed) {
    uint64_t span = wall - w->wall_ns, waited = idle - w->idle_ns;
    uint64_t busy = span > waited ? span - waited : 0, used = cpu - w->cpu_ns;
    unsigned b = 0;
    while (b + 1 < INTAKE_LOOPWATCH_BUCKETS &&
           (double)busy / 1e6 > intake_loopwatch_bounds_ms[b])
      b++;
    w->st.counts[b]++;
    w->st.iterations++;
    w->st.busy_ns += busy;
    if (busy > w->st.busy_max_ns)
      w->st.busy_max_ns = busy;
    if (used > w->st.cpu_max_ns)
      w->st.cpu_max_ns = used;
  }
  w->wall_ns = wall;
  w->idle_ns = idle;
  w->cpu_ns = cpu;
  w->primed = 1;
}

intake_loopwatch_t *intake_loopwatch_start(uv_loop_t *loop) {
  intake_loopwatch_t *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  /* Accumulating idle time costs a clock read around each wait; refused only by a libuv older
   * than 1.39, where the busy time then includes the waits (the CPU time stays right). */
  (void)uv_loop_configure(loop, UV_METRICS_IDLE_TIME);
  uv_prepare_init(loop, &w->prepare);
  w->prepare.data = w;
  uv_prepare_start(&w->prepare, on_prepare);
  uv_unref((uv_handle_t *)&w->prepare);
  return w;
}

void intake_loopwatch_stats(const intake_loopwatch_t *w, intake_loopwatch_stats_t *out) {
  *out = w->st;
}

static void on_closed(uv_handle_t *h) { free(h->data); }

void intake_loopwatch_close(intake_loopwatch_t *w) {
  if (w)
    uv_close((uv_handle_t *)&w->prepare, on_closed);
}
