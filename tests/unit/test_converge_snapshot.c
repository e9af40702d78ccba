/* Unit tests for src/converge/snapshot.c and the persistence glue (pipeline/converge_persist.c):
 * a round trip keeps every episode field and the age order, and the episodes go on (a repeat is
 * suppressed, the summary counts repeats from both sides); times move between clocks; a rule
 * gone or with another key is skipped and reported; a smaller table evicts the oldest; a file
 * truncated at every offset, or with any one bit flipped, or with a header that lies, is
 * refused whole and loads nothing; a bad file is moved aside and counted.
 *
 * `test_converge_snapshot --bench N [PAYLOAD_BYTES [RANDOM_BYTES [DIR]]]` times the write and the
 * load of N episodes whose events carry a payload of which RANDOM_BYTES differ per event. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "converge/converge.h"
#include "converge/snapshot.h"
#include "intake.pb-c.h"
#include "pipeline/converge_persist.h"

#define T0 1767225600000ll
#define SEC 1000ll

static char dir[256], path[300];

/* Summaries seen by the callback. */
typedef struct {
  intake_converge_summary_t s;
  char source[64];
} seen_t;
static seen_t seen[64];
static size_t n_seen;

static void on_emit(void *ctx, const intake_converge_summary_t *s) {
  (void)ctx;
  if (n_seen == 64)
    return;
  seen_t *x = &seen[n_seen++];
  x->s = *s;
  x->s.last = NULL;
  snprintf(x->source, sizeof x->source, "%.*s", (int)s->source_id.len, s->source_id.ptr);
}

static uint8_t bufs[8][1024];
static unsigned next_buf;

/* An event of `src`/`type` (zone attribute when given), `pad` bytes of payload. */
static intake_event_t mk(const char *src, const char *type, bool clear, const char *zone,
                         size_t pad) {
  static uint8_t payload[600];
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
  if (pad) {
    memset(payload, 'p', sizeof payload);
    e.payload.data = payload;
    e.payload.len = pad < sizeof payload ? pad : sizeof payload;
  }
  uint8_t *b = bufs[next_buf++ % 8];
  assert_true(intake__v1__event__get_packed_size(&e) <= sizeof bufs[0]);
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
                              .flap_count = 3,
                              .flap_window_ms = 60 * SEC,
                              .memory_bytes = 1 << 20,
                              .max_event_bytes = 432};
  return c;
}

static intake_converge_counters_t cnt_a, cnt_b, cnt_c;

static intake_converge_t *mkc(const intake_converge_conf_t *c, intake_converge_counters_t *n) {
  memset(n, 0, sizeof *n);
  intake_converge_t *cv = intake_converge_create(c, on_emit, NULL, n);
  assert_non_null(cv);
  return cv;
}

static int check(intake_converge_t *c, const char *src, const char *type, bool clear,
                 uint64_t fp, int64_t now) {
  intake_event_t ev = mk(src, type, clear, NULL, 0);
  return (int)intake_converge_check(c, &ev, fp, now);
}

#define PASS INTAKE_CONVERGE_PASS
#define SUPP INTAKE_CONVERGE_SUPPRESS

/* The episodes of a table, in age order, with copies of their events. */
typedef struct {
  intake_converge_episode_t e[64];
  uint8_t bytes[64][512];
  size_t n;
} dump_t;

static int dump_one(void *ctx, const intake_converge_episode_t *e) {
  dump_t *d = ctx;
  assert_true(d->n < 64 && e->last_len <= 512);
  d->e[d->n] = *e;
  memcpy(d->bytes[d->n], e->last, e->last_len);
  d->e[d->n].last = d->bytes[d->n];
  d->n++;
  return 0;
}

static void dump(const intake_converge_t *c, dump_t *d) {
  d->n = 0;
  assert_int_equal(intake_converge_foreach(c, dump_one, d), 0);
}

