/* Persistence of the dedup state: loads the snapshot at start, writes one every
 * dedup.snapshot_interval without stalling the event loop, and a final one at shutdown
 * (dedup/snapshot.h has the format).
 *
 * How a periodic snapshot runs. The loop exports the tables a bounded step at a time
 * (intake_dedup_export_*: 32768 slots, ~45 us), and hands each step's records to a libuv
 * worker thread, which encodes, compresses and writes them; when the worker is done the loop
 * exports the next step. The loop never waits for the disk, and it is never more than one step
 * ahead of the worker, so memory is one step's buffer (1 MiB). The dedup sweep pauses while the
 * tables are being exported (the only thing that moves keys between slots), so every key
 * committed before the snapshot started is in it unless it was evicted meanwhile; keys committed
 * during the export may or may not be.
 *
 * Why not fork(). Measured with 1M keys in the shipped 256 + 64 MiB tables (2-vCPU VM): a forked
 * child writing from the copy-on-write image costs the loop one fork() (0.5 ms, the tables
 * being on 2 MiB pages), but then every first write to a page of the tables in the parent is a
 * copy-on-write fault: commits in the parent ran 8-9x slower (274 -> 2208 us per 1000, and
 * 404 -> 3644) for the child's whole life (120-180 ms), and the parent's memory grows by up to
 * the tables' size (+320 MiB) each time (tests/unit/test_dedup_snapshot.c --bench). The child
 * would also inherit every socket (holding gateway connections open after the parent closed
 * them) and librdkafka's locked state. The stepped export costs the loop the scan itself:
 * 20-25 ms of loop time a snapshot for those tables (1.0-1.2M keys), in steps of ~45 us (the
 * longest seen on a quiet run: 190 us), and the gaps between the loop's turns kept the same
 * p99 and p99.9 during snapshots as between them; a snapshot took 140-770 ms start to rename,
 * fsync included (tests/unit/test_persist.c --bench).
 *
 * The window of duplicates after a crash: events committed (confirmed by Kafka) after the last
 * snapshot started and before the crash are not in the file, so their retransmits are produced
 * again (at least once, never lost). That is at most snapshot_interval + the snapshot's own
 * duration. A clean shutdown loses nothing: its final snapshot follows the last ack. */
#ifndef INTAKE_PIPELINE_PERSIST_H
#define INTAKE_PIPELINE_PERSIST_H

#include <stdint.h>
#include <uv.h>

#include "dedup/dedup.h"

typedef struct intake_persist intake_persist_t;

typedef struct {
  uint64_t written;            /* snapshots completed, the final one included */
  uint64_t failed;             /* snapshots that failed (the previous file stays in place) */
  uint64_t skipped;            /* intervals that found the previous snapshot still running */
  uint64_t last_ms;            /* duration of the last snapshot written, start to rename */
  uint64_t last_loop_us;       /* event-loop time it took: its export steps, summed */
  uint64_t last_step_max_us;   /* its longest export step */
  uint64_t last_keys;          /* keys in it */
  uint64_t last_sources;       /* sequence windows in it */
  uint64_t last_bytes;         /* its file size */
  uint64_t last_created_ms;    /* Unix ms when it started: it holds every key committed before */
  uint64_t loaded_keys;        /* keys loaded at start */
  uint64_t loaded_sources;     /* sequence windows loaded at start */
  uint64_t load_errors;        /* 1 when the snapshot found at start was unusable (ignored) */
} intake_snapshot_stats_t;

/* Loads the snapshot at `path` into `d` (a fresh deduper) and logs what it found: the keys
 * loaded and the snapshot's age, or why it was unusable (then it is counted, renamed to
 * "<path>.corrupt" when its content is invalid, and ignored: start never fails on it). `path`
 * is copied. Returns NULL only when out of memory. Starts nothing: see start(). */
intake_persist_t *intake_persist_create(uv_loop_t *loop, intake_dedup_t *d, const char *path,
                                        uint64_t interval_ms);

/* Starts the periodic snapshots (interval 0: only the final one). */
void intake_persist_start(intake_persist_t *ps);

/* A new interval (reload); the next snapshot comes one interval from now. */
void intake_persist_set_interval(intake_persist_t *ps, uint64_t interval_ms);

/* True while a snapshot is exporting the tables: the dedup sweep must not run. */
int intake_persist_scanning(const intake_persist_t *ps);

/* Stops the periodic snapshots and writes the final one, synchronously on the loop thread (the
 * daemon is stopping: nothing else to serve); when a periodic snapshot's worker step is in
 * flight, that snapshot is abandoned and the final one is written when the step returns. The
 * loop must run afterwards (close callbacks, that step). Every committed key counts: call it
 * after the last job completed. */
void intake_persist_close(intake_persist_t *ps);

/* Frees everything, after close() and after the loop ran (or without start()). */
void intake_persist_destroy(intake_persist_t *ps);

void intake_persist_stats(const intake_persist_t *ps, intake_snapshot_stats_t *out);

#endif
