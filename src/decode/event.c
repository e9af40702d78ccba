#include "decode/event.h"

#include "decode/wire.h"

/* The in-order fast path (see intake_event_parse): consumes the field whose one-byte tag is
 * `tag` when it comes next. Returns 1 when taken, 0 when the next field is another, -1 when the
 * field is malformed (the general walk would refuse it the same way). */
static inline int take_str(wire_cursor_t *c, uint8_t tag, intake_str_t *s) {
  const uint8_t *p;
  uint32_t n;
  if (c->p >= c->end || *c->p != tag)
    return 0;
  c->p++;
  if (wire_bytes(c, &p, &n) < 0)
    return -1;
  s->ptr = (const char *)p;
  s->len = n;
  return 1;
}

static inline int take_varint(wire_cursor_t *c, uint8_t tag, uint64_t *v) {
  if (c->p >= c->end || *c->p != tag)
    return 0;
  c->p++;
  return wire_varint(c, v) < 0 ? -1 : 1;
}

static int parse_location(const uint8_t *buf, uint32_t len, intake_event_t *ev) {
  wire_cursor_t c = {buf, buf + len};
  uint32_t field, type;
  /* In order (lon, lat, region), as protobuf-c writes it; anything else goes to the walk. */
  uint64_t bits;
  if (c.end - c.p >= 9 && *c.p == 0x09) {
    memcpy(&ev->lon, c.p + 1, 8);
    c.p += 9;
  }
  if (c.end - c.p >= 9 && *c.p == 0x11) {
    memcpy(&ev->lat, c.p + 1, 8);
    c.p += 9;
  }
  if (take_str(&c, 0x1a, &ev->region) < 0)
    return -1;
  while (c.p < c.end) {
    if (wire_tag(&c, &field, &type) < 0)
      return -1;
    const uint8_t *p;
    uint32_t n;
    switch (field) {
    case 1: /* lon */
    case 2: /* lat */
      if (type != WIRE_I64 || wire_fixed64(&c, &bits) < 0)
        return -1;
      memcpy(field == 1 ? &ev->lon : &ev->lat, &bits, 8);
      break;
    case 3:
      if (type != WIRE_LEN || wire_bytes(&c, &p, &n) < 0)
        return -1;
      ev->region.ptr = (const char *)p;
      ev->region.len = n;
      break;
    default:
      if (wire_skip(&c, type) < 0)
        return -1;
    }
  }
  return 0;
}

/* A map entry is a message {1: key, 2: value}; both optional in the wire format. */
static int parse_map_entry(const uint8_t *buf, uint32_t len, intake_str_t *key, intake_str_t *value) {
  wire_cursor_t c = {buf, buf + len};
  uint32_t field, type;
  key->ptr = value->ptr = "";
  key->len = value->len = 0;
  /* key then value, as protobuf-c writes them; anything else goes to the walk. */
  if (take_str(&c, 0x0a, key) < 0 || take_str(&c, 0x12, value) < 0)
    return -1;
  while (c.p < c.end) {
    if (wire_tag(&c, &field, &type) < 0)
      return -1;
    if (field == 1 || field == 2) {
      const uint8_t *p;
      uint32_t n;
      if (type != WIRE_LEN || wire_bytes(&c, &p, &n) < 0)
        return -1;
      intake_str_t *s = field == 1 ? key : value;
      s->ptr = (const char *)p;
      s->len = n;
    } else if (wire_skip(&c, type) < 0) {
      return -1;
    }
  }
  return 0;
}

static int read_str(wire_cursor_t *c, uint32_t type, intake_str_t *s) {
  const uint8_t *p;
  uint32_t n;
  if (type != WIRE_LEN || wire_bytes(c, &p, &n) < 0)
    return -1;
  s->ptr = (const char *)p;
  s->len = n;
  return 0;
}

static int read_varint(wire_cursor_t *c, uint32_t type, uint64_t *v) {
  if (type != WIRE_VARINT)
    return -1;
  return wire_varint(c, v);
}