/* The same episodes, times moved by `shift`. */
static void assert_same(const dump_t *a, const dump_t *b, int64_t shift) {
  assert_int_equal(a->n, b->n);
  for (size_t i = 0; i < a->n; i++) {
    const intake_converge_episode_t *x = &a->e[i], *y = &b->e[i];
    assert_int_equal(x->hash, y->hash);
    assert_int_equal(x->fp, y->fp);
    assert_int_equal(x->first_ms + shift, y->first_ms);
    assert_int_equal(x->last_ms + shift, y->last_ms);
    assert_int_equal(x->expires_ms + shift, y->expires_ms);
    assert_int_equal(x->next_summary_ms + shift, y->next_summary_ms);
    assert_int_equal(x->flap_start_ms + shift, y->flap_start_ms);
    assert_int_equal(x->repeats, y->repeats);
    assert_int_equal(x->flap_toggles, y->flap_toggles);
    assert_int_equal(x->state, y->state);
    assert_int_equal(x->last_clear, y->last_clear);
    assert_int_equal(x->last_len, y->last_len);
    assert_memory_equal(x->last, y->last, x->last_len);
  }
}

/* Table "alarms": cam1 repeating (3 repeats), cam2 open, lvl1 flapping, cam3 cleared. */
static intake_converge_t *populate(intake_converge_counters_t *n) {
  intake_converge_conf_t cf = conf();
  intake_converge_t *c = mkc(&cf, n);
  assert_int_equal(check(c, "cam1", "intrusion", false, 1, T0), PASS);
  assert_int_equal(check(c, "cam2", "intrusion", false, 2, T0 + 1 * SEC), PASS);
  for (int i = 1; i <= 3; i++)
    assert_int_equal(check(c, "cam1", "intrusion", false, 10 + (uint64_t)i, T0 + i * SEC), SUPP);
  for (int i = 0; i < 4; i++) { /* the 4th toggle flaps */
    check(c, "lvl1", "water", false, 100 + 2 * (uint64_t)i, T0 + (4 + 2 * i) * SEC);
    check(c, "lvl1", "water", true, 101 + 2 * (uint64_t)i, T0 + (5 + 2 * i) * SEC);
  }
  assert_int_equal(check(c, "cam3", "intrusion", false, 200, T0 + 12 * SEC), PASS);
  assert_int_equal(check(c, "cam3", "intrusion", true, 201, T0 + 13 * SEC), PASS);
  n_seen = 0;
  return c;
}

static void load_ok(const intake_converge_target_t *t, size_t n, int64_t clock_now,
                    int64_t wall_now, intake_converge_snapshot_info_t *info) {
  char err[256];
  int rc = intake_converge_snapshot_load(path, t, n, clock_now, wall_now, NULL, NULL, info, err,
                                         sizeof err);
  if (rc != 0)
    fail_msg("load: %d %s", rc, err);
}

static void test_round_trip(void **state) {
  (void)state;
  intake_converge_t *a = populate(&cnt_a);
  intake_converge_conf_t cf = conf();
  cf.key_type = false;
  intake_converge_t *b = mkc(&cf, &cnt_b);
  intake_event_t ev = mk("cam9", "x", false, NULL, 300);
  assert_int_equal(intake_converge_check(b, &ev, 5, T0), PASS);
  dump_t da, db, la, lb;
  dump(a, &da);
  dump(b, &db);
  assert_int_equal(da.n, 4);
  intake_converge_target_t t[] = {{"alarms", a}, {"unused", NULL}, {"other", b}};
  intake_converge_snapshot_info_t info;
  assert_int_equal(intake_converge_snapshot_write(path, t, 3, T0 + 20 * SEC, T0 + 20 * SEC, &info),
                   0);
  assert_int_equal(info.rules, 2);
  assert_int_equal(info.episodes, 5);
  struct stat stb;
  assert_int_equal(stat(path, &stb), 0);
  assert_int_equal(info.bytes, (uint64_t)stb.st_size);

  cf = conf();
  intake_converge_t *a2 = mkc(&cf, &cnt_a);
  cf.key_type = false;
  intake_converge_t *b2 = mkc(&cf, &cnt_b);
  intake_converge_target_t t2[] = {{"other", b2}, {"alarms", a2}};
  load_ok(t2, 2, T0 + 25 * SEC, T0 + 25 * SEC, &info);
  assert_int_equal(info.loaded, 5);
  assert_int_equal(info.expired, 0);
  assert_int_equal(info.skipped_gone + info.skipped_changed + info.refused, 0);
  assert_int_equal(cnt_a.episodes, 4);
  assert_int_equal(cnt_a.episodes_opened, 0); /* opened by the instance that wrote them */
  dump(a2, &la);
  dump(b2, &lb);
  assert_same(&da, &la, 0);
  assert_same(&db, &lb, 0);
  assert_int_equal(n_seen, 0);

  /* The episodes go on: a repeat is suppressed, the clear's summary counts both sides. */
  assert_int_equal(check(a2, "cam1", "intrusion", false, 50, T0 + 26 * SEC), SUPP);
  assert_int_equal(check(a2, "cam1", "intrusion", false, 1, T0 + 26 * SEC), PASS); /* retransmit */
  assert_int_equal(check(a2, "cam1", "intrusion", true, 51, T0 + 27 * SEC), PASS);
  assert_int_equal(n_seen, 1);
  assert_int_equal(seen[0].s.reason, INTAKE_SUMMARY_CLEARED);
  assert_int_equal(seen[0].s.repeat_count, 4);
  assert_int_equal(seen[0].s.first_seen_ms, T0);
  assert_string_equal(seen[0].source, "cam1");
  /* Still flapping: suppressed. cam3 was cleared: an alarm opens a new episode. */
  assert_int_equal(check(a2, "lvl1", "water", false, 300, T0 + 28 * SEC), SUPP);
  assert_int_equal(check(a2, "cam3", "intrusion", false, 301, T0 + 28 * SEC), PASS);
  intake_converge_destroy(a);
  intake_converge_destroy(b);
  intake_converge_destroy(a2);
  intake_converge_destroy(b2);
}

