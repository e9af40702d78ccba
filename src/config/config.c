/* intaked's configuration: one table of keys (name, type, default, bounds), a YAML loader
 * (libyaml's document API) that walks the file against it, then cross-field checks.
 *
 * Errors read "file:line: key.path: message". The loader keeps going after an error so that
 * the message it returns is the earliest one by line, whatever order the checks ran in. */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <yaml.h>

#include "decode/event.h"

/* ---- units ------------------------------------------------------------------------------ */

#define MS 1ULL
#define SEC (1000 * MS)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define TIB (1024 * GIB)

typedef struct {
  const char *suffix;
  uint64_t mul;
} unit_t;

static const unit_t duration_units[] = {
    {"ms", MS}, {"s", SEC}, {"m", MIN}, {"h", HOUR}, {"d", DAY}, {NULL, 0}};
static const unit_t byte_units[] = {
    {"", 1},           {"B", 1},         {"KB", 1000ULL}, {"MB", 1000000ULL},
    {"GB", 1000000000ULL}, {"TB", 1000000000000ULL}, {"KiB", KIB}, {"MiB", MIB},
    {"GiB", GIB},      {"TiB", TIB},     {NULL, 0}};

enum { PARSE_OK = 0, PARSE_SYNTAX = -1, PARSE_RANGE = -2 };

/* Decimal digits then one of `units`. strtoull alone would accept leading blanks, a sign
 * ("-1" wraps to 2^64-1) and "0x"; the first character must therefore be a digit. */
static int parse_with_unit(const char *s, const unit_t *units, uint64_t *out) {
  if (s == NULL || *s < '0' || *s > '9')
    return PARSE_SYNTAX;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  bool overflow = errno == ERANGE;
  for (const unit_t *u = units; u->suffix != NULL; u++) {
    if (strcmp(end, u->suffix) != 0)
      continue;
    if (overflow || v > UINT64_MAX / u->mul)
      return PARSE_RANGE;
    *out = v * u->mul;
    return PARSE_OK;
  }
  return PARSE_SYNTAX;
}

/* A bare "0" is accepted as a duration: zero needs no unit. Any other bare number is an error,
 * since "10" could mean 10 ms or 10 s. */
static int parse_duration(const char *s, uint64_t *ms) {
  if (s != NULL && strcmp(s, "0") == 0) {
    *ms = 0;
    return PARSE_OK;
  }
  return parse_with_unit(s, duration_units, ms);
}

static int parse_uint(const char *s, uint64_t *v) {
  static const unit_t none[] = {{"", 1}, {NULL, 0}};
  return parse_with_unit(s, none, v);
}

int intake_parse_duration_ms(const char *s, uint64_t *ms) {
  return parse_duration(s, ms) == PARSE_OK ? 0 : -1;
}

int intake_parse_bytes(const char *s, uint64_t *bytes) {
  return parse_with_unit(s, byte_units, bytes) == PARSE_OK ? 0 : -1;
}

/* Largest unit that divides v exactly: 86400000 -> "1d", 1500 -> "1500ms". */
static void format_duration(char *buf, size_t n, uint64_t ms) {
  static const unit_t units[] = {{"d", DAY}, {"h", HOUR}, {"m", MIN}, {"s", SEC}, {NULL, 0}};
  for (const unit_t *u = units; ms != 0 && u->suffix != NULL; u++)
    if (ms % u->mul == 0) {
      snprintf(buf, n, "%llu%s", (unsigned long long)(ms / u->mul), u->suffix);
      return;
    }
  if (ms == 0)
    snprintf(buf, n, "0");
  else
    snprintf(buf, n, "%llums", (unsigned long long)ms);
}

static void format_bytes(char *buf, size_t n, uint64_t b) {
  static const unit_t units[] = {{"TiB", TIB}, {"GiB", GIB}, {"MiB", MIB}, {"KiB", KIB}, {NULL, 0}};
  for (const unit_t *u = units; b != 0 && u->suffix != NULL; u++)
    if (b % u->mul == 0) {
      snprintf(buf, n, "%llu%s", (unsigned long long)(b / u->mul), u->suffix);
      return;
    }
  snprintf(buf, n, "%llu", (unsigned long long)b);
}

/* ---- string validators: return NULL, or what is wrong ----------------------------------- */

static const char *check_nonempty(const char *s) {
  return *s == '\0' ? "must not be empty" : NULL;
}

static const char *check_ip(const char *s) {
  unsigned char addr[16];
  if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1)
    return NULL;
  return "expected an IPv4 or IPv6 address";
}

/* Kafka's rule (clients' Topic.validate): 1..249 of [a-zA-Z0-9._-], not "." or "..". */
static const char *check_topic(const char *s) {
  static const char *msg = "invalid Kafka topic name: use 1..249 characters of a-z A-Z 0-9 . _ -";
  size_t n = strlen(s);
  if (n == 0 || n > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
    return msg;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '.' || *p == '_' || *p == '-'))
      return msg;
  return NULL;
}

/* Rule names go into a Kafka record header and metric labels; "default" names the default
 * route there (intake_router_rule_name()). */
static const char *check_rule_name(const char *s) {
  static const char *msg = "rule names are 1..64 characters of a-z A-Z 0-9 . _ -";
  size_t n = strlen(s);
  if (n == 0 || n > 64)
    return msg;
  if (strcmp(s, "default") == 0)
    return "\"default\" is reserved for the default route";
  return check_topic(s) == NULL ? NULL : msg;
}

/* Region codes are GB/T 2260 digits, at most 12 (proto Location.region). */
static const char *check_region_prefix(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 12 || strspn(s, "0123456789") != n)
    return "expected 1..12 digits";
  return NULL;
}

/* ---- the table -------------------------------------------------------------------------- */

typedef enum {
  T_STRING,     /* required, non-empty */
  T_OPT_STRING, /* null / ~ = unset (NULL) */
  T_UINT,
  T_DURATION,   /* stored in ms */
  T_BYTES,
  T_ENUM,       /* stored as the index into `names` */
  T_BOOL,       /* true | false, stored as bool */
  T_RULES,      /* routes.rules */
  T_PROPERTIES, /* kafka.properties */
} key_type_t;

#define KF_ZERO_OFF 1u /* 0 is accepted outside [min, max] and means "off" */

typedef struct {
  const char *name;                  /* "section.key" */
  key_type_t type;
  size_t offset;                     /* of the field in intake_config_t */
  size_t size;                       /* of the field, for numbers and enums: 2, 4 or 8 */
  uint64_t def;                      /* default of a number or enum */
  uint64_t min, max;                 /* bounds of a number, inclusive */
  const char *def_str;               /* default of a string; NULL = unset */
  const char *const *names;          /* enum values, NULL-terminated; index = stored value */
  const char *(*check)(const char *); /* extra check of a string value */
  unsigned flags;                    /* KF_* */
} key_def_t;

#define FIELD(f) offsetof(intake_config_t, f), sizeof(((intake_config_t *)0)->f)
#define STR(n, f, d, chk) {n, T_STRING, FIELD(f), 0, 0, 0, d, NULL, chk, 0}
#define OPT_STR(n, f, chk) {n, T_OPT_STRING, FIELD(f), 0, 0, 0, NULL, NULL, chk, 0}
#define UINT(n, f, d, lo, hi) {n, T_UINT, FIELD(f), d, lo, hi, NULL, NULL, NULL, 0}
#define DURATION(n, f, d, lo, hi, fl) {n, T_DURATION, FIELD(f), d, lo, hi, NULL, NULL, NULL, fl}
#define BYTES(n, f, d, lo, hi) {n, T_BYTES, FIELD(f), d, lo, hi, NULL, NULL, NULL, 0}
#define ENUM(n, f, d, names) {n, T_ENUM, FIELD(f), d, 0, 0, NULL, names, NULL, 0}
#define BOOL(n, f, d) {n, T_BOOL, FIELD(f), d, 0, 1, NULL, NULL, NULL, 0}

