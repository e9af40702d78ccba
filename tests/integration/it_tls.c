/* TLS for gateways (listen.tls.*), against the real broker:
 * - server certificate only: events over TLS reach Kafka and are acked (also a frame spanning
 *   many TLS records); a plain-TCP gateway gets nothing into Kafka and is closed; a gateway
 *   that does not trust intaked's CA fails its handshake; a connection that never finishes its
 *   handshake is closed by gateway.hello_timeout; /metrics counts the failed handshakes;
 * - require_client_cert + match_gateway_id: no certificate and a certificate from another CA
 *   are refused, a valid one works, and a HELLO whose gateway_id is not the certificate's
 *   identity gets NOT_AUTHENTICATED;
 * - certificate rotation: the files are replaced and SIGHUP makes new connections use them
 *   while an open connection keeps its session; a reload with a key that does not match is
 *   refused and changes nothing.
 * Every event that should reach Kafka is counted there, and nothing else is. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"

static char certs[512];   /* CA 1: gateway certificates and the first server certificate */
static char certs2[512];  /* CA 2: the renewed server certificate */
static char live[512];    /* the server certificate files intaked is configured with */

static const char *path(const char *d, const char *name) {
  static char bufs[8][600];
  static int next;
  char *p = bufs[next++ % 8];
  snprintf(p, sizeof bufs[0], "%s/%s", d, name);
  return p;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  IT_CHECKF(system(cmd) == 0, "command failed: %s", cmd);
}

/* Connects over TLS trusting `ca`, presenting <cert>.pem/.key from certs/ when cert is not
 * NULL. Returns the connect result; *out is set on 0. */
static int tls_connect(const itest_daemon_t *d, const char *ca, const char *cert,
                       intake_client_t **out, char *err, size_t errlen) {
  char c[64], k[64];
  snprintf(c, sizeof c, "%s.pem", cert ? cert : "");
  snprintf(k, sizeof k, "%s.key", cert ? cert : "");
  intake_client_tls_t o = {.ca_file = ca,
                           .cert_file = cert ? path(certs, c) : NULL,
                           .key_file = cert ? path(certs, k) : NULL,
                           .error = err,
                           .error_len = errlen};
  return intake_client_connect_tls("127.0.0.1", d->port, 5000, &o, out);
}

/* A TLS connection that is welcomed as `gw`. */
static intake_client_t *tls_gateway(const itest_daemon_t *d, const char *ca, const char *cert,
                                    const char *gw) {
  intake_client_t *c;
  char err[200] = "";
  int rc = tls_connect(d, ca, cert, &c, err, sizeof err);
  IT_CHECKF(rc == 0, "TLS connect as %s: %d %s", gw, rc, err);
  intake_client_msg_t m;
  rc = intake_client_hello(c, gw, "", 5000, &m);
  IT_CHECKF(rc == 0, "hello as %s over TLS: %d (%s)", gw, rc, intake_client_tls_error(c));
  intake_client_msg_free(&m);
  return c;
}

static Intake__V1__Event *event(const char *id, size_t payload) {
  Intake__V1__Event *ev = itest_event_new("tls-src", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR,
                                          id, 0, "smoke.alarm", 1, itest_now_ms());
  if (payload) {
    char *p = malloc(payload);
    memset(p, 'p', payload);
    itest_event_set_payload(ev, p, payload);
    free(p);
  }
  return ev;
}