/* One field-9 entry whose value (the entry's bytes) was just read; `tag` is where its tag
 * starts, c->p is past it. */
static int add_attribute(intake_event_t *ev, const uint8_t *tag, const uint8_t *end,
                         intake_str_t entry) {
  intake_str_t k, val;
  if (parse_map_entry((const uint8_t *)entry.ptr, entry.len, &k, &val) < 0)
    return -1;
  if (!ev->_attrs)
    ev->_attrs = tag;
  ev->_attrs_end = end;
  ev->n_attributes++;
  /* Summarized here, while the entry is in cache, so that validation can skip walking the
   * attributes again in the common case (all short ASCII); attr_non_ascii is settled once the
   * whole event is read (attributes_ascii). */
  if (k.len > ev->attr_max_len)
    ev->attr_max_len = k.len;
  if (val.len > ev->attr_max_len)
    ev->attr_max_len = val.len;
  return 0;
}

/* Sets attr_non_ascii. The bytes from the first entry's tag to the last entry's end hold every
 * key and value, so when they are all ASCII so are those: one test per event instead of two
 * per entry. Otherwise (a non-ASCII byte, or only a length or another field's byte >= 0x80)
 * the entries are checked one by one, so the flag stays exact. */
static void attributes_ascii(intake_event_t *ev) {
  if (!ev->_attrs || intake_ascii((const char *)ev->_attrs, (size_t)(ev->_attrs_end - ev->_attrs)))
    return;
  intake_attr_iter_t it;
  intake_str_t k, v;
  intake_event_attributes(ev, &it);
  while (intake_attr_next(&it, &k, &v))
    if (!intake_ascii(k.ptr, k.len) || !intake_ascii(v.ptr, v.len)) {
      ev->attr_non_ascii = true;
      return;
    }
}

