/* Convergence snapshots: format and checks in snapshot.h.
 *
 * Writing encodes records into a fixed buffer and compresses it a buffer at a time; the header
 * goes last, with pwrite() at offset 0, once its counts and checksums are known. zstd level 1:
 * a record is 16 random bytes (hash, fp), times that share their high bytes, and the latest
 * event, whose protobuf repeats field names, types and attribute keys from one camera to the
 * next; measured in tests/unit/test_converge_snapshot.c --bench. */
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "converge/snapshot.h"

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
#include "decode/event.h"

static const unsigned char MAGIC[8] = {'I', 'N', 'T', 'K', 'C', 'V', 'S', '\n'};

#define HDR INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES
#define RULE_FIXED 20u               /* rule record without its name */
#define EP_FIXED 68u                 /* episode record without its event */
#define MAX_RECORD (EP_FIXED + INTAKE_CONVERGE_SNAPSHOT_MAX_EVENT)
#define LEVEL 1
#define ENC_BYTES (1u << 20)         /* records encoded per compress call (>= MAX_RECORD) */
#define READ_BYTES (256u << 10)
#define MAX_RULES (1ull << 20)
#define MAX_EPISODES (1ull << 32)
/* Each record holds 16 random bytes (hash and fp) that no compressor shrinks, so content /
 * payload stays below MAX_RECORD / 16 ~ 4100; refused above (a zstd bomb). */
#define MAX_RATIO 4200u
#define DEC_WINDOW_LOG_MAX 24        /* level 1 frames use far less; refuse > 16 MiB windows */

_Static_assert(ENC_BYTES >= MAX_RECORD + RULE_FIXED + INTAKE_CONVERGE_SNAPSHOT_MAX_NAME,
               "one record fits the encode buffer");

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Times are stored as two's complement u64; `shift` moves them between clocks. */
static void encode_episode(unsigned char *p, const intake_converge_episode_t *e, int64_t shift) {
  intake_le_put64(p, e->hash);
  intake_le_put64(p + 8, e->fp);
  intake_le_put64(p + 16, (uint64_t)(e->first_ms + shift));
  intake_le_put64(p + 24, (uint64_t)(e->last_ms + shift));
  intake_le_put64(p + 32, (uint64_t)(e->expires_ms + shift));
  intake_le_put64(p + 40, (uint64_t)(e->next_summary_ms + shift));
  intake_le_put64(p + 48, (uint64_t)(e->flap_start_ms + shift));
  intake_le_put32(p + 56, e->repeats);
  p[60] = (unsigned char)e->flap_toggles;
  p[61] = (unsigned char)(e->flap_toggles >> 8);
  p[62] = e->state;
  p[63] = e->last_clear;
  intake_le_put32(p + 64, e->last_len);
  memcpy(p + EP_FIXED, e->last, e->last_len);
}

static void decode_episode(const unsigned char *p, intake_converge_episode_t *e, int64_t shift) {
  e->hash = intake_le_get64(p);
  e->fp = intake_le_get64(p + 8);
  e->first_ms = (int64_t)intake_le_get64(p + 16) + shift;
  e->last_ms = (int64_t)intake_le_get64(p + 24) + shift;
  e->expires_ms = (int64_t)intake_le_get64(p + 32) + shift;
  e->next_summary_ms = (int64_t)intake_le_get64(p + 40) + shift;
  e->flap_start_ms = (int64_t)intake_le_get64(p + 48) + shift;
  e->repeats = intake_le_get32(p + 56);
  e->flap_toggles = (uint16_t)(p[60] | p[61] << 8);
  e->state = p[62];
  e->last_clear = p[63];
  e->last_len = intake_le_get32(p + 64);
  e->last = p + EP_FIXED;
}

/* ---- writing ------------------------------------------------------------------------------- */

typedef struct {
  int fd;
  ZSTD_CCtx *cctx;
  unsigned char *in;                 /* encoded records, ENC_BYTES */
  size_t used;                       /* bytes in `in` */
  unsigned char *out;                /* compressed bytes, out_cap */
  size_t out_cap;
  uint64_t content, payload;
  XXH64_state_t hash, phash;         /* of the content, of the payload */
  int64_t shift;                     /* clock -> wall */
  uint64_t episodes;
  int rc;                            /* first error */
} writer_t;

