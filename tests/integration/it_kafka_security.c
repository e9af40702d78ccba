/* Kafka security through kafka.properties, against the secured listeners of the test broker
 * (tests/kafka/kafka.sh: SASL_PLAINTEXT with PLAIN and SCRAM-SHA-256, SSL with a server
 * certificate for 127.0.0.1 and client certificates verified when sent):
 * - SASL/PLAIN, one-way TLS (ssl.ca.location) and mutual TLS (plus a client certificate): the
 *   batch is acked OK, every event is in Kafka once, /readyz says ready;
 * - a wrong password, a CA that did not sign the broker's certificate, and a client certificate
 *   from another CA: /readyz says not ready, the batch is answered RETRY once
 *   delivery_timeout passes (nothing is acked without Kafka), nothing reaches Kafka, and the
 *   first two log a "kafka authentication failed" / "kafka TLS handshake failed" error line;
 * - SCRAM-SHA-256: delivers with librdkafka >= 2.6.1; older ones (Debian 12 has 2.0.2) send a
 *   SCRAM nonce that Kafka 4.x refuses (confluentinc/librdkafka#4895), so there the failure
 *   must be reported with its hint instead — the test flips by itself on an upgrade;
 * - no daemon's log contains the SASL password.
 * All daemons run at once, so the test costs about one delivery_timeout of the failing ones. */
#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"

#define N_EVENTS 10
#define FAIL_TIMEOUT "3s"   /* delivery_timeout of the daemons that cannot reach Kafka */

typedef enum { EXPECT_OK, EXPECT_AUTH_FAIL, EXPECT_TLS_FAIL, EXPECT_REFUSED } expect_t;

typedef struct {
  const char *name;
  expect_t expect;
  const char *hint;            /* a text the failure line must also hold, or NULL */
  char props[2048];            /* the kafka.properties block (YAML flow mapping) */
  char brokers[64];
  const char *topic;
  itest_daemon_t d;
  char admin[64];
  intake_client_t *c;
  Intake__V1__Event *ev[N_EVENTS];
  ProtobufCBinaryData bytes[N_EVENTS];
} case_t;

/* ---- the broker's secured listeners (kafka.sh start writes these files) -------------------- */

static char state_dir[512];

/* The first line of STATEDIR/name, in out; fails the test when it is missing. */
static void state_file(const char *name, char *out, size_t len) {
  char path[768];
  snprintf(path, sizeof path, "%s/%s", state_dir, name);
  FILE *f = fopen(path, "r");
  IT_CHECKF(f != NULL,
            "%s missing: the broker was started by a kafka.sh without secured listeners "
            "(run tests/kafka/kafka.sh stop/start %s)",
            path, state_dir);
  IT_CHECKF(fgets(out, (int)len, f) != NULL, "%s is empty", path);
  fclose(f);
  out[strcspn(out, "\r\n")] = '\0';
}

/* ---- /readyz over HTTP/1.0 ----------------------------------------------------------------- */

/* The status of GET /readyz at `address` ("127.0.0.1:PORT"); its body in body[0..len). */
static int readyz(const char *address, char *body, size_t len) {
  itest_http_t h = itest_http(address, "GET", "/readyz", 0);
  snprintf(body, len, "%s", h.body);
  int status = h.status;
  itest_http_free(&h);
  return status;
}

/* ---- the cases ------------------------------------------------------------------------------ */

static void start(case_t *k) {
  char cfg[4096];
  snprintf(cfg, sizeof cfg,
           "listen: {address: 127.0.0.1, port: ${PORT}}\n"
           "admin: {port: 0}\n"
           "dedup: {memory: 4MiB, sequence_memory: 1MiB}\n"
           "kafka:\n"
           "  mode: brokers\n"
           "  brokers: \"%s\"\n"
           "  delivery_timeout: %s\n"
           "  properties: %s\n"
           "routes: {default_topic: %s, dead_letter_topic: ${P}.dlq}\n",
           k->brokers, k->expect == EXPECT_OK ? "20s" : FAIL_TIMEOUT, k->props, k->topic);
  itest_daemon_start(&k->d, k->name, cfg);
  itest_admin_address(&k->d, k->admin, sizeof k->admin);
  char gw[64];
  snprintf(gw, sizeof gw, "gw-%s", k->name);
  k->c = itest_connect(&k->d, gw, NULL);
  for (int i = 0; i < N_EVENTS; i++) {
    char id[32];
    snprintf(id, sizeof id, "%s-%d", k->name, i);
    k->ev[i] = itest_event_new("sec-src", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id, 0,
                               "smoke.alarm", 1, itest_now_ms() - 100);
    k->bytes[i] = itest_event_pack(k->ev[i]);
  }
  IT_CHECK_INT(intake_client_send_batch_encoded(k->c, 1, k->bytes, N_EVENTS, 0), 0);
}

