/* Connection lifecycle and admission against the real broker — what a gateway notices:
 * - TCP keepalive is on for gateway sockets (listen.keepalive), so a half-open connection
 *   is found even while batches are in flight;
 * - a silent connection gets ERROR TIMEOUT after listen.idle_timeout and is closed, a busy one
 *   with nothing in flight most of the time is not;
 * - a gateway that half-closes (shutdown(SHUT_WR)) after its last batches still gets every ack,
 *   then the connection is closed;
 * - a slow reader (sends batches, never reads its acks) is no longer read once its unread acks
 *   pass listen.write_backlog: the daemon's memory stays bounded, other gateways are served,
 *   and once it reads, it gets every ack and goes on;
 * - gateway.rate_limit, switched on by a reload: a gateway over it gets RETRY with
 *   retry_after_ms, waits, retransmits, and everything arrives exactly once; another gateway
 *   id is not slowed down by it. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static long rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  IT_CHECK(f != NULL);
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6))
      kib = atol(line + 6);
  fclose(f);
  return kib;
}

/* The kernel's timer on the daemon's side of an established connection to `port` (from
 * /proc/net/tcp: 0 none, 1 retransmit, 2 keepalive, ...), or -1 when not found. */
static int server_socket_timer(uint16_t port) {
  FILE *f = fopen("/proc/net/tcp", "r");
  IT_CHECK(f != NULL);
  char line[512];
  int timer = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned local_port, st, tr;
    if (sscanf(line, " %*d: %*8x:%x %*8x:%*x %x %*x:%*x %x:", &local_port, &st, &tr) == 3 &&
        local_port == port && st == 1 /* ESTABLISHED */)
      timer = (int)tr;
  }
  fclose(f);
  return timer;
}

static Intake__V1__Event *event(const char *source, const char *event_id) {
  return itest_event_new(source, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, event_id, 0,
                         "water.level.high", 2, itest_now_ms());
}

/* `n` events "<prefix>-<i>" of one source. */
static Intake__V1__Event **events(const char *prefix, size_t n) {
  Intake__V1__Event **ev = calloc(n, sizeof *ev);
  IT_CHECK(ev != NULL);
  for (size_t i = 0; i < n; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%zu", prefix, i);
    ev[i] = event("conn-src", id);
  }
  return ev;
}

static void events_free(Intake__V1__Event **ev, size_t n) {
  for (size_t i = 0; i < n; i++)
    itest_event_free(ev[i]);
  free(ev);
}

