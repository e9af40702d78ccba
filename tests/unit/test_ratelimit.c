/* The per-gateway token bucket (src/ingest/ratelimit.h): admission, debt and the wait it
 * implies, isolation between ids, bounded memory with eviction, and reconfiguration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "ingest/ratelimit.h"

/* 1,000 events/s, bucket of 500: a full bucket admits; a batch may overdraw it once; the
 * debt is paid at the rate, and the wait says exactly when. */
static void test_debt_and_wait(void **state) {
  (void)state;
  intake_ratelimit_t *rl = intake_ratelimit_create(1000, 500, 4);
  assert_non_null(rl);
  intake_bucket_t *b = intake_ratelimit_bucket(rl, "gw-1", 0);
  assert_int_equal(intake_ratelimit_wait_ms(rl, b, 0), 0);
  intake_ratelimit_charge(b, 800); /* 500 - 800 = -300 */
  uint64_t wait = intake_ratelimit_wait_ms(rl, b, 0);
  assert_true(wait >= 300 && wait <= 301);
  assert_true(intake_ratelimit_wait_ms(rl, b, 100) >= 200);
  assert_int_equal(intake_ratelimit_wait_ms(rl, b, 301), 0);
  /* Refill stops at the burst: an hour of silence still admits only 500 before debt. */
  b = intake_ratelimit_bucket(rl, "gw-1", 3600 * 1000);
  assert_int_equal(intake_ratelimit_wait_ms(rl, b, 3600 * 1000), 0);
  intake_ratelimit_charge(b, 501);
  assert_true(intake_ratelimit_wait_ms(rl, b, 3600 * 1000) > 0);
  intake_ratelimit_destroy(rl);
}

/* Over a long run the admitted rate is the configured one, whatever the batch size. */
static void test_long_run_rate(void **state) {
  (void)state;
  intake_ratelimit_t *rl = intake_ratelimit_create(2000, 0, 4); /* burst 0 = one second */
  uint64_t now = 0, admitted = 0;
  while (now < 60 * 1000) {
    intake_bucket_t *b = intake_ratelimit_bucket(rl, "gw", now);
    uint64_t wait = intake_ratelimit_wait_ms(rl, b, now);
    if (wait) {
      now += wait;
      continue;
    }
    intake_ratelimit_charge(b, 700);
    admitted += 700;
  }
  /* 60 s at 2,000/s plus the first second's bucket, plus at most one batch over. */
  assert_true(admitted >= 120000 && admitted <= 122000 + 700);
  intake_ratelimit_destroy(rl);
}

/* One gateway's debt does not hold back another. */
static void test_isolation(void **state) {
  (void)state;
  intake_ratelimit_t *rl = intake_ratelimit_create(100, 100, 4);
  intake_ratelimit_charge(intake_ratelimit_bucket(rl, "busy", 0), 10000);
  assert_true(intake_ratelimit_wait_ms(rl, intake_ratelimit_bucket(rl, "busy", 0), 0) > 0);
  assert_int_equal(intake_ratelimit_wait_ms(rl, intake_ratelimit_bucket(rl, "quiet", 0), 0), 0);
  intake_ratelimit_destroy(rl);
}

/* max_connections 1 → 18 entries. Made-up ids beyond that evict refilled buckets first, so a
 * gateway in debt keeps its debt while others come and go. */
static void test_bounded_eviction(void **state) {
  (void)state;
  intake_ratelimit_t *rl = intake_ratelimit_create(10, 10, 1);
  intake_ratelimit_charge(intake_ratelimit_bucket(rl, "debtor", 0), 1000); /* 99 s of debt */
  for (int i = 0; i < 1000; i++) {
    char id[32];
    snprintf(id, sizeof id, "flood-%d", i);
    intake_bucket_t *b = intake_ratelimit_bucket(rl, id, 0);
    assert_non_null(b);
    assert_int_equal(intake_ratelimit_wait_ms(rl, b, 0), 0); /* new ids start full */
  }
  assert_true(intake_ratelimit_wait_ms(rl, intake_ratelimit_bucket(rl, "debtor", 0), 0) > 90000);
  intake_ratelimit_destroy(rl);
}

/* A reload keeps balances (capped at the new burst) and may grow the table. */
static void test_configure(void **state) {
  (void)state;
  intake_ratelimit_t *rl = intake_ratelimit_create(1000, 1000, 1);
  intake_ratelimit_charge(intake_ratelimit_bucket(rl, "gw", 0), 3000); /* -2000 */
  assert_int_equal(intake_ratelimit_configure(rl, 100, 50, 1000), 0);
  /* Still 2,000 in debt, now paid at 100/s: 20 s. */
  uint64_t wait = intake_ratelimit_wait_ms(rl, intake_ratelimit_bucket(rl, "gw", 0), 0);
  assert_true(wait >= 20000 && wait <= 20001);
  /* A full bucket is capped to the new burst. */
  intake_bucket_t *b = intake_ratelimit_bucket(rl, "fresh", 0);
  intake_ratelimit_charge(b, 51);
  assert_true(intake_ratelimit_wait_ms(rl, b, 0) > 0);
  intake_ratelimit_destroy(rl);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_debt_and_wait),     cmocka_unit_test(test_long_run_rate),
      cmocka_unit_test(test_isolation),         cmocka_unit_test(test_bounded_eviction),
      cmocka_unit_test(test_configure),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
