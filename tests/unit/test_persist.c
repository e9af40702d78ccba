/* Unit tests for src/pipeline/persist.c on a real libuv loop: the load at create (none, good,
 * corrupt), periodic snapshots taken in steps while keys keep being committed, the sweep pause,
 * and the final snapshot at close, also when close() comes while a step is with the worker.
 *
 * Also a measurement, not run by CTest:
 *   test_persist --bench KEYS [EVENT_MiB SOURCE_MiB]
 * fills a deduper (default 256 + 64 MiB, the shipped sizes) with KEYS keys, then lets the loop
 * commit new keys from an idle callback (100 a turn) while periodic snapshots run, and reports
 * each snapshot's duration and loop time, the longest gap between two turns of the loop
 * (= the longest stall) and the commit rate, with and without a snapshot in progress. */
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
#include <uv.h>

#include "core/log.h"
#include "dedup/dedup.h"
#include "dedup/snapshot.h"
#include "pipeline/persist.h"

static char dir[256];
static char path[512];

static int setup(void **state) {
  (void)state;
  intake_log_set_level(INTAKE_LOG_ERROR); /* the expected errors below need not be printed */
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/test-persist-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir))
    return -1;
  snprintf(path, sizeof path, "%s/dedup.snap", dir);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static intake_dedup_probe_t probe(int i) {
  char src[32], ev[32];
  snprintf(src, sizeof src, "src-%d", i % 50);
  snprintf(ev, sizeof ev, "ev-%d", i);
  intake_dedup_probe_t p;
  intake_dedup_probe_init(&p, src, strlen(src), ev, strlen(ev), i % 4 == 0 ? (uint64_t)i + 1 : 0);
  return p;
}

static void commit_range(intake_dedup_t *d, int from, int to) {
  uint64_t now = wall_ms();
  for (int i = from; i < to; i++) {
    intake_dedup_probe_t p = probe(i);
    intake_dedup_commit(d, &p, now);
  }
}

/* Loads `path` into a fresh deduper and counts which of keys [0, n) it knows. */
static int known(int n) {
  intake_dedup_t *e = intake_dedup_create(600000, 16 << 20, 1 << 20);
  assert_non_null(e);
  intake_snapshot_info_t info;
  char err[256];
  int rc = intake_dedup_snapshot_load(e, path, wall_ms(), &info, err, sizeof err);
  if (rc < 0)
    fail_msg("load: %s", err);
  int k = 0;
  uint64_t now = wall_ms();
  for (int i = 0; i < n; i++) {
    intake_dedup_probe_t p = probe(i);
    k += intake_dedup_check(e, &p, now, NULL) == INTAKE_DEDUP_DUPLICATE;
  }
  intake_dedup_destroy(e);
  return k;
}

static void test_no_snapshot_then_final(void **state) {
  (void)state;
  unlink(path);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  intake_dedup_t *d = intake_dedup_create(600000, 16 << 20, 1 << 20);
  intake_persist_t *ps = intake_persist_create(&loop, d, path, 0); /* only the final one */
  assert_non_null(ps);
  intake_snapshot_stats_t st;
  intake_persist_stats(ps, &st);
  assert_int_equal(st.load_errors, 0);
  assert_int_equal(st.loaded_keys, 0);
  intake_persist_start(ps);
  commit_range(d, 0, 5000);
  intake_persist_close(ps);
  intake_persist_stats(ps, &st);
  assert_int_equal(st.written, 1);
  assert_int_equal(st.last_keys, 5000);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  intake_persist_destroy(ps);
  assert_int_equal(known(6000), 5000);

  /* The next start loads it. */
  intake_dedup_t *e = intake_dedup_create(600000, 16 << 20, 1 << 20);
  ps = intake_persist_create(&loop, e, path, 0);
  intake_persist_stats(ps, &st);
  assert_int_equal(st.loaded_keys, 5000);
  assert_int_equal(st.loaded_sources, 25); /* sources with seq: i % 4 == 0 -> even i % 50 */
  intake_persist_destroy(ps); /* never started: no final snapshot, nothing to close */
  assert_int_equal(uv_loop_close(&loop), 0);
  intake_dedup_destroy(d);
  intake_dedup_destroy(e);
}

/* Persist with NULL (persistence off) is a no-op everywhere. */
static void test_null(void **state) {
  (void)state;
  intake_persist_start(NULL);
  intake_persist_set_interval(NULL, 5);
  assert_false(intake_persist_scanning(NULL));
  intake_persist_close(NULL);
  intake_persist_destroy(NULL);
  intake_snapshot_stats_t st;
  memset(&st, 0xff, sizeof st);
  intake_persist_stats(NULL, &st);
  assert_int_equal(st.written, 0);
}

