/* What the libFuzzer targets share: the daemon's shipped config, a decoder bounded like the
 * daemon's, and the checks run on every batch payload and every event.
 *
 * A failed invariant prints what and where, then aborts, which libFuzzer reports as a crash
 * with the input saved. */
#ifndef INTAKE_FUZZ_COMMON_H
#define INTAKE_FUZZ_COMMON_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../hostile/hostile.h"
#include "config/config.h"
#include "decode/batch.h"
#include "decode/event.h"
#include "decode/validate.h"
#include "intake.pb-c.h"
#include "route/route.h"

#ifndef INTAKE_SOURCE_DIR
#error "INTAKE_SOURCE_DIR must be defined"
#endif

#define FUZZ_CHECK(cond)                                                                     \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
      abort();                                                                               \
    }                                                                                        \
  } while (0)

/* UBSan settings for every run, also when a reproducer is run by hand: abort on the first
 * finding, except those listed (with their report) in ubsan.supp. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1:suppressions=" INTAKE_SOURCE_DIR "/tests/fuzz/ubsan.supp";
}

/* The clock the targets validate against: the hostile corpus's NOW marker, so that seeds with
 * the marker pass the time checks and every run is deterministic. */
#define FUZZ_NOW_MS ((int64_t)INTAKE_NOW_MARKER)

typedef struct {
  intake_config_t cfg;       /* conf/intaked.yaml, as shipped */
  intake_decoder_t *decoder; /* bounded by cfg.max_decompressed_bytes, like the daemon's */
  intake_router_t *router;   /* the shipped rules */
} fuzz_ctx_t;

/* Built on first use and kept for the process (libFuzzer never tears targets down). */
static inline fuzz_ctx_t *fuzz_ctx(void) {
  static fuzz_ctx_t ctx;
  static int ready;
  if (ready)
    return &ctx;
  char err[512];
  if (intake_config_load(&ctx.cfg, INTAKE_SOURCE_DIR "/conf/intaked.yaml", err, sizeof err) < 0) {
    fprintf(stderr, "fuzz: %s\n", err);
    abort();
  }
  ctx.decoder = intake_decoder_create(ctx.cfg.max_decompressed_bytes);
  ctx.router = intake_router_create(&ctx.cfg, err, sizeof err);
  if (!ctx.decoder || !ctx.router) {
    fprintf(stderr, "fuzz: decoder/router: %s\n", err);
    abort();
  }
  ready = 1;
  return &ctx;
}

static inline int fuzz_inside(const void *p, size_t n, const uint8_t *lo, const uint8_t *hi) {
  const uint8_t *q = p;
  return n == 0 || (q >= lo && q <= hi && (size_t)(hi - q) >= n);
}

/* ---- differential check against protobuf-c --------------------------------------------------
 *
 * intake_event_parse() and protobuf-c's intake__v1__event__unpack() read the same proto3 wire
 * format, so they should accept the same bytes and see the same values. Not quite, for reasons
 * read in protobuf-c 1.4's protobuf-c.c, and only the rest is asserted:
 *
 *  - protobuf-c reads a tag in at most 5 bytes and a length prefix in at most 5 bytes
 *    (parse_tag_and_wiretype, scan_length_prefixed_data), and takes field numbers over 2^29-1
 *    as unknown fields; intake_event_parse() reads any varint of up to 10 bytes, as the
 *    protobuf spec asks of parsers, and refuses field 0 and fields over 2^29-1.
 *  - protobuf-c does not check the wire type of a bool field (parse_required_member's
 *    PROTOBUF_C_TYPE_BOOL case): `clear` (field 11) sent length-delimited is accepted there and
 *    refused here.
 *    So acceptance is compared only for "canonical" inputs (fuzz_pb_canonical()): every tag and
 *    length minimally encoded in at most 5 bytes, field numbers 1..2^29-1, field 11 a varint.
 *  - A repeated embedded message (location) is merged differently: protobuf-c's
 *    merge_messages() drops an earlier double the later occurrence leaves out
 *    (location {lon: 500} then location {region: "1"} gives lon 0 there), while intake parses
 *    the later occurrence over the earlier one and keeps lon 500, as the spec's MergeFrom
 *    semantics say (and then rejects it: bad_location). Location values are compared only
 *    when it occurs once.
 *  - uint32 and enum fields: protobuf-c keeps the low 32 bits of a wider varint, as the spec
 *    says; intake clamps to UINT32_MAX so that validation refuses it (severity 2^32+1 is not
 *    severity 1). Values are compared unless intake clamped.
 *  - strings: protobuf-c returns NUL-terminated copies, so a string is compared up to its
 *    first NUL. protobuf-c does not check UTF-8 (proto3 says parsers should), so invalid UTF-8
 *    is no difference in acceptance; intake_validate() refuses it later.
 *  - unknown fields: both skip them (protobuf-c keeps a copy); groups: both refuse them.
 */