static void check_ack(Intake__V1__BatchAck *ack, uint64_t seq, size_t n, int outcome) {
  IT_CHECKF(ack->seq == seq && ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK &&
                ack->n_outcomes == n,
            "ack seq %llu status %d outcomes %zu (\"%s\"), want seq %llu OK with %zu",
            (unsigned long long)ack->seq, (int)ack->status, ack->n_outcomes, ack->detail,
            (unsigned long long)seq, n);
  for (size_t i = 0; i < n; i++)
    IT_CHECKF((int)ack->outcomes[i] == outcome, "batch %llu event %zu: outcome %d, want %d",
              (unsigned long long)seq, i, (int)ack->outcomes[i], outcome);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads `topic` and checks it holds exactly `want` records whose event ids are all distinct. */
static void check_exactly_once(const char *topic, size_t want) {
  itest_records_t rs = itest_consume(itest_bootstrap(), topic, want, 30000);
  char **ids = calloc(rs.n + 1, sizeof *ids);
  IT_CHECK(ids != NULL);
  for (size_t i = 0; i < rs.n; i++) {
    Intake__V1__Event *ev = intake__v1__event__unpack(NULL, rs.v[i].value_len, rs.v[i].value);
    IT_CHECK(ev != NULL);
    ids[i] = strdup(ev->event_id);
    intake__v1__event__free_unpacked(ev, NULL);
  }
  qsort(ids, rs.n, sizeof *ids, cmp_str);
  for (size_t i = 1; i < rs.n; i++)
    IT_CHECKF(strcmp(ids[i - 1], ids[i]) != 0, "%s: event %s is in Kafka twice", topic, ids[i]);
  IT_CHECKF(rs.n == want, "%s: %zu records, want %zu", topic, rs.n, want);
  for (size_t i = 0; i < rs.n; i++)
    free(ids[i]);
  free(ids);
  itest_records_free(&rs);
}

/* ---- daemon 1: keepalive, idle timeout, half-close ------------------------------------------ */

static void lifecycle(void) {
  const char *topic = itest_topic("life");
  itest_daemon_t d;
  itest_daemon_start(&d, "life",
                     "listen: {address: 127.0.0.1, port: ${PORT}, idle_timeout: 2s, keepalive: 7s}\n"
                     "kafka: {mode: brokers, brokers: \"${BROKERS}\", delivery_timeout: 20s}\n"
                     "routes: {default_topic: ${P}.life, dead_letter_topic: ${P}.dlq}\n"
                     "dedup: {memory: 16MiB, sequence_memory: 4MiB}\n");
  char admin[64];
  itest_admin_address(&d, admin, sizeof admin);

  /* Keepalive: the kernel runs its keepalive timer on the daemon's socket. */
  intake_client_t *k = itest_connect(&d, "gw-keepalive", NULL);
  int timer = -1;
  for (int i = 0; i < 50 && timer != 2; i++, itest_sleep_ms(20))
    timer = server_socket_timer(d.port);
  IT_CHECKF(timer == 2, "daemon's socket timer is %d, want 2 (keepalive)", timer);

  /* Silence: ERROR TIMEOUT after idle_timeout (2 s), then the connection is closed. */
  int64_t t0 = itest_mono_ms();
  itest_expect_error_and_close(k, INTAKE__V1__ERROR_CODE__ERROR_CODE_TIMEOUT, 10000);
  itest_log("silent connection closed after %lld ms (idle_timeout 2s)",
            (long long)(itest_mono_ms() - t0));
  intake_client_close(k);

  /* Busy is not idle: a batch every 400 ms for 3 s (longer than idle_timeout) keeps the
   * connection, although nothing is in flight most of the time. */
  intake_client_t *busy = itest_connect(&d, "gw-busy", NULL);
  Intake__V1__Event **bev = events("busy", 8);
  for (uint64_t b = 0; b < 8; b++) {
    IT_CHECK_INT(intake_client_send_batch(busy, b + 1, bev + b, 1, 0), 0);
    Intake__V1__BatchAck *ack = itest_recv_ack(busy, 10000); /* fails on an ERROR TIMEOUT */
    check_ack(ack, b + 1, 1, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
    itest_sleep_ms(400);
  }
  events_free(bev, 8);
  intake_client_close(busy);

  /* Half-close: five batches, then shutdown(SHUT_WR) at once; every ack still comes. */
  intake_client_t *h = itest_connect(&d, "gw-halfclose", NULL);
  Intake__V1__Event **ev = events("half", 50);
  for (uint64_t b = 0; b < 5; b++)
    IT_CHECK_INT(intake_client_send_batch(h, b + 1, ev + b * 10, 10, b % 2 ? INTAKE_CLIENT_ZSTD : 0), 0);
  IT_CHECK_INT(shutdown(intake_client_fd(h), SHUT_WR), 0);
  int seen[6] = {0};
  for (int i = 0; i < 5; i++) {
    Intake__V1__BatchAck *ack = itest_recv_ack(h, 30000);
    IT_CHECK(ack->seq >= 1 && ack->seq <= 5 && !seen[ack->seq]);
    seen[ack->seq] = 1;
    check_ack(ack, ack->seq, 10, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
  }
  intake_client_msg_t m;
  IT_CHECK_INT(intake_client_recv(h, 10000, &m), -ECONNRESET); /* then closed */
  intake_client_close(h);
  events_free(ev, 50);

  double timeouts = itest_metric(admin, "intake_connection_timeouts_total");
  IT_CHECKF(timeouts >= 1, "intake_connection_timeouts_total %g", timeouts);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  check_exactly_once(topic, 8 + 50);
}

/* ---- daemon 2: slow reader, then rate limit by reload --------------------------------------- */

#define SLOW_EVENTS 5000

/* Invalid events (no type): each gets a Rejection in the ack, so a 5,000-event batch is
 * answered with ~110 KB and a few unread acks fill the gateway's receive buffer. */
static Intake__V1__Event **invalid_events(size_t n) {
  Intake__V1__Event **ev = calloc(n, sizeof *ev);
  IT_CHECK(ev != NULL);
  for (size_t i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof id, "notype-%zu", i);
    ev[i] = itest_event_new("conn-src", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id, 0, NULL,
                            2, itest_now_ms());
  }
  return ev;
}

static void slow_reader(itest_daemon_t *d, const char *admin) {
  intake_client_t *s = itest_connect(d, "gw-slow", NULL);
  Intake__V1__Event **ev = invalid_events(SLOW_EVENTS);
  long rss0 = rss_kib(d->pid);
  /* Send, never reading an ack, until the daemon reports it stopped reading us. */
  uint64_t sent = 0;
  double pauses = 0;
  int64_t deadline = itest_mono_ms() + 60000;
  while (pauses < 1 && itest_mono_ms() < deadline) {
    struct pollfd p = {.fd = intake_client_fd(s), .events = POLLOUT};
    if (sent < 64 && poll(&p, 1, 100) == 1) {
      IT_CHECK_INT(intake_client_send_batch(s, sent + 1, ev, SLOW_EVENTS, INTAKE_CLIENT_ZSTD), 0);
      sent++;
    } else {
      itest_sleep_ms(100);
    }
    pauses = itest_metric(admin, "intake_slow_reader_pauses_total");
  }
  IT_CHECKF(pauses >= 1, "intake_slow_reader_pauses_total %g after %llu batches of unread acks",
            pauses, (unsigned long long)sent);
  itest_sleep_ms(500); /* whatever it still had buffered is processed now */
  long rss1 = rss_kib(d->pid);
  itest_log("slow reader: the daemon stopped reading it after %llu batches sent (~%llu KB of "
            "acks unread); daemon RSS %ld -> %ld KiB",
            (unsigned long long)sent, (unsigned long long)sent * SLOW_EVENTS * 22 / 1000, rss0,
            rss1);
  /* Bounded: what the daemon holds for it is write_backlog plus one read buffer. */
  IT_CHECKF(rss1 - rss0 < 64 * 1024, "daemon RSS grew by %ld KiB for a slow reader", rss1 - rss0);

  /* Another gateway is served meanwhile. */
  intake_client_t *o = itest_connect(d, "gw-other", NULL);
  Intake__V1__Event *e = event("conn-src", "other-0");
  IT_CHECK_INT(intake_client_send_batch(o, 1, &e, 1, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(o, 15000);
  check_ack(ack, 1, 1, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  itest_event_free(e);
  intake_client_close(o);

  /* The slow reader reads at last: an ack for every batch it sent, nothing lost. */
  for (uint64_t acked = 0; acked < sent; acked++) {
    ack = itest_recv_ack(s, 30000);
    check_ack(ack, ack->seq, SLOW_EVENTS, INTAKE__V1__OUTCOME__OUTCOME_REJECTED);
    IT_CHECK_INT(ack->n_rejections, SLOW_EVENTS);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
  }
  /* ... and the daemon reads it again. */
  Intake__V1__Event **more = events("slow-more", 10);
  IT_CHECK_INT(intake_client_send_batch(s, sent + 1, more, 10, INTAKE_CLIENT_ZSTD), 0);
  ack = itest_recv_ack(s, 30000);
  check_ack(ack, sent + 1, 10, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  events_free(more, 10);
  events_free(ev, SLOW_EVENTS);
  intake_client_close(s);
}

#define RATE 2000
#define BURST 1000
#define LIMITED_BATCHES 10
#define LIMITED_BATCH 500

static const char *daemon2_yaml =
    "listen: {address: 127.0.0.1, port: ${PORT}, write_backlog: 4KiB}\n"
    "gateway: {max_in_flight_batches: 64, max_batch_events: 5000%s}\n"
    "kafka: {mode: brokers, brokers: \"${BROKERS}\", delivery_timeout: 20s}\n"
    "routes: {default_topic: ${P}.admit, dead_letter_topic: ${P}.dlq}\n"
    "dedup: {memory: 16MiB, sequence_memory: 4MiB}\n";

static void rate_limit(itest_daemon_t *d, const char *admin) {
  /* Switch the limit on by a reload: the file keeps the daemon's port. */
  char extra[128];
  snprintf(extra, sizeof extra, ", rate_limit: %d, rate_burst: %d", RATE, BURST);
  FILE *f = fopen(d->config_path, "r");
  IT_CHECK(f != NULL);
  char old[2048];
  size_t n = fread(old, 1, sizeof old - 1, f);
  old[n] = '\0';
  fclose(f);
  /* The running file has ${PORT}, ${BROKERS} and ${P} filled in: keep its other lines. */
  const char *was = "max_batch_events: 5000}";
  char *gw = strstr(old, was);
  IT_CHECK(gw != NULL);
  char next[2048];
  snprintf(next, sizeof next, "%.*smax_batch_events: 5000%s}%s", (int)(gw - old), old, extra,
           gw + strlen(was));
  f = fopen(d->config_path, "w");
  IT_CHECK(f != NULL);
  fputs(next, f);
  fclose(f);
  itest_daemon_signal(d, SIGHUP);
  char *line = itest_daemon_wait_log(d, "msg=\"reloaded\"", 10000);
  IT_CHECKF(line != NULL, "no reload");
  free(line);

  /* gw-limited sends 5,000 events in batches of 500 as fast as it is allowed: the bucket
   * holds 1,000, then 2,000 a second. Every RETRY says how long to wait. */
  intake_client_t *c = itest_connect(d, "gw-limited", NULL);
  Intake__V1__Event **ev = events("limited", LIMITED_BATCHES * LIMITED_BATCH);
  int64_t t0 = itest_mono_ms();
  unsigned throttled = 0;
  int other_checked = 0;
  for (uint64_t b = 0; b < LIMITED_BATCHES; b++) {
    for (;;) {
      IT_CHECK_INT(intake_client_send_batch(c, b + 1, ev + b * LIMITED_BATCH, LIMITED_BATCH, 0), 0);
      Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
      IT_CHECK_INT(ack->seq, b + 1);
      if (ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK) {
        check_ack(ack, b + 1, LIMITED_BATCH, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
        intake__v1__batch_ack__free_unpacked(ack, NULL);
        break;
      }
      IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY &&
                    ack->retry_after_ms > 0 && ack->retry_after_ms <= 1000 &&
                    strstr(ack->detail, "rate limited") && ack->n_outcomes == 0,
                "batch %llu: status %d retry_after_ms %u detail \"%s\"", (unsigned long long)b + 1,
                (int)ack->status, ack->retry_after_ms, ack->detail);
      throttled++;
      uint32_t wait = ack->retry_after_ms;
      intake__v1__batch_ack__free_unpacked(ack, NULL);
      if (!other_checked) {
        /* While gw-limited is held back, another gateway id is not. */
        other_checked = 1;
        intake_client_t *o = itest_connect(d, "gw-unlimited", NULL);
        Intake__V1__Event **oe = events("unlimited", LIMITED_BATCH);
        IT_CHECK_INT(intake_client_send_batch(o, 1, oe, LIMITED_BATCH, INTAKE_CLIENT_ZSTD), 0);
        Intake__V1__BatchAck *oa = itest_recv_ack(o, 30000);
        check_ack(oa, 1, LIMITED_BATCH, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
        intake__v1__batch_ack__free_unpacked(oa, NULL);
        events_free(oe, LIMITED_BATCH);
        intake_client_close(o);
      }
      itest_sleep_ms((int)wait);
    }
  }
  int64_t ms = itest_mono_ms() - t0;
  itest_log("rate limit %d/s, burst %d: %d events in %lld ms (%.0f events/s), %u batches "
            "answered RETRY first",
            RATE, BURST, LIMITED_BATCHES * LIMITED_BATCH, (long long)ms,
            LIMITED_BATCHES * LIMITED_BATCH * 1000.0 / (double)(ms ? ms : 1), throttled);
  IT_CHECKF(throttled > 0, "gw-limited was never slowed down");
  IT_CHECKF(other_checked, "no RETRY, so the other gateway was not tried while limited");
  IT_CHECK_INT(itest_metric(admin, "intake_batches_throttled_total"), throttled);
  IT_CHECK_INT(itest_metric(admin, "intake_gateway_batches_throttled_total{gateway=\"gw-limited\"}"),
               throttled);
  IT_CHECK_INT(itest_metric(admin, "intake_gateway_batches_throttled_total{gateway=\"gw-unlimited\"}"),
               0);
  events_free(ev, LIMITED_BATCHES * LIMITED_BATCH);
  intake_client_close(c);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  itest_init("conn", true, 240);
  const char *topics[] = {itest_topic("life"), itest_topic("admit"), itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 3, 2);

  lifecycle();

  char yaml[1024];
  snprintf(yaml, sizeof yaml, daemon2_yaml, "");
  itest_daemon_t d;
  itest_daemon_start(&d, "admit", yaml);
  char admin[64];
  itest_admin_address(&d, admin, sizeof admin);
  slow_reader(&d, admin);
  rate_limit(&d, admin);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  check_exactly_once(topics[1], 1 + 10 + LIMITED_BATCHES * LIMITED_BATCH + LIMITED_BATCH);
  itest_finish();
  return 0;
}
