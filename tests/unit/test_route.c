/* Unit tests for src/route: fan-out, stop, default, each topic once, every match condition,
 * and the fan-out bound checked at create. Rules come from YAML through the real config
 * loader; events are built by hand, except where attributes are matched: those are encoded
 * with protobuf-c and parsed, because intake_event_attribute() reads the event's bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "decode/event.h"
#include "intake.pb-c.h"
#include "route/route.h"

static intake_router_t *router_from(const char *yaml) {
  intake_config_t cfg;
  char err[512] = "";
  if (intake_config_load_string(&cfg, "t.yaml", yaml, strlen(yaml), err, sizeof err) != 0)
    print_error("config: %s\n", err);
  assert_string_equal(err, "");
  intake_router_t *r = intake_router_create(&cfg, err, sizeof err);
  if (r == NULL)
    print_error("router: %s\n", err);
  /* The router keeps copies: the config may go first. */
  intake_config_dispose(&cfg);
  assert_non_null(r);
  return r;
}

static const char *router_error(const char *yaml) {
  static char err[512];
  intake_config_t cfg;
  assert_int_equal(intake_config_load_string(&cfg, "t.yaml", yaml, strlen(yaml), err, sizeof err), 0);
  intake_router_t *r = intake_router_create(&cfg, err, sizeof err);
  intake_config_dispose(&cfg);
  assert_null(r);
  return err;
}

static intake_str_t str(const char *s) {
  return (intake_str_t){s, (uint32_t)strlen(s)};
}

/* An event without attributes (raw is empty but valid, as intake_event_parse leaves it). */
static intake_event_t ev(uint32_t kind, const char *type, uint32_t severity, const char *region) {
  intake_event_t e;
  memset(&e, 0, sizeof e);
  e.raw = (const uint8_t *)"";
  e.source_id = str("dev1");
  e.event_id = str("e1");
  e.source_kind = kind;
  e.type = str(type);
  e.severity = severity;
  e.region = str(region ? region : "");
  e.has_location = region != NULL;
  return e;
}

/* "rule>topic,rule>topic" for out[0..n), for readable assertions. */
static const char *targets(const intake_router_t *r, const intake_event_t *e) {
  static char buf[1024];
  intake_route_target_t out[INTAKE_ROUTE_MAX_TOPICS];
  memset(out, 0xff, sizeof out);
  size_t n = intake_router_route(r, e, out);
  assert_true(n >= 1 && n <= INTAKE_ROUTE_MAX_TOPICS);
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    assert_true(out[i].topic < intake_router_n_topics(r));
    assert_true(out[i].rule < intake_router_n_rules(r));
    size_t len = strlen(buf);
    snprintf(buf + len, sizeof buf - len, "%s%s>%s", i ? "," : "",
             intake_router_rule_name(r, out[i].rule), intake_router_topic_name(r, out[i].topic));
  }
  return buf;
}

static void test_no_rules_default(void **state) {
  intake_router_t *r = router_from("routes:\n  default_topic: ev\n");
  assert_int_equal(intake_router_n_rules(r), 1);
  assert_string_equal(intake_router_rule_name(r, 0), "default");
  assert_int_equal(intake_router_n_topics(r), 1);
  assert_string_equal(intake_router_topic_name(r, 0), "ev");
  assert_null(intake_router_topic_name(r, 1));
  assert_null(intake_router_rule_name(r, 1));
  intake_event_t e = ev(INTAKE_KIND_SENSOR, "x", 1, NULL);
  intake_route_target_t out[INTAKE_ROUTE_MAX_TOPICS];
  assert_int_equal(intake_router_route(r, &e, out), 1);
  assert_int_equal(out[0].topic, 0);
  assert_int_equal(out[0].rule, 0);
  intake_router_destroy(r);
}

