/* Minimal protobuf wire-format reader: a cursor over a buffer that never reads past its end.
 * Used for the hot-path zero-copy decode (see event.h for why not protobuf-c's unpack). */
#ifndef INTAKE_DECODE_WIRE_H
#define INTAKE_DECODE_WIRE_H

#include <stdint.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

typedef struct {
  const uint8_t *p;
  const uint8_t *end;
} wire_cursor_t;

/* Reads a varint (at most 10 bytes). Returns 0 or -1 (truncated or too long). */
static inline int wire_varint(wire_cursor_t *c, uint64_t *v) {
  /* Tags, lengths and small numbers are one byte nearly always. */
  if (c->p < c->end && *c->p < 0x80) {
    *v = *c->p++;
    return 0;
  }
  uint64_t x = 0;
  if (c->end - c->p >= 10) {
    /* Room for the longest varint: no end check per byte (time_ms takes 6 bytes; the checked
     * loop below cost ~120 instructions per event in intake-hotpath). */
    const uint8_t *p = c->p;
    for (unsigned i = 0; i < 10; i++) {
      uint8_t b = p[i];
      x |= (uint64_t)(b & 0x7f) << (7 * i);
      if (!(b & 0x80)) {
        c->p = p + i + 1;
        *v = x;
        return 0;
      }
    }
    return -1;
  }
  for (unsigned shift = 0; shift < 70; shift += 7) {
    if (c->p >= c->end)
      return -1;
    uint8_t b = *c->p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1;
}

/* Reads a tag. Returns 0 with field number and wire type, or -1. Field 0 is invalid. */
static inline int wire_tag(wire_cursor_t *c, uint32_t *field, uint32_t *type) {
  uint64_t t;
  if (wire_varint(c, &t) < 0 || (t >> 3) == 0 || (t >> 3) > 0x1fffffff)
    return -1;
  *field = (uint32_t)(t >> 3);
  *type = (uint32_t)(t & 7);
  return 0;
}

/* Reads a length-delimited value: sets *ptr and *len to the bytes inside the buffer. */
static inline int wire_bytes(wire_cursor_t *c, const uint8_t **ptr, uint32_t *len) {
  uint64_t n;
  if (wire_varint(c, &n) < 0 || n > (uint64_t)(c->end - c->p))
    return -1;
  *ptr = c->p;
  *len = (uint32_t)n;
  c->p += n;
  return 0;
}

static inline int wire_fixed64(wire_cursor_t *c, uint64_t *v) {
  if (c->end - c->p < 8)
    return -1;
  memcpy(v, c->p, 8); /* protobuf is little-endian, like every target we build for */
  c->p += 8;
  return 0;
}

/* Skips a value of wire type `type`. Groups (3, 4) and unknown types are errors. */
static inline int wire_skip(wire_cursor_t *c, uint32_t type) {
  uint64_t v;
  const uint8_t *p;
  uint32_t n;
  switch (type) {
  case WIRE_VARINT:
    return wire_varint(c, &v);
  case WIRE_I64:
    if (c->end - c->p < 8)
      return -1;
    c->p += 8;
    return 0;
  case WIRE_LEN:
    return wire_bytes(c, &p, &n);
  case WIRE_I32:
    if (c->end - c->p < 4)
      return -1;
    c->p += 4;
    return 0;
  default:
    return -1;
  }
}

#endif
