/* The admin endpoints of a real intaked against the real broker:
 * - /metrics after a known mix of events (accepted with fan-out, duplicates, rejected) from two
 *   gateways: totals, per gateway, per topic, per route and per reject reason match what was
 *   sent and reconcile; the latency histogram is cumulative and ends with +Inf = count; every
 *   family has HELP and TYPE; label values are escaped; content type 0.0.4;
 * - /healthz 200, /readyz 200 with the live broker; HEAD; 404; 405 with Allow; 413; the reload
 *   endpoint: 200 for a valid config, 400 (and the old config kept) for an invalid one;
 * - a second intaked pointed at a dead broker (logging JSON): /readyz 503 while /healthz is
 *   200, then 503 "shutting down" while it drains after SIGTERM; its log is JSON lines. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"

static const char CONFIG[] =
    "listen:\n"
    "  port: ${PORT}\n"
    "admin:\n"
    "  port: 0\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "  rules:\n"
    "    - name: fire\n"
    "      match: {type: smoke.alarm}\n"
    "      topics: [${P}.fire, ${P}.urgent]\n";

static void expect(const char *addr, const char *method, const char *path, int status,
                   const char *body_prefix) {
  itest_http_t h = itest_http(addr, method, path, 0);
  IT_CHECKF(h.status == status, "%s %s: status %d, want %d (%s)", method, path, h.status, status,
            h.body);
  if (body_prefix)
    IT_CHECKF(!strncmp(h.body, body_prefix, strlen(body_prefix)), "%s %s: body \"%s\", want \"%s\"",
              method, path, h.body, body_prefix);
  itest_http_free(&h);
}

/* ---- metrics ------------------------------------------------------------------------------- */

/* The value of the sample whose text before the value is exactly `series`, or -1. */
static double metric(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (!strncmp(p, series, n) && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  }
  return -1;
}

static uint64_t m(const char *text, const char *series) {
  double v = metric(text, series);
  IT_CHECKF(v >= 0, "no sample %s in /metrics", series);
  return (uint64_t)v;
}

/* Every sample's family has # HELP and # TYPE lines before it; histograms' suffixes count as
 * their family. */
static void check_exposition(const char *text) {
  char *copy = strdup(text);
  int samples = 0;
  for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#')
      continue;
    char fam[128];
    size_t n = strcspn(line, "{ ");
    IT_CHECK(n > 0 && n < sizeof fam);
    memcpy(fam, line, n);
    fam[n] = '\0';
    const char *suffixes[] = {"_bucket", "_sum", "_count"};
    char type_line[200];
    snprintf(type_line, sizeof type_line, "# TYPE %s ", fam);
    if (!strstr(text, type_line)) {
      for (int i = 0; i < 3; i++) {
        size_t sl = strlen(suffixes[i]);
        if (n > sl && !strcmp(fam + n - sl, suffixes[i])) {
          fam[n - sl] = '\0';
          snprintf(type_line, sizeof type_line, "# TYPE %s histogram", fam);
        }
      }
    }
    IT_CHECKF(strstr(text, type_line) != NULL, "no TYPE line for %s", line);
    char help[200];
    snprintf(help, sizeof help, "# HELP %s ", fam);
    IT_CHECKF(strstr(text, help) != NULL, "no HELP line for %s", line);
    samples++;
  }
  free(copy);
  IT_CHECK(samples > 50);
}

static void check_histogram(const char *text, uint64_t want_count) {
  static const char *les[] = {"0.001", "0.002", "0.005", "0.01", "0.025", "0.05", "0.1",
                              "0.25",  "0.5",   "1",     "2.5",  "5",     "10",  "+Inf"};
  uint64_t prev = 0;
  for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
    char series[96];
    snprintf(series, sizeof series, "intake_delivery_latency_seconds_bucket{le=\"%s\"}", les[i]);
    uint64_t v = m(text, series);
    IT_CHECKF(v >= prev, "bucket le=%s (%llu) below the one before (%llu): not cumulative", les[i],
              (unsigned long long)v, (unsigned long long)prev);
    prev = v;
  }
  uint64_t count = m(text, "intake_delivery_latency_seconds_count");
  IT_CHECK_INT(prev, count);
  IT_CHECK_INT(count, want_count);
  double sum = metric(text, "intake_delivery_latency_seconds_sum");
  IT_CHECKF(sum >= 0 && sum < (double)count * 30, "latency sum %f s for %llu events", sum,
            (unsigned long long)count);
}

/* ---- events -------------------------------------------------------------------------------- */