static const char *fanout_yaml = "routes:\n"
                                 "  default_topic: ev\n"
                                 "  rules:\n"
                                 "    - name: smoke\n"
                                 "      match: {type: smoke.alarm}\n"
                                 "      topics: [fire, audit]\n"
                                 "    - name: sensors\n"
                                 "      match: {kind: sensor}\n"
                                 "      topics: [sensors, audit]\n"
                                 "    - name: urgent\n"
                                 "      match: {severity: {max: 1}}\n"
                                 "      topics: urgent\n";

static void test_names_and_indices(void **state) {
  intake_router_t *r = router_from(fanout_yaml);
  assert_int_equal(intake_router_n_rules(r), 4);
  assert_string_equal(intake_router_rule_name(r, 0), "smoke");
  assert_string_equal(intake_router_rule_name(r, 2), "urgent");
  assert_string_equal(intake_router_rule_name(r, 3), "default");
  /* Distinct topics in order of first use, the default topic last. */
  assert_int_equal(intake_router_n_topics(r), 5);
  const char *want[] = {"fire", "audit", "sensors", "urgent", "ev"};
  for (size_t i = 0; i < 5; i++)
    assert_string_equal(intake_router_topic_name(r, i), want[i]);
  intake_router_destroy(r);
}

static void test_fan_out_and_each_topic_once(void **state) {
  intake_router_t *r = router_from(fanout_yaml);
  intake_event_t e = ev(INTAKE_KIND_SENSOR, "smoke.alarm", 1, NULL);
  /* All three rules match; "audit" comes from two of them and is produced once, for the
   * first rule that chose it. */
  assert_string_equal(targets(r, &e), "smoke>fire,smoke>audit,sensors>sensors,urgent>urgent");
  e = ev(INTAKE_KIND_SENSOR, "water.level", 3, NULL);
  assert_string_equal(targets(r, &e), "sensors>sensors,sensors>audit");
  e = ev(INTAKE_KIND_CAMERA, "smoke.alarm", 2, NULL);
  assert_string_equal(targets(r, &e), "smoke>fire,smoke>audit");
  /* Nothing matched: the default topic only. */
  e = ev(INTAKE_KIND_CAMERA, "gb28181.alarm.6", 4, NULL);
  assert_string_equal(targets(r, &e), "default>ev");
  intake_router_destroy(r);
}

/* A rule routing to the default topic is an ordinary match, not the default route. */
static void test_rule_to_default_topic(void **state) {
  intake_router_t *r = router_from("routes:\n  default_topic: ev\n  rules:\n"
                                   "    - name: cams\n      match: {kind: camera}\n"
                                   "      topics: [ev, video]\n");
  assert_int_equal(intake_router_n_topics(r), 2);
  intake_event_t e = ev(INTAKE_KIND_CAMERA, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "cams>ev,cams>video");
  e = ev(INTAKE_KIND_SENSOR, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "default>ev");
  intake_router_destroy(r);
}

static void test_stop(void **state) {
  intake_router_t *r = router_from("routes:\n  rules:\n"
                                   "    - name: quiet\n"
                                   "      match: {type: heartbeat}\n"
                                   "      topics: hb\n"
                                   "      stop: true\n"
                                   "    - name: drills\n"
                                   "      match: {type: smoke.alarm, attributes: {drill: \"1\"}}\n"
                                   "      topics: drills\n"
                                   "      stop: true\n"
                                   "    - name: all\n"
                                   "      topics: all\n");
  intake_event_t e = ev(INTAKE_KIND_SENSOR, "heartbeat", 0, NULL);
  assert_string_equal(targets(r, &e), "quiet>hb");
  /* A stop rule that does not match stops nothing. */
  e = ev(INTAKE_KIND_SENSOR, "smoke.alarm", 0, NULL);
  assert_string_equal(targets(r, &e), "all>all");
  e = ev(INTAKE_KIND_SENSOR, "other", 0, NULL);
  assert_string_equal(targets(r, &e), "all>all");
  intake_router_destroy(r);
}

