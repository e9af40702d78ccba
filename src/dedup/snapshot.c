/* Dedup snapshots: format and checks in snapshot.h.
 *
 * Writing streams records through fixed buffers: encode a chunk, hash it, compress it, write
 * what zstd produced; the header goes last, with pwrite() at offset 0, since its counts and
 * checksums are known only at the end. Everything is allocated by
 * intake_snapshot_writer_create(), the zstd context included (a static one, over a
 * preallocated workspace), so a snapshot allocates nothing.
 *
 * zstd level 1: the content is mostly random fingerprints (12 of every 16 bytes), which no
 * level compresses; the ticks and sequence bitmaps are what shrinks. 1M keys + 167k sources
 * came to 14.6 bytes a record. */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_initStaticCCtx, ZSTD_estimateCStreamSize */
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "dedup/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"

static const unsigned char MAGIC[8] = {'I', 'N', 'T', 'K', 'D', 'D', 'S', '\n'};

#define KEY_BYTES 16u
#define SRC_BYTES 32u
#define LEVEL 1
#define CHUNK 4096u                  /* records encoded per compress call */
#define MAX_KEYS (1ull << 32)        /* 64 GiB of 16-byte slots: the largest dedup.memory */
#define MAX_SOURCES (1ull << 31)     /* 64 GiB of 32-byte slots */
#define MAX_RATIO 64u                /* content / payload; real snapshots are below 2 */
#define DEC_WINDOW_LOG_MAX 24        /* the writer's level 1 frames use 2^19; refuse > 16 MiB */
#define READ_BYTES (256u << 10)

struct intake_snapshot_writer {
  ZSTD_CCtx *cctx;                   /* static, inside ws */
  void *ws;                          /* its workspace */
  unsigned char *in;                 /* encoded records, CHUNK x SRC_BYTES */
  unsigned char *out;                /* compressed bytes, out_cap */
  size_t out_cap;
  int fd;                            /* the temp file; -1 when no snapshot is in progress */
  int failed;                        /* a call failed: only cancel() is accepted */
  char path[PATH_MAX];               /* the snapshot's path */
  char tmp[PATH_MAX];                /* path + ".tmp" */
  uint64_t created_ms, window_ms;
  uint64_t keys, sources;            /* records added */
  uint64_t payload;                  /* compressed bytes written */
  uint64_t t0;                       /* monotonic ms at begin */
  XXH64_state_t hash;                /* of the content */
  XXH64_state_t phash;               /* of the payload */
  union {
    intake_dedup_key_rec_t keys[CHUNK];
    intake_dedup_source_rec_t sources[CHUNK];
  } recs;                            /* one exported chunk, for intake_dedup_snapshot_write() */
};

