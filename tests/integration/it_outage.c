/* The Kafka broker stopped for 30 s mid-stream, then started again on the same ports and data:
 * acks stop and resume, every accepted event lands exactly once, memory stays bounded.
 *
 * The test runs its own broker (tests/kafka/kafka.sh start/kill/restart on a state dir of its
 * own), so the shared fixture broker is never disturbed; a guardian process kills it if the
 * test dies. A gateway thread sends 50-event batches every 20 ms with a window of 64 unacked
 * batches, retransmitting any batch answered RETRY (none is expected: kafka.delivery_timeout is
 * 90 s and librdkafka retries internally). intaked's producer queue is small
 * (queue.buffering.max.messages 4000: it stops reading a gateway above 2000 records in flight),
 * so during the outage the connection stops being read and the gateway blocks on its window.
 *
 * Checked: no OK ack between 2 s after the broker's SIGKILL and its restart (an ack needs Kafka;
 * the 2 s let acks already on their way arrive); acks resume after the restart; the gateway made
 * no progress during the outage (it was blocked, not buffered into intaked); intaked's RSS
 * (/proc/PID/status VmRSS every 200 ms) grew by less than 32 MiB over the outage; the stats
 * line never shows more events in flight than the pipeline's bound; and at the end every event
 * sent was acked OK and is in Kafka exactly once (idempotent producer). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "itest.h"

#define EVENTS 50
#define WINDOW 64
#define MAX_BATCHES 6000
#define SEND_EVERY_MS 20
#define OUTAGE_MS 30000
#define RSS_LIMIT_KIB (32 * 1024)
#define IN_FLIGHT_BOUND 2100 /* high water (4000 * 9/10 - 100 * 16 = 2000) + one batch */

