/* intake-tail: follows intake topics and prints their events, for command-centre operators.
 *
 * Every record becomes one JSON line: where it is (topic, partition, offset, timestamp), its key
 * and headers, and the Event decoded with the generated protobuf-c code of proto/intake.proto,
 * in the same JSON shape as a route's `encoding: json` (encode/json.h). Records a route wrote as
 * JSON (content-type application/json) are passed through as they are. Filters select events by
 * type, severity, region prefix and source; --summary prints a table of events per second by
 * topic and type instead, refreshed every second.
 *
 * Without -g the consumer takes every partition of the topics directly (no consumer group, no
 * committed offsets: nothing is left behind on the brokers); with -g it joins that group. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "config/config.h"
#include "core/wbuf.h"
#include "intake.pb-c.h"

#define MAX_TOPICS 64
#define MAX_TYPES 64
#define MAX_ROWS 10000 /* summary rows (topic, type); later pairs count as "(other)" */

typedef struct {
  const char *brokers;
  const char *topics[MAX_TOPICS];
  int n_topics;
  const char *group;
  int from_beginning;
  const char *types[MAX_TYPES];
  int n_types;
  int severity_filter;
  uint32_t sev_min, sev_max;
  const char *region;
  const char *source;
  int summary;
  uint64_t count;              /* -n: 0 = no limit */
  uint64_t timeout_ms;         /* --timeout: 0 = none */
  const char *props[64];       /* -X name=value */
  int n_props;
} opts_t;

/* The fields the filters look at, from either encoding. */
typedef struct {
  int decoded;
  char type[256];
  char source[256];
  char region[64];
  int has_region;
  uint64_t severity;
} fields_t;

typedef struct {
  char *topic, *type;
  uint64_t total, last;        /* all time; at the previous refresh */
} row_t;

static volatile sig_atomic_t stop;
static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: intake-tail -b BROKERS -t TOPIC [-t TOPIC ...] [options]\n"
          "  -b, --brokers LIST        Kafka bootstrap servers, host:port[,host:port...]\n"
          "  -t, --topic NAME          a topic to follow (repeatable)\n"
          "  -g, --group ID            join consumer group ID (committed offsets); default: no\n"
          "                            group, every partition read directly\n"
          "      --from-beginning      start at the oldest record (default: new records only;\n"
          "                            with -g, where the group left off)\n"
          "      --type TYPE           only events of this type (repeatable: any of them)\n"
          "      --severity N|MIN-MAX  only events with severity in MIN..MAX\n"
          "      --region PREFIX       only events whose location.region starts with PREFIX\n"
          "      --source ID           only events of this source_id\n"
          "      --summary             print events/s per topic and type every second instead\n"
          "  -n, --count N             exit after N matching records\n"
          "      --timeout DURATION    exit after DURATION without a record (10s, 500ms; a bare\n"
          "                            number is seconds)\n"
          "  -X NAME=VALUE             a librdkafka consumer property (repeatable)\n"
          "Output: one JSON object per line: topic, partition, offset, timestamp_ms, key,\n"
          "headers, and event (the intake.v1.Event; see README \"intake-tail\").\n");
}

static int parse_u64(const char *s, uint64_t *v) {
  char *end;
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  *v = strtoull(s, &end, 10);
  return errno || *end ? -1 : 0;
}