/* Reads a varint of at most 10 bytes; sets *nbytes. Returns 0 or -1. */
static inline int fuzz_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v, int *nbytes) {
  uint64_t x = 0;
  for (int i = 0; i < 10; i++) {
    if (*p >= end)
      return -1;
    uint8_t b = *(*p)++;
    x |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *v = x;
      *nbytes = i + 1;
      return (i > 0 && b == 0) ? -2 : 0; /* -2: valid but not minimal */
    }
  }
  return -1;
}

/* 1 when every tag and length in buf (and in Location / map-entry submessages, for kind 0 =
 * Event) is minimal, at most 5 bytes, with field numbers 1..2^29-1, and the Event's field 11
 * is a varint. 0 otherwise, or when the walk itself fails. Counts Event field 8 in *n_loc. */
static inline int fuzz_pb_canonical(const uint8_t *p, size_t len, int kind, int *n_loc) {
  const uint8_t *end = p + len;
  while (p < end) {
    uint64_t tag, v;
    int n;
    if (fuzz_pb_varint(&p, end, &tag, &n) != 0 || n > 5)
      return 0;
    uint64_t field = tag >> 3;
    if (field == 0 || field > 0x1fffffff)
      return 0;
    if (kind == 0 && field == 11 && (tag & 7) != 0)
      return 0;
    switch (tag & 7) {
    case 0:
      if (fuzz_pb_varint(&p, end, &v, &n) == -1)
        return 0;
      break;
    case 1:
      if (end - p < 8)
        return 0;
      p += 8;
      break;
    case 5:
      if (end - p < 4)
        return 0;
      p += 4;
      break;
    case 2:
      if (fuzz_pb_varint(&p, end, &v, &n) != 0 || n > 5 || v > (uint64_t)(end - p))
        return 0;
      if (kind == 0 && (field == 8 || field == 9) && !fuzz_pb_canonical(p, (size_t)v, 1, NULL))
        return 0;
      if (kind == 0 && field == 8)
        (*n_loc)++;
      p += v;
      break;
    default:
      return 0;
    }
  }
  return 1;
}

static inline void fuzz_same_str(intake_str_t s, const char *c) {
  FUZZ_CHECK(c != NULL);
  size_t n = strnlen(s.ptr, s.len);
  FUZZ_CHECK(strlen(c) == n);
  FUZZ_CHECK(memcmp(s.ptr, c, n) == 0);
}

static inline void fuzz_differential(const uint8_t *raw, size_t len, int rc, const intake_event_t *ev) {
  Intake__V1__Event *pc = intake__v1__event__unpack(NULL, len, raw);
  int n_loc = 0, canonical = fuzz_pb_canonical(raw, len, 0, &n_loc);
  if (canonical) {
    if (rc == 0 && pc == NULL)
      fprintf(stderr, "intake_event_parse accepts what protobuf-c refuses\n");
    if (rc != 0 && pc != NULL)
      fprintf(stderr, "protobuf-c accepts what intake_event_parse refuses\n");
    FUZZ_CHECK((rc == 0) == (pc != NULL));
  }
  if (rc == 0 && pc != NULL) {
    fuzz_same_str(ev->source_id, pc->source_id);
    fuzz_same_str(ev->event_id, pc->event_id);
    fuzz_same_str(ev->type, pc->type);
    if (ev->source_kind != UINT32_MAX)
      FUZZ_CHECK(ev->source_kind == (uint32_t)pc->source_kind);
    if (ev->severity != UINT32_MAX)
      FUZZ_CHECK(ev->severity == pc->severity);
    FUZZ_CHECK(ev->seq == pc->seq);
    FUZZ_CHECK(ev->time_ms == pc->time_ms);
    FUZZ_CHECK(ev->clear == (pc->clear != 0));
    FUZZ_CHECK(ev->has_location == (pc->location != NULL));
    if (pc->location && canonical && n_loc == 1) {
      FUZZ_CHECK(memcmp(&ev->lon, &pc->location->lon, 8) == 0);
      FUZZ_CHECK(memcmp(&ev->lat, &pc->location->lat, 8) == 0);
      fuzz_same_str(ev->region, pc->location->region);
    }
    FUZZ_CHECK(ev->payload.len == pc->payload.len);
    FUZZ_CHECK(ev->payload.len == 0 || memcmp(ev->payload.ptr, pc->payload.data, ev->payload.len) == 0);
    FUZZ_CHECK(ev->n_attributes == pc->n_attributes);
    intake_attr_iter_t it;
    intake_str_t k, v;
    size_t i = 0;
    intake_event_attributes(ev, &it);
    while (intake_attr_next(&it, &k, &v)) {
      FUZZ_CHECK(i < pc->n_attributes);
      fuzz_same_str(k, pc->attributes[i]->key);
      fuzz_same_str(v, pc->attributes[i]->value);
      i++;
    }
    FUZZ_CHECK(i == pc->n_attributes);
  }
  if (pc)
    intake__v1__event__free_unpacked(pc, NULL);
}