static void test_corrupt_at_start(void **state) {
  (void)state;
  FILE *f = fopen(path, "wb");
  fputs("INTKDDS\nnot really", f);
  fclose(f);
  char tmp[600], moved[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  f = fopen(tmp, "wb"); /* left over by a crash mid-snapshot */
  fclose(f);
  snprintf(moved, sizeof moved, "%s.corrupt", path);
  unlink(moved);
  uv_loop_t loop;
  uv_loop_init(&loop);
  intake_dedup_t *d = intake_dedup_create(600000, 1 << 20, 1 << 20);
  intake_persist_t *ps = intake_persist_create(&loop, d, path, 0);
  assert_non_null(ps);
  intake_snapshot_stats_t st;
  intake_persist_stats(ps, &st);
  assert_int_equal(st.load_errors, 1);
  assert_int_equal(st.loaded_keys, 0);
  struct stat sb;
  assert_int_equal(stat(moved, &sb), 0); /* kept for a post-mortem */
  assert_int_equal(stat(path, &sb), -1);
  assert_int_equal(stat(tmp, &sb), -1);
  intake_persist_destroy(ps);
  uv_loop_close(&loop);
  intake_dedup_destroy(d);
}

/* Periodic snapshots in steps while commits go on between the loop's iterations; then close()
 * while a step is with the worker. */
typedef struct {
  intake_dedup_t *d;
  intake_persist_t *ps;
  int next;             /* next key to commit */
  int scans_seen;       /* loop iterations that saw a scan in progress */
  int closed;
  uv_idle_t idle;
} run_t;

static void on_idle(uv_idle_t *h) {
  run_t *r = h->data;
  if (!intake_persist_scanning(r->ps))
    return;
  /* Between two steps of a scan: commits go on (the pipeline's sweep waits). */
  r->scans_seen++;
  if (r->next < 60000) {
    commit_range(r->d, r->next, r->next + 1);
    r->next++;
  }
  intake_snapshot_stats_t st;
  intake_persist_stats(r->ps, &st);
  if (st.written >= 2) {
    /* a third snapshot is mid-scan: close now; the final one follows its step */
    intake_persist_close(r->ps);
    r->closed = 1;
    uv_close((uv_handle_t *)h, NULL);
  }
}

static void test_periodic_and_close_mid_snapshot(void **state) {
  (void)state;
  unlink(path);
  uv_loop_t loop;
  uv_loop_init(&loop);
  run_t r = {0};
  /* 1M + 32k slots: a snapshot is 33 steps */
  r.d = intake_dedup_create(600000, 16 << 20, 1 << 20);
  commit_range(r.d, 0, 20000);
  r.next = 20000;
  r.ps = intake_persist_create(&loop, r.d, path, 20);
  intake_persist_start(r.ps);
  uv_idle_init(&loop, &r.idle);
  r.idle.data = &r;
  uv_idle_start(&r.idle, on_idle);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_true(r.closed);
  intake_snapshot_stats_t st;
  intake_persist_stats(r.ps, &st);
  assert_true(st.written >= 3); /* two periodic ones at least, then the final one */
  assert_int_equal(st.failed, 0);
  assert_int_equal(st.last_keys, (uint64_t)r.next); /* the final one has every key */
  assert_true(st.last_step_max_us > 0);
  intake_persist_destroy(r.ps);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(known(r.next + 1000), r.next);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  struct stat sb;
  assert_int_equal(stat(tmp, &sb), -1); /* the abandoned one's temp file is gone */
  intake_dedup_destroy(r.d);
}

/* A snapshot that cannot be written is counted; the previous file stays; the daemon goes on. */
static void test_write_failure(void **state) {
  (void)state;
  char bad[600];
  snprintf(bad, sizeof bad, "%s/missing-dir/dedup.snap", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  intake_dedup_t *d = intake_dedup_create(600000, 1 << 20, 1 << 20);
  intake_persist_t *ps = intake_persist_create(&loop, d, bad, 5);
  intake_persist_start(ps);
  commit_range(d, 0, 10);
  intake_snapshot_stats_t st;
  for (int i = 0; i < 200; i++) {
    uv_run(&loop, UV_RUN_ONCE);
    intake_persist_stats(ps, &st);
    if (st.failed >= 2)
      break;
  }
  assert_true(st.failed >= 2);
  assert_int_equal(st.written, 0);
  intake_persist_set_interval(ps, 0);
  intake_persist_close(ps);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  intake_persist_destroy(ps);
  uv_loop_close(&loop);
  intake_dedup_destroy(d);
}

/* ---- the measurement ---------------------------------------------------------------------- */

typedef struct {
  intake_dedup_t *d;
  intake_persist_t *ps;
  uint64_t next, last_turn_ns, last_commit_ns;
  uint64_t gaps_over_1ms[2];
  uint64_t hist[2][40];  /* gaps by power of two of ns */
  uint64_t gap_max_ns[2], turns[2], ns[2]; /* [scanning or writing?] */
  uint64_t written_seen;
  int busy;             /* a snapshot in progress: from a scan seen until the next written */
  uv_idle_t idle;
} bench_t;

static void bench_idle(uv_idle_t *h) {
  bench_t *b = h->data;
  uint64_t now = uv_hrtime();
  intake_snapshot_stats_t st;
  intake_persist_stats(b->ps, &st);
  if (intake_persist_scanning(b->ps))
    b->busy = 1;
  if (b->last_turn_ns) {
    uint64_t gap = now - b->last_turn_ns;
    int k = b->busy;
    if (gap > b->gap_max_ns[k])
      b->gap_max_ns[k] = gap;
    b->gaps_over_1ms[k] += gap > 1000000;
    b->hist[k][gap ? 64 - __builtin_clzll(gap) : 0]++;
    b->turns[k]++;
    b->ns[k] += gap;
  }
  if (st.written != b->written_seen) {
    b->written_seen = st.written;
    b->busy = 0;
    printf("snapshot %llu: %llu keys %llu sources, %llu bytes, %llu ms start to rename; loop time "
           "%llu us in all, longest step %llu us\n",
           (unsigned long long)st.written, (unsigned long long)st.last_keys,
           (unsigned long long)st.last_sources, (unsigned long long)st.last_bytes,
           (unsigned long long)st.last_ms, (unsigned long long)st.last_loop_us,
           (unsigned long long)st.last_step_max_us);
    if (st.written == 3) {
      intake_persist_close(b->ps);
      uv_close((uv_handle_t *)h, NULL);
      return;
    }
  }
  /* 100 commits a millisecond: 100k events a second, a busy intaked */
  if (now - b->last_commit_ns < 1000000) {
    b->last_turn_ns = uv_hrtime();
    return;
  }
  b->last_commit_ns = now;
  uint64_t wall = wall_ms();
  for (int i = 0; i < 100; i++) {
    char ev[32];
    snprintf(ev, sizeof ev, "live-%llu", (unsigned long long)b->next++);
    intake_dedup_probe_t p;
    intake_dedup_probe_init(&p, "bench", 5, ev, strlen(ev), 0);
    intake_dedup_commit(b->d, &p, wall);
  }
  b->last_turn_ns = uv_hrtime();
}

static int bench(uint64_t keys, uint64_t ev_mib, uint64_t src_mib) {
  const char *tmp = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/bench-persist-%d.snap", tmp && *tmp ? tmp : "/tmp",
           (int)getpid());
  uv_loop_t loop;
  uv_loop_init(&loop);
  bench_t b = {0};
  b.d = intake_dedup_create(600000, ev_mib << 20, src_mib << 20);
  if (!b.d)
    return 1;
  uint64_t now = wall_ms();
  for (uint64_t i = 0; i < keys; i++) {
    char src[32], ev[32];
    snprintf(src, sizeof src, "src-%llu", (unsigned long long)(i % 920000));
    snprintf(ev, sizeof ev, "ev-%llu", (unsigned long long)i);
    intake_dedup_probe_t p;
    intake_dedup_probe_init(&p, src, strlen(src), ev, strlen(ev), i % 6 == 0 ? i / 920000 + 1 : 0);
    intake_dedup_commit(b.d, &p, now);
  }
  b.ps = intake_persist_create(&loop, b.d, path, 1000);
  intake_persist_start(b.ps);
  uv_idle_init(&loop, &b.idle);
  b.idle.data = &b;
  uv_idle_start(&b.idle, bench_idle);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int k = 0; k < 2; k++)
    printf("%s: %llu loop turns, gap between turns mean %.2f us, longest %.1f us, %llu over "
           "1 ms\n",
           k ? "during snapshots" : "between snapshots", (unsigned long long)b.turns[k],
           b.turns[k] ? (double)b.ns[k] / (double)b.turns[k] / 1e3 : 0.0,
           (double)b.gap_max_ns[k] / 1e3, (unsigned long long)b.gaps_over_1ms[k]);
  for (int k = 0; k < 2; k++) {
    const double qs[] = {0.99, 0.999, 0.9999};
    printf("%s:", k ? "during snapshots" : "between snapshots");
    for (int q = 0; q < 3; q++) {
      uint64_t want = (uint64_t)((double)b.turns[k] * qs[q]), seen = 0;
      int i = 0;
      while (i < 39 && (seen += b.hist[k][i]) < want)
        i++;
      printf(" p%g < %.1f us", qs[q] * 100, (double)(1ull << i) / 1e3);
    }
    printf("\n");
  }
  intake_persist_destroy(b.ps);
  uv_loop_close(&loop);
  intake_dedup_destroy(b.d);
  unlink(path);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "--bench"))
    return bench(strtoull(argv[2], NULL, 10), argc > 3 ? strtoull(argv[3], NULL, 10) : 256,
                 argc > 4 ? strtoull(argv[4], NULL, 10) : 64);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_null),
      cmocka_unit_test(test_no_snapshot_then_final),
      cmocka_unit_test(test_corrupt_at_start),
      cmocka_unit_test(test_periodic_and_close_mid_snapshot),
      cmocka_unit_test(test_write_failure),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