/* Rules before a matching stop rule keep their topics. */
static void test_stop_keeps_earlier(void **state) {
  intake_router_t *r = router_from("routes:\n  rules:\n"
                                   "    - name: a\n      topics: ta\n"
                                   "    - name: b\n      match: {kind: camera}\n      topics: tb\n"
                                   "      stop: true\n"
                                   "    - name: c\n      topics: tc\n");
  intake_event_t e = ev(INTAKE_KIND_CAMERA, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "a>ta,b>tb");
  e = ev(INTAKE_KIND_SENSOR, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "a>ta,c>tc");
  intake_router_destroy(r);
}

static void test_severity_range(void **state) {
  intake_router_t *r = router_from("routes:\n  rules:\n"
                                   "    - name: mid\n      match: {severity: {min: 2, max: 3}}\n"
                                   "      topics: mid\n"
                                   "    - name: four\n      match: {severity: 4}\n"
                                   "      topics: four\n");
  const char *want[] = {"default>intake.events", "default>intake.events", "mid>mid", "mid>mid",
                        "four>four",             "default>intake.events"};
  for (uint32_t s = 0; s <= 5; s++) {
    intake_event_t e = ev(INTAKE_KIND_SENSOR, "x", s, NULL);
    assert_string_equal(targets(r, &e), want[s]);
  }
  intake_router_destroy(r);
}

static void test_kind_mask(void **state) {
  intake_router_t *r = router_from("routes:\n  rules:\n"
                                   "    - name: devices\n      match: {kind: [sensor, alarm_input]}\n"
                                   "      topics: dev\n"
                                   "    - name: any\n      match: {type: t}\n      topics: any\n");
  intake_event_t e = ev(INTAKE_KIND_SENSOR, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "devices>dev");
  e = ev(INTAKE_KIND_ALARM_INPUT, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "devices>dev");
  e = ev(INTAKE_KIND_CAMERA, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "default>intake.events");
  e = ev(INTAKE_KIND_UNSPECIFIED, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "default>intake.events");
  /* Out-of-range kinds (kept by the decoder for validation) match no mask and shift nothing. */
  e = ev(40, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "default>intake.events");
  e = ev(UINT32_MAX, "t", 0, NULL);
  assert_string_equal(targets(r, &e), "any>any"); /* no kind condition: any kind */
  intake_router_destroy(r);
}

static void test_types_exact(void **state) {
  intake_router_t *r = router_from("routes:\n  rules:\n"
                                   "    - name: fire\n      match: {type: [smoke.alarm, gas.alarm]}\n"
                                   "      topics: fire\n");
  const char *yes[] = {"smoke.alarm", "gas.alarm"};
  const char *no[] = {"smoke.alarm2", "smoke.alar", "smoke", "SMOKE.ALARM", "", "gas.alarm "};
  for (size_t i = 0; i < 2; i++) {
    intake_event_t e = ev(INTAKE_KIND_SENSOR, yes[i], 0, NULL);
    assert_string_equal(targets(r, &e), "fire>fire");
  }
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
    intake_event_t e = ev(INTAKE_KIND_SENSOR, no[i], 0, NULL);
    assert_string_equal(targets(r, &e), "default>intake.events");
  }
  /* The event's type is not NUL-terminated in a batch buffer: only its length counts. */
  intake_event_t e = ev(INTAKE_KIND_SENSOR, "gas.alarm.extra", 0, NULL);
  e.type.len = 9;
  assert_string_equal(targets(r, &e), "fire>fire");
  intake_router_destroy(r);
}