static const char CONFIG_FMT[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "gateway:\n"
    "  max_in_flight_batches: 64\n"
    "  max_batch_events: 100\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: %s\n"
    "  delivery_timeout: 90s\n"
    "  properties:\n"
    "    linger.ms: 5\n"
    "    queue.buffering.max.messages: 4000\n"
    "    reconnect.backoff.max.ms: 1000\n"
    "dedup:\n"
    "  memory: 16MiB\n"
    "  sequence_memory: 4MiB\n"
    "log:\n"
    "  stats_interval: 1s\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "admin:\n"
    "  port: 0\n";

static char kafka_dir[512], kafka_sh[512];

typedef struct {
  ProtobufCBinaryData ev[EVENTS];
  int acked;                   /* OK ack received */
} batch_t;

static batch_t *batches;

static struct {
  intake_client_t *c;
  atomic_int stop;             /* main: send no new batch, finish the outstanding ones */
  atomic_int done;             /* the thread: everything sent is acked */
  atomic_ullong sent;          /* new batches sent */
  atomic_ullong acked;         /* OK acks */
  atomic_ullong retries;       /* RETRY acks (batch sent again) */
  atomic_llong last_ack_ms;    /* wall clock of the latest OK ack */
  int64_t ack_ms[MAX_BATCHES]; /* wall clock of each batch's OK ack */
  int seq_batch[2 * MAX_BATCHES]; /* seq - 1 -> batch index */
  uint64_t next_seq;
  char failure[256];            /* why the thread stopped, once `failed` is set */
  atomic_int failed;
} g;

static void make_batch(int b) {
  for (int i = 0; i < EVENTS; i++) {
    char src[32], id[32];
    snprintf(src, sizeof src, "outage-src-%02d", i % 20);
    snprintf(id, sizeof id, "b%05d-e%02d", b, i);
    Intake__V1__Event *ev = itest_event_new(src, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id,
                                            0, "gas.alarm", 1, itest_now_ms() - 500);
    batches[b].ev[i] = itest_event_pack(ev);
    itest_event_free(ev);
  }
}

static int send_batch(int b) {
  uint64_t seq = g.next_seq++;
  g.seq_batch[seq - 1] = b;
  return intake_client_send_batch_encoded(g.c, seq, batches[b].ev, EVENTS, 0);
}

/* The gateway: sends a batch every SEND_EVERY_MS while its window allows, reads acks,
 * retransmits RETRY. Failures are reported through g.failure (checked by main). */
static void *gateway(void *arg) {
  (void)arg;
  int next = 0, outstanding = 0;
  int64_t next_send = itest_mono_ms();
  for (;;) {
    bool stopping = atomic_load(&g.stop);
    if (stopping && outstanding == 0)
      break;
    if (!stopping && outstanding < WINDOW && itest_mono_ms() >= next_send && next < MAX_BATCHES) {
      make_batch(next);
      int rc = send_batch(next);
      if (rc < 0) {
        snprintf(g.failure, sizeof g.failure, "send batch %d: %s", next, strerror(-rc));
        break;
      }
      next++;
      outstanding++;
      atomic_store(&g.sent, (unsigned long long)next);
      next_send += SEND_EVERY_MS;
      if (next_send < itest_mono_ms() - SEND_EVERY_MS)
        next_send = itest_mono_ms(); /* after a stall: the same pace, no burst */
      continue;
    }
    intake_client_msg_t m;
    int rc = intake_client_recv(g.c, SEND_EVERY_MS, &m);
    if (rc == -ETIMEDOUT)
      continue;
    if (rc < 0 || !m.ack) {
      snprintf(g.failure, sizeof g.failure, "receive: %s (frame type %u)", strerror(-rc),
               rc == 0 ? m.type : 0);
      intake_client_msg_free(&m);
      break;
    }
    Intake__V1__BatchAck *ack = m.ack;
    int b = g.seq_batch[ack->seq - 1];
    if (ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY) {
      atomic_fetch_add(&g.retries, 1);
      intake_client_msg_free(&m);
      if ((rc = send_batch(b)) < 0) {
        snprintf(g.failure, sizeof g.failure, "retransmit batch %d: %s", b, strerror(-rc));
        break;
      }
      continue;
    }
    if (ack->status != INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK || ack->n_outcomes != EVENTS) {
      snprintf(g.failure, sizeof g.failure, "batch %d: status %d, %zu outcomes (%s)", b,
               ack->status, ack->n_outcomes, ack->detail);
      intake_client_msg_free(&m);
      break;
    }
    for (size_t i = 0; i < ack->n_outcomes; i++)
      if (ack->outcomes[i] == INTAKE__V1__OUTCOME__OUTCOME_REJECTED) {
        snprintf(g.failure, sizeof g.failure, "batch %d event %zu rejected", b, i);
        break;
      }
    intake_client_msg_free(&m);
    if (g.failure[0])
      break;
    int64_t now = itest_now_ms();
    batches[b].acked = 1;
    g.ack_ms[b] = now;
    atomic_store(&g.last_ack_ms, now);
    atomic_fetch_add(&g.acked, 1);
    outstanding--;
  }
  if (g.failure[0])
    atomic_store(&g.failed, 1);
  atomic_store(&g.done, 1);
  return NULL;
}

/* ---- the broker ---------------------------------------------------------------------------- */

static void kafka(const char *verb) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "bash '%s' %s '%s' > '%s/kafka-%s.out' 2>&1", kafka_sh, verb,
           kafka_dir, itest_dir(), verb);
  int rc = system(cmd);
  IT_CHECKF(rc == 0, "kafka.sh %s %s failed (%d); see %s/kafka-%s.out and %s/broker.log", verb,
            kafka_dir, rc, itest_dir(), verb, kafka_dir);
}

/* A process that kills the broker if the test dies first (itest_fail exits at once). */
static pid_t guardian;
static void on_parent_death(int sig) {
  (void)sig;
  char *argv[] = {"bash", kafka_sh, "kill", kafka_dir, NULL};
  execvp("bash", argv);
  _exit(1);
}

static void start_guardian(void) {
  fflush(NULL);
  guardian = fork();
  IT_CHECK(guardian >= 0);
  if (guardian == 0) {
    signal(SIGTERM, on_parent_death);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
      on_parent_death(0);
    for (;;)
      pause();
  }
}

static void stop_guardian(void) {
  kill(guardian, SIGKILL);
  waitpid(guardian, NULL, 0);
}

/* ---- intaked's memory and counters ---------------------------------------------------------- */

