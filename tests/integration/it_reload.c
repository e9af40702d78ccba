/* Hot reload (SIGHUP) under load: routes change without dropping a connection, without losing
 * or duplicating an in-flight event and without forgetting dedup state; an invalid config is
 * refused with a log line and the running one stays; keys that need a restart are named. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"

/* Route smoke alarms to `fire_topic`; everything else to the default topic. */
static void write_config(const itest_daemon_t *d, const char *fire_topic, uint16_t port,
                         const char *extra) {
  FILE *f = fopen(d->config_path, "w");
  IT_CHECK(f != NULL);
  fprintf(f,
          "listen: {address: 127.0.0.1, port: %u}\n"
          "admin: {port: 0}\n" /* as itest_daemon_start() wrote it: no admin.port warning */
          "kafka: {mode: brokers, brokers: \"%s\", delivery_timeout: 20s,\n"
          "        properties: {linger.ms: \"50\"}}\n"
          "dedup: {window: 10m}\n"
          "routes:\n"
          "  default_topic: %s.events\n"
          "  dead_letter_topic: %s.dlq\n"
          "  rules:\n"
          "    - {name: fire, match: {type: smoke.alarm}, topics: %s}\n"
          "%s",
          port, itest_bootstrap(), itest_prefix(), itest_prefix(), fire_topic, extra);
  fclose(f);
}

#define PER_BATCH 20

static ProtobufCBinaryData events[16][PER_BATCH];

static void make_batch(int b) {
  for (int i = 0; i < PER_BATCH; i++) {
    char id[32];
    snprintf(id, sizeof id, "b%02d-%02d", b, i);
    Intake__V1__Event *ev = itest_event_new("reload-src", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR,
                                            id, 0, "smoke.alarm", 1, itest_now_ms() - 1000);
    events[b][i] = itest_event_pack(ev);
    itest_event_free(ev);
  }
}

static void expect_ack(intake_client_t *c, int want_outcome, int batches) {
  for (int k = 0; k < batches; k++) {
    Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
    IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "batch %llu status %d",
              (unsigned long long)ack->seq, ack->status);
    IT_CHECK_INT(ack->n_outcomes, PER_BATCH);
    for (size_t i = 0; i < ack->n_outcomes; i++)
      IT_CHECKF((int)ack->outcomes[i] == want_outcome, "batch %llu event %zu: outcome %d",
                (unsigned long long)ack->seq, i, ack->outcomes[i]);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
  }
}

static size_t count_batch(const itest_records_t *rs, int b) {
  size_t n = 0;
  for (int i = 0; i < PER_BATCH; i++)
    n += itest_records_count(rs, "reload-src", events[b][i].data, events[b][i].len);
  return n;
}

