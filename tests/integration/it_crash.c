/* intaked killed with SIGKILL mid-stream and restarted: the dedup state comes back from its
 * snapshot (dedup.snapshot_path, every dedup.snapshot_interval = 1 s here), so retransmits of
 * what was delivered before the last snapshot are DUPLICATE and nothing is lost.
 *
 * The window of possible duplicates, precisely: a snapshot holds every key committed (Kafka
 * confirmed the event) before the snapshot started (its created_ms; the export pauses the sweep,
 * and these tables are far from full, so nothing is evicted). An event whose batch was acked
 * before the last snapshot's created_ms was committed before it: its retransmit must be
 * DUPLICATE and it is in Kafka exactly once. An event committed after that (acked later, or
 * confirmed but not yet acked when the process died) is not in the file: its retransmit is
 * produced again. That is at least once, never lost, and the duplicates are at most the events
 * committed in the last snapshot_interval (+ the snapshot's own duration) before the crash.
 *
 *   1. 16 batches sent and acked; wait for a snapshot that started after the last ack; 8 more
 *      sent and acked; 8 more sent, and intaked is SIGKILLed while they wait for Kafka
 *      (linger.ms 300), unacked.
 *   2. Restart with the same config: the log says how many keys were loaded and how old the
 *      snapshot was. The gateway retransmits all 32 batches (the acked ones too, as a worst
 *      case). Every batch acked before the last snapshot is all DUPLICATE; every unique event is
 *      in Kafka at least once, those exactly once; the duplicates are counted and must all be
 *      events outside that set.
 *   3. SIGTERM writes a final snapshot (final=true, every key); after a restart a retransmit of
 *      everything is all DUPLICATE and Kafka gets zero new records.
 *   4. A truncated snapshot, then one of garbage: intaked starts, logs it, counts it
 *      (dedup_snapshot_load_errors=1 in the stats line), moves it aside, and serves normally. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"

#define BATCHES 32
#define EVENTS 50
#define ACKED_FIRST 16  /* acked, then a snapshot after them */
#define ACKED_SECOND 8  /* acked after that snapshot */

static const char CONFIG_FMT[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "gateway:\n"
    "  max_in_flight_batches: 8\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 20s\n"
    "  properties:\n"
    "    linger.ms: 300\n"
    "dedup:\n"
    "  window: 10m\n"
    "  memory: 16MiB\n"
    "  sequence_memory: 4MiB\n"
    "  snapshot_path: %s\n"
    "  snapshot_interval: 1s\n"
    "log:\n"
    "  stats_interval: 1s\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "admin:\n"
    "  port: 0\n";

static char config[2048];
static char snap_path[600];

typedef struct {
  ProtobufCBinaryData ev[EVENTS];
  char source[EVENTS][32];
  int64_t acked_ms;            /* wall clock when its first ack (OK) came; 0 = never */
} batch_t;

static batch_t batches[BATCHES];

static void make_batches(void) {
  int64_t t = itest_now_ms() - 2000;
  for (int b = 0; b < BATCHES; b++)
    for (int i = 0; i < EVENTS; i++) {
      char id[32];
      /* half the sources number their events: their sequence windows are persisted too */
      int numbered = i % 2;
      snprintf(batches[b].source[i], sizeof batches[b].source[i], "%s-%02d",
               numbered ? "crash-seq" : "crash-id", i / 2 % 10);
      snprintf(id, sizeof id, "b%02d-e%02d", b, i);
      uint64_t seq = numbered ? (uint64_t)(b * 5 + i / 20 + 1) * 100 + (uint64_t)i : 0;
      Intake__V1__Event *ev = itest_event_new(batches[b].source[i],
                                              INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id, seq,
                                              "water.level", 1, t);
      batches[b].ev[i] = itest_event_pack(ev);
      itest_event_free(ev);
    }
}

/* Outcome counts of one ack. */
typedef struct {
  int accepted, duplicate;
} tally_t;

/* Sends batches [from, to) on `c` in windows of `window`, waits for every ack (OK), records
 * first-ack times, and adds the outcomes to *t; `want` >= 0: every outcome must be that. */
static void send_all(intake_client_t *c, uint64_t *seq, int from, int to, uint32_t window,
                     int want, tally_t *t) {
  for (int b0 = from; b0 < to; b0 += (int)window) {
    int b1 = b0 + (int)window < to ? b0 + (int)window : to;
    uint64_t first = *seq;
    for (int b = b0; b < b1; b++)
      IT_CHECK_INT(intake_client_send_batch_encoded(c, (*seq)++, batches[b].ev, EVENTS,
                                                    b % 3 == 0 ? INTAKE_CLIENT_ZSTD : 0),
                   0);
    for (int k = b0; k < b1; k++) {
      Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
      IT_CHECKF(ack->seq >= first && ack->seq < *seq, "ack for unexpected batch %llu",
                (unsigned long long)ack->seq);
      int b = b0 + (int)(ack->seq - first);
      IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK,
                "batch %d: status %d (%s)", b, ack->status, ack->detail);
      IT_CHECK_INT(ack->n_outcomes, EVENTS);
      if (!batches[b].acked_ms)
        batches[b].acked_ms = itest_now_ms();
      for (int i = 0; i < EVENTS; i++) {
        int o = (int)ack->outcomes[i];
        IT_CHECKF(want < 0 || o == want, "batch %d event %d: outcome %d, expected %d", b, i, o,
                  want);
        IT_CHECKF(o != INTAKE__V1__OUTCOME__OUTCOME_REJECTED, "batch %d event %d rejected", b, i);
        if (o == INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED)
          t->accepted++;
        else
          t->duplicate++;
      }
      intake__v1__batch_ack__free_unpacked(ack, NULL);
    }
  }
}