static void send_batch(intake_client_t *c, uint64_t seq, Intake__V1__Event **ev, size_t n,
                       int want_outcome_dup, size_t want_rejected) {
  IT_CHECK(intake_client_send_batch(c, seq, ev, n, 0) == 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 20000);
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "batch %llu: status %d %s",
            (unsigned long long)seq, ack->status, ack->detail);
  size_t dups = 0;
  for (size_t i = 0; i < ack->n_outcomes; i++)
    dups += ack->outcomes[i] == INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE;
  IT_CHECK_INT(dups, want_outcome_dup ? n - want_rejected : 0);
  IT_CHECK_INT(ack->n_rejections, want_rejected);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
}

static void admin_address(const itest_daemon_t *d, char *out, size_t len) {
  char *line = itest_daemon_wait_log(d, "admin listening", 10000);
  IT_CHECKF(line != NULL, "no \"admin listening\" line");
  const char *a = strstr(line, "address");
  IT_CHECK(a != NULL);
  a += strlen("address") + 1;
  if (*a == '"' || *a == ':')
    a += *a == ':' ? 2 : 1; /* JSON: "address":"…" */
  size_t n = strcspn(a, "\" ");
  IT_CHECK(n < len);
  memcpy(out, a, n);
  out[n] = '\0';
  free(line);
}

static void wait_ready(const char *addr, int status, const char *prefix) {
  int64_t deadline = itest_mono_ms() + 15000;
  for (;;) {
    itest_http_t h = itest_http(addr, "GET", "/readyz", 0);
    int ok = h.status == status && !strncmp(h.body, prefix, strlen(prefix));
    if (ok || itest_mono_ms() > deadline)
      IT_CHECKF(ok, "/readyz: %d \"%s\", want %d \"%s\"", h.status, h.body, status, prefix);
    itest_http_free(&h);
    if (ok)
      return;
    itest_sleep_ms(200);
  }
}

