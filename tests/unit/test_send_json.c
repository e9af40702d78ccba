/* Unit tests for src/send/event_json: intake-send's JSON line → Event parser. Good lines in
 * every accepted spelling (proto and camelCase names, numbers or strings for integers, enum
 * names, numbers and short names, NaN/Infinity, both base64 alphabets, null, an intake-tail
 * record line); the JSON the record encoding writes (encode/json.h) read back to the very same
 * bytes, for fixed and random events; and every kind of bad line, each with its message. */
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
#include "send/event_json.h"

static char err[512];

static Intake__V1__Event *parse_ok(const char *line) {
  Intake__V1__Event *ev = NULL;
  int rc = intake_send_event_parse(line, strlen(line), &ev, err, sizeof err);
  if (rc != 0)
    print_error("%s\n  -> %s\n", line, err);
  assert_int_equal(rc, 0);
  assert_non_null(ev);
  return ev;
}

/* The line must fail with a message containing `want`. */
static void parse_bad(const char *line, const char *want) {
  Intake__V1__Event *ev = (Intake__V1__Event *)1;
  int rc = intake_send_event_parse(line, strlen(line), &ev, err, sizeof err);
  if (rc != -1 || !strstr(err, want))
    print_error("%s\n  -> rc %d, \"%s\" (wanted \"%s\")\n", line, rc, err, want);
  assert_int_equal(rc, -1);
  assert_null(ev);
  assert_non_null(strstr(err, want));
}

static void test_full_event(void **state) {
  Intake__V1__Event *ev = parse_ok(
      "{\"source_id\":\"smoke-0001\",\"source_kind\":\"SOURCE_KIND_SENSOR\",\"event_id\":\"e-42\","
      "\"seq\":\"7\",\"type\":\"smoke.alarm\",\"severity\":1,\"time_ms\":\"1795850000123\","
      "\"location\":{\"lon\":120.07,\"lat\":29.31,\"region\":\"330782\"},"
      "\"attributes\":{\"value\":\"42\",\"unit\":\"ppm\"},"
      "\"payload\":\"aHR0cDovL252ci9zbmFwLzEuanBn\",\"clear\":true}");
  assert_string_equal(ev->source_id, "smoke-0001");
  assert_int_equal(ev->source_kind, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR);
  assert_string_equal(ev->event_id, "e-42");
  assert_int_equal(ev->seq, 7);
  assert_string_equal(ev->type, "smoke.alarm");
  assert_int_equal(ev->severity, 1);
  assert_int_equal(ev->time_ms, 1795850000123LL);
  assert_non_null(ev->location);
  assert_true(ev->location->lon == 120.07);
  assert_true(ev->location->lat == 29.31);
  assert_string_equal(ev->location->region, "330782");
  /* Attributes in the order written, not sorted. */
  assert_int_equal(ev->n_attributes, 2);
  assert_string_equal(ev->attributes[0]->key, "value");
  assert_string_equal(ev->attributes[0]->value, "42");
  assert_string_equal(ev->attributes[1]->key, "unit");
  assert_string_equal(ev->attributes[1]->value, "ppm");
  assert_int_equal(ev->payload.len, 21);
  assert_memory_equal(ev->payload.data, "http://nvr/snap/1.jpg", 21);
  assert_true(ev->clear);
  intake__v1__event__free_unpacked(ev, NULL);
}

static void test_defaults_and_nulls(void **state) {
  Intake__V1__Event *ev = parse_ok("  {}\r\n");
  assert_string_equal(ev->source_id, "");
  assert_string_equal(ev->event_id, "");
  assert_string_equal(ev->type, "");
  assert_int_equal(ev->source_kind, 0);
  assert_int_equal(ev->seq, 0);
  assert_int_equal(ev->time_ms, 0);
  assert_null(ev->location);
  assert_int_equal(ev->n_attributes, 0);
  assert_int_equal(ev->payload.len, 0);
  assert_false(ev->clear);
  intake__v1__event__free_unpacked(ev, NULL);

  ev = parse_ok("{\"source_id\":null,\"seq\":null,\"location\":null,\"attributes\":null,"
                "\"payload\":null,\"clear\":null,\"source_kind\":null}");
  assert_string_equal(ev->source_id, "");
  assert_null(ev->location);
  intake__v1__event__free_unpacked(ev, NULL);

  ev = parse_ok("{\"location\":{},\"attributes\":{},\"payload\":\"\"}");
  assert_non_null(ev->location);
  assert_string_equal(ev->location->region, "");
  assert_int_equal(ev->n_attributes, 0);
  assert_int_equal(ev->payload.len, 0);
  intake__v1__event__free_unpacked(ev, NULL);
}