static const char *const kafka_modes[] = {"embedded", "brokers", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"logfmt", "json", NULL};
static const char *const encodings[] = {"protobuf", "json", NULL};
static const char *const tls_versions[] = {"1.2", "1.3", NULL};

_Static_assert(sizeof(intake_kafka_mode_t) == 4 && sizeof(intake_log_level_t) == 4 &&
                   sizeof(intake_log_format_t) == 4,
               "enum fields are written as 4-byte numbers");
_Static_assert(sizeof(bool) == 1, "bool fields are written as 1-byte numbers");

/* Every key, its default and its bounds. conf/intaked.yaml documents the same table. */
static const key_def_t keys[] = {
    STR("listen.address", listen_address, "127.0.0.1", check_ip),
    UINT("listen.port", listen_port, 7400, 0, 65535),
    UINT("listen.max_connections", max_connections, 1024, 1, 100000),
    DURATION("listen.idle_timeout", idle_timeout_ms, 120 * SEC, 1 * SEC, 1 * DAY, 0),
    DURATION("listen.keepalive", keepalive_ms, 60 * SEC, 1 * SEC, 2 * HOUR, KF_ZERO_OFF),
    BYTES("listen.write_backlog", write_backlog_bytes, 256 * KIB, 4 * KIB, 64 * MIB),
    OPT_STR("listen.tls.cert_file", tls_cert_file, check_nonempty),
    OPT_STR("listen.tls.key_file", tls_key_file, check_nonempty),
    OPT_STR("listen.tls.client_ca_file", tls_client_ca_file, check_nonempty),
    BOOL("listen.tls.require_client_cert", tls_require_client_cert, 0),
    BOOL("listen.tls.match_gateway_id", tls_match_gateway_id, 0),
    ENUM("listen.tls.min_version", tls_min_version, INTAKE_TLS_1_2, tls_versions),

    BYTES("gateway.max_frame_bytes", max_frame_bytes, 1 * MIB, 1 * KIB, 64 * MIB),
    UINT("gateway.max_batch_events", max_batch_events, 1000, 1, 100000),
    UINT("gateway.max_in_flight_batches", max_in_flight, 8, 1, 1024),
    DURATION("gateway.hello_timeout", hello_timeout_ms, 10 * SEC, 100 * MS, 5 * MIN, 0),
    OPT_STR("gateway.tokens_file", tokens_file, check_nonempty),
    UINT("gateway.rate_limit", rate_limit, 0, 0, 100000000),
    UINT("gateway.rate_burst", rate_burst, 0, 0, 1000000000),

    BYTES("validate.max_id_bytes", max_id_bytes, 64, 1, 1024),
    BYTES("validate.max_type_bytes", max_type_bytes, 64, 1, 1024),
    UINT("validate.max_attributes", max_attributes, 32, 0, 1024),
    BYTES("validate.max_attribute_bytes", max_attribute_bytes, 256, 1, 64 * KIB),
    /* Kafka's default message.max.bytes is ~1 MB and the payload travels in the record. */
    BYTES("validate.max_payload_bytes", max_payload_bytes, 4 * KIB, 0, 1 * MIB),
    /* Below librdkafka's default message.max.bytes (1,000,000) with room for key and headers:
     * a larger record would fail to produce on every retransmit. */
    BYTES("validate.max_event_bytes", max_event_bytes, 64 * KIB, 1 * KIB, 900 * KIB),
    DURATION("validate.max_future_skew", max_future_skew_ms, 10 * MIN, 1 * SEC, 1 * DAY, 0),
    DURATION("validate.max_event_age", max_event_age_ms, 7 * DAY, 1 * MIN, 365 * DAY, 0),
    BYTES("validate.max_decompressed_bytes", max_decompressed_bytes, 8 * MIB, 1 * KIB, 256 * MIB),

    DURATION("dedup.window", dedup_window_ms, 10 * MIN, 1 * SEC, 7 * DAY, 0),
    BYTES("dedup.memory", dedup_memory_bytes, 256 * MIB, 1 * MIB, 64 * GIB),
    BYTES("dedup.sequence_memory", dedup_seq_memory_bytes, 64 * MIB, 1 * MIB, 64 * GIB),
    OPT_STR("dedup.snapshot_path", dedup_snapshot_path, check_nonempty),
    DURATION("dedup.snapshot_interval", dedup_snapshot_interval_ms, 30 * SEC, 1 * SEC, 1 * DAY,
             KF_ZERO_OFF),

    STR("routes.default_topic", default_topic, "intake.events", check_topic),
    STR("routes.dead_letter_topic", dead_letter_topic, "intake.deadletter", check_topic),
    {"routes.rules", T_RULES, 0, 0, 0, 0, 0, NULL, NULL, NULL, 0},

    ENUM("kafka.mode", kafka_mode, INTAKE_KAFKA_EMBEDDED, kafka_modes),
    OPT_STR("kafka.brokers", kafka_brokers, check_nonempty),
    UINT("kafka.embedded_partitions", embedded_partitions, 4, 1, 64),
    DURATION("kafka.delivery_timeout", delivery_timeout_ms, 30 * SEC, 1 * SEC, 1 * HOUR, 0),
    {"kafka.properties", T_PROPERTIES, 0, 0, 0, 0, 0, NULL, NULL, NULL, 0},

    ENUM("log.level", log_level, INTAKE_LOG_INFO, log_levels),
    ENUM("log.format", log_format, INTAKE_LOG_FORMAT_LOGFMT, log_formats),
    DURATION("log.stats_interval", stats_interval_ms, 10 * SEC, 1 * SEC, 1 * DAY, KF_ZERO_OFF),

    BOOL("admin.enabled", admin_enabled, 1),
    STR("admin.address", admin_address, "127.0.0.1", check_ip),
    UINT("admin.port", admin_port, 9400, 0, 65535),
};

#define N_KEYS (sizeof keys / sizeof keys[0])

static const char *const sections[] = {"listen", "gateway", "validate", "dedup", "routes",
                                       "kafka",  "log",     "admin",    NULL};

/* librdkafka properties that intaked sets itself from its own keys or needs for its guarantees. */
static const struct {
  const char *name;
  const char *why;
} reserved_properties[] = {
    {"bootstrap.servers", "set by intaked from kafka.brokers"},
    {"metadata.broker.list", "set by intaked from kafka.brokers"},
    {"message.timeout.ms", "set by intaked from kafka.delivery_timeout"},
    {"delivery.timeout.ms", "set by intaked from kafka.delivery_timeout"},
    {"acks", "managed by intaked: gateways are acked only after acks=all delivery"},
    {"request.required.acks", "managed by intaked: gateways are acked only after acks=all delivery"},
    {"test.mock.num.brokers", "set by intaked from kafka.mode: embedded"},
};

static const struct {
  const char *name;
  uint32_t kind;
} kind_names[] = {
    {"sensor", INTAKE_KIND_SENSOR},   {"camera", INTAKE_KIND_CAMERA},
    {"alarm_input", INTAKE_KIND_ALARM_INPUT}, {"platform", INTAKE_KIND_PLATFORM},
    {"other", INTAKE_KIND_OTHER},
};

