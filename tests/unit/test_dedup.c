/* Unit tests for src/dedup: exact keys, in-flight tracking, sequence windows, sweep, eviction. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "dedup/dedup.h"

int intake_dedup__verify(const intake_dedup_t *d); /* test hook in dedup.c */

#define T0 1767225600000ull /* 2026-01-01T00:00:00Z, ms */
#define SEC 1000ull
#define MIN_EV_BYTES (1024 * 16)
#define MIN_SRC_BYTES (1024 * 32)

static intake_dedup_probe_t probe(const char *src, const char *ev, uint64_t seq) {
  intake_dedup_probe_t p;
  intake_dedup_probe_init(&p, src, strlen(src), ev, strlen(ev), seq);
  return p;
}

static intake_dedup_result_t check(intake_dedup_t *d, const char *src, const char *ev,
                                   uint64_t seq, uint64_t now) {
  intake_dedup_probe_t p = probe(src, ev, seq);
  intake_dedup_prefetch(d, &p);
  return intake_dedup_check(d, &p, now, NULL);
}

static void commit(intake_dedup_t *d, const char *src, const char *ev, uint64_t seq, uint64_t now) {
  intake_dedup_probe_t p = probe(src, ev, seq);
  intake_dedup_commit(d, &p, now);
}

static void seq_commit(intake_dedup_t *d, const char *src, uint64_t seq, uint64_t now) {
  char ev[32];
  snprintf(ev, sizeof ev, "e%llu", (unsigned long long)seq);
  commit(d, src, ev, seq, now);
}

static intake_dedup_result_t seq_check(intake_dedup_t *d, const char *src, uint64_t seq,
                                       uint64_t now) {
  char ev[32];
  snprintf(ev, sizeof ev, "e%llu", (unsigned long long)seq);
  return check(d, src, ev, seq, now);
}

static intake_dedup_t *mk(uint64_t window_ms) {
  intake_dedup_t *d = intake_dedup_create(window_ms, 1 << 20, 1 << 20);
  assert_non_null(d);
  return d;
}

static void test_create_arguments(void **state) {
  (void)state;
  assert_null(intake_dedup_create(0, 1 << 20, 1 << 20));
  assert_null(intake_dedup_create(1000, MIN_EV_BYTES - 1, 1 << 20));
  assert_null(intake_dedup_create(1000, 1 << 20, MIN_SRC_BYTES - 1));
  intake_dedup_t *d = intake_dedup_create(1000, MIN_EV_BYTES, MIN_SRC_BYTES);
  assert_non_null(d);
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.capacity, 256 * 5);        /* 256 buckets of 5 slots in 64 bytes */
  assert_int_equal(st.source_capacity, 256 * 4); /* 256 buckets of 4 slots in 128 bytes */
  assert_true(st.bytes >= MIN_EV_BYTES + MIN_SRC_BYTES);
  intake_dedup_destroy(d);
  /* the whole budget, not the largest power of two in it: 3 MiB -> 49152 buckets of 5 slots;
   * 100 KiB -> 800 buckets of 4 */
  d = intake_dedup_create(1000, 3 << 20, 100 << 10);
  assert_non_null(d);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.capacity, (3 << 20) / 64 * 5);
  assert_int_equal(st.source_capacity, (100 << 10) / 128 * 4);
  assert_int_equal(st.entries, 0);
  assert_int_equal(st.sources, 0);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.evictions, 0);
  assert_int_equal(st.expired, 0);
  intake_dedup_destroy(d);
  intake_dedup_destroy(NULL);
}

/* Tables take every whole bucket their budget pays for, and the memory reported is that. */
static void test_capacity_from_budget(void **state) {
  (void)state;
  static const uint64_t budgets[][2] = {
      {MIN_EV_BYTES + 63, MIN_SRC_BYTES + 127}, /* a byte short of one more bucket each */
      {1000000, 300000},                        /* not multiples of anything */
      {(48u << 20) + 64 * 7, (6u << 20) + 128},  /* mmap'ed, not a whole number of pages */
  };
  for (size_t k = 0; k < sizeof budgets / sizeof budgets[0]; k++) {
    intake_dedup_t *d = intake_dedup_create(60 * SEC, budgets[k][0], budgets[k][1]);
    assert_non_null(d);
    intake_dedup_stats_t st;
    intake_dedup_stats(d, &st);
    uint64_t ev_buckets = budgets[k][0] / 64, src_buckets = budgets[k][1] / 128;
    assert_int_equal(st.capacity, ev_buckets * 5);
    assert_int_equal(st.source_capacity, src_buckets * 4);
    /* the tables, the initial in-flight map (256 x 24 bytes) and the struct with its two age
     * histograms (2 x 1024 x 4 bytes each): nothing else */
    uint64_t tables = ev_buckets * 64 + src_buckets * 128, fixed = 256 * 24 + 4 * 4096;
    assert_true(st.bytes >= tables + fixed);
    assert_true(st.bytes <= tables + fixed + 512);
    assert_true(st.bytes <= budgets[k][0] + budgets[k][1] + fixed + 512);
    assert_int_equal(intake_dedup__verify(d), 0);
    intake_dedup_destroy(d);
  }
}

/* A table whose bucket count is no power of two, filled to just under the load limit: nothing
 * is evicted and every committed key is a duplicate (no false negatives), every other key new;
 * past the limit the table stops growing at 85% and each further insert is one counted
 * eviction. */
