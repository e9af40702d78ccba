#include "decode/event.h"

#include "decode/wire.h"

static int parse_location(const uint8_t *buf, uint32_t len, intake_event_t *ev) {
  wire_cursor_t c = {buf, buf + len};
  uint32_t field, type;
  while (c.p < c.end) {
    if (wire_tag(&c, &field, &type) < 0)
      return -1;
    uint64_t bits;
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
    case 8: {
      intake_str_t loc;
      if (read_str(&c, type, &loc) < 0 || parse_location((const uint8_t *)loc.ptr, loc.len, ev) < 0)
        return -1;
      ev->has_location = true;
      break;
    }
    case 9: {
      const uint8_t *tag = field_start;
      intake_str_t entry, k, val;
      if (read_str(&c, type, &entry) < 0 ||
          parse_map_entry((const uint8_t *)entry.ptr, entry.len, &k, &val) < 0)
        return -1;
      if (!ev->_attrs)
        ev->_attrs = tag;
      ev->_attrs_end = c.p;
      ev->n_attributes++;
      /* Summarized here, while the entry is in cache, so that validation can skip walking the
       * attributes again in the common case (all short ASCII). */
      if (k.len > ev->attr_max_len)
        ev->attr_max_len = k.len;
      if (val.len > ev->attr_max_len)
        ev->attr_max_len = val.len;
      if (!intake_ascii(k.ptr, k.len) || !intake_ascii(val.ptr, val.len))
        ev->attr_non_ascii = true;
      break;
    }
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