/* ---- reference implementations: slow and obviously right ---------------------------------------- */

/* Well-formed UTF-8 by the table in RFC 3629 section 4 (no overlongs, no surrogates, nothing
 * over U+10FFFF). */
static inline int fuzz_ref_utf8(const char *str, size_t n) {
  const uint8_t *s = (const uint8_t *)str;
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t k;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
      k = 1;
    else if (c == 0xe0)
      k = 2, lo = 0xa0;
    else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
      k = 2;
    else if (c == 0xed)
      k = 2, hi = 0x9f;
    else if (c == 0xf0)
      k = 3, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3)
      k = 3;
    else if (c == 0xf4)
      k = 3, hi = 0x8f;
    else
      return 0;
    if (n - i - 1 < k || s[i + 1] < lo || s[i + 1] > hi)
      return 0;
    for (size_t j = 2; j <= k; j++)
      if (s[i + j] < 0x80 || s[i + j] > 0xbf)
        return 0;
    i += k + 1;
  }
  return 1;
}

static inline int fuzz_ref_ascii(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((uint8_t)s[i] >= 0x80)
      return 0;
  return 1;
}

/* The string helpers of decode/ against the references, on any bytes. */
static inline void fuzz_text(const char *s, size_t n) {
  FUZZ_CHECK(intake_utf8_valid(s, n) == (bool)fuzz_ref_utf8(s, n));
  FUZZ_CHECK(intake_ascii(s, n) == (bool)fuzz_ref_ascii(s, n));
}

/* ---- one event, as the pipeline handles it ---------------------------------------------------- */