/* Saved on one clock, loaded on another: the file holds wall times, the tables their own. An
 * episode whose window ran out while down is closed by the first tick, once, EXPIRED. */
static void test_clock_conversion(void **state) {
  (void)state;
  intake_converge_t *a = populate(&cnt_a);
  dump_t da, la;
  dump(a, &da);
  /* The table's clock reads T0 + 20 s when the wall reads W: the file's times lead it by
   * W - (T0 + 20 s). */
  const int64_t clock_w = T0 + 20 * SEC, W = T0 + 1000 * SEC;
  intake_converge_target_t t[] = {{"alarms", a}};
  intake_converge_snapshot_info_t info;
  assert_int_equal(intake_converge_snapshot_write(path, t, 1, clock_w, W, &info), 0);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  unsigned char hdr[INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES];
  assert_int_equal(fread(hdr, 1, sizeof hdr, f), sizeof hdr);
  fclose(f);
  uint64_t created = 0;
  for (int i = 7; i >= 0; i--)
    created = created << 8 | hdr[16 + i];
  assert_int_equal(created, (uint64_t)W);

  /* Loaded 12 s later (wall), by a table whose (monotonic) clock reads 5000 s then. */
  const int64_t wall_l = W + 12 * SEC, mono_l = 5000 * SEC;
  intake_converge_conf_t cf = conf();
  intake_converge_t *b = mkc(&cf, &cnt_b);
  intake_converge_target_t t2[] = {{"alarms", b}};
  load_ok(t2, 1, mono_l, wall_l, &info);
  dump(b, &la);
  assert_same(&da, &la, (W - clock_w) - wall_l + mono_l);
  assert_int_equal(info.expired, 1); /* cam2: its window ended at T0 + 31 s, the load is at 32 */
  /* cam1 (window refreshed to T0 + 33 s) repeats: the same episode. */
  assert_int_equal(check(b, "cam1", "intrusion", false, 77, mono_l), SUPP);

  /* Down for longer than the window (cam2 ends at T0 + 31 s, cam1 refreshed to T0 + 33 s on the
   * writer's clock): loaded 40 s after the write, on the wall clock, both are over and the
   * first tick closes them, once each. */
  intake_converge_t *c = mkc(&cf, &cnt_c);
  intake_converge_target_t t3[] = {{"alarms", c}};
  const int64_t wall_x = W + 40 * SEC;
  load_ok(t3, 1, wall_x, wall_x, &info);
  assert_int_equal(info.loaded, 4);
  assert_int_equal(info.expired, 2); /* cam1, cam2; lvl1 flaps until T0 + 71 s; cam3 cleared */
  n_seen = 0;
  intake_converge_tick(c, wall_x, 1 << 20);
  assert_int_equal(n_seen, 2);
  for (size_t i = 0; i < 2; i++) {
    assert_int_equal(seen[i].s.reason, INTAKE_SUMMARY_EXPIRED);
    if (!strcmp(seen[i].source, "cam1"))
      assert_int_equal(seen[i].s.repeat_count, 3);
    else
      assert_string_equal(seen[i].source, "cam2");
  }
  intake_converge_tick(c, wall_x + 1, 1 << 20);
  assert_int_equal(n_seen, 2);
  assert_int_equal(cnt_c.episodes, 2); /* lvl1 (flapping), cam3 (cleared, for flap counting) */
  intake_converge_destroy(a);
  intake_converge_destroy(b);
  intake_converge_destroy(c);
}