/* /readyz until it answers `want` (5 s at most: statistics come every second). */
static void expect_ready(const case_t *k, int want) {
  char body[256];
  int64_t deadline = itest_mono_ms() + 5000;
  int status;
  while ((status = readyz(k->admin, body, sizeof body)) != want && itest_mono_ms() < deadline)
    itest_sleep_ms(200);
  IT_CHECKF(status == want, "%s: /readyz %d \"%s\", want %d", k->name, status, body, want);
}

static void finish(case_t *k, const char *password) {
  Intake__V1__BatchAck *ack = itest_recv_ack(k->c, 30000);
  IT_CHECK_INT(ack->seq, 1);
  itest_records_t rs = {0};
  if (k->expect == EXPECT_OK) {
    IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "%s: status %d (%s)",
              k->name, ack->status, ack->detail);
    IT_CHECK_INT(ack->n_outcomes, N_EVENTS);
    for (size_t i = 0; i < ack->n_outcomes; i++)
      IT_CHECK_INT(ack->outcomes[i], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
    expect_ready(k, 200);
    rs = itest_consume(itest_bootstrap(), k->topic, N_EVENTS, 20000);
    for (int i = 0; i < N_EVENTS; i++)
      IT_CHECKF(itest_records_count(&rs, "sec-src", k->bytes[i].data, k->bytes[i].len) == 1,
                "%s: event %d is not in %s exactly once", k->name, i, k->topic);
    IT_CHECK_INT(rs.n, N_EVENTS);
    itest_log("%s: %d events delivered, ready", k->name, N_EVENTS);
  } else {
    IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY,
              "%s: status %d (%s), want RETRY: Kafka refused the client", k->name, ack->status,
              ack->detail);
    expect_ready(k, 503);
    const char *needle = k->expect == EXPECT_AUTH_FAIL  ? "msg=\"kafka authentication failed\""
                         : k->expect == EXPECT_TLS_FAIL ? "msg=\"kafka TLS handshake failed\""
                                                        : "msg=\"kafka error\"";
    char *line = itest_daemon_wait_log(&k->d, needle, 5000);
    IT_CHECKF(line != NULL, "%s: no %s line", k->name, needle);
    IT_CHECKF(strstr(line, "level=error") || k->expect == EXPECT_REFUSED, "%s: not an error: %s",
              k->name, line);
    IT_CHECKF(!k->hint || strstr(line, k->hint), "%s: \"%s\" missing from %s", k->name, k->hint,
              line);
    itest_log("%s: RETRY, not ready, logged: %.160s", k->name, line);
    free(line);
    rs = itest_consume(itest_bootstrap(), k->topic, 0, 5000);
    IT_CHECK_INT(rs.n, 0);
  }
  itest_records_free(&rs);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  intake_client_close(k->c);
  IT_CHECK_INT(itest_daemon_stop(&k->d, 20000), 0);
  char *log = itest_daemon_log(&k->d);
  IT_CHECKF(strstr(log, password) == NULL, "%s: the SASL password is in intaked's log", k->name);
  free(log);
  for (int i = 0; i < N_EVENTS; i++) {
    itest_event_free(k->ev[i]);
    free(k->bytes[i].data);
  }
}

