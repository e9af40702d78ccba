/* Alarm convergence across a restart (SIGTERM, start), against the real broker: the open
 * episodes go to "<dedup.snapshot_path>.converge" at shutdown and come back at start.
 *
 *   1. Camera cam-1 repeats one alarm every 250 ms (rule "alarms": key [source, type], 5 s
 *      window): the first event passes (ACCEPTED), the other 7 are CONVERGED. cam-2 raises an
 *      alarm and clears it (both pass; a CLEARED summary; nothing left open).
 *   2. intaked is stopped with SIGTERM: "converge snapshot written" with 1 episode open.
 *   3. A new intaked starts on the same config: "converge snapshot loaded", episodes=1, and
 *      /metrics says so. cam-1 keeps repeating, 6 more: all CONVERGED, no second first record.
 *   4. cam-1 falls silent: one EXPIRED summary arrives, repeat_count 13 (7 + 6, both
 *      instances), first_seen from before the restart. The converged topic holds exactly three
 *      event records (cam-1's first, cam-2's alarm and clear) and two summaries.
 *   5. Another restart loads no open episode and emits nothing more: each summary once.
 *   6. A damaged file is reported, counted (stats, /metrics), moved to .corrupt, and intaked
 *      serves normally. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"

static const char CONFIG_FMT[] =
    "listen: {address: 127.0.0.1, port: ${PORT}}\n"
    "kafka: {mode: brokers, brokers: \"${BROKERS}\", delivery_timeout: 20s}\n"
    "dedup: {snapshot_path: %s}\n"
    "log: {stats_interval: 1s}\n"
    "admin: {port: 0}\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "  rules:\n"
    "    - name: alarms\n"
    "      match: {kind: [camera]}\n"
    "      topics: ${P}.conv\n"
    "      converge: {key: [source, type], window: 5s}\n";

static char config[2048];
static char snap_path[600], conv_path[640];
static uint64_t seq;
static unsigned ids;

/* Sends one event and returns its outcome. */
static int send_one(intake_client_t *c, const char *src, bool clear) {
  char id[32];
  snprintf(id, sizeof id, "r-%u", ids++);
  Intake__V1__Event *e = itest_event_new(src, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA, id, 0,
                                         "gb28181.alarm.6", 2, itest_now_ms());
  e->clear = clear;
  ProtobufCBinaryData b = itest_event_pack(e);
  itest_event_free(e);
  IT_CHECK_INT(intake_client_send_batch_encoded(c, ++seq, &b, 1, 0), 0);
  free(b.data);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECK_INT(ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK);
  IT_CHECK_INT(ack->n_outcomes, 1);
  int o = ack->outcomes[0];
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  return o;
}

static uint64_t log_field(const char *line, const char *key) {
  uint64_t v = 0;
  IT_CHECKF(itest_logfmt_u64(line, key, &v), "no %s in: %s", key, line);
  return v;
}

#define ACCEPTED INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED
#define CONVERGED INTAKE__V1__OUTCOME__OUTCOME_CONVERGED