/* ---- loader state and errors ------------------------------------------------------------ */

#define NO_LINE UINT32_MAX

typedef struct {
  uint32_t *topic_lines; /* line of each topic of the rule */
} rule_meta_t;

typedef struct {
  const char *name;          /* file name for messages */
  yaml_document_t *doc;
  intake_config_t *cfg;
  char *err;
  size_t errlen;
  uint32_t err_line;         /* line of the message in err; NO_LINE = none yet */
  unsigned n_errors;
  bool oom;
  uint32_t key_line[N_KEYS]; /* where each key was set; 0 = not in the file */
  rule_meta_t *meta;         /* parallel to cfg->rules */
  rd_kafka_conf_t *rk_conf;  /* scratch conf that validates kafka.properties */
} loader_t;

/* Records an error at `line` (1-based; 0 = no line) unless an earlier one is kept already. */
__attribute__((format(printf, 4, 5))) static void fail(loader_t *ld, uint32_t line,
                                                        const char *key, const char *fmt, ...) {
  ld->n_errors++;
  if (ld->n_errors > 1 && line >= ld->err_line)
    return;
  ld->err_line = line;
  if (ld->err == NULL || ld->errlen == 0)
    return;
  int n;
  if (line == 0)
    n = snprintf(ld->err, ld->errlen, "%s: ", ld->name);
  else
    n = snprintf(ld->err, ld->errlen, "%s:%u: ", ld->name, line);
  if (key != NULL && *key != '\0' && n >= 0 && (size_t)n < ld->errlen)
    n += snprintf(ld->err + n, ld->errlen - (size_t)n, "%s: ", key);
  if (n >= 0 && (size_t)n < ld->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
}

static char *dup_str(loader_t *ld, const char *s) {
  char *d = strdup(s);
  if (d == NULL)
    ld->oom = true;
  return d;
}

/* Appends to a growable array of `size`-byte elements. Returns the new element or NULL. */
static void *push(loader_t *ld, void *arrayp, size_t *n, size_t size) {
  void **array = arrayp;
  if ((*n & (*n - 1)) == 0) { /* 0, 1, 2, 4, ...: grow to the next power of two */
    size_t cap = *n == 0 ? 1 : *n * 2;
    void *a = realloc(*array, cap * size);
    if (a == NULL) {
      ld->oom = true;
      return NULL;
    }
    *array = a;
  }
  void *e = (char *)*array + *n * size;
  memset(e, 0, size);
  (*n)++;
  return e;
}

/* ---- YAML node helpers ------------------------------------------------------------------ */

static uint32_t line_of(const yaml_node_t *n) {
  return (uint32_t)n->start_mark.line + 1;
}

static yaml_node_t *node_at(loader_t *ld, int index) {
  return yaml_document_get_node(ld->doc, index);
}

static const char *text(const yaml_node_t *n) {
  return (const char *)n->data.scalar.value;
}

/* A plain (unquoted) null: empty, ~ or null, as in YAML's core schema. */
static bool is_null(const yaml_node_t *n) {
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return false;
  const char *s = text(n);
  return *s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
         strcmp(s, "NULL") == 0;
}

/* A scalar whose text is usable as a C string (a "\0" escape would cut it short). */
static bool want_scalar(loader_t *ld, const yaml_node_t *n, const char *path) {
  if (n->type != YAML_SCALAR_NODE) {
    fail(ld, line_of(n), path, "expected a scalar");
    return false;
  }
  if (memchr(n->data.scalar.value, '\0', n->data.scalar.length) != NULL) {
    fail(ld, line_of(n), path, "must not contain a NUL character");
    return false;
  }
  return true;
}

/* True for a mapping; false, silently, for null (an empty section); false with an error for
 * anything else. */
static bool want_mapping(loader_t *ld, const yaml_node_t *n, const char *path) {
  if (n->type == YAML_MAPPING_NODE)
    return true;
  if (!is_null(n))
    fail(ld, line_of(n), path, "expected a mapping");
  return false;
}

static void join(char *buf, size_t n, const char *path, const char *key) {
  snprintf(buf, n, *path ? "%s.%s" : "%s%s", path, key);
}

/* Checks the key of `pair` (in mapping `map`): a scalar, not seen earlier in the mapping.
 * Returns the key node, or NULL (error reported) when the pair must be skipped. */
static yaml_node_t *pair_key(loader_t *ld, yaml_node_t *map, yaml_node_pair_t *pair,
                             const char *path) {
  yaml_node_t *k = node_at(ld, pair->key);
  if (k == NULL || k->type != YAML_SCALAR_NODE) {
    fail(ld, k ? line_of(k) : line_of(map), path, "expected a scalar key");
    return NULL;
  }
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < pair; p++) {
    yaml_node_t *e = node_at(ld, p->key);
    if (e != NULL && e->type == YAML_SCALAR_NODE && e->data.scalar.length == k->data.scalar.length &&
        memcmp(e->data.scalar.value, k->data.scalar.value, k->data.scalar.length) == 0) {
      char full[512];
      join(full, sizeof full, path, text(k));
      fail(ld, line_of(k), full, "duplicate key (first at line %u)", line_of(e));
      return NULL;
    }
  }
  return k;
}

#define FOR_PAIRS(map, pair)                                                                  \
  for (yaml_node_pair_t *pair = (map)->data.mapping.pairs.start;                               \
       pair < (map)->data.mapping.pairs.top; pair++)

/* ---- scalar keys ------------------------------------------------------------------------ */

static void set_number(intake_config_t *cfg, const key_def_t *k, uint64_t v) {
  char *p = (char *)cfg + k->offset;
  if (k->size == 1) {
    bool x = v != 0;
    memcpy(p, &x, 1);
  } else if (k->size == 2) {
    uint16_t x = (uint16_t)v;
    memcpy(p, &x, 2);
  } else if (k->size == 4) {
    uint32_t x = (uint32_t)v;
    memcpy(p, &x, 4);
  } else {
    memcpy(p, &v, 8);
  }
}

static void set_string(intake_config_t *cfg, const key_def_t *k, char *s) {
  char **field = (char **)(void *)((char *)cfg + k->offset);
  free(*field);
  *field = s;
}

static void format_value(char *buf, size_t n, key_type_t type, uint64_t v) {
  if (type == T_DURATION)
    format_duration(buf, n, v);
  else if (type == T_BYTES)
    format_bytes(buf, n, v);
  else
    snprintf(buf, n, "%llu", (unsigned long long)v);
}

static void load_number(loader_t *ld, const key_def_t *k, const yaml_node_t *n) {
  const char *s = text(n);
  uint64_t v = 0;
  int rc = k->type == T_DURATION ? parse_duration(s, &v)
           : k->type == T_BYTES  ? parse_with_unit(s, byte_units, &v)
                                 : parse_uint(s, &v);
  if (rc == PARSE_SYNTAX) {
    if (k->type == T_DURATION)
      fail(ld, line_of(n), k->name,
           "expected a duration: a whole number and a unit ms, s, m, h or d, e.g. 10s (got \"%s\")",
           s);
    else if (k->type == T_BYTES)
      fail(ld, line_of(n), k->name,
           "expected a size: a whole number and an optional unit B, KB, MB, GB, TB, KiB, MiB, GiB "
           "or TiB, e.g. 8MiB (got \"%s\")",
           s);
    else
      fail(ld, line_of(n), k->name, "expected a whole number (got \"%s\")", s);
    return;
  }
  bool zero_off = (k->flags & KF_ZERO_OFF) && rc == PARSE_OK && v == 0;
  if (!zero_off && (rc == PARSE_RANGE || v < k->min || v > k->max)) {
    char lo[32], hi[32];
    format_value(lo, sizeof lo, k->type, k->min);
    format_value(hi, sizeof hi, k->type, k->max);
    fail(ld, line_of(n), k->name, "must be %sbetween %s and %s (got %s)",
         (k->flags & KF_ZERO_OFF) ? "0 (off) or " : "", lo, hi, s);
    return;
  }
  set_number(ld->cfg, k, v);
}