typedef struct {
  char name[80];
  uint64_t episodes;
  intake_converge_skip_t why;
} skip_t;
static skip_t skips[8];
static size_t n_skips;

static void on_skip(void *ctx, const char *name, uint64_t episodes, intake_converge_skip_t why) {
  (void)ctx;
  assert_true(n_skips < 8);
  snprintf(skips[n_skips].name, sizeof skips[0].name, "%s", name);
  skips[n_skips].episodes = episodes;
  skips[n_skips++].why = why;
}

/* A rule whose key changed, or that is gone, is skipped (and reported); the rest loads. */
static void test_key_changed_and_gone(void **state) {
  (void)state;
  intake_converge_t *a = populate(&cnt_a);
  intake_converge_conf_t cf = conf();
  const char *zone[] = {"zone"};
  cf.key_attrs = zone;
  cf.n_key_attrs = 1;
  intake_converge_t *z = mkc(&cf, &cnt_b);
  intake_event_t ev = mk("cam5", "t", false, "z1", 0);
  intake_converge_check(z, &ev, 9, T0);
  intake_converge_t *g = mkc(&cf, &cnt_c);
  intake_converge_check(g, &ev, 9, T0);
  intake_converge_target_t t[] = {{"alarms", a}, {"zoned", z}, {"gone", g}};
  intake_converge_snapshot_info_t info;
  assert_int_equal(intake_converge_snapshot_write(path, t, 3, T0 + 20 * SEC, T0 + 20 * SEC, &info),
                   0);
  intake_converge_destroy(a);
  intake_converge_destroy(z);
  intake_converge_destroy(g);

  /* Key ids: equal confs agree; any key change differs; other settings do not count. */
  intake_converge_conf_t c1 = conf(), c2 = conf();
  c2.window_ms = 5 * SEC;
  c2.flap_count = 0;
  intake_converge_t *x = mkc(&c1, &cnt_a), *y = mkc(&c2, &cnt_b);
  assert_int_equal(intake_converge_key_id(x), intake_converge_key_id(y));
  intake_converge_destroy(y);
  const char *attrs2[] = {"zo", "ne"}, *attrs3[] = {"zone", "site"};
  intake_converge_conf_t variants[5] = {conf(), conf(), conf(), conf(), conf()};
  variants[0].key_source = false;
  variants[1].key_type = false;
  variants[2].key_attrs = zone, variants[2].n_key_attrs = 1;
  variants[3].key_attrs = attrs2, variants[3].n_key_attrs = 2;
  variants[4].key_attrs = attrs3, variants[4].n_key_attrs = 2;
  uint64_t ids[5];
  for (int i = 0; i < 5; i++) {
    y = mkc(&variants[i], &cnt_b);
    ids[i] = intake_converge_key_id(y);
    assert_true(ids[i] != intake_converge_key_id(x));
    for (int j = 0; j < i; j++)
      assert_true(ids[i] != ids[j]);
    intake_converge_destroy(y);
  }
  intake_converge_destroy(x);

  /* Now "zoned" keys on (source, type) only, and "gone" is not configured. */
  cf = conf();
  a = mkc(&cf, &cnt_a);
  z = mkc(&cf, &cnt_b);
  intake_converge_target_t t2[] = {{"alarms", a}, {"zoned", z}};
  char err[256];
  n_skips = 0;
  assert_int_equal(intake_converge_snapshot_load(path, t2, 2, T0 + 21 * SEC, T0 + 21 * SEC,
                                                 on_skip, NULL, &info, err, sizeof err),
                   0);
  assert_int_equal(info.loaded, 4);
  assert_int_equal(info.skipped_changed, 1);
  assert_int_equal(info.skipped_gone, 1);
  assert_int_equal(cnt_b.episodes, 0);
  assert_int_equal(n_skips, 2);
  assert_string_equal(skips[0].name, "zoned");
  assert_int_equal(skips[0].why, INTAKE_CONVERGE_SKIP_CHANGED);
  assert_int_equal(skips[0].episodes, 1);
  assert_string_equal(skips[1].name, "gone");
  assert_int_equal(skips[1].why, INTAKE_CONVERGE_SKIP_GONE);
  intake_converge_destroy(a);
  intake_converge_destroy(z);
}

