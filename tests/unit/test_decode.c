/* Zero-copy decode (checked against protobuf-c's own packing), batches with and without zstd,
 * and validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "config/config.h"
#include "decode/batch.h"
#include "decode/event.h"
#include "decode/validate.h"
#include "intake.pb-c.h"

#define NOW 1764300000000LL

static Intake__V1__Event make_event(const char *src, const char *id) {
  Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
  e.source_id = (char *)src;
  e.event_id = (char *)id;
  e.source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA;
  e.type = "gb28181.alarm.6";
  e.severity = 2;
  e.time_ms = NOW - 1000;
  return e;
}

static size_t pack_event(const Intake__V1__Event *e, uint8_t *out) {
  return intake__v1__event__pack(e, out);
}

static void test_parse_matches_protobuf_c(void **state) {
  (void)state;
  Intake__V1__Event e = make_event("13131313131320000001", "evt-42");
  e.seq = 77;
  e.clear = 1;
  Intake__V1__Location loc = INTAKE__V1__LOCATION__INIT;
  loc.lon = 120.07;
  loc.lat = 29.3;
  loc.region = "330782";
  e.location = &loc;
  Intake__V1__Event__AttributesEntry a1 = INTAKE__V1__EVENT__ATTRIBUTES_ENTRY__INIT, a2 = a1;
  a1.key = "zone";
  a1.value = "north";
  a2.key = "value";
  a2.value = "3.5";
  Intake__V1__Event__AttributesEntry *attrs[] = {&a1, &a2};
  e.n_attributes = 2;
  e.attributes = attrs;
  e.payload.data = (uint8_t *)"http://x/y.jpg";
  e.payload.len = 14;
  uint8_t buf[512];
  size_t n = pack_event(&e, buf);

  intake_event_t ev;
  assert_int_equal(intake_event_parse(buf, n, &ev), 0);
  assert_ptr_equal(ev.raw, buf);
  assert_int_equal(ev.raw_len, n);
  assert_int_equal(ev.source_id.len, 20);
  assert_memory_equal(ev.source_id.ptr, "13131313131320000001", 20);
  assert_memory_equal(ev.event_id.ptr, "evt-42", 6);
  assert_int_equal(ev.source_kind, INTAKE_KIND_CAMERA);
  assert_int_equal(ev.seq, 77);
  assert_memory_equal(ev.type.ptr, "gb28181.alarm.6", 15);
  assert_int_equal(ev.severity, 2);
  assert_true(ev.time_ms == NOW - 1000);
  assert_true(ev.has_location);
  assert_true(ev.lon == 120.07 && ev.lat == 29.3);
  assert_memory_equal(ev.region.ptr, "330782", 6);
  assert_int_equal(ev.n_attributes, 2);
  assert_int_equal(ev.payload.len, 14);
  assert_true(ev.clear);
  intake_str_t v;
  assert_true(intake_event_attribute(&ev, "zone", 4, &v));
  assert_int_equal(v.len, 5);
  assert_memory_equal(v.ptr, "north", 5);
  assert_false(intake_event_attribute(&ev, "zon", 3, &v));
  intake_attr_iter_t it;
  intake_str_t k;
  intake_event_attributes(&ev, &it);
  assert_int_equal(intake_attr_next(&it, &k, &v), 1);
  assert_memory_equal(k.ptr, "zone", 4);
  assert_int_equal(intake_attr_next(&it, &k, &v), 1);
  assert_memory_equal(k.ptr, "value", 5);
  assert_int_equal(intake_attr_next(&it, &k, &v), 0);
}

static void test_parse_skips_unknown_fields(void **state) {
  (void)state;
  Intake__V1__Event e = make_event("s", "1");
  uint8_t buf[256];
  size_t n = pack_event(&e, buf);
  /* field 99 varint, field 100 length-delimited, field 101 fixed32 */
  const uint8_t extra[] = {0x98, 0x06, 0x05, 0xa2, 0x06, 0x02, 'h', 'i', 0xad, 0x06, 1, 2, 3, 4};
  memcpy(buf + n, extra, sizeof extra);
  intake_event_t ev;
  assert_int_equal(intake_event_parse(buf, n + sizeof extra, &ev), 0);
  assert_memory_equal(ev.source_id.ptr, "s", 1);
}