/* YAML 1.2 core schema booleans; "yes"/"on" (YAML 1.1) are refused as ambiguous. */
static int parse_bool(const char *s, bool *out) {
  if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
    *out = true;
  else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
    *out = false;
  else
    return -1;
  return 0;
}

static void load_bool(loader_t *ld, const key_def_t *k, const yaml_node_t *n) {
  bool b;
  if (parse_bool(text(n), &b) < 0) {
    fail(ld, line_of(n), k->name, "expected true or false (got \"%s\")", text(n));
    return;
  }
  set_number(ld->cfg, k, b);
}

static void load_enum(loader_t *ld, const key_def_t *k, const yaml_node_t *n) {
  for (size_t i = 0; k->names[i] != NULL; i++)
    if (strcmp(text(n), k->names[i]) == 0) {
      set_number(ld->cfg, k, i);
      return;
    }
  char list[128] = "";
  for (size_t i = 0; k->names[i] != NULL; i++) {
    size_t len = strlen(list);
    snprintf(list + len, sizeof list - len, "%s%s", i ? "|" : "", k->names[i]);
  }
  fail(ld, line_of(n), k->name, "must be one of %s (got \"%s\")", list, text(n));
}

static void load_string(loader_t *ld, const key_def_t *k, const yaml_node_t *n) {
  if (is_null(n)) {
    if (k->type == T_OPT_STRING)
      set_string(ld->cfg, k, NULL);
    else
      fail(ld, line_of(n), k->name, "must not be null or empty");
    return;
  }
  const char *why = k->check ? k->check(text(n)) : NULL;
  if (why != NULL) {
    fail(ld, line_of(n), k->name, "%s (got \"%s\")", why, text(n));
    return;
  }
  char *s = dup_str(ld, text(n));
  if (s != NULL)
    set_string(ld->cfg, k, s);
}

/* ---- kafka.properties ------------------------------------------------------------------- */

static void load_properties(loader_t *ld, yaml_node_t *map, const char *path) {
  if (!want_mapping(ld, map, path))
    return;
  intake_config_t *cfg = ld->cfg;
  FOR_PAIRS(map, pair) {
    yaml_node_t *k = pair_key(ld, map, pair, path), *v = node_at(ld, pair->value);
    if (k == NULL || v == NULL || !want_scalar(ld, k, path))
      continue;
    char full[512];
    join(full, sizeof full, path, text(k));
    if (!want_scalar(ld, v, full))
      continue;
    if (is_null(v)) {
      fail(ld, line_of(v), full, "expected a value");
      continue;
    }
    bool reserved = false;
    for (size_t i = 0; i < sizeof reserved_properties / sizeof reserved_properties[0]; i++)
      if (strcmp(text(k), reserved_properties[i].name) == 0) {
        fail(ld, line_of(k), full, "not allowed here: %s", reserved_properties[i].why);
        reserved = true;
      }
    if (reserved)
      continue;
    /* Let librdkafka judge name and value now, so a typo is a load error with a line number
     * rather than a start-up failure (or a silently ignored setting). */
    if (ld->rk_conf == NULL && (ld->rk_conf = rd_kafka_conf_new()) == NULL) {
      ld->oom = true;
      return;
    }
    char why[256];
    if (rd_kafka_conf_set(ld->rk_conf, text(k), text(v), why, sizeof why) != RD_KAFKA_CONF_OK) {
      fail(ld, line_of(k), full, "%s", why);
      continue;
    }
    intake_kv_t *kv = push(ld, &cfg->kafka_properties, &cfg->n_kafka_properties, sizeof *kv);
    if (kv == NULL)
      return;
    kv->key = dup_str(ld, text(k));
    kv->value = dup_str(ld, text(v));
  }
}

/* ---- routes.rules ----------------------------------------------------------------------- */

static void add_str_item(loader_t *ld, yaml_node_t *item, const char *path, char ***list,
                         size_t *count, uint32_t **lines, const char *(*check)(const char *)) {
  if (!want_scalar(ld, item, path))
    return;
  const char *why = check(text(item));
  if (why != NULL) {
    fail(ld, line_of(item), path, "%s (got \"%s\")", why, text(item));
    return;
  }
  if (lines != NULL) {
    size_t n_lines = *count;
    uint32_t *l = push(ld, lines, &n_lines, sizeof **lines);
    if (l == NULL)
      return;
    *l = line_of(item);
  }
  char **s = push(ld, list, count, sizeof **list);
  if (s != NULL)
    *s = dup_str(ld, text(item));
}

/* A scalar or a sequence of scalars, each passing `check`, appended to (*list, *count);
 * `lines` (optional, kept parallel to the list) gets each item's line. null is an empty list. */
static void load_str_list(loader_t *ld, yaml_node_t *n, const char *path, char ***list,
                          size_t *count, uint32_t **lines, const char *(*check)(const char *)) {
  if (n->type == YAML_SCALAR_NODE) {
    if (!is_null(n))
      add_str_item(ld, n, path, list, count, lines, check);
    return;
  }
  if (n->type != YAML_SEQUENCE_NODE) {
    fail(ld, line_of(n), path, "expected a scalar or a sequence");
    return;
  }
  size_t i = 0;
  for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
       it++, i++) {
    yaml_node_t *item = node_at(ld, *it);
    char ipath[540]; /* path (< 512) + "[index]" */
    snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
    if (item != NULL)
      add_str_item(ld, item, ipath, list, count, lines, check);
  }
}

static const char *check_kind(const char *s) {
  for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
    if (strcmp(s, kind_names[i].name) == 0)
      return NULL;
  return "must be one of sensor|camera|alarm_input|platform|other";
}

static uint32_t kind_bit(const char *s) {
  for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
    if (strcmp(s, kind_names[i].name) == 0)
      return 1u << kind_names[i].kind;
  return 0;
}

static void load_kinds(loader_t *ld, yaml_node_t *n, const char *path, intake_route_rule_t *r) {
  char **names = NULL;
  size_t count = 0;
  load_str_list(ld, n, path, &names, &count, NULL, check_kind);
  for (size_t i = 0; i < count; i++) {
    if (names[i] != NULL)
      r->kinds_mask |= kind_bit(names[i]);
    free(names[i]);
  }
  free(names);
}

static bool load_severity_value(loader_t *ld, yaml_node_t *n, const char *path, uint32_t *out) {
  uint64_t v;
  if (!want_scalar(ld, n, path))
    return false;
  int rc = parse_uint(text(n), &v);
  if (rc == PARSE_SYNTAX) {
    fail(ld, line_of(n), path, "expected a whole number (got \"%s\")", text(n));
    return false;
  }
  if (rc == PARSE_RANGE || v > 9) {
    fail(ld, line_of(n), path, "must be between 0 and 9 (got %s)", text(n));
    return false;
  }
  *out = (uint32_t)v;
  return true;
}