/* Sends n events "<prefix>-<i>" in one batch and checks every one is ACCEPTED. */
static void send_ok(intake_client_t *c, uint64_t seq, const char *prefix, size_t n, size_t payload) {
  Intake__V1__Event **ev = calloc(n, sizeof *ev);
  for (size_t i = 0; i < n; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%zu", prefix, i);
    ev[i] = event(id, payload);
  }
  IT_CHECK_INT(intake_client_send_batch(c, seq, ev, n, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 20000);
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "%s: status %d %s", prefix,
            ack->status, ack->detail);
  IT_CHECK_INT(ack->n_outcomes, n);
  for (size_t i = 0; i < n; i++)
    IT_CHECK_INT(ack->outcomes[i], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  for (size_t i = 0; i < n; i++)
    itest_event_free(ev[i]);
  free(ev);
}

/* The connection is refused: hello fails (at the handshake, or with the alert TLS 1.3 sends
 * after it), and a batch sent anyway is never answered. */
static void expect_refused_hello(intake_client_t *c, const char *gw, const char *why) {
  intake_client_msg_t m;
  int rc = intake_client_hello(c, gw, "", 5000, &m);
  IT_CHECKF(rc < 0 && m.welcome == NULL, "%s: hello rc %d", why, rc);
  intake_client_msg_free(&m);
  Intake__V1__Event *ev = event("sneaky", 0);
  (void)intake_client_send_batch(c, 1, &ev, 1, 0);
  rc = intake_client_recv(c, 3000, &m);
  IT_CHECKF(rc < 0 && rc != -ETIMEDOUT, "%s: a refused connection answered or stayed open (%d)",
            why, rc);
  itest_event_free(ev);
}

/* /metrics sample `name` from the daemon's admin listener. */
static long long metric(const itest_daemon_t *d, const char *name) {
  char *line = itest_daemon_wait_log(d, "admin listening", 10000);
  IT_CHECK(line != NULL);
  const char *a = strstr(line, "address=");
  IT_CHECK(a != NULL);
  a += strlen("address=");
  if (*a == '"')
    a++;
  char host[64];
  size_t n = strcspn(a, "\" ");
  IT_CHECK(n < sizeof host);
  memcpy(host, a, n);
  host[n] = '\0';
  free(line);
  char *colon = strrchr(host, ':');
  IT_CHECK(colon != NULL);
  *colon = '\0';
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)strtoul(colon + 1, NULL, 10))};
  IT_CHECK(inet_pton(AF_INET, host, &sa.sin_addr) == 1);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  IT_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
  IT_CHECK(write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1));
  size_t cap = 1 << 20, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    IT_CHECKF(poll(&p, 1, 10000) == 1, "/metrics: no answer");
    ssize_t r = read(fd, buf + len, cap - len - 1);
    if (r <= 0)
      break;
    len += (size_t)r;
    IT_CHECK(len < cap - 1);
  }
  close(fd);
  buf[len] = '\0';
  char key[128];
  snprintf(key, sizeof key, "\n%s ", name);
  const char *s = strstr(buf, key);
  IT_CHECKF(s != NULL, "no %s in /metrics", name);
  long long v = strtoll(s + strlen(key), NULL, 10);
  free(buf);
  return v;
}