static void test_parse_rejects_every_truncation(void **state) {
  (void)state;
  Intake__V1__Event e = make_event("13131313131320000001", "evt-42");
  uint8_t buf[256];
  size_t n = pack_event(&e, buf);
  intake_event_t ev;
  int failures = 0;
  /* Every strict prefix ends inside a field here (no field boundary falls on these cut points
   * except between fields, which is a valid shorter event): count the clean failures. */
  for (size_t cut = 0; cut < n; cut++) {
    uint8_t *copy = malloc(cut ? cut : 1); /* exact size, so ASan sees any overread */
    memcpy(copy, buf, cut);
    if (intake_event_parse(copy, cut, &ev) < 0)
      failures++;
    free(copy);
  }
  assert_true(failures > 0);
  /* Wrong wire type for a known field, group wire types, and varints that never end. */
  const uint8_t wrong_type[] = {0x08, 0x01}; /* field 1 (string) as varint */
  assert_int_equal(intake_event_parse(wrong_type, sizeof wrong_type, &ev), -1);
  const uint8_t group[] = {0x63};
  assert_int_equal(intake_event_parse(group, sizeof group, &ev), -1);
  const uint8_t endless[] = {0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  assert_int_equal(intake_event_parse(endless, sizeof endless, &ev), -1);
  const uint8_t lying_len[] = {0x0a, 0x7f, 'a'};
  assert_int_equal(intake_event_parse(lying_len, sizeof lying_len, &ev), -1);
}

static size_t pack_batch(uint64_t seq, Intake__V1__Event **events, size_t n, uint8_t *out) {
  Intake__V1__Batch b = INTAKE__V1__BATCH__INIT;
  b.seq = seq;
  b.n_events = n;
  b.events = events;
  return intake__v1__batch__pack(&b, out);
}

static void test_batch_plain_and_zstd(void **state) {
  (void)state;
  Intake__V1__Event e1 = make_event("a", "1"), e2 = make_event("b", "2"), e3 = make_event("c", "3");
  Intake__V1__Event *events[] = {&e1, &e2, &e3};
  uint8_t plain[1024];
  size_t n = pack_batch(9, events, 3, plain);
  intake_decoder_t *d = intake_decoder_create(1 << 20);
  intake_batch_t b;
  const char *detail = NULL;
  assert_int_equal(intake_batch_open(d, plain, n, &b, &detail), INTAKE_BATCH_OK);
  assert_int_equal(b.seq, 9);
  assert_int_equal(b.n_events, 3);
  const uint8_t *raw;
  uint32_t len;
  const char *want[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(intake_batch_next(&b, &raw, &len), 1);
    intake_event_t ev;
    assert_int_equal(intake_event_parse(raw, len, &ev), 0);
    assert_memory_equal(ev.source_id.ptr, want[i], 1);
  }
  assert_int_equal(intake_batch_next(&b, &raw, &len), 0);

  /* The same events as events_zstd: zstd of a Batch holding only the events. */
  uint8_t inner[1024], z[1024], outer[2048];
  size_t in = pack_batch(0, events, 3, inner);
  size_t zn = ZSTD_compress(z, sizeof z, inner, in, 1);
  assert_false(ZSTD_isError(zn));
  Intake__V1__Batch ob = INTAKE__V1__BATCH__INIT;
  ob.seq = 10;
  ob.events_zstd.data = z;
  ob.events_zstd.len = zn;
  size_t on = intake__v1__batch__pack(&ob, outer);
  assert_int_equal(intake_batch_open(d, outer, on, &b, &detail), INTAKE_BATCH_OK);
  assert_int_equal(b.seq, 10);
  assert_int_equal(b.n_events, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(intake_batch_next(&b, &raw, &len), 1);
  assert_int_equal(intake_batch_next(&b, &raw, &len), 0);
  intake_decoder_destroy(d);
}

static void test_batch_zstd_errors(void **state) {
  (void)state;
  intake_decoder_t *d = intake_decoder_create(4096);
  intake_batch_t b;
  const char *detail = NULL;
  uint8_t outer[64 * 1024];
  Intake__V1__Batch ob = INTAKE__V1__BATCH__INIT;

  /* Not zstd at all. */
  ob.events_zstd.data = (uint8_t *)"not zstd at all";
  ob.events_zstd.len = 15;
  size_t on = intake__v1__batch__pack(&ob, outer);
  assert_int_equal(intake_batch_open(d, outer, on, &b, &detail), INTAKE_BATCH_BAD_ZSTD);

  /* A bomb: 1 MiB of zeros compresses to a few bytes but declares more than the 4 KiB limit. */
  size_t big = 1 << 20;
  uint8_t *zeros = calloc(1, big), z[8192];
  size_t zn = ZSTD_compress(z, sizeof z, zeros, big, 1);
  free(zeros);
  ob.events_zstd.data = z;
  ob.events_zstd.len = zn;
  on = intake__v1__batch__pack(&ob, outer);
  assert_int_equal(intake_batch_open(d, outer, on, &b, &detail), INTAKE_BATCH_BAD_ZSTD);
  assert_non_null(strstr(detail, "max_decompressed_bytes"));

  /* A stream without a content size in its header. */
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
  zn = ZSTD_compress2(cc, z, sizeof z, "abc", 3);
  ZSTD_freeCCtx(cc);
  ob.events_zstd.len = zn;
  on = intake__v1__batch__pack(&ob, outer);
  assert_int_equal(intake_batch_open(d, outer, on, &b, &detail), INTAKE_BATCH_BAD_ZSTD);

  /* Truncated frame. */
  zn = ZSTD_compress(z, sizeof z, "hello hello hello", 17, 1);
  ob.events_zstd.len = zn - 2;
  on = intake__v1__batch__pack(&ob, outer);
  assert_int_equal(intake_batch_open(d, outer, on, &b, &detail), INTAKE_BATCH_BAD_ZSTD);

  /* Decompresses, but not to a Batch. */
  ob.events_zstd.len = zn;
  on = intake__v1__batch__pack(&ob, outer);
  assert_int_equal(intake_batch_open(d, outer, on, &b, &detail), INTAKE_BATCH_MALFORMED);

  /* Garbage instead of a Batch. */
  const uint8_t junk[] = {0xff, 0xff, 0xff};
  assert_int_equal(intake_batch_open(d, junk, sizeof junk, &b, &detail), INTAKE_BATCH_MALFORMED);
  intake_decoder_destroy(d);
}

static intake_reject_t validate_packed(const Intake__V1__Event *e, const intake_config_t *cfg) {
  uint8_t buf[8192];
  size_t n = pack_event(e, buf);
  intake_event_t ev;
  assert_int_equal(intake_event_parse(buf, n, &ev), 0);
  char detail[96];
  return intake_validate(&ev, cfg, NOW, detail, sizeof detail);
}

static void test_validate(void **state) {
  (void)state;
  intake_config_t cfg;
  assert_int_equal(intake_config_defaults(&cfg), 0);
  Intake__V1__Event e = make_event("src", "id");
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_NONE);

  e = make_event("", "id");
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_MISSING_SOURCE_ID);
  e = make_event("src", "");
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_MISSING_EVENT_ID);
  e = make_event("src", "id");
  e.type = "";
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_MISSING_TYPE);
  e = make_event("src", "id");
  e.source_kind = 0;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_SOURCE_KIND);
  e.source_kind = 17;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_SOURCE_KIND);
  e = make_event("src", "id");
  e.severity = 42;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_SEVERITY);
  e.severity = 9;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_NONE);
  e = make_event("src", "id");
  e.time_ms = 0;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_TIME);
  e.time_ms = NOW + (int64_t)cfg.max_future_skew_ms + 1;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_TIME);
  e.time_ms = NOW + (int64_t)cfg.max_future_skew_ms;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_NONE);
  e.time_ms = NOW - (int64_t)cfg.max_event_age_ms - 1;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_TIME);

  char longid[200];
  memset(longid, 'x', sizeof longid - 1);
  longid[sizeof longid - 1] = '\0';
  e = make_event(longid, "id");
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_FIELD_TOO_LONG);
  e = make_event("src", "id");
  e.type = "bad\xff\xfe";
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_UTF8);
  e.type = "烟感.告警"; /* UTF-8 is fine */
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_NONE);

  Intake__V1__Location loc = INTAKE__V1__LOCATION__INIT;
  e = make_event("src", "id");
  e.location = &loc;
  loc.lon = 200;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_LOCATION);
  loc.lon = 120;
  loc.region = "33a7";
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_LOCATION);
  loc.region = "330782";
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_NONE);

  e = make_event("src", "id");
  Intake__V1__Event__AttributesEntry entries[40], *ptrs[40];
  for (int i = 0; i < 40; i++) {
    intake__v1__event__attributes_entry__init(&entries[i]);
    entries[i].key = "k";
    entries[i].value = "v";
    ptrs[i] = &entries[i];
  }
  e.attributes = ptrs;
  e.n_attributes = cfg.max_attributes + 1;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_TOO_MANY_ATTRIBUTES);
  e.n_attributes = 1;
  entries[0].value = "\xc0\xaf"; /* overlong encoding of '/' */
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_BAD_UTF8);

  uint8_t big[5000] = {0};
  e = make_event("src", "id");
  e.payload.data = big;
  e.payload.len = cfg.max_payload_bytes + 1;
  assert_int_equal(validate_packed(&e, &cfg), INTAKE_REJECT_FIELD_TOO_LONG);
  intake_config_dispose(&cfg);
}

static void test_utf8(void **state) {
  (void)state;
  assert_true(intake_utf8_valid("plain ascii, long enough to take the 8-byte path", 48));
  assert_true(intake_utf8_valid("\xe6\x84\x9f\xe7\x9f\xa5", 6));        /* 感知 */
  assert_true(intake_utf8_valid("\xf0\x9f\x9a\x92", 4));                /* U+1F692 */
  assert_false(intake_utf8_valid("\xed\xa0\x80", 3));                   /* surrogate */
  assert_false(intake_utf8_valid("\xf4\x90\x80\x80", 4));               /* > U+10FFFF */
  assert_false(intake_utf8_valid("\xe6\x84", 2));                       /* truncated */
  assert_false(intake_utf8_valid("abcdefgh\x80", 9));                   /* stray continuation */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_matches_protobuf_c),
      cmocka_unit_test(test_parse_skips_unknown_fields),
      cmocka_unit_test(test_parse_rejects_every_truncation),
      cmocka_unit_test(test_batch_plain_and_zstd),
      cmocka_unit_test(test_batch_zstd_errors),
      cmocka_unit_test(test_validate),
      cmocka_unit_test(test_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