/* Hashes and compresses what `in` holds; with `end`, finishes the frame. */
static int flush_in(writer_t *w, int end) {
  XXH64_update(&w->hash, w->in, w->used);
  w->content += w->used;
  ZSTD_inBuffer ib = {w->in, w->used, 0};
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
      break;
  }
  w->used = 0;
  return 0;
}

/* Room for `n` more bytes in `in`, compressing what it holds when needed. */
static int reserve(writer_t *w, size_t n) {
  return w->used + n <= ENC_BYTES ? 0 : flush_in(w, 0);
}

static int add_episode(void *ctx, const intake_converge_episode_t *e) {
  writer_t *w = ctx;
  if (e->last_len > INTAKE_CONVERGE_SNAPSHOT_MAX_EVENT)
    return 0; /* never: converge.max_event_bytes is bounded by the same 64 KiB */
  if ((w->rc = reserve(w, EP_FIXED + e->last_len)) < 0)
    return w->rc;
  encode_episode(w->in + w->used, e, w->shift);
  w->used += EP_FIXED + e->last_len;
  w->episodes++;
  return 0;
}

static int count_episode(void *ctx, const intake_converge_episode_t *e) {
  if (e->last_len <= INTAKE_CONVERGE_SNAPSHOT_MAX_EVENT)
    ++*(uint64_t *)ctx;
  return 0;
}

int intake_converge_snapshot_write(const char *path, const intake_converge_target_t *targets,
                                   size_t n, int64_t clock_now_ms, int64_t wall_now_ms,
                                   intake_converge_snapshot_info_t *info) {
  uint64_t t0 = mono_ms();
  memset(info, 0, sizeof *info);
  char tmp[PATH_MAX];
  size_t len = strlen(path);
  if (len == 0 || len + 5 > sizeof tmp)
    return -ENAMETOOLONG;
  memcpy(tmp, path, len);
  memcpy(tmp + len, ".tmp", 5);
  for (size_t i = 0; i < n; i++)
    if (targets[i].c && (strlen(targets[i].name) == 0 ||
                         strlen(targets[i].name) > INTAKE_CONVERGE_SNAPSHOT_MAX_NAME))
      return -EINVAL;

  writer_t w = {.fd = -1, .shift = wall_now_ms - clock_now_ms};
  XXH64_reset(&w.hash, 0);
  XXH64_reset(&w.phash, 0);
  w.out_cap = ZSTD_CStreamOutSize();
  w.cctx = ZSTD_createCCtx();
  w.in = malloc(ENC_BYTES);
  w.out = malloc(w.out_cap);
  int rc = 0;
  uint64_t rules = 0;
  if (!w.cctx || !w.in || !w.out) {
    rc = -ENOMEM;
    goto out;
  }
  if (ZSTD_isError(ZSTD_CCtx_setParameter(w.cctx, ZSTD_c_compressionLevel, LEVEL)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(w.cctx, ZSTD_c_checksumFlag, 1))) {
    rc = -EIO;
    goto out;
  }
  if ((w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)) < 0) {
    rc = -errno;
    goto out;
  }
  unsigned char hdr[HDR];
  memset(hdr, 0, sizeof hdr); /* zeroed until the counts are known: never valid meanwhile */
  if ((rc = intake_write_all(w.fd, hdr, sizeof hdr)) < 0)
    goto out;
  for (size_t i = 0; i < n; i++) {
    const intake_converge_target_t *t = &targets[i];
    if (!t->c)
      continue;
    uint64_t count = 0; /* the section's count goes before its records */
    intake_converge_foreach(t->c, count_episode, &count);
    size_t name_len = strlen(t->name);
    if ((rc = reserve(&w, RULE_FIXED + name_len)) < 0)
      goto out;
    unsigned char *p = w.in + w.used;
    intake_le_put32(p, (uint32_t)name_len);
    intake_le_put64(p + 4, intake_converge_key_id(t->c));
    intake_le_put64(p + 12, count);
    memcpy(p + RULE_FIXED, t->name, name_len);
    w.used += RULE_FIXED + name_len;
    rules++;
    uint64_t before = w.episodes;
    if ((rc = intake_converge_foreach(t->c, add_episode, &w)) < 0)
      goto out;
    if (w.episodes - before != count) { /* never: foreach changes nothing */
      rc = -EIO;
      goto out;
    }
  }
  if ((rc = flush_in(&w, 1)) < 0)
    goto out;
  memcpy(hdr, MAGIC, 8);
  intake_le_put32(hdr + 8, INTAKE_CONVERGE_SNAPSHOT_VERSION);
  intake_le_put32(hdr + 12, HDR);
  intake_le_put64(hdr + 16, (uint64_t)wall_now_ms);
  intake_le_put64(hdr + 24, rules);
  intake_le_put64(hdr + 32, w.episodes);
  intake_le_put64(hdr + 40, w.content);
  intake_le_put64(hdr + 48, w.payload);
  intake_le_put64(hdr + 56, XXH64_digest(&w.hash));
  intake_le_put64(hdr + 64, XXH64_digest(&w.phash));
  intake_le_put64(hdr + 72, XXH64(hdr, 72, 0));
  for (size_t off = 0; off < sizeof hdr;) {
    ssize_t k = pwrite(w.fd, hdr + off, sizeof hdr - off, (off_t)off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      rc = k < 0 ? -errno : -EIO;
      goto out;
    }
    off += (size_t)k;
  }
  if (fsync(w.fd) < 0) {
    rc = -errno;
    goto out;
  }
  rc = close(w.fd);
  w.fd = -1;
  if (rc < 0 || rename(tmp, path) < 0) {
    rc = -errno;
    goto out;
  }
  info->rules = rules;
  info->episodes = w.episodes;
  info->bytes = HDR + w.payload;
  info->created_ms = (uint64_t)wall_now_ms;
  /* The rename is durable once the directory is; if that fsync fails the file is in place. */
  rc = intake_fsync_parent_dir(path);
  info->duration_ms = mono_ms() - t0;
  ZSTD_freeCCtx(w.cctx);
  free(w.in);
  free(w.out);
  return rc;
