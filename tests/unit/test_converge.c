/* Unit tests for src/converge: episodes with an explicit clock (open, repeat, clear, silence),
 * refresh vs fixed windows, periodic summaries, flapping, eviction when full, key isolation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "converge/converge.h"
#include "intake.pb-c.h"

#define T0 1767225600000ll
#define SEC 1000ll

/* Summaries seen by the callback. */
typedef struct {
  intake_converge_summary_t s;
  char source[64], type[64];
} seen_t;
static seen_t seen[256];
static size_t n_seen;

static void on_emit(void *ctx, const intake_converge_summary_t *s) {
  (void)ctx;
  if (n_seen == 256)
    return;
  seen_t *x = &seen[n_seen++];
  x->s = *s;
  snprintf(x->source, sizeof x->source, "%.*s", (int)s->source_id.len, s->source_id.ptr);
  snprintf(x->type, sizeof x->type, "%.*s", (int)s->type.len, s->type.ptr);
  /* The last event's bytes must decode as an Event. */
  Intake__V1__Event *e = intake__v1__event__unpack(NULL, s->last_len, s->last);
  assert_non_null(e);
  assert_string_equal(e->source_id, x->source);
  intake__v1__event__free_unpacked(e, NULL);
  x->s.last = NULL;
}

/* Serialized events live in a ring so that the views stay valid for a check. */
static uint8_t bufs[8][512];
static unsigned next_buf;

static intake_event_t mk(const char *src, const char *type, bool clear, const char *zone) {
  Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
  e.source_id = (char *)src;
  e.event_id = (char *)"x";
  e.type = (char *)type;
  e.source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA;
  e.time_ms = T0;
  e.clear = clear;
  Intake__V1__Event__AttributesEntry a = INTAKE__V1__EVENT__ATTRIBUTES_ENTRY__INIT, *ap = &a;
  if (zone) {
    a.key = (char *)"zone";
    a.value = (char *)zone;
    e.n_attributes = 1;
    e.attributes = &ap;
  }
  uint8_t *b = bufs[next_buf++ % 8];
  size_t len = intake__v1__event__pack(&e, b);
  intake_event_t ev;
  assert_int_equal(intake_event_parse(b, len, &ev), 0);
  return ev;
}

static intake_converge_conf_t conf(void) {
  intake_converge_conf_t c = {.key_source = true,
                              .key_type = true,
                              .window_ms = 30 * SEC,
                              .refresh = true,
                              .memory_bytes = 1 << 20,
                              .max_event_bytes = 432};
  return c;
}

static intake_converge_counters_t cnt;

static intake_converge_t *mkc(const intake_converge_conf_t *c) {
  n_seen = 0;
  memset(&cnt, 0, sizeof cnt);
  intake_converge_t *cv = intake_converge_create(c, on_emit, NULL, &cnt);
  assert_non_null(cv);
  return cv;
}

static int check(intake_converge_t *c, const char *src, const char *type, bool clear,
                 uint64_t fp, int64_t now) {
  intake_event_t ev = mk(src, type, clear, NULL);
  return (int)intake_converge_check(c, &ev, fp, now);
}

#define PASS INTAKE_CONVERGE_PASS
#define SUPP INTAKE_CONVERGE_SUPPRESS

static void test_repeat_clear(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  intake_converge_t *c = mkc(&cf);
  assert_int_equal(check(c, "cam1", "intrusion", false, 1, T0), PASS);
  for (int i = 1; i <= 59; i++)
    assert_int_equal(check(c, "cam1", "intrusion", false, 1 + (uint64_t)i, T0 + i * SEC), SUPP);
  assert_int_equal(n_seen, 0);
  assert_int_equal(check(c, "cam1", "intrusion", true, 100, T0 + 60 * SEC), PASS);
  assert_int_equal(n_seen, 1);
  assert_int_equal(seen[0].s.reason, INTAKE_SUMMARY_CLEARED);
  assert_int_equal(seen[0].s.repeat_count, 59);
  assert_int_equal(seen[0].s.first_seen_ms, T0);
  assert_int_equal(seen[0].s.last_seen_ms, T0 + 60 * SEC);
  assert_string_equal(seen[0].source, "cam1");
  assert_string_equal(seen[0].type, "intrusion");
  assert_int_equal(cnt.episodes_opened, 1);
  assert_int_equal(cnt.repeats_suppressed, 59);
  assert_int_equal(cnt.episodes, 0);
  /* A new alarm opens a new episode; a clear with no episode just passes. */
  assert_int_equal(check(c, "cam1", "intrusion", false, 200, T0 + 61 * SEC), PASS);
  assert_int_equal(check(c, "cam2", "intrusion", true, 201, T0 + 61 * SEC), PASS);
  assert_int_equal(cnt.episodes_opened, 2);
  intake_converge_destroy(c);
}

