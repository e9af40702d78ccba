/* Unit tests for src/encode/json: the JSON record encoding of an event, field by field, with
 * escaping, repeated attribute keys, odd enum values and doubles; a size bound that holds; and
 * valid JSON for random events (checked by a small RFC 8259 syntax checker below). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "decode/event.h"
#include "encode/json.h"
#include "intake.pb-c.h"

/* ---- a strict JSON syntax checker (RFC 8259), for the random round ----------------------- */

static const char *ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
    p++;
  return p;
}

static const char *value(const char *p, int depth);

static const char *string(const char *p) {
  if (*p++ != '"')
    return NULL;
  while (*p != '"') {
    unsigned char c = (unsigned char)*p;
    if (c < 0x20)
      return NULL;
    if (c == '\\') {
      p++;
      if (*p == 'u') {
        for (int i = 1; i <= 4; i++)
          if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i])
            return NULL;
        p += 5;
      } else if (*p && strchr("\"\\/bfnrt", *p)) {
        p++;
      } else {
        return NULL;
      }
    } else {
      p++;
    }
  }
  return p + 1;
}

static const char *number(const char *p) {
  if (*p == '-')
    p++;
  if (*p == '0')
    p++;
  else if (*p >= '1' && *p <= '9')
    while (*p >= '0' && *p <= '9')
      p++;
  else
    return NULL;
  if (*p == '.') {
    p++;
    if (*p < '0' || *p > '9')
      return NULL;
    while (*p >= '0' && *p <= '9')
      p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-')
      p++;
    if (*p < '0' || *p > '9')
      return NULL;
    while (*p >= '0' && *p <= '9')
      p++;
  }
  return p;
}

static const char *value(const char *p, int depth) {
  p = ws(p);
  if (depth > 16)
    return NULL;
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    int obj = *p == '{';
    p = ws(p + 1);
    if (*p == close)
      return p + 1;
    for (;;) {
      if (obj) {
        if (!(p = string(ws(p))))
          return NULL;
        p = ws(p);
        if (*p++ != ':')
          return NULL;
      }
      if (!(p = value(p, depth + 1)))
        return NULL;
      p = ws(p);
      if (*p == ',') {
        p++;
        continue;
      }
      return *p == close ? p + 1 : NULL;
    }
  }
  if (*p == '"')
    return string(p);
  if (!strncmp(p, "true", 4))
    return p + 4;
  if (!strncmp(p, "false", 5))
    return p + 5;
  if (!strncmp(p, "null", 4))
    return p + 4;
  return number(p);
}

static int valid_json(const char *s) {
  const char *p = value(s, 0);
  return p && *ws(p) == '\0';
}

/* ---- helpers ------------------------------------------------------------------------------- */

static uint8_t wire[1 << 16];
static char out[1 << 18];

static size_t pack(const Intake__V1__Event *e) {
  size_t n = intake__v1__event__get_packed_size(e);
  assert_true(n <= sizeof wire);
  intake__v1__event__pack(e, wire);
  return n;
}

/* Packs `e`, parses it, encodes it; checks the length contract and the bound. */
static const char *encode(const Intake__V1__Event *e) {
  size_t n = pack(e);
  intake_event_t ev;
  assert_int_equal(intake_event_parse(wire, n, &ev), 0);
  size_t len = intake_event_to_json(&ev, out, sizeof out);
  assert_true(len < sizeof out);
  assert_int_equal(strlen(out), len);
  assert_true(len <= intake_event_json_bound(&ev));
  assert_int_equal(intake_event_to_json(&ev, NULL, 0), len); /* measuring */
  if (!valid_json(out))
    print_error("invalid JSON: %s\n", out);
  assert_true(valid_json(out));
  return out;
}

