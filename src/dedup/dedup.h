/* Exact de-duplication of events: (source id, event id) within a time window, and
 * per-source sequence windows for sources that number their events.
 *
 * Identity. An event is identified by a 128-bit XXH3 fingerprint of (source_id, event_id);
 * a source by a 128-bit fingerprint of source_id. The event-id table stores 70 bits of a key
 * (bits 64..127 and 0..5) in 12.8 bytes, the source table 96 bits of a source. A key's table
 * position follows from its top bits, so a new key can only be mistaken for one of the ~4 keys
 * sharing its home bucket: ~4 x buckets / 2^70 a check, 2.3e-15 for 48 MiB (one false
 * duplicate in ~900 years at 15,000 new events/s; dedup.c). Exact in practice, at 12.8 bytes a
 * key instead of the ~130 a full key would cost. Definition (stable, it may
 * reach consumers as a header): src = XXH3_128bits(source_id),
 * key = XXH3_128bits_withSeed(event_id, seed = src.low64) XOR src.
 * For a source that sends seq > 0, (source, seq) is an identity too, inside the source's window
 * of the last 64 sequence numbers: a copy sent under a new event id is a duplicate there.
 * Outside it (an older seq, a window expired or evicted) the (source, event id) table decides;
 * it holds every committed event, sequenced or not, so that fallback is exact.
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
 * in-flight map, which is bounded by what the pipeline allows in flight.
 *
 * When memory cannot hold the window. A table keeps the keys younger than its window while
 * they fit in 72% of its slots. When they no longer fit, the table forgets its oldest keys
 * first, table-wide: it keeps an effective window (a horizon, in 10 ms ticks) so that the keys
 * younger than it fit, and forgets every key older than that. The effective window is a
 * guarantee: every key committed within it is held; no key younger than it is forgotten while
 * an older one is kept. It shrinks as the rate grows and grows back (no faster than time
 * passes) as the rate falls; forgotten keys are counted as evictions. See
 * intake_dedup_stats_t.effective_window_ms and intake_dedup_event_bytes_for().
 *
 * Time. Keys are stamped in 10 ms ticks: a committed key is a duplicate for at least window_ms
 * and at most window_ms + 20 ms. A clock that steps back keeps keys (they look newer). Stamps
 * are 32-bit and compared modulo 2^32, which requires intake_dedup_sweep() to complete a pass
 * over the tables at least once every 248 days (at 65536 slots per 100 ms a 256 MiB table is
 * swept in under 30 s).
 *
 * Sequence windows. A source's window is forgotten after window_ms without a commit; while it is
 * alive, a seq inside it is known by its bit, whatever its age or event id. So a source that
 * restarts its numbering (reboot) less than 64 numbers below its old top, within the window,
 * has its new events with those numbers dropped as DUPLICATE: seq is trusted as identity.
 * A restart from further below is judged by key only. Seqs jumping 64 or more ahead restart
 * the bitmap. Events that left the window are still caught by key.
 *
 * Sizing. The event-id table costs 12.8 bytes a slot (5 in a 64-byte line) and holds live keys
 * in at most 72% of its slots (lookups slow down with load, linear probing over lines: 1.16
 * lines a miss at 50%, 1.53 at 65%, 1.82 at 70%, 3.2 at 80%, 5.1 at 85%): 17.8 bytes a key,
 * event_bytes >= 17.8 bytes x (events per window, sequenced ones included, storms included);
 * 40,000 events a second for 10 min: 427 MB; 256 MiB holds 25,100 events/s for 10 min
 * (intake_dedup_event_bytes_for()). Every byte of the budget is used, so any size works. The
 * source table costs 32 bytes a slot: source_bytes ~ 32 / 0.72 x (sequenced sources). The city
 * (920,000 sources, 2.72 M keys, 150,000 sequenced) fits 48 MiB + 8 MiB: 63.9 bytes a source
 * (bench/ANALYSIS.md).
 *
 * Not thread-safe: one deduper per event loop. */
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

/* Precomputed hashes of one event; fill with intake_dedup_probe_init(). Keep it with the event
 * until its commit() or abort(): those take the same probe. */
typedef struct {
  uint64_t key_hi, key_lo;   /* fingerprint of (source_id, event_id) */
  uint64_t src_hi, src_lo;   /* fingerprint of source_id */
  uint64_t seq;              /* 0 = none */
} intake_dedup_probe_t;

