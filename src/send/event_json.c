/* JSON line → Event (event_json.h), on jansson: a maintained parser that reports line and
 * column, rejects duplicate keys on request and keeps object keys in insertion order (so
 * attributes go out in the order they were written, and a record read back by intake-tail
 * re-encodes to the same bytes). */
#include "send/event_json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

typedef struct {
  char *err;
  size_t err_len;
} ctx_t;

static int fail(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(ctx_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, c->err_len, fmt, ap);
  va_end(ap);
  return -1;
}

static const char *type_name(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER:
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "?";
}

/* The value as text for an error message: a string quoted and cut, anything else its type. */
static void show(const json_t *v, char *buf, size_t len) {
  if (json_is_string(v))
    snprintf(buf, len, "\"%.40s%s\"", json_string_value(v),
             json_string_length(v) > 40 ? "..." : "");
  else if (json_is_integer(v))
    snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
  else if (json_is_real(v))
    snprintf(buf, len, "%.17g", json_real_value(v));
  else
    snprintf(buf, len, "%s", type_name(v));
}

static int get_string(ctx_t *c, const char *name, const json_t *v, char **out) {
  if (!json_is_string(v))
    return fail(c, "%s: expected a string (got %s)", name, type_name(v));
  char *s = strdup(json_string_value(v));
  if (!s)
    return fail(c, "out of memory");
  free(*out);
  *out = s;
  return 0;
}

/* A whole number within [min, max] from a JSON integer, an integral real or a decimal string
 * (the proto3 mapping writes 64-bit integers as strings; parsers accept either form). */
static int get_int(ctx_t *c, const char *name, const json_t *v, int64_t min, uint64_t max,
                   int is_unsigned, uint64_t *u, int64_t *i) {
  char got[64];
  show(v, got, sizeof got);
  int neg = 0;
  uint64_t mag = 0;
  if (json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    neg = x < 0;
    mag = neg ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
  } else if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d != floor(d) || fabs(d) >= 18446744073709551616.0)
      goto bad;
    neg = d < 0;
    mag = (uint64_t)fabs(d);
  } else if (json_is_string(v)) {
    const char *s = json_string_value(v), *p = s;
    if (*p == '-')
      neg = 1, p++;
    if (*p < '0' || *p > '9')
      goto bad;
    char *end;
    errno = 0;
    mag = strtoull(p, &end, 10);
    if (errno || *end)
      goto bad;
  } else {
    goto bad;
  }
  if (neg && mag == 0)
    neg = 0;
  if (is_unsigned) {
    if (neg || mag > max)
      goto bad;
    *u = mag;
  } else {
    if (neg ? mag > (uint64_t)0 - (uint64_t)min : mag > max)
      goto bad;
    *i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
  }
  return 0;
bad:
  if (is_unsigned)
    return fail(c, "%s: expected a whole number from 0 to %llu (got %s)", name,
                (unsigned long long)max, got);
  return fail(c, "%s: expected a whole number from %lld to %llu (got %s)", name,
              (long long)min, (unsigned long long)max, got);
}

static int get_double(ctx_t *c, const char *name, const json_t *v, double *out) {
  char got[64];
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    if (!strcmp(s, "NaN")) {
      *out = NAN;
      return 0;
    }
    if (!strcmp(s, "Infinity") || !strcmp(s, "-Infinity")) {
      *out = *s == '-' ? -INFINITY : INFINITY;
      return 0;
    }
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    /* strtod also reads "inf", "nan" and hex: the mapping has only the three words above. */
    if (*s && !errno && !*end && isfinite(d) && strpbrk(s, "xXiInN") == NULL) {
      *out = d;
      return 0;
    }
  }
  show(v, got, sizeof got);
  return fail(c, "%s: expected a number (got %s)", name, got);
}

static int get_bool(ctx_t *c, const char *name, const json_t *v, protobuf_c_boolean *out) {
  if (!json_is_boolean(v))
    return fail(c, "%s: expected true or false (got %s)", name, type_name(v));
  *out = json_is_true(v);
  return 0;
}

static int get_kind(ctx_t *c, const json_t *v, Intake__V1__SourceKind *out) {
  const ProtobufCEnumDescriptor *d = &intake__v1__source_kind__descriptor;
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    for (unsigned i = 0; i < d->n_values; i++) {
      const char *full = d->values[i].name; /* "SOURCE_KIND_SENSOR" */
      if (!strcmp(s, full) || !strcasecmp(s, full + strlen("SOURCE_KIND_"))) {
        *out = d->values[i].value;
        return 0;
      }
    }
  } else if (json_is_integer(v) || json_is_real(v)) {
    /* A number outside the schema is allowed, as in protobuf (intaked rejects it as
     * bad_source_kind): a test may want to send one. */
    int64_t n;
    if (get_int(c, "source_kind", v, INT32_MIN, INT32_MAX, 0, NULL, &n) < 0)
      return -1;
    *out = (Intake__V1__SourceKind)n;
    return 0;
  }
  char got[64];
  show(v, got, sizeof got);
  return fail(c,
              "source_kind: expected SOURCE_KIND_SENSOR, _CAMERA, _ALARM_INPUT, _PLATFORM, "
              "_OTHER (or sensor, camera, ...) or a number (got %s)",
              got);
}