static int parse_args(int argc, char **argv, opts_t *o) {
  enum { O_FROM = 256, O_TYPE, O_SEV, O_REGION, O_SOURCE, O_SUMMARY, O_TIMEOUT };
  static const struct option longs[] = {
      {"brokers", required_argument, 0, 'b'},  {"topic", required_argument, 0, 't'},
      {"group", required_argument, 0, 'g'},    {"from-beginning", no_argument, 0, O_FROM},
      {"type", required_argument, 0, O_TYPE},  {"severity", required_argument, 0, O_SEV},
      {"region", required_argument, 0, O_REGION}, {"source", required_argument, 0, O_SOURCE},
      {"summary", no_argument, 0, O_SUMMARY},  {"count", required_argument, 0, 'n'},
      {"timeout", required_argument, 0, O_TIMEOUT}, {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "b:t:g:n:X:h", longs, NULL)) != -1) {
    switch (c) {
    case 'b': o->brokers = optarg; break;
    case 't':
      if (o->n_topics == MAX_TOPICS)
        return -1;
      o->topics[o->n_topics++] = optarg;
      break;
    case 'g': o->group = optarg; break;
    case O_FROM: o->from_beginning = 1; break;
    case O_TYPE:
      if (o->n_types == MAX_TYPES)
        return -1;
      o->types[o->n_types++] = optarg;
      break;
    case O_SEV: {
      uint64_t lo, hi;
      char buf[64];
      snprintf(buf, sizeof buf, "%s", optarg);
      char *dash = strchr(buf, '-');
      if (dash)
        *dash = '\0';
      if (parse_u64(buf, &lo) < 0 || (dash ? parse_u64(dash + 1, &hi) : (hi = lo, 0)) < 0 ||
          lo > hi || hi > UINT32_MAX) {
        fprintf(stderr, "intake-tail: --severity: expected N or MIN-MAX (got \"%s\")\n", optarg);
        return -1;
      }
      o->severity_filter = 1;
      o->sev_min = (uint32_t)lo, o->sev_max = (uint32_t)hi;
      break;
    }
    case O_REGION: o->region = optarg; break;
    case O_SOURCE: o->source = optarg; break;
    case O_SUMMARY: o->summary = 1; break;
    case 'n':
      if (parse_u64(optarg, &o->count) < 0) {
        fprintf(stderr, "intake-tail: -n: expected a whole number (got \"%s\")\n", optarg);
        return -1;
      }
      break;
    case O_TIMEOUT: {
      uint64_t v;
      if (parse_u64(optarg, &v) == 0)
        o->timeout_ms = v * 1000;
      else if (intake_parse_duration_ms(optarg, &o->timeout_ms) < 0) {
        fprintf(stderr, "intake-tail: --timeout: expected a duration like 10s (got \"%s\")\n",
                optarg);
        return -1;
      }
      break;
    }
    case 'X':
      if (o->n_props == 64 || !strchr(optarg, '='))
        return -1;
      o->props[o->n_props++] = optarg;
      break;
    case 'h': usage(stdout); exit(0);
    default: return -1;
    }
  }
  if (optind != argc || !o->brokers || o->n_topics == 0)
    return -1;
  return 0;
}

/* ---- JSON values of records a route wrote as JSON --------------------------------------- */

/* Skips one JSON value at p (already validated text from our encoder, but read defensively);
 * returns the position after it, or NULL. */
static const char *skip_value(const char *p, const char *end, int depth) {
  if (p >= end || depth > 32)
    return NULL;
  if (*p == '"') {
    for (p++; p < end; p++) {
      if (*p == '\\')
        p++;
      else if (*p == '"')
        return p + 1;
    }
    return NULL;
  }
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p++;
    while (p < end && *p != close) {
      if (!(p = skip_value(p, end, depth + 1)))
        return NULL;
      if (p < end && (*p == ':' || *p == ','))
        p++;
    }
    return p < end ? p + 1 : NULL;
  }
  while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ':')
    p++;
  return p;
}

/* Copies the JSON string at p (quoted) into out, unescaping the simple escapes (a \u escape
 * becomes '?': filters compare plain ASCII codes). */
