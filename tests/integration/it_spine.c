/* The spine, end to end: unique events sent over one connection in pipelined batches (some
 * zstd-compressed) all reach Kafka exactly once, on the topics the routing rules name (fan-out
 * and default topic included), keyed by source id, with the Event bytes as sent for a value,
 * in per-source order and with the documented headers; every batch is acked OK with one
 * ACCEPTED outcome per event. */
#include <stdlib.h>

#include "itest.h"

#define N_SOURCES 6
#define PER_SOURCE 40
#define N_EVENTS (N_SOURCES * PER_SOURCE)
#define BATCH 20
#define N_BATCHES (N_EVENTS / BATCH)
#define GATEWAY "gw-spine"

static const char CONFIG[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 20s\n"
    "routes:\n"
    "  default_topic: ${P}.default\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "  rules:\n"
    "    - name: fire\n"                       /* fan-out to two topics */
    "      match:\n"
    "        kind: sensor\n"
    "        type: [smoke.alarm, gas.alarm]\n"
    "        severity: {min: 1, max: 2}\n"
    "      topics: [${P}.fire, ${P}.urgent]\n"
    "    - name: intrusion\n"
    "      match:\n"
    "        kind: [camera]\n"
    "        type: gb28181.alarm.6\n"
    "        region_prefix: [\"330782\"]\n"
    "      topics: ${P}.video\n"
    "      stop: true\n"
    "    - name: water\n"                      /* skipped for events `intrusion` matched */
    "      match:\n"
    "        attributes: {unit: m}\n"
    "      topics: [${P}.urgent, ${P}.video]\n";

enum { T_DEFAULT, T_FIRE, T_URGENT, T_VIDEO, T_DLQ, N_TOPICS };
static const char *topic_suffix[N_TOPICS] = {"default", "fire", "urgent", "video", "dlq"};
static const char *topics[N_TOPICS];

typedef struct {
  Intake__V1__Event *ev;
  ProtobufCBinaryData bytes;     /* as sent */
  const char *route[N_TOPICS];   /* expected rule name per topic, NULL = not routed there */
  int seen[N_TOPICS];
} sent_t;

static sent_t sent[N_EVENTS];

/* Source s, its i-th event (0-based). Sources differ in kind/type/region so that the rules
 * above send their events to every combination of topics. */
static void make_event(sent_t *e, int s, int i, int64_t now) {
  static const char *source_ids[N_SOURCES] = {
      "33078200001310000001", /* camera in 330782: intrusion (stop) */
      "smoke-sensor-0001",    /* sensor: alternates smoke.alarm sev 1 (fire) / heartbeat */
      "water-level-0002",     /* sensor with unit=m: water */
      "11010500001310000003", /* camera elsewhere: default */
      "33078200001310000004", /* camera in 330782 with unit=m: intrusion stops before water */
      "platform-05",          /* platform, gas.alarm sev 1 with unit=m: fire + water */
  };
  char event_id[64];
  snprintf(event_id, sizeof event_id, "s%d-e%03d", s, i);
  const char *type = "x.unknown";
  int kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_OTHER;
  uint32_t severity = 3;
  const char *region = NULL;
  int unit_m = 0;
  switch (s) {
  case 0:
    kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA, type = "gb28181.alarm.6";
    region = "330782001";
    e->route[T_VIDEO] = "intrusion";
    break;
  case 1:
    kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR;
    if (i % 2 == 0) {
      type = "smoke.alarm", severity = 1;
      e->route[T_FIRE] = e->route[T_URGENT] = "fire";
    } else {
      type = "smoke.heartbeat", severity = 4;
      e->route[T_DEFAULT] = "default";
    }
    break;
  case 2:
    kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, type = "water.level", unit_m = 1;
    e->route[T_URGENT] = e->route[T_VIDEO] = "water";
    break;
  case 3:
    kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA, type = "gb28181.alarm.6";
    region = "110105";
    e->route[T_DEFAULT] = "default";
    break;
  case 4:
    kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA, type = "gb28181.alarm.6";
    region = "33078200", unit_m = 1;
    e->route[T_VIDEO] = "intrusion";
    break;
  case 5:
    kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_PLATFORM, type = "gas.alarm", severity = 1;
    unit_m = 1;
    /* kind platform does not match `fire` (kind: sensor); unit=m matches water */
    e->route[T_URGENT] = e->route[T_VIDEO] = "water";
    break;
  }
  e->ev = itest_event_new(source_ids[s], kind, event_id, (uint64_t)i + 1, type, severity,
                          now - 60000 + i);
  if (region)
    itest_event_set_location(e->ev, 120.07, 29.31, region);
  itest_event_add_attr(e->ev, "value", "42");
  if (unit_m)
    itest_event_add_attr(e->ev, "unit", "m");
  if (i % 3 == 0)
    itest_event_set_payload(e->ev, "http://nvr/snap/1.jpg", 21);
  e->bytes = itest_event_pack(e->ev);
}

static sent_t *find_sent(const Intake__V1__Event *ev) {
  for (int i = 0; i < N_EVENTS; i++)
    if (strcmp(sent[i].ev->source_id, ev->source_id) == 0 &&
        strcmp(sent[i].ev->event_id, ev->event_id) == 0)
      return &sent[i];
  return NULL;
}

static void check_ack(Intake__V1__BatchAck *ack, int *acked) {
  IT_CHECKF(ack->seq >= 1 && ack->seq <= N_BATCHES, "ack for unknown batch seq %llu",
            (unsigned long long)ack->seq);
  IT_CHECKF(!acked[ack->seq], "batch %llu acked twice", (unsigned long long)ack->seq);
  acked[ack->seq] = 1;
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK,
            "batch %llu: status %d (%s)", (unsigned long long)ack->seq, ack->status, ack->detail);
  IT_CHECK_INT(ack->n_outcomes, BATCH);
  for (size_t i = 0; i < ack->n_outcomes; i++)
    IT_CHECKF(ack->outcomes[i] == INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED,
              "batch %llu event %zu: outcome %d", (unsigned long long)ack->seq, i,
              ack->outcomes[i]);
  IT_CHECK_INT(ack->n_rejections, 0);
}

