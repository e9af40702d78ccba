/* The JSON record encoding of an event (routes.rules[].encoding: json).
 *
 * The output is the proto3 JSON mapping of intake.v1.Event with the proto field names (what
 * protobuf's own printers give with "preserving proto field names"), so any protobuf JSON parser
 * reads it back into an Event:
 *
 *   {"source_id":"smoke-0001","source_kind":"SOURCE_KIND_SENSOR","event_id":"e-42","seq":"7",
 *    "type":"smoke.alarm","severity":1,"time_ms":"1795850000123",
 *    "location":{"lon":120.07,"lat":29.31,"region":"330782"},
 *    "attributes":{"unit":"ppm","value":"42"},"payload":"aHR0cDovL252ci9zbmFwLzEuanBn",
 *    "clear":false}
 *
 * - every scalar field is present, defaults included (a stable shape for consumers); "location"
 *   only when the event has one;
 * - 64-bit integers (seq, time_ms) are decimal strings, as the mapping prescribes (JavaScript
 *   numbers lose precision past 2^53); severity is a number;
 * - source_kind is the enum value's name, or its number when the value is not in the schema;
 * - doubles are the shortest text that reads back to the same value; NaN and ±Infinity are the
 *   strings "NaN", "Infinity", "-Infinity";
 * - attributes keep wire order; a key sent twice appears once, with the last value (protobuf
 *   map semantics);
 * - payload is standard base64 with padding;
 * - strings are escaped per RFC 8259; invalid UTF-8 (which validation rejects before routing)
 *   would become U+FFFD, so the output is always valid JSON.
 * No allocation; runs on the zero-copy view of decode/event.h. */
#ifndef INTAKE_ENCODE_JSON_H
#define INTAKE_ENCODE_JSON_H

#include <stddef.h>

#include "decode/event.h"

/* Writes the JSON text of `ev` (filled by intake_event_parse()) into buf[0..cap), NUL-terminated
 * when cap > 0, with no trailing newline. Returns the length of the whole text, without the NUL:
 * when that is >= cap the text was cut, and a buffer of return + 1 bytes holds it (buf may be
 * NULL when cap is 0, to measure). */
size_t intake_event_to_json(const intake_event_t *ev, char *buf, size_t cap);

/* An upper bound of intake_event_to_json(ev)'s length from the event's size alone,
 * 6 * raw_len + 512 (each input byte costs at most six output bytes, \u00XX): a buffer of
 * intake_event_json_bound(ev) + 1 bytes never needs a second pass. */
size_t intake_event_json_bound(const intake_event_t *ev);

#endif