static void test_retransmit_of_first_passes(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  intake_converge_t *c = mkc(&cf);
  assert_int_equal(check(c, "cam1", "t", false, 7, T0), PASS);
  assert_int_equal(check(c, "cam1", "t", false, 7, T0 + 1), PASS);
  assert_int_equal(check(c, "cam1", "t", false, 8, T0 + 2), SUPP);
  intake_converge_destroy(c);
}

static void test_silence_expiry_refresh(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  cf.window_ms = 2 * SEC;
  intake_converge_t *c = mkc(&cf);
  assert_int_equal(check(c, "cam1", "t", false, 1, T0), PASS);
  for (int i = 1; i <= 5; i++) /* every 1.5 s: each refreshes the 2 s window */
    assert_int_equal(check(c, "cam1", "t", false, 1 + (uint64_t)i, T0 + i * 1500), SUPP);
  intake_converge_tick(c, T0 + 9400, 1 << 20);
  assert_int_equal(n_seen, 0);
  intake_converge_tick(c, T0 + 9500, 1 << 20);
  assert_int_equal(n_seen, 1);
  assert_int_equal(seen[0].s.reason, INTAKE_SUMMARY_EXPIRED);
  assert_int_equal(seen[0].s.repeat_count, 5);
  assert_int_equal(cnt.episodes, 0);
  assert_int_equal(check(c, "cam1", "t", false, 50, T0 + 10000), PASS);
  intake_converge_destroy(c);
}

static void test_fixed_window(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  cf.window_ms = 2 * SEC;
  cf.refresh = false;
  intake_converge_t *c = mkc(&cf);
  assert_int_equal(check(c, "cam1", "t", false, 1, T0), PASS);
  assert_int_equal(check(c, "cam1", "t", false, 2, T0 + 1500), SUPP);
  /* Fixed from the first event: at T0 + 2 s the episode is over, whatever came since. The
   * repeat found it expired: the summary goes out and a new episode opens with this event. */
  assert_int_equal(check(c, "cam1", "t", false, 3, T0 + 2000), PASS);
  assert_int_equal(n_seen, 1);
  assert_int_equal(seen[0].s.reason, INTAKE_SUMMARY_EXPIRED);
  assert_int_equal(seen[0].s.repeat_count, 1);
  assert_int_equal(cnt.episodes_opened, 2);
  intake_converge_destroy(c);
}

static void test_periodic_summary(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  cf.window_ms = 5 * SEC;
  cf.summary_every_ms = 10 * SEC;
  intake_converge_t *c = mkc(&cf);
  for (int i = 0; i <= 25; i++) {
    check(c, "cam1", "t", false, 1 + (uint64_t)i, T0 + i * SEC);
    intake_converge_tick(c, T0 + i * SEC, 1 << 20);
  }
  assert_int_equal(n_seen, 2); /* at 10 s and 20 s */
  assert_int_equal(seen[0].s.reason, INTAKE_SUMMARY_PERIODIC);
  assert_int_equal(seen[0].s.repeat_count, 10);
  assert_int_equal(seen[1].s.repeat_count, 20);
  intake_converge_tick(c, T0 + 31 * SEC, 1 << 20);
  assert_int_equal(n_seen, 3);
  assert_int_equal(seen[2].s.reason, INTAKE_SUMMARY_EXPIRED);
  assert_int_equal(seen[2].s.repeat_count, 25);
  intake_converge_destroy(c);
}

static void test_flapping(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  cf.flap_count = 3;
  cf.flap_window_ms = 60 * SEC;
  intake_converge_t *c = mkc(&cf);
  int64_t t = T0;
  uint64_t fp = 1;
  int passed = 0;
  for (int i = 0; i < 10; i++) { /* alarm, clear, alarm, clear, ... */
    passed += check(c, "level1", "water.high", false, fp++, t += SEC) == PASS;
    passed += check(c, "level1", "water.high", true, fp++, t += SEC) == PASS;
  }
  /* The opening alarm and 3 toggles pass; the 4th toggle reports flapping once. */
  assert_int_equal(passed, 4);
  assert_int_equal(cnt.flapping, 1);
  size_t flaps = 0;
  for (size_t i = 0; i < n_seen; i++)
    if (seen[i].s.reason == INTAKE_SUMMARY_FLAPPING) {
      flaps++;
      assert_true(seen[i].s.flapping);
      assert_int_equal(seen[i].s.flap_count, 4);
    }
  assert_int_equal(flaps, 1);
  size_t before = n_seen;
  /* Calm: no toggle for the flap window closes the flapping episode with one summary. */
  intake_converge_tick(c, t + 61 * SEC, 1 << 20);
  assert_int_equal(n_seen, before + 1);
  assert_int_equal(seen[n_seen - 1].s.reason, INTAKE_SUMMARY_EXPIRED);
  assert_true(seen[n_seen - 1].s.flapping);
  assert_int_equal(seen[n_seen - 1].s.flap_count, 19);
  assert_int_equal(check(c, "level1", "water.high", false, fp++, t + 62 * SEC), PASS);
  intake_converge_destroy(c);
}