static void check_fields(const Intake__V1__Event *got, const Intake__V1__Event *want) {
  IT_CHECK_STR(got->source_id, want->source_id);
  IT_CHECK_STR(got->event_id, want->event_id);
  IT_CHECK_STR(got->type, want->type);
  IT_CHECK_INT(got->source_kind, want->source_kind);
  IT_CHECK_INT(got->seq, want->seq);
  IT_CHECK_INT(got->severity, want->severity);
  IT_CHECK_INT(got->time_ms, want->time_ms);
  IT_CHECK_INT(got->n_attributes, want->n_attributes);
  for (size_t i = 0; i < want->n_attributes; i++) {
    IT_CHECK_STR(got->attributes[i]->key, want->attributes[i]->key);
    IT_CHECK_STR(got->attributes[i]->value, want->attributes[i]->value);
  }
  IT_CHECK((got->location == NULL) == (want->location == NULL));
  if (want->location)
    IT_CHECK_STR(got->location->region, want->location->region);
  IT_CHECK_INT(got->payload.len, want->payload.len);
}

static void check_record(const itest_record_t *r, int t, int64_t t0, int64_t t1) {
  Intake__V1__Event *ev = itest_record_event(r);
  sent_t *e = find_sent(ev);
  IT_CHECKF(e != NULL, "%s: unknown event %s/%s", r->topic, ev->source_id, ev->event_id);
  IT_CHECKF(e->route[t] != NULL, "event %s/%s reached %s, where no rule sends it",
            ev->source_id, ev->event_id, r->topic);
  IT_CHECKF(e->seen[t] == 0, "event %s/%s twice in %s", ev->source_id, ev->event_id, r->topic);
  e->seen[t] = 1;
  check_fields(ev, e->ev);
  IT_CHECKF(r->value_len == e->bytes.len && memcmp(r->value, e->bytes.data, r->value_len) == 0,
            "record value of %s/%s differs from the bytes sent", ev->source_id, ev->event_id);
  IT_CHECK_STR(r->key, e->ev->source_id);

  IT_CHECK_STR(itest_record_header(r, "gateway_id"), GATEWAY);
  IT_CHECK_STR(itest_record_header(r, "route"), e->route[t]);
  IT_CHECK_STR(itest_record_header(r, "schema"), "intake.v1.Event");
  IT_CHECK_STR(itest_record_header(r, "content-type"), "application/x-protobuf");
  const char *dk = itest_record_header(r, "dedup_key");
  IT_CHECKF(dk != NULL && dk[0] != '\0', "no dedup_key header");
  const char *rm = itest_record_header(r, "received_ms");
  IT_CHECKF(rm != NULL, "no received_ms header");
  char *end;
  long long ms = strtoll(rm, &end, 10);
  IT_CHECKF(*end == '\0' && ms >= t0 - 1000 && ms <= t1 + 1000,
            "received_ms \"%s\" not a time between %lld and %lld", rm, (long long)t0,
            (long long)t1);
  intake__v1__event__free_unpacked(ev, NULL);
}

