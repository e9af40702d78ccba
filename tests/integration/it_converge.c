/* Alarm convergence against the real broker (routes.rules[].converge, src/converge/).
 *
 * Rule "alarms" converges on (source, type) with a 2 s window and flap damping (3 toggles per
 * 30 s); rule "archive" takes every event unconverged. A camera repeating one alarm 60 times
 * (device times one second apart, sent over ~3 s since the window runs on intaked's clock),
 * interleaved with a second camera and a second type, yields one first record per key and,
 * after 2 s of silence, one summary each with the repeat count; a clear passes and closes its
 * episode with a summary; a flapping sensor yields one FLAPPING summary. The archive gets all
 * 110 events, and the acks say CONVERGED exactly for the suppressed ones. A reload that keeps
 * the rule keeps its episodes; one that drops `converge` ends them with EVICTED summaries. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"

static const char CONFIG[] =
    "listen: {address: 127.0.0.1, port: ${PORT}}\n"
    "kafka: {mode: brokers, brokers: \"${BROKERS}\", delivery_timeout: 20s}\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "  rules:\n"
    "    - name: alarms\n"
    "      match: {kind: [camera, sensor]}\n"
    "      topics: ${P}.conv\n"
    "      converge: {key: [source, type], window: 2s, flap: {count: 3, window: 30s}}\n"
    "    - {name: archive, topics: ${P}.archive}\n";

#define MAXB 64

/* Rewrites the daemon's config (the rule "alarms" with or without converge) and reloads. */
static void reload(itest_daemon_t *d, bool converge) {
  FILE *f = fopen(d->config_path, "w");
  IT_CHECK(f != NULL);
  const char *p = itest_prefix();
  fprintf(f,
          "listen: {address: 127.0.0.1, port: %u}\n"
          "admin: {port: 0}\n"
          "kafka: {mode: brokers, brokers: \"%s\", delivery_timeout: 20s}\n"
          "routes:\n"
          "  default_topic: %s.events\n"
          "  dead_letter_topic: %s.dlq\n"
          "  rules:\n"
          "    - name: alarms\n"
          "      match: {kind: [camera, sensor]}\n"
          "      topics: %s.conv\n"
          "%s"
          "    - {name: archive, topics: %s.archive}\n",
          d->port, itest_bootstrap(), p, p, p,
          converge ? "      converge: {key: [source, type], window: 2s, flap: {count: 3, window: 30s}}\n"
                   : "",
          p);
  fclose(f);
  char *log0 = itest_daemon_log(d);
  size_t before = 0;
  for (const char *q = log0; (q = strstr(q, "msg=\"reloaded\"")); q++)
    before++;
  free(log0);
  itest_daemon_signal(d, SIGHUP);
  for (int i = 0; i < 100; i++) { /* until one more "reloaded" line */
    char *log = itest_daemon_log(d);
    size_t n = 0;
    for (const char *q = log; (q = strstr(q, "msg=\"reloaded\"")); q++)
      n++;
    free(log);
    if (n > before)
      return;
    itest_sleep_ms(100);
  }
  IT_FAIL("no reload");
}

typedef struct {
  ProtobufCBinaryData ev[MAXB];
  size_t n;
} batch_t;

static int64_t t0;
static unsigned ids;

static void add(batch_t *b, const char *src, int kind, const char *type, bool clear, int64_t dt) {
  char id[32];
  snprintf(id, sizeof id, "c-%u", ids++);
  Intake__V1__Event *e = itest_event_new(src, kind, id, 0, type, 2, t0 + dt);
  e->clear = clear;
  IT_CHECK(b->n < MAXB);
  b->ev[b->n++] = itest_event_pack(e);
  itest_event_free(e);
}

static uint64_t seq;
static size_t n_accepted, n_converged;