static void copy_string(const char *p, const char *end, char *out, size_t cap) {
  size_t n = 0;
  if (p >= end || *p != '"') {
    out[0] = '\0';
    return;
  }
  for (p++; p < end && *p != '"' && n + 1 < cap; p++) {
    if (*p == '\\' && p + 1 < end) {
      p++;
      if (*p == 'u') {
        out[n++] = '?';
        p += 4;
        continue;
      }
      out[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
    } else {
      out[n++] = *p;
    }
  }
  out[n] = '\0';
}

/* The filter fields of a JSON event: top-level "type", "source_id", "severity" and
 * "location"."region". */
static void json_fields(const char *p, const char *end, fields_t *f, int depth) {
  if (p >= end || *p != '{')
    return;
  p++;
  while (p < end && *p == '"') {
    const char *key = p;
    if (!(p = skip_value(p, end, 1)) || p >= end || *p != ':')
      return;
    const char *val = ++p;
    if (!(p = skip_value(p, end, 1)))
      return;
    if (depth == 0 && !strncmp(key, "\"type\":", 7))
      copy_string(val, p, f->type, sizeof f->type);
    else if (depth == 0 && !strncmp(key, "\"source_id\":", 12))
      copy_string(val, p, f->source, sizeof f->source);
    else if (depth == 0 && !strncmp(key, "\"severity\":", 11))
      f->severity = strtoull(val, NULL, 10);
    else if (depth == 0 && !strncmp(key, "\"location\":", 11))
      json_fields(val, p, f, 1);
    else if (depth == 1 && !strncmp(key, "\"region\":", 9)) {
      copy_string(val, p, f->region, sizeof f->region);
      f->has_region = 1;
    }
    if (p < end && *p == ',')
      p++;
  }
  if (depth == 0)
    f->decoded = 1;
}

/* ---- protobuf values ----------------------------------------------------------------------- */

static void put_double(intake_wbuf_t *w, double v) {
  if (v != v) {
    intake_wbuf_puts(w, "\"NaN\"");
  } else if (v > 1.7976931348623157e308 || v < -1.7976931348623157e308) {
    intake_wbuf_puts(w, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  } else {
    char tmp[32];
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(tmp, sizeof tmp, "%.*g", prec, v);
      if (prec == 17 || strtod(tmp, NULL) == v)
        break;
    }
    intake_wbuf_puts(w, tmp);
  }
}

static void put_str(intake_wbuf_t *w, const char *s) { intake_wbuf_json_str(w, s, strlen(s)); }

/* The Event as JSON, in the shape of intake_event_to_json() (encode/json.h). */
static void event_json(intake_wbuf_t *w, const Intake__V1__Event *e) {
  intake_wbuf_puts(w, "{\"source_id\":");
  put_str(w, e->source_id);
  intake_wbuf_puts(w, ",\"source_kind\":");
  const ProtobufCEnumValue *k =
      protobuf_c_enum_descriptor_get_value(&intake__v1__source_kind__descriptor, e->source_kind);
  if (k)
    put_str(w, k->name);
  else
    intake_wbuf_i64(w, e->source_kind);
  intake_wbuf_puts(w, ",\"event_id\":");
  put_str(w, e->event_id);
  intake_wbuf_puts(w, ",\"seq\":\"");
  intake_wbuf_u64(w, e->seq);
  intake_wbuf_puts(w, "\",\"type\":");
  put_str(w, e->type);
  intake_wbuf_puts(w, ",\"severity\":");
  intake_wbuf_u64(w, e->severity);
  intake_wbuf_puts(w, ",\"time_ms\":\"");
  intake_wbuf_i64(w, e->time_ms);
  intake_wbuf_putc(w, '"');
  if (e->location) {
    intake_wbuf_puts(w, ",\"location\":{\"lon\":");
    put_double(w, e->location->lon);
    intake_wbuf_puts(w, ",\"lat\":");
    put_double(w, e->location->lat);
    intake_wbuf_puts(w, ",\"region\":");
    put_str(w, e->location->region);
    intake_wbuf_putc(w, '}');
  }
  intake_wbuf_puts(w, ",\"attributes\":{");
  int first = 1;
  for (size_t i = 0; i < e->n_attributes; i++) {
    int repeated = 0; /* a key sent twice: the last one wins, as in the encoder */
    for (size_t j = i + 1; j < e->n_attributes && !repeated; j++)
      repeated = !strcmp(e->attributes[i]->key, e->attributes[j]->key);
    if (repeated)
      continue;
    if (!first)
      intake_wbuf_putc(w, ',');
    first = 0;
    put_str(w, e->attributes[i]->key);
    intake_wbuf_putc(w, ':');
    put_str(w, e->attributes[i]->value);
  }
  intake_wbuf_puts(w, "},\"payload\":\"");
  intake_wbuf_base64(w, e->payload.data, e->payload.len);
  intake_wbuf_puts(w, e->clear ? "\",\"clear\":true}" : "\",\"clear\":false}");
}

/* ---- records ------------------------------------------------------------------------------- */

static const char *header(const rd_kafka_message_t *m, const char *name, size_t *len) {
  rd_kafka_headers_t *h = NULL;
  const void *v;
  if (rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, len))
    return NULL;
  return v;
}