static void test_region_prefix(void **state) {
  intake_router_t *r = router_from("routes:\n  rules:\n"
                                   "    - name: yiwu\n      match: {region_prefix: [\"330782\", \"3301\"]}\n"
                                   "      topics: local\n");
  const char *yes[] = {"330782", "330782001", "3301", "330106"};
  const char *no[] = {"33078", "330783", "330", "110101"};
  for (size_t i = 0; i < 4; i++) {
    intake_event_t e = ev(INTAKE_KIND_SENSOR, "x", 0, yes[i]);
    assert_string_equal(targets(r, &e), "yiwu>local");
  }
  for (size_t i = 0; i < 4; i++) {
    intake_event_t e = ev(INTAKE_KIND_SENSOR, "x", 0, no[i]);
    assert_string_equal(targets(r, &e), "default>intake.events");
  }
  /* The region is not NUL-terminated in a batch buffer: a region shorter than a prefix does
   * not match even when the bytes after it would. */
  intake_event_t cut = ev(INTAKE_KIND_SENSOR, "x", 0, "330182");
  cut.region.len = 3;
  assert_string_equal(targets(r, &cut), "default>intake.events");
  cut.region.len = 4;
  assert_string_equal(targets(r, &cut), "yiwu>local");
  /* No location, or a location without a region: no match when prefixes are listed. */
  intake_event_t e = ev(INTAKE_KIND_SENSOR, "x", 0, NULL);
  assert_string_equal(targets(r, &e), "default>intake.events");
  e = ev(INTAKE_KIND_SENSOR, "x", 0, "");
  assert_string_equal(targets(r, &e), "default>intake.events");
  intake_router_destroy(r);
}

/* ---- attributes: real encoded events ---------------------------------------------------- */

typedef struct {
  uint8_t buf[1024];
  intake_event_t ev;
} encoded_t;

/* Encodes an event with attributes kv[0..2n) (key, value pairs; duplicates allowed, as on the
 * wire) and parses it back. */
static void encode(encoded_t *out, const char *type, const char *const *kv, size_t n) {
  Intake__V1__Event m = INTAKE__V1__EVENT__INIT;
  Intake__V1__Event__AttributesEntry entries[8], *ptrs[8];
  assert_true(n <= 8);
  for (size_t i = 0; i < n; i++) {
    Intake__V1__Event__AttributesEntry init = INTAKE__V1__EVENT__ATTRIBUTES_ENTRY__INIT;
    entries[i] = init;
    entries[i].key = (char *)kv[2 * i];
    entries[i].value = (char *)kv[2 * i + 1];
    ptrs[i] = &entries[i];
  }
  m.source_id = "dev1";
  m.source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR;
  m.event_id = "e1";
  m.type = (char *)type;
  m.severity = 2;
  m.n_attributes = n;
  m.attributes = ptrs;
  size_t len = intake__v1__event__get_packed_size(&m);
  assert_true(len <= sizeof out->buf);
  assert_int_equal(intake__v1__event__pack(&m, out->buf), len);
  assert_int_equal(intake_event_parse(out->buf, len, &out->ev), 0);
  assert_int_equal(out->ev.n_attributes, n);
}

static void test_attributes(void **state) {
  intake_router_t *r = router_from("routes:\n  rules:\n"
                                   "    - name: north\n"
                                   "      match: {attributes: {zone: north, verified: null}}\n"
                                   "      topics: north\n"
                                   "    - name: empty-unit\n"
                                   "      match: {attributes: {unit: \"\"}}\n"
                                   "      topics: nounit\n");
  encoded_t e;
  const char *both[] = {"zone", "north", "verified", "no"};
  encode(&e, "x", both, 2);
  assert_string_equal(targets(r, &e.ev), "north>north");
  const char *verified_empty[] = {"verified", "", "zone", "north"};
  encode(&e, "x", verified_empty, 2); /* present with an empty value is present */
  assert_string_equal(targets(r, &e.ev), "north>north");
  const char *no_verified[] = {"zone", "north", "value", "3"};
  encode(&e, "x", no_verified, 2);
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  const char *south[] = {"zone", "south", "verified", "yes"};
  encode(&e, "x", south, 2);
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  const char *prefix_only[] = {"zone", "nort", "verified", "yes"};
  encode(&e, "x", prefix_only, 2);
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  const char *longer[] = {"zone", "northern", "verified", "yes"};
  encode(&e, "x", longer, 2);
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  const char *key_case[] = {"Zone", "north", "verified", "yes"};
  encode(&e, "x", key_case, 2);
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  /* Map semantics: the last entry for a key wins. */
  const char *last_wins[] = {"zone", "north", "verified", "1", "zone", "south"};
  encode(&e, "x", last_wins, 3);
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  const char *last_wins2[] = {"zone", "south", "verified", "1", "zone", "north"};
  encode(&e, "x", last_wins2, 3);
  assert_string_equal(targets(r, &e.ev), "north>north");
  /* A required empty value matches only an empty value. */
  const char *unit_empty[] = {"unit", ""};
  encode(&e, "x", unit_empty, 1);
  assert_string_equal(targets(r, &e.ev), "empty-unit>nounit");
  const char *unit_set[] = {"unit", "C"};
  encode(&e, "x", unit_set, 1);
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  encode(&e, "x", NULL, 0);
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  intake_router_destroy(r);
}