/* A smaller table closes the oldest (EVICTED, with a summary); a smaller max_event_bytes refuses
 * the episodes whose event no longer fits. */
static void test_smaller_table(void **state) {
  (void)state;
  intake_converge_conf_t cf = conf();
  intake_converge_t *a = mkc(&cf, &cnt_a);
  char src[16];
  for (int i = 0; i < 10; i++) {
    snprintf(src, sizeof src, "cam%d", i);
    intake_event_t ev = mk(src, "t", false, NULL, i == 9 ? 300 : 0);
    assert_int_equal(intake_converge_check(a, &ev, (uint64_t)i, T0 + i), PASS);
  }
  intake_converge_target_t t[] = {{"alarms", a}};
  intake_converge_snapshot_info_t info;
  assert_int_equal(intake_converge_snapshot_write(path, t, 1, T0 + 10, T0 + 10, &info), 0);
  intake_converge_destroy(a);

  cf.memory_bytes = 4 * (512 + 8); /* 4 slots */
  intake_converge_t *b = mkc(&cf, &cnt_b);
  assert_int_equal(cnt_b.capacity, 4);
  intake_converge_target_t t2[] = {{"alarms", b}};
  n_seen = 0;
  load_ok(t2, 1, T0 + 11, T0 + 11, &info);
  assert_int_equal(info.loaded, 10);
  assert_int_equal(cnt_b.evicted, 6);
  assert_int_equal(n_seen, 6);
  for (size_t i = 0; i < 6; i++) {
    assert_int_equal(seen[i].s.reason, INTAKE_SUMMARY_EVICTED);
    snprintf(src, sizeof src, "cam%zu", i); /* oldest first */
    assert_string_equal(seen[i].source, src);
  }
  intake_converge_destroy(b);

  cf = conf();
  cf.max_event_bytes = 200;
  b = mkc(&cf, &cnt_b);
  t2[0].c = b;
  load_ok(t2, 1, T0 + 11, T0 + 11, &info);
  assert_int_equal(info.loaded, 9);
  assert_int_equal(info.refused, 1);
  intake_converge_destroy(b);
}

static void test_empty_and_missing(void **state) {
  (void)state;
  intake_converge_snapshot_info_t info;
  char err[256];
  unlink(path);
  assert_int_equal(intake_converge_snapshot_load(path, NULL, 0, T0, T0, NULL, NULL, &info, err,
                                                 sizeof err),
                   -ENOENT);
  assert_int_equal(intake_converge_snapshot_write(path, NULL, 0, T0, T0, &info), 0);
  assert_int_equal(info.rules, 0);
  load_ok(NULL, 0, T0, T0, &info);
  assert_int_equal(info.episodes, 0);
  /* A name the format cannot hold is refused before anything is written. */
  intake_converge_conf_t cf = conf();
  intake_converge_t *a = mkc(&cf, &cnt_a);
  char longname[80];
  memset(longname, 'n', 65);
  longname[65] = '\0';
  intake_converge_target_t t[] = {{longname, a}};
  assert_int_equal(intake_converge_snapshot_write(path, t, 1, T0, T0, &info), -EINVAL);
  intake_converge_destroy(a);
  char nodir[400];
  snprintf(nodir, sizeof nodir, "%s/missing/x", dir);
  assert_true(intake_converge_snapshot_write(nodir, NULL, 0, T0, T0, &info) < 0);
}

/* ---- damaged files ---------------------------------------------------------------------- */

static unsigned char *good;
static size_t good_len;

/* A small valid snapshot of populate()'s table, kept in memory. */
static void make_good(void) {
  intake_converge_t *a = populate(&cnt_a);
  intake_converge_target_t t[] = {{"alarms", a}};
  intake_converge_snapshot_info_t info;
  assert_int_equal(intake_converge_snapshot_write(path, t, 1, T0 + 20 * SEC, T0 + 20 * SEC, &info),
                   0);
  intake_converge_destroy(a);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  free(good);
  good = malloc(info.bytes);
  good_len = fread(good, 1, info.bytes, f);
  assert_int_equal(good_len, info.bytes);
  fclose(f);
}

static void put_file(const unsigned char *b, size_t n) {
  unlink(path); /* not truncated in place: ext4 (auto_da_alloc) then flushes at every close */
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(b, 1, n, f), n);
  fclose(f);
}

