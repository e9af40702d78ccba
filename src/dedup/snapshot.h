/* Dedup snapshots: the committed keys of both dedup tables saved to a file and loaded at start,
 * so that a restarted intaked still knows, within the window, what it already delivered.
 *
 * File format, version 2 (all integers little-endian):
 *
 *   offset  size  field
 *        0     8  magic "INTKDDS\n"
 *        8     4  version (1)
 *       12     4  header size (72)
 *       16     8  created_ms: Unix ms when the state was taken (the keys are as of then)
 *       24     8  window_ms of the deduper that wrote it (informative: the loader's own window
 *                 decides what has expired)
 *       32     8  keys: records in the event-id section
 *       40     8  sources: records in the sequence-window section
 *       48     8  payload bytes: the zstd frame that follows the header, to the end of the file
 *       56     8  content checksum: XXH64 (seed 0) of the decompressed content
 *       64     8  payload checksum: XXH64 (seed 0) of the payload bytes as stored
 *       72     8  header checksum: XXH64 (seed 0) of bytes 0..71
 *       80        payload: one zstd frame (with its own checksum) of the content:
 *                   keys x    {hi u64, lo u32, tick u32}                       16 bytes
 *                     (lo: key bits 0..5, the rest 0; see below)
 *                   sources x {hi u64, lo u32, tick u32, top u64, bits u64}     32 bytes
 *
 * Versions. 2 (2026-11-28) has version 1's layout, but the event-id table keeps 70 bits of a
 * key (64 + 6: dedup.c) instead of 96, so a key record's lo carries only bits 0..5. Version 1
 * files still load (their lo has all 32 bits; the table takes bits 0..5), so an upgrade keeps
 * its dedup state. An intaked that reads only version 1 refuses version 2 as an unsupported
 * version instead of loading keys whose lo it would never match. Other versions are refused.
 *
 * Only committed keys and windows live at created_ms are written; keys in flight are in
 * neither table (they are remembered only once Kafka confirms them), so they are never saved.
 * The records carry their fingerprints and commit ticks, not slot positions: the loader
 * re-inserts each one by fingerprint, so the table it loads into may have any capacity.
 *
 * A written file is complete or absent: it goes to "<path>.tmp", is fsync'ed, renamed over
 * <path>, and the directory is fsync'ed. A file that is damaged anyway (truncated, bytes
 * flipped, another format, sizes that lie, a zstd bomb) is rejected as a whole before one key
 * is loaded: the header checksum first, then the sizes (the file must be exactly header +
 * payload; the content must be keys x 16 + sources x 32 bytes and at most 64x the payload, as
 * random fingerprints do not compress), then a first pass that checks the payload's checksum
 * and decompresses it through a fixed buffer, which must produce exactly the declared content
 * with the right checksum, and only then a second pass that inserts. (Both checksums: the
 * payload's catches a change that zstd would decode to the same content, e.g. a larger window
 * in the frame header; the content's catches everything else end to end.) Memory stays bounded
 * whatever the file says. */
#ifndef INTAKE_DEDUP_SNAPSHOT_H
#define INTAKE_DEDUP_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "dedup/dedup.h"

#define INTAKE_SNAPSHOT_VERSION 2u     /* written; 1 and 2 are read */
#define INTAKE_SNAPSHOT_VERSION_MIN 1u /* the oldest version read */
#define INTAKE_SNAPSHOT_HEADER_BYTES 80u

/* A snapshot being written: a static zstd context, buffers and the open temp file (~1.6 MiB,
 * allocated once by create; writing allocates nothing). One snapshot at a time; reusable. */
typedef struct intake_snapshot_writer intake_snapshot_writer_t;

/* What a write or a load did. */
typedef struct {
  uint64_t keys;               /* event-id records written / found in the file */
  uint64_t sources;            /* sequence-window records written / found in the file */
  uint64_t bytes;              /* file size */
  uint64_t created_ms;         /* the file's creation time */
  uint64_t window_ms;          /* the window of the deduper that wrote it */
  uint64_t keys_loaded;        /* keys stored by the load (the others had expired) */
  uint64_t sources_loaded;     /* windows stored by the load */
  uint64_t duration_ms;        /* wall time of the load, or of the whole write */
} intake_snapshot_info_t;

/* Returns NULL when out of memory. */
intake_snapshot_writer_t *intake_snapshot_writer_create(void);
/* Cancels a snapshot in progress (its temp file is removed) and frees everything. */
void intake_snapshot_writer_destroy(intake_snapshot_writer_t *w);

/* Incremental writing, for a snapshot taken a chunk at a time: the daemon exports records on its
 * loop thread (intake_dedup_export_*) and hands each chunk to a worker thread for these calls.
 *
 *   begin(w, path, created_ms, window_ms)   creates "<path>.tmp"
 *   add_keys(w, recs, n) ..., then add_sources(w, recs, n) ...   encode, hash, compress, write
 *   finish(w, info)                         header, fsync, rename over <path>, fsync the dir
 *   cancel(w)                               gives up: closes and removes the temp file
 *
 * Each returns 0 or a negative errno (-ENAMETOOLONG, an open/write/fsync/rename error, -EIO when
 * zstd fails, -EINVAL for calls out of order). After an error, call cancel(); <path> is never
 * touched by a snapshot that did not finish. Keys must all come before sources. */
int intake_snapshot_begin(intake_snapshot_writer_t *w, const char *path, uint64_t created_ms,
                          uint64_t window_ms);
int intake_snapshot_add_keys(intake_snapshot_writer_t *w, const intake_dedup_key_rec_t *recs,
                             size_t n);
int intake_snapshot_add_sources(intake_snapshot_writer_t *w,
                                const intake_dedup_source_rec_t *recs, size_t n);
int intake_snapshot_finish(intake_snapshot_writer_t *w, intake_snapshot_info_t *info);
void intake_snapshot_cancel(intake_snapshot_writer_t *w);

/* The whole thing in one call: the live entries of `d` at now_ms, to `path`; fills *info.
 * Returns as above (the temp file is already removed on error). Blocks for the whole write:
 * ~80 ms for 1M keys in 320 MiB of tables, fsync included; for shutdown and tests. */
int intake_dedup_snapshot_write(const intake_dedup_t *d, const char *path, uint64_t now_ms,
                                intake_snapshot_writer_t *w, intake_snapshot_info_t *info);

/* Loads the snapshot at `path` into `d` (normally a fresh deduper): every record still inside
 * d's window at now_ms is imported (intake_dedup_import_key/_source), the rest skipped. Fills
 * *info. Returns 0; -ENOENT when there is no file (a first start: not an error); or another
 * negative errno with a one-line reason in err[0..errlen): -EINVAL for a file that is not a
 * valid snapshot (nothing was loaded: `d` is unchanged), -EIO or an open/read error, -ENOMEM.
 * Never crashes or loads part of a bad file, whatever its bytes. */
int intake_dedup_snapshot_load(intake_dedup_t *d, const char *path, uint64_t now_ms,
                               intake_snapshot_info_t *info, char *err, size_t errlen);

#endif