/* created_ms of the last "dedup snapshot written" line of the log, 0 if none. */
static uint64_t last_snapshot_ms(const itest_daemon_t *d, bool *final) {
  char *log = itest_daemon_log(d);
  char *line = itest_log_last_line(log, "dedup snapshot written");
  free(log);
  uint64_t ms = 0;
  if (line) {
    IT_CHECKF(itest_logfmt_u64(line, "created_ms", &ms), "no created_ms= in: %s", line);
    if (final) {
      char f[8];
      *final = itest_logfmt_str(line, "final", f, sizeof f) && !strcmp(f, "true");
    }
    free(line);
  }
  return ms;
}

/* Waits for a snapshot that started after `after_ms`; returns its created_ms. */
static uint64_t wait_snapshot_after(const itest_daemon_t *d, int64_t after_ms, int timeout_ms) {
  int64_t deadline = itest_mono_ms() + timeout_ms;
  for (;;) {
    uint64_t ms = last_snapshot_ms(d, NULL);
    if (ms > (uint64_t)after_ms)
      return ms;
    IT_CHECKF(itest_mono_ms() < deadline, "no dedup snapshot started after %lld within %d ms",
              (long long)after_ms, timeout_ms);
    itest_sleep_ms(50);
  }
}

static uint64_t stats_field(const itest_daemon_t *d, const char *key) {
  char *line = itest_daemon_wait_log(d, "msg=\"stats\"", 10000);
  IT_CHECKF(line != NULL, "no stats line");
  uint64_t v = 0;
  IT_CHECKF(itest_logfmt_u64(line, key, &v), "stats line without %s=: %s", key, line);
  free(line);
  return v;
}

static size_t count_in(const itest_records_t *rs, int b, int i) {
  return itest_records_count(rs, batches[b].source[i], batches[b].ev[i].data, batches[b].ev[i].len);
}

/* Starts intaked on the shared config and checks what its log says about the snapshot. */
static void start(itest_daemon_t *d, const char *name) {
  itest_daemon_start(d, name, config);
}

