/* Exact de-duplication of events: (source id, event id) within a time window, and
 * per-source sequence windows for sources that number their events.
 *
 * Identity. An event is identified by a 128-bit XXH3 fingerprint of (source_id, event_id);
 * a source by a 128-bit fingerprint of source_id (of which 96 bits are stored). With 10^8 live
 * keys the chance that two different keys share a fingerprint is ~10^-22: exact in practice,
 * at 16 bytes per key instead of the ~130 a full key would cost.
 * For a source that sends seq > 0, (source, seq) is the identity inside the source's window
 * of the last 64 sequence numbers; an older seq falls back to the (source, event id) table.
 *
 * Lifecycle of a key, driven by the pipeline:
 *   check()  -> NEW        the pipeline produces the event and calls begin()
 *            -> IN_FLIGHT  a copy is being produced: do not produce again, follow its outcome
 *            -> DUPLICATE  delivered before, within the window
 *   begin()  remembers the key as in flight (owner pointer returned by later checks)
 *   commit() on Kafka's confirmation: the key becomes "seen" for the window
 *   abort()  on a failed delivery: the key is forgotten, so the retransmit is produced
 *
 * Memory is fixed at create time from byte budgets; nothing allocates per event except the
 * in-flight map, which is bounded by what the pipeline allows in flight. When a table is full
 * of live keys, the oldest key in the probed neighbourhood is evicted and counted: the window
 * shrinks (visibly, in the counters) rather than memory growing. */
#ifndef INTAKE_DEDUP_H
#define INTAKE_DEDUP_H

#include <stddef.h>
#include <stdint.h>

typedef struct intake_dedup intake_dedup_t;

typedef enum {
  INTAKE_DEDUP_NEW = 0,
  INTAKE_DEDUP_DUPLICATE = 1,
  INTAKE_DEDUP_IN_FLIGHT = 2
} intake_dedup_result_t;

/* Precomputed hashes of one event; fill with intake_dedup_probe_init(). */
typedef struct {
  uint64_t key_hi, key_lo;   /* fingerprint of (source_id, event_id) */
  uint64_t src_hi, src_lo;   /* fingerprint of source_id */
  uint64_t seq;              /* 0 = none */
} intake_dedup_probe_t;

typedef struct {
  uint64_t entries;          /* live (source, event id) keys */
  uint64_t capacity;         /* slots in the event-id table */
  uint64_t sources;          /* live per-source sequence windows */
  uint64_t source_capacity;
  uint64_t in_flight;        /* keys between begin() and commit()/abort() */
  uint64_t bytes;            /* memory held by all tables */
  uint64_t evictions;        /* live keys evicted because a table was full */
  uint64_t expired;          /* keys dropped after their window */
} intake_dedup_stats_t;

/* Creates a deduper. `window_ms` >= 1; budgets are in bytes (each table gets the largest
 * power-of-two slot count that fits). Returns NULL on bad arguments or out of memory. */
intake_dedup_t *intake_dedup_create(uint64_t window_ms, uint64_t event_bytes,
                                    uint64_t source_bytes);
void intake_dedup_destroy(intake_dedup_t *d);

/* Changes the window; existing keys keep their timestamps. */
void intake_dedup_set_window(intake_dedup_t *d, uint64_t window_ms);

void intake_dedup_probe_init(intake_dedup_probe_t *p, const char *source_id, size_t source_len,
                             const char *event_id, size_t event_len, uint64_t seq);

/* Prefetches the cache lines check() will touch: call for a whole batch first, then check()
 * each event, so the DRAM misses overlap. */
void intake_dedup_prefetch(const intake_dedup_t *d, const intake_dedup_probe_t *p);

/* Classifies the event at time now_ms (Unix ms). For IN_FLIGHT, *owner (if not NULL) is set to
 * the pointer given to begin(). */
intake_dedup_result_t intake_dedup_check(intake_dedup_t *d, const intake_dedup_probe_t *p,
                                         uint64_t now_ms, void **owner);

/* Marks the key in flight with `owner` (not NULL). Returns 0 or -ENOMEM. Must follow a check()
 * that returned NEW, with no other begin() for the same key in between. */
int intake_dedup_begin(intake_dedup_t *d, const intake_dedup_probe_t *p, void *owner);

/* Kafka confirmed the event: the key is seen until now_ms + window. */
void intake_dedup_commit(intake_dedup_t *d, const intake_dedup_probe_t *p, uint64_t now_ms);

/* The delivery failed: forget the in-flight key. */
void intake_dedup_abort(intake_dedup_t *d, const intake_dedup_probe_t *p);

/* Drops expired keys, visiting at most `budget` slots per call (an incremental sweep the
 * daemon runs from a timer so no single call is long). Returns slots visited. */
size_t intake_dedup_sweep(intake_dedup_t *d, uint64_t now_ms, size_t budget);

void intake_dedup_stats(const intake_dedup_t *d, intake_dedup_stats_t *out);

#endif
