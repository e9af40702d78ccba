/* Writes the hostile-input corpus (tests/hostile/) and the fuzz seed corpora (tests/fuzz/corpus/).
 *
 *   gen_corpus HOSTILE_DIR FUZZ_DIR
 *
 * HOSTILE_DIR gets one file per case and MANIFEST (the expected reaction of each case);
 * FUZZ_DIR gets batch/, frame/ and config/ seeds: valid batches and streams, a few configs, and
 * every hostile case under 16 KiB (the shipped conf/intaked.yaml is copied by gen_corpus.sh).
 *
 * Run through tests/fuzz/gen_corpus.sh, which builds this with `cc ... -lzstd` and regenerates
 * both corpora in the source tree. Output is deterministic (no clock, no randomness), so a
 * regenerated corpus diffs clean unless a case changed (or libzstd's encoder did).
 *
 * Everything is encoded by hand rather than with protobuf-c: half the point is bytes that no
 * well-behaved encoder would write (lengths that lie, 11-byte varints, groups, overlong tags).
 *
 * Time: valid events must carry a time close to the daemon's clock, which a file in the repo
 * cannot. Every event meant to pass the time check carries the NOW marker: field 7 as the
 * 6-byte varint of INTAKE_NOW_MARKER (1234567890123, 2009-02-13, far outside any sane skew).
 * it_hostile.c replaces each marker with the current time, also as a 6-byte varint, so no
 * length around it changes. The fuzz targets use the marker value itself as their clock. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "../hostile/hostile.h"

/* ---- a growable byte buffer and protobuf wire encoding ---------------------------------- */

typedef struct {
  uint8_t *p;
  size_t len, cap;
} buf_t;

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "gen_corpus: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

static void put(buf_t *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p)
      die("out of memory");
    b->cap = cap;
  }
  if (n)
    memcpy(b->p + b->len, data, n);
  b->len += n;
}

static void put_byte(buf_t *b, uint8_t v) { put(b, &v, 1); }

static void put_fill(buf_t *b, uint8_t v, size_t n) {
  for (size_t i = 0; i < n; i++)
    put_byte(b, v);
}

static void put_varint(buf_t *b, uint64_t v) {
  while (v >= 0x80) {
    put_byte(b, (uint8_t)(v | 0x80));
    v >>= 7;
  }
  put_byte(b, (uint8_t)v);
}

enum { VARINT = 0, I64 = 1, LEN = 2, SGROUP = 3, EGROUP = 4, I32 = 5 };

static void put_tag(buf_t *b, uint32_t field, uint32_t wt) { put_varint(b, (uint64_t)field << 3 | wt); }

static void put_bytes(buf_t *b, uint32_t field, const void *p, size_t n) {
  put_tag(b, field, LEN);
  put_varint(b, n);
  put(b, p, n);
}

static void put_buf(buf_t *b, uint32_t field, const buf_t *v) { put_bytes(b, field, v->p, v->len); }

static void put_uint(buf_t *b, uint32_t field, uint64_t v) {
  put_tag(b, field, VARINT);
  put_varint(b, v);
}

static void put_double(buf_t *b, uint32_t field, double d) {
  uint8_t le[8];
  memcpy(le, &d, 8); /* little-endian hosts only, like the daemon */
  put_tag(b, field, I64);
  put(b, le, 8);
}

/* Field 7 carrying the NOW marker (see the top of the file). */
static void put_now(buf_t *b) {
  put_tag(b, 7, VARINT);
  uint64_t v = INTAKE_NOW_MARKER;
  for (int i = 0; i < 6; i++, v >>= 7)
    put_byte(b, (uint8_t)((v & 0x7f) | (i < 5 ? 0x80 : 0)));
}

static void buf_free(buf_t *b) {
  free(b->p);
  *b = (buf_t){0};
}

/* ---- events, batches, frames ------------------------------------------------------------- */

typedef struct {
  const char *p;
  size_t n;
} str_t;
#define S(lit) ((str_t){(lit), sizeof(lit) - 1})
#define NONE ((str_t){NULL, 0})

/* What encode_event() writes; fields with p == NULL are left out. */
typedef struct {
  str_t source_id, event_id, type;
  int has_kind;
  uint64_t kind;
  uint64_t seq;
  int has_severity;
  uint64_t severity;
  int time_now;                /* 1: the NOW marker; 0: time_ms below (when has_time) */
  int has_time;
  int64_t time_ms;
  int has_location;
  double lon, lat;
  str_t region;
  int n_attrs;
  str_t attr_key[40], attr_value[40];
  str_t payload;
  const buf_t *extra;          /* raw bytes appended (unknown fields, repeats) */
} evspec_t;

/* A valid event: sensor, smoke.alarm, severity 2, NOW, a location and one attribute. */
static evspec_t valid_spec(const char *event_id) {
  evspec_t e = {0};
  e.source_id = S("hostile-smoke-0001");
  e.event_id = (str_t){event_id, strlen(event_id)};
  e.type = S("smoke.alarm");
  e.has_kind = 1;
  e.kind = 1;
  e.has_severity = 1;
  e.severity = 2;
  e.time_now = 1;
  e.has_location = 1;
  e.lon = 120.07;
  e.lat = 29.31;
  e.region = S("330782");
  e.n_attrs = 1;
  e.attr_key[0] = S("unit");
  e.attr_value[0] = S("ppm");
  return e;
}

static void encode_event(buf_t *b, const evspec_t *e) {
  if (e->source_id.p)
    put_bytes(b, 1, e->source_id.p, e->source_id.n);
  if (e->has_kind)
    put_uint(b, 2, e->kind);
  if (e->event_id.p)
    put_bytes(b, 3, e->event_id.p, e->event_id.n);
  if (e->seq)
    put_uint(b, 4, e->seq);
  if (e->type.p)
    put_bytes(b, 5, e->type.p, e->type.n);
  if (e->has_severity)
    put_uint(b, 6, e->severity);
  if (e->time_now)
    put_now(b);
  else if (e->has_time)
    put_uint(b, 7, (uint64_t)e->time_ms);
  if (e->has_location) {
    buf_t loc = {0};
    put_double(&loc, 1, e->lon);
    put_double(&loc, 2, e->lat);
    if (e->region.p)
      put_bytes(&loc, 3, e->region.p, e->region.n);
    put_buf(b, 8, &loc);
    buf_free(&loc);
  }
  for (int i = 0; i < e->n_attrs; i++) {
    buf_t ent = {0};
    put_bytes(&ent, 1, e->attr_key[i].p, e->attr_key[i].n);
    put_bytes(&ent, 2, e->attr_value[i].p, e->attr_value[i].n);
    put_buf(b, 9, &ent);
    buf_free(&ent);
  }
  if (e->payload.p)
    put_bytes(b, 10, e->payload.p, e->payload.n);
  if (e->extra)
    put(b, e->extra->p, e->extra->len);
}