out:
  if (w.fd >= 0)
    close(w.fd);
  if (rc < 0)
    unlink(tmp);
  ZSTD_freeCCtx(w.cctx);
  free(w.in);
  free(w.out);
  return rc;
}

/* ---- loading ------------------------------------------------------------------------------- */

typedef struct {
  const intake_converge_target_t *targets; /* NULL: verify only */
  size_t n_targets;
  int64_t shift;                     /* wall -> clock */
  int64_t clock_now;
  intake_converge_skip_cb skip;
  void *skip_ctx;
  uint64_t rules, episodes;          /* expected, from the header */
  uint64_t rules_seen, episodes_seen;
  uint64_t left;                     /* episodes left in the current section */
  intake_converge_t *cur;            /* the current section's table; NULL: skipped */
  intake_converge_snapshot_info_t *info;
  const char *bad;                   /* why a record is invalid */
} sink_t;

static const intake_converge_target_t *find_target(const sink_t *k, const unsigned char *name,
                                                   size_t len) {
  for (size_t i = 0; i < k->n_targets; i++)
    if (k->targets[i].c && strlen(k->targets[i].name) == len &&
        !memcmp(k->targets[i].name, name, len))
      return &k->targets[i];
  return NULL;
}

/* Starts a section: finds its table, or skips it (reported). */
static void begin_section(sink_t *k, const unsigned char *name, size_t len, uint64_t key_id,
                          uint64_t count) {
  k->cur = NULL;
  if (!k->targets)
    return;
  const intake_converge_target_t *t = find_target(k, name, len);
  intake_converge_skip_t why = 0;
  if (!t)
    why = INTAKE_CONVERGE_SKIP_GONE;
  else if (intake_converge_key_id(t->c) != key_id)
    why = INTAKE_CONVERGE_SKIP_CHANGED;
  else
    k->cur = t->c;
  if (!why)
    return;
  if (why == INTAKE_CONVERGE_SKIP_GONE)
    k->info->skipped_gone += count;
  else
    k->info->skipped_changed += count;
  if (k->skip) {
    char nm[INTAKE_CONVERGE_SNAPSHOT_MAX_NAME + 1];
    memcpy(nm, name, len);
    nm[len] = '\0';
    k->skip(k->skip_ctx, nm, count, why);
  }
}

