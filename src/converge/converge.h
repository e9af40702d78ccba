/* Alarm convergence (告警收敛) for one route: one record per (source, type) episode instead of
 * a storm, with the repeats counted and reported in summaries.
 *
 * An episode is keyed by a 64-bit XXH3 hash of the configured key fields (source id, type,
 * attribute values). The first event of an episode passes; repeats inside it are suppressed and
 * counted; a clear event passes and closes it; silence for the window closes it too. Closing
 * an episode, a periodic tick (summary_every) and flap detection emit summaries through the
 * callback given at create. A source toggling alarm/clear more than flap.count times inside
 * flap.window is reported once (reason FLAPPING) and every event of it is suppressed until no
 * toggle has come for flap.window.
 *
 * Memory is fixed at create: a pool of slots of (80 + max_event_bytes) bytes — the episode
 * state and the bytes of its latest event, which the summary carries — plus a uint32 index at
 * load <= 1/2. When the pool is full, the oldest episode is closed early (reason EVICTED).
 * An event larger than max_event_bytes is not converged (it passes, counted as oversize).
 *
 * Single-threaded; no allocation after create; no timers of its own: the owner calls
 * intake_converge_tick() with the time, which scans a bounded number of slots. */
#ifndef INTAKE_CONVERGE_H
#define INTAKE_CONVERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/event.h"

typedef struct intake_converge intake_converge_t;

#define INTAKE_CONVERGE_MAX_KEY_ATTRS 8

/* Settings of one route (routes.rules[].converge). */
typedef struct {
  bool key_source;              /* the source id is part of the key */
  bool key_type;                /* the event type is part of the key */
  const char *const *key_attrs; /* attribute names part of the key (value "" when absent) */
  size_t n_key_attrs;           /* <= INTAKE_CONVERGE_MAX_KEY_ATTRS */
  uint64_t window_ms;           /* silence that ends an episode (> 0) */
  bool refresh;                 /* true: each repeat restarts the window; false: fixed from the
                                   first event */
  uint64_t summary_every_ms;    /* 0 = summaries only at the end; else also periodically */
  uint32_t flap_count;          /* 0 = no flap damping; else toggles tolerated inside... */
  uint64_t flap_window_ms;      /* ...this window */
  uint64_t memory_bytes;        /* whole footprint, >= one slot */
  uint32_t max_event_bytes;     /* largest event a slot keeps (the summary's `last`) */
} intake_converge_conf_t;

/* Counters of one route; the owner keeps them (so they can outlive a converge instance). */
typedef struct {
  uint64_t episodes_opened;     /* first events passed */
  uint64_t repeats_suppressed;  /* events suppressed (repeats, and toggles while flapping) */
  uint64_t summaries;           /* summaries emitted (handed to the callback) */
  uint64_t flapping;            /* sources reported as flapping */
  uint64_t evicted;             /* episodes closed early because the table was full */
  uint64_t oversize;            /* events over max_event_bytes, passed unconverged */
  uint64_t episodes;            /* gauge: slots in use */
  uint64_t capacity;            /* gauge: slots */
} intake_converge_counters_t;

/* Values of intake.v1.SummaryReason. */
typedef enum {
  INTAKE_SUMMARY_EXPIRED = 1,   /* silence for the window */
  INTAKE_SUMMARY_CLEARED = 2,   /* a clear event closed it */
  INTAKE_SUMMARY_PERIODIC = 3,  /* summary_every while it lasts */
  INTAKE_SUMMARY_FLAPPING = 4,  /* the source started flapping */
  INTAKE_SUMMARY_EVICTED = 5,   /* closed early: table full (or the route was dropped) */
} intake_summary_reason_t;

/* What a summary reports; pointers are valid only during the callback. */
typedef struct {
  intake_summary_reason_t reason;
  intake_str_t source_id;       /* of the last event */
  intake_str_t type;
  int64_t first_seen_ms;        /* daemon clock: the episode's first event */
  int64_t last_seen_ms;         /* daemon clock: its latest event */
  uint64_t repeat_count;        /* events suppressed in the episode so far */
  bool flapping;
  uint32_t flap_count;          /* toggles counted in the flap window (total while flapping) */
  const uint8_t *last;          /* the latest event's bytes (an intake.v1.Event) */
  uint32_t last_len;
} intake_converge_summary_t;

typedef void (*intake_converge_emit_cb)(void *ctx, const intake_converge_summary_t *s);

typedef enum { INTAKE_CONVERGE_PASS = 0, INTAKE_CONVERGE_SUPPRESS = 1 } intake_converge_verdict_t;

