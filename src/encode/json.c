#include "encode/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/wbuf.h"

static const char *const kind_names[] = {
    "SOURCE_KIND_UNSPECIFIED", "SOURCE_KIND_SENSOR",   "SOURCE_KIND_CAMERA",
    "SOURCE_KIND_ALARM_INPUT", "SOURCE_KIND_PLATFORM", "SOURCE_KIND_OTHER",
};

static void str_field(intake_wbuf_t *w, const char *key, intake_str_t s) {
  intake_wbuf_puts(w, key);
  intake_wbuf_json_str(w, s.ptr, s.len);
}

/* Shortest of %.15g / %.16g / %.17g that reads back exactly (%.17g always does). */
static void put_double(intake_wbuf_t *w, double v) {
  if (isnan(v)) {
    intake_wbuf_puts(w, "\"NaN\"");
    return;
  }
  if (isinf(v)) {
    intake_wbuf_puts(w, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    return;
  }
  char tmp[32];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, v);
    if (prec == 17 || strtod(tmp, NULL) == v)
      break;
  }
  intake_wbuf_puts(w, tmp);
}

static int same(intake_str_t a, intake_str_t b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

size_t intake_event_to_json(const intake_event_t *ev, char *buf, size_t cap) {
  intake_wbuf_t w;
  intake_wbuf_init(&w, buf, cap);
  str_field(&w, "{\"source_id\":", ev->source_id);
  intake_wbuf_puts(&w, ",\"source_kind\":");
  if (ev->source_kind < sizeof kind_names / sizeof kind_names[0]) {
    intake_wbuf_putc(&w, '"');
    intake_wbuf_puts(&w, kind_names[ev->source_kind]);
    intake_wbuf_putc(&w, '"');
  } else {
    intake_wbuf_i64(&w, (int32_t)ev->source_kind); /* an int32 enum sent as a 64-bit varint */
  }
  str_field(&w, ",\"event_id\":", ev->event_id);
  intake_wbuf_puts(&w, ",\"seq\":\"");
  intake_wbuf_u64(&w, ev->seq);
  str_field(&w, "\",\"type\":", ev->type);
  intake_wbuf_puts(&w, ",\"severity\":");
  intake_wbuf_u64(&w, ev->severity);
  intake_wbuf_puts(&w, ",\"time_ms\":\"");
  intake_wbuf_i64(&w, ev->time_ms);
  intake_wbuf_putc(&w, '"');
  if (ev->has_location) {
    intake_wbuf_puts(&w, ",\"location\":{\"lon\":");
    put_double(&w, ev->lon);
    intake_wbuf_puts(&w, ",\"lat\":");
    put_double(&w, ev->lat);
    str_field(&w, ",\"region\":", ev->region);
    intake_wbuf_putc(&w, '}');
  }
  intake_wbuf_puts(&w, ",\"attributes\":{");
  intake_attr_iter_t it;
  intake_str_t k, v;
  int first = 1;
  intake_event_attributes(ev, &it);
  while (intake_attr_next(&it, &k, &v) == 1) {
    /* Keep only the last entry of a key: look ahead (n is bounded by validate.max_attributes,
     * and repeats are rare, so the quadratic walk costs nothing in practice). */
    intake_attr_iter_t later = it;
    intake_str_t k2, v2;
    int repeated = 0;
    while (!repeated && intake_attr_next(&later, &k2, &v2) == 1)
      repeated = same(k, k2);
    if (repeated)
      continue;
    if (!first)
      intake_wbuf_putc(&w, ',');
    first = 0;
    intake_wbuf_json_str(&w, k.ptr, k.len);
    intake_wbuf_putc(&w, ':');
    intake_wbuf_json_str(&w, v.ptr, v.len);
  }
  intake_wbuf_puts(&w, "},\"payload\":\"");
  intake_wbuf_base64(&w, ev->payload.ptr, ev->payload.len);
  intake_wbuf_puts(&w, ev->clear ? "\",\"clear\":true}" : "\",\"clear\":false}");
  return intake_wbuf_finish(&w);
}

size_t intake_event_json_bound(const intake_event_t *ev) { return 6 * (size_t)ev->raw_len + 512; }