/* Loads the file now at `path` into a fresh table: must be refused, with nothing loaded. */
static void assert_refused(intake_converge_t *c, const char *what, size_t at) {
  intake_converge_target_t t[] = {{"alarms", c}};
  intake_converge_snapshot_info_t info;
  char err[256];
  int rc = intake_converge_snapshot_load(path, t, 1, T0 + 21 * SEC, T0 + 21 * SEC, NULL, NULL,
                                         &info, err, sizeof err);
  if (rc != -EINVAL)
    fail_msg("%s at %zu: rc %d (%s)", what, at, rc, err);
  assert_true(err[0] != '\0');
  assert_int_equal(info.loaded, 0);
  assert_int_equal(cnt_a.episodes, 0);
}

static void test_truncated_everywhere(void **state) {
  (void)state;
  make_good();
  intake_converge_conf_t cf = conf();
  intake_converge_t *c = mkc(&cf, &cnt_a);
  for (size_t len = 0; len < good_len; len++) {
    put_file(good, len);
    assert_refused(c, "truncated", len);
  }
  unsigned char *longer = malloc(good_len + 1);
  memcpy(longer, good, good_len);
  longer[good_len] = 0;
  put_file(longer, good_len + 1);
  assert_refused(c, "trailing byte", good_len);
  free(longer);
  put_file(good, good_len); /* and the whole file still loads */
  intake_converge_target_t t[] = {{"alarms", c}};
  intake_converge_snapshot_info_t info;
  load_ok(t, 1, T0 + 21 * SEC, T0 + 21 * SEC, &info);
  assert_int_equal(info.loaded, 4);
  intake_converge_destroy(c);
}

static void test_flipped_bits(void **state) {
  (void)state;
  make_good();
  intake_converge_conf_t cf = conf();
  intake_converge_t *c = mkc(&cf, &cnt_a);
  unsigned char *b = malloc(good_len);
  for (size_t i = 0; i < good_len; i++)
    for (int bit = 0; bit < 8; bit++) {
      memcpy(b, good, good_len);
      b[i] ^= (unsigned char)(1u << bit);
      put_file(b, good_len);
      assert_refused(c, "flipped bit", i * 8 + (size_t)bit);
    }
  free(b);
  intake_converge_destroy(c);
}