static inline void fuzz_event(fuzz_ctx_t *c, const uint8_t *raw, uint32_t len) {
  intake_event_t ev;
  int rc = intake_event_parse(raw, len, &ev);
  FUZZ_CHECK(rc == 0 || rc == -1);
  fuzz_differential(raw, len, rc, &ev);
  if (rc < 0)
    return;

  /* Every view points into the event's own bytes. */
  const uint8_t *end = raw + len;
  FUZZ_CHECK(ev.raw == raw && ev.raw_len == len);
  FUZZ_CHECK(fuzz_inside(ev.source_id.ptr, ev.source_id.len, raw, end) || ev.source_id.len == 0);
  FUZZ_CHECK(fuzz_inside(ev.event_id.ptr, ev.event_id.len, raw, end));
  FUZZ_CHECK(fuzz_inside(ev.type.ptr, ev.type.len, raw, end));
  FUZZ_CHECK(fuzz_inside(ev.region.ptr, ev.region.len, raw, end));
  FUZZ_CHECK(fuzz_inside(ev.payload.ptr, ev.payload.len, raw, end));
  FUZZ_CHECK(ev.source_id.ptr && ev.event_id.ptr && ev.type.ptr && ev.region.ptr && ev.payload.ptr);

  fuzz_text(ev.source_id.ptr, ev.source_id.len);
  fuzz_text(ev.event_id.ptr, ev.event_id.len);
  fuzz_text(ev.type.ptr, ev.type.len);
  fuzz_text(ev.region.ptr, ev.region.len);
  fuzz_text(ev.payload.ptr, ev.payload.len);

  /* The attribute walk yields exactly the entries parse counted, inside the event, and parse's
   * summary of them (which lets validation skip work) is right. */
  intake_attr_iter_t it;
  intake_str_t k, v, last_unit = {NULL, 0};
  uint32_t n = 0, max_len = 0;
  int non_ascii = 0, attrs_utf8 = 1;
  intake_event_attributes(&ev, &it);
  while (intake_attr_next(&it, &k, &v)) {
    FUZZ_CHECK(fuzz_inside(k.ptr, k.len, raw, end) && fuzz_inside(v.ptr, v.len, raw, end));
    if (k.len == 4 && memcmp(k.ptr, "unit", 4) == 0)
      last_unit = v;
    max_len = k.len > max_len ? k.len : max_len;
    max_len = v.len > max_len ? v.len : max_len;
    non_ascii |= !fuzz_ref_ascii(k.ptr, k.len) || !fuzz_ref_ascii(v.ptr, v.len);
    attrs_utf8 &= fuzz_ref_utf8(k.ptr, k.len) && fuzz_ref_utf8(v.ptr, v.len);
    fuzz_text(k.ptr, k.len);
    fuzz_text(v.ptr, v.len);
    n++;
  }
  FUZZ_CHECK(n == ev.n_attributes);
  FUZZ_CHECK(ev.attr_max_len == max_len);
  FUZZ_CHECK(ev.attr_non_ascii == (bool)non_ascii);
  intake_str_t found;
  int has = intake_event_attribute(&ev, "unit", 4, &found);
  FUZZ_CHECK(has == (last_unit.ptr != NULL));
  if (has)
    FUZZ_CHECK(found.ptr == last_unit.ptr && found.len == last_unit.len);

  char detail[128];
  memset(detail, 0x7f, sizeof detail);
  intake_reject_t r = intake_validate(&ev, &c->cfg, FUZZ_NOW_MS, detail, sizeof detail);
  FUZZ_CHECK((unsigned)r < INTAKE_REJECT_COUNT && r != INTAKE_REJECT_MALFORMED);
  FUZZ_CHECK(memchr(detail, '\0', sizeof detail) != NULL);
  FUZZ_CHECK(strcmp(intake_reject_name(r), "unknown") != 0);
  if (r != INTAKE_REJECT_NONE) {
    FUZZ_CHECK(detail[0] != '\0');
    return;
  }
  /* What validation promises the rest of the pipeline. */
  FUZZ_CHECK(ev.source_id.len >= 1 && ev.source_id.len <= c->cfg.max_id_bytes);
  FUZZ_CHECK(ev.event_id.len >= 1 && ev.event_id.len <= c->cfg.max_id_bytes);
  FUZZ_CHECK(ev.type.len >= 1 && ev.type.len <= c->cfg.max_type_bytes);
  FUZZ_CHECK(fuzz_ref_utf8(ev.source_id.ptr, ev.source_id.len));
  FUZZ_CHECK(fuzz_ref_utf8(ev.event_id.ptr, ev.event_id.len));
  FUZZ_CHECK(fuzz_ref_utf8(ev.type.ptr, ev.type.len));
  FUZZ_CHECK(attrs_utf8 && max_len <= c->cfg.max_attribute_bytes);
  FUZZ_CHECK(ev.source_kind >= 1 && ev.source_kind <= INTAKE_KIND_MAX);
  FUZZ_CHECK(ev.severity <= INTAKE_MAX_SEVERITY);
  FUZZ_CHECK(ev.payload.len <= c->cfg.max_payload_bytes);
  FUZZ_CHECK(ev.n_attributes <= c->cfg.max_attributes);

  intake_route_target_t out[INTAKE_ROUTE_MAX_TOPICS];
  size_t nt = intake_router_route(c->router, &ev, out);
  FUZZ_CHECK(nt >= 1 && nt <= INTAKE_ROUTE_MAX_TOPICS);
  for (size_t i = 0; i < nt; i++) {
    FUZZ_CHECK(out[i].topic < intake_router_n_topics(c->router));
    FUZZ_CHECK(out[i].rule < intake_router_n_rules(c->router));
    for (size_t j = 0; j < i; j++)
      FUZZ_CHECK(out[j].topic != out[i].topic); /* each topic at most once */
  }
}

/* ---- one BATCH payload, as intake_pipeline_submit() walks it ----------------------------------
 * Returns 0 when the batch opened (the daemon would ack it), -1 for a protocol error. */
static inline int fuzz_batch_payload(fuzz_ctx_t *c, const uint8_t *data, size_t size) {
  intake_batch_t b;
  const char *detail = NULL;
  intake_batch_status_t st = intake_batch_open(c->decoder, data, size, &b, &detail);
  if (st != INTAKE_BATCH_OK) {
    FUZZ_CHECK(st == INTAKE_BATCH_MALFORMED || st == INTAKE_BATCH_BAD_ZSTD);
    FUZZ_CHECK(detail != NULL && detail[0] != '\0');
    return -1;
  }
  /* Events point into the payload, or into the decompressed content (at most the bound). */
  const uint8_t *lo = b._p, *hi = b._end;
  FUZZ_CHECK(lo == hi || (lo == data && hi == data + size) ||
             (size_t)(hi - lo) <= c->cfg.max_decompressed_bytes);
  const uint8_t *raw;
  uint32_t len, n = 0;
  while (intake_batch_next(&b, &raw, &len)) {
    FUZZ_CHECK(fuzz_inside(raw, len, lo, hi));
    fuzz_event(c, raw, len);
    n++;
  }
  FUZZ_CHECK(n == b.n_events);
  return 0;
}

#endif