static void encode_key(unsigned char *p, const intake_dedup_key_rec_t *k) {
  intake_le_put64(p, k->hi);
  intake_le_put32(p + 8, k->lo);
  intake_le_put32(p + 12, k->tick);
}
static void decode_key(const unsigned char *p, intake_dedup_key_rec_t *k) {
  k->hi = intake_le_get64(p);
  k->lo = intake_le_get32(p + 8);
  k->tick = intake_le_get32(p + 12);
}
static void encode_source(unsigned char *p, const intake_dedup_source_rec_t *s) {
  intake_le_put64(p, s->hi);
  intake_le_put32(p + 8, s->lo);
  intake_le_put32(p + 12, s->tick);
  intake_le_put64(p + 16, s->top);
  intake_le_put64(p + 24, s->bits);
}
static void decode_source(const unsigned char *p, intake_dedup_source_rec_t *s) {
  s->hi = intake_le_get64(p);
  s->lo = intake_le_get32(p + 8);
  s->tick = intake_le_get32(p + 12);
  s->top = intake_le_get64(p + 16);
  s->bits = intake_le_get64(p + 24);
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe */
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- writing ------------------------------------------------------------------------------- */

intake_snapshot_writer_t *intake_snapshot_writer_create(void) {
  intake_snapshot_writer_t *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  w->fd = -1;
  size_t ws = ZSTD_estimateCStreamSize(LEVEL);
  w->ws = aligned_alloc(64, (ws + 63) & ~(size_t)63);
  w->out_cap = ZSTD_CStreamOutSize();
  w->in = malloc(CHUNK * SRC_BYTES);
  w->out = malloc(w->out_cap);
  if (!w->ws || !w->in || !w->out)
    goto fail;
  w->cctx = ZSTD_initStaticCCtx(w->ws, ws);
  if (!w->cctx)
    goto fail;
  return w;
fail:
  intake_snapshot_writer_destroy(w);
  return NULL;
}

void intake_snapshot_writer_destroy(intake_snapshot_writer_t *w) {
  if (!w)
    return;
  intake_snapshot_cancel(w);
  free(w->ws); /* the static context lives inside it */
  free(w->in);
  free(w->out);
  free(w);
}

/* Hashes and compresses in[0..n); with `end`, finishes the frame. Writes whatever zstd gives. */
static int compress_out(intake_snapshot_writer_t *w, const unsigned char *in, size_t n, int end) {
  if (n)
    XXH64_update(&w->hash, in, n);
  ZSTD_inBuffer ib = {in, n, 0};
  for (;;) {
    ZSTD_outBuffer ob = {w->out, w->out_cap, 0};
    size_t left = ZSTD_compressStream2(w->cctx, &ob, &ib, end ? ZSTD_e_end : ZSTD_e_continue);
    if (ZSTD_isError(left))
      return -EIO;
    int rc = intake_write_all(w->fd, w->out, ob.pos);
    if (rc < 0)
      return rc;
    XXH64_update(&w->phash, w->out, ob.pos);
    w->payload += ob.pos;
    if (end ? left == 0 : ib.pos == ib.size)
      return 0;
  }
}

/* Records a failure: later calls but cancel() refuse. */
static int fail_with(intake_snapshot_writer_t *w, int rc) {
  w->failed = 1;
  return rc;
}

int intake_snapshot_begin(intake_snapshot_writer_t *w, const char *path, uint64_t created_ms,
                          uint64_t window_ms) {
  if (w->fd >= 0)
    return -EINVAL;
  size_t len = strlen(path);
  if (len == 0 || len + 5 > sizeof w->tmp)
    return -ENAMETOOLONG;
  memcpy(w->path, path, len + 1);
  memcpy(w->tmp, path, len);
  memcpy(w->tmp + len, ".tmp", 5);
  w->t0 = mono_ms();
  w->failed = 0;
  w->created_ms = created_ms;
  w->window_ms = window_ms;
  w->keys = w->sources = w->payload = 0;
  XXH64_reset(&w->hash, 0);
  XXH64_reset(&w->phash, 0);
  ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_and_parameters);
  if (ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, LEVEL)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1)))
    return -EIO;
  w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (w->fd < 0)
    return -errno;
  unsigned char hdr[INTAKE_SNAPSHOT_HEADER_BYTES];
  memset(hdr, 0, sizeof hdr); /* zeroed until the counts are known: never valid meanwhile */
  int rc = intake_write_all(w->fd, hdr, sizeof hdr);
  return rc < 0 ? fail_with(w, rc) : 0;
}

int intake_snapshot_add_keys(intake_snapshot_writer_t *w, const intake_dedup_key_rec_t *recs,
                             size_t n) {
  if (w->fd < 0 || w->failed || w->sources)
    return -EINVAL;
  while (n > 0) {
    size_t k = n < CHUNK ? n : CHUNK;
    for (size_t i = 0; i < k; i++)
      encode_key(w->in + i * KEY_BYTES, &recs[i]);
    int rc = compress_out(w, w->in, k * KEY_BYTES, 0);
    if (rc < 0)
      return fail_with(w, rc);
    w->keys += k;
    recs += k;
    n -= k;
  }
  return 0;
}

int intake_snapshot_add_sources(intake_snapshot_writer_t *w,
                                const intake_dedup_source_rec_t *recs, size_t n) {
  if (w->fd < 0 || w->failed)
    return -EINVAL;
  while (n > 0) {
    size_t k = n < CHUNK ? n : CHUNK;
    for (size_t i = 0; i < k; i++)
      encode_source(w->in + i * SRC_BYTES, &recs[i]);
    int rc = compress_out(w, w->in, k * SRC_BYTES, 0);
    if (rc < 0)
      return fail_with(w, rc);
    w->sources += k;
    recs += k;
    n -= k;
  }
  return 0;
}