static void test_load_bound_odd_size(void **state) {
  (void)state;
  const uint64_t ev_bytes = 1000000; /* 15625 buckets, 78125 slots: the limit is 66406 keys */
  intake_dedup_t *d = intake_dedup_create(3600 * SEC, ev_bytes, MIN_SRC_BYTES);
  assert_non_null(d);
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.capacity, 78125);
  const uint64_t limit = 78125 * 85 / 100;
  char src[32], ev[32];
  uint64_t n = limit - 1; /* up to load 0.85 */
  for (uint64_t i = 0; i < n; i++) {
    snprintf(src, sizeof src, "s%llu", (unsigned long long)(i % 1000));
    snprintf(ev, sizeof ev, "e%llu", (unsigned long long)i);
    assert_int_equal(check(d, src, ev, 0, T0), INTAKE_DEDUP_NEW);
    commit(d, src, ev, 0, T0);
  }
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, n);
  assert_int_equal(st.evictions, 0);
  assert_int_equal(intake_dedup__verify(d), 0);
  for (uint64_t i = 0; i < n; i++) {
    snprintf(src, sizeof src, "s%llu", (unsigned long long)(i % 1000));
    snprintf(ev, sizeof ev, "e%llu", (unsigned long long)i);
    assert_int_equal(check(d, src, ev, 0, T0 + 1), INTAKE_DEDUP_DUPLICATE);
  }
  for (uint64_t i = 0; i < 200000; i++) {
    snprintf(ev, sizeof ev, "never%llu", (unsigned long long)i);
    assert_int_equal(check(d, "s1", ev, 0, T0 + 1), INTAKE_DEDUP_NEW);
  }
  /* 20,000 more: the table holds its limit, plus one key for each home bucket that was still
   * empty (tab_upsert); every key that did not find a place is an eviction */
  for (uint64_t i = n; i < n + 20000; i++) {
    snprintf(src, sizeof src, "s%llu", (unsigned long long)(i % 1000));
    snprintf(ev, sizeof ev, "e%llu", (unsigned long long)i);
    commit(d, src, ev, 0, T0 + 2);
    /* the newest key always survives its own insert */
    assert_int_equal(check(d, src, ev, 0, T0 + 2), INTAKE_DEDUP_DUPLICATE);
  }
  intake_dedup_stats(d, &st);
  assert_true(st.entries >= limit);
  assert_true(st.entries <= st.capacity * 87 / 100);
  assert_int_equal(st.evictions, n + 20000 - st.entries);
  assert_int_equal(st.expired, 0);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

static void test_repeat_within_window(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  assert_int_equal(check(d, "cam1", "42", 0, T0), INTAKE_DEDUP_NEW);
  commit(d, "cam1", "42", 0, T0);
  assert_int_equal(check(d, "cam1", "42", 0, T0 + 10), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "cam1", "42", 0, T0 + 59 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "cam1", "43", 0, T0 + 10), INTAKE_DEDUP_NEW);
  /* the key is its exact bytes: no ambiguity between where source ends and id begins */
  commit(d, "ab", "c", 0, T0);
  assert_int_equal(check(d, "a", "bc", 0, T0), INTAKE_DEDUP_NEW);
  assert_int_equal(check(d, "abc", "", 0, T0), INTAKE_DEDUP_NEW);
  assert_int_equal(check(d, "ab", "c", 0, T0), INTAKE_DEDUP_DUPLICATE);
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, 2);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

static void test_expiry_after_window(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  commit(d, "s", "1", 0, T0);
  /* remembered for the whole window, forgotten within 20 ms after it */
  assert_int_equal(check(d, "s", "1", 0, T0 + 60 * SEC - 1), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "s", "1", 0, T0 + 60 * SEC + 20), INTAKE_DEDUP_NEW);
  /* a commit of an expired key starts a new window */
  commit(d, "s", "1", 0, T0 + 61 * SEC);
  assert_int_equal(check(d, "s", "1", 0, T0 + 120 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "s", "1", 0, T0 + 122 * SEC), INTAKE_DEDUP_NEW);
  /* commit of a live key refreshes it */
  commit(d, "s", "2", 0, T0);
  commit(d, "s", "2", 0, T0 + 50 * SEC);
  assert_int_equal(check(d, "s", "2", 0, T0 + 100 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "s", "2", 0, T0 + 111 * SEC), INTAKE_DEDUP_NEW);
  intake_dedup_destroy(d);
}

static void test_clock_backwards_keeps_keys(void **state) {
  (void)state;
  intake_dedup_t *d = mk(10 * SEC);
  commit(d, "s", "1", 0, T0);
  assert_int_equal(check(d, "s", "1", 0, T0 - 3600 * SEC), INTAKE_DEDUP_DUPLICATE);
  /* a huge budget is cut to one pass */
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(intake_dedup_sweep(d, T0 - 3600 * SEC, SIZE_MAX),
                   st.capacity + st.source_capacity + 1);
  assert_int_equal(check(d, "s", "1", 0, T0 + 5 * SEC), INTAKE_DEDUP_DUPLICATE);
  intake_dedup_destroy(d);
}

static void test_set_window(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  intake_dedup_stats_t st;
  commit(d, "s", "1", 0, T0);
  commit(d, "s", "2", 0, T0 + 5 * SEC);
  /* narrower: at once */
  intake_dedup_set_window(d, 10 * SEC, T0 + 5 * SEC);
  assert_int_equal(check(d, "s", "1", 0, T0 + 9 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "s", "1", 0, T0 + 11 * SEC), INTAKE_DEDUP_NEW);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.effective_window_ms, 10 * SEC);
  /* wider: a key older than the old window may have been swept already, so the effective
   * window starts from the old one and grows as time passes; existing keys keep their commit
   * times */
  intake_dedup_set_window(d, 3600 * SEC, T0 + 12 * SEC);
  assert_int_equal(check(d, "s", "1", 0, T0 + 13 * SEC), INTAKE_DEDUP_NEW);
  assert_int_equal(check(d, "s", "2", 0, T0 + 3000 * SEC), INTAKE_DEDUP_DUPLICATE);
  intake_dedup_sweep(d, T0 + 3000 * SEC, 0);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.effective_window_ms, 2998 * SEC); /* 3000 s - (12 s - 10 s) */
  intake_dedup_sweep(d, T0 + 4000 * SEC, 0);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.effective_window_ms, 3600 * SEC);
  intake_dedup_set_window(d, 0, T0 + 3000 * SEC); /* clamped to 1 ms */
  assert_int_equal(check(d, "s", "2", 0, T0 + 3000 * SEC), INTAKE_DEDUP_NEW);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