/* Every condition of a rule must hold; one failing is enough to skip it. */
static void test_all_conditions(void **state) {
  intake_router_t *r = router_from("routes:\n  rules:\n"
                                   "    - name: r\n"
                                   "      match:\n"
                                   "        kind: sensor\n"
                                   "        type: smoke.alarm\n"
                                   "        severity: {min: 1, max: 2}\n"
                                   "        region_prefix: \"3307\"\n"
                                   "        attributes: {zone: north}\n"
                                   "      topics: t\n");
  encoded_t e;
  const char *kv[] = {"zone", "north"};
  encode(&e, "smoke.alarm", kv, 1);
  e.ev.region = str("330782");
  assert_string_equal(targets(r, &e.ev), "r>t");
  intake_event_t v = e.ev;
  v.source_kind = INTAKE_KIND_CAMERA;
  assert_string_equal(targets(r, &v), "default>intake.events");
  v = e.ev;
  v.severity = 3;
  assert_string_equal(targets(r, &v), "default>intake.events");
  v = e.ev;
  v.region = str("3308");
  assert_string_equal(targets(r, &v), "default>intake.events");
  v = e.ev;
  v.type = str("gas.alarm");
  assert_string_equal(targets(r, &v), "default>intake.events");
  const char *kv2[] = {"zone", "south"};
  encode(&e, "smoke.alarm", kv2, 1);
  e.ev.region = str("330782");
  assert_string_equal(targets(r, &e.ev), "default>intake.events");
  intake_router_destroy(r);
}

/* ---- the fan-out bound ------------------------------------------------------------------ */

/* n rules; rule i gets `match` with %zu replaced by i (when present) and topic t<i>. */
static char *rules_yaml(size_t n, const char *match, const char *extra) {
  size_t cap = 256 + n * 160;
  char *y = malloc(cap);
  assert_non_null(y);
  size_t len = (size_t)snprintf(y, cap, "routes:\n  rules:\n");
  for (size_t i = 0; i < n; i++) {
    len += (size_t)snprintf(y + len, cap - len, "    - name: r%zu\n      topics: t%zu\n", i, i);
    if (match != NULL) {
      len += (size_t)snprintf(y + len, cap - len, "      match: ");
      len += (size_t)snprintf(y + len, cap - len, match, i);
      len += (size_t)snprintf(y + len, cap - len, "\n");
    }
    if (i == 0 && extra != NULL)
      len += (size_t)snprintf(y + len, cap - len, "%s", extra);
  }
  return y;
}