/* Consumes whole records from buf[0..n); returns the bytes consumed, or -1 with k->bad set. */
static long take_records(sink_t *k, const unsigned char *buf, size_t n) {
  size_t used = 0;
  for (;;) {
    size_t have = n - used;
    const unsigned char *p = buf + used;
    if (k->left == 0) { /* a rule record */
      if (k->rules_seen == k->rules)
        return have ? (k->bad = "bytes after the last record", -1) : (long)used;
      if (have < RULE_FIXED)
        return (long)used;
      uint32_t len = intake_le_get32(p);
      if (len == 0 || len > INTAKE_CONVERGE_SNAPSHOT_MAX_NAME)
        return k->bad = "a rule name of a bad length", -1;
      if (have < RULE_FIXED + len)
        return (long)used;
      uint64_t count = intake_le_get64(p + 12);
      if (count > k->episodes - k->episodes_seen)
        return k->bad = "a rule holds more episodes than the header declares", -1;
      if (memchr(p + RULE_FIXED, '\0', len))
        return k->bad = "a rule name holds a NUL", -1;
      begin_section(k, p + RULE_FIXED, len, intake_le_get64(p + 4), count);
      k->left = count;
      k->rules_seen++;
      used += RULE_FIXED + len;
      continue;
    }
    if (have < EP_FIXED)
      return (long)used;
    uint32_t len = intake_le_get32(p + 64);
    if (len > INTAKE_CONVERGE_SNAPSHOT_MAX_EVENT)
      return k->bad = "an event longer than 64 KiB", -1;
    if (have < EP_FIXED + len)
      return (long)used;
    intake_converge_episode_t e;
    decode_episode(p, &e, k->shift);
    if (e.state < INTAKE_CONVERGE_EP_ACTIVE || e.state > INTAKE_CONVERGE_EP_FLAPPING ||
        e.last_clear > 1 || !(e.hash >> 63))
      return k->bad = "an episode with a bad state or hash", -1;
    if (!k->targets) { /* the saved event must parse: summaries decode it */
      intake_event_t ev;
      if (intake_event_parse(e.last, e.last_len, &ev) < 0)
        return k->bad = "an episode whose event does not parse", -1;
    } else if (k->cur) {
      if (intake_converge_import(k->cur, &e)) {
        k->info->loaded++;
        if (e.state != INTAKE_CONVERGE_EP_CLEARED && e.expires_ms <= k->clock_now)
          k->info->expired++;
      } else {
        k->info->refused++;
      }
    }
    k->left--;
    k->episodes_seen++;
    used += EP_FIXED + len;
  }
}

#define FAIL(code, ...)                                                                           \
  do {                                                                                            \
    snprintf(err, errlen, __VA_ARGS__);                                                           \
    rc = (code);                                                                                  \
    goto out;                                                                                     \
  } while (0)

/* Reads `n` bytes at `off`; 0, -EINVAL when the file ends first, or -errno. */
static int read_at(int fd, unsigned char *buf, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t got = pread(fd, buf, n, (off_t)off);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      return -errno;
    if (got == 0)
      return -EINVAL;
    buf += got;
    n -= (size_t)got;
    off += (uint64_t)got;
  }
  return 0;
}

/* State of one pass: the content produced so far. */
typedef struct {
  uint64_t content;                  /* declared */
  uint64_t produced;
  XXH64_state_t hash;
  unsigned char *out;                /* decoded bytes: a partial record's carry, then new ones */
  size_t out_cap, carry;
} decode_t;

/* Takes `got` bytes that zstd just decoded after the carry. 0, or -EINVAL with err set. */
static int decoded(decode_t *d, sink_t *k, size_t got, char *err, size_t errlen) {
  d->produced += got;
  if (d->produced > d->content) {
    snprintf(err, errlen, "content larger than the %llu bytes the header declares",
             (unsigned long long)d->content);
    return -EINVAL;
  }
  XXH64_update(&d->hash, d->out + d->carry, got);
  size_t have = d->carry + got;
  long used = take_records(k, d->out, have);
  if (used < 0) {
    snprintf(err, errlen, "bad record: %s", k->bad);
    return -EINVAL;
  }
  d->carry = have - (size_t)used; /* < MAX_RECORD: an incomplete record */
  memmove(d->out, d->out + used, d->carry);
  return 0;
}

/* One pass over the payload: decompresses it through fixed buffers into `k`, checking that it
 * is one complete zstd frame that yields exactly `content` bytes hashing to `sum`, holding
 * exactly the declared records. Returns 0 or a negative errno with err set. */