static int matches(const opts_t *o, const fields_t *f) {
  int any = o->n_types || o->severity_filter || o->region || o->source;
  if (!any)
    return 1;
  if (!f->decoded)
    return 0;
  if (o->n_types) {
    int ok = 0;
    for (int i = 0; i < o->n_types && !ok; i++)
      ok = !strcmp(o->types[i], f->type);
    if (!ok)
      return 0;
  }
  if (o->severity_filter && (f->severity < o->sev_min || f->severity > o->sev_max))
    return 0;
  if (o->region && (!f->has_region || strncmp(f->region, o->region, strlen(o->region))))
    return 0;
  if (o->source && strcmp(o->source, f->source))
    return 0;
  return 1;
}

/* Builds the record's JSON line into w (when w is not NULL) and fills *f. */
static void record(const rd_kafka_message_t *m, intake_wbuf_t *w, fields_t *f) {
  memset(f, 0, sizeof *f);
  size_t ctl = 0;
  const char *ct = header(m, "content-type", &ctl);
  int is_json = ct && ctl == 16 && !memcmp(ct, "application/json", 16);
  Intake__V1__Event *e = NULL;
  if (is_json) {
    json_fields(m->payload, (const char *)m->payload + m->len, f, 0);
  } else if ((e = intake__v1__event__unpack(NULL, m->len, m->payload)) != NULL) {
    f->decoded = 1;
    snprintf(f->type, sizeof f->type, "%s", e->type);
    snprintf(f->source, sizeof f->source, "%s", e->source_id);
    f->severity = e->severity;
    if (e->location) {
      f->has_region = 1;
      snprintf(f->region, sizeof f->region, "%s", e->location->region);
    }
  }
  if (w) {
    intake_wbuf_puts(w, "{\"topic\":");
    put_str(w, rd_kafka_topic_name(m->rkt));
    intake_wbuf_printf(w, ",\"partition\":%d,\"offset\":%lld", (int)m->partition,
                       (long long)m->offset);
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    if (ts >= 0)
      intake_wbuf_printf(w, ",\"timestamp_ms\":%lld", (long long)ts);
    intake_wbuf_puts(w, ",\"key\":");
    if (m->key)
      intake_wbuf_json_str(w, m->key, m->key_len);
    else
      intake_wbuf_puts(w, "null");
    intake_wbuf_puts(w, ",\"headers\":{");
    rd_kafka_headers_t *h = NULL;
    if (!rd_kafka_message_headers(m, &h)) {
      const char *name;
      const void *val;
      size_t len;
      int first = 1;
      for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &val, &len); i++) {
        /* A name sent twice: the last value (headers intaked writes are unique). */
        const void *last;
        size_t last_len;
        if (!rd_kafka_header_get_last(h, name, &last, &last_len) && last != val)
          continue;
        if (!first)
          intake_wbuf_putc(w, ',');
        first = 0;
        put_str(w, name);
        intake_wbuf_putc(w, ':');
        if (val)
          intake_wbuf_json_str(w, val, len);
        else
          intake_wbuf_puts(w, "null");
      }
    }
    intake_wbuf_putc(w, '}');
    if (is_json) {
      intake_wbuf_puts(w, ",\"event\":");
      intake_wbuf_put(w, m->payload, m->len);
    } else if (e) {
      intake_wbuf_puts(w, ",\"event\":");
      event_json(w, e);
    } else {
      intake_wbuf_puts(w, ",\"event\":null,\"error\":\"value is not an intake.v1.Event\","
                          "\"value_base64\":\"");
      intake_wbuf_base64(w, m->payload, m->len);
      intake_wbuf_putc(w, '"');
    }
    intake_wbuf_puts(w, "}\n");
  }
  if (e)
    intake__v1__event__free_unpacked(e, NULL);
}