/* Per topic and source: one partition, and seq strictly increasing in offset order. */
static void check_order(const itest_records_t *rs) {
  for (int s = 0; s < N_SOURCES; s++) {
    const char *src = sent[s].ev->source_id; /* sent[0..N_SOURCES) hold one event per source */
    int32_t part = -1;
    uint64_t last_seq = 0;
    int64_t last_off = -1;
    for (size_t i = 0; i < rs->n; i++) {
      const itest_record_t *r = &rs->v[i];
      if (r->key == NULL || strcmp(r->key, src) != 0)
        continue;
      Intake__V1__Event *ev = itest_record_event(r);
      if (part < 0)
        part = r->partition;
      IT_CHECKF(r->partition == part, "%s: source %s in partitions %d and %d", r->topic, src,
                (int)part, (int)r->partition);
      IT_CHECKF(r->offset > last_off && ev->seq > last_seq,
                "%s: source %s out of order: seq %llu at offset %lld after seq %llu", r->topic,
                src, (unsigned long long)ev->seq, (long long)r->offset,
                (unsigned long long)last_seq);
      last_seq = ev->seq;
      last_off = r->offset;
      intake__v1__event__free_unpacked(ev, NULL);
    }
  }
}

int main(void) {
  itest_init("spine", true, 170);
  for (int t = 0; t < N_TOPICS; t++)
    topics[t] = itest_topic(topic_suffix[t]);
  itest_create_topics(itest_bootstrap(), topics, N_TOPICS, 4);

  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);

  /* Events in per-source order, sources interleaved across batches. */
  int64_t t0 = itest_now_ms();
  for (int i = 0; i < PER_SOURCE; i++)
    for (int s = 0; s < N_SOURCES; s++)
      make_event(&sent[i * N_SOURCES + s], s, i, t0);

  uint32_t window;
  intake_client_t *c = itest_connect(&d, GATEWAY, &window);
  int acked[N_BATCHES + 1] = {0};
  uint32_t in_flight = 0;
  for (int b = 0; b < N_BATCHES; b++) {
    if (in_flight == window) {
      Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
      check_ack(ack, acked);
      intake__v1__batch_ack__free_unpacked(ack, NULL);
      in_flight--;
    }
    ProtobufCBinaryData evs[BATCH];
    for (int i = 0; i < BATCH; i++)
      evs[i] = sent[b * BATCH + i].bytes;
    unsigned flags = b % 3 == 1 ? INTAKE_CLIENT_ZSTD : 0;
    IT_CHECK_INT(intake_client_send_batch_encoded(c, (uint64_t)b + 1, evs, BATCH, flags), 0);
    in_flight++;
  }
  while (in_flight > 0) {
    Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
    check_ack(ack, acked);
    intake__v1__batch_ack__free_unpacked(ack, NULL);
    in_flight--;
  }
  int64_t t1 = itest_now_ms();
  itest_log("%d batches of %d events acked (window %u)", N_BATCHES, BATCH, window);

  for (int t = 0; t < N_TOPICS; t++) {
    size_t want = 0;
    for (int i = 0; i < N_EVENTS; i++)
      want += sent[i].route[t] != NULL;
    itest_records_t rs = itest_consume(itest_bootstrap(), topics[t], want, 30000);
    itest_log("%s: %zu records (expected %zu)", topics[t], rs.n, want);
    for (size_t i = 0; i < rs.n; i++)
      check_record(&rs.v[i], t, t0, t1);
    IT_CHECK_INT(rs.n, want);
    check_order(&rs);
    itest_records_free(&rs);
  }
  for (int i = 0; i < N_EVENTS; i++)
    for (int t = 0; t < N_TOPICS; t++)
      IT_CHECKF(!sent[i].route[t] || sent[i].seen[t], "event %s/%s missing from %s",
                sent[i].ev->source_id, sent[i].ev->event_id, topics[t]);

  intake_client_close(c);
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  for (int i = 0; i < N_EVENTS; i++) {
    itest_event_free(sent[i].ev);
    free(sent[i].bytes.data);
  }
  itest_finish();
  return 0;
}