static void test_other_spellings(void **state) {
  /* camelCase names, numbers for 64-bit fields, a string for severity, integral reals. */
  Intake__V1__Event *ev = parse_ok(
      "{\"sourceId\":\"cam-1\",\"sourceKind\":2,\"eventId\":\"x\",\"seq\":9223372036854775807,"
      "\"severity\":\"4\",\"timeMs\":-5,\"location\":{\"lon\":\"NaN\",\"lat\":\"-Infinity\","
      "\"region\":\"33\"}}");
  assert_string_equal(ev->source_id, "cam-1");
  assert_int_equal(ev->source_kind, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA);
  assert_string_equal(ev->event_id, "x");
  assert_true(ev->seq == INT64_MAX);
  assert_int_equal(ev->severity, 4);
  assert_int_equal(ev->time_ms, -5);
  assert_true(isnan(ev->location->lon));
  assert_true(isinf(ev->location->lat) && ev->location->lat < 0);
  intake__v1__event__free_unpacked(ev, NULL);

  ev = parse_ok("{\"seq\":\"18446744073709551615\",\"time_ms\":\"-9223372036854775808\","
                "\"severity\":2.0,\"location\":{\"lon\":\"1.5e1\",\"lat\":\"Infinity\"}}");
  assert_true(ev->seq == UINT64_MAX);
  assert_true(ev->time_ms == INT64_MIN);
  assert_int_equal(ev->severity, 2);
  assert_true(ev->location->lon == 15.0);
  assert_true(isinf(ev->location->lat) && ev->location->lat > 0);
  intake__v1__event__free_unpacked(ev, NULL);

  /* Short kind names in any case, and a number outside the schema (intaked rejects it). */
  const char *kinds[][2] = {{"sensor", "1"}, {"CAMERA", "2"}, {"Alarm_Input", "3"},
                            {"platform", "4"}, {"other", "5"}, {"SOURCE_KIND_UNSPECIFIED", "0"}};
  for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
    char line[128];
    snprintf(line, sizeof line, "{\"source_kind\":\"%s\"}", kinds[i][0]);
    ev = parse_ok(line);
    assert_int_equal(ev->source_kind, atoi(kinds[i][1]));
    intake__v1__event__free_unpacked(ev, NULL);
  }
  ev = parse_ok("{\"source_kind\":99}");
  assert_int_equal(ev->source_kind, 99);
  intake__v1__event__free_unpacked(ev, NULL);

  /* base64: URL-safe alphabet, no padding; standard with padding. */
  ev = parse_ok("{\"payload\":\"-_8\"}");
  assert_int_equal(ev->payload.len, 2);
  assert_memory_equal(ev->payload.data, "\xfb\xff", 2);
  intake__v1__event__free_unpacked(ev, NULL);
  ev = parse_ok("{\"payload\":\"+/8=\"}");
  assert_int_equal(ev->payload.len, 2);
  assert_memory_equal(ev->payload.data, "\xfb\xff", 2);
  intake__v1__event__free_unpacked(ev, NULL);

  /* Escapes and non-ASCII text. */
  ev = parse_ok("{\"type\":\"a\\\"b\\u00e9\\n\",\"attributes\":{\"k\\u0041\":\"\xe6\xb0\xb4\"}}");
  assert_string_equal(ev->type, "a\"b\xc3\xa9\n");
  assert_string_equal(ev->attributes[0]->key, "kA");
  assert_string_equal(ev->attributes[0]->value, "\xe6\xb0\xb4");
  intake__v1__event__free_unpacked(ev, NULL);
}

/* A whole intake-tail line: its "event" is read, the rest ignored. */
static void test_tail_line(void **state) {
  Intake__V1__Event *ev = parse_ok(
      "{\"topic\":\"intake.fire\",\"partition\":2,\"offset\":0,\"timestamp_ms\":1796332501467,"
      "\"key\":\"smoke-0001\",\"headers\":{\"gateway_id\":\"gw\",\"route\":\"fire\"},"
      "\"event\":{\"source_id\":\"smoke-0001\",\"source_kind\":\"SOURCE_KIND_SENSOR\","
      "\"event_id\":\"e-1\",\"seq\":\"0\",\"type\":\"smoke.alarm\",\"severity\":1,"
      "\"time_ms\":\"1796332501457\",\"attributes\":{},\"payload\":\"\",\"clear\":false}}");
  assert_string_equal(ev->source_id, "smoke-0001");
  assert_string_equal(ev->event_id, "e-1");
  assert_int_equal(ev->time_ms, 1796332501457LL);
  intake__v1__event__free_unpacked(ev, NULL);
  parse_bad("{\"topic\":\"t\",\"event\":null,\"error\":\"value is not an intake.v1.Event\","
            "\"value_base64\":\"AAA=\"}",
            "\"event\" is null, not an event: value is not an intake.v1.Event");
  parse_bad("{\"topic\":\"t\",\"color\":1,\"event\":{}}", "unknown field \"color\" beside");
  parse_bad("{\"event\":{\"bogus\":1}}", "unknown field \"bogus\"");
}

