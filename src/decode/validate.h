/* Event validation against the limits in the config (validate.* keys). Runs on the zero-copy view
 * from intake_event_parse(); allocates nothing. */
#ifndef INTAKE_DECODE_VALIDATE_H
#define INTAKE_DECODE_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "decode/event.h"

/* Values of intake.v1.RejectReason. */
typedef enum {
  INTAKE_REJECT_NONE = 0,
  INTAKE_REJECT_MALFORMED = 1,
  INTAKE_REJECT_MISSING_SOURCE_ID = 2,
  INTAKE_REJECT_MISSING_EVENT_ID = 3,
  INTAKE_REJECT_MISSING_TYPE = 4,
  INTAKE_REJECT_BAD_SOURCE_KIND = 5,
  INTAKE_REJECT_FIELD_TOO_LONG = 6,
  INTAKE_REJECT_BAD_SEVERITY = 7,
  INTAKE_REJECT_BAD_TIME = 8,
  INTAKE_REJECT_BAD_LOCATION = 9,
  INTAKE_REJECT_BAD_UTF8 = 10,
  INTAKE_REJECT_TOO_MANY_ATTRIBUTES = 11,
  INTAKE_REJECT_COUNT
} intake_reject_t;

#define INTAKE_MAX_SEVERITY 9

/* Snake-case name of a reason ("missing_source_id"), for headers, logs and metrics. */
const char *intake_reject_name(intake_reject_t r);

/* Checks `ev` at wall-clock time now_ms. Returns INTAKE_REJECT_NONE, or the first problem found
 * with a short explanation in detail[0..len) ("source_id: 80 bytes, max 64"). */
intake_reject_t intake_validate(const intake_event_t *ev, const intake_config_t *cfg,
                                int64_t now_ms, char *detail, size_t len);

/* True when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
bool intake_utf8_valid(const char *s, size_t len);

#endif