static void test_table_full_evicts_oldest(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  cf.memory_bytes = 8 * (512 + 8);
  intake_converge_t *c = mkc(&cf);
  assert_int_equal(cnt.capacity, 8);
  char src[16];
  for (int i = 0; i < 8; i++) {
    snprintf(src, sizeof src, "s%d", i);
    assert_int_equal(check(c, src, "t", false, 1, T0 + i), PASS);
  }
  assert_int_equal(n_seen, 0);
  assert_int_equal(check(c, "s8", "t", false, 1, T0 + 8), PASS);
  assert_int_equal(n_seen, 1);
  assert_int_equal(seen[0].s.reason, INTAKE_SUMMARY_EVICTED);
  assert_string_equal(seen[0].source, "s0");
  assert_int_equal(cnt.evicted, 1);
  assert_int_equal(cnt.episodes, 8);
  /* The others are intact. */
  for (int i = 1; i <= 8; i++) {
    snprintf(src, sizeof src, "s%d", i);
    assert_int_equal(check(c, src, "t", false, 2, T0 + 100), SUPP);
  }
  /* Churn through many more than fit: the index stays consistent. */
  for (int i = 9; i < 2000; i++) {
    snprintf(src, sizeof src, "s%d", i);
    assert_int_equal(check(c, src, "t", false, 1, T0 + 200 + i), PASS);
    assert_int_equal(check(c, src, "t", false, 2, T0 + 200 + i), SUPP);
  }
  assert_int_equal(cnt.episodes, 8);
  intake_converge_flush(c, INTAKE_SUMMARY_EVICTED);
  assert_int_equal(cnt.episodes, 0);
  intake_converge_destroy(c);
}

static void test_interleaved_keys(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  intake_converge_t *c = mkc(&cf);
  const char *srcs[] = {"camA", "camB"}, *types[] = {"intrusion", "loitering"};
  for (int r = 0; r < 10; r++)
    for (int s = 0; s < 2; s++)
      for (int t = 0; t < 2; t++)
        assert_int_equal(check(c, srcs[s], types[t], false, 10 + (uint64_t)r, T0 + r * SEC),
                         r == 0 ? PASS : SUPP);
  assert_int_equal(cnt.episodes_opened, 4);
  /* Clearing one key closes only that episode. */
  assert_int_equal(check(c, "camA", "intrusion", true, 99, T0 + 20 * SEC), PASS);
  assert_int_equal(n_seen, 1);
  assert_int_equal(seen[0].s.repeat_count, 9);
  assert_int_equal(check(c, "camA", "loitering", false, 100, T0 + 21 * SEC), SUPP);
  intake_converge_destroy(c);

  /* With an attribute in the key, two zones of one camera are two episodes. */
  cf.key_attrs = (const char *const[]){"zone"};
  cf.n_key_attrs = 1;
  c = mkc(&cf);
  intake_event_t a = mk("cam", "t", false, "north"), b = mk("cam", "t", false, "south");
  assert_int_equal(intake_converge_check(c, &a, 1, T0), PASS);
  assert_int_equal(intake_converge_check(c, &b, 2, T0), PASS);
  assert_int_equal(intake_converge_check(c, &a, 3, T0 + 1), SUPP);
  intake_converge_destroy(c);

  /* Keyed by source only: types share one episode. */
  cf = conf();
  cf.key_type = false;
  c = mkc(&cf);
  assert_int_equal(check(c, "cam", "t1", false, 1, T0), PASS);
  assert_int_equal(check(c, "cam", "t2", false, 2, T0), SUPP);
  intake_converge_destroy(c);
}

static void test_oversize_passes(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  cf.max_event_bytes = 16;
  intake_converge_t *c = mkc(&cf);
  assert_int_equal(check(c, "a-long-camera-id", "intrusion", false, 1, T0), PASS);
  assert_int_equal(check(c, "a-long-camera-id", "intrusion", false, 2, T0), PASS);
  assert_int_equal(cnt.oversize, 2);
  intake_converge_destroy(c);
}