/* Sends the batch, checks an OK ack, counts outcomes; returns the outcomes (malloc'd). */
static int *send(intake_client_t *c, batch_t *b) {
  IT_CHECK_INT(intake_client_send_batch_encoded(c, ++seq, b->ev, b->n, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECK_INT(ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK);
  IT_CHECK_INT(ack->n_outcomes, b->n);
  int *out = malloc(b->n * sizeof *out);
  for (size_t i = 0; i < b->n; i++) {
    out[i] = ack->outcomes[i];
    if (out[i] == INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED)
      n_accepted++;
    else if (out[i] == INTAKE__V1__OUTCOME__OUTCOME_CONVERGED)
      n_converged++;
    else
      IT_FAIL("event %zu: outcome %d", i, out[i]);
    free(b->ev[i].data);
  }
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  b->n = 0;
  return out;
}

#define CAM INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA
#define SENSOR INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR

int main(void) {
  itest_init("converge", true, 90);
  const char *topics[] = {itest_topic("conv"), itest_topic("archive"), itest_topic("events"),
                          itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 4, 2);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);
  intake_client_t *c = itest_connect(&d, "gw-conv", NULL);
  t0 = itest_now_ms() - 120000;
  batch_t b = {.n = 0};

  /* A clear episode and a flapping sensor. */
  for (int i = 0; i < 5; i++)
    add(&b, "cam-3", CAM, "gb28181.alarm.6", false, i * 1000);
  add(&b, "cam-3", CAM, "gb28181.alarm.6", true, 5000);
  for (int i = 0; i < 10; i++) {
    add(&b, "lvl-1", SENSOR, "water.high", false, 2 * i * 1000);
    add(&b, "lvl-1", SENSOR, "water.high", true, (2 * i + 1) * 1000);
  }
  int *o = send(c, &b);
  IT_CHECK_INT(o[0], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  for (int i = 1; i < 5; i++)
    IT_CHECK_INT(o[i], INTAKE__V1__OUTCOME__OUTCOME_CONVERGED);
  IT_CHECK_INT(o[5], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED); /* the clear passes */
  for (int i = 6; i < 26; i++) /* alarm, clear, alarm, clear pass; the 4th toggle flaps */
    IT_CHECK_INT(o[i], i < 10 ? INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED
                              : INTAKE__V1__OUTCOME__OUTCOME_CONVERGED);
  free(o);

  /* 60 repeats of one alarm, interleaved with another camera and another type. */
  for (int k = 0; k < 6; k++) {
    for (int i = 0; i < 10; i++) {
      int n = k * 10 + i;
      add(&b, "cam-1", CAM, "gb28181.alarm.6", false, n * 1000);
      if (i % 5 == 0) {
        add(&b, "cam-2", CAM, "gb28181.alarm.6", false, n * 1000);
        add(&b, "cam-1", CAM, "gb28181.alarm.8", false, n * 1000);
      }
    }
    o = send(c, &b);
    for (int i = 0; i < 14; i++)
      IT_CHECK_INT(o[i], k == 0 && (i == 0 || i == 1 || i == 2)
                             ? INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED
                             : INTAKE__V1__OUTCOME__OUTCOME_CONVERGED);
    free(o);
    itest_sleep_ms(400);
  }
  IT_CHECK_INT(n_accepted, 9);
  IT_CHECK_INT(n_converged, 110 - 9);

  /* Silence: the three episodes end ~2 s after their last repeat. */
  itest_records_t cv = itest_consume(itest_bootstrap(), topics[0], 16, 20000);
  itest_sleep_ms(500);
  itest_records_free(&cv);
  cv = itest_consume(itest_bootstrap(), topics[0], 16, 5000);
  IT_CHECK_INT(cv.n, 16);
  itest_records_free(&cv);

  /* Reloads: the same rule keeps the episode of cam-9; without converge it ends (EVICTED, and
   * so does lvl-1's flapping episode) and the next alarm is written without a kind header. */
  add(&b, "cam-9", CAM, "gb28181.alarm.6", false, 0);
  add(&b, "cam-9", CAM, "gb28181.alarm.6", false, 1000);
  o = send(c, &b);
  IT_CHECK_INT(o[0], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  IT_CHECK_INT(o[1], INTAKE__V1__OUTCOME__OUTCOME_CONVERGED);
  free(o);
  reload(&d, true);
  add(&b, "cam-9", CAM, "gb28181.alarm.6", false, 2000);
  o = send(c, &b);
  IT_CHECK_INT(o[0], INTAKE__V1__OUTCOME__OUTCOME_CONVERGED);
  free(o);
  reload(&d, false);
  add(&b, "cam-9", CAM, "gb28181.alarm.6", false, 3000);
  o = send(c, &b);
  IT_CHECK_INT(o[0], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  free(o);
  cv = itest_consume(itest_bootstrap(), topics[0], 20, 20000);
  itest_records_t ar = itest_consume(itest_bootstrap(), topics[1], 114, 20000);
  IT_CHECK_INT(ar.n, 114);
  IT_CHECK_INT(cv.n, 20);

  size_t events = 0, expired = 0, cleared = 0, flapping = 0, evicted = 0, plain = 0;
  for (size_t i = 0; i < cv.n; i++) {
    const itest_record_t *r = &cv.v[i];
    const char *kind = itest_record_header(r, "kind");
    IT_CHECK_STR(itest_record_header(r, "route"), "alarms");
    if (!kind) { /* after the reload without converge */
      IT_CHECK_STR(r->key, "cam-9");
      plain++;
      continue;
    }
    if (!strcmp(kind, "event")) {
      events++;
      Intake__V1__Event *e = itest_record_event(r);
      IT_CHECK_STR(r->key, e->source_id);
      intake__v1__event__free_unpacked(e, NULL);
      continue;
    }
    IT_CHECK_STR(kind, "summary");
    IT_CHECK_STR(itest_record_header(r, "schema"), "intake.v1.ConvergenceSummary");
    Intake__V1__ConvergenceSummary *s =
        intake__v1__convergence_summary__unpack(NULL, r->value_len, r->value);
    IT_CHECK(s != NULL && s->last != NULL);
    IT_CHECK_STR(r->key, s->source_id);
    IT_CHECK_STR(s->last->source_id, s->source_id);
    IT_CHECK_STR(s->route, "alarms");
    IT_CHECK(s->first_seen_ms <= s->last_seen_ms);
    switch (s->reason) {
    case INTAKE__V1__SUMMARY_REASON__SUMMARY_REASON_EXPIRED:
      expired++;
      if (!strcmp(s->source_id, "cam-1") && !strcmp(s->type, "gb28181.alarm.6")) {
        IT_CHECK_INT(s->repeat_count, 59);
        IT_CHECK_INT(s->last->time_ms, t0 + 59000);
      } else {
        IT_CHECK_INT(s->repeat_count, 11);
      }
      IT_CHECK(!s->flapping);
      break;
    case INTAKE__V1__SUMMARY_REASON__SUMMARY_REASON_CLEARED:
      cleared++;
      if (!strcmp(s->source_id, "cam-3")) {
        IT_CHECK_INT(s->repeat_count, 4);
        IT_CHECK(s->last->clear);
      } else {
        IT_CHECK_STR(s->source_id, "lvl-1");
      }
      break;
    case INTAKE__V1__SUMMARY_REASON__SUMMARY_REASON_FLAPPING:
      flapping++;
      IT_CHECK_STR(s->source_id, "lvl-1");
      IT_CHECK(s->flapping);
      IT_CHECK_INT(s->flap_count, 4);
      break;
    case INTAKE__V1__SUMMARY_REASON__SUMMARY_REASON_EVICTED:
      evicted++;
      if (!strcmp(s->source_id, "cam-9"))
        IT_CHECK_INT(s->repeat_count, 2); /* one before the first reload, one after */
      else
        IT_CHECK(!strcmp(s->source_id, "lvl-1") && s->flapping);
      break;
    default:
      IT_FAIL("unexpected summary reason %d", s->reason);
    }
    intake__v1__convergence_summary__free_unpacked(s, NULL);
  }
  IT_CHECK_INT(events, 10);
  IT_CHECK_INT(evicted, 2);
  IT_CHECK_INT(plain, 1);
  IT_CHECK_INT(expired, 3);
  IT_CHECK_INT(cleared, 3); /* cam-3, and lvl-1's two clears before it flapped */
  IT_CHECK_INT(flapping, 1);
  for (size_t i = 0; i < ar.n; i++)
    IT_CHECK(itest_record_header(&ar.v[i], "kind") == NULL); /* unconverged: as before */

  intake_client_close(c);
  char *log = NULL;
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  log = itest_daemon_log(&d);
  char *line = itest_log_last_line(log, "msg=\"converge stats\"");
  IT_CHECK(line != NULL);
  uint64_t v;
  IT_CHECK(itest_logfmt_u64(line, "episodes_opened", &v) && v == 7);
  IT_CHECK(itest_logfmt_u64(line, "flapping", &v) && v == 1);
  IT_CHECK(itest_logfmt_u64(line, "summaries_delivered", &v) && v == 9);
  free(line);
  free(log);
  itest_records_free(&cv);
  itest_records_free(&ar);
  itest_finish();
  return 0;
}
