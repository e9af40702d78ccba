/* intake-tail against the real broker: events sent through intaked (and one record a JSON route
 * would write, produced here directly) come out as one JSON line per record whose place (topic,
 * partition, offset), key and headers are the record's and whose "event" is exactly the JSON
 * encoding of the record value (encode/json.h); the type, severity, region and source filters
 * select exactly the right records, on protobuf and JSON values alike; --summary counts per
 * topic and type; -n stops after N records. */
#include <stdlib.h>

#include <librdkafka/rdkafka.h>

#include "decode/event.h"
#include "encode/json.h"
#include "itest.h"

static const char CONFIG[] =
    "listen:\n"
    "  port: ${PORT}\n"
    "admin:\n"
    "  enabled: false\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "  rules:\n"
    "    - name: fire\n"
    "      match: {type: smoke.alarm}\n"
    "      topics: ${P}.fire\n";

#define N_EVENTS 9
#define N_RECORDS (N_EVENTS + 1)

typedef struct {
  char **v;
  size_t n;
} lines_t;

/* Runs intake-tail with `args` (after -b and the topics) and returns its stdout lines. */
static lines_t tail(const char *args) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s -b %s -t %s -t %s -t %s --from-beginning %s", ITEST_TAIL,
           itest_bootstrap(), itest_topic("events"), itest_topic("fire"), itest_topic("json"),
           args);
  FILE *f = popen(cmd, "r");
  IT_CHECK(f != NULL);
  lines_t l = {0};
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) > 0) {
    if (line[n - 1] == '\n')
      line[n - 1] = '\0';
    l.v = realloc(l.v, (l.n + 1) * sizeof *l.v);
    l.v[l.n++] = strdup(line);
  }
  free(line);
  int st = pclose(f);
  IT_CHECKF(st == 0, "intake-tail %s: exit status %d", args, st);
  return l;
}

static void lines_free(lines_t *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
}

/* The expected JSON line tail for a record: `"event":…}`. */
static char *expected_event(const itest_record_t *r) {
  const char *ct = itest_record_header(r, "content-type");
  size_t cap = r->value_len * 6 + 1024;
  char *s = malloc(cap + 16);
  if (ct && !strcmp(ct, "application/json")) {
    snprintf(s, cap + 16, ",\"event\":%.*s}", (int)r->value_len, (const char *)r->value);
    return s;
  }
  intake_event_t ev;
  IT_CHECK(intake_event_parse(r->value, r->value_len, &ev) == 0);
  strcpy(s, ",\"event\":");
  size_t n = intake_event_to_json(&ev, s + 9, cap);
  IT_CHECK(n < cap);
  strcat(s, "}");
  return s;
}

static const itest_record_t *find_record(const itest_records_t *rs, const char *line) {
  char topic[256];
  long long part, off;
  IT_CHECKF(sscanf(line, "{\"topic\":\"%255[^\"]\",\"partition\":%lld,\"offset\":%lld", topic,
                   &part, &off) == 3,
            "line does not start with topic, partition, offset: %s", line);
  for (size_t i = 0; i < rs->n; i++)
    if (!strcmp(rs->v[i].topic, topic) && rs->v[i].partition == part && rs->v[i].offset == off)
      return &rs->v[i];
  IT_FAIL("no record at %s/%lld/%lld: %s", topic, part, off, line);
}

/* Every line is a record of `rs`, each at most once, printed correctly; returns the count. */
static size_t check_lines(const lines_t *l, const itest_records_t *rs, const char *must_contain) {
  int seen[N_RECORDS * 2] = {0};
  for (size_t i = 0; i < l->n; i++) {
    const char *line = l->v[i];
    const itest_record_t *r = find_record(rs, line);
    int idx = (int)(r - rs->v);
    IT_CHECKF(!seen[idx]++, "record printed twice: %s", line);
    char want[512];
    snprintf(want, sizeof want, "\"key\":\"%s\",\"headers\":{", r->key);
    IT_CHECKF(strstr(line, want) != NULL, "key/headers: want %s in %s", want, line);
    if (!itest_record_header(r, "content-type") ||
        strcmp(itest_record_header(r, "content-type"), "application/json")) {
      IT_CHECKF(strstr(line, "\"gateway_id\":\"gw-tail\"") != NULL, "no gateway_id in %s", line);
      IT_CHECKF(strstr(line, "\"schema\":\"intake.v1.Event\"") != NULL, "no schema in %s", line);
    }
    char *ev = expected_event(r);
    size_t ll = strlen(line), el = strlen(ev);
    IT_CHECKF(ll > el && !strcmp(line + ll - el, ev), "event JSON:\n got %s\nwant …%s", line, ev);
    free(ev);
    if (must_contain)
      IT_CHECKF(strstr(line, must_contain) != NULL, "filtered line without %s: %s", must_contain,
                line);
  }
  return l->n;
}

static void produce_json_record(const char *topic, const char *value, const char *key) {
  char err[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  IT_CHECK(rd_kafka_conf_set(conf, "bootstrap.servers", itest_bootstrap(), err, sizeof err) ==
           RD_KAFKA_CONF_OK);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  IT_CHECKF(rk != NULL, "producer: %s", err);
  rd_kafka_headers_t *h = rd_kafka_headers_new(2);
  rd_kafka_header_add(h, "content-type", -1, "application/json", -1);
  rd_kafka_header_add(h, "schema", -1, "intake.v1.Event", -1);
  IT_CHECK(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                             RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                             RD_KAFKA_V_END) == 0);
  IT_CHECK(rd_kafka_flush(rk, 10000) == 0);
  rd_kafka_destroy(rk);
}