static void test_fan_out_bound(void **state) {
  /* 16 catch-all rules: every event gets 16 topics, the most out[] holds. */
  char *y = rules_yaml(16, NULL, NULL);
  intake_router_t *r = router_from(y);
  intake_event_t e = ev(INTAKE_KIND_SENSOR, "x", 0, NULL);
  intake_route_target_t out[INTAKE_ROUTE_MAX_TOPICS];
  assert_int_equal(intake_router_route(r, &e, out), 16);
  for (size_t i = 0; i < 16; i++) {
    assert_int_equal(out[i].rule, i);
    assert_int_equal(out[i].topic, i); /* t<i> is the i-th distinct topic */
  }
  intake_router_destroy(r);
  free(y);

  /* 17 would not fit: refused at create, naming the first rule concerned. */
  y = rules_yaml(17, NULL, NULL);
  assert_string_equal(router_error(y),
                      "routes.rules[0] (r0): an event it matches could be routed to 17 topics "
                      "(with the other rules that may match it too); the most is 16");
  free(y);

  /* 40 rules on distinct types never match together: accepted, one topic each. */
  y = rules_yaml(40, "{type: type%zu}", NULL);
  r = router_from(y);
  e = ev(INTAKE_KIND_SENSOR, "type33", 0, NULL);
  assert_string_equal(targets(r, &e), "r33>t33");
  intake_router_destroy(r);
  free(y);

  /* Same with disjoint attribute values, kinds and regions. */
  y = rules_yaml(40, "{attributes: {zone: z%zu}}", NULL);
  intake_router_destroy(router_from(y));
  free(y);
  y = rules_yaml(20, "{region_prefix: \"33%02zu\"}", NULL);
  intake_router_destroy(router_from(y));
  free(y);
  /* ...but "33" overlaps every "33xx": 17 rules could match one event. */
  y = rules_yaml(17, "{region_prefix: \"33%02zu\"}", NULL);
  const char *wide = "    - name: wide\n      topics: wide\n      match: {region_prefix: \"33\"}\n";
  char *y2 = malloc(strlen(y) + strlen(wide) + 1);
  assert_non_null(y2);
  strcat(strcpy(y2, y), wide);
  assert_non_null(strstr(router_error(y2), "(wide): an event it matches could be routed to 18 "));
  free(y2);
  free(y);

  /* 16 catch-all rules after a stop rule: when the stop rule matches, none of the others is
   * evaluated, so no event gets 17 topics. Without the stop, 17 is possible. */
  y = rules_yaml(17, NULL, "      match: {type: heartbeat}\n      stop: true\n");
  r = router_from(y);
  e = ev(INTAKE_KIND_CAMERA, "heartbeat", 5, NULL);
  assert_string_equal(targets(r, &e), "r0>t0");
  e = ev(INTAKE_KIND_CAMERA, "other", 5, NULL);
  assert_int_equal(intake_router_route(r, &e, out), 16);
  intake_router_destroy(r);
  free(y);
  y = rules_yaml(17, NULL, "      match: {type: heartbeat}\n");
  assert_string_equal(router_error(y),
                      "routes.rules[0] (r0): an event it matches could be routed to 17 topics "
                      "(with the other rules that may match it too); the most is 16");
  free(y);
}

static void test_fan_out_one_rule(void **state) {
  char y[1024] = "routes:\n  rules:\n    - name: wide\n      topics: [";
  for (int i = 0; i < 17; i++)
    snprintf(y + strlen(y), sizeof y - strlen(y), "%sw%d", i ? ", " : "", i);
  strcat(y, "]\n");
  assert_string_equal(router_error(y),
                      "routes.rules[0] (wide): an event it matches could be routed to 17 topics "
                      "(with the other rules that may match it too); the most is 16");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_rules_default),
      cmocka_unit_test(test_names_and_indices),
      cmocka_unit_test(test_fan_out_and_each_topic_once),
      cmocka_unit_test(test_rule_to_default_topic),
      cmocka_unit_test(test_stop),
      cmocka_unit_test(test_stop_keeps_earlier),
      cmocka_unit_test(test_severity_range),
      cmocka_unit_test(test_kind_mask),
      cmocka_unit_test(test_types_exact),
      cmocka_unit_test(test_region_prefix),
      cmocka_unit_test(test_attributes),
      cmocka_unit_test(test_all_conditions),
      cmocka_unit_test(test_fan_out_bound),
      cmocka_unit_test(test_fan_out_one_rule),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
