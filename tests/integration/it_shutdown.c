/* SIGTERM: stop accepting, finish the batches in flight, ack them, exit 0.
 *
 * The producer lingers 1.5 s (kafka.properties linger.ms), so batches that intaked has read
 * are still waiting for Kafka when the signal arrives. The test checks that no ack came before
 * the signal, then that after it: new connections are refused, every batch sent is acked OK,
 * the connection is closed, intaked exits 0, every event is in Kafka, and the final stats line
 * reconciles: received = delivered + duplicate + rejected (+ failed) + in_flight.
 *
 * Batches still unread in the socket when the signal arrives are, by design (server.c), not
 * read: the gateway sees the connection close without their acks and retransmits them. The
 * 400 ms pause before the signal makes sure intaked has read every batch sent. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "itest.h"

#define BATCH 50
#define MAX_BATCHES 8

static const char CONFIG[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 20s\n"
    "  properties:\n"
    "    linger.ms: 1500\n"
    "log:\n"
    "  stats_interval: 1s\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n";

static uint64_t field(const char *line, const char *key, bool required) {
  uint64_t v = 0;
  bool ok = itest_logfmt_u64(line, key, &v);
  IT_CHECKF(ok || !required, "stats line without %s=: %s", key, line);
  return v;
}

int main(void) {
  itest_init("shutdown", true, 170);
  const char *topic = itest_topic("events");
  const char *topics[] = {topic, itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 2, 4);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);

  uint32_t window;
  intake_client_t *c = itest_connect(&d, "gw-shutdown", &window);
  int n_batches = window < MAX_BATCHES ? (int)window : MAX_BATCHES;
  static ProtobufCBinaryData bytes[MAX_BATCHES][BATCH];
  for (int b = 0; b < n_batches; b++) {
    for (int i = 0; i < BATCH; i++) {
      char source[32], id[32];
      snprintf(source, sizeof source, "gas-%02d", i % 5);
      snprintf(id, sizeof id, "b%d-e%02d", b, i);
      Intake__V1__Event *ev =
          itest_event_new(source, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id, 0,
                          "gas.alarm", 1, itest_now_ms() - 10);
      bytes[b][i] = itest_event_pack(ev);
      itest_event_free(ev);
    }
    IT_CHECK_INT(intake_client_send_batch_encoded(c, (uint64_t)b + 1, bytes[b], BATCH,
                                                  b % 2 ? INTAKE_CLIENT_ZSTD : 0),
                 0);
  }

  /* In flight: read by intaked, not yet confirmed by Kafka. */
  intake_client_msg_t m;
  int err = intake_client_recv(c, 400, &m);
  if (err == 0) {
    intake_client_msg_free(&m);
    IT_FAIL("an ack came within 400 ms despite linger.ms 1500: the test cannot hold batches in "
            "flight");
  }
  IT_CHECK_INT(err, -ETIMEDOUT);

  itest_daemon_signal(&d, SIGTERM);
  char *line = itest_daemon_wait_log(&d, "stopping", 5000);
  IT_CHECKF(line != NULL, "no \"stopping\" log line within 5 s of SIGTERM");
  free(line);

  /* Stop accepting: a new connection is refused (or told SHUTTING_DOWN and closed). */
  intake_client_t *late;
  err = intake_client_connect("127.0.0.1", d.port, 2000, &late);
  if (err == 0) {
    itest_expect_error_and_close(late, INTAKE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN, 5000);
    intake_client_close(late);
  } else {
    IT_CHECKF(err == -ECONNREFUSED, "connect while stopping: %s", strerror(-err));
  }

  /* Every batch sent before the signal is acked OK. */
  int acked[MAX_BATCHES + 1] = {0};
  for (int k = 0; k < n_batches; k++) {
    Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
    IT_CHECK(ack->seq >= 1 && ack->seq <= (uint64_t)n_batches && !acked[ack->seq]);
    acked[ack->seq] = 1;
    IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK,
              "batch %llu: status %d (%s)", (unsigned long long)ack->seq, ack->status,
              ack->detail);
    IT_CHECK_INT(ack->n_outcomes, BATCH);
    for (int i = 0; i < BATCH; i++)
      IT_CHECK_INT(ack->outcomes[i], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
  }
  itest_log("%d batches in flight at SIGTERM, all acked OK", n_batches);

  /* Then the connection closes (a SHUTTING_DOWN error first is fine). */
  err = intake_client_recv(c, 10000, &m);
  if (err == 0) {
    IT_CHECKF(m.error && m.error->code == INTAKE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN,
              "after the last ack: frame type %u", m.type);
    intake_client_msg_free(&m);
    err = intake_client_recv(c, 10000, &m);
  }
  IT_CHECKF(err == -ECONNRESET, "connection not closed after shutdown: %s", strerror(-err));
  intake_client_close(c);

  int rc = itest_daemon_wait(&d, 30000);
  IT_CHECKF(rc == 0, "intaked exited with %d after SIGTERM (-1: still running)", rc);

  const size_t total = (size_t)n_batches * BATCH;
  itest_records_t rs = itest_consume(itest_bootstrap(), topic, total, 30000);
  IT_CHECK_INT(rs.n, total);
  for (int b = 0; b < n_batches; b++)
    for (int i = 0; i < BATCH; i++)
      IT_CHECK_INT(itest_records_count(&rs, NULL, bytes[b][i].data, bytes[b][i].len), 1);
  itest_records_free(&rs);

  /* Every stats line reconciles (they come every second); the last one is the final count. */
  char *log = itest_daemon_log(&d);
  int n_stats = 0;
  for (char *p = log; (p = strstr(p, "msg=\"stats\"")) != NULL; p++) {
    char *start = p, *end = strchr(p, '\n');
    while (start > log && start[-1] != '\n')
      start--;
    char *l = strndup(start, end ? (size_t)(end - start) : strlen(start));
    IT_CHECKF(field(l, "received", true) ==
                  field(l, "delivered", true) + field(l, "duplicate", true) +
                      field(l, "rejected", true) + field(l, "failed", false) +
                      field(l, "in_flight", true),
              "counters do not reconcile: %s", l);
    free(l);
    n_stats++;
  }
  line = itest_log_last_line(log, "msg=\"stats\"");
  IT_CHECKF(line != NULL, "no msg=\"stats\" line in the log");
  itest_log("%d stats lines reconcile; the final one: %s", n_stats, line);
  uint64_t received = field(line, "received", true);
  uint64_t delivered = field(line, "delivered", true);
  uint64_t duplicate = field(line, "duplicate", true);
  uint64_t rejected = field(line, "rejected", true);
  uint64_t in_flight = field(line, "in_flight", true);
  uint64_t failed = field(line, "failed", false);
  IT_CHECKF(received == delivered + duplicate + rejected + failed + in_flight,
            "counters do not reconcile: %s", line);
  IT_CHECK_INT(received, total);
  IT_CHECK_INT(delivered, total);
  IT_CHECK_INT(in_flight, 0);
  IT_CHECK_INT(failed, 0);
  free(line);
  free(log);

  for (int b = 0; b < n_batches; b++)
    for (int i = 0; i < BATCH; i++)
      free(bytes[b][i].data);
  itest_finish();
  return 0;
}