/* ---- summary ------------------------------------------------------------------------------- */

static row_t *rows;
static size_t n_rows;

static void count_row(const char *topic, const char *type) {
  for (size_t i = 0; i < n_rows; i++)
    if (!strcmp(rows[i].topic, topic) && !strcmp(rows[i].type, type)) {
      rows[i].total++;
      return;
    }
  if (n_rows == MAX_ROWS) {
    count_row("(other)", "(other)");
    return;
  }
  if ((n_rows & (n_rows - 1)) == 0) {
    row_t *r = realloc(rows, (n_rows ? n_rows * 2 : 16) * sizeof *r);
    if (!r)
      return;
    rows = r;
  }
  rows[n_rows].topic = strdup(topic);
  rows[n_rows].type = strdup(type);
  rows[n_rows].total = 1;
  rows[n_rows].last = 0;
  n_rows++;
}

static int row_cmp(const void *a, const void *b) {
  const row_t *x = a, *y = b;
  int c = strcmp(x->topic, y->topic);
  return c ? c : strcmp(x->type, y->type);
}

static void print_summary(double secs, int final) {
  qsort(rows, n_rows, sizeof *rows, row_cmp);
  if (isatty(STDOUT_FILENO) && !final)
    fputs("\033[H\033[2J", stdout); /* home, clear: a live table without curses */
  time_t now = time(NULL);
  struct tm tm;
  char ts[32];
  gmtime_r(&now, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  printf("intake-tail %s %s\n", final ? "final" : "summary", ts);
  printf("%-40s %-32s %10s %12s\n", "TOPIC", "TYPE", "EVENTS/S", "TOTAL");
  uint64_t total = 0, delta = 0;
  for (size_t i = 0; i < n_rows; i++) {
    uint64_t d = rows[i].total - rows[i].last;
    printf("%-40s %-32s %10.1f %12llu\n", rows[i].topic, rows[i].type, secs > 0 ? d / secs : 0.0,
           (unsigned long long)rows[i].total);
    total += rows[i].total;
    delta += d;
    rows[i].last = rows[i].total;
  }
  printf("%-40s %-32s %10.1f %12llu\n\n", "TOTAL", "", secs > 0 ? delta / secs : 0.0,
         (unsigned long long)total);
  fflush(stdout);
}

/* ---- consumer ------------------------------------------------------------------------------ */

static int set(rd_kafka_conf_t *conf, const char *k, const char *v) {
  char err[512];
  if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
    fprintf(stderr, "intake-tail: %s: %s\n", k, err);
    return -1;
  }
  return 0;
}

/* Without a group: every partition of every topic, from the start or the end. */
static int assign_all(rd_kafka_t *rk, const opts_t *o) {
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
  int rc = -1;
  for (int i = 0; i < o->n_topics; i++) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->topics[i], NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
    /* A topic the broker does not know yet is retried until the idle timeout (or 10 s). */
    int64_t give_up = mono_ms() + (int64_t)(o->timeout_ms ? o->timeout_ms : 10000);
    while (!stop) {
      err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
      if (!err && md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0)
        break;
      if (!err)
        err = md->topic_cnt == 1 && md->topics[0].err ? md->topics[0].err
                                                       : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
      if (md)
        rd_kafka_metadata_destroy(md);
      md = NULL;
      if (mono_ms() > give_up)
        break;
      usleep(200 * 1000);
    }
    rd_kafka_topic_destroy(rkt);
    if (!md) {
      fprintf(stderr, "intake-tail: topic %s: %s\n", o->topics[i], rd_kafka_err2str(err));
      goto out;
    }
    for (int p = 0; p < md->topics[0].partition_cnt; p++)
      rd_kafka_topic_partition_list_add(parts, o->topics[i], md->topics[0].partitions[p].id)
          ->offset = o->from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
    rd_kafka_metadata_destroy(md);
  }
  rd_kafka_resp_err_t err = rd_kafka_assign(rk, parts);
  if (err)
    fprintf(stderr, "intake-tail: assign: %s\n", rd_kafka_err2str(err));
  else
    rc = 0;