static int pass(int fd, uint64_t payload, uint64_t content, uint64_t sum, sink_t *k,
                ZSTD_DCtx *dctx, unsigned char *in, unsigned char *out, size_t out_cap,
                char *err, size_t errlen) {
  int rc = 0;
  decode_t d = {.content = content, .out = out, .out_cap = out_cap};
  XXH64_reset(&d.hash, 0);
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
  uint64_t off = HDR, end = HDR + payload;
  size_t last = 1; /* ZSTD_decompressStream's hint: 0 once the frame is complete */
  while (off < end) {
    size_t got = end - off < READ_BYTES ? (size_t)(end - off) : READ_BYTES;
    int r = read_at(fd, in, got, off);
    if (r < 0)
      FAIL(r, "read: %s", r == -EINVAL ? "the file shrank" : strerror(-r));
    off += got;
    ZSTD_inBuffer ib = {in, got, 0};
    while (ib.pos < ib.size) {
      if (last == 0)
        FAIL(-EINVAL, "bytes after the end of the zstd frame");
      ZSTD_outBuffer ob = {out + d.carry, out_cap - d.carry, 0};
      last = ZSTD_decompressStream(dctx, &ob, &ib);
      if (ZSTD_isError(last))
        FAIL(-EINVAL, "zstd: %s", ZSTD_getErrorName(last));
      if ((rc = decoded(&d, k, ob.pos, err, errlen)) < 0)
        goto out;
    }
  }
  /* zstd may hold decoded bytes back until asked again with no new input. */
  while (last != 0) {
    ZSTD_inBuffer ib = {in, 0, 0};
    ZSTD_outBuffer ob = {out + d.carry, out_cap - d.carry, 0};
    last = ZSTD_decompressStream(dctx, &ob, &ib);
    if (ZSTD_isError(last))
      FAIL(-EINVAL, "zstd: %s", ZSTD_getErrorName(last));
    if (ob.pos == 0 && last != 0)
      FAIL(-EINVAL, "truncated: the zstd frame is incomplete");
    if ((rc = decoded(&d, k, ob.pos, err, errlen)) < 0)
      goto out;
  }
  if (d.produced != content)
    FAIL(-EINVAL, "content is %llu bytes, the header declares %llu",
         (unsigned long long)d.produced, (unsigned long long)content);
  if (XXH64_digest(&d.hash) != sum)
    FAIL(-EINVAL, "content checksum mismatch");
  if (d.carry || k->rules_seen != k->rules || k->episodes_seen != k->episodes || k->left)
    FAIL(-EINVAL, "the records end early: %llu of %llu rules, %llu of %llu episodes",
         (unsigned long long)k->rules_seen, (unsigned long long)k->rules,
         (unsigned long long)k->episodes_seen, (unsigned long long)k->episodes);
out:
  return rc;
}

