/* Persistence of the convergence state: the episodes of every converged rule are written at
 * shutdown to "<dedup.snapshot_path>.converge" and loaded at start (converge/snapshot.h has the
 * format), so a restart (SIGTERM, start) neither repeats a "first" record for an alarm that
 * keeps repeating nor loses the summary of an episode that was open. One setting for operators:
 * the file sits next to the dedup snapshot and exists when that one does.
 *
 * Only at shutdown, not periodically: writing 100k episodes (last events of ~430 bytes) takes
 * the loop ~0.1 s (tests/unit/test_converge_snapshot.c --bench), a stall a periodic snapshot
 * would have to move to a worker the way pipeline/persist.c does for dedup. After a crash
 * (SIGKILL, OOM) the episodes are lost as before: each repeating alarm opens a new episode. */
#ifndef INTAKE_PIPELINE_CONVERGE_PERSIST_H
#define INTAKE_PIPELINE_CONVERGE_PERSIST_H

#include <stddef.h>
#include <stdint.h>

#include "converge/snapshot.h"

/* Counters of the convergence snapshot; all zero when dedup.snapshot_path is unset. */
typedef struct {
  uint64_t loaded_episodes;    /* episodes loaded at start */
  uint64_t loaded_expired;     /* of those, already over at start (the first scans close them) */
  uint64_t skipped_episodes;   /* in the file, not loaded: rule gone, key changed, refused */
  uint64_t load_errors;        /* 1 when the file found at start was unusable (ignored) */
  uint64_t written;            /* snapshots written (the one at shutdown) */
  uint64_t failed;             /* snapshots that failed (the previous file stays) */
  uint64_t last_ms;            /* duration of the last write or of the load */
  uint64_t last_episodes;      /* episodes in the last snapshot written */
  uint64_t last_bytes;         /* its file size */
} intake_converge_snapshot_stats_t;

/* "<dedup_path>.converge" into out[0..len); -ENAMETOOLONG when it does not fit, else 0. */
int intake_converge_persist_path(const char *dedup_path, char *out, size_t len);

/* Loads `path` into the targets (fresh tables) and logs what it found: the episodes loaded, the
 * rules skipped and why, the snapshot's age; or why it was unusable (then it is counted, renamed
 * to "<path>.corrupt" when its content is invalid, and ignored: start never fails on it). A
 * temp file left by a crash mid-write is removed. `now_ms` is the tables' clock, the wall clock
 * in intaked. */
void intake_converge_persist_load(const char *path, const intake_converge_target_t *targets,
                                  size_t n, int64_t now_ms, intake_converge_snapshot_stats_t *st);

/* Writes the snapshot (synchronously: the daemon is stopping) and logs it; a failure is logged
 * and counted and leaves the previous file in place. */
void intake_converge_persist_save(const char *path, const intake_converge_target_t *targets,
                                  size_t n, int64_t now_ms, intake_converge_snapshot_stats_t *st);

#endif