int main(void) {
  itest_init("admin", true, 150);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);
  char addr[64];
  admin_address(&d, addr, sizeof addr);
  itest_log("admin at %s", addr);

  expect(addr, "GET", "/healthz", 200, "ok");
  wait_ready(addr, 200, "ready");
  expect(addr, "HEAD", "/healthz", 200, "");
  expect(addr, "GET", "/nope", 404, "not found");
  expect(addr, "GET", "/metrics/x", 404, NULL);
  expect(addr, "POST", "/-/reload", 200, "reloaded");
  {
    /* A config that fails validation: 400 with the error; the running config stays. */
    char *good = NULL;
    size_t good_len = 0;
    FILE *f = fopen(d.config_path, "r");
    IT_CHECK(f != NULL);
    FILE *mem = open_memstream(&good, &good_len);
    int ch;
    while ((ch = fgetc(f)) != EOF)
      fputc(ch, mem);
    fclose(f);
    fclose(mem);
    f = fopen(d.config_path, "a");
    fputs("bogus_section: 1\n", f);
    fclose(f);
    expect(addr, "POST", "/-/reload", 400, NULL);
    char *line = itest_daemon_wait_log(&d, "reload refused", 10000);
    IT_CHECKF(strstr(line, "bogus_section") != NULL, "refusal does not name the key: %s", line);
    free(line);
    f = fopen(d.config_path, "w");
    fwrite(good, 1, good_len, f);
    fclose(f);
    free(good);
  }
  itest_http_t h = itest_http(addr, "POST", "/metrics", 0);
  IT_CHECK_INT(h.status, 405);
  IT_CHECKF(strstr(h.headers, "Allow: GET, HEAD") != NULL, "405 without Allow: %s", h.headers);
  itest_http_free(&h);
  h = itest_http(addr, "GET", "/-/reload", 0);
  IT_CHECK_INT(h.status, 405);
  IT_CHECKF(strstr(h.headers, "Allow: POST") != NULL, "405 without Allow: %s", h.headers);
  itest_http_free(&h);
  h = itest_http(addr, "POST", "/-/reload", 100000);
  IT_CHECK_INT(h.status, 413);
  itest_http_free(&h);

  /* Two gateways, one with characters that need escaping in a label value. */
  const char *gw1 = "gw-admin", *gw2 = "gw\"quote\\slash";
  intake_client_t *c1 = itest_connect(&d, gw1, NULL), *c2 = itest_connect(&d, gw2, NULL);
  int64_t now = itest_now_ms();
  enum { N1 = 12, N2 = 5 };
  Intake__V1__Event *a[N1], *b[N2];
  for (int i = 0; i < N1; i++) { /* every third is a smoke alarm: fire + urgent (fan-out) */
    char id[16];
    snprintf(id, sizeof id, "a-%d", i);
    a[i] = itest_event_new("src-a", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id, 0,
                           i % 3 == 0 ? "smoke.alarm" : "water.level", 2, now - 1000);
  }
  for (int i = 0; i < N2; i++) {
    char id[16];
    snprintf(id, sizeof id, "b-%d", i);
    /* b-3 and b-4 have no type: rejected (missing_type) */
    b[i] = itest_event_new("src-b", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA, id, 0,
                           i >= 3 ? NULL : "gb28181.alarm.6", 1, now - 1000);
  }
  send_batch(c1, 1, a, N1, 0, 0);
  send_batch(c1, 2, a, N1, 1, 0); /* the same events again: all duplicates */
  send_batch(c2, 1, b, N2, 0, 2);

  itest_http_t mh = itest_http(addr, "GET", "/metrics", 0);
  IT_CHECK_INT(mh.status, 200);
  IT_CHECKF(strstr(mh.headers, "Content-Type: text/plain; version=0.0.4") != NULL,
            "content type: %s", mh.headers);
  const char *t = mh.body;
  check_exposition(t);
  uint64_t received = m(t, "intake_events_received_total"),
           delivered = m(t, "intake_events_delivered_total"),
           duplicate = m(t, "intake_events_duplicate_total"),
           rejected = m(t, "intake_events_rejected_total"),
           failed = m(t, "intake_events_failed_total"), in_flight = m(t, "intake_events_in_flight");
  IT_CHECK_INT(received, 2 * N1 + N2);
  IT_CHECK_INT(delivered, N1 + 3);
  IT_CHECK_INT(duplicate, N1);
  IT_CHECK_INT(rejected, 2);
  IT_CHECK_INT(failed, 0);
  IT_CHECK_INT(in_flight, 0);
  IT_CHECK_INT(received, delivered + duplicate + rejected + failed + in_flight);
  IT_CHECK_INT(m(t, "intake_events_rejected_by_reason_total{reason=\"missing_type\"}"), 2);
  IT_CHECK_INT(m(t, "intake_events_rejected_by_reason_total{reason=\"bad_time\"}"), 0);
  IT_CHECK_INT(m(t, "intake_batches_received_total"), 3);
  IT_CHECK_INT(m(t, "intake_batches_answered_total{status=\"ok\"}"), 3);
  IT_CHECK_INT(m(t, "intake_batches_answered_total{status=\"retry\"}"), 0);
  IT_CHECK_INT(m(t, "intake_batches_in_flight"), 0);

  IT_CHECK_INT(m(t, "intake_gateway_events_received_total{gateway=\"gw-admin\"}"), 2 * N1);
  IT_CHECK_INT(m(t, "intake_gateway_events_delivered_total{gateway=\"gw-admin\"}"), N1);
  IT_CHECK_INT(m(t, "intake_gateway_events_duplicate_total{gateway=\"gw-admin\"}"), N1);
  IT_CHECK_INT(m(t, "intake_gateway_events_received_total{gateway=\"gw\\\"quote\\\\slash\"}"), N2);
  IT_CHECK_INT(m(t, "intake_gateway_events_rejected_total{gateway=\"gw\\\"quote\\\\slash\"}"), 2);
  IT_CHECK_INT(m(t, "intake_gateway_events_in_flight{gateway=\"gw-admin\"}"), 0);

  /* Records: 4 smoke alarms to fire and urgent, 8 + 3 to the default topic, 2 dead letters. */
  char series[256];
