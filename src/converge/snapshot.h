/* Convergence snapshots: the episodes held by every converged rule, saved at shutdown and loaded
 * at start, so that a restart neither opens a second episode (a second "first" record) for an
 * alarm that keeps repeating nor loses the summary of one that was open.
 *
 * File format, version 1 (all integers little-endian):
 *
 *   offset  size  field
 *        0     8  magic "INTKCVS\n"
 *        8     4  version (1)
 *       12     4  header size (80)
 *       16     8  created_ms: Unix ms (wall clock) when written; every time in the content is
 *                 wall-clock ms, converted from and to the table's clock by writer and loader
 *       24     8  rules: rule sections in the content
 *       32     8  episodes: episode records, all rules together
 *       40     8  content bytes: the size of the decompressed content
 *       48     8  payload bytes: the zstd frame that follows the header, to the end of the file
 *       56     8  content checksum: XXH64 (seed 0) of the decompressed content
 *       64     8  payload checksum: XXH64 (seed 0) of the payload bytes as stored
 *       72     8  header checksum: XXH64 (seed 0) of bytes 0..71
 *       80        payload: one zstd frame (with its own checksum) of the content, which is
 *                 `rules` sections, each a rule record followed by its episode records:
 *                   rule    {name_len u32 (1..64), key_id u64, episodes u64, name}  20 + name_len
 *                   episode {hash u64, fp u64, first_ms i64, last_ms i64, expires_ms i64,
 *                            next_summary_ms i64, flap_start_ms i64, repeats u32,
 *                            flap_toggles u16, state u8, last_clear u8,
 *                            last_len u32 (<= 65536), last: the latest event}  68 + last_len
 *
 * A rule is matched by name. key_id is intake_converge_key_id() of the table that wrote it (key
 * fields and attribute names): when the rule is gone (or lost `converge`) or its key_id differs,
 * its episodes are skipped and counted, never matched against keys computed another way. Other
 * settings (window, flap damping, summary_every) may change: the saved expiry times stand, and
 * the new settings apply from the next event, as on a reload that keeps the table.
 *
 * Episodes of a section are in age order, oldest first, and loaded in that order: the table gets
 * its eviction order back, and when it is smaller than what was saved the oldest are closed
 * (EVICTED, with a summary) as they would have been live. An episode whose time ran out while
 * intaked was down is loaded as it was and closed by the table's next scan (EXPIRED, with its
 * summary; within ~0.5 s of start), by the same code that closes every other one: each summary
 * is emitted once, by the instance that holds the episode.
 *
 * A written file is complete or absent: "<path>.tmp", fsync, rename over <path>, fsync of the
 * directory. A damaged file (truncated, flipped bytes, another format, sizes that lie) is
 * rejected whole before one episode is loaded: the header checksum, the sizes (exactly header +
 * payload bytes), a read of the payload against its checksum, then a pass that decompresses it
 * through fixed buffers and checks every record (lengths, states, that each saved event parses)
 * and the content's size and checksum; only then a second pass imports. Memory stays bounded
 * (~0.5 MiB) whatever the file says. */
#ifndef INTAKE_CONVERGE_SNAPSHOT_H
#define INTAKE_CONVERGE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "converge/converge.h"

#define INTAKE_CONVERGE_SNAPSHOT_VERSION 1u
#define INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES 80u
#define INTAKE_CONVERGE_SNAPSHOT_MAX_NAME 64u      /* routes.rules[].name's bound */
#define INTAKE_CONVERGE_SNAPSHOT_MAX_EVENT 65536u  /* converge.max_event_bytes's bound */

/* A converged rule: its name and table (NULL: none, nothing saved or loaded for it). */
typedef struct {
  const char *name;
  intake_converge_t *c;
} intake_converge_target_t;

/* What a write or a load did. */
typedef struct {
  uint64_t rules;              /* rule sections written / in the file */
  uint64_t episodes;           /* episode records written / in the file */
  uint64_t bytes;              /* file size */
  uint64_t created_ms;         /* the file's creation time (Unix ms) */
  uint64_t loaded;             /* load: episodes imported */
  uint64_t expired;            /* load: of those, open ones already past their time (the next
                                  scan closes them, EXPIRED) */
  uint64_t skipped_gone;       /* load: episodes of rules not configured (or without converge) */
  uint64_t skipped_changed;    /* load: episodes of rules whose key_id differs */
  uint64_t refused;            /* load: episodes a table refused (over its max_event_bytes, or a
                                  key it already held) */
  uint64_t duration_ms;        /* wall time of the whole write or load */
} intake_converge_snapshot_info_t;

/* Why a rule's saved episodes were skipped. */
typedef enum {
  INTAKE_CONVERGE_SKIP_GONE = 1,    /* no converged rule of that name */
  INTAKE_CONVERGE_SKIP_CHANGED = 2, /* its key fields or attributes changed */
} intake_converge_skip_t;

/* Called once per skipped rule section during a load (for the log); `name` is valid during the
 * call only. */
typedef void (*intake_converge_skip_cb)(void *ctx, const char *name, uint64_t episodes,
                                        intake_converge_skip_t why);

/* Writes the episodes of every target with a table to `path` (atomically, see above), times
 * converted from the tables' clock to the wall clock: t - clock_now_ms + wall_now_ms. Fills
 * *info. Returns 0 or a negative errno (-ENAMETOOLONG, an open/write/fsync/rename error, -EIO
 * when zstd fails, -ENOMEM, -EINVAL for a name over 64 bytes); the temp file is removed on error
 * and <path> is then untouched (unless only the directory fsync failed: the file is in place).
 * No state changes. Blocks for the whole write. */
int intake_converge_snapshot_write(const char *path, const intake_converge_target_t *targets,
                                   size_t n, int64_t clock_now_ms, int64_t wall_now_ms,
                                   intake_converge_snapshot_info_t *info);

/* Loads `path` into the targets (normally fresh tables), by rule name, times converted from
 * the wall clock to the tables' clock: t - wall_now_ms + clock_now_ms. Importing may emit
 * summaries (EVICTED) through the tables' callbacks when a table is smaller than what was saved.
 * `skip` may be NULL. Returns 0; -ENOENT when there is no file (not an error: a first start); or
 * another negative errno with a one-line reason in err[0..errlen): -EINVAL for a file that is not
 * a valid snapshot (nothing was loaded), -EIO or an open/read error, -ENOMEM. */
int intake_converge_snapshot_load(const char *path, const intake_converge_target_t *targets,
                                  size_t n, int64_t clock_now_ms, int64_t wall_now_ms,
                                  intake_converge_skip_cb skip, void *skip_ctx,
                                  intake_converge_snapshot_info_t *info, char *err,
                                  size_t errlen);

#endif