out:
  rd_kafka_topic_partition_list_destroy(parts);
  return rc;
}

int main(int argc, char **argv) {
  opts_t o;
  memset(&o, 0, sizeof o);
  if (parse_args(argc, argv, &o) < 0) {
    usage(stderr);
    return 2;
  }
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (set(conf, "bootstrap.servers", o.brokers) || set(conf, "client.id", "intake-tail") ||
      set(conf, "enable.partition.eof", "false") ||
      (o.group && (set(conf, "group.id", o.group) ||
                   set(conf, "auto.offset.reset", o.from_beginning ? "earliest" : "latest"))) ||
      /* librdkafka 2.0 wants a group.id even for assign(); without subscribe() and commits
       * it never joins that group or stores anything under it. */
      (!o.group && (set(conf, "group.id", "intake-tail") ||
                    set(conf, "enable.auto.commit", "false")))) {
    rd_kafka_conf_destroy(conf);
    return 2;
  }
  for (int i = 0; i < o.n_props; i++) {
    char name[256];
    const char *eq = strchr(o.props[i], '=');
    snprintf(name, sizeof name, "%.*s", (int)(eq - o.props[i]), o.props[i]);
    if (set(conf, name, eq + 1)) {
      rd_kafka_conf_destroy(conf);
      return 2;
    }
  }
  char err[512];
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (!rk) {
    fprintf(stderr, "intake-tail: %s\n", err);
    return 1;
  }
  rd_kafka_poll_set_consumer(rk);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, on_signal); /* a closed pipe (| head) ends us quietly */

  int rc = 0;
  if (o.group) {
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(o.n_topics);
    for (int i = 0; i < o.n_topics; i++)
      rd_kafka_topic_partition_list_add(subs, o.topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
      fprintf(stderr, "intake-tail: subscribe: %s\n", rd_kafka_err2str(e));
      rc = 1;
    }
  } else if (assign_all(rk, &o) < 0) {
    rc = 1;
  }

  size_t cap = 1 << 16;
  char *line = malloc(cap);
  uint64_t shown = 0;
  int64_t last_record = mono_ms(), last_table = mono_ms();
  while (rc == 0 && !stop && line) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    int64_t now = mono_ms();
    if (o.summary && now - last_table >= 1000) {
      print_summary((double)(now - last_table) / 1000.0, 0);
      last_table = now;
    }
    if (!m) {
      if (o.timeout_ms && now - last_record >= (int64_t)o.timeout_ms)
        break;
      continue;
    }
    if (m->err) {
      fprintf(stderr, "intake-tail: %s\n", rd_kafka_message_errstr(m));
      if (m->err == RD_KAFKA_RESP_ERR__FATAL || m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        rc = 1;
      rd_kafka_message_destroy(m);
      continue;
    }
    last_record = now;
    fields_t f;
    if (o.summary) {
      record(m, NULL, &f);
      if (matches(&o, &f)) {
        count_row(rd_kafka_topic_name(m->rkt), f.decoded ? f.type : "(undecodable)");
        shown++;
      }
    } else {
      intake_wbuf_t w;
      intake_wbuf_init(&w, line, cap);
      record(m, &w, &f);
      if (!intake_wbuf_fits(&w)) { /* a big record: once more with the exact size */
        char *nl = realloc(line, w.len + 1);
        if (nl) {
          line = nl, cap = w.len + 1;
          intake_wbuf_init(&w, line, cap);
          record(m, &w, &f);
        }
      }
      if (matches(&o, &f) && intake_wbuf_fits(&w)) {
        fwrite(line, 1, w.len, stdout);
        fflush(stdout);
        shown++;
      }
    }
    rd_kafka_message_destroy(m);
    if (o.count && shown >= o.count)
      break;
  }
  if (o.summary)
    print_summary((double)(mono_ms() - last_table) / 1000.0, 1);
  free(line);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  for (size_t i = 0; i < n_rows; i++) {
    free(rows[i].topic);
    free(rows[i].type);
  }
  free(rows);
  return rc;
}