#define TOPIC_SAMPLE(fam, suffix) \
  (snprintf(series, sizeof series, "%s{topic=\"%s\"}", fam, itest_topic(suffix)), m(t, series))
  IT_CHECK_INT(TOPIC_SAMPLE("intake_topic_records_produced_total", "fire"), 4);
  IT_CHECK_INT(TOPIC_SAMPLE("intake_topic_records_delivered_total", "urgent"), 4);
  IT_CHECK_INT(TOPIC_SAMPLE("intake_topic_records_produced_total", "events"), 11);
  IT_CHECK_INT(TOPIC_SAMPLE("intake_topic_records_failed_total", "events"), 0);
  IT_CHECK_INT(TOPIC_SAMPLE("intake_topic_records_in_flight", "events"), 0);
  IT_CHECK_INT(TOPIC_SAMPLE("intake_topic_records_delivered_total", "dlq"), 2);
  IT_CHECK_INT(m(t, "intake_route_records_total{route=\"fire\"}"), 8);
  IT_CHECK_INT(m(t, "intake_route_records_total{route=\"default\"}"), 11);
  IT_CHECK_INT(m(t, "intake_records_delivered_total"), 8 + 11);
  IT_CHECK_INT(m(t, "intake_dead_letter_records_delivered_total"), 2);

  check_histogram(t, delivered);
  IT_CHECK_INT(m(t, "intake_dedup_entries"), N1 + 3);
  IT_CHECK(m(t, "intake_dedup_capacity") > 0);
  IT_CHECK(m(t, "intake_dedup_memory_bytes") > 0);
  IT_CHECK_INT(m(t, "intake_dedup_evictions_total"), 0);
  IT_CHECK_INT(m(t, "intake_dedup_forced_evictions_total"), 0);
  IT_CHECK_INT(m(t, "intake_dedup_commits_total"), N1 + 3);
  /* the table holds the whole (default) window */
  IT_CHECK(metric(t, "intake_dedup_effective_window_seconds") == 600);
  IT_CHECK(metric(t, "intake_dedup_window_seconds") == 600);
  /* the loop's iterations: a histogram whose +Inf bucket counts them all */
  uint64_t iterations = m(t, "intake_loop_busy_seconds_count");
  IT_CHECK(iterations > 0);
  IT_CHECK_INT(m(t, "intake_loop_busy_seconds_bucket{le=\"+Inf\"}"), iterations);
  IT_CHECK(m(t, "intake_loop_busy_seconds_bucket{le=\"0.001\"}") <= iterations);
  IT_CHECK(metric(t, "intake_loop_busy_max_seconds") > 0);
  IT_CHECK(metric(t, "intake_loop_cpu_max_seconds") > 0);
  IT_CHECK_INT(m(t, "intake_kafka_queue_depth"), 0);
  IT_CHECK_INT(m(t, "intake_kafka_ready"), 1);
  IT_CHECK_INT(m(t, "intake_connections"), 2);
  IT_CHECK(m(t, "intake_connections_accepted_total") >= 2); /* + the harness's port probe */
  IT_CHECK_INT(m(t, "intake_protocol_errors_total"), 0);
  IT_CHECK(strstr(t, "intake_build_info{version=\"") != NULL);
  double start = metric(t, "intake_process_start_time_seconds");
  IT_CHECKF(start > (double)now / 1000 - 120 && start <= (double)now / 1000 + 1,
            "start time %f, now %lld", start, (long long)now);
  itest_http_free(&mh);
  intake_client_close(c1);
  intake_client_close(c2);
  for (int i = 0; i < N1; i++)
    itest_event_free(a[i]);
  for (int i = 0; i < N2; i++)
    itest_event_free(b[i]);

  /* A daemon whose broker is dead: alive, not ready; then draining: not ready either. */
  char dead_cfg[1024];
  snprintf(dead_cfg, sizeof dead_cfg,
           "listen:\n  port: ${PORT}\nadmin:\n  port: 0\nlog:\n  format: json\n"
           "kafka:\n  mode: brokers\n  brokers: 127.0.0.1:%u\n  delivery_timeout: 4s\n"
           "routes:\n  default_topic: ${P}.dead\n  dead_letter_topic: ${P}.deaddlq\n",
           itest_closed_port());
  itest_daemon_t dead;
  itest_daemon_start(&dead, "dead", dead_cfg);
  char dead_addr[64];
  admin_address(&dead, dead_addr, sizeof dead_addr);
  expect(dead_addr, "GET", "/healthz", 200, "ok");
  itest_sleep_ms(1500); /* past the first statistics */
  wait_ready(dead_addr, 503, "not ready: no Kafka broker reachable");
  intake_client_t *c3 = itest_connect(&dead, "gw-dead", NULL);
  Intake__V1__Event *e = itest_event_new("src-c", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR,
                                         "c-1", 0, "smoke.alarm", 1, now);
  IT_CHECK(intake_client_send_batch(c3, 1, &e, 1, 0) == 0);
  itest_sleep_ms(200);
  itest_daemon_signal(&dead, SIGTERM);
  wait_ready(dead_addr, 503, "not ready: shutting down");
  expect(dead_addr, "GET", "/healthz", 200, "ok");
  Intake__V1__BatchAck *ack = itest_recv_ack(c3, 20000);
  IT_CHECK_INT(ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  intake_client_close(c3);
  itest_event_free(e);
  IT_CHECK_INT(itest_daemon_wait(&dead, 20000), 0);

  /* log.format: json: every line is one JSON object. */
  char *log = itest_daemon_log(&dead);
  int lines = 0;
  for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n"), lines++)
    IT_CHECKF(!strncmp(line, "{\"ts\":\"", 7) && line[strlen(line) - 1] == '}',
              "not a JSON log line: %s", line);
  IT_CHECK(lines >= 4);
  free(log);

  IT_CHECK_INT(itest_daemon_stop(&d, 20000), 0);
  itest_finish();
  return 0;
}