int intake_event_parse(const uint8_t *buf, size_t len, intake_event_t *ev) {
  static const intake_str_t empty = {"", 0};
  memset(ev, 0, sizeof *ev);
  ev->source_id = ev->event_id = ev->type = ev->region = ev->payload = empty;
  ev->raw = buf;
  ev->raw_len = (uint32_t)len;
  if (len > UINT32_MAX)
    return -1;
  wire_cursor_t c = {buf, buf + len};
  uint32_t field, type;
  uint64_t v;
  intake_str_t s;
  int r;

  /* Fast path. protobuf-c, and the gateways built on it, write the fields in ascending order,
   * each once, with one-byte tags: take them in that order while the next tag is the expected
   * one (absent fields are skipped by the tag test). Taking a field here does exactly what the
   * general walk below does for it, so wherever the order breaks (an unknown field, a repeat, a
   * field out of order, a long tag), the walk simply goes on from there. With the unchecked
   * varints (wire.h) and attributes_ascii() this cut the parse from ~990 to ~590 instructions
   * per event in intake-hotpath (bench/ANALYSIS.md, 2026-11-28). */
  if ((r = take_str(&c, 0x0a, &ev->source_id)) < 0)
    return -1;
  if ((r = take_varint(&c, 0x10, &v)) < 0)
    return -1;
  if (r)
    ev->source_kind = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
  if (take_str(&c, 0x1a, &ev->event_id) < 0 || take_varint(&c, 0x20, &ev->seq) < 0 ||
      take_str(&c, 0x2a, &ev->type) < 0)
    return -1;
  if ((r = take_varint(&c, 0x30, &v)) < 0)
    return -1;
  if (r)
    ev->severity = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
  if ((r = take_varint(&c, 0x38, &v)) < 0)
    return -1;
  if (r)
    ev->time_ms = (int64_t)v;
  if ((r = take_str(&c, 0x42, &s)) < 0)
    return -1;
  if (r) {
    if (parse_location((const uint8_t *)s.ptr, s.len, ev) < 0)
      return -1;
    ev->has_location = true;
  }
  for (;;) {
    const uint8_t *tag = c.p;
    if ((r = take_str(&c, 0x4a, &s)) < 0)
      return -1;
    if (!r)
      break;
    if (add_attribute(ev, tag, c.p, s) < 0)
      return -1;
  }
  if (take_str(&c, 0x52, &ev->payload) < 0)
    return -1;
  if ((r = take_varint(&c, 0x58, &v)) < 0)
    return -1;
  if (r)
    ev->clear = v != 0;

  /* The general walk: any order, repeats (the last one wins), unknown fields. */
  while (c.p < c.end) {
    const uint8_t *field_start = c.p;
    if (wire_tag(&c, &field, &type) < 0)
      return -1;
    switch (field) {
    case 1:
      if (read_str(&c, type, &ev->source_id) < 0)
        return -1;
      break;
    case 2:
      if (read_varint(&c, type, &v) < 0)
        return -1;
      /* Out-of-range enum values are kept distinguishable for validation. */
      ev->source_kind = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
      break;
    case 3:
      if (read_str(&c, type, &ev->event_id) < 0)
        return -1;
      break;
    case 4:
      if (read_varint(&c, type, &ev->seq) < 0)
        return -1;
      break;
    case 5:
      if (read_str(&c, type, &ev->type) < 0)
        return -1;
      break;
    case 6:
      if (read_varint(&c, type, &v) < 0)
        return -1;
      ev->severity = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
      break;
    case 7:
      if (read_varint(&c, type, &v) < 0)
        return -1;
      ev->time_ms = (int64_t)v;
      break;
    case 8:
      if (read_str(&c, type, &s) < 0 || parse_location((const uint8_t *)s.ptr, s.len, ev) < 0)
        return -1;
      ev->has_location = true;
      break;
    case 9:
      if (read_str(&c, type, &s) < 0 || add_attribute(ev, field_start, c.p, s) < 0)
        return -1;
      break;
    case 10:
      if (read_str(&c, type, &ev->payload) < 0)
        return -1;
      break;
    case 11:
      if (read_varint(&c, type, &v) < 0)
        return -1;
      ev->clear = v != 0;
      break;
    default:
      if (wire_skip(&c, type) < 0)
        return -1;
    }
  }
  attributes_ascii(ev);
  return 0;
}

/* Walks field 9 again; events carry a handful of attributes, and only routing rules that name
 * attributes pay for this. The event was validated by intake_event_parse(), so errors here only
 * end the walk. */
static int next_attribute(wire_cursor_t *c, intake_str_t *k, intake_str_t *v) {
  uint32_t field, type;
  while (c->p < c->end) {
    if (wire_tag(c, &field, &type) < 0)
      return -1;
    if (field == 9 && type == WIRE_LEN) {
      intake_str_t entry;
      if (read_str(c, type, &entry) < 0 ||
          parse_map_entry((const uint8_t *)entry.ptr, entry.len, k, v) < 0)
        return -1;
      return 1;
    }
    if (wire_skip(c, type) < 0)
      return -1;
  }
  return 0;
}

bool intake_event_attribute(const intake_event_t *ev, const char *key, size_t key_len,
                            intake_str_t *value) {
  wire_cursor_t c = {ev->_attrs, ev->_attrs_end};
  intake_str_t k, v;
  bool found = false;
  while (next_attribute(&c, &k, &v) > 0) {
    if (k.len == key_len && memcmp(k.ptr, key, key_len) == 0) {
      *value = v;
      found = true;
    }
  }
  return found;
}

void intake_event_attributes(const intake_event_t *ev, intake_attr_iter_t *it) {
  it->_p = ev->_attrs;
  it->_end = ev->_attrs_end;
}

int intake_attr_next(intake_attr_iter_t *it, intake_str_t *key, intake_str_t *value) {
  wire_cursor_t c = {it->_p, it->_end};
  if (!c.p)
    return 0;
  int r = next_attribute(&c, key, value);
  it->_p = r > 0 ? c.p : it->_end;
  return r > 0;
}
