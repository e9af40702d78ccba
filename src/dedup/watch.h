/* Says when the dedup table cannot hold the configured window: the daemon calls
 * intake_dedup_watch() after each sweep; it measures the rate of new keys and logs
 *
 *   level=warn msg="dedup window shrunk" effective_window_s=198 window_s=600 keys_per_s=18948
 *     memory=67108864 memory_needed=202112000 ...
 *
 * (memory: the event-id table, dedup.memory; memory_needed: what would hold the window at
 * the rate of new keys over the last minute)
 *
 * when the effective window falls below the configured one (then at most once a minute while it
 * stays below), and `msg="dedup window restored"` when it is whole again. The same numbers are
 * in the stats line and /metrics (intake_dedup_effective_window_seconds). */
#ifndef INTAKE_DEDUP_WATCH_H
#define INTAKE_DEDUP_WATCH_H

#include <stdint.h>

#include "core/log.h"
#include "dedup/dedup.h"

#define INTAKE_DEDUP_WATCH_SAMPLES 6 /* a rate over the last minute, sampled every 10 s */

typedef struct {
  uint64_t commits[INTAKE_DEDUP_WATCH_SAMPLES]; /* the commit counter at each sample */
  uint64_t at_ms[INTAKE_DEDUP_WATCH_SAMPLES];   /* when (monotonic) */
  unsigned next, filled;
  uint64_t keys_per_s;       /* new keys a second over the sampled span */
  int shrunk;                /* the last call found the effective window short */
  intake_log_limit_t limit;  /* the warning: once a minute */
} intake_dedup_watch_t;

/* Zero-initialize, then call after each sweep with the monotonic time. Logs as above. */
void intake_dedup_watch(intake_dedup_watch_t *w, const intake_dedup_t *d, uint64_t mono_ms);

#endif