/* {min: a, max: b} (either may be left out), or a single number for both. */
static void load_severity(loader_t *ld, yaml_node_t *n, const char *path, intake_route_rule_t *r) {
  if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
    uint32_t v;
    if (load_severity_value(ld, n, path, &v))
      r->severity_min = r->severity_max = v;
    return;
  }
  if (!want_mapping(ld, n, path))
    return;
  FOR_PAIRS(n, pair) {
    yaml_node_t *k = pair_key(ld, n, pair, path), *v = node_at(ld, pair->value);
    if (k == NULL || v == NULL)
      continue;
    char full[512];
    join(full, sizeof full, path, text(k));
    if (strcmp(text(k), "min") == 0)
      load_severity_value(ld, v, full, &r->severity_min);
    else if (strcmp(text(k), "max") == 0)
      load_severity_value(ld, v, full, &r->severity_max);
    else
      fail(ld, line_of(k), full, "unknown key");
  }
  if (r->severity_min > r->severity_max)
    fail(ld, line_of(n), path, "min (%u) must not exceed max (%u)", r->severity_min,
         r->severity_max);
}

static void load_attributes(loader_t *ld, yaml_node_t *n, const char *path,
                            intake_route_rule_t *r) {
  if (!want_mapping(ld, n, path))
    return;
  FOR_PAIRS(n, pair) {
    yaml_node_t *k = pair_key(ld, n, pair, path), *v = node_at(ld, pair->value);
    if (k == NULL || v == NULL || !want_scalar(ld, k, path))
      continue;
    char full[512];
    join(full, sizeof full, path, text(k));
    if (*text(k) == '\0') {
      fail(ld, line_of(k), full, "attribute name must not be empty");
      continue;
    }
    if (!want_scalar(ld, v, full))
      continue;
    intake_attr_match_t *a = push(ld, &r->attributes, &r->n_attributes, sizeof *a);
    if (a == NULL)
      return;
    a->key = dup_str(ld, text(k));
    a->value = is_null(v) ? NULL : dup_str(ld, text(v));
  }
}

static void load_match(loader_t *ld, yaml_node_t *n, const char *path, intake_route_rule_t *r) {
  if (!want_mapping(ld, n, path))
    return; /* null: matches everything */
  FOR_PAIRS(n, pair) {
    yaml_node_t *k = pair_key(ld, n, pair, path), *v = node_at(ld, pair->value);
    if (k == NULL || v == NULL)
      continue;
    char full[512];
    join(full, sizeof full, path, text(k));
    const char *key = text(k);
    if (strcmp(key, "kind") == 0)
      load_kinds(ld, v, full, r);
    else if (strcmp(key, "type") == 0)
      load_str_list(ld, v, full, &r->types, &r->n_types, NULL, check_nonempty);
    else if (strcmp(key, "severity") == 0)
      load_severity(ld, v, full, r);
    else if (strcmp(key, "region_prefix") == 0)
      load_str_list(ld, v, full, &r->region_prefixes, &r->n_region_prefixes, NULL,
                    check_region_prefix);
    else if (strcmp(key, "attributes") == 0)
      load_attributes(ld, v, full, r);
    else
      fail(ld, line_of(k), full, "unknown key");
  }
}

/* ---- routes.rules[].converge ------------------------------------------------------------- */

static bool cv_duration(loader_t *ld, yaml_node_t *v, const char *path, uint64_t min, uint64_t max,
                        bool zero_off, uint64_t *out) {
  uint64_t ms;
  if (!want_scalar(ld, v, path))
    return false;
  int rc = parse_duration(text(v), &ms);
  if (rc == PARSE_SYNTAX) {
    fail(ld, line_of(v), path, "expected a duration like 30s (got \"%s\")", text(v));
    return false;
  }
  if (rc == PARSE_RANGE || ((ms < min || ms > max) && !(zero_off && ms == 0))) {
    char lo[32], hi[32];
    format_duration(lo, sizeof lo, min);
    format_duration(hi, sizeof hi, max);
    fail(ld, line_of(v), path, "must be %sbetween %s and %s (got %s)", zero_off ? "0 or " : "", lo,
         hi, text(v));
    return false;
  }
  *out = ms;
  return true;
}

static bool cv_uint(loader_t *ld, yaml_node_t *v, const char *path, uint64_t min, uint64_t max,
                    bool bytes, uint64_t *out) {
  uint64_t n;
  if (!want_scalar(ld, v, path))
    return false;
  int rc = bytes ? parse_with_unit(text(v), byte_units, &n) : parse_uint(text(v), &n);
  if (rc == PARSE_SYNTAX) {
    fail(ld, line_of(v), path, "expected a %s (got \"%s\")", bytes ? "size" : "whole number",
         text(v));
    return false;
  }
  if (rc == PARSE_RANGE || n < min || n > max) {
    fail(ld, line_of(v), path, "must be between %llu and %llu (got %s)", (unsigned long long)min,
         (unsigned long long)max, text(v));
    return false;
  }
  *out = n;
  return true;
}

/* key: a list of `source`, `type` and `attributes: [names]` (or {attributes: [...]}). */
static void load_converge_key(loader_t *ld, yaml_node_t *n, const char *path,
                              intake_converge_config_t *c) {
  c->key_source = c->key_type = false;
  if (n->type != YAML_SEQUENCE_NODE) {
    fail(ld, line_of(n), path, "expected a list of source | type | attributes: [names]");
    return;
  }
  size_t i = 0;
  for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
       it++, i++) {
    yaml_node_t *item = node_at(ld, *it);
    char ipath[540];
    snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
    if (item == NULL)
      continue;
    if (item->type == YAML_SCALAR_NODE && strcmp(text(item), "source") == 0) {
      c->key_source = true;
    } else if (item->type == YAML_SCALAR_NODE && strcmp(text(item), "type") == 0) {
      c->key_type = true;
    } else if (item->type == YAML_MAPPING_NODE) {
      FOR_PAIRS(item, pair) {
        yaml_node_t *k = pair_key(ld, item, pair, ipath), *v = node_at(ld, pair->value);
        if (k == NULL || v == NULL)
          continue;
        char full[600];
        join(full, sizeof full, ipath, text(k));
        if (strcmp(text(k), "attributes") == 0)
          load_str_list(ld, v, full, &c->key_attrs, &c->n_key_attrs, NULL, check_nonempty);
        else
          fail(ld, line_of(k), full, "unknown key");
      }
    } else {
      fail(ld, line_of(item), ipath, "expected source, type or attributes: [names]");
    }
  }
  if (c->n_key_attrs > 8)
    fail(ld, line_of(n), path, "at most 8 attributes (got %zu)", c->n_key_attrs);
  if (!c->key_source && !c->key_type && c->n_key_attrs == 0)
    fail(ld, line_of(n), path, "the key needs at least one field");
}