static int b64_value(int ch) {
  if (ch >= 'A' && ch <= 'Z')
    return ch - 'A';
  if (ch >= 'a' && ch <= 'z')
    return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9')
    return ch - '0' + 52;
  if (ch == '+' || ch == '-')
    return 62;
  if (ch == '/' || ch == '_')
    return 63;
  return -1;
}

/* Base64, either alphabet, padding optional (the proto3 JSON mapping accepts both). */
static int get_bytes(ctx_t *c, const json_t *v, ProtobufCBinaryData *out) {
  if (!json_is_string(v))
    return fail(c, "payload: expected a base64 string (got %s)", type_name(v));
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  while (n > 0 && s[n - 1] == '=')
    n--;
  if (n % 4 == 1 || json_string_length(v) - n > 2)
    return fail(c, "payload: not base64 (length %zu)", json_string_length(v));
  uint8_t *buf = malloc(n * 3 / 4 + 1);
  if (!buf)
    return fail(c, "out of memory");
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int x = b64_value((unsigned char)s[i]);
    if (x < 0) {
      free(buf);
      return fail(c, "payload: not base64 (character %zu is '%c')", i + 1, s[i]);
    }
    acc = acc << 6 | (uint32_t)x;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      buf[o++] = (uint8_t)(acc >> bits);
    }
  }
  free(out->data);
  out->data = o ? buf : NULL;
  out->len = o;
  if (!o)
    free(buf);
  return 0;
}

/* Which field a key names: index into FIELDS, by proto name or lowerCamelCase json name. */
enum { F_SOURCE_ID, F_SOURCE_KIND, F_EVENT_ID, F_SEQ, F_TYPE, F_SEVERITY, F_TIME_MS, F_LOCATION,
       F_ATTRIBUTES, F_PAYLOAD, F_CLEAR, N_FIELDS };
static const char *const FIELDS[N_FIELDS][2] = {
    {"source_id", "sourceId"}, {"source_kind", "sourceKind"}, {"event_id", "eventId"},
    {"seq", "seq"},            {"type", "type"},              {"severity", "severity"},
    {"time_ms", "timeMs"},     {"location", "location"},      {"attributes", "attributes"},
    {"payload", "payload"},    {"clear", "clear"}};

static int field_of(const char *key) {
  for (int f = 0; f < N_FIELDS; f++)
    if (!strcmp(key, FIELDS[f][0]) || !strcmp(key, FIELDS[f][1]))
      return f;
  return -1;
}

static int get_location(ctx_t *c, const json_t *v, Intake__V1__Event *ev) {
  if (!json_is_object(v))
    return fail(c, "location: expected an object (got %s)", type_name(v));
  Intake__V1__Location *loc = malloc(sizeof *loc);
  if (!loc)
    return fail(c, "out of memory");
  intake__v1__location__init(loc);
  ev->location = loc; /* owned by ev from here: freed with it on any error below */
  if (!(loc->region = strdup("")))
    return fail(c, "out of memory");
  const char *key;
  json_t *x;
  json_object_foreach((json_t *)v, key, x) {
    if (json_is_null(x))
      continue;
    if (!strcmp(key, "lon")) {
      if (get_double(c, "location.lon", x, &loc->lon) < 0)
        return -1;
    } else if (!strcmp(key, "lat")) {
      if (get_double(c, "location.lat", x, &loc->lat) < 0)
        return -1;
    } else if (!strcmp(key, "region")) {
      if (get_string(c, "location.region", x, &loc->region) < 0)
        return -1;
    } else {
      return fail(c, "location: unknown field \"%.64s\" (lon, lat, region)", key);
    }
  }
  return 0;
}

static int get_attributes(ctx_t *c, const json_t *v, Intake__V1__Event *ev) {
  if (!json_is_object(v))
    return fail(c, "attributes: expected an object of strings (got %s)", type_name(v));
  size_t n = json_object_size(v);
  if (n == 0)
    return 0;
  ev->attributes = calloc(n, sizeof *ev->attributes);
  if (!ev->attributes)
    return fail(c, "out of memory");
  const char *key;
  json_t *x;
  json_object_foreach((json_t *)v, key, x) {
    if (!json_is_string(x))
      return fail(c, "attributes.%.64s: expected a string (got %s)", key, type_name(x));
    Intake__V1__Event__AttributesEntry *a = malloc(sizeof *a);
    if (!a)
      return fail(c, "out of memory");
    intake__v1__event__attributes_entry__init(a);
    ev->attributes[ev->n_attributes++] = a;
    if (!(a->key = strdup(key)) || !(a->value = strdup(json_string_value(x))))
      return fail(c, "out of memory");
  }
  return 0;
}