static Intake__V1__Event__AttributesEntry *attr(const char *k, const char *v) {
  Intake__V1__Event__AttributesEntry *a = malloc(sizeof *a);
  intake__v1__event__attributes_entry__init(a);
  a->key = (char *)k;
  a->value = (char *)v;
  return a;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_full_event(void **state) {
  Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
  Intake__V1__Location loc = INTAKE__V1__LOCATION__INIT;
  e.source_id = "smoke-0001";
  e.source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR;
  e.event_id = "e-42";
  e.seq = 7;
  e.type = "smoke.alarm";
  e.severity = 1;
  e.time_ms = 1795850000123LL;
  loc.lon = 120.07, loc.lat = 29.31, loc.region = "330782";
  e.location = &loc;
  Intake__V1__Event__AttributesEntry *attrs[] = {attr("value", "42"), attr("unit", "ppm")};
  e.attributes = attrs;
  e.n_attributes = 2;
  e.payload.data = (uint8_t *)"http://nvr/snap/1.jpg";
  e.payload.len = 21;
  e.clear = 1;
  assert_string_equal(
      encode(&e),
      "{\"source_id\":\"smoke-0001\",\"source_kind\":\"SOURCE_KIND_SENSOR\",\"event_id\":\"e-42\","
      "\"seq\":\"7\",\"type\":\"smoke.alarm\",\"severity\":1,\"time_ms\":\"1795850000123\","
      "\"location\":{\"lon\":120.07,\"lat\":29.31,\"region\":\"330782\"},"
      "\"attributes\":{\"value\":\"42\",\"unit\":\"ppm\"},"
      "\"payload\":\"aHR0cDovL252ci9zbmFwLzEuanBn\",\"clear\":true}");
  /* Cut short: the length still says what is needed, the prefix is NUL-terminated. */
  char small[16];
  intake_event_t ev;
  assert_int_equal(intake_event_parse(wire, pack(&e), &ev), 0);
  assert_int_equal(intake_event_to_json(&ev, small, sizeof small), strlen(out));
  assert_string_equal(small, "{\"source_id\":\"s");
  free(attrs[0]);
  free(attrs[1]);
}

/* Every field at its default: all present, no location. */
static void test_empty_event(void **state) {
  Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
  assert_string_equal(encode(&e),
                      "{\"source_id\":\"\",\"source_kind\":\"SOURCE_KIND_UNSPECIFIED\","
                      "\"event_id\":\"\",\"seq\":\"0\",\"type\":\"\",\"severity\":0,"
                      "\"time_ms\":\"0\",\"attributes\":{},\"payload\":\"\",\"clear\":false}");
}

static void test_escaping_and_odd_values(void **state) {
  Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
  Intake__V1__Location loc = INTAKE__V1__LOCATION__INIT;
  e.source_id = "cam \"7\"\\\n\x01";
  e.source_kind = -1; /* an int32 enum on the wire as a 10-byte varint */
  e.event_id = "\xe4\xb8\xad\xe6\x96\x87"; /* UTF-8 passes through */
  e.seq = UINT64_MAX;
  e.type = "\xff";
  e.severity = UINT32_MAX;
  e.time_ms = INT64_MIN;
  loc.lon = NAN, loc.lat = -INFINITY, loc.region = "";
  e.location = &loc;
  Intake__V1__Event__AttributesEntry *attrs[] = {attr("k", "first"), attr("x", "1"),
                                                 attr("k", "last"), attr("", "")};
  e.attributes = attrs;
  e.n_attributes = 4;
  e.payload.data = (uint8_t *)"\x00\xff";
  e.payload.len = 2;
  assert_string_equal(
      encode(&e),
      "{\"source_id\":\"cam \\\"7\\\"\\\\\\n\\u0001\",\"source_kind\":-1,"
      "\"event_id\":\"\xe4\xb8\xad\xe6\x96\x87\",\"seq\":\"18446744073709551615\","
      "\"type\":\"\\ufffd\",\"severity\":4294967295,\"time_ms\":\"-9223372036854775808\","
      "\"location\":{\"lon\":\"NaN\",\"lat\":\"-Infinity\",\"region\":\"\"},"
      "\"attributes\":{\"x\":\"1\",\"k\":\"last\",\"\":\"\"},\"payload\":\"AP8=\",\"clear\":false}");
  e.source_kind = 99; /* not in the schema: its number */
  loc.lon = 0.1, loc.lat = -1e-300;
  e.n_attributes = 0;
  const char *j = encode(&e);
  assert_non_null(strstr(j, "\"source_kind\":99,"));
  assert_non_null(strstr(j, "\"location\":{\"lon\":0.1,\"lat\":-1e-300,"));
  for (int i = 0; i < 4; i++)
    free(attrs[i]);
}

/* Doubles read back exactly. */
static void test_doubles_round_trip(void **state) {
  Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
  Intake__V1__Location loc = INTAKE__V1__LOCATION__INIT;
  e.location = &loc;
  srand(7);
  for (int i = 0; i < 2000; i++) {
    uint64_t bits = (uint64_t)rand() << 42 ^ (uint64_t)rand() << 21 ^ (uint64_t)rand();
    double d;
    memcpy(&d, &bits, sizeof d);
    if (!isfinite(d))
      continue;
    loc.lon = d;
    loc.lat = (double)(rand() % 180000) / 1000.0 - 90;
    const char *j = encode(&e);
    const char *p = strstr(j, "\"lon\":") + 6;
    assert_true(strtod(p, NULL) == d);
    p = strstr(j, "\"lat\":") + 6;
    assert_true(strtod(p, NULL) == loc.lat);
  }
}

static char *rand_str(char *buf, size_t max) {
  size_t n = (size_t)rand() % max;
  for (size_t i = 0; i < n; i++)
    buf[i] = (char)(rand() % 4 ? rand() % 256 : rand() % 32); /* many controls and high bytes */
  buf[n] = '\0';
  for (size_t i = 0; i < n; i++)
    if (!buf[i])
      buf[i] = '\x01'; /* protobuf-c strings stop at NUL */
  return buf;
}

/* Random events: valid JSON within the bound, every time. */
static void test_random_events(void **state) {
  static char s[8][200];
  srand(11);
  for (int round = 0; round < 3000; round++) {
    Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
    Intake__V1__Location loc = INTAKE__V1__LOCATION__INIT;
    e.source_id = rand_str(s[0], 100);
    e.event_id = rand_str(s[1], 100);
    e.type = rand_str(s[2], 50);
    e.source_kind = rand() % 8 - 1;
    e.seq = (uint64_t)rand() * (uint64_t)rand();
    e.severity = (uint32_t)rand();
    e.time_ms = (int64_t)rand() * (rand() % 2 ? 1 : -1000003);
    if (rand() % 2) {
      loc.lon = (double)rand() / 7.0, loc.lat = -(double)rand() / 3.0;
      loc.region = rand_str(s[3], 20);
      e.location = &loc;
    }
    Intake__V1__Event__AttributesEntry a[4], *ap[4];
    e.n_attributes = (size_t)rand() % 5;
    for (size_t i = 0; i < e.n_attributes; i++) {
      intake__v1__event__attributes_entry__init(&a[i]);
      a[i].key = rand() % 3 ? rand_str(s[4 + i % 2], 30) : "dup";
      a[i].value = rand_str(s[6 + i % 2], 60);
      ap[i] = &a[i];
    }
    e.attributes = ap;
    char pl[300];
    e.payload.len = (size_t)rand() % sizeof pl;
    for (size_t i = 0; i < e.payload.len; i++)
      pl[i] = (char)rand();
    e.payload.data = (uint8_t *)pl;
    e.clear = rand() % 2;
    encode(&e);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_event),
      cmocka_unit_test(test_empty_event),
      cmocka_unit_test(test_escaping_and_odd_values),
      cmocka_unit_test(test_doubles_round_trip),
      cmocka_unit_test(test_random_events),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