int main(void) {
  itest_init("reload", true, 170);
  char fire1[256], fire2[256];
  snprintf(fire1, sizeof fire1, "%s", itest_topic("fire1"));
  snprintf(fire2, sizeof fire2, "%s", itest_topic("fire2"));
  const char *topics[] = {fire1, fire2, itest_topic("events"), itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 4, 4);
  for (int b = 0; b < 10; b++)
    make_batch(b);

  static char tmpl[1024];
  snprintf(tmpl, sizeof tmpl,
           "listen: {address: 127.0.0.1, port: ${PORT}}\n"
           "kafka: {mode: brokers, brokers: \"${BROKERS}\", delivery_timeout: 20s,\n"
           "        properties: {linger.ms: \"50\"}}\n"
           "dedup: {window: 10m}\n"
           "routes:\n"
           "  default_topic: ${P}.events\n"
           "  dead_letter_topic: ${P}.dlq\n"
           "  rules:\n"
           "    - {name: fire, match: {type: smoke.alarm}, topics: %s}\n",
           fire1);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", tmpl);
  intake_client_t *c = itest_connect(&d, "gw-reload", NULL);

  /* Batch 0 before any reload: to fire1. */
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 0, events[0], PER_BATCH, 0), 0);
  expect_ack(c, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, 1);

  /* Batches 1..4 in flight (the producer lingers 50 ms) while the routes change. */
  for (int b = 1; b <= 4; b++)
    IT_CHECK_INT(intake_client_send_batch_encoded(c, (uint64_t)b, events[b], PER_BATCH, 0), 0);
  write_config(&d, fire2, d.port, "");
  itest_daemon_signal(&d, SIGHUP);
  free(itest_daemon_wait_log(&d, "msg=\"reloaded\"", 10000));
  expect_ack(c, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, 4);

  /* After the reload: new events to fire2; batch 0 again is still a duplicate (dedup kept),
   * on the same connection (not dropped by the reload). */
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 5, events[5], PER_BATCH, 0), 0);
  expect_ack(c, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, 1);
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 6, events[0], PER_BATCH, 0), 0);
  expect_ack(c, INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE, 1);

  /* An invalid config is refused; the running one (fire2) stays. */
  FILE *f = fopen(d.config_path, "w");
  fprintf(f, "listen: {address: 127.0.0.1, port: %u}\nroutes: {defualt_topic: x}\n", d.port);
  fclose(f);
  itest_daemon_signal(&d, SIGHUP);
  char *line = itest_daemon_wait_log(&d, "reload refused", 10000);
  IT_CHECKF(strstr(line, "defualt_topic") != NULL, "refusal does not name the key: %s", line);
  free(line);
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 7, events[7], PER_BATCH, 0), 0);
  expect_ack(c, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, 1);

  /* A key that needs a restart is named and keeps its running value. */
  write_config(&d, fire2, (uint16_t)(d.port + 1), "");
  itest_daemon_signal(&d, SIGHUP);
  line = itest_daemon_wait_log(&d, "next restart", 10000);
  IT_CHECKF(strstr(line, "listen.port") != NULL, "warning does not name listen.port: %s", line);
  free(line);
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 8, events[8], PER_BATCH, 0), 0);
  expect_ack(c, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, 1);
  intake_client_close(c);

  itest_records_t r1 = itest_consume(itest_bootstrap(), fire1, PER_BATCH, 20000);
  itest_records_t r2 = itest_consume(itest_bootstrap(), fire2, 3 * PER_BATCH, 20000);
  IT_CHECK_INT(count_batch(&r1, 0), PER_BATCH);
  IT_CHECK_INT(count_batch(&r2, 0), 0);
  for (int b = 1; b <= 4; b++) /* routed by whichever config was in force: once in all */
    IT_CHECKF(count_batch(&r1, b) + count_batch(&r2, b) == PER_BATCH,
              "batch %d: %zu in fire1 + %zu in fire2", b, count_batch(&r1, b), count_batch(&r2, b));
  for (int b = 5; b <= 8; b++)
    if (b != 6) {
      IT_CHECK_INT(count_batch(&r1, b), 0);
      IT_CHECK_INT(count_batch(&r2, b), PER_BATCH);
    }
  IT_CHECK_INT(r1.n + r2.n, 8 * PER_BATCH);

  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  char *log = itest_daemon_log(&d);
  char *stats = itest_log_last_line(log, "msg=\"stats\"");
  uint64_t received = 0, delivered = 0, duplicate = 0;
  IT_CHECK(itest_logfmt_u64(stats, "received", &received));
  IT_CHECK(itest_logfmt_u64(stats, "delivered", &delivered));
  IT_CHECK(itest_logfmt_u64(stats, "duplicate", &duplicate));
  IT_CHECK_INT(received, 9 * PER_BATCH);
  IT_CHECK_INT(delivered, 8 * PER_BATCH);
  IT_CHECK_INT(duplicate, PER_BATCH);
  free(stats);
  free(log);
  itest_records_free(&r1);
  itest_records_free(&r2);
  for (int b = 0; b < 10; b++)
    for (int i = 0; i < PER_BATCH; i++)
      free(events[b][i].data);
  itest_finish();
  return 0;
}