typedef struct {
  uint64_t entries;          /* (source, event id) keys held */
  uint64_t capacity;         /* slots in the event-id table */
  uint64_t sources;          /* per-source sequence windows held */
  uint64_t source_capacity;  /* slots in the source table */
  uint64_t in_flight;        /* keys between begin() and commit()/abort() */
  uint64_t bytes;            /* memory held by all tables */
  uint64_t event_bytes;      /* of which the event-id table: what the event budget bought */
  uint64_t evictions;        /* keys or windows forgotten before their window ended because a
                                table was full (the effective window shrank) */
  uint64_t forced_evictions; /* of which evicted by a full probe run rather than by age (the
                                sweep fell far behind; 0 in every measured run) */
  uint64_t expired;          /* keys or windows dropped (swept or reused) after their window */
  uint64_t commits;          /* keys stored new in the event-id table (rate = its derivative) */
  uint64_t window_ms;        /* the window as set */
  uint64_t effective_window_ms; /* every key committed this recently is held (= the window
                                   until the table is full; then less, see above) */
  uint64_t source_window_ms; /* the same for the source table's sequence windows */
} intake_dedup_stats_t;

/* Sizing: the event-id table bytes that hold `keys` live keys (events per window) at the
 * target load, and the keys a budget holds. For config checks and the warning when the
 * effective window falls below the configured one. */
uint64_t intake_dedup_event_bytes_for(uint64_t keys);
uint64_t intake_dedup_keys_for(uint64_t event_bytes);

/* Creates a deduper. `window_ms` in 1 ms .. 30 days; budgets are in bytes and each table gets
 * every whole bucket that fits (event-id: 64 bytes = 5 slots; source: 128 bytes = 4 slots), so
 * less than a bucket of each budget is unused. The smallest tables are 256 buckets:
 * event_bytes >= 16 KiB, source_bytes >= 32 KiB. Tables of 2 MiB and more are mmap'ed, advised
 * onto huge pages and populated here (MADV_POPULATE_WRITE, or a write per page), so this call
 * takes the page faults instead of the loop thread's first commits into each page: for the
 * default 256 + 64 MiB, 30 ms when the kernel has free huge pages, up to ~1.2 s when it must
 * compact memory for them (measured on the 2-core dev VM). Returns NULL on bad arguments or out
 * of memory. */
intake_dedup_t *intake_dedup_create(uint64_t window_ms, uint64_t event_bytes,
                                    uint64_t source_bytes);
void intake_dedup_destroy(intake_dedup_t *d);

/* Changes the window (clamped to 1 ms .. 30 days) for every later check, sweep and commit;
 * existing keys keep their commit times. Keys already swept do not come back: after a wider
 * window, the effective window starts from the old one at now_ms and grows as time passes. Widening past what the age histogram's
 * slices cover rescans the tables once (~1 ns a slot). */
void intake_dedup_set_window(intake_dedup_t *d, uint64_t window_ms, uint64_t now_ms);

/* The window in force (as set, after clamping). */
uint64_t intake_dedup_window_ms(const intake_dedup_t *d);

/* Hashes one event (~14 ns for a 20-byte source and a 32-byte id). Any lengths; a pointer may be
 * NULL when its length is 0. seq = 0: the event has no sequence number. */
void intake_dedup_probe_init(intake_dedup_probe_t *p, const char *source_id, size_t source_len,
                             const char *event_id, size_t event_len, uint64_t seq);

/* Prefetches the cache lines check() and commit() will touch: the home bucket (a sequenced
 * event's source bucket), one to three more event-table buckets as the load passes 50/70/80%,
 * and the in-flight slot. Call it for a whole batch, then check() each event, so the DRAM
 * misses overlap (without it a check is ~3x slower). Whether the prefetches follow each
 * probe_init() or come in a loop of their own made no difference beyond noise in
 * bench/dedup_bench.c (the separate loop was 2x faster in a hash-and-prefetch-only loop).
 * Worth the same before committing a batch of delivery reports. */
void intake_dedup_prefetch(const intake_dedup_t *d, const intake_dedup_probe_t *p);

/* Classifies the event at time now_ms (Unix ms), in this order: IN_FLIGHT if its key is in
 * flight (*owner, if not NULL, is set to the pointer given to begin()); for seq > 0, by the
 * source's window (see above), falling back to the event-id table below it; else DUPLICATE if the
 * key was committed within the window. Changes nothing. Check and begin each event in turn: a
 * copy later in the same batch then sees the first one IN_FLIGHT. */
intake_dedup_result_t intake_dedup_check(intake_dedup_t *d, const intake_dedup_probe_t *p,
                                         uint64_t now_ms, void **owner);

/* Marks the key in flight with `owner` (not NULL). Returns 0, -ENOMEM (the in-flight map could
 * not grow; nothing changed) or -EINVAL (owner NULL). Must follow a check() that returned NEW,
 * with no other begin() for the same key in between (if there was one, the key stays in flight
 * once, with the latest owner). */
int intake_dedup_begin(intake_dedup_t *d, const intake_dedup_probe_t *p, void *owner);

