/* Admission: with gateway.tokens_file, only a gateway whose id and token match is welcomed — a
 * wrong or missing token gets NOT_AUTHENTICATED and the connection is closed before anything
 * reaches the pipeline; and listen.max_connections turns the connection over the limit away
 * with TOO_MANY_CONNECTIONS while the others keep working. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"

static void expect_refused(const itest_daemon_t *d, const char *gw, const char *token) {
  intake_client_t *c;
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d->port, 5000, &c), 0);
  intake_client_msg_t m;
  int rc = intake_client_hello(c, gw, token, 5000, &m);
  IT_CHECKF(rc == -EPROTO && m.error &&
                m.error->code == INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED,
            "gateway %s with token \"%s\": hello rc %d, error %d", gw, token ? token : "(none)", rc,
            m.error ? (int)m.error->code : -1);
  intake_client_msg_free(&m);
  /* Whatever it sends next goes nowhere: the connection is closed. */
  Intake__V1__Event *ev = itest_event_new("auth-src", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR,
                                          "sneaky", 0, "smoke.alarm", 1, itest_now_ms());
  intake_client_send_batch(c, 1, &ev, 1, 0);
  rc = intake_client_recv(c, 3000, &m);
  IT_CHECKF(rc < 0, "a refused connection answered a batch (rc %d)", rc);
  itest_event_free(ev);
  intake_client_close(c);
}

int main(void) {
  itest_init("auth", true, 120);
  const char *topics[] = {itest_topic("events"), itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 2, 2);
  char tokens[512];
  snprintf(tokens, sizeof tokens, "%s/tokens", itest_dir());
  FILE *f = fopen(tokens, "w");
  IT_CHECK(f != NULL);
  fputs("# gateway_id token\ngw-a s3cret-a\ngw-b s3cret-b\n", f);
  fclose(f);
  char tmpl[1024];
  snprintf(tmpl, sizeof tmpl,
           "listen: {address: 127.0.0.1, port: ${PORT}, max_connections: 3}\n"
           "gateway: {tokens_file: \"%s\"}\n"
           "kafka: {mode: brokers, brokers: \"${BROKERS}\", delivery_timeout: 20s}\n"
           "routes: {default_topic: ${P}.events, dead_letter_topic: ${P}.dlq}\n",
           tokens);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", tmpl);

  expect_refused(&d, "gw-a", "wrong");
  expect_refused(&d, "gw-a", "s3cret-b"); /* another gateway's token */
  expect_refused(&d, "gw-a", "");
  expect_refused(&d, "gw-z", "s3cret-a"); /* unknown gateway */

  /* The right token: welcomed, and its event is delivered. */
  intake_client_t *a;
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &a), 0);
  intake_client_msg_t m;
  IT_CHECK_INT(intake_client_hello(a, "gw-a", "s3cret-a", 5000, &m), 0);
  intake_client_msg_free(&m);
  Intake__V1__Event *ev = itest_event_new("auth-src", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR,
                                          "fine", 0, "smoke.alarm", 1, itest_now_ms());
  IT_CHECK_INT(intake_client_send_batch(a, 1, &ev, 1, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(a, 30000);
  IT_CHECK_INT(ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK);
  IT_CHECK_INT(ack->outcomes[0], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  itest_event_free(ev);

  /* max_connections 3: with `a` and two more open, the fourth is turned away. */
  intake_client_t *b, *c, *x;
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &b), 0);
  IT_CHECK_INT(intake_client_hello(b, "gw-b", "s3cret-b", 5000, &m), 0);
  intake_client_msg_free(&m);
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &c), 0);
  IT_CHECK_INT(intake_client_hello(c, "gw-b", "s3cret-b", 5000, &m), 0);
  intake_client_msg_free(&m);
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &x), 0);
  itest_expect_error_and_close(x, INTAKE__V1__ERROR_CODE__ERROR_CODE_TOO_MANY_CONNECTIONS, 5000);
  intake_client_close(x);
  intake_client_close(c);
  intake_client_close(b);
  intake_client_close(a);

  itest_records_t rs = itest_consume(itest_bootstrap(), topics[0], 1, 20000);
  IT_CHECK_INT(rs.n, 1); /* "fine" only: nothing from the refused connections */
  itest_records_free(&rs);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  char *log = itest_daemon_log(&d);
  char *stats = itest_log_last_line(log, "msg=\"stats\"");
  uint64_t received = 0;
  IT_CHECK(itest_logfmt_u64(stats, "received", &received));
  IT_CHECK_INT(received, 1);
  free(stats);
  free(log);
  itest_finish();
  return 0;
}