static Intake__V1__Event *reread(const Intake__V1__Event *ev, uint8_t **packed, size_t *len) {
  *len = intake__v1__event__get_packed_size(ev);
  *packed = malloc(*len + 1);
  intake__v1__event__pack(ev, *packed);
  intake_event_t view;
  assert_int_equal(intake_event_parse(*packed, *len, &view), 0);
  size_t n = intake_event_json_bound(&view) + 1;
  char *json = malloc(n);
  size_t jl = intake_event_to_json(&view, json, n);
  assert_true(jl < n);
  Intake__V1__Event *back = parse_ok(json);
  free(json);
  return back;
}

static void assert_same_bytes(const Intake__V1__Event *ev) {
  uint8_t *a;
  size_t al;
  Intake__V1__Event *back = reread(ev, &a, &al);
  size_t bl = intake__v1__event__get_packed_size(back);
  uint8_t *b = malloc(bl + 1);
  intake__v1__event__pack(back, b);
  assert_int_equal(al, bl);
  assert_memory_equal(a, b, al);
  free(a);
  free(b);
  intake__v1__event__free_unpacked(back, NULL);
}

/* What the record encoding (and so intake-tail) prints reads back to the same Event bytes. */
static void test_json_encoding_round_trip(void **state) {
  Intake__V1__Event *ev = parse_ok(
      "{\"source_id\":\"13131313131320000001\",\"source_kind\":\"SOURCE_KIND_CAMERA\","
      "\"event_id\":\"7017\",\"seq\":\"99\",\"type\":\"gb28181.alarm.6\",\"severity\":4,"
      "\"time_ms\":\"1612691189000\",\"location\":{\"lon\":-0.1,\"lat\":1e-300,"
      "\"region\":\"330782\"},\"attributes\":{\"z\":\"\\u0001\\\\\",\"a\":\"\xe4\xb8\xad\"},"
      "\"payload\":\"AAEC/w==\",\"clear\":true}");
  assert_same_bytes(ev);
  intake__v1__event__free_unpacked(ev, NULL);

  /* Random events: every field, odd strings, doubles of every magnitude. */
  srand(42);
  for (int round = 0; round < 300; round++) {
    Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
    Intake__V1__Location loc = INTAKE__V1__LOCATION__INIT;
    char s[4][24];
    for (int i = 0; i < 4; i++) {
      int n = rand() % 20;
      for (int j = 0; j < n; j++)
        s[i][j] = (char)(1 + rand() % 126); /* any ASCII but NUL: escapes included */
      s[i][n] = '\0';
    }
    e.source_id = s[0], e.event_id = s[1], e.type = s[2];
    e.source_kind = rand() % 6;
    e.seq = ((uint64_t)rand() << 40) ^ (uint64_t)rand();
    e.severity = (uint32_t)rand() % 10;
    e.time_ms = (int64_t)rand() * 1000 - (round % 7 == 0 ? (int64_t)1 << 50 : 0);
    e.clear = rand() % 2;
    if (rand() % 2) {
      loc.lon = (rand() - RAND_MAX / 2) / 7.0;
      loc.lat = ldexp((double)rand(), rand() % 200 - 100);
      loc.region = s[3];
      e.location = &loc;
    }
    Intake__V1__Event__AttributesEntry attrs[3], *ap[3];
    e.n_attributes = (size_t)(rand() % 4);
    char keys[3][24];
    for (size_t i = 0; i < e.n_attributes; i++) {
      intake__v1__event__attributes_entry__init(&attrs[i]);
      snprintf(keys[i], sizeof keys[i], "k%zu", i);
      attrs[i].key = keys[i];
      attrs[i].value = s[(i + round) % 4];
      ap[i] = &attrs[i];
    }
    e.attributes = ap;
    uint8_t pay[8];
    e.payload.len = (size_t)(rand() % 9);
    for (size_t i = 0; i < e.payload.len; i++)
      pay[i] = (uint8_t)rand();
    e.payload.data = pay;
    assert_same_bytes(&e);
  }
}

