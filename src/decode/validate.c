#include "decode/validate.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const reject_names[INTAKE_REJECT_COUNT] = {
    [INTAKE_REJECT_NONE] = "none",
    [INTAKE_REJECT_MALFORMED] = "malformed",
    [INTAKE_REJECT_MISSING_SOURCE_ID] = "missing_source_id",
    [INTAKE_REJECT_MISSING_EVENT_ID] = "missing_event_id",
    [INTAKE_REJECT_MISSING_TYPE] = "missing_type",
    [INTAKE_REJECT_BAD_SOURCE_KIND] = "bad_source_kind",
    [INTAKE_REJECT_FIELD_TOO_LONG] = "field_too_long",
    [INTAKE_REJECT_BAD_SEVERITY] = "bad_severity",
    [INTAKE_REJECT_BAD_TIME] = "bad_time",
    [INTAKE_REJECT_BAD_LOCATION] = "bad_location",
    [INTAKE_REJECT_BAD_UTF8] = "bad_utf8",
    [INTAKE_REJECT_TOO_MANY_ATTRIBUTES] = "too_many_attributes",
};

const char *intake_reject_name(intake_reject_t r) {
  return (unsigned)r < INTAKE_REJECT_COUNT ? reject_names[r] : "unknown";
}

bool intake_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str, *end = s + len;
  while (s < end) {
    /* Ids and type codes are ASCII nearly always: skip 8 bytes at a time. */
    while (end - s >= 8) {
      uint64_t w;
      memcpy(&w, s, 8);
      if (w & 0x8080808080808080ull)
        break;
      s += 8;
    }
    if (s >= end)
      break;
    if (end - s < 8) { /* the short tail of an ASCII string */
      unsigned any = 0;
      for (const unsigned char *t = s; t < end; t++)
        any |= *t;
      if (any < 0x80)
        break;
    }
    unsigned c = *s;
    if (c < 0x80) {
      s++;
      continue;
    }
    size_t n;
    unsigned cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2; cp = c & 0x1f; min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3; cp = c & 0x0f; min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4; cp = c & 0x07; min = 0x10000;
    } else {
      return false;
    }
    if ((size_t)(end - s) < n)
      return false;
    for (size_t i = 1; i < n; i++) {
      if ((s[i] & 0xc0) != 0x80)
        return false;
      cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    s += n;
  }
  return true;
}

/* Whether every byte of a word is an ASCII digit: its high nibble is 3 and adding 6 keeps it 3
 * (0x30..0x39 -> 0x36..0x3f; no byte can carry into the next once the first test holds). */
static inline bool word_digits(uint64_t w) {
  const uint64_t hi = 0xf0f0f0f0f0f0f0f0ull, three = 0x3030303030303030ull;
  return (w & hi) == three && ((w + 0x0606060606060606ull) & hi) == three;
}

/* Whether s[0..len) (len <= 12 here, region codes) is all ASCII digits; a word at a time, the
 * short and the last words read overlapping and padded with '0', never past the end. */
static bool all_digits(const char *s, size_t len) {
  uint64_t a = 0x3030303030303030ull, b = a;
  if (len >= 8) {
    memcpy(&a, s, 8);
    memcpy(&b, s + len - 8, 8);
    if (len > 16) /* not reached from validate; kept correct for any length */
      for (size_t i = 8; i + 8 < len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (!word_digits(w))
          return false;
      }
  } else if (len >= 4) {
    memcpy(&a, s, 4);
    memcpy(&b, s + len - 4, 4);
  } else {
    for (size_t i = 0; i < len; i++)
      ((char *)&a)[i] = s[i];
  }
  return word_digits(a) && word_digits(b);
}

#define FAIL(reason, ...)                                                                          \
  do {                                                                                             \
    snprintf(detail, len, __VA_ARGS__);                                                            \
    return reason;                                                                                 \
  } while (0)

static intake_reject_t check_text(const char *name, intake_str_t s, uint32_t max, char *detail,
                                  size_t len) {
  if (s.len > max)
    FAIL(INTAKE_REJECT_FIELD_TOO_LONG, "%s: %u bytes, max %u", name, s.len, max);
  if (!intake_ascii(s.ptr, s.len) && !intake_utf8_valid(s.ptr, s.len))
    FAIL(INTAKE_REJECT_BAD_UTF8, "%s: not valid UTF-8", name);
  return INTAKE_REJECT_NONE;
}