static void test_in_flight_then_commit(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  intake_dedup_probe_t p = probe("gw1/dev7", "evt-1", 0);
  int owner_a, owner_b;
  void *who = NULL;
  assert_int_equal(intake_dedup_check(d, &p, T0, &who), INTAKE_DEDUP_NEW);
  assert_int_equal(intake_dedup_begin(d, &p, &owner_a), 0);
  assert_int_equal(intake_dedup_check(d, &p, T0 + 1, &who), INTAKE_DEDUP_IN_FLIGHT);
  assert_ptr_equal(who, &owner_a);
  assert_int_equal(intake_dedup_check(d, &p, T0 + 1, NULL), INTAKE_DEDUP_IN_FLIGHT);
  assert_int_equal(intake_dedup_begin(d, &p, NULL), -EINVAL);
  /* another key in flight has its own owner */
  intake_dedup_probe_t q = probe("gw1/dev7", "evt-2", 0);
  assert_int_equal(intake_dedup_begin(d, &q, &owner_b), 0);
  assert_int_equal(intake_dedup_check(d, &q, T0 + 1, &who), INTAKE_DEDUP_IN_FLIGHT);
  assert_ptr_equal(who, &owner_b);
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.in_flight, 2);
  assert_int_equal(st.entries, 0);

  intake_dedup_commit(d, &p, T0 + 2);
  assert_int_equal(intake_dedup_check(d, &p, T0 + 3, NULL), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(intake_dedup_check(d, &q, T0 + 3, &who), INTAKE_DEDUP_IN_FLIGHT);
  assert_ptr_equal(who, &owner_b);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.in_flight, 1);
  assert_int_equal(st.entries, 1);
  intake_dedup_commit(d, &q, T0 + 2);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

static void test_in_flight_then_abort(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  intake_dedup_probe_t p = probe("dev", "x", 0);
  int owner;
  assert_int_equal(intake_dedup_check(d, &p, T0, NULL), INTAKE_DEDUP_NEW);
  assert_int_equal(intake_dedup_begin(d, &p, &owner), 0);
  intake_dedup_abort(d, &p);
  /* a failed delivery is not remembered: the retransmit is new */
  assert_int_equal(intake_dedup_check(d, &p, T0 + 1, NULL), INTAKE_DEDUP_NEW);
  intake_dedup_abort(d, &p); /* aborting what is not in flight is harmless */
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.entries, 0);
  /* the same for a sequenced event: abort leaves no trace in the window */
  intake_dedup_probe_t s = probe("cam", "a", 7);
  assert_int_equal(intake_dedup_begin(d, &s, &owner), 0);
  assert_int_equal(intake_dedup_check(d, &s, T0, NULL), INTAKE_DEDUP_IN_FLIGHT);
  intake_dedup_abort(d, &s);
  assert_int_equal(intake_dedup_check(d, &s, T0, NULL), INTAKE_DEDUP_NEW);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.sources, 0);
  intake_dedup_destroy(d);
}