static void corrupt_and_restart(itest_daemon_t *d, const char *name, const char *how,
                                const char *topic, uint64_t *seq, size_t *kafka_records) {
  struct stat st;
  IT_CHECKF(stat(snap_path, &st) == 0, "no snapshot at %s", snap_path);
  if (!strcmp(how, "truncated")) {
    IT_CHECK(truncate(snap_path, st.st_size / 2) == 0);
  } else {
    FILE *f = fopen(snap_path, "wb");
    IT_CHECK(f != NULL);
    for (long i = 0; i < 5000; i++)
      fputc((int)((unsigned)(i * 2654435761u) >> 24), f);
    fclose(f);
  }
  start(d, name);
  char *line = itest_daemon_wait_log(d, "dedup snapshot unusable", 5000);
  IT_CHECKF(line != NULL, "a %s snapshot was not reported", how);
  itest_log("%s snapshot: %s", how, line);
  free(line);
  IT_CHECK_INT(stats_field(d, "dedup_snapshot_load_errors"), 1);
  IT_CHECK_INT(stats_field(d, "dedup_snapshot_loaded"), 0);
  char admin[64];
  itest_admin_address(d, admin, sizeof admin);
  IT_CHECK_INT(itest_metric(admin, "intake_dedup_snapshot_load_errors_total"), 1);
  char moved[640];
  snprintf(moved, sizeof moved, "%s.corrupt", snap_path);
  IT_CHECKF(stat(moved, &st) == 0, "the bad snapshot was not moved to %s", moved);

  /* Serves normally: a new batch is accepted and lands. */
  intake_client_t *c = itest_connect(d, "gw-crash", NULL);
  Intake__V1__Event *ev = itest_event_new("crash-after", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR,
                                          how, 0, "water.level", 1, itest_now_ms() - 1000);
  ProtobufCBinaryData bytes = itest_event_pack(ev);
  itest_event_free(ev);
  IT_CHECK_INT(intake_client_send_batch_encoded(c, (*seq)++, &bytes, 1, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECK_INT(ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK);
  IT_CHECK_INT(ack->outcomes[0], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  intake_client_close(c);
  (*kafka_records)++;
  itest_records_t rs = itest_consume(itest_bootstrap(), topic, *kafka_records, 30000);
  IT_CHECK_INT(rs.n, *kafka_records);
  IT_CHECK_INT(itest_records_count(&rs, "crash-after", bytes.data, bytes.len), 1);
  itest_records_free(&rs);
  free(bytes.data);
  IT_CHECK_INT(itest_daemon_stop(d, 30000), 0);
}

int main(void) {
  itest_init("crash", true, 170);
  const char *topic = itest_topic("events");
  const char *topics[] = {topic, itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 2, 4);
  snprintf(snap_path, sizeof snap_path, "%s/dedup.snap", itest_dir());
  snprintf(config, sizeof config, CONFIG_FMT, snap_path);
  make_batches();
  const size_t unique = (size_t)BATCHES * EVENTS;

  /* 1. Acked, snapshot, acked, in flight, SIGKILL. */
  itest_daemon_t d1;
  start(&d1, "first");
  char *line = itest_daemon_wait_log(&d1, "dedup snapshot: none yet", 5000);
  IT_CHECKF(line != NULL, "a first start should say there is no snapshot yet");
  free(line);
  uint32_t window;
  intake_client_t *c = itest_connect(&d1, "gw-crash", &window);
  IT_CHECK_INT(window, 8);
  uint64_t seq = 1;
  tally_t t = {0};
  send_all(c, &seq, 0, ACKED_FIRST, window, INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, &t);
  uint64_t snap1 = wait_snapshot_after(&d1, batches[ACKED_FIRST - 1].acked_ms, 10000);
  itest_log("%d batches acked; a snapshot started %llu ms after the last ack", ACKED_FIRST,
            (unsigned long long)(snap1 - (uint64_t)batches[ACKED_FIRST - 1].acked_ms));
  send_all(c, &seq, ACKED_FIRST, ACKED_FIRST + ACKED_SECOND, window,
           INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED, &t);
  for (int b = ACKED_FIRST + ACKED_SECOND; b < BATCHES; b++)
    IT_CHECK_INT(intake_client_send_batch_encoded(c, seq++, batches[b].ev, EVENTS, 0), 0);
  itest_sleep_ms(100); /* read by intaked, waiting for Kafka (linger.ms 300) */
  itest_daemon_signal(&d1, SIGKILL);
  IT_CHECK_INT(itest_daemon_wait(&d1, 10000), 128 + SIGKILL);
  intake_client_close(c);
  int unacked = 0;
  for (int b = 0; b < BATCHES; b++)
    unacked += batches[b].acked_ms == 0;
  IT_CHECKF(unacked > 0, "every batch was acked before the kill: nothing was mid-stream");
  /* The last snapshot written before the kill, from the dead daemon's log. */
  uint64_t last = last_snapshot_ms(&d1, NULL);
  IT_CHECK(last >= snap1);
  int covered = 0; /* batches acked before the last snapshot started */
  for (int b = 0; b < BATCHES; b++)
    covered += batches[b].acked_ms && (uint64_t)batches[b].acked_ms < last;
  IT_CHECK(covered >= ACKED_FIRST);
  itest_log("SIGKILL with %d batches unacked; last snapshot at %llu covers %d acked batches, "
            "%d acked after it",
            unacked, (unsigned long long)last, covered, BATCHES - unacked - covered);

  /* 2. Restart, retransmit everything. */
  itest_daemon_t d2;
  start(&d2, "restarted");
  line = itest_daemon_wait_log(&d2, "dedup snapshot loaded", 5000);
  IT_CHECKF(line != NULL, "the restarted intaked did not load the snapshot");
  uint64_t loaded = 0, age = 0;
  IT_CHECK(itest_logfmt_u64(line, "keys", &loaded));
  IT_CHECK(itest_logfmt_u64(line, "age_ms", &age));
  itest_log("restart: %s", line);
  free(line);
  IT_CHECKF(loaded >= (uint64_t)covered * EVENTS, "loaded %llu keys, %d batches were covered",
            (unsigned long long)loaded, covered);
  /* The same figures in /metrics, and the periodic snapshots resume. */
  char admin[64];
  itest_admin_address(&d2, admin, sizeof admin);
  IT_CHECK_INT(itest_metric(admin, "intake_dedup_snapshot_loaded_keys"), loaded);
  IT_CHECK_INT(itest_metric(admin, "intake_dedup_snapshot_load_errors_total"), 0);
  for (int i = 0; i < 50 && itest_metric(admin,
                                         "intake_dedup_snapshots_total{result=\"written\"}") < 1;
       i++)
    itest_sleep_ms(100);
  IT_CHECK(itest_metric(admin, "intake_dedup_snapshots_total{result=\"written\"}") >= 1);
  IT_CHECK(itest_metric(admin, "intake_dedup_snapshot_last_created_seconds") > 1.7e9);
  c = itest_connect(&d2, "gw-crash", NULL);
  tally_t r = {0};
  seq = 1; /* a new connection: the gateway starts its numbering again */
  send_all(c, &seq, 0, BATCHES, window, -1, &r);
  itest_log("retransmit of all %d batches: %d ACCEPTED, %d DUPLICATE", BATCHES, r.accepted,
            r.duplicate);
  IT_CHECK(r.duplicate >= covered * EVENTS);

  itest_records_t rs = itest_consume(itest_bootstrap(), topic, unique, 30000);
  size_t dups = 0, dups_outside = 0;
  for (int b = 0; b < BATCHES; b++)
    for (int i = 0; i < EVENTS; i++) {
      size_t n = count_in(&rs, b, i);
      IT_CHECKF(n >= 1, "batch %d event %d lost: not in Kafka", b, i);
      bool in_snapshot = batches[b].acked_ms && (uint64_t)batches[b].acked_ms < last;
      IT_CHECKF(!in_snapshot || n == 1,
                "batch %d event %d (acked %lld ms before the last snapshot) is in Kafka %zu times",
                b, i, (long long)(last - (uint64_t)batches[b].acked_ms), n);
      dups += n - 1;
      dups_outside += in_snapshot ? 0 : n - 1;
    }
  IT_CHECK_INT(rs.n, unique + dups);
  IT_CHECK_INT(dups, dups_outside);
  itest_log("0 of %zu events lost; %zu duplicated, all committed after the last snapshot "
            "(%d batches acked after it or unacked, %d events)",
            unique, dups, BATCHES - covered, (BATCHES - covered) * EVENTS);
  size_t kafka_records = rs.n;
  itest_records_free(&rs);
  intake_client_close(c);

  /* 3. SIGTERM: a final snapshot with every key; a restart knows everything. */
  IT_CHECK_INT(itest_daemon_stop(&d2, 30000), 0);
  bool final = false;
  last_snapshot_ms(&d2, &final);
  IT_CHECKF(final, "SIGTERM did not write a final snapshot");
  char *log = itest_daemon_log(&d2);
  line = itest_log_last_line(log, "final=true");
  free(log);
  uint64_t keys = 0;
  IT_CHECK(line && itest_logfmt_u64(line, "keys", &keys));
  IT_CHECK_INT(keys, unique);
  free(line);

  itest_daemon_t d3;
  start(&d3, "after-sigterm");
  line = itest_daemon_wait_log(&d3, "dedup snapshot loaded", 5000);
  IT_CHECK(line && itest_logfmt_u64(line, "keys", &loaded));
  IT_CHECK_INT(loaded, unique);
  free(line);
  c = itest_connect(&d3, "gw-crash", NULL);
  tally_t z = {0};
  seq = 1;
  send_all(c, &seq, 0, BATCHES, window, INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE, &z);
  IT_CHECK_INT(z.duplicate, unique);
  intake_client_close(c);
  rs = itest_consume(itest_bootstrap(), topic, kafka_records, 30000);
  IT_CHECKF(rs.n == kafka_records, "after a clean restart a retransmit of everything added %zu "
            "records", rs.n - kafka_records);
  itest_records_free(&rs);
  itest_log("clean restart: %zu keys loaded, retransmit of all %zu events: all DUPLICATE, 0 new "
            "records", (size_t)loaded, unique);
  IT_CHECK_INT(itest_daemon_stop(&d3, 30000), 0);

  /* 4. Damaged snapshots. */
  itest_daemon_t d4, d5;
  corrupt_and_restart(&d4, "truncated", "truncated", topic, &seq, &kafka_records);
  corrupt_and_restart(&d5, "garbage", "garbage", topic, &seq, &kafka_records);

  for (int b = 0; b < BATCHES; b++)
    for (int i = 0; i < EVENTS; i++)
      free(batches[b].ev[i].data);
  itest_finish();
  return 0;
}