intake_reject_t intake_validate(const intake_event_t *ev, const intake_config_t *cfg,
                                int64_t now_ms, char *detail, size_t len) {
  intake_reject_t r;
  detail[0] = '\0';
  if (ev->raw_len > cfg->max_event_bytes)
    FAIL(INTAKE_REJECT_FIELD_TOO_LONG, "event: %u bytes, max %u", ev->raw_len, cfg->max_event_bytes);
  if (ev->source_id.len == 0)
    FAIL(INTAKE_REJECT_MISSING_SOURCE_ID, "source_id: missing");
  if (ev->event_id.len == 0)
    FAIL(INTAKE_REJECT_MISSING_EVENT_ID, "event_id: missing");
  if (ev->type.len == 0)
    FAIL(INTAKE_REJECT_MISSING_TYPE, "type: missing");
  /* The common case (short ASCII ids and type) in one test; only an event that fails it is
   * checked field by field, which finds the same first fault as before. */
  if (ev->source_id.len > cfg->max_id_bytes || ev->event_id.len > cfg->max_id_bytes ||
      ev->type.len > cfg->max_type_bytes || !intake_ascii(ev->source_id.ptr, ev->source_id.len) ||
      !intake_ascii(ev->event_id.ptr, ev->event_id.len) ||
      !intake_ascii(ev->type.ptr, ev->type.len)) {
    if ((r = check_text("source_id", ev->source_id, cfg->max_id_bytes, detail, len)) ||
        (r = check_text("event_id", ev->event_id, cfg->max_id_bytes, detail, len)) ||
        (r = check_text("type", ev->type, cfg->max_type_bytes, detail, len)))
      return r;
  }
  if (ev->source_kind == INTAKE_KIND_UNSPECIFIED || ev->source_kind > INTAKE_KIND_MAX)
    FAIL(INTAKE_REJECT_BAD_SOURCE_KIND, "source_kind: %u is not a known kind", ev->source_kind);
  if (ev->severity > INTAKE_MAX_SEVERITY)
    FAIL(INTAKE_REJECT_BAD_SEVERITY, "severity: %u, max %u", ev->severity, INTAKE_MAX_SEVERITY);
  if (ev->time_ms <= 0)
    FAIL(INTAKE_REJECT_BAD_TIME, "time_ms: missing, or not after 1970-01-01 (%lld)",
         (long long)ev->time_ms);
  if (ev->time_ms > now_ms && (uint64_t)(ev->time_ms - now_ms) > cfg->max_future_skew_ms)
    FAIL(INTAKE_REJECT_BAD_TIME, "time_ms: %lld ms in the future, max %llu",
         (long long)(ev->time_ms - now_ms), (unsigned long long)cfg->max_future_skew_ms);
  if (ev->time_ms < now_ms && (uint64_t)(now_ms - ev->time_ms) > cfg->max_event_age_ms)
    FAIL(INTAKE_REJECT_BAD_TIME, "time_ms: %lld ms old, max %llu",
         (long long)(now_ms - ev->time_ms), (unsigned long long)cfg->max_event_age_ms);
  if (ev->has_location) {
    if (!(ev->lon >= -180.0 && ev->lon <= 180.0 && ev->lat >= -90.0 && ev->lat <= 90.0))
      FAIL(INTAKE_REJECT_BAD_LOCATION, "location: lon/lat out of range");
    if (ev->region.len > 12)
      FAIL(INTAKE_REJECT_BAD_LOCATION, "location.region: %u digits, max 12", ev->region.len);
    if (!all_digits(ev->region.ptr, ev->region.len))
      FAIL(INTAKE_REJECT_BAD_LOCATION, "location.region: not all digits");
  }
  if (ev->payload.len > cfg->max_payload_bytes)
    FAIL(INTAKE_REJECT_FIELD_TOO_LONG, "payload: %u bytes, max %u", ev->payload.len,
         cfg->max_payload_bytes);
  if (ev->n_attributes > cfg->max_attributes)
    FAIL(INTAKE_REJECT_TOO_MANY_ATTRIBUTES, "attributes: %u entries, max %u", ev->n_attributes,
         cfg->max_attributes);
  if (ev->attr_max_len > cfg->max_attribute_bytes || ev->attr_non_ascii) {
    intake_attr_iter_t it;
    intake_str_t k, v;
    intake_event_attributes(ev, &it);
    while (intake_attr_next(&it, &k, &v)) {
      if ((r = check_text("attributes key", k, cfg->max_attribute_bytes, detail, len)) ||
          (r = check_text("attributes value", v, cfg->max_attribute_bytes, detail, len)))
        return r;
    }
  }
  return INTAKE_REJECT_NONE;
}