int intake_snapshot_finish(intake_snapshot_writer_t *w, intake_snapshot_info_t *info) {
  if (w->fd < 0 || w->failed)
    return -EINVAL;
  int rc = compress_out(w, NULL, 0, 1);
  if (rc < 0)
    return fail_with(w, rc);
  unsigned char hdr[INTAKE_SNAPSHOT_HEADER_BYTES];
  memcpy(hdr, MAGIC, 8);
  intake_le_put32(hdr + 8, INTAKE_SNAPSHOT_VERSION);
  intake_le_put32(hdr + 12, INTAKE_SNAPSHOT_HEADER_BYTES);
  intake_le_put64(hdr + 16, w->created_ms);
  intake_le_put64(hdr + 24, w->window_ms);
  intake_le_put64(hdr + 32, w->keys);
  intake_le_put64(hdr + 40, w->sources);
  intake_le_put64(hdr + 48, w->payload);
  intake_le_put64(hdr + 56, XXH64_digest(&w->hash));
  intake_le_put64(hdr + 64, XXH64_digest(&w->phash));
  intake_le_put64(hdr + 72, XXH64(hdr, 72, 0));
  for (size_t off = 0; off < sizeof hdr;) {
    ssize_t k = pwrite(w->fd, hdr + off, sizeof hdr - off, (off_t)off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return fail_with(w, k < 0 ? -errno : -EIO);
    off += (size_t)k;
  }
  if (fsync(w->fd) < 0)
    return fail_with(w, -errno);
  rc = close(w->fd);
  w->fd = -1;
  if (rc < 0 || rename(w->tmp, w->path) < 0) {
    rc = -errno;
    unlink(w->tmp);
    return rc;
  }
  /* The rename is durable once the directory is: fsync it. On failure the file is in place;
   * only its durability is in doubt. */
  if ((rc = intake_fsync_parent_dir(w->path)) < 0)
    return rc;
  memset(info, 0, sizeof *info);
  info->keys = w->keys;
  info->sources = w->sources;
  info->bytes = INTAKE_SNAPSHOT_HEADER_BYTES + w->payload;
  info->created_ms = w->created_ms;
  info->window_ms = w->window_ms;
  info->duration_ms = mono_ms() - w->t0;
  return 0;
}

void intake_snapshot_cancel(intake_snapshot_writer_t *w) {
  if (w->fd < 0)
    return;
  close(w->fd);
  w->fd = -1;
  unlink(w->tmp);
}

int intake_dedup_snapshot_write(const intake_dedup_t *d, const char *path, uint64_t now_ms,
                                intake_snapshot_writer_t *w, intake_snapshot_info_t *info) {
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  int rc = intake_snapshot_begin(w, path, now_ms, intake_dedup_window_ms(d));
  for (uint64_t pos = 0; rc == 0 && pos < st.capacity;) {
    size_t n = intake_dedup_export_keys(d, now_ms, &pos, w->recs.keys, CHUNK);
    rc = intake_snapshot_add_keys(w, w->recs.keys, n);
  }
  for (uint64_t pos = 0; rc == 0 && pos < st.source_capacity;) {
    size_t n = intake_dedup_export_sources(d, now_ms, &pos, w->recs.sources, CHUNK);
    rc = intake_snapshot_add_sources(w, w->recs.sources, n);
  }
  if (rc == 0)
    rc = intake_snapshot_finish(w, info);
  if (rc < 0)
    intake_snapshot_cancel(w);
  return rc;
}

/* ---- loading ------------------------------------------------------------------------------- */

typedef struct {
  intake_dedup_t *d;                 /* NULL: verify only */
  uint64_t now_ms;
  uint64_t keys, sources;            /* records expected in each section */
  uint64_t seen;                     /* records passed so far, both sections */
  uint64_t keys_loaded, sources_loaded;
  int bad_record;                    /* a record with hi == 0 */
} sink_t;

/* Consumes whole records from buf[0..n); returns bytes consumed. */
static size_t take_records(sink_t *k, const unsigned char *buf, size_t n) {
  size_t used = 0;
  for (;;) {
    if (k->seen < k->keys) {
      if (n - used < KEY_BYTES)
        return used;
      intake_dedup_key_rec_t r;
      decode_key(buf + used, &r);
      used += KEY_BYTES;
      if (!r.hi)
        k->bad_record = 1;
      else if (k->d)
        k->keys_loaded += (uint64_t)intake_dedup_import_key(k->d, &r, k->now_ms);
    } else if (k->seen < k->keys + k->sources) {
      if (n - used < SRC_BYTES)
        return used;
      intake_dedup_source_rec_t r;
      decode_source(buf + used, &r);
      used += SRC_BYTES;
      if (!r.hi)
        k->bad_record = 1;
      else if (k->d)
        k->sources_loaded += (uint64_t)intake_dedup_import_source(k->d, &r, k->now_ms);
    } else {
      return used; /* bytes beyond the records: the caller counts them as too many */
    }
    k->seen++;
  }
}

#define FAIL(code, ...)                                                                           \
  do {                                                                                            \
    snprintf(err, errlen, __VA_ARGS__);                                                           \
    rc = (code);                                                                                  \
    goto out;                                                                                     \
  } while (0)

/* One pass over the payload: decompresses it through a fixed buffer into `k`, checking that
 * it is one complete zstd frame that yields exactly `content` bytes hashing to `sum`.
 * Returns 0 or a negative errno with err set. */
static int pass(int fd, uint64_t payload, uint64_t content, uint64_t sum, uint64_t psum,
                sink_t *k, ZSTD_DCtx *dctx, unsigned char *in, unsigned char *out, size_t out_cap,
                char *err, size_t errlen) {
  int rc = 0;
  XXH64_state_t hash, phash;
  XXH64_reset(&hash, 0);
  XXH64_reset(&phash, 0);
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
  uint64_t off = INTAKE_SNAPSHOT_HEADER_BYTES, end = off + payload, produced = 0;
  size_t carry = 0, last = 1; /* last: ZSTD_decompressStream's hint, 0 once the frame is done */
  while (off < end) {
    size_t want = end - off < READ_BYTES ? (size_t)(end - off) : READ_BYTES;
    ssize_t got = pread(fd, in, want, (off_t)off);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      FAIL(-errno, "read: %s", strerror(errno));
    if (got == 0)
      FAIL(-EINVAL, "truncated: the file ended at byte %llu of %llu", (unsigned long long)off,
           (unsigned long long)end);
    off += (uint64_t)got;
    XXH64_update(&phash, in, (size_t)got);
    if (off == end && XXH64_digest(&phash) != psum)
      FAIL(-EINVAL, "payload checksum mismatch");
    ZSTD_inBuffer ib = {in, (size_t)got, 0};
    while (ib.pos < ib.size) {
      if (last == 0)
        FAIL(-EINVAL, "bytes after the end of the zstd frame");
      ZSTD_outBuffer ob = {out + carry, out_cap - carry, 0};
      last = ZSTD_decompressStream(dctx, &ob, &ib);
      if (ZSTD_isError(last))
        FAIL(-EINVAL, "zstd: %s", ZSTD_getErrorName(last));
      produced += ob.pos;
      if (produced > content)
        FAIL(-EINVAL, "content larger than the %llu bytes the header declares",
             (unsigned long long)content);
      XXH64_update(&hash, out + carry, ob.pos);
      size_t have = carry + ob.pos;
      size_t used = take_records(k, out, have);
      carry = have - used;
      memmove(out, out + used, carry);
    }
  }
  /* zstd may hold decoded bytes back until asked again with no new input. */
  while (last != 0) {
    ZSTD_inBuffer ib = {in, 0, 0};
    ZSTD_outBuffer ob = {out + carry, out_cap - carry, 0};
    last = ZSTD_decompressStream(dctx, &ob, &ib);
    if (ZSTD_isError(last))
      FAIL(-EINVAL, "zstd: %s", ZSTD_getErrorName(last));
    if (ob.pos == 0 && last != 0)
      FAIL(-EINVAL, "truncated: the zstd frame is incomplete");
    produced += ob.pos;
    if (produced > content)
      FAIL(-EINVAL, "content larger than the %llu bytes the header declares",
           (unsigned long long)content);
    XXH64_update(&hash, out + carry, ob.pos);
    size_t have = carry + ob.pos;
    size_t used = take_records(k, out, have);
    carry = have - used;
    memmove(out, out + used, carry);
  }
  if (produced != content)
    FAIL(-EINVAL, "content is %llu bytes, the header declares %llu",
         (unsigned long long)produced, (unsigned long long)content);
  if (XXH64_digest(&hash) != sum)
    FAIL(-EINVAL, "content checksum mismatch");
  if (k->bad_record)
    FAIL(-EINVAL, "a record has an empty fingerprint");
out:
  return rc;
}

int intake_dedup_snapshot_load(intake_dedup_t *d, const char *path, uint64_t now_ms,
                               intake_snapshot_info_t *info, char *err, size_t errlen) {
  uint64_t t0 = mono_ms();
  int rc = 0;
  ZSTD_DCtx *dctx = NULL;
  unsigned char *in = NULL, *out = NULL;
  memset(info, 0, sizeof *info);
  err[0] = '\0';
  int fd = intake_open_regular(path, &info->bytes, err, errlen);
  if (fd < 0)
    return fd;

  unsigned char hdr[INTAKE_SNAPSHOT_HEADER_BYTES];
  size_t have = 0;
  while (have < sizeof hdr) {
    ssize_t got = pread(fd, hdr + have, sizeof hdr - have, (off_t)have);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      FAIL(-errno, "read: %s", strerror(errno));
    if (got == 0)
      break;
    have += (size_t)got;
  }
  if (have < 8 || memcmp(hdr, MAGIC, 8) != 0)
    FAIL(-EINVAL, "bad magic: not a dedup snapshot (%llu bytes)", (unsigned long long)info->bytes);
  if (have < 12)
    FAIL(-EINVAL, "truncated: %llu bytes, less than a header", (unsigned long long)info->bytes);
  uint32_t version = intake_le_get32(hdr + 8);
  if (version < INTAKE_SNAPSHOT_VERSION_MIN || version > INTAKE_SNAPSHOT_VERSION)
    FAIL(-EINVAL, "unsupported version %u (this intaked reads %u to %u)", version,
         INTAKE_SNAPSHOT_VERSION_MIN, INTAKE_SNAPSHOT_VERSION);
  if (have < sizeof hdr)
    FAIL(-EINVAL, "truncated: %llu bytes, less than a header", (unsigned long long)info->bytes);
  if (intake_le_get32(hdr + 12) != INTAKE_SNAPSHOT_HEADER_BYTES)
    FAIL(-EINVAL, "header size %u, expected %u", intake_le_get32(hdr + 12), INTAKE_SNAPSHOT_HEADER_BYTES);
  if (intake_le_get64(hdr + 72) != XXH64(hdr, 72, 0))
    FAIL(-EINVAL, "header checksum mismatch");
  info->created_ms = intake_le_get64(hdr + 16);
  info->window_ms = intake_le_get64(hdr + 24);
  uint64_t keys = intake_le_get64(hdr + 32), sources = intake_le_get64(hdr + 40), payload = intake_le_get64(hdr + 48);
  uint64_t sum = intake_le_get64(hdr + 56), psum = intake_le_get64(hdr + 64);
  info->keys = keys;
  info->sources = sources;
  if (keys > MAX_KEYS || sources > MAX_SOURCES)
    FAIL(-EINVAL, "implausible counts: %llu keys, %llu sources", (unsigned long long)keys,
         (unsigned long long)sources);
  uint64_t content = keys * KEY_BYTES + sources * SRC_BYTES; /* < 2^37: no overflow */
  if (payload != info->bytes - INTAKE_SNAPSHOT_HEADER_BYTES)
    FAIL(-EINVAL, "%s: the file has %llu payload bytes, the header says %llu",
         payload > info->bytes - INTAKE_SNAPSHOT_HEADER_BYTES ? "truncated"
                                                                        : "trailing bytes",
         (unsigned long long)(info->bytes - INTAKE_SNAPSHOT_HEADER_BYTES),
         (unsigned long long)payload);
  if (content > 4096 && (content - 4096) / MAX_RATIO > payload)
    FAIL(-EINVAL, "declared content of %llu bytes from %llu compressed: refused as a zstd bomb",
         (unsigned long long)content, (unsigned long long)payload);

  size_t out_cap = ZSTD_DStreamOutSize() + SRC_BYTES; /* room for a partial record's carry */
  dctx = ZSTD_createDCtx();
  in = malloc(READ_BYTES);
  out = malloc(out_cap);
  if (!dctx || !in || !out)
    FAIL(-ENOMEM, "out of memory");
  if (ZSTD_isError(ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, DEC_WINDOW_LOG_MAX)))
    FAIL(-EIO, "zstd: cannot set the window limit");

  /* Pass 1 verifies everything; pass 2 inserts. A bad file never loads half its keys. */
  sink_t check = {.keys = keys, .sources = sources};
  if ((rc = pass(fd, payload, content, sum, psum, &check, dctx, in, out, out_cap, err, errlen)) < 0)
    goto out;
  sink_t load = {.d = d, .now_ms = now_ms, .keys = keys, .sources = sources};
  if ((rc = pass(fd, payload, content, sum, psum, &load, dctx, in, out, out_cap, err, errlen)) < 0)
    goto out; /* only a read error or a file changed under us: what was loaded is valid */
  info->keys_loaded = load.keys_loaded;
  info->sources_loaded = load.sources_loaded;
  info->duration_ms = mono_ms() - t0;
out:
  ZSTD_freeDCtx(dctx);
  free(in);
  free(out);
  close(fd);
  return rc;
}