int intake_converge_snapshot_load(const char *path, const intake_converge_target_t *targets,
                                  size_t n, int64_t clock_now_ms, int64_t wall_now_ms,
                                  intake_converge_skip_cb skip, void *skip_ctx,
                                  intake_converge_snapshot_info_t *info, char *err,
                                  size_t errlen) {
  uint64_t t0 = mono_ms();
  int rc = 0;
  ZSTD_DCtx *dctx = NULL;
  unsigned char *in = NULL, *out = NULL;
  memset(info, 0, sizeof *info);
  err[0] = '\0';
  uint64_t size;
  int fd = intake_open_regular(path, &size, err, errlen);
  if (fd < 0)
    return fd;
  info->bytes = size;
  unsigned char hdr[HDR];
  if (size < 8 || read_at(fd, hdr, 8, 0) < 0 || memcmp(hdr, MAGIC, 8) != 0)
    FAIL(-EINVAL, "bad magic: not a convergence snapshot (%llu bytes)", (unsigned long long)size);
  if (size < 12 || read_at(fd, hdr, 12, 0) < 0)
    FAIL(-EINVAL, "truncated: %llu bytes, less than a header", (unsigned long long)size);
  if (intake_le_get32(hdr + 8) != INTAKE_CONVERGE_SNAPSHOT_VERSION)
    FAIL(-EINVAL, "unsupported version %u (this intaked reads %u)", intake_le_get32(hdr + 8),
         INTAKE_CONVERGE_SNAPSHOT_VERSION);
  if (size < HDR || read_at(fd, hdr, HDR, 0) < 0)
    FAIL(-EINVAL, "truncated: %llu bytes, less than a header", (unsigned long long)size);
  if (intake_le_get32(hdr + 12) != HDR)
    FAIL(-EINVAL, "header size %u, expected %u", intake_le_get32(hdr + 12), HDR);
  if (intake_le_get64(hdr + 72) != XXH64(hdr, 72, 0))
    FAIL(-EINVAL, "header checksum mismatch");
  info->created_ms = intake_le_get64(hdr + 16);
  uint64_t rules = intake_le_get64(hdr + 24), episodes = intake_le_get64(hdr + 32), content = intake_le_get64(hdr + 40);
  uint64_t payload = intake_le_get64(hdr + 48), sum = intake_le_get64(hdr + 56), psum = intake_le_get64(hdr + 64);
  info->rules = rules;
  info->episodes = episodes;
  if (rules > MAX_RULES || episodes > MAX_EPISODES)
    FAIL(-EINVAL, "implausible counts: %llu rules, %llu episodes", (unsigned long long)rules,
         (unsigned long long)episodes);
  /* < 2^57: no overflow */
  uint64_t lo = rules * (RULE_FIXED + 1) + episodes * EP_FIXED;
  uint64_t hi = rules * (RULE_FIXED + INTAKE_CONVERGE_SNAPSHOT_MAX_NAME) + episodes * MAX_RECORD;
  if (content < lo || content > hi)
    FAIL(-EINVAL, "content of %llu bytes cannot hold %llu rules and %llu episodes",
         (unsigned long long)content, (unsigned long long)rules, (unsigned long long)episodes);
  if (payload != size - HDR)
    FAIL(-EINVAL, "%s: the file has %llu payload bytes, the header says %llu",
         payload > size - HDR ? "truncated" : "trailing bytes",
         (unsigned long long)(size - HDR), (unsigned long long)payload);
  if (content > 4096 && (content - 4096) / MAX_RATIO > payload)
    FAIL(-EINVAL, "declared content of %llu bytes from %llu compressed: refused as a zstd bomb",
         (unsigned long long)content, (unsigned long long)payload);

  size_t out_cap = ZSTD_DStreamOutSize() + MAX_RECORD; /* room for a partial record's carry */
  dctx = ZSTD_createDCtx();
  in = malloc(READ_BYTES);
  out = malloc(out_cap);
  if (!dctx || !in || !out)
    FAIL(-ENOMEM, "out of memory");
  if (ZSTD_isError(ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, DEC_WINDOW_LOG_MAX)))
    FAIL(-EIO, "zstd: cannot set the window limit");

  /* The payload as stored, before zstd sees a byte of it: a damaged frame is never decoded. */
  XXH64_state_t ph;
  XXH64_reset(&ph, 0);
  for (uint64_t off = HDR; off < size;) {
    size_t want = size - off < READ_BYTES ? (size_t)(size - off) : READ_BYTES;
    int r = read_at(fd, in, want, off);
    if (r < 0)
      FAIL(r, "read: %s", r == -EINVAL ? "truncated" : strerror(-r));
    XXH64_update(&ph, in, want);
    off += want;
  }
  if (XXH64_digest(&ph) != psum)
    FAIL(-EINVAL, "payload checksum mismatch");

  /* Pass 1 verifies every record; pass 2 imports. A bad file never loads half its episodes. */
  intake_converge_snapshot_info_t scratch = {0};
  sink_t check = {.rules = rules, .episodes = episodes, .info = &scratch};
  if ((rc = pass(fd, payload, content, sum, &check, dctx, in, out, out_cap, err, errlen)) < 0)
    goto out;
  sink_t load = {.targets = targets,
                 .n_targets = n,
                 .shift = clock_now_ms - wall_now_ms,
                 .clock_now = clock_now_ms,
                 .skip = skip,
                 .skip_ctx = skip_ctx,
                 .rules = rules,
                 .episodes = episodes,
                 .info = info};
  if ((rc = pass(fd, payload, content, sum, &load, dctx, in, out, out_cap, err, errlen)) < 0)
    goto out; /* only a read error or a file changed under us: what was loaded is valid */
  info->duration_ms = mono_ms() - t0;
out:
  ZSTD_freeDCtx(dctx);
  free(in);
  free(out);
  close(fd);
  return rc;
}