static void test_conf_check(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  assert_null(intake_converge_conf_check(&cf));
  cf.window_ms = 0;
  assert_non_null(intake_converge_conf_check(&cf));
  cf = conf();
  cf.memory_bytes = 100;
  assert_non_null(intake_converge_conf_check(&cf));
  assert_null(intake_converge_create(&cf, on_emit, NULL, &cnt));
}

/* routes.rules[].converge in the config loader: defaults, every key, and errors with lines. */
static void test_config(void **state) {
  (void)state;
  static const char ok[] =
      "routes:\n"
      "  rules:\n"
      "    - {name: a, topics: t1, converge: ~}\n"
      "    - name: b\n"
      "      topics: t2\n"
      "      converge:\n"
      "        key: [source, attributes: [zone, lane]]\n"
      "        window: 5s\n"
      "        refresh: false\n"
      "        summary_every: 1m\n"
      "        flap: {count: 4, window: 10m}\n"
      "        memory: 1MiB\n"
      "        max_event_bytes: 1KiB\n"
      "    - {name: c, topics: t3}\n";
  intake_config_t cfg;
  char err[256];
  assert_int_equal(intake_config_load_string(&cfg, "t.yaml", ok, strlen(ok), err, sizeof err), 0);
  const intake_converge_config_t *a = &cfg.rules[0].converge, *b = &cfg.rules[1].converge;
  assert_true(a->enabled && a->key_source && a->key_type && a->refresh);
  assert_int_equal(a->window_ms, 30000);
  assert_int_equal(a->memory_bytes, 16 << 20);
  assert_int_equal(a->max_event_bytes, 432);
  assert_int_equal(a->flap_count, 0);
  assert_true(b->enabled && b->key_source && !b->key_type && !b->refresh);
  assert_int_equal(b->n_key_attrs, 2);
  assert_string_equal(b->key_attrs[1], "lane");
  assert_int_equal(b->window_ms, 5000);
  assert_int_equal(b->summary_every_ms, 60000);
  assert_int_equal(b->flap_count, 4);
  assert_int_equal(b->flap_window_ms, 600000);
  assert_int_equal(b->memory_bytes, 1 << 20);
  assert_int_equal(b->max_event_bytes, 1024);
  assert_false(cfg.rules[2].converge.enabled);
  intake_config_dispose(&cfg);

  static const struct {
    const char *yaml, *msg;
  } bad[] = {
      {"routes: {rules: [{name: a, topics: t, converge: {windw: 5s}}]}\n",
       "t.yaml:1: routes.rules[0].converge.windw: unknown key"},
      {"routes: {rules: [{name: a, topics: t, converge: {window: 0}}]}\n",
       "t.yaml:1: routes.rules[0].converge.window: must be between 100ms and 1d (got 0)"},
      {"routes:\n  rules:\n    - {name: a, topics: t, converge: {key: [color]}}\n",
       "t.yaml:3: routes.rules[0].converge.key[0]: expected source, type or attributes: [names]"},
      {"routes: {rules: [{name: a, topics: t, converge: {key: []}}]}\n",
       "t.yaml:1: routes.rules[0].converge.key: the key needs at least one field"},
      {"routes: {rules: [{name: a, topics: t, converge: {flap: {count: 0}}}]}\n",
       "t.yaml:1: routes.rules[0].converge.flap.count: must be between 1 and 65000 (got 0)"},
      {"routes: {rules: [{name: a, topics: t, converge: {memory: 1KiB}}]}\n",
       "t.yaml:1: routes.rules[0].converge.memory: must be between 65536 and 17179869184 (got 1KiB)"},
      {"routes: {rules: [{name: a, topics: t, converge: {refresh: maybe}}]}\n",
       "t.yaml:1: routes.rules[0].converge.refresh: expected true or false (got \"maybe\")"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(
        intake_config_load_string(&cfg, "t.yaml", bad[i].yaml, strlen(bad[i].yaml), err, sizeof err),
        -1);
    assert_string_equal(err, bad[i].msg);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_repeat_clear),
      cmocka_unit_test(test_retransmit_of_first_passes),
      cmocka_unit_test(test_silence_expiry_refresh),
      cmocka_unit_test(test_fixed_window),
      cmocka_unit_test(test_periodic_summary),
      cmocka_unit_test(test_flapping),
      cmocka_unit_test(test_table_full_evicts_oldest),
      cmocka_unit_test(test_interleaved_keys),
      cmocka_unit_test(test_oversize_passes),
      cmocka_unit_test(test_conf_check),
      cmocka_unit_test(test_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