static void load_converge(loader_t *ld, yaml_node_t *n, const char *path,
                          intake_converge_config_t *c) {
  c->enabled = true;
  c->key_source = c->key_type = true;
  c->window_ms = 30 * SEC;
  c->refresh = true;
  c->flap_window_ms = 60 * SEC;
  c->memory_bytes = 16 * MIB;
  c->max_event_bytes = 432;
  if (!want_mapping(ld, n, path))
    return; /* converge: ~ = every default */
  FOR_PAIRS(n, pair) {
    yaml_node_t *k = pair_key(ld, n, pair, path), *v = node_at(ld, pair->value);
    if (k == NULL || v == NULL)
      continue;
    char full[512];
    join(full, sizeof full, path, text(k));
    const char *key = text(k);
    uint64_t u;
    if (strcmp(key, "key") == 0) {
      load_converge_key(ld, v, full, c);
    } else if (strcmp(key, "window") == 0) {
      cv_duration(ld, v, full, 100 * MS, DAY, false, &c->window_ms);
    } else if (strcmp(key, "refresh") == 0) {
      if (want_scalar(ld, v, full) && parse_bool(text(v), &c->refresh) < 0)
        fail(ld, line_of(v), full, "expected true or false (got \"%s\")", text(v));
    } else if (strcmp(key, "summary_every") == 0) {
      cv_duration(ld, v, full, SEC, DAY, true, &c->summary_every_ms);
    } else if (strcmp(key, "memory") == 0) {
      cv_uint(ld, v, full, 64 * KIB, 16 * GIB, true, &c->memory_bytes);
    } else if (strcmp(key, "max_event_bytes") == 0) {
      if (cv_uint(ld, v, full, 64, 64 * KIB, true, &u))
        c->max_event_bytes = (uint32_t)u;
    } else if (strcmp(key, "flap") == 0) {
      if (!want_mapping(ld, v, full))
        continue;
      FOR_PAIRS(v, fp) {
        yaml_node_t *fk = pair_key(ld, v, fp, full), *fv = node_at(ld, fp->value);
        if (fk == NULL || fv == NULL)
          continue;
        char ffull[600];
        join(ffull, sizeof ffull, full, text(fk));
        if (strcmp(text(fk), "count") == 0) {
          if (cv_uint(ld, fv, ffull, 1, 65000, false, &u))
            c->flap_count = (uint32_t)u;
        } else if (strcmp(text(fk), "window") == 0) {
          cv_duration(ld, fv, ffull, SEC, DAY, false, &c->flap_window_ms);
        } else {
          fail(ld, line_of(fk), ffull, "unknown key");
        }
      }
    } else {
      fail(ld, line_of(k), full, "unknown key");
    }
  }
}

static void load_rule(loader_t *ld, yaml_node_t *n, size_t index) {
  intake_config_t *cfg = ld->cfg;
  char path[64];
  snprintf(path, sizeof path, "routes.rules[%zu]", index);
  if (n->type != YAML_MAPPING_NODE) {
    fail(ld, line_of(n), path, "expected a mapping");
    return;
  }
  /* Appended first, so that whatever it holds is freed with the config on any error. */
  size_t n_meta = cfg->n_rules;
  rule_meta_t *meta = push(ld, &ld->meta, &n_meta, sizeof *meta);
  if (meta == NULL)
    return;
  intake_route_rule_t *r = push(ld, &cfg->rules, &cfg->n_rules, sizeof *r);
  if (r == NULL)
    return;
  r->severity_min = 0;
  r->severity_max = 9;
  yaml_node_t *name_node = NULL, *topics_node = NULL;
  FOR_PAIRS(n, pair) {
    yaml_node_t *k = pair_key(ld, n, pair, path), *v = node_at(ld, pair->value);
    if (k == NULL || v == NULL)
      continue;
    char full[512];
    join(full, sizeof full, path, text(k));
    const char *key = text(k);
    if (strcmp(key, "name") == 0) {
      name_node = v;
      if (!want_scalar(ld, v, full))
        continue;
      const char *why = check_rule_name(text(v));
      if (why != NULL) {
        fail(ld, line_of(v), full, "%s (got \"%s\")", why, text(v));
        continue;
      }
      for (size_t i = 0; i + 1 < cfg->n_rules; i++)
        if (cfg->rules[i].name != NULL && strcmp(cfg->rules[i].name, text(v)) == 0)
          fail(ld, line_of(v), full, "duplicate rule name \"%s\" (also routes.rules[%zu])",
               text(v), i);
      free(r->name);
      r->name = dup_str(ld, text(v));
    } else if (strcmp(key, "topics") == 0) {
      topics_node = v;
      load_str_list(ld, v, full, &r->topics, &r->n_topics, &meta->topic_lines, check_topic);
      for (size_t i = 0; i < r->n_topics; i++)
        for (size_t j = 0; j < i; j++)
          if (r->topics[i] && r->topics[j] && strcmp(r->topics[i], r->topics[j]) == 0)
            fail(ld, meta->topic_lines[i], full, "duplicate topic \"%s\"", r->topics[i]);
      if (r->n_topics == 0 && is_null(v))
        fail(ld, line_of(v), full, "a rule needs at least one topic");
      else if (r->n_topics == 0 && v->type == YAML_SEQUENCE_NODE &&
               v->data.sequence.items.start == v->data.sequence.items.top)
        fail(ld, line_of(v), full, "a rule needs at least one topic");
    } else if (strcmp(key, "match") == 0) {
      load_match(ld, v, full, r);
    } else if (strcmp(key, "stop") == 0) {
      if (!want_scalar(ld, v, full))
        continue;
      if (parse_bool(text(v), &r->stop) < 0)
        fail(ld, line_of(v), full, "expected true or false (got \"%s\")", text(v));
    } else if (strcmp(key, "converge") == 0) {
      load_converge(ld, v, full, &r->converge);
    } else if (strcmp(key, "encoding") == 0) {
      if (!want_scalar(ld, v, full))
        continue;
      size_t e = 0;
      while (encodings[e] != NULL && strcmp(text(v), encodings[e]) != 0)
        e++;
      if (encodings[e] == NULL)
        fail(ld, line_of(v), full, "must be one of protobuf|json (got \"%s\")", text(v));
      else
        r->encoding = (intake_encoding_t)e;
    } else {
      fail(ld, line_of(k), full, "unknown key");
    }
  }
  char full[96];
  if (name_node == NULL) {
    snprintf(full, sizeof full, "%s.name", path);
    fail(ld, line_of(n), full, "required");
  }
  if (topics_node == NULL) {
    snprintf(full, sizeof full, "%s.topics", path);
    fail(ld, line_of(n), full, "required: a rule needs at least one topic");
  }
}

static void load_rules(loader_t *ld, yaml_node_t *n, const char *path) {
  if (n->type != YAML_SEQUENCE_NODE) {
    if (!is_null(n))
      fail(ld, line_of(n), path, "expected a sequence");
    return;
  }
  size_t i = 0;
  for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
       it++, i++) {
    yaml_node_t *rule = node_at(ld, *it);
    if (rule != NULL)
      load_rule(ld, rule, i);
  }
}

/* ---- the walk --------------------------------------------------------------------------- */

static void load_key(loader_t *ld, size_t ki, yaml_node_t *v) {
  const key_def_t *k = &keys[ki];
  ld->key_line[ki] = line_of(v);
  if (k->type == T_RULES) {
    load_rules(ld, v, k->name);
    return;
  }
  if (k->type == T_PROPERTIES) {
    load_properties(ld, v, k->name);
    return;
  }
  if (!want_scalar(ld, v, k->name))
    return;
  switch (k->type) {
  case T_STRING:
  case T_OPT_STRING:
    load_string(ld, k, v);
    break;
  case T_UINT:
  case T_DURATION:
  case T_BYTES:
    load_number(ld, k, v);
    break;
  case T_ENUM:
    load_enum(ld, k, v);
    break;
  case T_BOOL:
    load_bool(ld, k, v);
    break;
  default:
    break;
  }
}

/* "listen.tls" when some key is "listen.tls.something". */
static bool is_subsection(const char *path) {
  size_t n = strlen(path);
  for (size_t i = 0; i < N_KEYS; i++)
    if (strncmp(keys[i].name, path, n) == 0 && keys[i].name[n] == '.')
      return true;
  return false;
}

