/* No batch is acked before Kafka has its events.
 *
 * 1. Pipelined batches against the real broker: the moment an ack arrives, the test asks the
 *    broker for its high watermarks and reads up to them; every accepted event of that batch
 *    must already be there.
 * 2. A second intaked pointed at an unreachable broker (a closed local port) with
 *    kafka.delivery_timeout 2s: its batches are answered RETRY after about the timeout, and
 *    never OK. */
#include <stdlib.h>

#include "itest.h"

#define N_BATCHES 12
#define BATCH 25

static const char CONFIG[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 20s\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n";

static const char CONFIG_DEAD_BROKER[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: 127.0.0.1:%u\n"
    "  delivery_timeout: 2s\n"
    "routes:\n"
    "  default_topic: ${P}.unreachable\n"
    "  dead_letter_topic: ${P}.unreachable-dlq\n";

static Intake__V1__Event *make(int b, int i) {
  char source[32], id[32];
  snprintf(source, sizeof source, "sensor-%02d", i % 7);
  snprintf(id, sizeof id, "b%02d-e%02d", b, i);
  return itest_event_new(source, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id, 0,
                         "water.level", 3, itest_now_ms() - 100);
}

static void acked_means_in_kafka(void) {
  const char *topic = itest_topic("events");
  const char *topics[] = {topic, itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 2, 4);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);
  itest_consumer_t *kc = itest_consumer_new(itest_bootstrap(), &topic, 1);

  static ProtobufCBinaryData bytes[N_BATCHES + 1][BATCH];
  for (int b = 1; b <= N_BATCHES; b++)
    for (int i = 0; i < BATCH; i++) {
      Intake__V1__Event *ev = make(b, i);
      bytes[b][i] = itest_event_pack(ev);
      itest_event_free(ev);
    }

  uint32_t window;
  intake_client_t *c = itest_connect(&d, "gw-ack", &window);
  int next = 1, acked = 0, in_flight = 0;
  while (acked < N_BATCHES) {
    while (next <= N_BATCHES && (uint32_t)in_flight < window) {
      IT_CHECK_INT(intake_client_send_batch_encoded(c, (uint64_t)next, bytes[next], BATCH,
                                                    next % 2 ? INTAKE_CLIENT_ZSTD : 0),
                   0);
      next++;
      in_flight++;
    }
    Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
    /* Right now, before anything else: what does Kafka hold? */
    itest_consumer_catch_up(kc, 15000);
    const itest_records_t *rs = itest_consumer_records(kc);
    IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "batch %llu: status %d",
              (unsigned long long)ack->seq, ack->status);
    IT_CHECK(ack->seq >= 1 && ack->seq <= N_BATCHES);
    IT_CHECK_INT(ack->n_outcomes, BATCH);
    for (int i = 0; i < BATCH; i++) {
      IT_CHECK_INT(ack->outcomes[i], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
      const ProtobufCBinaryData *e = &bytes[ack->seq][i];
      IT_CHECKF(itest_records_count(rs, NULL, e->data, e->len) == 1,
                "batch %llu was acked, but its event %d is not in Kafka (yet)",
                (unsigned long long)ack->seq, i);
    }
    intake__v1__batch_ack__free_unpacked(ack, NULL);
    acked++;
    in_flight--;
  }
  itest_log("%d acks, each batch readable in Kafka when its ack arrived", acked);
  IT_CHECK_INT(itest_consumer_records(kc)->n, N_BATCHES * BATCH);
  itest_consumer_free(kc);
  intake_client_close(c);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  for (int b = 1; b <= N_BATCHES; b++)
    for (int i = 0; i < BATCH; i++)
      free(bytes[b][i].data);
}

static void unreachable_broker_means_retry(void) {
  char config[sizeof CONFIG_DEAD_BROKER + 16];
  snprintf(config, sizeof config, CONFIG_DEAD_BROKER, (unsigned)itest_closed_port());
  itest_daemon_t d;
  itest_daemon_start(&d, "dead-broker", config);
  intake_client_t *c = itest_connect(&d, "gw-ack-dead", NULL);

  for (uint64_t seq = 1; seq <= 2; seq++) {
    Intake__V1__Event *evs[5];
    for (int i = 0; i < 5; i++)
      evs[i] = make(90 + (int)seq, i);
    int64_t t0 = itest_mono_ms();
    IT_CHECK_INT(intake_client_send_batch(c, seq, evs, 5, 0), 0);
    Intake__V1__BatchAck *ack = itest_recv_ack(c, 20000);
    int64_t took = itest_mono_ms() - t0;
    IT_CHECK_INT(ack->seq, seq);
    IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY,
              "batch %llu with no reachable broker: status %d, expected RETRY",
              (unsigned long long)seq, ack->status);
    IT_CHECKF(took >= 1500 && took <= 12000,
              "RETRY came after %lld ms; kafka.delivery_timeout is 2 s", (long long)took);
    itest_log("no broker: batch %llu answered RETRY after %lld ms (\"%s\")",
              (unsigned long long)seq, (long long)took, ack->detail);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
    for (int i = 0; i < 5; i++)
      itest_event_free(evs[i]);
  }
  intake_client_close(c);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
}

int main(void) {
  itest_init("ack_after_kafka", true, 170);
  acked_means_in_kafka();
  unreachable_broker_means_retry();
  itest_finish();
  return 0;
}