static void test_bad_lines(void **state) {
  /* Not JSON, or not one object. */
  parse_bad("", "invalid JSON");
  parse_bad("{\"source_id\":\"a\"", "column");
  parse_bad("{\"source_id\" \"a\"}", "invalid JSON");
  parse_bad("{\"source_id\":\"a\"} {}", "invalid JSON");
  parse_bad("{\"type\":\"a\xff\"}", "invalid JSON");
  parse_bad("{\"type\":\"a\\u0000b\"}", "invalid JSON");
  parse_bad("[1,2]", "expected a JSON object (an intake.v1.Event), got an array");
  parse_bad("\"smoke\"", "got a string");
  parse_bad("42", "got a number");
  /* Names. */
  parse_bad("{\"sevrity\":1}", "unknown field \"sevrity\"");
  parse_bad("{\"type\":\"a\",\"type\":\"b\"}", "duplicate");
  parse_bad("{\"source_id\":\"a\",\"sourceId\":\"b\"}", "source_id given twice");
  /* Types and ranges. */
  parse_bad("{\"source_id\":7}", "source_id: expected a string (got a number)");
  parse_bad("{\"event_id\":[]}", "event_id: expected a string (got an array)");
  parse_bad("{\"seq\":-1}", "seq: expected a whole number from 0 to 18446744073709551615 (got -1)");
  /* jansson's integers are 64-bit signed: beyond, the string form (as the mapping prints). */
  parse_bad("{\"seq\":18446744073709551615}", "too big integer near '18446744073709551615' "
            "(write 64-bit integers as strings");
  parse_bad("{\"seq\":\"12a\"}", "seq: expected a whole number");
  parse_bad("{\"seq\":\"\"}", "seq: expected a whole number");
  parse_bad("{\"seq\":\"18446744073709551616\"}", "seq: expected a whole number");
  parse_bad("{\"seq\":1.5}", "seq: expected a whole number");
  parse_bad("{\"seq\":true}", "seq: expected a whole number");
  parse_bad("{\"severity\":4294967296}", "severity: expected a whole number from 0 to 4294967295");
  parse_bad("{\"severity\":\"-1\"}", "severity: expected a whole number");
  parse_bad("{\"time_ms\":\"9223372036854775808\"}", "time_ms: expected a whole number from");
  parse_bad("{\"time_ms\":{}}", "time_ms: expected a whole number");
  parse_bad("{\"source_kind\":\"SENSORS\"}", "source_kind: expected SOURCE_KIND_SENSOR");
  parse_bad("{\"source_kind\":1.5}", "source_kind: expected a whole number");
  parse_bad("{\"source_kind\":true}", "source_kind: expected");
  parse_bad("{\"location\":[]}", "location: expected an object");
  parse_bad("{\"location\":{\"lon\":\"east\"}}", "location.lon: expected a number (got \"east\")");
  parse_bad("{\"location\":{\"lat\":\"nan\"}}", "location.lat: expected a number");
  parse_bad("{\"location\":{\"lat\":\"0x10\"}}", "location.lat: expected a number");
  parse_bad("{\"location\":{\"lat\":\"1e999\"}}", "location.lat: expected a number");
  parse_bad("{\"location\":{\"region\":330782}}", "location.region: expected a string");
  parse_bad("{\"location\":{\"alt\":1}}", "location: unknown field \"alt\"");
  parse_bad("{\"attributes\":[]}", "attributes: expected an object of strings");
  parse_bad("{\"attributes\":{\"a\":\"1\",\"value\":42}}",
            "attributes.value: expected a string (got a number)");
  parse_bad("{\"payload\":\"!!!!\"}", "payload: not base64 (character 1 is '!')");
  parse_bad("{\"payload\":\"QUJDR\"}", "payload: not base64");
  parse_bad("{\"payload\":\"QQ===\"}", "payload: not base64");
  parse_bad("{\"payload\":5}", "payload: expected a base64 string");
  parse_bad("{\"clear\":\"yes\"}", "clear: expected true or false (got a string)");
  parse_bad("{\"clear\":1}", "clear: expected true or false");
}

static void test_blank(void **state) {
  assert_true(intake_send_line_blank("", 0));
  assert_true(intake_send_line_blank(" \t\r", 3));
  assert_false(intake_send_line_blank(" {}", 3));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_event),
      cmocka_unit_test(test_defaults_and_nulls),
      cmocka_unit_test(test_other_spellings),
      cmocka_unit_test(test_tail_line),
      cmocka_unit_test(test_json_encoding_round_trip),
      cmocka_unit_test(test_bad_lines),
      cmocka_unit_test(test_blank),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