static void load_section(loader_t *ld, const char *section, yaml_node_t *map) {
  if (!want_mapping(ld, map, section))
    return;
  FOR_PAIRS(map, pair) {
    yaml_node_t *k = pair_key(ld, map, pair, section), *v = node_at(ld, pair->value);
    if (k == NULL || v == NULL)
      continue;
    char full[512];
    join(full, sizeof full, section, text(k));
    size_t ki = 0;
    while (ki < N_KEYS && strcmp(keys[ki].name, full) != 0)
      ki++;
    if (ki < N_KEYS)
      load_key(ld, ki, v);
    else if (is_subsection(full))
      load_section(ld, full, v);
    else
      fail(ld, line_of(k), full, "unknown key");
  }
}

static void load_root(loader_t *ld, yaml_node_t *root) {
  if (!want_mapping(ld, root, "(top level)"))
    return;
  FOR_PAIRS(root, pair) {
    yaml_node_t *k = pair_key(ld, root, pair, ""), *v = node_at(ld, pair->value);
    if (k == NULL || v == NULL)
      continue;
    size_t si = 0;
    while (sections[si] != NULL && strcmp(sections[si], text(k)) != 0)
      si++;
    if (sections[si] == NULL)
      fail(ld, line_of(k), text(k), "unknown key");
    else
      load_section(ld, sections[si], v);
  }
}

static size_t key_index(const char *name) {
  size_t i = 0;
  while (i < N_KEYS && strcmp(keys[i].name, name) != 0)
    i++;
  return i;
}

/* Checks that involve more than one key, run once the whole file is read. */
static void cross_check(loader_t *ld) {
  intake_config_t *cfg = ld->cfg;
  uint32_t mode_line = ld->key_line[key_index("kafka.mode")];
  uint32_t brokers_line = ld->key_line[key_index("kafka.brokers")];
  if (cfg->kafka_mode == INTAKE_KAFKA_BROKERS && cfg->kafka_brokers == NULL)
    fail(ld, mode_line, "kafka.brokers", "required when kafka.mode is brokers");
  /* Brokers given while the mode is still embedded would send every event to the in-process
   * mock cluster, not to those brokers: refuse rather than lose data quietly. */
  if (cfg->kafka_mode == INTAKE_KAFKA_EMBEDDED && cfg->kafka_brokers != NULL)
    fail(ld, brokers_line, "kafka.brokers",
         "set, but kafka.mode is embedded (events would go to the in-process mock cluster); "
         "set kafka.mode: brokers");

  /* TLS: a certificate goes with its key, and client-certificate options need TLS and a CA. */
  uint32_t cert_line = ld->key_line[key_index("listen.tls.cert_file")];
  uint32_t key_line = ld->key_line[key_index("listen.tls.key_file")];
  if ((cfg->tls_cert_file == NULL) != (cfg->tls_key_file == NULL))
    fail(ld, cert_line > key_line ? cert_line : key_line,
         cfg->tls_cert_file ? "listen.tls.key_file" : "listen.tls.cert_file",
         "listen.tls.cert_file and listen.tls.key_file go together (set both, or neither)");
  if (cfg->tls_cert_file == NULL) {
    const char *off = "set, but TLS is off (listen.tls.cert_file and key_file are unset)";
    if (cfg->tls_client_ca_file)
      fail(ld, ld->key_line[key_index("listen.tls.client_ca_file")], "listen.tls.client_ca_file",
           "%s", off);
    if (cfg->tls_require_client_cert)
      fail(ld, ld->key_line[key_index("listen.tls.require_client_cert")],
           "listen.tls.require_client_cert", "%s", off);
    if (cfg->tls_match_gateway_id)
      fail(ld, ld->key_line[key_index("listen.tls.match_gateway_id")], "listen.tls.match_gateway_id",
           "%s", off);
  }
  if (cfg->tls_cert_file && cfg->tls_require_client_cert && cfg->tls_client_ca_file == NULL)
    fail(ld, ld->key_line[key_index("listen.tls.require_client_cert")],
         "listen.tls.require_client_cert",
         "needs listen.tls.client_ca_file (the CA that signs gateway certificates)");
  if (cfg->tls_cert_file && cfg->tls_match_gateway_id && !cfg->tls_require_client_cert)
    fail(ld, ld->key_line[key_index("listen.tls.match_gateway_id")], "listen.tls.match_gateway_id",
         "needs listen.tls.require_client_cert: true (the id is checked against the certificate)");
  if (cfg->rate_burst != 0 && cfg->rate_limit == 0)
    fail(ld, ld->key_line[key_index("gateway.rate_burst")], "gateway.rate_burst",
         "set, but gateway.rate_limit is 0 (off)");

  uint32_t def_line = ld->key_line[key_index("routes.default_topic")];
  uint32_t dead_line = ld->key_line[key_index("routes.dead_letter_topic")];
  if (cfg->default_topic && cfg->dead_letter_topic &&
      strcmp(cfg->default_topic, cfg->dead_letter_topic) == 0)
    fail(ld, def_line > dead_line ? def_line : dead_line,
         def_line > dead_line ? "routes.default_topic" : "routes.dead_letter_topic",
         "the default topic and the dead-letter topic must differ (both \"%s\")",
         cfg->default_topic);

  for (size_t i = 0; i < cfg->n_rules; i++) {
    const intake_route_rule_t *r = &cfg->rules[i];
    for (size_t t = 0; t < r->n_topics; t++)
      if (r->topics[t] && cfg->dead_letter_topic && strcmp(r->topics[t], cfg->dead_letter_topic) == 0) {
        char path[64];
        snprintf(path, sizeof path, "routes.rules[%zu].topics", i);
        fail(ld, ld->meta[i].topic_lines[t], path,
             "\"%s\" is the dead-letter topic; valid events are not routed there", r->topics[t]);
      }
  }
}

/* ---- public ----------------------------------------------------------------------------- */

static void free_strings(char **list, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(list[i]);
  free(list);
}

void intake_config_dispose(intake_config_t *cfg) {
  if (cfg == NULL)
    return;
  free(cfg->path);
  for (size_t i = 0; i < N_KEYS; i++)
    if (keys[i].type == T_STRING || keys[i].type == T_OPT_STRING)
      set_string(cfg, &keys[i], NULL);
  for (size_t i = 0; i < cfg->n_rules; i++) {
    intake_route_rule_t *r = &cfg->rules[i];
    free(r->name);
    free_strings(r->topics, r->n_topics);
    free_strings(r->types, r->n_types);
    free_strings(r->region_prefixes, r->n_region_prefixes);
    free_strings(r->converge.key_attrs, r->converge.n_key_attrs);
    for (size_t j = 0; j < r->n_attributes; j++) {
      free(r->attributes[j].key);
      free(r->attributes[j].value);
    }
    free(r->attributes);
  }
  free(cfg->rules);
  for (size_t i = 0; i < cfg->n_kafka_properties; i++) {
    free(cfg->kafka_properties[i].key);
    free(cfg->kafka_properties[i].value);
  }
  free(cfg->kafka_properties);
  memset(cfg, 0, sizeof *cfg);
}

int intake_config_defaults(intake_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  if ((cfg->path = strdup("")) == NULL)
    goto nomem;
  for (size_t i = 0; i < N_KEYS; i++) {
    const key_def_t *k = &keys[i];
    switch (k->type) {
    case T_STRING:
    case T_OPT_STRING:
      if (k->def_str != NULL) {
        char *s = strdup(k->def_str);
        if (s == NULL)
          goto nomem;
        set_string(cfg, k, s);
      }
      break;
    case T_UINT:
    case T_DURATION:
    case T_BYTES:
    case T_ENUM:
    case T_BOOL:
      set_number(cfg, k, k->def);
      break;
    default:
      break;
    }
  }
  return 0;
nomem:
  intake_config_dispose(cfg);
  return -ENOMEM;
}