static buf_t event_bytes(const evspec_t *e) {
  buf_t b = {0};
  encode_event(&b, e);
  return b;
}

/* Batch {seq, events...} */
static buf_t batch_of(uint64_t seq, const buf_t *events, int n) {
  buf_t b = {0};
  put_uint(&b, 1, seq);
  for (int i = 0; i < n; i++)
    put_buf(&b, 2, &events[i]);
  return b;
}

static buf_t zstd_of(const buf_t *content, int with_size) {
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  if (!cc)
    die("ZSTD_createCCtx");
  ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, with_size);
  size_t cap = ZSTD_compressBound(content->len);
  buf_t z = {0};
  put_fill(&z, 0, cap);
  size_t n = ZSTD_compress2(cc, z.p, cap, content->p, content->len);
  if (ZSTD_isError(n))
    die("zstd: %s", ZSTD_getErrorName(n));
  z.len = n;
  ZSTD_freeCCtx(cc);
  return z;
}

/* Batch {seq, events_zstd: zstd(Batch{events})} */
static buf_t batch_zstd(uint64_t seq, const buf_t *events, int n) {
  buf_t inner = {0};
  for (int i = 0; i < n; i++)
    put_buf(&inner, 2, &events[i]);
  buf_t z = zstd_of(&inner, 1);
  buf_t b = {0};
  put_uint(&b, 1, seq);
  put_buf(&b, 3, &z);
  buf_free(&z);
  buf_free(&inner);
  return b;
}

static void put_header(buf_t *b, uint32_t length, uint8_t type) {
  uint8_t h[5] = {(uint8_t)(length >> 24), (uint8_t)(length >> 16), (uint8_t)(length >> 8),
                  (uint8_t)length, type};
  put(b, h, 5);
}

static void put_frame(buf_t *b, uint8_t type, const buf_t *payload) {
  put_header(b, (uint32_t)payload->len + 1, type);
  put(b, payload->p, payload->len);
}

static buf_t hello_payload(const char *gw, size_t gw_len, uint64_t version) {
  buf_t h = {0};
  put_bytes(&h, 1, gw, gw_len);
  put_bytes(&h, 2, "", 0);
  put_uint(&h, 3, version);
  return h;
}

/* ---- output ------------------------------------------------------------------------------ */

static const char *out_dir;      /* the hostile corpus */
static char batch_dir[1024], frame_dir[1024], config_dir[1024]; /* fuzz seeds */
static FILE *manifest;

#define MAX_SEED_BYTES (16 * 1024) /* run.sh's -max_len */

static void write_file(const char *dir, const char *name, const void *p, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
    die("%s: %s", path, strerror(errno));
}

static void mkdir_p(const char *path) {
  if (mkdir(path, 0755) < 0 && errno != EEXIST)
    die("mkdir %s: %s", path, strerror(errno));
}

/* ---- the hostile corpus ------------------------------------------------------------------ */

/* Hostile-case hooks: every case is written to DIR/<name>.bin and listed in the manifest.
 * `session` is "raw" (bytes sent right after connecting) or "hello" (after HELLO, a valid
 * batch and its ack); `expect` is one of the reactions documented in hostile.h. */
static void emit(const char *name, const char *session, const char *expect, const char *flags,
                 const char *why, const buf_t *bytes) {
  char file[256];
  snprintf(file, sizeof file, "%s.bin", name);
  write_file(out_dir, file, bytes->p, bytes->len);
  fprintf(manifest, "%-36s %-5s %-28s %-5s # %s\n", file, session, expect, flags ? flags : "-",
          why);

  /* As fuzz seeds: the stream as the daemon would see it, and a lone BATCH frame's payload. */
  if (bytes->len + 64 > MAX_SEED_BYTES)
    return;
  buf_t s = {0};
  if (strcmp(session, "hello") == 0) {
    buf_t h = hello_payload("gw-fuzz", 7, 1);
    put_frame(&s, 1, &h);
    buf_free(&h);
  }
  put(&s, bytes->p, bytes->len);
  write_file(frame_dir, name, s.p, s.len);
  buf_free(&s);
  if (bytes->len >= 5 && bytes->p[4] == 3 &&
      ((uint32_t)bytes->p[0] << 24 | (uint32_t)bytes->p[1] << 16 | (uint32_t)bytes->p[2] << 8 |
       bytes->p[3]) == bytes->len - 4)
    write_file(batch_dir, name, bytes->p + 5, bytes->len - 5);
}

/* One BATCH frame {seq, [bad, good]}: the rejected event first, a valid one after it. */
static void emit_reject(const char *name, const char *reason, const char *flags, const char *why,
                        const buf_t *bad) {
  char id[128], expect[64];
  snprintf(id, sizeof id, "%s-neighbour", name);
  evspec_t g = valid_spec(id);
  buf_t evs[2] = {*bad, event_bytes(&g)};
  buf_t batch = batch_of(7, evs, 2), frame = {0};
  put_frame(&frame, 3, &batch);
  snprintf(expect, sizeof expect, "reject:%s", reason);
  emit(name, "hello", expect, flags, why, &frame);
  buf_free(&evs[1]);
  buf_free(&batch);
  buf_free(&frame);
}

static void emit_reject_spec(const char *name, const char *reason, const char *why,
                             const evspec_t *e) {
  buf_t bad = event_bytes(e);
  emit_reject(name, reason, NULL, why, &bad);
  buf_free(&bad);
}

static void emit_batch_frame(const char *name, const char *expect, const char *flags,
                             const char *why, const buf_t *payload) {
  buf_t frame = {0};
  put_frame(&frame, 3, payload);
  emit(name, "hello", expect, flags, why, &frame);
  buf_free(&frame);
}

