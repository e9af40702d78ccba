/* Retransmits and duplicates never reach Kafka twice:
 *   - a batch sent again (new batch seq on the same connection, or the same seq on a new
 *     connection, plain or compressed) is answered DUPLICATE for every event;
 *   - a copy inside the same batch, or in a batch pipelined while the first copy is still in
 *     flight, is DUPLICATE or follows the first copy (ACCEPTED), and is produced once;
 *   - for a source that numbers its events, a repeated seq is DUPLICATE even with a new event id.
 * Finally the topic holds every unique event exactly once. */
#include <stdlib.h>

#include "itest.h"

static const char CONFIG[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 20s\n"
    "dedup:\n"
    "  window: 10m\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n";

#define MAX_EVENTS 64

/* A set of events with their serialized bytes. */
typedef struct {
  Intake__V1__Event *ev[MAX_EVENTS];
  ProtobufCBinaryData bytes[MAX_EVENTS];
  size_t n;
} batch_t;

static void add(batch_t *b, const char *source, const char *event_id, uint64_t seq) {
  IT_CHECK(b->n < MAX_EVENTS);
  Intake__V1__Event *ev = itest_event_new(source, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR,
                                          event_id, seq, "smoke.alarm", 2,
                                          itest_now_ms() - 1000);
  itest_event_add_attr(ev, "value", "0.8");
  b->ev[b->n] = ev;
  b->bytes[b->n] = itest_event_pack(ev);
  b->n++;
}

static void add_range(batch_t *b, const char *source, const char *prefix, int n) {
  for (int i = 0; i < n; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%02d", prefix, i);
    add(b, source, id, 0);
  }
}

static void free_batch(batch_t *b) {
  for (size_t i = 0; i < b->n; i++) {
    itest_event_free(b->ev[i]);
    free(b->bytes[i].data);
  }
  b->n = 0;
}

static void send_batch(intake_client_t *c, uint64_t seq, const batch_t *b, unsigned flags) {
  IT_CHECK_INT(intake_client_send_batch_encoded(c, seq, b->bytes, b->n, flags), 0);
}

/* Receives one ack for `seq`, status OK, n outcomes; returns it. */
static Intake__V1__BatchAck *ack_ok(intake_client_t *c, uint64_t seq, size_t n) {
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECKF(ack->seq == seq, "ack for batch %llu, expected %llu", (unsigned long long)ack->seq,
            (unsigned long long)seq);
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "batch %llu: status %d (%s)",
            (unsigned long long)seq, ack->status, ack->detail);
  IT_CHECK_INT(ack->n_outcomes, n);
  IT_CHECK_INT(ack->n_rejections, 0);
  return ack;
}

/* Receives the ack of batch `seq` and checks every outcome is `want`. */
static void expect_all(intake_client_t *c, uint64_t seq, size_t n, int want, const char *what) {
  Intake__V1__BatchAck *ack = ack_ok(c, seq, n);
  size_t wrong = 0, first = 0, last = 0;
  for (size_t i = 0; i < n; i++)
    if ((int)ack->outcomes[i] != want) {
      if (wrong++ == 0)
        first = i;
      last = i;
    }
  IT_CHECKF(wrong == 0, "%s: %zu of %zu events (indexes %zu..%zu) have outcome %d, expected %d",
            what, wrong, n, first, last, ack->outcomes[first], want);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  itest_log("%s: %zu x %s", what, n, want == 0 ? "ACCEPTED" : "DUPLICATE");
}