/* Checks conf (bounds the config loader already enforces); NULL when fine, else a message. */
const char *intake_converge_conf_check(const intake_converge_conf_t *conf);

/* Creates a table sized by conf->memory_bytes (copied, attribute names too). `emit` is called
 * synchronously from check, tick and flush. `counters` must outlive the instance. NULL on out
 * of memory or a bad conf. */
intake_converge_t *intake_converge_create(const intake_converge_conf_t *conf,
                                          intake_converge_emit_cb emit, void *ctx,
                                          intake_converge_counters_t *counters);
void intake_converge_destroy(intake_converge_t *c);

/* Whether `conf` can take over `c`'s state (same memory and slot size). */
bool intake_converge_compatible(const intake_converge_t *c, const intake_converge_conf_t *conf);
/* Takes new settings (compatible ones), callback context and counters; episodes are kept. */
int intake_converge_update(intake_converge_t *c, const intake_converge_conf_t *conf, void *ctx,
                           intake_converge_counters_t *counters);

/* Decides about `ev` at `now_ms` (the daemon's clock). `fp` is a fingerprint of the event's
 * identity (dedup's key): a retransmit of an episode's first event passes again, since dedup
 * let it through only because that first copy was not confirmed. May emit summaries (an
 * expired episode found, a clear, flapping, an eviction) before returning. */
intake_converge_verdict_t intake_converge_check(intake_converge_t *c, const intake_event_t *ev,
                                                uint64_t fp, int64_t now_ms);

/* A hint, no state changes: stage 0 prefetches the index line of `ev`'s key; stage 1 (some
 * events later, once that line is in cache) the episode slot it points to. On a table far
 * larger than the caches this hides the two memory misses that check() would otherwise wait
 * for (bench/hotpath.c --converge). */
void intake_converge_prefetch(const intake_converge_t *c, const intake_event_t *ev, int stage);

/* Scans up to `max_slots` slots from where the last tick stopped: closes expired episodes and
 * emits due periodic summaries. Returns the slots scanned. */
size_t intake_converge_tick(intake_converge_t *c, int64_t now_ms, size_t max_slots);

/* Closes every open episode with a summary of `reason` (e.g. before dropping the table). */
void intake_converge_flush(intake_converge_t *c, intake_summary_reason_t reason);

/* ---- snapshots (converge/snapshot.h) ---------------------------------------------------- */

/* States of an exported episode. */
enum {
  INTAKE_CONVERGE_EP_ACTIVE = 1,   /* open: a summary is due when it ends */
  INTAKE_CONVERGE_EP_CLEARED = 2,  /* closed by a clear, remembered for flap counting */
  INTAKE_CONVERGE_EP_FLAPPING = 3, /* open and flapping */
};

/* One held episode, as a snapshot stores it. Times are on the clock the table is given. */
typedef struct {
  uint64_t hash;               /* key hash (bit 63 set) */
  uint64_t fp;                 /* fingerprint of the event that opened the episode */
  int64_t first_ms, last_ms;
  int64_t expires_ms;          /* closed (EXPIRED) or forgotten (CLEARED) at this time */
  int64_t next_summary_ms;     /* next periodic summary */
  int64_t flap_start_ms;       /* start of the current flap window */
  uint32_t repeats;            /* suppressed so far */
  uint16_t flap_toggles;
  uint8_t state;               /* INTAKE_CONVERGE_EP_* */
  uint8_t last_clear;          /* the latest event was a clear */
  uint32_t last_len;           /* bytes at `last`: the latest event (an intake.v1.Event) */
  const uint8_t *last;         /* export: valid during the callback; import: read, not kept */
} intake_converge_episode_t;

/* Identifies how `c` computes its keys (key fields, attribute names in order, hash scheme):
 * episodes saved by a table with another value would never match an event of this one. */
uint64_t intake_converge_key_id(const intake_converge_t *c);

/* Calls fn(ctx, e) for every held episode, oldest first (the order eviction follows), with no
 * state change; stops at the first non-zero return and returns it, else 0. */
int intake_converge_foreach(const intake_converge_t *c,
                            int (*fn)(void *ctx, const intake_converge_episode_t *e), void *ctx);

/* Adds a saved episode (a fresh table, fed oldest first, gets the saved age order back). Its
 * times are taken as they are, even when already past: the next check() or tick() closes such
 * an episode (EXPIRED) like any other. When the table is full the oldest episode is closed
 * early (EVICTED), as for a new one. Not counted as opened. Returns 1 when stored, 0 when
 * refused: an invalid record (state, hash), bytes over max_event_bytes, or a key already held. */
int intake_converge_import(intake_converge_t *c, const intake_converge_episode_t *e);

#endif