int main(void) {
  itest_init("kafka_security", true, 60);
  int64_t t0 = itest_mono_ms();
  snprintf(state_dir, sizeof state_dir, "%s", ITEST_KAFKA_STATE);
  char sasl[64], ssl[64], user[64], pass[128];
  state_file("bootstrap_sasl", sasl, sizeof sasl);
  state_file("bootstrap_ssl", ssl, sizeof ssl);
  state_file("sasl_user", user, sizeof user);
  state_file("sasl_password", pass, sizeof pass);
  /* SCRAM from librdkafka >= 2.6.1 only: see the comment at the top. */
  int scram_works = rd_kafka_version() >= 0x020601ff;
  itest_log("librdkafka %s: SCRAM against Kafka 4.x expected to %s", rd_kafka_version_str(),
            scram_works ? "work" : "fail (librdkafka#4895)");

  enum { PLAIN, SCRAM, SSL1, MTLS, BADPASS, BADCA, ROGUE, N_CASES };
  static case_t cases[N_CASES] = {
      [PLAIN] = {.name = "plain", .expect = EXPECT_OK},
      [SCRAM] = {.name = "scram", .expect = EXPECT_OK},
      [SSL1] = {.name = "ssl", .expect = EXPECT_OK},
      [MTLS] = {.name = "mtls", .expect = EXPECT_OK},
      [BADPASS] = {.name = "badpass", .expect = EXPECT_AUTH_FAIL},
      [BADCA] = {.name = "badca", .expect = EXPECT_TLS_FAIL},
      /* The broker refuses the certificate with a TLS alert, which librdkafka reports as a
       * transport error (code=_TRANSPORT): no authentication line to expect. */
      [ROGUE] = {.name = "rogue", .expect = EXPECT_REFUSED},
  };
  if (!scram_works) {
    cases[SCRAM].expect = EXPECT_AUTH_FAIL;
    cases[SCRAM].hint = "librdkafka#4895";
  }
  const char *sasl_fmt = "{security.protocol: SASL_PLAINTEXT, sasl.mechanisms: %s, "
                         "sasl.username: \"%s\", sasl.password: \"%s\"}";
  snprintf(cases[PLAIN].props, sizeof cases[PLAIN].props, sasl_fmt, "PLAIN", user, pass);
  snprintf(cases[SCRAM].props, sizeof cases[SCRAM].props, sasl_fmt, "SCRAM-SHA-256", user, pass);
  snprintf(cases[BADPASS].props, sizeof cases[BADPASS].props, sasl_fmt, "PLAIN", user,
           "not-the-password");
  snprintf(cases[SSL1].props, sizeof cases[SSL1].props,
           "{security.protocol: SSL, ssl.ca.location: \"%s/ca.pem\"}", state_dir);
  snprintf(cases[MTLS].props, sizeof cases[MTLS].props,
           "{security.protocol: SSL, ssl.ca.location: \"%s/ca.pem\", "
           "ssl.certificate.location: \"%s/client.pem\", ssl.key.location: \"%s/client.key\"}",
           state_dir, state_dir, state_dir);
  snprintf(cases[BADCA].props, sizeof cases[BADCA].props,
           "{security.protocol: SSL, ssl.ca.location: \"%s/tls/other-ca.pem\"}", state_dir);
  snprintf(cases[ROGUE].props, sizeof cases[ROGUE].props,
           "{security.protocol: SSL, ssl.ca.location: \"%s/ca.pem\", "
           "ssl.certificate.location: \"%s/tls/rogue.pem\", "
           "ssl.key.location: \"%s/tls/rogue.key\"}",
           state_dir, state_dir, state_dir);

  const char *topics[N_CASES + 1];
  for (int i = 0; i < N_CASES; i++) {
    case_t *k = &cases[i];
    snprintf(k->brokers, sizeof k->brokers, "%s",
             i == PLAIN || i == SCRAM || i == BADPASS ? sasl : ssl);
    topics[i] = k->topic = itest_topic(k->name);
  }
  topics[N_CASES] = itest_topic("dlq");
  itest_create_topics(itest_bootstrap(), topics, N_CASES + 1, 1);

  for (int i = 0; i < N_CASES; i++)
    start(&cases[i]);
  for (int i = 0; i < N_CASES; i++)
    finish(&cases[i], pass);
  itest_log("%d cases in %.1f s", N_CASES, (double)(itest_mono_ms() - t0) / 1000.0);
  itest_finish();
  return 0;
}