static void test_in_flight_many(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  enum { N = 20000 };
  static intake_dedup_probe_t ps[N];
  static int owners[N];
  char src[32], ev[32];
  for (int i = 0; i < N; i++) {
    /* every third event is sequenced, each from its own camera */
    if (i % 3)
      snprintf(src, sizeof src, "src");
    else
      snprintf(src, sizeof src, "cam%d", i);
    snprintf(ev, sizeof ev, "%d", i);
    intake_dedup_probe_init(&ps[i], src, strlen(src), ev, strlen(ev), (uint64_t)(i % 3 ? 0 : i + 1));
    assert_int_equal(intake_dedup_check(d, &ps[i], T0, NULL), INTAKE_DEDUP_NEW);
    assert_int_equal(intake_dedup_begin(d, &ps[i], &owners[i]), 0);
  }
  for (int i = 0; i < N; i++) {
    void *who = NULL;
    assert_int_equal(intake_dedup_check(d, &ps[i], T0, &who), INTAKE_DEDUP_IN_FLIGHT);
    assert_ptr_equal(who, &owners[i]);
  }
  assert_int_equal(intake_dedup__verify(d), 0);
  for (int i = 0; i < N; i++) {
    if (i % 2)
      intake_dedup_commit(d, &ps[i], T0 + 1);
    else
      intake_dedup_abort(d, &ps[i]);
  }
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.in_flight, 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(intake_dedup_check(d, &ps[i], T0 + 2, NULL),
                     i % 2 ? INTAKE_DEDUP_DUPLICATE : INTAKE_DEDUP_NEW);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

static void test_seq_window(void **state) {
  (void)state;
  intake_dedup_t *d = mk(600 * SEC);
  uint64_t t = T0;
  assert_int_equal(seq_check(d, "cam1", 1, t), INTAKE_DEDUP_NEW);
  for (uint64_t s = 1; s <= 10; s++)
    seq_commit(d, "cam1", s, t);
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.sources, 1);
  assert_int_equal(st.entries, 10); /* every event is kept by key as well */

  /* in-window duplicate: by sequence number, whatever the event id */
  assert_int_equal(seq_check(d, "cam1", 5, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "cam1", "another-id", 5, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam1", 10, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam1", 11, t), INTAKE_DEDUP_NEW);

  /* out of order: a gap stays new until filled */
  seq_commit(d, "cam1", 20, t);
  assert_int_equal(seq_check(d, "cam1", 15, t), INTAKE_DEDUP_NEW);
  seq_commit(d, "cam1", 15, t);
  assert_int_equal(seq_check(d, "cam1", 15, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam1", 16, t), INTAKE_DEDUP_NEW);
  assert_int_equal(seq_check(d, "cam1", 10, t), INTAKE_DEDUP_DUPLICATE);

  /* slide: 20 + 63 keeps 20 in the window, 20 + 64 drops it */
  seq_commit(d, "cam1", 83, t);
  assert_int_equal(seq_check(d, "cam1", 20, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam1", 83, t), INTAKE_DEDUP_DUPLICATE);
  seq_commit(d, "cam1", 84, t);
  assert_int_equal(seq_check(d, "cam1", 21, t), INTAKE_DEDUP_NEW);
  /* 20 slid out of the bitmap: its key still knows it */
  assert_int_equal(seq_check(d, "cam1", 20, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "cam1", "e20-under-a-new-id", 20, t), INTAKE_DEDUP_NEW);

  /* far below the window (84 - 12 >= 64): exact by (source, event id) */
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, 14);
  seq_commit(d, "cam1", 12, t);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, 15);
  assert_int_equal(seq_check(d, "cam1", 12, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(check(d, "cam1", "other-id", 12, t), INTAKE_DEDUP_NEW);
  assert_int_equal(seq_check(d, "cam1", 13, t), INTAKE_DEDUP_NEW);
  assert_int_equal(seq_check(d, "cam1", 1, t), INTAKE_DEDUP_DUPLICATE);
  /* ... and it did not move the window */
  assert_int_equal(seq_check(d, "cam1", 84, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam1", 85, t), INTAKE_DEDUP_NEW);

  /* a jump of 64 or more starts a fresh bitmap */
  seq_commit(d, "cam1", 1000, t);
  assert_int_equal(seq_check(d, "cam1", 1000, t), INTAKE_DEDUP_DUPLICATE);
  for (uint64_t s = 937; s < 1000; s++)
    assert_int_equal(seq_check(d, "cam1", s, t), INTAKE_DEDUP_NEW);
  assert_int_equal(seq_check(d, "cam1", 84, t), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam1", 85, t), INTAKE_DEDUP_NEW);

  /* the window expires when the source is quiet for the dedup window */
  assert_int_equal(seq_check(d, "cam1", 1000, t + 599 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam1", 1000, t + 601 * SEC), INTAKE_DEDUP_NEW);
  assert_int_equal(seq_check(d, "cam1", 12, t + 601 * SEC), INTAKE_DEDUP_NEW);
  /* a commit after expiry starts over: 999 is in the new window but was never seen */
  seq_commit(d, "cam1", 1000, t + 601 * SEC);
  assert_int_equal(seq_check(d, "cam1", 1000, t + 602 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam1", 999, t + 602 * SEC), INTAKE_DEDUP_NEW);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

/* A gateway resends its first batch after newer ones went through (its ack was lost): the
 * copies are far below the window and must all be caught. */
static void test_seq_resend_after_window_moved(void **state) {
  (void)state;
  intake_dedup_t *d = mk(600 * SEC);
  for (uint64_t s = 1; s <= 100; s++)
    seq_commit(d, "cam", s, T0 + s);
  for (uint64_t s = 1; s <= 100; s++)
    assert_int_equal(seq_check(d, "cam", s, T0 + SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam", 101, T0 + SEC), INTAKE_DEDUP_NEW);
  /* the same after the window's source slot is gone (expired here; evicted works alike) */
  intake_dedup_set_window(d, 1000 * SEC, T0 + SEC);
  intake_dedup_sweep(d, T0 + 900 * SEC, SIZE_MAX);
  assert_int_equal(seq_check(d, "cam", 50, T0 + 900 * SEC), INTAKE_DEDUP_DUPLICATE);
  intake_dedup_destroy(d);
}

static void test_seq_touch_keeps_window(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  for (uint64_t s = 1; s <= 100; s++)
    seq_commit(d, "cam", s, T0 + s * SEC); /* one a second for 100 s: always touched */
  /* inside a live window a sequence number is known by its bit, whatever its own age */
  assert_int_equal(seq_check(d, "cam", 40, T0 + 100 * SEC), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "cam", 101, T0 + 100 * SEC), INTAKE_DEDUP_NEW);
  intake_dedup_destroy(d);
}

static void test_sources_independent(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  commit(d, "s1", "42", 0, T0);
  assert_int_equal(check(d, "s2", "42", 0, T0), INTAKE_DEDUP_NEW);
  assert_int_equal(check(d, "s1", "42", 0, T0), INTAKE_DEDUP_DUPLICATE);
  seq_commit(d, "c1", 5, T0);
  assert_int_equal(seq_check(d, "c2", 5, T0), INTAKE_DEDUP_NEW);
  assert_int_equal(seq_check(d, "c1", 5, T0), INTAKE_DEDUP_DUPLICATE);
  /* far-below fallback keys are per source as well */
  seq_commit(d, "c1", 500, T0);
  seq_commit(d, "c2", 500, T0);
  seq_commit(d, "c1", 100, T0);
  assert_int_equal(seq_check(d, "c1", 100, T0), INTAKE_DEDUP_DUPLICATE);
  assert_int_equal(seq_check(d, "c2", 100, T0), INTAKE_DEDUP_NEW);
  /* in flight is per key too */
  intake_dedup_probe_t a = probe("s1", "77", 0), b = probe("s2", "77", 0);
  int owner;
  assert_int_equal(intake_dedup_begin(d, &a, &owner), 0);
  assert_int_equal(intake_dedup_check(d, &b, T0, NULL), INTAKE_DEDUP_NEW);
  intake_dedup_abort(d, &a);
  intake_dedup_destroy(d);
}

static void test_key_definition(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  /* the key is defined for any lengths (documented in dedup.h, consumers may see it) */
  static char src[300], ev[700];
  memset(src, 'S', sizeof src);
  memset(ev, 'e', sizeof ev);
  size_t lens[][2] = {{20, 36}, {200, 48}, {248, 0}, {100, 240}, {100, 241}, {300, 700}, {0, 700}};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    size_t sl = lens[i][0], el = lens[i][1];
    intake_dedup_probe_t p;
    intake_dedup_probe_init(&p, src, sl, ev, el, 0);
    XXH128_hash_t s = XXH3_128bits(src, sl);
    XXH128_hash_t k = XXH3_128bits_withSeed(ev, el, s.low64);
    assert_true(p.src_hi == s.high64 && p.src_lo == s.low64);
    assert_true(p.key_hi == (k.high64 ^ s.high64) && p.key_lo == (k.low64 ^ s.low64));
    intake_dedup_commit(d, &p, T0);
    assert_int_equal(intake_dedup_check(d, &p, T0, NULL), INTAKE_DEDUP_DUPLICATE);
  }
  intake_dedup_probe_t p;
  intake_dedup_probe_init(&p, src, 300, ev, 699, 0);
  assert_int_equal(intake_dedup_check(d, &p, T0, NULL), INTAKE_DEDUP_NEW);
  /* NULL with length 0 is an empty id */
  intake_dedup_probe_t a, b;
  intake_dedup_probe_init(&a, NULL, 0, NULL, 0, 0);
  intake_dedup_probe_init(&b, "", 0, "", 0, 0);
  assert_true(a.key_hi == b.key_hi && a.key_lo == b.key_lo);
  intake_dedup_destroy(d);
}

static void test_sweep(void **state) {
  (void)state;
  intake_dedup_t *d = mk(60 * SEC);
  char ev[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(ev, sizeof ev, "old%d", i);
    commit(d, "s", ev, 0, T0);
    snprintf(ev, sizeof ev, "new%d", i);
    commit(d, "s", ev, 0, T0 + 30 * SEC);
  }
  for (int i = 0; i < 100; i++) {
    snprintf(ev, sizeof ev, "cam%d", i);
    seq_commit(d, ev, 1, i < 50 ? T0 : T0 + 30 * SEC);
  }
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, 2100); /* the cameras' events are kept by key too */
  assert_int_equal(st.sources, 100);
  assert_int_equal(st.expired, 0);

  /* nothing has expired yet: a full pass removes nothing */
  uint64_t slots = st.capacity + st.source_capacity;
  assert_int_equal(intake_dedup_sweep(d, T0 + 50 * SEC, slots), slots);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, 2100);

  /* incrementally, in small steps: each call visits at most its budget */
  uint64_t now = T0 + 70 * SEC, visited = 0;
  while (visited < slots + 2000) {
    size_t n = intake_dedup_sweep(d, now, 100);
    assert_true(n <= 100);
    visited += n;
  }
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, 1050);
  assert_int_equal(st.sources, 50);
  assert_int_equal(st.expired, 1100); /* 1000 + 50 keys, 50 windows */
  assert_int_equal(intake_dedup__verify(d), 0);
  for (int i = 0; i < 1000; i++) {
    snprintf(ev, sizeof ev, "old%d", i);
    assert_int_equal(check(d, "s", ev, 0, now), INTAKE_DEDUP_NEW);
    snprintf(ev, sizeof ev, "new%d", i);
    assert_int_equal(check(d, "s", ev, 0, now), INTAKE_DEDUP_DUPLICATE);
  }
  for (int i = 0; i < 100; i++) {
    snprintf(ev, sizeof ev, "cam%d", i);
    assert_int_equal(seq_check(d, ev, 1, now), i < 50 ? INTAKE_DEDUP_NEW : INTAKE_DEDUP_DUPLICATE);
  }
  /* later everything goes */
  intake_dedup_sweep(d, T0 + 200 * SEC, slots * 2);
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, 0);
  assert_int_equal(st.sources, 0);
  assert_int_equal(st.expired, 2200);
  assert_int_equal(st.evictions, 0);
  assert_int_equal(intake_dedup_sweep(d, T0, 0), 0);
  intake_dedup_destroy(d);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* A table too small for its window, filled as the daemon fills it (a commit every 10 ms, a sweep
 * every 100 ms): it forgets its oldest keys first, table-wide. At every moment there is one age,
 * the effective window: every key younger than it is a duplicate, every key older is new; it
 * holds the target load's worth of keys; nothing is evicted by a full probe run. Sequence
 * windows alike. */
static void full_table_forgets_oldest_first(uint64_t t0) {
  intake_dedup_t *d = intake_dedup_create(3600 * SEC, MIN_EV_BYTES, MIN_SRC_BYTES);
  assert_non_null(d);
  char ev[32];
  enum { N = 20000 };
  intake_dedup_stats_t st;
  for (int i = 0; i < N; i++) {
    snprintf(ev, sizeof ev, "k%d", i);
    uint64_t now = t0 + (uint64_t)i * 10;
    assert_int_equal(check(d, "s", ev, 0, now), INTAKE_DEDUP_NEW);
    commit(d, "s", ev, 0, now);
    /* the newest key always survives its own insert */
    assert_int_equal(check(d, "s", ev, 0, now), INTAKE_DEDUP_DUPLICATE);
    snprintf(ev, sizeof ev, "src%d", i);
    seq_commit(d, ev, 1, now);
    assert_int_equal(seq_check(d, ev, 1, now), INTAKE_DEDUP_DUPLICATE);
    if (i % 10 == 9)
      intake_dedup_sweep(d, now, 65536);
    if (i % 1000 == 999) {
      /* sharp: the keys younger than the effective window all held, the older all forgotten */
      intake_dedup_stats(d, &st);
      assert_true(st.effective_window_ms < 3600 * SEC);
      uint64_t held = 0;
      for (int k = 0; k <= i; k++) {
        snprintf(ev, sizeof ev, "k%d", k);
        uint64_t age = now - (t0 + (uint64_t)k * 10);
        intake_dedup_result_t want =
            age <= st.effective_window_ms ? INTAKE_DEDUP_DUPLICATE : INTAKE_DEDUP_NEW;
        assert_int_equal(check(d, "s", ev, 0, now), want);
        held += want == INTAKE_DEDUP_DUPLICATE;
      }
      /* each source's commit stored its key too: 2 keys per 10 ms; the target is 72% of the
       * 1280 slots (921), cut at a slice boundary (window / 512 = 70 ms here, 14 keys) */
      assert_true(2 * held <= st.capacity * 72 / 100);
      assert_true(2 * held + 16 >= st.capacity * 72 / 100);
      assert_true(st.entries <= st.capacity * 80 / 100);
      assert_int_equal(st.forced_evictions, 0);
      assert_int_equal(intake_dedup__verify(d), 0);
    }
  }
  intake_dedup_stats(d, &st);
  assert_true(st.sources <= st.source_capacity * 80 / 100);
  assert_true(st.source_window_ms < 3600 * SEC);
  assert_int_equal(st.forced_evictions, 0);
  assert_int_equal(st.expired, 0);
  /* every key that left was forgotten early, and counted */
  assert_int_equal(st.evictions, st.commits - st.entries + (N - st.sources));
  /* forgetting never invents: keys never committed are all new */
  for (int i = 0; i < 100000; i++) {
    snprintf(ev, sizeof ev, "never%d", i);
    assert_int_equal(check(d, "s", ev, 0, t0 + N * 10), INTAKE_DEDUP_NEW);
  }
  intake_dedup_destroy(d);
}

static void test_full_table_forgets_oldest_first(void **state) {
  (void)state;
  full_table_forgets_oldest_first(T0);
  /* ticks (10 ms) of 2026-12 are above 2^31 modulo 2^32, those of T0 below: both halves */
  full_table_forgets_oldest_first(1796300000000ull);
}

/* The effective window follows the rate: it shrinks when the rate outgrows the table, grows back
 * (no faster than time passes) when the rate falls, and returns to the configured window. */
static void test_effective_window_follows_rate(void **state) {
  (void)state;
  const uint64_t window = 60 * SEC;
  intake_dedup_t *d = intake_dedup_create(window, MIN_EV_BYTES, MIN_SRC_BYTES);
  assert_non_null(d);
  intake_dedup_stats_t st;
  char ev[32];
  uint64_t now = T0;
  int n = 0;
  /* 10 keys a second for 300 s: 600 per window fit in 921 */
  for (; now < T0 + 300 * SEC; now += 100) {
    snprintf(ev, sizeof ev, "a%d", n++);
    commit(d, "s", ev, 0, now);
    intake_dedup_sweep(d, now, 65536);
  }
  intake_dedup_stats(d, &st);
  assert_int_equal(st.effective_window_ms, window);
  assert_int_equal(st.evictions, 0);
  /* 100 a second: 6000 per window do not; the table holds ~9 s of them */
  uint64_t t1 = now;
  for (; now < t1 + 120 * SEC; now += 10) {
    snprintf(ev, sizeof ev, "b%d", n++);
    commit(d, "s", ev, 0, now);
    if (now % 100 == 0)
      intake_dedup_sweep(d, now, 65536);
  }
  intake_dedup_stats(d, &st);
  assert_true(st.effective_window_ms >= 8 * SEC && st.effective_window_ms <= 10 * SEC);
  assert_true(st.evictions > 0);
  uint64_t shrunk = st.effective_window_ms;
  /* back to 1 a second: the effective window grows by the time that passes, until the window */
  uint64_t t2 = now;
  for (; now < t2 + 30 * SEC; now += 1000) {
    snprintf(ev, sizeof ev, "c%d", n++);
    commit(d, "s", ev, 0, now);
    intake_dedup_sweep(d, now, 65536);
  }
  intake_dedup_stats(d, &st);
  assert_true(st.effective_window_ms <= shrunk + 30 * SEC);
  /* (less the 1 s or so that the 30 new keys pushed out, at 10 ms a key) */
  assert_true(st.effective_window_ms >= shrunk + 27 * SEC);
  for (; now < t2 + 120 * SEC; now += 1000) {
    snprintf(ev, sizeof ev, "c%d", n++);
    commit(d, "s", ev, 0, now);
    intake_dedup_sweep(d, now, 65536);
  }
  intake_dedup_stats(d, &st);
  assert_int_equal(st.effective_window_ms, window);
  assert_int_equal(st.forced_evictions, 0);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

/* Sizing helpers: bytes for a number of keys at the target load, and back. */
static void test_sizing(void **state) {
  (void)state;
  /* 17.8 bytes a key: 40,000 events/s for 10 min need ~427 MB */
  uint64_t b = intake_dedup_event_bytes_for(40000ull * 600);
  assert_true(b >= 426000000ull && b <= 428000000ull);
  uint64_t k = intake_dedup_keys_for(256ull << 20);
  assert_true(k >= 15000000ull && k <= 15200000ull);
  assert_true(intake_dedup_keys_for(intake_dedup_event_bytes_for(1000000)) >= 999990);
  /* what a table holds before it forgets early is what keys_for() says */
  intake_dedup_t *d = intake_dedup_create(3600 * SEC, MIN_EV_BYTES, MIN_SRC_BYTES);
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(intake_dedup_keys_for(MIN_EV_BYTES), st.capacity * 72 / 100);
  assert_int_equal(st.event_bytes, MIN_EV_BYTES);
  intake_dedup_destroy(d);
}

static void test_million_keys_no_false_duplicates(void **state) {
  (void)state;
  enum { N = 1000000 };
  /* 32 MiB: 524,288 buckets, 2,621,440 slots: load 0.38 */
  intake_dedup_t *d = intake_dedup_create(3600 * SEC, 32u << 20, MIN_SRC_BYTES);
  assert_non_null(d);
  char src[32], ev[40];
  intake_dedup_probe_t p;
  size_t dup = 0;
  rng_state = 0x9E3779B97F4A7C15ull;
  for (uint32_t i = 0; i < N; i++) {
    int sl = snprintf(src, sizeof src, "%020llu", (unsigned long long)(i % 770000));
    int el = snprintf(ev, sizeof ev, "%016llx", (unsigned long long)rnd());
    intake_dedup_probe_init(&p, src, (size_t)sl, ev, (size_t)el, 0);
    dup += intake_dedup_check(d, &p, T0, NULL) != INTAKE_DEDUP_NEW;
    intake_dedup_commit(d, &p, T0);
  }
  assert_int_equal(dup, 0);
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.entries, N);
  assert_int_equal(st.evictions, 0);
  /* replay: all duplicates */
  rng_state = 0x9E3779B97F4A7C15ull;
  size_t seen = 0;
  for (uint32_t i = 0; i < N; i++) {
    int sl = snprintf(src, sizeof src, "%020llu", (unsigned long long)(i % 770000));
    int el = snprintf(ev, sizeof ev, "%016llx", (unsigned long long)rnd());
    intake_dedup_probe_init(&p, src, (size_t)sl, ev, (size_t)el, 0);
    seen += intake_dedup_check(d, &p, T0 + 1, NULL) == INTAKE_DEDUP_DUPLICATE;
  }
  assert_int_equal(seen, N);
  /* a million never-seen keys (continuing the random stream): none is a duplicate */
  for (uint32_t i = 0; i < N; i++) {
    int sl = snprintf(src, sizeof src, "%020llu", (unsigned long long)(i % 770000));
    int el = snprintf(ev, sizeof ev, "%016llx", (unsigned long long)rnd());
    intake_dedup_probe_init(&p, src, (size_t)sl, ev, (size_t)el, 0);
    dup += intake_dedup_check(d, &p, T0 + 1, NULL) != INTAKE_DEDUP_NEW;
  }
  assert_int_equal(dup, 0);
  intake_dedup_destroy(d);
}

/* Random operations against a plain array model, with sweeps (backward-shift deletion) at a
 * load where nothing is evicted: every check() must match the model exactly. */
static void random_against_model(uint64_t ev_bytes) {
  enum { KEYS = 3000, STEPS = 200000 };
  const uint64_t window = 5 * SEC;
  /* 1280-slot tables; ~50 commits per simulated second keep ~250 keys live plus the expired
   * ones the sweep has not reached: well under the 1088-key limit */
  intake_dedup_t *d = intake_dedup_create(window, ev_bytes, MIN_SRC_BYTES);
  assert_non_null(d);
  static uint64_t last[KEYS]; /* commit time + 1 of key i, 0 = never */
  memset(last, 0, sizeof last);
  char ev[32];
  uint64_t now = T0;
  rng_state = 12345;
  for (int step = 0; step < STEPS; step++) {
    now += 10 * (rnd() % 2);
    unsigned k = (unsigned)(rnd() % KEYS);
    snprintf(ev, sizeof ev, "%u", k);
    intake_dedup_result_t want = last[k] && now - (last[k] - 1) <= window
                                     ? INTAKE_DEDUP_DUPLICATE : INTAKE_DEDUP_NEW;
    assert_int_equal(check(d, "m", ev, 0, now), want);
    if (rnd() % 4 == 0) {
      commit(d, "m", ev, 0, now);
      last[k] = now + 1;
    }
    if (rnd() % 16 == 0)
      intake_dedup_sweep(d, now, (size_t)(rnd() % 200));
    if (step % 20000 == 0)
      assert_int_equal(intake_dedup__verify(d), 0);
  }
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.evictions, 0);
  assert_true(st.expired > 0);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

static void test_random_against_model(void **state) {
  (void)state;
  random_against_model(MIN_EV_BYTES);
  random_against_model(MIN_EV_BYTES + 64 * 37); /* 293 buckets: no power of two */
}

/* The same near and over the load limit: long runs, wrap-around, backward shifts across
 * buckets, stale-slot reuse and evictions. Evictions may turn a duplicate into NEW (never the
 * reverse), and no more often than they happened. */
static void random_high_load(uint64_t ev_bytes) {
  enum { KEYS = 5000, STEPS = 300000 };
  /* ~100 commits a second: ~1500 keys for the 1088 places of 1280 slots */
  const uint64_t window = 15 * SEC;
  intake_dedup_t *d = intake_dedup_create(window, ev_bytes, MIN_SRC_BYTES);
  assert_non_null(d);
  static uint64_t last[KEYS];
  memset(last, 0, sizeof last);
  char ev[32];
  uint64_t now = T0, forgotten = 0;
  rng_state = 777;
  for (int step = 0; step < STEPS; step++) {
    now += 10 * (rnd() % 2);
    unsigned k = (unsigned)(rnd() % KEYS);
    snprintf(ev, sizeof ev, "%u", k);
    int live = last[k] && now - (last[k] - 1) <= window;
    intake_dedup_result_t got = check(d, "m", ev, 0, now);
    if (!live)
      assert_int_equal(got, INTAKE_DEDUP_NEW);
    else
      forgotten += got == INTAKE_DEDUP_NEW;
    if (rnd() % 2 == 0) {
      commit(d, "m", ev, 0, now);
      last[k] = now + 1;
    }
    if (rnd() % 64 == 0)
      intake_dedup_sweep(d, now, (size_t)(rnd() % 300));
    if (step % 10000 == 0)
      assert_int_equal(intake_dedup__verify(d), 0);
  }
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_true(st.evictions > 0);
  assert_int_equal(st.forced_evictions, 0);
  assert_true(forgotten <= st.evictions);
  assert_true(st.entries <= st.capacity * 90 / 100);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

static void test_random_high_load(void **state) {
  (void)state;
  random_high_load(MIN_EV_BYTES);
  random_high_load(MIN_EV_BYTES + 64 * 37); /* 293 buckets: no power of two */
}

/* Sequenced sources against a model: a key committed within the window is always DUPLICATE,
 * and an event whose key and seq were never committed is always NEW, through slides, jumps,
 * out-of-order and far-below seqs, new ids for old seqs, expiry and sweeps. */
static void test_seq_random_against_model(void **state) {
  (void)state;
  enum { SRCS = 4, MAXSEQ = 4096, STEPS = 100000 };
  const uint64_t window = 3 * SEC;
  intake_dedup_t *d = mk(window);
  static uint64_t key_at[SRCS][MAXSEQ][2]; /* commit time + 1 of ids "e<seq>" and "alt<seq>" */
  static uint8_t seq_used[SRCS][MAXSEQ];
  uint64_t top[SRCS] = {0}, gen[SRCS] = {0}, now = T0;
  char src[16], ev[32];
  rng_state = 4242;
  for (int step = 0; step < STEPS; step++) {
    now += 10 * (rnd() % 3);
    unsigned si = (unsigned)(rnd() % SRCS);
    uint64_t r = rnd() % 100, seq;
    if (r < 60 || top[si] == 0)
      seq = top[si] + 1;
    else if (r < 90)
      seq = top[si] > 150 ? top[si] - rnd() % 150 : 1 + rnd() % top[si];
    else
      seq = top[si] + 1 + rnd() % 100;
    if (seq >= MAXSEQ) { /* start the source over under a new name */
      memset(key_at[si], 0, sizeof key_at[si]);
      memset(seq_used[si], 0, sizeof seq_used[si]);
      top[si] = 0;
      gen[si]++;
      seq = 1;
    }
    unsigned alt = rnd() % 5 == 0;
    snprintf(src, sizeof src, "src%u.%llu", si, (unsigned long long)gen[si]);
    snprintf(ev, sizeof ev, alt ? "alt%llu" : "e%llu", (unsigned long long)seq);
    intake_dedup_result_t got = check(d, src, ev, seq, now);
    uint64_t at = key_at[si][seq][alt];
    if (at && now - (at - 1) <= window)
      assert_int_equal(got, INTAKE_DEDUP_DUPLICATE);
    if (!seq_used[si][seq] && !(at && now - (at - 1) <= window))
      assert_int_equal(got, INTAKE_DEDUP_NEW);
    if (got == INTAKE_DEDUP_NEW && rnd() % 3) {
      commit(d, src, ev, seq, now);
      key_at[si][seq][alt] = now + 1;
      seq_used[si][seq] = 1;
      if (seq > top[si])
        top[si] = seq;
    }
    if (rnd() % 32 == 0)
      intake_dedup_sweep(d, now, 500);
  }
  intake_dedup_stats_t st;
  intake_dedup_stats(d, &st);
  assert_int_equal(st.evictions, 0);
  assert_int_equal(intake_dedup__verify(d), 0);
  intake_dedup_destroy(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_arguments),
      cmocka_unit_test(test_capacity_from_budget),
      cmocka_unit_test(test_load_bound_odd_size),
      cmocka_unit_test(test_repeat_within_window),
      cmocka_unit_test(test_expiry_after_window),
      cmocka_unit_test(test_clock_backwards_keeps_keys),
      cmocka_unit_test(test_set_window),
      cmocka_unit_test(test_in_flight_then_commit),
      cmocka_unit_test(test_in_flight_then_abort),
      cmocka_unit_test(test_in_flight_many),
      cmocka_unit_test(test_seq_window),
      cmocka_unit_test(test_seq_resend_after_window_moved),
      cmocka_unit_test(test_seq_touch_keeps_window),
      cmocka_unit_test(test_sources_independent),
      cmocka_unit_test(test_key_definition),
      cmocka_unit_test(test_sweep),
      cmocka_unit_test(test_full_table_forgets_oldest_first),
      cmocka_unit_test(test_effective_window_follows_rate),
      cmocka_unit_test(test_sizing),
      cmocka_unit_test(test_million_keys_no_false_duplicates),
      cmocka_unit_test(test_random_against_model),
      cmocka_unit_test(test_random_high_load),
      cmocka_unit_test(test_seq_random_against_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