static int get_event(ctx_t *c, const json_t *obj, Intake__V1__Event *ev) {
  const char *seen[N_FIELDS] = {0};
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    int f = field_of(key);
    if (f < 0)
      return fail(c, "unknown field \"%.64s\" (an intake.v1.Event has source_id, source_kind, "
                     "event_id, seq, type, severity, time_ms, location, attributes, payload, "
                     "clear)",
                  key);
    if (seen[f])
      return fail(c, "%s given twice (as \"%s\" and \"%s\")", FIELDS[f][0], seen[f], key);
    seen[f] = key;
    if (json_is_null(v))
      continue;
    const char *name = FIELDS[f][0];
    uint64_t u;
    int rc = 0;
    switch (f) {
    case F_SOURCE_ID: rc = get_string(c, name, v, &ev->source_id); break;
    case F_SOURCE_KIND: rc = get_kind(c, v, &ev->source_kind); break;
    case F_EVENT_ID: rc = get_string(c, name, v, &ev->event_id); break;
    case F_SEQ: rc = get_int(c, name, v, 0, UINT64_MAX, 1, &ev->seq, NULL); break;
    case F_TYPE: rc = get_string(c, name, v, &ev->type); break;
    case F_SEVERITY:
      if ((rc = get_int(c, name, v, 0, UINT32_MAX, 1, &u, NULL)) == 0)
        ev->severity = (uint32_t)u;
      break;
    case F_TIME_MS: rc = get_int(c, name, v, INT64_MIN, INT64_MAX, 0, NULL, &ev->time_ms); break;
    case F_LOCATION: rc = get_location(c, v, ev); break;
    case F_ATTRIBUTES: rc = get_attributes(c, v, ev); break;
    case F_PAYLOAD: rc = get_bytes(c, v, &ev->payload); break;
    case F_CLEAR: rc = get_bool(c, name, v, &ev->clear); break;
    }
    if (rc < 0)
      return -1;
  }
  return 0;
}

/* The keys of an intake-tail line besides "event" (src/tail/intake_tail.c). */
static int is_tail_key(const char *k) {
  static const char *const keys[] = {"topic", "partition", "offset", "timestamp_ms", "key",
                                     "headers", "error", "value_base64"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    if (!strcmp(k, keys[i]))
      return 1;
  return 0;
}

int intake_send_line_blank(const char *line, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '\n')
      return 0;
  return 1;
}

int intake_send_event_parse(const char *line, size_t len, Intake__V1__Event **out, char *err,
                            size_t err_len) {
  ctx_t c = {err, err_len};
  *out = NULL;
  if (err_len)
    err[0] = '\0';
  json_error_t je;
  json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
  if (!root)
    return fail(&c, "column %d: invalid JSON: %s%s", je.column, je.text,
                strstr(je.text, "too big integer")
                    ? " (write 64-bit integers as strings, \"seq\":\"18446744073709551615\", as "
                      "the proto3 JSON mapping does)"
                    : "");
  int rc = -1;
  Intake__V1__Event *ev = NULL;
  if (!json_is_object(root)) {
    fail(&c, "expected a JSON object (an intake.v1.Event), got %s", type_name(root));
    goto out;
  }
  const json_t *obj = root;
  json_t *inner = json_object_get(root, "event");
  if (inner) {
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
      if (strcmp(key, "event") && !is_tail_key(key)) {
        fail(&c, "unknown field \"%.64s\" beside \"event\" (an intake-tail line has topic, "
                 "partition, offset, timestamp_ms, key, headers, event)",
             key);
        goto out;
      }
    }
    if (!json_is_object(inner)) {
      json_t *why = json_object_get(root, "error");
      fail(&c, "\"event\" is %s, not an event%s%s", type_name(inner),
           json_is_string(why) ? ": " : "", json_is_string(why) ? json_string_value(why) : "");
      goto out;
    }
    obj = inner;
  }
  if (!(ev = malloc(sizeof *ev))) {
    fail(&c, "out of memory");
    goto out;
  }
  intake__v1__event__init(ev);
  /* Every string on the heap, so that free_unpacked() may free each one. */
  if (!(ev->source_id = strdup("")) || !(ev->event_id = strdup("")) || !(ev->type = strdup(""))) {
    fail(&c, "out of memory");
    goto out;
  }
  if (get_event(&c, obj, ev) < 0)
    goto out;
  *out = ev;
  ev = NULL;
  rc = 0;
out:
  if (ev)
    intake__v1__event__free_unpacked(ev, NULL);
  json_decref(root);
  return rc;
}
