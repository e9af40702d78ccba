/* A zero-copy view of one intake.v1.Event inside a batch buffer.
 *
 * Decoding the whole batch with protobuf-c's stock unpack costs ~700 ns per event, mostly
 * malloc/free (shared/perf-notes.md); the hot path instead walks the wire format once, keeps
 * pointers into the batch buffer for the fields dedup, routing and validation need, and passes
 * the event's own bytes through unchanged as the Kafka record value. */
#ifndef INTAKE_DECODE_EVENT_H
#define INTAKE_DECODE_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A byte string inside the batch buffer; not NUL-terminated. */
typedef struct {
  const char *ptr;
  uint32_t len;
} intake_str_t;

/* Values of intake.v1.SourceKind. */
enum {
  INTAKE_KIND_UNSPECIFIED = 0,
  INTAKE_KIND_SENSOR = 1,
  INTAKE_KIND_CAMERA = 2,
  INTAKE_KIND_ALARM_INPUT = 3,
  INTAKE_KIND_PLATFORM = 4,
  INTAKE_KIND_OTHER = 5,
  INTAKE_KIND_MAX = 5
};

typedef struct intake_event {
  const uint8_t *raw;       /* the serialized Event, the Kafka record value */
  uint32_t raw_len;
  intake_str_t source_id;   /* field 1 */
  uint32_t source_kind;     /* field 2, INTAKE_KIND_* */
  intake_str_t event_id;    /* field 3 */
  uint64_t seq;             /* field 4, 0 = the source does not number its events */
  intake_str_t type;        /* field 5 */
  uint32_t severity;        /* field 6 */
  int64_t time_ms;          /* field 7 */
  bool has_location;        /* field 8 present */
  double lon, lat;          /* field 8.1, 8.2 */
  intake_str_t region;      /* field 8.3 */
  uint32_t n_attributes;    /* field 9 entries */
  uint32_t attr_max_len;    /* longest attribute key or value */
  bool attr_non_ascii;      /* some attribute key or value has a byte >= 0x80 */
  intake_str_t payload;     /* field 10 */
  bool clear;               /* field 11 */
  const uint8_t *_attrs;    /* from the first field-9 entry to the end of the last one: */
  const uint8_t *_attrs_end; /* attribute walks scan only this range */
} intake_event_t;

/* True when s[0..len) is plain ASCII (no byte >= 0x80): the common case that needs no UTF-8
 * decoding. Reads 8 bytes at a time, never past the end: the last word, or a short string's
 * two halves, are read overlapping instead of a byte at a time (the byte loop was most of the
 * cost on ids and attributes of 5 to 36 bytes). */
static inline bool intake_ascii(const char *s, size_t len) {
  uint64_t acc = 0;
  if (len >= 8) {
    uint64_t w;
    for (size_t i = 0; i + 8 < len; i += 8) {
      __builtin_memcpy(&w, s + i, 8);
      acc |= w;
    }
    __builtin_memcpy(&w, s + len - 8, 8);
    acc |= w;
  } else if (len >= 4) {
    uint32_t a, b;
    __builtin_memcpy(&a, s, 4);
    __builtin_memcpy(&b, s + len - 4, 4);
    acc = a | b;
  } else if (len > 0) {
    acc = (uint8_t)s[0] | (uint8_t)s[len / 2] | (uint8_t)s[len - 1];
  }
  return (acc & 0x8080808080808080ull) == 0;
}

/* Finds attribute `key` (field 9 map entry) in `ev`. Returns true and sets *value when present
 * (the last entry wins, as in protobuf map semantics). `ev` must have been filled by
 * intake_event_parse(). */
bool intake_event_attribute(const intake_event_t *ev, const char *key, size_t key_len,
                            intake_str_t *value);

/* Iterates over the attribute entries in wire order (validation checks each one). */
typedef struct {
  const uint8_t *_p, *_end;
} intake_attr_iter_t;
void intake_event_attributes(const intake_event_t *ev, intake_attr_iter_t *it);
/* Returns 1 with the next entry, 0 at the end. */
int intake_attr_next(intake_attr_iter_t *it, intake_str_t *key, intake_str_t *value);

/* Parses the Event message in buf[0..len). Unknown fields are skipped (forward compatible).
 * Returns 0, or -1 when the bytes are not a well-formed Event (bad varint, length past the end,
 * wrong wire type for a known field, group wire types). Never reads outside buf. */
int intake_event_parse(const uint8_t *buf, size_t len, intake_event_t *ev);

#endif