static void put64le(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

/* Headers that lie with a valid header checksum; content that lies with valid checksums. */
static void test_lying_headers(void **state) {
  (void)state;
  make_good();
  intake_converge_conf_t cf = conf();
  intake_converge_t *c = mkc(&cf, &cnt_a);
  unsigned char *b = malloc(good_len);
  const size_t fields[] = {24, 32, 40, 48}; /* rules, episodes, content, payload */
  const uint64_t values[] = {0, 1, 2, 3, 5, 1ull << 20, 1ull << 32, 1ull << 40, UINT64_MAX};
  for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
      memcpy(b, good, good_len);
      put64le(b + fields[f], values[v]);
      put64le(b + 72, XXH64(b, 72, 0));
      if (!memcmp(b, good, good_len))
        continue;
      put_file(b, good_len);
      assert_refused(c, "header field", fields[f] * 100 + v);
    }
  memcpy(b, good, good_len);
  b[8] = 2; /* version */
  put64le(b + 72, XXH64(b, 72, 0));
  put_file(b, good_len);
  assert_refused(c, "version", 8);
  free(b);

  /* Valid files around bad records (every checksum right): the record checks refuse them. */
  struct {
    size_t at;          /* content offset: rule record at 0 ("alarms"), first episode at 26 */
    unsigned char value;
    const char *what;
  } bad[] = {
      {0, 0, "rule name length 0"},       {0, 65, "rule name length 65"},
      {12, 200, "rule episode count"},   {26 + 7, 0, "hash without bit 63"},
      {26 + 62, 9, "episode state"},      {26 + 63, 2, "last_clear"},
      {26 + 66, 1, "event length"},       {26 + 68, 0x07, "event that does not parse"},
      {20, 0, "NUL in a rule name"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    uint64_t content = 0, payload = good_len - INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES;
    for (int i = 7; i >= 0; i--)
      content = content << 8 | good[40 + i];
    unsigned char *plain = malloc(content);
    assert_int_equal(ZSTD_decompress(plain, content, good + INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES,
                                     payload),
                     content);
    assert_true(bad[k].at < content);
    plain[bad[k].at] = bad[k].value;
    size_t cap = ZSTD_compressBound(content);
    unsigned char *f = malloc(INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES + cap);
    memcpy(f, good, INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES);
    size_t z = ZSTD_compress(f + INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES, cap, plain, content, 1);
    assert_false(ZSTD_isError(z));
    put64le(f + 48, z);
    put64le(f + 56, XXH64(plain, content, 0));
    put64le(f + 64, XXH64(f + INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES, z, 0));
    put64le(f + 72, XXH64(f, 72, 0));
    put_file(f, INTAKE_CONVERGE_SNAPSHOT_HEADER_BYTES + z);
    assert_refused(c, bad[k].what, k);
    free(plain);
    free(f);
  }

  /* Import refuses what the loader would also refuse. */
  intake_converge_episode_t e = {.hash = 1, .state = INTAKE_CONVERGE_EP_ACTIVE};
  assert_int_equal(intake_converge_import(c, &e), 0);
  e.hash = 1ull << 63;
  e.state = 9;
  assert_int_equal(intake_converge_import(c, &e), 0);
  e.state = INTAKE_CONVERGE_EP_ACTIVE;
  e.last_len = 433;
  static const uint8_t big[433];
  e.last = big;
  assert_int_equal(intake_converge_import(c, &e), 0);
  assert_int_equal(cnt_a.episodes, 0);
  intake_converge_destroy(c);
}

/* The glue: a damaged file is counted, moved to .corrupt, and start goes on; a good one loads. */
static void test_persist_glue(void **state) {
  (void)state;
  char cpath[400], corrupt[420];
  assert_int_equal(intake_converge_persist_path(path, cpath, sizeof cpath), 0);
  assert_true(strstr(cpath, ".converge") != NULL);
  char tiny[8];
  assert_int_equal(intake_converge_persist_path(path, tiny, sizeof tiny), -ENAMETOOLONG);
  snprintf(corrupt, sizeof corrupt, "%s.corrupt", cpath);
  unlink(corrupt);
  intake_converge_t *a = populate(&cnt_a);
  intake_converge_target_t t[] = {{"alarms", a}};
  intake_converge_snapshot_stats_t st = {0};
  intake_converge_persist_save(cpath, t, 1, T0 + 20 * SEC, &st);
  assert_int_equal(st.written, 1);
  assert_int_equal(st.last_episodes, 4);
  intake_converge_destroy(a);

  intake_converge_conf_t cf = conf();
  a = mkc(&cf, &cnt_a);
  t[0].c = a;
  memset(&st, 0, sizeof st);
  intake_converge_persist_load(cpath, t, 1, T0 + 21 * SEC, &st);
  assert_int_equal(st.loaded_episodes, 4);
  assert_int_equal(st.load_errors, 0);
  intake_converge_destroy(a);

  FILE *f = fopen(cpath, "r+b"); /* one flipped byte in the payload */
  assert_non_null(f);
  fseek(f, 100, SEEK_SET);
  fputc(0x5a ^ 0xff, f);
  fclose(f);
  char tmp[420];
  snprintf(tmp, sizeof tmp, "%s.tmp", cpath);
  put_file((const unsigned char *)"x", 0);
  f = fopen(tmp, "wb"); /* a write cut short */
  fclose(f);
  a = mkc(&cf, &cnt_a);
  t[0].c = a;
  memset(&st, 0, sizeof st);
  intake_converge_persist_load(cpath, t, 1, T0 + 21 * SEC, &st);
  assert_int_equal(st.load_errors, 1);
  assert_int_equal(st.loaded_episodes, 0);
  assert_int_equal(cnt_a.episodes, 0);
  assert_int_equal(access(cpath, F_OK), -1);
  assert_int_equal(access(corrupt, F_OK), 0);
  assert_int_equal(access(tmp, F_OK), -1);
  memset(&st, 0, sizeof st); /* next start: no file, no error */
  intake_converge_persist_load(cpath, t, 1, T0 + 22 * SEC, &st);
  assert_int_equal(st.load_errors, 0);
  intake_converge_destroy(a);
  unlink(corrupt);
}

/* ---- bench --------------------------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void noop(void *ctx, const intake_converge_summary_t *s) {
  (void)ctx;
  (void)s;
}

static int bench(uint64_t n, size_t pad, size_t rnd, const char *where) {
  intake_converge_conf_t cf = conf();
  cf.max_event_bytes = 1024;
  cf.memory_bytes = (n + n / 4) * (1024 + 96 + 8);
  intake_converge_counters_t c1 = {0}, c2 = {0};
  intake_converge_t *a = intake_converge_create(&cf, noop, NULL, &c1);
  intake_converge_t *b = intake_converge_create(&cf, noop, NULL, &c2);
  if (!a || !b)
    return 1;
  /* Events like a city's: camera ids, a few alarm types, a zone, an opaque payload. */
  uint8_t payload[1024];
  for (size_t i = 0; i < sizeof payload; i++)
    payload[i] = (uint8_t)(i * 131 + 7);
  for (uint64_t i = 0; i < n; i++) {
    char src[48], type[48], id[48], zone[32];
    snprintf(src, sizeof src, "34020000001320%06llu", (unsigned long long)i);
    snprintf(type, sizeof type, "gb28181.alarm.%llu", (unsigned long long)(i % 7));
    snprintf(id, sizeof id, "evt-%llu", (unsigned long long)i);
    snprintf(zone, sizeof zone, "z%llu", (unsigned long long)(i % 50));
    Intake__V1__Event e = INTAKE__V1__EVENT__INIT;
    e.source_id = src;
    e.event_id = id;
    e.type = type;
    e.source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA;
    e.time_ms = T0 + (int64_t)i;
    Intake__V1__Event__AttributesEntry at = INTAKE__V1__EVENT__ATTRIBUTES_ENTRY__INIT, *ap = &at;
    at.key = (char *)"zone";
    at.value = zone;
    e.n_attributes = 1;
    e.attributes = &ap;
    for (size_t k = 0; k < rnd && k < pad; k++) /* what differs between events: ids, urls */
      payload[k] = (uint8_t)(XXH64(&i, sizeof i, k) >> 7);
    e.payload.data = payload;
    e.payload.len = pad;
    uint8_t buf[2048];
    size_t len = intake__v1__event__pack(&e, buf);
    intake_event_t ev;
    if (intake_event_parse(buf, len, &ev) < 0 ||
        intake_converge_check(a, &ev, i + 1, T0 + (int64_t)(i / 100)) != PASS)
      return 1;
    intake_converge_check(a, &ev, i + n + 1, T0 + (int64_t)(i / 100) + 1);
  }
  char p[512];
  snprintf(p, sizeof p, "%s/bench.converge", where);
  intake_converge_target_t t[] = {{"alarms", a}};
  intake_converge_target_t t2[] = {{"alarms", b}};
  intake_converge_snapshot_info_t wi, li;
  char err[256];
  double w0 = now_s();
  int rc = intake_converge_snapshot_write(p, t, 1, T0 + 5000, T0 + 5000, &wi);
  double w1 = now_s();
  rc = rc ? rc
          : intake_converge_snapshot_load(p, t2, 1, T0 + 6000, T0 + 6000, NULL, NULL, &li, err,
                                          sizeof err);
  double w2 = now_s();
  if (rc) {
    fprintf(stderr, "bench: %d %s\n", rc, err);
    return 1;
  }
  printf("random_bytes=%zu episodes=%llu event_bytes~%zu file=%llu bytes (%.1f B/episode) write=%.1f ms "
         "(fsync included) load=%.1f ms loaded=%llu\n",
         rnd, (unsigned long long)wi.episodes, pad + 60, (unsigned long long)wi.bytes,
         (double)wi.bytes / (double)wi.episodes, (w1 - w0) * 1e3, (w2 - w1) * 1e3,
         (unsigned long long)li.loaded);
  unlink(p);
  intake_converge_destroy(a);
  intake_converge_destroy(b);
  return 0;
}

static int setup_dir(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/test_converge_snapshot.XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(path, sizeof path, "%s/snap.converge", dir);
  return 0;
}

static int teardown_dir(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  free(good);
  good = NULL;
  return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "--bench"))
    return bench(strtoull(argv[2], NULL, 10), argc > 3 ? strtoull(argv[3], NULL, 10) : 360,
                 argc > 4 ? strtoull(argv[4], NULL, 10) : 64, argc > 5 ? argv[5] : "/tmp");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_clock_conversion),
      cmocka_unit_test(test_key_changed_and_gone),
      cmocka_unit_test(test_smaller_table),
      cmocka_unit_test(test_empty_and_missing),
      cmocka_unit_test(test_truncated_everywhere),
      cmocka_unit_test(test_flipped_bits),
      cmocka_unit_test(test_lying_headers),
      cmocka_unit_test(test_persist_glue),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