int main(void) {
  itest_init("converge_restart", true, 150);
  const char *topics[] = {itest_topic("conv"), itest_topic("events"), itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 3, 2);
  snprintf(snap_path, sizeof snap_path, "%s/dedup.snap", itest_dir());
  snprintf(conv_path, sizeof conv_path, "%s.converge", snap_path);
  snprintf(config, sizeof config, CONFIG_FMT, snap_path);

  /* 1. The first instance. */
  itest_daemon_t a;
  itest_daemon_start(&a, "first", config);
  intake_client_t *c = itest_connect(&a, "gw-restart", NULL);
  int64_t first_ms = itest_now_ms();
  IT_CHECK_INT(send_one(c, "cam-1", false), ACCEPTED);
  for (int i = 0; i < 7; i++) {
    itest_sleep_ms(250);
    IT_CHECK_INT(send_one(c, "cam-1", false), CONVERGED);
  }
  IT_CHECK_INT(send_one(c, "cam-2", false), ACCEPTED);
  IT_CHECK_INT(send_one(c, "cam-2", true), ACCEPTED);
  intake_client_close(c);

  /* 2. SIGTERM. */
  int64_t stop_ms = itest_now_ms();
  IT_CHECK_INT(itest_daemon_stop(&a, 30000), 0);
  char *log = itest_daemon_log(&a);
  char *line = itest_log_last_line(log, "msg=\"converge snapshot written\"");
  IT_CHECKF(line != NULL, "no converge snapshot at shutdown");
  itest_log("shutdown: %s", line);
  IT_CHECK_INT(log_field(line, "episodes"), 1);
  free(line);
  free(log);
  struct stat st;
  IT_CHECKF(stat(conv_path, &st) == 0, "no file at %s", conv_path);

  /* 3. The second instance continues the episode. */
  itest_daemon_t b;
  itest_daemon_start(&b, "second", config);
  line = itest_daemon_wait_log(&b, "msg=\"converge snapshot loaded\"", 5000);
  IT_CHECKF(line != NULL, "the converge snapshot was not loaded");
  itest_log("start: %s (restart took %lld ms)", line, (long long)(itest_now_ms() - stop_ms));
  IT_CHECK_INT(log_field(line, "episodes"), 1);
  IT_CHECK_INT(log_field(line, "expired"), 0);
  free(line);
  char admin[64];
  itest_admin_address(&b, admin, sizeof admin);
  IT_CHECK_INT(itest_metric(admin, "intake_converge_snapshot_loaded_episodes"), 1);
  IT_CHECK_INT(itest_metric(admin, "intake_converge_snapshot_load_errors_total"), 0);
  c = itest_connect(&b, "gw-restart", NULL);
  for (int i = 0; i < 6; i++) {
    IT_CHECK_INT(send_one(c, "cam-1", false), CONVERGED);
    itest_sleep_ms(250);
  }
  int64_t last_ms = itest_now_ms();

  /* 4. Silence: one summary, counting the repeats of both instances. */
  itest_records_t cv = itest_consume(itest_bootstrap(), topics[0], 5, 20000);
  itest_sleep_ms(1000); /* anything extra would show up too */
  itest_records_free(&cv);
  cv = itest_consume(itest_bootstrap(), topics[0], 5, 5000);
  IT_CHECK_INT(cv.n, 5);
  size_t events = 0, expired = 0, cleared = 0;
  for (size_t i = 0; i < cv.n; i++) {
    const itest_record_t *r = &cv.v[i];
    const char *kind = itest_record_header(r, "kind");
    IT_CHECK(kind != NULL);
    if (!strcmp(kind, "event")) {
      events++;
      continue;
    }
    IT_CHECK_STR(kind, "summary");
    Intake__V1__ConvergenceSummary *s =
        intake__v1__convergence_summary__unpack(NULL, r->value_len, r->value);
    IT_CHECK(s != NULL && s->last != NULL);
    if (s->reason == INTAKE__V1__SUMMARY_REASON__SUMMARY_REASON_CLEARED) {
      cleared++;
      IT_CHECK_STR(s->source_id, "cam-2");
    } else {
      IT_CHECK_INT(s->reason, INTAKE__V1__SUMMARY_REASON__SUMMARY_REASON_EXPIRED);
      expired++;
      IT_CHECK_STR(s->source_id, "cam-1");
      IT_CHECK_INT(s->repeat_count, 13);
      IT_CHECKF(s->first_seen_ms >= first_ms - 50 && s->first_seen_ms <= first_ms + 1000,
                "first_seen_ms %lld, sent at %lld", (long long)s->first_seen_ms,
                (long long)first_ms);
      IT_CHECK(s->last_seen_ms >= last_ms - 2000 && s->last_seen_ms <= last_ms);
      itest_log("summary: repeats=%u first_seen=%lld last_seen=%lld", (unsigned)s->repeat_count,
                (long long)s->first_seen_ms, (long long)s->last_seen_ms);
    }
    intake__v1__convergence_summary__free_unpacked(s, NULL);
  }
  IT_CHECK_INT(events, 3); /* cam-1's first, cam-2's alarm and clear: none after the restart */
  IT_CHECK_INT(expired, 1);
  IT_CHECK_INT(cleared, 1);
  itest_records_free(&cv);
  intake_client_close(c);

  /* 5. Nothing left open: another restart loads none and emits nothing. */
  IT_CHECK_INT(itest_daemon_stop(&b, 30000), 0);
  itest_daemon_t d;
  itest_daemon_start(&d, "third", config);
  line = itest_daemon_wait_log(&d, "msg=\"converge snapshot loaded\"", 5000);
  IT_CHECK(line != NULL);
  IT_CHECK_INT(log_field(line, "episodes"), 0);
  free(line);
  itest_sleep_ms(1000);
  cv = itest_consume(itest_bootstrap(), topics[0], 6, 3000);
  IT_CHECK_INT(cv.n, 5);
  itest_records_free(&cv);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);

  /* 6. A damaged file: reported, counted, moved aside; intaked serves. */
  FILE *f = fopen(conv_path, "r+b");
  IT_CHECK(f != NULL);
  IT_CHECK(fseek(f, 90, SEEK_SET) == 0);
  fputc(0xa5, f);
  fclose(f);
  itest_daemon_t e;
  itest_daemon_start(&e, "fourth", config);
  line = itest_daemon_wait_log(&e, "converge snapshot unusable", 5000);
  IT_CHECKF(line != NULL, "a damaged converge snapshot was not reported");
  itest_log("damaged: %s", line);
  free(line);
  itest_admin_address(&e, admin, sizeof admin);
  IT_CHECK_INT(itest_metric(admin, "intake_converge_snapshot_load_errors_total"), 1);
  line = itest_daemon_wait_log(&e, "converge_snapshot_load_errors=1", 5000);
  IT_CHECK(line != NULL);
  free(line);
  char moved[700];
  snprintf(moved, sizeof moved, "%s.corrupt", conv_path);
  IT_CHECKF(stat(moved, &st) == 0, "not moved to %s", moved);
  c = itest_connect(&e, "gw-restart", NULL);
  IT_CHECK_INT(send_one(c, "cam-1", false), ACCEPTED); /* no episode: a new first record */
  intake_client_close(c);
  IT_CHECK_INT(itest_daemon_stop(&e, 30000), 0);
  itest_finish();
  return 0;
}