/* Line (1-based) of byte `offset` in text[0..len). */
static uint32_t line_at(const char *text_, size_t len, size_t offset) {
  uint32_t line = 1;
  for (size_t i = 0; i < offset && i < len; i++)
    line += text_[i] == '\n';
  return line;
}

static void syntax_error(loader_t *ld, yaml_parser_t *p, const char *yaml, size_t len) {
  /* libyaml 0.2.5 fails some allocations in its loader without recording any error
   * (found by failing each allocation in turn): a failure with no error is out of memory. */
  if (p->error == YAML_MEMORY_ERROR || p->error == YAML_NO_ERROR) {
    ld->oom = true;
    return;
  }
  uint32_t line = p->error == YAML_READER_ERROR ? line_at(yaml, len, p->problem_offset)
                                                : (uint32_t)p->problem_mark.line + 1;
  const char *problem = p->problem ? p->problem : "malformed YAML";
  if (p->context != NULL)
    fail(ld, line, NULL, "YAML syntax error: %s (%s at line %u)", problem, p->context,
         (uint32_t)p->context_mark.line + 1);
  else
    fail(ld, line, NULL, "YAML syntax error: %s", problem);
}

int intake_config_load_string(intake_config_t *cfg, const char *name, const char *yaml,
                              size_t len, char *err, size_t errlen) {
  loader_t ld = {.name = name, .cfg = cfg, .err = err, .errlen = errlen, .err_line = NO_LINE};
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (intake_config_defaults(cfg) < 0) {
    fail(&ld, 0, NULL, "out of memory");
    memset(cfg, 0, sizeof *cfg);
    return -1;
  }
  free(cfg->path);
  cfg->path = dup_str(&ld, name);

  yaml_parser_t parser;
  yaml_document_t doc, extra;
  bool have_doc = false;
  if (!yaml_parser_initialize(&parser)) {
    ld.oom = true;
    goto done;
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
  if (!yaml_parser_load(&parser, &doc)) {
    syntax_error(&ld, &parser, yaml, len);
  } else {
    have_doc = true;
    ld.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root != NULL) {
      load_root(&ld, root);
      /* A second document would be silently ignored; say so instead. */
      if (!yaml_parser_load(&parser, &extra)) {
        syntax_error(&ld, &parser, yaml, len);
      } else {
        yaml_node_t *r2 = yaml_document_get_root_node(&extra);
        if (r2 != NULL)
          fail(&ld, line_of(r2), NULL, "only one YAML document is allowed");
        yaml_document_delete(&extra);
      }
    }
    if (!ld.oom)
      cross_check(&ld);
  }
  yaml_parser_delete(&parser);

done:
  if (have_doc)
    yaml_document_delete(&doc);
  for (size_t i = 0; i < cfg->n_rules && ld.meta != NULL; i++)
    free(ld.meta[i].topic_lines);
  free(ld.meta);
  if (ld.rk_conf != NULL)
    rd_kafka_conf_destroy(ld.rk_conf);
  if (ld.oom) {
    ld.n_errors = 0; /* out of memory replaces whatever was found */
    fail(&ld, 0, NULL, "out of memory");
  }
  if (ld.n_errors > 0) {
    intake_config_dispose(cfg);
    return -1;
  }
  return 0;
}

int intake_config_load(intake_config_t *cfg, const char *path, char *err, size_t errlen) {
  /* A config is small; cap what a wrong path (a device, a huge log) can make us read. */
  enum { MAX_CONFIG_BYTES = 16 << 20 };
  memset(cfg, 0, sizeof *cfg);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = -1;
  for (;;) {
    if (len == cap) {
      if (cap >= MAX_CONFIG_BYTES) {
        if (err != NULL && errlen > 0)
          snprintf(err, errlen, "%s: larger than %d MiB", path, MAX_CONFIG_BYTES >> 20);
        goto out;
      }
      cap = cap ? cap * 2 : 16384;
      char *b = realloc(buf, cap);
      if (b == NULL) {
        if (err != NULL && errlen > 0)
          snprintf(err, errlen, "%s: out of memory", path);
        goto out;
      }
      buf = b;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) {
      if (ferror(f)) {
        if (err != NULL && errlen > 0)
          snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        goto out;
      }
      break;
    }
  }
  rc = intake_config_load_string(cfg, path, buf, len, err, errlen);
out:
  free(buf);
  fclose(f);
  return rc;
}

/* ---- reload ------------------------------------------------------------------------------ */

static void swap_str(char **a, char **b) {
  char *t = *a;
  *a = *b;
  *b = t;
}

static int str_differs(const char *a, const char *b) {
  if (!a || !b)
    return a != b;
  return strcmp(a, b) != 0;
}

#define NOTE_CHANGED(name)                                                                         \
  do {                                                                                             \
    size_t used = strlen(changed);                                                                 \
    snprintf(changed + used, changed_len - used, "%s%s", used ? " " : "", name);                 \
  } while (0)

void intake_config_keep_restart_only(intake_config_t *next, intake_config_t *running, char *changed,
                                     size_t changed_len) {
/* A restart-only string / number: note a change, then keep the running value in `next`. */
#define KEEP_STR(field, name)                                                                      \
  do {                                                                                             \
    if (str_differs(next->field, running->field))                                                 \
      NOTE_CHANGED(name);                                                                          \
    swap_str(&next->field, &running->field);                                                       \
  } while (0)
#define KEEP_NUM(field, name)                                                                      \
  do {                                                                                             \
    if (next->field != running->field)                                                             \
      NOTE_CHANGED(name);                                                                          \
    next->field = running->field;                                                                  \
  } while (0)

  changed[0] = '\0';
  KEEP_STR(listen_address, "listen.address");
  KEEP_NUM(listen_port, "listen.port");
  KEEP_NUM(kafka_mode, "kafka.mode");
  KEEP_STR(kafka_brokers, "kafka.brokers");
  KEEP_NUM(embedded_partitions, "kafka.embedded_partitions");
  KEEP_NUM(delivery_timeout_ms, "kafka.delivery_timeout");
  int props = next->n_kafka_properties != running->n_kafka_properties;
  for (size_t i = 0; !props && i < next->n_kafka_properties; i++)
    props = str_differs(next->kafka_properties[i].key, running->kafka_properties[i].key) ||
            str_differs(next->kafka_properties[i].value, running->kafka_properties[i].value);
  if (props)
    NOTE_CHANGED("kafka.properties");
  intake_kv_t *kv = next->kafka_properties;
  size_t nkv = next->n_kafka_properties;
  next->kafka_properties = running->kafka_properties;
  next->n_kafka_properties = running->n_kafka_properties;
  running->kafka_properties = kv;
  running->n_kafka_properties = nkv;
  KEEP_NUM(dedup_memory_bytes, "dedup.memory");
  KEEP_NUM(dedup_seq_memory_bytes, "dedup.sequence_memory");
  KEEP_STR(dedup_snapshot_path, "dedup.snapshot_path");
  KEEP_NUM(admin_enabled, "admin.enabled");
  KEEP_STR(admin_address, "admin.address");
  KEEP_NUM(admin_port, "admin.port");
#undef KEEP_STR
#undef KEEP_NUM
}