static void server_only(void) {
  char tmpl[2048];
  snprintf(tmpl, sizeof tmpl,
           "listen:\n  address: 127.0.0.1\n  port: ${PORT}\n"
           "  tls: {cert_file: \"%s\", key_file: \"%s\"}\n"
           "gateway: {hello_timeout: 1s, max_batch_events: 250}\n"
           "admin: {port: 0}\n"
           /* Backpressure within reach: 900 records may be in flight (90% of the queue), and
            * as one batch fanned out (250 x 16) would not fit under that, the pipeline refuses
            * batches above half of it, 450; linger.ms keeps records in flight long enough. */
           "kafka:\n  mode: brokers\n  brokers: \"${BROKERS}\"\n  delivery_timeout: 20s\n"
           "  properties: {linger.ms: 300, queue.buffering.max.messages: 1000}\n"
           "routes: {default_topic: ${P}.events, dead_letter_topic: ${P}.dlq}\n",
           path(certs, "server.pem"), path(certs, "server.key"));
  itest_daemon_t d;
  itest_daemon_start(&d, "server-only", tmpl);
  char ca[600];
  snprintf(ca, sizeof ca, "%s", path(certs, "ca.pem"));

  /* Over TLS: acked once Kafka has the events; a 400 KiB frame spans ~25 TLS records. */
  intake_client_t *c = tls_gateway(&d, ca, NULL, "gw-tls");
  IT_CHECK_STR(intake_client_tls_version(c), "TLSv1.3");
  send_ok(c, 1, "small", 5, 0);
  send_ok(c, 2, "large", 200, 2000);

  /* Eight batches of 100 back to back: the sixth finds Kafka "behind" (500 records in flight),
   * the connection pauses with the rest buffered (decrypted or not), and resumes as the first
   * ones are delivered. Every batch is acked, every event delivered once. */
  enum { PB = 8, PN = 100 };
  Intake__V1__Event *pev[PB][PN];
  for (int b = 0; b < PB; b++) {
    for (int i = 0; i < PN; i++) {
      char id[64];
      snprintf(id, sizeof id, "paused-%d-%d", b, i);
      pev[b][i] = event(id, 0);
    }
    IT_CHECK_INT(intake_client_send_batch(c, 10 + (uint64_t)b, pev[b], PN, 0), 0);
  }
  for (int b = 0; b < PB; b++) {
    Intake__V1__BatchAck *ack = itest_recv_ack(c, 20000);
    IT_CHECK_INT(ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK);
    IT_CHECK_INT(ack->n_outcomes, PN);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
    for (int i = 0; i < PN; i++)
      itest_event_free(pev[b][i]);
  }
  IT_CHECKF(metric(&d, "intake_backpressure_pauses_total") >= 1, "no pause happened");

  /* A TCP half-close after the last batch (no close_notify): the ack still comes. */
  Intake__V1__Event *hev = event("half-closed", 0);
  IT_CHECK_INT(intake_client_send_batch(c, 30, &hev, 1, 0), 0);
  IT_CHECK(shutdown(intake_client_fd(c), SHUT_WR) == 0);
  Intake__V1__BatchAck *hack = itest_recv_ack(c, 20000);
  IT_CHECK_INT(hack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK);
  intake__v1__batch_ack__free_unpacked(hack, NULL);
  itest_event_free(hev);
  intake_client_msg_t m;
  IT_CHECK_INT(intake_client_recv(c, 5000, &m), -ECONNRESET); /* then closed (close_notify) */
  intake_client_close(c);

  /* A plain-TCP gateway: its HELLO is no TLS record; nothing gets in and it is closed. */
  intake_client_t *p;
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &p), 0);
  expect_refused_hello(p, "gw-plain", "plain TCP to a TLS listener");
  intake_client_close(p);

  /* A gateway that trusts another CA refuses intaked. */
  char err[200] = "";
  IT_CHECK_INT(tls_connect(&d, path(certs, "other-ca.pem"), NULL, &c, err, sizeof err), -EPROTO);
  IT_CHECKF(strstr(err, "certificate verify failed") != NULL, "wrong CA: \"%s\"", err);

  /* A connection that never starts its handshake is closed by hello_timeout (1 s). */
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &p), 0);
  int64_t t0 = itest_mono_ms();
  struct pollfd pf = {intake_client_fd(p), POLLIN, 0};
  IT_CHECK(poll(&pf, 1, 5000) == 1);
  char b[16];
  IT_CHECK(recv(intake_client_fd(p), b, sizeof b, 0) <= 0);
  IT_CHECKF(itest_mono_ms() - t0 < 3000, "closed after %lld ms", (long long)(itest_mono_ms() - t0));
  intake_client_close(p);

  /* Plain TCP, wrong CA, timeout; the readiness probe of itest_daemon_start (connected and
   * closed without a byte) is not a failed handshake. */
  IT_CHECK_INT(metric(&d, "intake_tls_handshake_failures_total"), 3);
  char *line = itest_daemon_wait_log(&d, "TLS handshake failed", 5000);
  IT_CHECK(line != NULL);
  free(line);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
}