static void gen_hostile(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/MANIFEST", out_dir);
  manifest = fopen(path, "w");
  if (!manifest)
    die("%s: %s", path, strerror(errno));
  fprintf(manifest,
          "# Hostile-input corpus: one file per case, written by tests/fuzz/gen_corpus.c (do not\n"
          "# edit by hand: change the generator and run tests/fuzz/gen_corpus.sh). Replayed by\n"
          "# tests/integration/it_hostile.c against one intaked and the real broker.\n"
          "#\n"
          "# Columns: file, session, expected reaction, flags, # why.\n"
          "#   session  raw:   the file's bytes are the first thing sent on a new connection\n"
          "#            hello: sent after HELLO, one valid batch and its ack\n"
          "#   expect   error:CODE      ProtocolError with ErrorCode CODE, then the connection closes\n"
          "#            close           no answer; the test half-closes and intaked closes too\n"
          "#            reject:REASON   BatchAck OK, event 0 REJECTED with RejectReason REASON and in\n"
          "#                            the dead-letter topic (reject_reason header); any other\n"
          "#                            event (a valid neighbour) ACCEPTED and in Kafka once\n"
          "#            accept          BatchAck OK, every event ACCEPTED and in Kafka once\n"
          "#            batch_rejected  BatchAck with status REJECTED\n"
          "#            welcome         the HELLO in the file is answered WELCOME\n"
          "#   flags    xfail: a known wrong reaction (reported, to be fixed in src/); the test\n"
          "#            reports XFAIL, and fails on XPASS so that the flag gets removed.\n"
          "#\n"
          "# Limits the expectations assume (it_hostile.c's config): gateway.max_frame_bytes 1MiB,\n"
          "# gateway.max_batch_events 100, validate.* defaults (ids 64 B, payload 4KiB,\n"
          "# 32 attributes, future skew 10m, age 7d, max_decompressed_bytes 8MiB), and\n"
          "# librdkafka's default message.max.bytes (1000000).\n"
          "# Field 7 = the 6-byte varint %llu is the NOW marker, replaced by the current time.\n",
          (unsigned long long)INTAKE_NOW_MARKER);

  buf_t b = {0}, p = {0};
#define RESET() (buf_free(&b), buf_free(&p))

  /* --- before HELLO --------------------------------------------------------------------- */
  {
    evspec_t e = valid_spec("before-hello");
    buf_t ev = event_bytes(&e);
    p = batch_of(1, &ev, 1);
    put_frame(&b, 3, &p);
    emit("pre_batch_before_hello", "raw", "error:NOT_AUTHENTICATED", NULL,
         "a BATCH as the first frame", &b);
    buf_free(&ev);
    RESET();
  }
  {
    static const struct {
      const char *name;
      uint64_t v;
    } versions[] = {{"pre_hello_version_0", 0}, {"pre_hello_version_2", 2},
                    {"pre_hello_version_u32max", 0xffffffffu}};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
      p = hello_payload("gw-hostile", 10, versions[i].v);
      put_frame(&b, 1, &p);
      emit(versions[i].name, "raw", "error:BAD_VERSION", NULL, "HELLO with protocol_version != 1",
           &b);
      RESET();
    }
  }
  put(&p, "\x0a\xff\xff\xff\xff\x0f", 6);
  put_frame(&b, 1, &p);
  emit("pre_hello_length_lies", "raw", "error:BAD_FRAME", NULL,
       "HELLO whose gateway_id length runs past the frame", &b);
  RESET();
  put_tag(&p, 3, VARINT);
  put_fill(&p, 0xff, 10);
  put_byte(&p, 0x01);
  put_frame(&b, 1, &p);
  emit("pre_hello_varint_11_bytes", "raw", "error:BAD_FRAME", NULL,
       "HELLO with an 11-byte protocol_version varint", &b);
  RESET();
  p = hello_payload("", 0, 1);
  put_frame(&b, 1, &p);
  emit("pre_hello_empty_gateway_id", "raw", "error:BAD_FRAME", NULL, "gateway_id must be 1..64 bytes",
       &b);
  RESET();
  p = hello_payload("gw-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 65, 1);
  put_frame(&b, 1, &p);
  emit("pre_hello_gateway_id_65_bytes", "raw", "error:BAD_FRAME", NULL,
       "gateway_id must be 1..64 bytes", &b);
  RESET();
  p = hello_payload("gw-\xff\xfe-\xc0\xaf", 9, 1);
  put_frame(&b, 1, &p);
  emit("pre_hello_bad_utf8_gateway_id", "raw", "welcome", NULL,
       "invalid UTF-8 in gateway_id: protobuf-c keeps it, intaked maps non-printable bytes to '_' "
       "before it reaches logs and Kafka headers",
       &b);
  RESET();
  p = hello_payload("gw-unknown-fields", 17, 1);
  put_uint(&p, 99, 5);
  put_bytes(&p, 100, "future", 6);
  put_frame(&b, 1, &p);
  emit("pre_hello_unknown_fields", "raw", "welcome", NULL, "unknown HELLO fields are skipped", &b);
  RESET();
  put_header(&b, 0, 0);
  emit("pre_zero_length_frame", "raw", "error:BAD_FRAME", NULL, "length 0: no type byte", &b);
  RESET();
  put_header(&b, 0xffffffffu, 1);
  emit("pre_frame_length_4GiB", "raw", "error:FRAME_TOO_LARGE", NULL,
       "length 0xffffffff, refused from the 4 length bytes", &b);
  RESET();
  put(&p, "hello?", 6);
  put_frame(&b, 0x7f, &p);
  emit("pre_unknown_frame_type", "raw", "error:NOT_AUTHENTICATED", NULL,
       "unknown frame type as the first frame (the first frame must be HELLO)", &b);
  RESET();
  p = hello_payload("gw-truncated", 12, 1);
  put_frame(&b, 1, &p);
  b.len = 9;
  emit("pre_hello_truncated", "raw", "close", NULL,
       "HELLO cut short, then the gateway closes: nothing to answer", &b);
  RESET();

  /* --- framing, after a session is up ----------------------------------------------------- */
  put_header(&b, 0, 3);
  b.len = 4;
  emit("frame_zero_length", "hello", "error:BAD_FRAME", NULL, "length 0: no type byte", &b);
  RESET();
  put_header(&b, (1u << 20) + 1, 3);
  emit("frame_too_large_by_one", "hello", "error:FRAME_TOO_LARGE", NULL,
       "length gateway.max_frame_bytes + 1 (header only: refused before any payload)", &b);
  RESET();
  put_header(&b, 0xffffffffu, 3);
  emit("frame_length_4GiB", "hello", "error:FRAME_TOO_LARGE", NULL, "length 0xffffffff", &b);
  RESET();
  put(&b, "\x00\x00\x01", 3);
  emit("frame_truncated_header", "hello", "close", NULL,
       "3 of the 4 length bytes, then the gateway closes", &b);
  RESET();
  {
    evspec_t e = valid_spec("truncated-payload");
    buf_t ev = event_bytes(&e);
    p = batch_of(3, &ev, 1);
    put_frame(&b, 3, &p);
    b.len = 5 + p.len / 2;
    emit("frame_truncated_payload", "hello", "close", NULL,
         "a BATCH frame cut in half, then the gateway closes: the event is not delivered", &b);
    RESET();
    p = batch_of(3, &ev, 1);
    put_header(&b, 4096, 3);
    put(&b, p.p, p.len);
    emit("frame_length_lies_longer", "hello", "close", NULL,
         "length 4096, only a small batch sent, then the gateway closes", &b);
    RESET();
    p = batch_of(3, &ev, 1);
    put_header(&b, (uint32_t)(1 + p.len / 2), 3);
    put(&b, p.p, p.len);
    emit("frame_length_lies_shorter", "hello", "error:BAD_FRAME", NULL,
         "length covers half the batch: the frame is a truncated Batch", &b);
    buf_free(&ev);
    RESET();
  }
  {
    static const struct {
      const char *name;
      uint8_t type;
    } types[] = {{"frame_type_0", 0},         {"frame_type_welcome", 2}, {"frame_type_batch_ack", 4},
                 {"frame_type_error", 5},     {"frame_type_6", 6},       {"frame_type_255", 255}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
      put(&p, "\x08\x01", 2);
      put_frame(&b, types[i].type, &p);
      emit(types[i].name, "hello", "error:BAD_FRAME", NULL,
           "a frame type a gateway may not send", &b);
      RESET();
    }
  }
  p = hello_payload("gw-again", 8, 1);
  put_frame(&b, 1, &p);
  emit("frame_second_hello", "hello", "error:BAD_FRAME", NULL, "HELLO sent twice", &b);
  RESET();

  /* --- batches that are not a Batch ---------------------------------------------------------- */
  put_fill(&p, 0xff, 32);
  emit_batch_frame("batch_garbage", "error:BAD_FRAME", NULL, "32 bytes of 0xff", &p);
  RESET();
  put_uint(&p, 1, 9);
  put_tag(&p, 2, LEN);
  put_varint(&p, 10u << 20);
  put(&p, "\x0a\x03" "abc", 5);
  emit_batch_frame("batch_events_length_10MB", "error:BAD_FRAME", NULL,
                   "an events entry declaring 10 MB in a 20-byte frame", &p);
  RESET();
  put_uint(&p, 1, 9);
  put_uint(&p, 2, 12345);
  emit_batch_frame("batch_events_wrong_wire_type", "error:BAD_FRAME", NULL,
                   "events (field 2) sent as a varint", &p);
  RESET();
  put_uint(&p, 1, 9);
  put_tag(&p, 5, SGROUP);
  put_uint(&p, 1, 1);
  put_tag(&p, 5, EGROUP);
  emit_batch_frame("batch_group_wire_type", "error:BAD_FRAME", NULL,
                   "an unknown field as a (deprecated) group", &p);
  RESET();
  put_tag(&p, 1, VARINT);
  put_fill(&p, 0x80, 10);
  put_byte(&p, 0x01);
  emit_batch_frame("batch_seq_varint_11_bytes", "error:BAD_FRAME", NULL,
                   "seq as an 11-byte varint", &p);
  RESET();
  put_tag(&p, 1, VARINT);
  put_fill(&p, 0xff, 7);
  emit_batch_frame("batch_seq_varint_unterminated", "error:BAD_FRAME", NULL,
                   "seq varint running off the end of the frame", &p);
  RESET();
  put_byte(&p, 0x00);
  put_byte(&p, 0x01);
  emit_batch_frame("batch_field_zero", "error:BAD_FRAME", NULL, "tag with field number 0", &p);
  RESET();
  put_tag(&p, 1, 7);
  put_byte(&p, 0x01);
  emit_batch_frame("batch_wire_type_7", "error:BAD_FRAME", NULL, "wire type 7 does not exist", &p);
  RESET();
  {
    evspec_t e = valid_spec("both");
    buf_t ev = event_bytes(&e);
    buf_t z = batch_zstd(4, &ev, 1);
    put(&p, z.p, z.len);
    put_buf(&p, 2, &ev);
    emit_batch_frame("batch_events_and_zstd", "error:BAD_FRAME", NULL,
                     "both events and events_zstd", &p);
    RESET();
    /* zstd content that itself holds events_zstd */
    buf_t inner = {0};
    put_bytes(&inner, 3, z.p, z.len);
    buf_t zz = zstd_of(&inner, 1);
    put_uint(&p, 1, 4);
    put_buf(&p, 3, &zz);
    emit_batch_frame("zstd_nested_zstd", "error:BAD_FRAME", NULL,
                     "events_zstd whose content holds events_zstd again", &p);
    RESET();
    buf_free(&inner);
    buf_free(&zz);
    buf_free(&z);
    buf_free(&ev);
  }
  {
    buf_t junk = {0};
    put_fill(&junk, 0xff, 64);
    buf_t z = zstd_of(&junk, 1);
    put_uint(&p, 1, 4);
    put_buf(&p, 3, &z);
    emit_batch_frame("zstd_content_not_a_batch", "error:BAD_FRAME", NULL,
                     "valid zstd whose content is not a Batch", &p);
    RESET();
    buf_free(&z);
    buf_free(&junk);
  }

  /* --- zstd ------------------------------------------------------------------------------------ */
  put_uint(&p, 1, 5);
  put_bytes(&p, 3, "this is not a zstd frame", 24);
  emit_batch_frame("zstd_not_zstd", "error:BAD_ZSTD", NULL, "events_zstd without the zstd magic", &p);
  RESET();
  {
    evspec_t e = valid_spec("zstd-truncated");
    buf_t evs[8];
    for (int i = 0; i < 8; i++) {
      char id[32];
      snprintf(id, sizeof id, "zstd-%d", i);
      e.event_id = (str_t){id, strlen(id)};
      evs[i] = event_bytes(&e);
    }
    buf_t inner = {0};
    for (int i = 0; i < 8; i++)
      put_buf(&inner, 2, &evs[i]);
    buf_t z = zstd_of(&inner, 1);
    put_uint(&p, 1, 5);
    put_bytes(&p, 3, z.p, z.len - 4);
    emit_batch_frame("zstd_truncated", "error:BAD_ZSTD", NULL,
                     "a zstd frame missing its last 4 bytes", &p);
    RESET();
    /* a corrupted block: flip bits in the middle of the compressed data */
    buf_t zc = {0};
    put(&zc, z.p, z.len);
    for (size_t i = 8; i < zc.len - 2; i += 3)
      zc.p[i] ^= 0x5a;
    put_uint(&p, 1, 5);
    put_buf(&p, 3, &zc);
    emit_batch_frame("zstd_corrupt_blocks", "error:BAD_ZSTD", NULL,
                     "zstd header intact, compressed blocks corrupted", &p);
    RESET();
    buf_free(&zc);
    /* the frame followed by a second one: the declared size covers only the first */
    buf_t two = {0};
    put(&two, z.p, z.len);
    put(&two, z.p, z.len);
    put_uint(&p, 1, 5);
    put_buf(&p, 3, &two);
    emit_batch_frame("zstd_two_frames", "error:BAD_ZSTD", NULL,
                     "two concatenated zstd frames: more content than the first frame declares",
                     &p);
    RESET();
    buf_free(&two);
    buf_free(&z);
    /* no declared content size */
    z = zstd_of(&inner, 0);
    put_uint(&p, 1, 5);
    put_buf(&p, 3, &z);
    emit_batch_frame("zstd_no_content_size", "error:BAD_ZSTD", NULL,
                     "a zstd frame that does not record its content size", &p);
    RESET();
    buf_free(&z);
    for (int i = 0; i < 8; i++)
      buf_free(&evs[i]);
    buf_free(&inner);
  }
  {
    /* Content size field patched: the frame declares 256 bytes of content but holds 300, or
     * declares 400. Single_Segment is set for small inputs, so FCS is 2 bytes: value - 256. */
    buf_t content = {0};
    for (int i = 0; i < 300; i++)
      put_byte(&content, (uint8_t)(i * 7));
    buf_t z = zstd_of(&content, 1);
    uint8_t fhd = z.p[4];
    if ((fhd >> 6) != 1 || !(fhd & 0x20))
      die("zstd_size_lies: unexpected frame header descriptor 0x%02x", fhd);
    size_t fcs_at = 5; /* magic, FHD, (no window descriptor with Single_Segment), FCS */
    z.p[fcs_at] = 0;
    z.p[fcs_at + 1] = 0;
    put_uint(&p, 1, 5);
    put_buf(&p, 3, &z);
    emit_batch_frame("zstd_size_lies_smaller", "error:BAD_ZSTD", NULL,
                     "declared content size 256, actual 300", &p);
    RESET();
    z.p[fcs_at] = 400 - 256;
    put_uint(&p, 1, 5);
    put_buf(&p, 3, &z);
    emit_batch_frame("zstd_size_lies_larger", "error:BAD_ZSTD", NULL,
                     "declared content size 400, actual 300", &p);
    RESET();
    buf_free(&z);
    buf_free(&content);
  }
  {
    /* Bombs: highly compressible content. */
    buf_t zeros = {0};
    put_fill(&zeros, 0, 64u << 20);
    buf_t z = zstd_of(&zeros, 1);
    put_uint(&p, 1, 6);
    put_buf(&p, 3, &z);
    emit_batch_frame("zstd_bomb_64MiB_declared", "error:BAD_ZSTD", NULL,
                     "64 MiB of zeros in a few KB, size declared: refused before decompressing",
                     &p);
    RESET();
    buf_free(&z);
    z = zstd_of(&zeros, 0);
    put_uint(&p, 1, 6);
    put_buf(&p, 3, &z);
    emit_batch_frame("zstd_bomb_64MiB_no_size", "error:BAD_ZSTD", NULL,
                     "64 MiB of zeros, content size not recorded: refused unread", &p);
    RESET();
    buf_free(&z);
    /* a well-formed Batch just over the limit: one event whose payload is 8 MiB of zeros */
    buf_t inner = {0};
    evspec_t e = valid_spec("over-limit");
    e.payload = (str_t){(const char *)zeros.p, (8u << 20)};
    buf_t ev = event_bytes(&e);
    put_buf(&inner, 2, &ev);
    buf_free(&ev);
    z = zstd_of(&inner, 1);
    put_uint(&p, 1, 6);
    put_buf(&p, 3, &z);
    emit_batch_frame("zstd_over_limit_8MiB", "error:BAD_ZSTD", NULL,
                     "a well-formed batch whose declared content is just over "
                     "validate.max_decompressed_bytes (8 MiB)",
                     &p);
    RESET();
    buf_free(&z);
    buf_free(&inner);
    buf_free(&zeros);
  }
  {
    buf_t empty = {0};
    buf_t z = zstd_of(&empty, 1);
    put_uint(&p, 1, 8);
    put_buf(&p, 3, &z);
    emit_batch_frame("zstd_empty_content", "accept", NULL,
                     "a zstd frame with 0 bytes of content: an empty batch, acked OK with no "
                     "outcomes",
                     &p);
    RESET();
    buf_free(&z);
    /* skippable frame: magic 0x184D2A50, 4-byte size, then that many bytes */
    buf_t sk = {0};
    put(&sk, "\x50\x2a\x4d\x18\x04\x00\x00\x00skip", 12);
    put_uint(&p, 1, 8);
    put_buf(&p, 3, &sk);
    emit_batch_frame("zstd_skippable_frame", "accept", NULL,
                     "a zstd skippable frame (ZSTD_getFrameContentSize says 0): an empty batch",
                     &p);
    RESET();
    /* skippable frame followed by a real one with content: the real content does not fit the
     * declared 0 bytes */
    evspec_t e = valid_spec("behind-skippable");
    buf_t ev = event_bytes(&e);
    buf_t inner = {0};
    put_buf(&inner, 2, &ev);
    z = zstd_of(&inner, 1);
    put(&sk, z.p, z.len);
    put_uint(&p, 1, 8);
    put_buf(&p, 3, &sk);
    emit_batch_frame("zstd_skippable_then_real", "error:BAD_ZSTD", NULL,
                     "a skippable frame (size 0) smuggling a real frame behind it", &p);
    RESET();
    buf_free(&z);
    buf_free(&inner);
    buf_free(&ev);
    buf_free(&sk);
  }

  /* --- events that are not an Event: REJECTED malformed ------------------------------------- */
  {
    buf_t bad = {0};
    put(&bad, "\x0a\x7f", 2);
    emit_reject("ev_truncated", "MALFORMED", NULL, "source_id declaring 127 bytes, none there",
                &bad);
    buf_free(&bad);
    put_tag(&bad, 1, LEN);
    put_varint(&bad, 10u * 1000 * 1000);
    put(&bad, "hostile", 7);
    emit_reject("ev_string_length_10MB", "MALFORMED", NULL,
                "source_id declaring a 10 MB length inside a small event", &bad);
    buf_free(&bad);
    evspec_t e = valid_spec("varint-11");
    bad = event_bytes(&e);
    put_tag(&bad, 4, VARINT);
    put_fill(&bad, 0xff, 10);
    put_byte(&bad, 0x01);
    emit_reject("ev_varint_11_bytes", "MALFORMED", NULL, "seq as an 11-byte varint", &bad);
    buf_free(&bad);
    e = valid_spec("wire-type");
    bad = event_bytes(&e);
    put_uint(&bad, 1, 42);
    emit_reject("ev_wire_type_mismatch", "MALFORMED", NULL, "source_id sent again as a varint",
                &bad);
    buf_free(&bad);
    e = valid_spec("group");
    bad = event_bytes(&e);
    put_tag(&bad, 20, SGROUP);
    put_tag(&bad, 20, EGROUP);
    emit_reject("ev_group_wire_type", "MALFORMED", NULL, "an unknown field as a group", &bad);
    buf_free(&bad);
    e = valid_spec("location");
    e.has_location = 0;
    bad = event_bytes(&e);
    put_tag(&bad, 8, LEN);
    put_varint(&bad, 5);
    put(&bad, "\x09\x00\x00\x00\x00", 5); /* lon: 8 bytes announced, 4 there */
    emit_reject("ev_location_truncated_double", "MALFORMED", NULL,
                "location.lon with 4 of its 8 bytes", &bad);
    buf_free(&bad);
    e = valid_spec("map-entry");
    e.n_attrs = 0;
    bad = event_bytes(&e);
    put_tag(&bad, 9, LEN);
    put_varint(&bad, 2);
    put(&bad, "\x08\x01", 2); /* key as a varint */
    emit_reject("ev_attribute_key_wrong_type", "MALFORMED", NULL,
                "an attributes entry whose key is a varint", &bad);
    buf_free(&bad);
    e = valid_spec("neg-length");
    bad = event_bytes(&e);
    put_tag(&bad, 10, LEN);
    put_fill(&bad, 0xff, 9);
    put_byte(&bad, 0x01); /* length 2^64 - 1 */
    put(&bad, "xx", 2);
    emit_reject("ev_length_2pow64_minus_1", "MALFORMED", NULL,
                "payload length as the 10-byte varint of -1 (2^64 - 1)", &bad);
    buf_free(&bad);
  }

  /* --- invalid UTF-8 in every string field ---------------------------------------------------- */
  {
    evspec_t e = valid_spec("utf8-source");
    e.source_id = S("cam-\xff-01");
    emit_reject_spec("ev_bad_utf8_source_id", "BAD_UTF8", "source_id with a 0xff byte", &e);
    e = valid_spec("utf8-event");
    e.event_id = S("evt-\xc0\xaf");
    emit_reject_spec("ev_bad_utf8_event_id", "BAD_UTF8", "event_id with an overlong '/' (C0 AF)",
                     &e);
    e = valid_spec("utf8-type");
    e.type = S("smoke.\xed\xa0\x80");
    emit_reject_spec("ev_bad_utf8_type", "BAD_UTF8", "type with a UTF-16 surrogate (ED A0 80)", &e);
    e = valid_spec("utf8-attr-key");
    e.attr_key[0] = S("unit\xe2\x82");
    emit_reject_spec("ev_bad_utf8_attribute_key", "BAD_UTF8",
                     "attribute key ending in a truncated sequence (E2 82)", &e);
    e = valid_spec("utf8-attr-value");
    e.attr_value[0] = S("\xf4\x90\x80\x80");
    emit_reject_spec("ev_bad_utf8_attribute_value", "BAD_UTF8",
                     "attribute value above U+10FFFF (F4 90 80 80)", &e);
    e = valid_spec("utf8-attr-value-2");
    e.n_attrs = 3;
    e.attr_key[1] = S("zone");
    e.attr_value[1] = S("north");
    e.attr_key[2] = S("note");
    e.attr_value[2] = S("ok\x80");
    emit_reject_spec("ev_bad_utf8_third_attribute", "BAD_UTF8",
                     "the third attribute's value has a lone continuation byte", &e);
    e = valid_spec("utf8-region");
    e.region = S("33\xff");
    emit_reject_spec("ev_bad_utf8_region", "BAD_LOCATION",
                     "location.region with a 0xff byte (region must be digits)", &e);
  }

  /* --- time ------------------------------------------------------------------------------------ */
  {
    static const struct {
      const char *name;
      int64_t t;
      int has;
      const char *why;
    } times[] = {
        {"ev_time_year_9999", 253402300799000LL, 1, "9999-12-31T23:59:59Z"},
        {"ev_time_int64_max", INT64_MAX, 1, "time_ms = INT64_MAX"},
        {"ev_time_1970", 1000, 1, "one second after the epoch"},
        {"ev_time_minus_1", -1, 1, "time_ms = -1 (10-byte varint)"},
        {"ev_time_int64_min", INT64_MIN, 1, "time_ms = INT64_MIN"},
        {"ev_time_missing", 0, 0, "no time_ms"},
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
      evspec_t e = valid_spec(times[i].name);
      e.time_now = 0;
      e.has_time = times[i].has;
      e.time_ms = times[i].t;
      emit_reject_spec(times[i].name, "BAD_TIME", times[i].why, &e);
    }
  }

  /* --- values out of range, sizes over the limits --------------------------------------------- */
  {
    evspec_t e = valid_spec("sev-neg");
    e.severity = UINT64_MAX;
    emit_reject_spec("ev_severity_minus_1", "BAD_SEVERITY", "severity as the varint of -1", &e);
    e = valid_spec("sev-wrap");
    e.severity = (1ull << 32) + 1;
    emit_reject_spec("ev_severity_2pow32_plus_1", "BAD_SEVERITY",
                     "severity 2^32+1: protobuf-c truncates it to 1, intaked refuses it", &e);
    e = valid_spec("kind-neg");
    e.kind = UINT64_MAX;
    emit_reject_spec("ev_source_kind_minus_1", "BAD_SOURCE_KIND", "source_kind -1", &e);
    e = valid_spec("kind-99");
    e.kind = 99;
    emit_reject_spec("ev_source_kind_99", "BAD_SOURCE_KIND", "source_kind 99", &e);
    e = valid_spec("kind-0");
    e.has_kind = 0;
    emit_reject_spec("ev_source_kind_missing", "BAD_SOURCE_KIND", "no source_kind", &e);
    e = valid_spec("no-source");
    e.source_id = NONE;
    emit_reject_spec("ev_missing_source_id", "MISSING_SOURCE_ID", "no source_id", &e);
    e = valid_spec("");
    e.event_id = NONE;
    emit_reject_spec("ev_missing_event_id", "MISSING_EVENT_ID", "no event_id", &e);
    e = valid_spec("no-type");
    e.type = S("");
    emit_reject_spec("ev_empty_type", "MISSING_TYPE", "type present but empty", &e);
    e = valid_spec("lon-nan");
    e.lon = __builtin_nan("");
    emit_reject_spec("ev_lon_nan", "BAD_LOCATION", "location.lon NaN", &e);
    e = valid_spec("lat-inf");
    e.lat = __builtin_inf();
    emit_reject_spec("ev_lat_infinity", "BAD_LOCATION", "location.lat +inf", &e);
    e = valid_spec("region-13");
    e.region = S("3307821234567");
    emit_reject_spec("ev_region_13_digits", "BAD_LOCATION", "location.region 13 digits", &e);

    e = valid_spec("id-65");
    e.source_id = S("s-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    emit_reject_spec("ev_source_id_65_bytes", "FIELD_TOO_LONG", "source_id 65 bytes, max 64", &e);
    buf_t big = {0};
    put_fill(&big, 'a', 200 * 1000);
    e = valid_spec("id-200k");
    e.source_id = (str_t){(const char *)big.p, big.len};
    emit_reject_spec("ev_source_id_200KB", "FIELD_TOO_LONG",
                     "a real 200 KB source_id (dead-lettered with a 200 KB key)", &e);
    e = valid_spec("payload-4097");
    e.payload = (str_t){(const char *)big.p, 4097};
    emit_reject_spec("ev_payload_4097_bytes", "FIELD_TOO_LONG", "payload 4097 bytes, max 4 KiB", &e);
    e = valid_spec("attr-257");
    e.attr_value[0] = (str_t){(const char *)big.p, 257};
    emit_reject_spec("ev_attribute_value_257_bytes", "FIELD_TOO_LONG",
                     "attribute value 257 bytes, max 256", &e);
    e = valid_spec("attrs-33");
    e.n_attrs = 33;
    static char keys[33][8];
    for (int i = 0; i < 33; i++) {
      snprintf(keys[i], sizeof keys[i], "k%02d", i);
      e.attr_key[i] = (str_t){keys[i], strlen(keys[i])};
      e.attr_value[i] = S("v");
    }
    emit_reject_spec("ev_33_attributes", "TOO_MANY_ATTRIBUTES", "33 attributes, max 32", &e);
    buf_free(&big);
  }
  {
    /* An event too big for any Kafka record (librdkafka message.max.bytes 1000000). */
    buf_t big = {0};
    put_fill(&big, 'b', 1500 * 1000);
    evspec_t e = valid_spec("id-1500k");
    e.source_id = (str_t){(const char *)big.p, big.len};
    buf_t ev = event_bytes(&e);
    /* Alone in its batch: a NOW marker inside zstd could not be replaced. */
    p = batch_zstd(9, &ev, 1);
    emit_batch_frame("zstd_source_id_1500KB", "reject:FIELD_TOO_LONG", NULL,
                     "a 1.5 MB source_id via zstd: rejected (event over validate.max_event_bytes); "
                     "its dead-letter record is cut to that size and has no key, so it fits Kafka",
                     &p);
    RESET();
    buf_free(&ev);
    buf_free(&big);
  }
  {
    buf_t unk = {0};
    buf_t big = {0};
    put_fill(&big, 0, 1000 * 1000);
    put_bytes(&unk, 15, big.p, big.len);
    evspec_t e = valid_spec("unknown-1MB");
    e.extra = &unk;
    buf_t bad = event_bytes(&e);
    emit_reject("ev_unknown_field_1MB", "FIELD_TOO_LONG", NULL,
                "an otherwise valid event carrying a 1 MB unknown field (fits "
                "gateway.max_frame_bytes): over validate.max_event_bytes, so rejected rather "
                "than failing to produce on every retransmit",
                &bad);
    buf_free(&bad);
    buf_free(&unk);
    buf_free(&big);
  }

  /* --- hostile but valid: ACCEPTED ------------------------------------------------------------- */
  {
    buf_t extra = {0};
    put_uint(&extra, 12, 1);
    put_tag(&extra, 13, I32);
    put(&extra, "\x01\x02\x03\x04", 4);
    put_tag(&extra, 14, I64);
    put(&extra, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    put_bytes(&extra, 0x1fffffff, "max field number", 16);
    put_tag(&extra, 1000, VARINT);
    put_fill(&extra, 0xff, 9);
    put_byte(&extra, 0x01);
    evspec_t e = valid_spec("unknown-fields");
    e.extra = &extra;
    buf_t ev = event_bytes(&e);
    p = batch_of(11, &ev, 1);
    emit_batch_frame("ev_unknown_fields", "accept", NULL,
                     "unknown fields of every wire type, field 2^29-1: skipped, passed through",
                     &p);
    RESET();
    buf_free(&ev);
    buf_free(&extra);

    /* 2000 levels of nested length-delimited fields inside an unknown field */
    buf_t nest = {0};
    for (int i = 0; i < 2000; i++) {
      buf_t outer = {0};
      put_buf(&outer, 1, &nest);
      buf_free(&nest);
      nest = outer;
    }
    put_tag(&extra, 15, LEN);
    put_varint(&extra, nest.len);
    put(&extra, nest.p, nest.len);
    e = valid_spec("deep-nesting");
    e.extra = &extra;
    ev = event_bytes(&e);
    p = batch_of(12, &ev, 1);
    emit_batch_frame("ev_deep_nesting", "accept", NULL,
                     "an unknown field holding 2000 nested messages: skipped as bytes, no "
                     "recursion",
                     &p);
    RESET();
    buf_free(&ev);
    buf_free(&extra);
    buf_free(&nest);

    e = valid_spec("seq-max");
    e.seq = UINT64_MAX;
    ev = event_bytes(&e);
    p = batch_of(UINT64_MAX, &ev, 1);
    emit_batch_frame("ev_seq_u64max", "accept", NULL,
                     "event seq and batch seq 2^64-1 (10-byte varints); the ack echoes the seq",
                     &p);
    RESET();
    buf_free(&ev);

    /* Fields repeated: the last one wins; locations merge. */
    e = valid_spec("repeat-first");
    e.source_id = S("hostile-first-source");
    ev = event_bytes(&e);
    evspec_t e2 = {0};
    e2.source_id = S("hostile-smoke-0001");
    e2.event_id = S("repeat-last");
    e2.has_location = 1;
    e2.lon = 121.5;
    e2.lat = 30.25;
    encode_event(&ev, &e2);
    p = batch_of(13, &ev, 1);
    emit_batch_frame("ev_repeated_fields", "accept", NULL,
                     "source_id, event_id and location sent twice: the last wins", &p);
    RESET();
    buf_free(&ev);

    e = valid_spec("nul-in-id\0x");
    e.event_id = S("nul-in-id\0x");
    e.type = S("smoke\0alarm");
    ev = event_bytes(&e);
    p = batch_of(14, &ev, 1);
    emit_batch_frame("ev_nul_bytes", "accept", NULL,
                     "NUL bytes inside event_id and type: valid UTF-8, passed through", &p);
    RESET();
    buf_free(&ev);

    put_uint(&p, 1, 15);
    emit_batch_frame("batch_empty", "accept", NULL, "a batch with no events: acked OK, no outcomes",
                     &p);
    RESET();

    e = valid_spec("batch-unknown");
    ev = event_bytes(&e);
    p = batch_of(16, &ev, 1);
    put_bytes(&p, 99, "future", 6);
    put_uint(&p, 100, 7);
    emit_batch_frame("batch_unknown_fields", "accept", NULL, "unknown Batch fields are skipped", &p);
    RESET();
    buf_free(&ev);
  }

  /* --- the batch itself refused ------------------------------------------------------------------ */
  {
    buf_t evs[101];
    for (int i = 0; i < 101; i++) {
      evs[i] = (buf_t){0};
      put(&evs[i], "\x0a\x01x", 3);
    }
    p = batch_of(17, evs, 101);
    emit_batch_frame("batch_101_events", "batch_rejected", NULL,
                     "101 events, gateway.max_batch_events 100", &p);
    RESET();
    for (int i = 0; i < 101; i++)
      buf_free(&evs[i]);
  }
#undef RESET
  if (fclose(manifest) != 0)
    die("MANIFEST: %s", strerror(errno));
}

/* ---- fuzz seeds ----------------------------------------------------------------------------- */

static void seed(const char *dir, const char *name, const void *p, size_t n) {
  write_file(dir, name, p, n);
}

static void gen_fuzz(void) {
  const char *batch = batch_dir, *frame = frame_dir, *config = config_dir;

  /* Valid batches: plain and zstd, 1 and 5 events, with every field set. */
  buf_t evs[5];
  for (int i = 0; i < 5; i++) {
    char id[32];
    snprintf(id, sizeof id, "seed-%d", i);
    evspec_t e = valid_spec(id);
    e.seq = (uint64_t)i + 1;
    e.n_attrs = 2;
    e.attr_key[1] = S("zone");
    e.attr_value[1] = S("north");
    e.payload = S("http://snap/1.jpg");
    evs[i] = event_bytes(&e);
  }
  buf_t b1 = batch_of(1, evs, 1), b5 = batch_of(2, evs, 5);
  buf_t z1 = batch_zstd(3, evs, 1), z5 = batch_zstd(4, evs, 5);
  seed(batch, "valid_1", b1.p, b1.len);
  seed(batch, "valid_5", b5.p, b5.len);
  seed(batch, "valid_zstd_1", z1.p, z1.len);
  seed(batch, "valid_zstd_5", z5.p, z5.len);
  seed(batch, "empty", "", 0);

  /* Streams: HELLO, then batches. */
  buf_t hello = hello_payload("gw-fuzz", 7, 1), s = {0};
  put_frame(&s, 1, &hello);
  seed(frame, "hello", s.p, s.len);
  put_frame(&s, 3, &b1);
  seed(frame, "hello_batch", s.p, s.len);
  put_frame(&s, 3, &z5);
  put_frame(&s, 3, &b5);
  seed(frame, "hello_batches", s.p, s.len);
  buf_free(&s);
  put_frame(&s, 3, &b1);
  seed(frame, "batch_before_hello", s.p, s.len);
  buf_free(&s);

  for (int i = 0; i < 5; i++)
    buf_free(&evs[i]);
  buf_free(&b1);
  buf_free(&b5);
  buf_free(&z1);
  buf_free(&z5);
  buf_free(&hello);

  /* Config seeds beyond the shipped one (copied by gen_corpus.sh). */
  static const struct {
    const char *name, *yaml;
  } configs[] = {
      {"empty.yaml", ""},
      {"minimal.yaml", "listen:\n  port: 0\nkafka:\n  mode: embedded\n"},
      {"brokers.yaml", "kafka:\n  mode: brokers\n  brokers: \"k1:9092,k2:9092\"\n"
                       "  properties:\n    linger.ms: 5\n    security.protocol: plaintext\n"},
      {"rules.yaml",
       "routes:\n  default_topic: a.b\n  dead_letter_topic: a.dlq\n  rules:\n"
       "    - name: r1\n      match: {kind: [sensor, camera], severity: 2,\n"
       "              region_prefix: [\"33\", \"3307\"], attributes: {zone: north, x: ~}}\n"
       "      topics: [t1, t2]\n      stop: true\n"
       "    - name: r2\n      topics: t3\n      match:\n        type: [smoke.alarm]\n"
       "        severity: {min: 1, max: 3}\n"},
      {"anchors.yaml", "validate: &v\n  max_id_bytes: 32\n"
                       "routes:\n  rules:\n    - &r {name: a, topics: [x]}\n    - *r\n"},
      {"durations.yaml", "listen:\n  idle_timeout: 1d\ngateway:\n  hello_timeout: 100ms\n"
                         "  max_frame_bytes: 64MiB\ndedup:\n  window: 7d\n  memory: 1MiB\n"
                         "log:\n  stats_interval: 0\n  level: debug\n"},
      {"bad_unknown_key.yaml", "listen:\n  prot: 1\n"},
      {"bad_duplicate.yaml", "listen:\n  port: 1\n  port: 2\n"},
      {"bad_bounds.yaml", "dedup:\n  window: 30d\ngateway:\n  max_frame_bytes: 12\n"},
      {"bad_syntax.yaml", "listen: [\n  port: 1\n"},
      {"bad_two_docs.yaml", "listen: {}\n---\nlisten: {}\n"},
      {"bad_types.yaml", "listen: 5\ngateway: [1, 2]\nroutes:\n  rules: {a: b}\n"},
      {"bad_number.yaml", "listen:\n  port: 99999999999999999999999\n  max_connections: -1\n"},
      {"bad_tabs_utf8.yaml", "listen:\n\taddress: \"\xff\xfe\"\n"},
  };
  for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++)
    seed(config, configs[i].name, configs[i].yaml, strlen(configs[i].yaml));
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: gen_corpus HOSTILE_DIR FUZZ_DIR\n");
    return 2;
  }
  out_dir = argv[1];
  snprintf(batch_dir, sizeof batch_dir, "%s/batch", argv[2]);
  snprintf(frame_dir, sizeof frame_dir, "%s/frame", argv[2]);
  snprintf(config_dir, sizeof config_dir, "%s/config", argv[2]);
  mkdir_p(out_dir);
  mkdir_p(argv[2]);
  mkdir_p(batch_dir);
  mkdir_p(frame_dir);
  mkdir_p(config_dir);
  gen_hostile();
  gen_fuzz();
  return 0;
}
