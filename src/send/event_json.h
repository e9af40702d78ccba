/* One JSON line → one intake.v1.Event, for intake-send.
 *
 * The line is the proto3 JSON mapping of intake.v1.Event: what intake-tail prints as "event" and
 * a route with `encoding: json` writes (encode/json.h), e.g.
 *
 *   {"source_id":"smoke-0001","source_kind":"SOURCE_KIND_SENSOR","event_id":"e-42","seq":"7",
 *    "type":"smoke.alarm","severity":1,"time_ms":"1795850000123",
 *    "location":{"lon":120.07,"lat":29.31,"region":"330782"},
 *    "attributes":{"unit":"ppm","value":"42"},"payload":"aHR0cDovL252ci9zbmFwLzEuanBn",
 *    "clear":false}
 *
 * Read as any protobuf JSON parser reads it:
 * - field names in proto form (source_id) or lowerCamelCase (sourceId), not both in one object;
 * - 64-bit and 32-bit integers as numbers or decimal strings; a number with a fraction, a value
 *   out of the field's range or a negative unsigned value is an error (a number above 2^63-1,
 *   past jansson's integers, must be a string, which is how the mapping prints 64-bit ones);
 * - source_kind as the enum name, its number, or (a convenience, as conf/intaked.yaml spells
 *   kinds) the short name in any case: "sensor", "camera", "alarm_input", "platform", "other";
 * - lon/lat as numbers, numeric strings or "NaN", "Infinity", "-Infinity";
 * - payload as base64, standard or URL-safe alphabet, padding optional;
 * - null for any field means its default; a missing field is its default;
 * - unknown fields, duplicate keys, a value of the wrong JSON type and anything after the
 *   object are errors (a misspelt field would otherwise vanish silently).
 * A whole intake-tail line ({"topic":…,"headers":{…},"event":{…}}) is accepted too: its
 * "event" is read and the record's place, key and headers are ignored, so tail's output can be
 * sent back as it is.
 *
 * Nothing here checks what intaked validates (ids present, severity <= 9, time skew, sizes):
 * such an event is sent and intaked's answer says what is wrong with it. */
#ifndef INTAKE_SEND_EVENT_JSON_H
#define INTAKE_SEND_EVENT_JSON_H

#include <stddef.h>

#include "intake.pb-c.h"

/* Parses line[0..len) (no newline needed; surrounding whitespace is fine). On success returns 0
 * and a new Event in *out, every string and the payload on the heap: free it with
 * intake__v1__event__free_unpacked(*out, NULL). On failure returns -1, leaves *out NULL and
 * writes why into err[0..err_len) (NUL-terminated), e.g. `severity: expected a whole number
 * from 0 to 4294967295 (got -1)` or `column 17: invalid JSON: ...`. */
int intake_send_event_parse(const char *line, size_t len, Intake__V1__Event **out, char *err,
                            size_t err_len);

/* 1 when line[0..len) holds only whitespace (skipped by intake-send, not an error). */
int intake_send_line_blank(const char *line, size_t len);

#endif