/* Kafka confirmed the event: the key leaves the in-flight map and is seen until now_ms + window
 * (seq > 0: its bit is set, the window slid forward if seq is above it; a seq below the window
 * is stored by key in the event-id table). Committing a key that is already seen refreshes its
 * time. Never fails; a full table evicts (see above). */
void intake_dedup_commit(intake_dedup_t *d, const intake_dedup_probe_t *p, uint64_t now_ms);

/* The delivery failed: forget the in-flight key; nothing is remembered as seen, so the
 * retransmit is NEW. Harmless for a key not in flight. */
void intake_dedup_abort(intake_dedup_t *d, const intake_dedup_probe_t *p);

/* Recomputes the effective windows, then drops keys and source windows past them, visiting at
 * most `budget` slots per call (8 x budget while forgotten keys hold more than 3% of a table
 * beyond its target) and at most one pass; a cursor carries over to the next call. An
 * incremental sweep the daemon runs from a timer so no single call is long: ~0.9 ns a slot plus
 * ~20-40 ns a deleted key, and ~1 us for the effective windows. Returns slots visited. check()
 * already treats forgotten keys as absent; the sweep keeps them from lengthening probe runs and
 * is needed for the timestamp wrap (see above). */
size_t intake_dedup_sweep(intake_dedup_t *d, uint64_t now_ms, size_t budget);

/* While held, nothing deletes a key: a snapshot export is visiting the tables, and a deletion's
 * backward shift could move a key from a slot it has not visited to one it has. The sweep then
 * only recomputes the effective windows, and inserts do not sweep. Forgetting still works (keys
 * past the effective window are reused in place, never moved). */
void intake_dedup_hold_deletions(intake_dedup_t *d, int hold);

/* Fills every field. `entries` and `sources` count occupied slots, which include keys past their
 * window that the sweep has not reached yet. */
void intake_dedup_stats(const intake_dedup_t *d, intake_dedup_stats_t *out);

/* ---- Export and import, for snapshots (dedup/snapshot.h) ---------------------------------- */

/* A committed (source, event id) key as the event-id table holds it. */
typedef struct {
  uint64_t hi;                /* fingerprint bits 64..127; never 0 */
  uint32_t lo;                /* fingerprint bits 0..5 (exported: the rest 0; imported: the
                                 rest ignored) */
  uint32_t tick;              /* of its last commit: Unix ms / 10, modulo 2^32 */
} intake_dedup_key_rec_t;

/* A source's sequence window as the source table holds it. */
typedef struct {
  uint64_t hi;                /* source fingerprint bits 64..127; never 0 */
  uint32_t lo;                /* bits 0..31 */
  uint32_t tick;              /* of its last commit */
  uint64_t top;               /* highest seq committed */
  uint64_t bits;              /* bit i set: seq top - i committed (i < 64) */
} intake_dedup_source_rec_t;

/* Visits at most `max` slots of the event-id table from slot *pos on, copying the live entries
 * among them (committed within the effective window at now_ms) into out[] (room for `max`), and advances
 * *pos. Returns the number copied, which may be 0 before the end: the table is done when *pos
 * reaches its capacity (intake_dedup_stats().capacity). Bounded work per call (~1.3 ns a slot),
 * so a caller can spread a whole export over many loop iterations. In-flight keys are not in
 * this table, so they are never exported. Reads only; allocates nothing.
 *
 * An export spread over calls, with commits in between, sees every key that was committed
 * before it started and is still held when its slot is visited, provided no sweep runs
 * meanwhile: a sweep's deletion shifts later keys backwards, possibly from a slot not yet
 * visited to one already visited. Commits never move keys. */
size_t intake_dedup_export_keys(const intake_dedup_t *d, uint64_t now_ms, uint64_t *pos,
                                intake_dedup_key_rec_t *out, size_t max);
/* The same for the source table (sequence windows); done at intake_dedup_stats().source_capacity. */
size_t intake_dedup_export_sources(const intake_dedup_t *d, uint64_t now_ms, uint64_t *pos,
                                   intake_dedup_source_rec_t *out, size_t max);

/* Stores an exported key as committed at its own tick, into a deduper being restored: a
 * table of any capacity (the key goes to its home bucket in this table). Returns 1 when
 * stored, 0 when skipped: hi is 0, or the key is past the effective window at now_ms. A tick ahead of
 * now_ms (the clock went back, or another host's snapshot) is stored as now_ms. A key already
 * there keeps the later tick. A full table forgets its oldest keys as commit() does, whatever
 * the order of the import. */
int intake_dedup_import_key(intake_dedup_t *d, const intake_dedup_key_rec_t *k, uint64_t now_ms);
/* The same for a source window; one already there is replaced when the record is newer. */
int intake_dedup_import_source(intake_dedup_t *d, const intake_dedup_source_rec_t *s,
                               uint64_t now_ms);

#endif