int main(void) {
  itest_init("tail", true, 170);
  const char *topics[] = {itest_topic("events"), itest_topic("fire"), itest_topic("json")};
  itest_create_topics(itest_bootstrap(), topics, 3, 2);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);

  /* i % 3: 0 smoke alarm (fire), 1 water level, 2 camera intrusion without a location. */
  intake_client_t *c = itest_connect(&d, "gw-tail", NULL);
  Intake__V1__Event *ev[N_EVENTS];
  int64_t now = itest_now_ms();
  for (int i = 0; i < N_EVENTS; i++) {
    static const char *types[] = {"smoke.alarm", "water.level", "gb28181.alarm.6"};
    static const char *sources[] = {"s1", "s2", "cam-3"};
    static const uint32_t sev[] = {1, 3, 2};
    char id[16];
    snprintf(id, sizeof id, "t-%d", i);
    ev[i] = itest_event_new(sources[i % 3], 1 + i % 3, id, (uint64_t)i / 3 + 1, types[i % 3],
                            sev[i % 3], now - 1000 - i);
    if (i % 3 == 0)
      itest_event_set_location(ev[i], 120.07, 29.31, "330782001");
    if (i % 3 == 1)
      itest_event_set_location(ev[i], 116.3, 39.9, "110105");
    itest_event_add_attr(ev[i], "note", "say \"hi\"\n\xe4\xb8\xad");
    if (i % 2)
      itest_event_set_payload(ev[i], "\x00\x01\xff", 3);
  }
  IT_CHECK(intake_client_send_batch(c, 1, ev, N_EVENTS, 0) == 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 20000);
  IT_CHECK_INT(ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  intake_client_close(c);

  /* What a route with encoding: json writes. */
  Intake__V1__Event *je = itest_event_new("json-src", 1, "j-1", 0, "smoke.alarm", 1, now);
  itest_event_set_location(je, 120.1, 29.3, "3307820");
  ProtobufCBinaryData jb = itest_event_pack(je);
  intake_event_t view;
  IT_CHECK(intake_event_parse(jb.data, jb.len, &view) == 0);
  char json[4096];
  IT_CHECK(intake_event_to_json(&view, json, sizeof json) < sizeof json);
  produce_json_record(itest_topic("json"), json, "json-src");
  free(jb.data);
  itest_event_free(je);

  itest_consumer_t *kc = itest_consumer_new(itest_bootstrap(), topics, 3);
  itest_consumer_catch_up(kc, 20000);
  const itest_records_t *rs = itest_consumer_records(kc);
  IT_CHECK_INT(rs->n, N_RECORDS);

  lines_t l = tail("--timeout 3");
  IT_CHECK_INT(check_lines(&l, rs, NULL), N_RECORDS);
  lines_free(&l);

  struct {
    const char *args, *must;
    size_t want;
  } filters[] = {
      {"--type smoke.alarm", "\"type\":\"smoke.alarm\"", 4},
      {"--severity 2-3", NULL, 6},
      {"--severity 3", "\"severity\":3,", 3},
      {"--region 3307", "\"region\":\"3307", 4},
      {"--source s2", "\"source_id\":\"s2\"", 3},
      {"--type smoke.alarm --source json-src", "\"source_id\":\"json-src\"", 1},
      {"--type water.level --type gb28181.alarm.6 --region 110", "\"type\":\"water.level\"", 3},
  };
  for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
    char args[256];
    snprintf(args, sizeof args, "%s --timeout 3", filters[i].args);
    l = tail(args);
    size_t n = check_lines(&l, rs, filters[i].must);
    IT_CHECKF(n == filters[i].want, "intake-tail %s: %zu lines, want %zu", filters[i].args, n,
              filters[i].want);
    if (strstr(filters[i].args, "2-3"))
      for (size_t j = 0; j < l.n; j++)
        IT_CHECK(strstr(l.v[j], "\"severity\":2,") || strstr(l.v[j], "\"severity\":3,"));
    lines_free(&l);
  }

  /* -n stops early. */
  l = tail("-n 2 --timeout 10");
  IT_CHECK_INT(check_lines(&l, rs, NULL), 2);
  lines_free(&l);

  /* The summary's final table. */
  l = tail("--summary --timeout 3");
  int found_total = 0, found_fire = 0, found_json = 0;
  for (size_t i = 0; i < l.n; i++) {
    char a[256], b[256];
    unsigned long long total;
    double rate;
    if (!strncmp(l.v[i], "TOTAL ", 6) && sscanf(l.v[i], "TOTAL %lf %llu", &rate, &total) == 2)
      found_total = total == N_RECORDS;
    else if (sscanf(l.v[i], "%255s %255s %lf %llu", a, b, &rate, &total) == 4) {
      if (!strcmp(a, itest_topic("fire")) && !strcmp(b, "smoke.alarm") && total == 3)
        found_fire = 1;
      if (!strcmp(a, itest_topic("json")) && !strcmp(b, "smoke.alarm") && total == 1)
        found_json = 1;
    }
  }
  if (!(found_total && found_fire && found_json))
    for (size_t i = 0; i < l.n; i++)
      itest_log("summary: %s", l.v[i]);
  IT_CHECKF(found_total && found_fire && found_json, "summary table: total %d fire %d json %d",
            found_total, found_fire, found_json);
  lines_free(&l);

  itest_consumer_free(kc);
  for (int i = 0; i < N_EVENTS; i++)
    itest_event_free(ev[i]);
  IT_CHECK_INT(itest_daemon_stop(&d, 20000), 0);
  itest_finish();
  return 0;
}