static void client_certs(void) {
  /* The server certificate is read from live/, where rotation replaces it. */
  sh("mkdir -p '%s' && cp '%s/server.pem' '%s/server.key' '%s/'", live, certs, certs, live);
  char tmpl[2048];
  snprintf(tmpl, sizeof tmpl,
           "listen:\n  address: 127.0.0.1\n  port: ${PORT}\n"
           "  tls:\n    cert_file: \"%s\"\n    key_file: \"%s\"\n    client_ca_file: \"%s\"\n"
           "    require_client_cert: true\n    match_gateway_id: true\n"
           "kafka: {mode: brokers, brokers: \"${BROKERS}\", delivery_timeout: 20s}\n"
           "routes: {default_topic: ${P}.events, dead_letter_topic: ${P}.dlq}\n",
           path(live, "server.pem"), path(live, "server.key"), path(certs, "ca.pem"));
  itest_daemon_t d;
  itest_daemon_start(&d, "client-certs", tmpl);
  char ca[600], ca2[600]; /* path() recycles its buffers */
  snprintf(ca, sizeof ca, "%s", path(certs, "ca.pem"));
  snprintf(ca2, sizeof ca2, "%s", path(certs2, "ca.pem"));

  /* No certificate, or one from an unrelated CA: refused. */
  intake_client_t *c;
  char err[200] = "";
  int rc = tls_connect(&d, ca, NULL, &c, err, sizeof err);
  if (rc == 0) { /* TLS 1.3: the refusal comes after the client's handshake */
    expect_refused_hello(c, "gw-1", "no client certificate");
    IT_CHECKF(strstr(intake_client_tls_error(c), "certificate required") != NULL, "\"%s\"",
              intake_client_tls_error(c));
    intake_client_close(c);
  }
  rc = tls_connect(&d, ca, "rogue", &c, err, sizeof err);
  if (rc == 0) {
    expect_refused_hello(c, "rogue", "certificate of another CA");
    intake_client_close(c);
  }

  /* A valid certificate whose identity is not the HELLO's gateway_id. */
  IT_CHECK_INT(tls_connect(&d, ca, "gw-1", &c, err, sizeof err), 0);
  intake_client_msg_t m;
  rc = intake_client_hello(c, "gw-2", "", 5000, &m);
  IT_CHECKF(rc == -EPROTO && m.error &&
                m.error->code == INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED,
            "gw-1's certificate, HELLO as gw-2: rc %d", rc);
  intake_client_msg_free(&m);
  IT_CHECK(intake_client_recv(c, 3000, &m) < 0);
  intake_client_close(c);

  /* The right one works; this connection stays open across the rotation below. */
  intake_client_t *old = tls_gateway(&d, ca, "gw-1", "gw-1");
  send_ok(old, 1, "cert-gw1", 1, 0);

  /* Renewed by a new CA: until the reload, intaked still presents the old certificate. */
  IT_CHECKF(tls_connect(&d, ca2, "gw-2", &c, err, sizeof err) == -EPROTO, "before rotation");

  /* A rotation gone wrong (the key of another certificate) is refused whole. */
  sh("cp '%s/gw-1.key' '%s/server.key'", certs, live);
  itest_daemon_signal(&d, SIGHUP);
  char *line = itest_daemon_wait_log(&d, "reload refused", 10000);
  IT_CHECKF(line && strstr(line, "key does not match"), "%s", line ? line : "(no line)");
  free(line);
  intake_client_close(tls_gateway(&d, ca, "gw-2", "gw-2")); /* still the old context */

  /* The right files, then SIGHUP: new connections get the new certificate. */
  sh("cp '%s/server.pem' '%s/server.key' '%s/'", certs2, certs2, live);
  itest_daemon_signal(&d, SIGHUP);
  free(itest_daemon_wait_log(&d, "msg=\"reloaded\"", 10000));
  IT_CHECK_INT(tls_connect(&d, ca, "gw-2", &c, err, sizeof err), -EPROTO);
  c = tls_gateway(&d, ca2, "gw-2", "gw-2");
  send_ok(c, 1, "rotated-gw2", 1, 0);
  intake_client_close(c);
  send_ok(old, 2, "old-session-gw1", 1, 0); /* the open connection was not disturbed */
  intake_client_close(old);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
}

int main(void) {
  itest_init("tls", true, 60);
  int64_t t0 = itest_mono_ms();
  const char *topics[] = {itest_topic("events"), itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 2, 1);
  snprintf(certs, sizeof certs, "%s/pki", itest_dir());
  snprintf(certs2, sizeof certs2, "%s/pki2", itest_dir());
  snprintf(live, sizeof live, "%s/live", itest_dir());
  sh("'%s/tests/tls/make-certs.sh' '%s' gw-1 gw-2 >/dev/null", ITEST_SOURCE_DIR, certs);
  sh("'%s/tests/tls/make-certs.sh' '%s' >/dev/null", ITEST_SOURCE_DIR, certs2);

  server_only();
  client_certs();

  /* In Kafka: exactly what was acked, nothing from the refused connections. */
  const size_t want = 5 + 200 + 8 * 100 + 1 + 1 + 1 + 1;
  itest_records_t rs = itest_consume(itest_bootstrap(), topics[0], want, 20000);
  IT_CHECK_INT(rs.n, want);
  size_t sneaky = 0;
  for (size_t i = 0; i < rs.n; i++) {
    Intake__V1__Event *ev = itest_record_event(&rs.v[i]);
    sneaky += strcmp(ev->event_id, "sneaky") == 0;
    intake__v1__event__free_unpacked(ev, NULL);
  }
  IT_CHECK_INT(sneaky, 0);
  itest_records_free(&rs);
  itest_records_t dlq = itest_consume(itest_bootstrap(), topics[1], 0, 2000);
  IT_CHECK_INT(dlq.n, 0);
  itest_records_free(&dlq);
  itest_log("done in %lld ms", (long long)(itest_mono_ms() - t0));
  itest_finish();
  return 0;
}
