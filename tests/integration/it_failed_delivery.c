/* Kafka refuses a record: the batch is answered RETRY, and the failed event is not remembered
 * as seen, so its retransmit is produced again (and refused again) rather than being answered
 * DUPLICATE, which would lose it silently.
 *
 * The refusal is real: the route `big` sends events of type snapshot.big to a topic created
 * with max.message.bytes=1024, and such an event carries 3000 incompressible payload bytes.
 * The other events of the batch land once, whatever the number of retransmits, and the
 * producer keeps working for later batches. */
#include <stdlib.h>

#include "itest.h"

static const char CONFIG[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 10s\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "  rules:\n"
    "    - name: big\n"
    "      match:\n"
    "        type: snapshot.big\n"
    "      topics: ${P}.small\n"
    "      stop: true\n";

static Intake__V1__Event *event(const char *id, int big) {
  Intake__V1__Event *ev = itest_event_new("nvr-7", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA,
                                          id, 0, big ? "snapshot.big" : "gb28181.alarm.2", 3,
                                          itest_now_ms() - 100);
  if (big) {
    uint8_t junk[3000];
    uint32_t x = 2463534242u; /* xorshift: incompressible for zstd */
    for (size_t i = 0; i < sizeof junk; i++) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      junk[i] = (uint8_t)x;
    }
    itest_event_set_payload(ev, junk, sizeof junk);
  }
  return ev;
}

static Intake__V1__BatchAck *send_and_ack(intake_client_t *c, uint64_t seq,
                                          const ProtobufCBinaryData *b, size_t n) {
  IT_CHECK_INT(intake_client_send_batch_encoded(c, seq, b, n, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECK_INT(ack->seq, seq);
  return ack;
}

int main(void) {
  itest_init("failed_delivery", true, 170);
  const char *topics[] = {itest_topic("events"), itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 2, 4);
  const char *small = itest_topic("small");
  const char *small_cfg[] = {"max.message.bytes", "1024"};
  itest_create_topic_config(itest_bootstrap(), small, 1, small_cfg, 2);

  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);
  intake_client_t *c = itest_connect(&d, "gw-fail", NULL);

  Intake__V1__Event *evs[3] = {event("ok-0", 0), event("too-big", 1), event("ok-2", 0)};
  ProtobufCBinaryData b[3];
  for (int i = 0; i < 3; i++)
    b[i] = itest_event_pack(evs[i]);

  /* The batch and two retransmits: RETRY every time, never OK. */
  for (uint64_t seq = 1; seq <= 3; seq++) {
    Intake__V1__BatchAck *ack = send_and_ack(c, seq, b, 3);
    IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY,
              "attempt %llu: status %d, expected RETRY: Kafka refused event 1 (outcomes: %zu%s)",
              (unsigned long long)seq, ack->status, ack->n_outcomes,
              ack->n_outcomes == 3 && ack->outcomes[1] == INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE
                  ? ", the refused event answered DUPLICATE"
                  : "");
    itest_log("attempt %llu: RETRY (\"%s\")", (unsigned long long)seq, ack->detail);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
  }

  /* The producer still works: a batch of small events is OK. */
  Intake__V1__Event *after = event("after", 0);
  ProtobufCBinaryData ba = itest_event_pack(after);
  Intake__V1__BatchAck *ack = send_and_ack(c, 4, &ba, 1);
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK,
            "a good batch after a refused record: status %d (%s)", ack->status, ack->detail);
  IT_CHECK_INT(ack->n_outcomes, 1);
  IT_CHECK_INT(ack->outcomes[0], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);

  /* Kafka: the small events once each, despite three attempts; nothing in the small topic. */
  itest_records_t rs = itest_consume(itest_bootstrap(), topics[0], 3, 30000);
  IT_CHECK_INT(itest_records_count(&rs, "nvr-7", b[0].data, b[0].len), 1);
  IT_CHECK_INT(itest_records_count(&rs, "nvr-7", b[2].data, b[2].len), 1);
  IT_CHECK_INT(itest_records_count(&rs, "nvr-7", ba.data, ba.len), 1);
  IT_CHECK_INT(rs.n, 3);
  itest_records_free(&rs);
  rs = itest_consume(itest_bootstrap(), small, 0, 10000);
  IT_CHECK_INT(rs.n, 0);
  itest_records_free(&rs);

  /* The stats count the failures. */
  intake_client_close(c);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  char *log = itest_daemon_log(&d);
  char *line = itest_log_last_line(log, "msg=\"stats\"");
  IT_CHECKF(line != NULL, "no stats line at exit");
  uint64_t failed = 0, in_flight = 1;
  IT_CHECK(itest_logfmt_u64(line, "failed", &failed) && failed >= 3);
  IT_CHECK(itest_logfmt_u64(line, "in_flight", &in_flight) && in_flight == 0);
  free(line);
  free(log);

  for (int i = 0; i < 3; i++) {
    itest_event_free(evs[i]);
    free(b[i].data);
  }
  itest_event_free(after);
  free(ba.data);
  itest_finish();
  return 0;
}