static long rss_kib(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  IT_CHECKF(f != NULL, "%s: %s", path, strerror(errno));
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  fclose(f);
  IT_CHECK(kib > 0);
  return kib;
}

/* `key` of the last stats line, 0 before the first. */
static uint64_t last_stat(const itest_daemon_t *d, const char *key) {
  char *log = itest_daemon_log(d);
  char *line = itest_log_last_line(log, "msg=\"stats\"");
  free(log);
  uint64_t v = 0;
  IT_CHECKF(!line || itest_logfmt_u64(line, key, &v), "stats line without %s=: %s", key, line);
  free(line);
  return v;
}

static void check_gateway(void) {
  IT_CHECKF(!atomic_load(&g.failed), "gateway: %s", g.failure);
}

/* Sleeps `ms` while sampling intaked's RSS and in-flight count; returns the peak RSS. */
static long watch(const itest_daemon_t *d, int ms, uint64_t *max_in_flight) {
  long peak = 0;
  int64_t end = itest_mono_ms() + ms;
  while (itest_mono_ms() < end) {
    long r = rss_kib(d->pid);
    if (r > peak)
      peak = r;
    uint64_t f = last_stat(d, "in_flight");
    if (f > *max_in_flight)
      *max_in_flight = f;
    check_gateway();
    itest_sleep_ms(200);
  }
  return peak;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(void) {
  itest_init("outage", false, 170);
  int64_t t_begin = itest_mono_ms();
  snprintf(kafka_sh, sizeof kafka_sh, "%s/tests/kafka/kafka.sh", ITEST_SOURCE_DIR);
  snprintf(kafka_dir, sizeof kafka_dir, "%s/kafka", itest_dir());
  batches = calloc(MAX_BATCHES, sizeof *batches);
  IT_CHECK(batches != NULL);

  start_guardian();
  kafka("start");
  char path[600], bootstrap[128] = "";
  snprintf(path, sizeof path, "%s/bootstrap", kafka_dir);
  FILE *f = fopen(path, "r");
  IT_CHECK(f && fgets(bootstrap, sizeof bootstrap, f));
  fclose(f);
  bootstrap[strcspn(bootstrap, "\r\n")] = '\0';
  itest_log("own broker %s started in %lld ms", bootstrap, (long long)(itest_mono_ms() - t_begin));
  const char *topic = itest_topic("events");
  const char *topics[] = {topic, itest_topic("dlq")};
  itest_create_topics(bootstrap, topics, 2, 4);

  static char config[2048];
  snprintf(config, sizeof config, CONFIG_FMT, bootstrap);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", config);
  uint32_t window;
  g.c = itest_connect(&d, "gw-outage", &window);
  IT_CHECK_INT(window, WINDOW);
  g.next_seq = 1;
  pthread_t th;
  IT_CHECK(pthread_create(&th, NULL, gateway, NULL) == 0);

  /* Traffic flows. */
  uint64_t max_in_flight = 0;
  watch(&d, 4000, &max_in_flight);
  long rss_before = rss_kib(d.pid);
  unsigned long long acked_before = atomic_load(&g.acked);
  IT_CHECKF(acked_before > 50, "only %llu batches acked before the outage", acked_before);

  /* The outage. */
  kafka("kill");
  int64_t t_kill = itest_now_ms(), m_kill = itest_mono_ms();
  itest_log("broker killed; %llu batches sent, %llu acked before", (unsigned long long)g.sent,
            acked_before);
  long peak = watch(&d, 5000, &max_in_flight);
  unsigned long long sent_blocked = atomic_load(&g.sent), acked_blocked = atomic_load(&g.acked);
  long p2 = watch(&d, OUTAGE_MS - (int)(itest_mono_ms() - m_kill), &max_in_flight);
  peak = p2 > peak ? p2 : peak;
  unsigned long long sent_end = atomic_load(&g.sent);
  int64_t t_restart = itest_now_ms();
  itest_log("after %lld ms down: %llu batches sent (%llu at +5 s), %llu acked; RSS %ld -> peak "
            "%ld KiB; in flight at most %llu events",
            (long long)(t_restart - t_kill), sent_end, sent_blocked, (unsigned long long)g.acked,
            rss_before, peak, (unsigned long long)max_in_flight);
  IT_CHECKF(sent_end == sent_blocked, "the gateway kept sending during the outage (%llu -> %llu): "
            "intaked was not pushing back", sent_blocked, sent_end);
  IT_CHECKF(sent_end - acked_blocked <= WINDOW, "more than a window unacked");
  IT_CHECKF(peak - rss_before < RSS_LIMIT_KIB, "RSS grew by %ld KiB during the outage",
            peak - rss_before);
  kafka("restart");
  int64_t t_up = itest_now_ms();
  itest_log("broker restarted (same ports and data) in %lld ms", (long long)(t_up - t_restart));
  int64_t deadline = itest_mono_ms() + 60000;
  while (atomic_load(&g.acked) == acked_blocked) {
    check_gateway();
    IT_CHECKF(itest_mono_ms() < deadline, "acks did not resume within 60 s of the restart");
    itest_sleep_ms(50);
  }
  int64_t t_resumed = itest_now_ms();
  itest_log("acks resumed %lld ms after the broker was back", (long long)(t_resumed - t_up));
  watch(&d, 3000, &max_in_flight);

  /* Finish: stop sending, wait for every outstanding ack. */
  atomic_store(&g.stop, 1);
  deadline = itest_mono_ms() + 60000;
  while (!atomic_load(&g.done)) {
    IT_CHECKF(itest_mono_ms() < deadline, "outstanding batches not acked within 60 s");
    itest_sleep_ms(50);
  }
  pthread_join(th, NULL);
  check_gateway();
  int late = 0;
  for (int b = 0; b < MAX_BATCHES; b++)
    late += g.ack_ms[b] > t_kill + 2000 && g.ack_ms[b] < t_restart;
  IT_CHECKF(late == 0, "%d batches acked OK while the broker was down", late);
  IT_CHECKF(max_in_flight <= IN_FLIGHT_BOUND, "%llu events in flight at once, bound %d",
            (unsigned long long)max_in_flight, IN_FLIGHT_BOUND);
  int n = (int)g.sent;
  for (int b = 0; b < n; b++)
    IT_CHECKF(batches[b].acked, "batch %d never acked OK", b);
  size_t total = (size_t)n * EVENTS;

  /* Kafka has every event exactly once. */
  itest_records_t rs = itest_consume(bootstrap, topic, total, 60000);
  uint64_t *h = malloc((rs.n + 1) * sizeof *h);
  IT_CHECK(h != NULL);
  for (size_t i = 0; i < rs.n; i++)
    h[i] = XXH3_64bits(rs.v[i].value, rs.v[i].value_len);
  qsort(h, rs.n, sizeof *h, cmp_u64);
  size_t missing = 0, doubled = 0;
  for (int b = 0; b < n; b++)
    for (int i = 0; i < EVENTS; i++) {
      uint64_t k = XXH3_64bits(batches[b].ev[i].data, batches[b].ev[i].len);
      uint64_t *lo = bsearch(&k, h, rs.n, sizeof *h, cmp_u64);
      size_t c = 0;
      if (lo) {
        while (lo > h && lo[-1] == k)
          lo--;
        for (; lo < h + rs.n && *lo == k; lo++)
          c++;
      }
      missing += c == 0;
      doubled += c > 1 ? c - 1 : 0;
    }
  free(h);
  itest_log("%d batches, %zu events sent and acked; Kafka has %zu records: %zu missing, %zu "
            "duplicated; %llu RETRY acks retransmitted",
            n, total, rs.n, missing, doubled, (unsigned long long)g.retries);
  IT_CHECK_INT(missing, 0);
  IT_CHECK_INT(doubled, 0);
  IT_CHECK_INT(rs.n, total);
  itest_records_free(&rs);

  intake_client_close(g.c);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  kafka("stop");
  stop_guardian();
  for (int b = 0; b < n; b++)
    for (int i = 0; i < EVENTS; i++)
      free(batches[b].ev[i].data);
  free(batches);
  itest_log("total %lld ms", (long long)(itest_mono_ms() - t_begin));
  itest_finish();
  return 0;
}
