/* A log-linear latency histogram in microseconds: exact below 128 µs, then 64 buckets per power
 * of two (under 1.6% error), up to 2^40 µs. Recording is an index computation and an
 * increment; percentiles are read after merging the threads' copies. */
#ifndef INTAKE_BENCH_HIST_H
#define INTAKE_BENCH_HIST_H

#include <stdint.h>
#include <string.h>

#define HIST_BUCKETS 2240u

typedef struct {
  uint32_t b[HIST_BUCKETS];
  uint64_t count;
  uint64_t max_us;
} hist_t;

static inline unsigned hist_index(uint64_t us) {
  if (us < 128)
    return (unsigned)us;
  if (us >= (1ull << 40))
    return HIST_BUCKETS - 1;
  unsigned e = (unsigned)(63 - __builtin_clzll(us)) - 6; /* us >> e is in [64, 128) */
  return 64 * e + (unsigned)(us >> e);
}

/* Middle of bucket i, in µs. */
static inline double hist_value(unsigned i) {
  if (i < 128)
    return i;
  unsigned e = i / 64 - 1, s = i - 64 * e;
  return ((double)((uint64_t)s << e) + (double)(((uint64_t)s + 1) << e)) / 2.0;
}

static inline void hist_add(hist_t *h, uint64_t us) {
  h->b[hist_index(us)]++;
  h->count++;
  if (us > h->max_us)
    h->max_us = us;
}

static inline void hist_merge(hist_t *into, const hist_t *from) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    into->b[i] += from->b[i];
  into->count += from->count;
  if (from->max_us > into->max_us)
    into->max_us = from->max_us;
}

/* The q-quantile (0..1) in milliseconds; 0 when empty. */
static inline double hist_ms(const hist_t *h, double q) {
  if (!h->count)
    return 0;
  uint64_t rank = (uint64_t)(q * (double)h->count);
  if (rank >= h->count)
    rank = h->count - 1;
  uint64_t acc = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    acc += h->b[i];
    if (acc > rank) {
      double v = hist_value(i);
      return (v > (double)h->max_us ? (double)h->max_us : v) / 1000.0;
    }
  }
  return (double)h->max_us / 1000.0;
}

#endif
