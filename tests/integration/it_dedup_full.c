/* A dedup table too small for its window, filled by a steady stream (the soak's situation, in
 * seconds: bench/soak.sh runs it for 10 minutes). intaked gets the smallest dedup memory
 * (1 MiB: 81,920 slots, 58,982 keys at the target load) and a 10-minute window, and a gateway
 * sends 100,000 unique events in batches of 500. Then:
 *   - a batch sent again 40,000 events later (a late retransmit, well inside what the table
 *     holds) is DUPLICATE for every event: the table forgets its oldest keys first, never a
 *     recent one (before 2026-12 it evicted the oldest key of a probe run, and such
 *     retransmits reached Kafka twice);
 *   - the very first batch, older than the effective window by then, is accepted again: the
 *     window shrank, as /metrics (intake_dedup_effective_window_seconds) and the warning
 *     `msg="dedup window shrunk"` say; nothing was evicted by force;
 *   - Kafka holds every event exactly once, except that first batch, twice. */
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "itest.h"

static const char CONFIG[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 30s\n"
    "dedup:\n"
    "  window: 10m\n"
    "  memory: 1MiB\n"
    "  sequence_memory: 1MiB\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n";

enum { BATCHES = 200, PER_BATCH = 500, LATE = 80 /* batches: 40,000 events */ };

static ProtobufCBinaryData events[BATCHES][PER_BATCH];
static uint64_t first_batch_hash[PER_BATCH];

static void make_batch(int b) {
  for (int i = 0; i < PER_BATCH; i++) {
    char src[32], id[32];
    snprintf(src, sizeof src, "full-src-%d", (b * PER_BATCH + i) % 997);
    snprintf(id, sizeof id, "ev-%d-%d", b, i);
    Intake__V1__Event *ev = itest_event_new(src, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id,
                                            0, "water.level", 2, itest_now_ms() - 1000);
    events[b][i] = itest_event_pack(ev);
    itest_event_free(ev);
  }
}

static char admin[64]; /* intaked's admin listener */

/* Sends batch b as `seq` and checks that every outcome is `want`. */
static void send_expect(intake_client_t *c, uint64_t seq, int b, int want, const char *what) {
  IT_CHECK_INT(intake_client_send_batch_encoded(c, seq, events[b], PER_BATCH, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 60000);
  IT_CHECKF(ack->seq == seq && ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK,
            "batch %llu: seq %llu status %d (%s)", (unsigned long long)seq,
            (unsigned long long)ack->seq, ack->status, ack->detail);
  IT_CHECK_INT(ack->n_outcomes, PER_BATCH);
  size_t wrong = 0;
  for (size_t i = 0; i < ack->n_outcomes; i++)
    wrong += (int)ack->outcomes[i] != want;
  if (wrong) /* what the table was doing */
    itest_log("effective window %.3f s, evictions %.0f (forced %.0f), entries %.0f",
              itest_metric(admin, "intake_dedup_effective_window_seconds"),
              itest_metric(admin, "intake_dedup_evictions_total"),
              itest_metric(admin, "intake_dedup_forced_evictions_total"),
              itest_metric(admin, "intake_dedup_entries"));
  IT_CHECKF(wrong == 0, "%s (batch %d): %zu of %d events not %s", what, b, wrong, PER_BATCH,
            want == INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED ? "ACCEPTED" : "DUPLICATE");
  intake__v1__batch_ack__free_unpacked(ack, NULL);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(void) {
  itest_init("dedup_full", true, 170);
  const char *topic = itest_topic("events");
  const char *topics[] = {topic, itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 2, 4);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);
  itest_admin_address(&d, admin, sizeof admin);
  intake_client_t *c = itest_connect(&d, "gw-full", NULL);

  uint64_t seq = 1;
  int late_checks = 0;
  for (int b = 0; b < BATCHES; b++) {
    make_batch(b);
    send_expect(c, seq++, b, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, "first copy");
    if (b % 5 == 4) /* a lost ack: the batch before, again */
      send_expect(c, seq++, b - 1, INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE, "retransmit");
    if (b >= LATE && b % 20 == 0) { /* a late retransmit, 40,000 events on */
      send_expect(c, seq++, b - LATE, INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE, "late retransmit");
      late_checks++;
    }
  }
  itest_log("%d batches of %d sent, %d late retransmits all DUPLICATE", BATCHES, PER_BATCH,
            late_checks);

  /* The table holds ~59,000 keys: the window shrank, and intaked said so. */
  double eff = itest_metric(admin, "intake_dedup_effective_window_seconds");
  IT_CHECKF(eff < 600, "effective window %.1f s, expected below the 600 s configured", eff);
  IT_CHECKF(itest_metric(admin, "intake_dedup_evictions_total") > 0, "no evictions counted");
  IT_CHECK_INT(itest_metric(admin, "intake_dedup_forced_evictions_total"), 0);
  free(itest_daemon_wait_log(&d, "dedup window shrunk", 30000));
  itest_log("effective window %.2f s; evictions %.0f", eff,
            itest_metric(admin, "intake_dedup_evictions_total"));

  /* The first batch is older than that: forgotten, accepted again. */
  send_expect(c, seq++, 0, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, "retransmit of the oldest");

  /* Kafka: every event once, the first batch twice. */
  size_t want = (size_t)BATCHES * PER_BATCH + PER_BATCH;
  itest_records_t rs = itest_consume(itest_bootstrap(), topic, want, 60000);
  IT_CHECK_INT(rs.n, want);
  uint64_t *h = malloc(rs.n * sizeof *h);
  IT_CHECK(h);
  for (size_t i = 0; i < rs.n; i++)
    h[i] = XXH3_64bits(rs.v[i].value, rs.v[i].value_len);
  for (int i = 0; i < PER_BATCH; i++)
    first_batch_hash[i] = XXH3_64bits(events[0][i].data, events[0][i].len);
  qsort(h, rs.n, sizeof *h, cmp_u64);
  qsort(first_batch_hash, PER_BATCH, sizeof *first_batch_hash, cmp_u64);
  size_t twice = 0;
  for (size_t i = 1; i < rs.n; i++)
    if (h[i] == h[i - 1]) {
      twice++;
      IT_CHECKF(i < 2 || h[i] != h[i - 2], "a record three times in Kafka");
      IT_CHECKF(bsearch(&h[i], first_batch_hash, PER_BATCH, sizeof *h, cmp_u64),
                "an event other than the first batch's is twice in Kafka");
    }
  IT_CHECK_INT(twice, PER_BATCH);
  itest_log("%s: %zu records: %d events once, the first batch's %d twice", topic, rs.n,
            BATCHES * PER_BATCH - PER_BATCH, PER_BATCH);
  free(h);
  itest_records_free(&rs);

  intake_client_close(c);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  for (int b = 0; b < BATCHES; b++)
    for (int i = 0; i < PER_BATCH; i++)
      free(events[b][i].data);
  itest_finish();
  return 0;
}