int main(void) {
  itest_init("dedup", true, 170);
  const char *topic = itest_topic("events");
  const char *topics[] = {topic, itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 2, 4);

  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);
  intake_client_t *a = itest_connect(&d, "gw-dedup", NULL);
  size_t unique = 0;

  /* 1. A batch, then the same batch again under a new seq, then on a new connection under the
   *    same seq (the gateway lost the ack and reconnected), compressed this time. */
  batch_t b1 = {0};
  add_range(&b1, "dedup-src-1", "r", 10);
  send_batch(a, 1, &b1, 0);
  expect_all(a, 1, b1.n, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, "first copy");
  unique += b1.n;
  send_batch(a, 2, &b1, 0);
  expect_all(a, 2, b1.n, INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE, "same connection, new seq");
  intake_client_t *b = itest_connect(&d, "gw-dedup", NULL);
  send_batch(b, 1, &b1, INTAKE_CLIENT_ZSTD);
  expect_all(b, 1, b1.n, INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE, "new connection, same seq");

  /* 2. A copy inside one batch: [x0, x1, x0, x2]. */
  batch_t b2 = {0};
  add(&b2, "dedup-src-2", "x0", 0);
  add(&b2, "dedup-src-2", "x1", 0);
  add(&b2, "dedup-src-2", "x0", 0);
  add(&b2, "dedup-src-2", "x2", 0);
  send_batch(a, 3, &b2, 0);
  Intake__V1__BatchAck *ack = ack_ok(a, 3, 4);
  IT_CHECK_INT(ack->outcomes[0], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  IT_CHECK_INT(ack->outcomes[1], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  IT_CHECKF(ack->outcomes[2] == INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE ||
                ack->outcomes[2] == INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED,
            "copy inside the batch: outcome %d", ack->outcomes[2]);
  IT_CHECK_INT(ack->outcomes[3], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  itest_log("copy inside a batch: outcome %d", ack->outcomes[2]);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  unique += 3;

  /* 3. Sequence numbers: q1..q5 with seq 1..5, then seq 3 again under a new event id, and
   *    seq 6 (new) in the same batch. */
  batch_t b3 = {0};
  for (int i = 1; i <= 5; i++) {
    char id[16];
    snprintf(id, sizeof id, "q%d", i);
    add(&b3, "dedup-seq-src", id, (uint64_t)i);
  }
  send_batch(a, 4, &b3, 0);
  expect_all(a, 4, b3.n, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, "seq 1..5");
  unique += b3.n;
  batch_t b4 = {0};
  add(&b4, "dedup-seq-src", "q3-resent-under-new-id", 3);
  add(&b4, "dedup-seq-src", "q6", 6);
  send_batch(a, 5, &b4, 0);
  ack = ack_ok(a, 5, 2);
  IT_CHECKF(ack->outcomes[0] == INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE,
            "repeated seq 3: outcome %d, expected DUPLICATE", ack->outcomes[0]);
  IT_CHECK_INT(ack->outcomes[1], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  unique += 1;

  /* 3b. A numbered source sends 100 events (seq 1..100), then retransmits its first batch:
   *     seq 1..50 are older than the per-source window of the last 64 numbers, so dedup must
   *     fall back to (source, event id), and every copy is still DUPLICATE. */
  batch_t b6a = {0}, b6b = {0};
  for (int i = 1; i <= 100; i++) {
    char id[16];
    snprintf(id, sizeof id, "w%03d", i);
    add(i <= 50 ? &b6a : &b6b, "dedup-seq-long", id, (uint64_t)i);
  }
  send_batch(a, 8, &b6a, 0);
  expect_all(a, 8, b6a.n, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, "seq 1..50");
  send_batch(a, 9, &b6b, 0);
  expect_all(a, 9, b6b.n, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, "seq 51..100");
  unique += b6a.n + b6b.n;
  send_batch(a, 10, &b6a, 0);
  expect_all(a, 10, b6a.n, INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE,
             "seq 1..50 resent after seq 100");

  /* 4. Retransmits while the first copy is in flight: the same events pipelined in two batches
   *    on one connection and in a third on another, before any ack. Each copy's outcome is
   *    DUPLICATE or follows the first; Kafka gets one record per event. */
  batch_t b5 = {0};
  add_range(&b5, "dedup-src-3", "f", 10);
  send_batch(a, 11, &b5, 0);
  send_batch(a, 12, &b5, INTAKE_CLIENT_ZSTD);
  send_batch(b, 2, &b5, 0);
  unique += b5.n;
  for (int k = 0; k < 2; k++) {
    Intake__V1__BatchAck *x = itest_recv_ack(a, 30000);
    IT_CHECKF(x->seq == 11 || x->seq == 12, "unexpected ack seq %llu", (unsigned long long)x->seq);
    IT_CHECKF(x->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "batch %llu: status %d",
              (unsigned long long)x->seq, x->status);
    IT_CHECK_INT(x->n_outcomes, b5.n);
    for (size_t i = 0; i < x->n_outcomes; i++)
      IT_CHECKF(x->outcomes[i] != INTAKE__V1__OUTCOME__OUTCOME_REJECTED, "rejected copy");
    intake__v1__batch_ack__free_unpacked(x, NULL);
  }
  ack = ack_ok(b, 2, b5.n);
  for (size_t i = 0; i < ack->n_outcomes; i++)
    IT_CHECK(ack->outcomes[i] != INTAKE__V1__OUTCOME__OUTCOME_REJECTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);

  /* 5. Kafka has every unique event exactly once, and nothing else. */
  itest_records_t rs = itest_consume(itest_bootstrap(), topic, unique, 30000);
  itest_log("%s: %zu records, %zu unique events sent", topic, rs.n, unique);
  batch_t *all[] = {&b1, &b2, &b3, &b4, &b5, &b6a, &b6b};
  for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
    for (size_t i = 0; i < all[k]->n; i++) {
      if (all[k] == &b2 && i == 2)
        continue; /* the in-batch copy has the same bytes as x0 */
      size_t want = all[k] == &b4 && i == 0 ? 0 : 1;
      size_t got = itest_records_count(&rs, all[k]->ev[i]->source_id, all[k]->bytes[i].data,
                                       all[k]->bytes[i].len);
      IT_CHECKF(got == want, "event %s/%s: %zu records in Kafka, expected %zu",
                all[k]->ev[i]->source_id, all[k]->ev[i]->event_id, got, want);
    }
  IT_CHECK_INT(rs.n, unique);
  itest_records_free(&rs);

  rs = itest_consume(itest_bootstrap(), topics[1], 0, 10000);
  IT_CHECK_INT(rs.n, 0); /* nothing was invalid */
  itest_records_free(&rs);

  intake_client_close(a);
  intake_client_close(b);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
    free_batch(all[k]);
  itest_finish();
  return 0;
}
