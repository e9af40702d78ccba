/* libFuzzer target: intake-send's JSON line parser (src/send/event_json.c) on arbitrary bytes.
 * A refused line leaves a message and no event; an accepted one packs, and the record encoding's
 * JSON of it (encode/json.h, what intake-tail prints) parses back to the same bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/event.h"
#include "encode/json.h"
#include "intake.pb-c.h"
#include "send/event_json.h"

#define CHECK(cond)                                                                          \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
      abort();                                                                               \
    }                                                                                        \
  } while (0)

const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) { return "halt_on_error=1:print_stacktrace=1"; }

static uint8_t *pack(const Intake__V1__Event *ev, size_t *len) {
  *len = intake__v1__event__get_packed_size(ev);
  uint8_t *b = malloc(*len + 1);
  CHECK(b != NULL);
  CHECK(intake__v1__event__pack(ev, b) == *len);
  return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  Intake__V1__Event *ev = (Intake__V1__Event *)&err; /* must come back NULL on failure */
  if (intake_send_event_parse((const char *)data, size, &ev, err, sizeof err) < 0) {
    CHECK(ev == NULL && err[0] != '\0' && strlen(err) < sizeof err);
    return 0;
  }
  CHECK(ev != NULL);
  size_t len;
  uint8_t *bytes = pack(ev, &len);
  intake_event_t view;
  /* The zero-copy decoder reads the source kind as unsigned: a negative one (sent as a 10-byte
   * varint) prints as a number the parser's int32 range refuses, so the round trip stops. */
  if (intake_event_parse(bytes, len, &view) == 0 && (int32_t)ev->source_kind >= 0) {
    size_t cap = intake_event_json_bound(&view) + 1;
    char *json = malloc(cap);
    CHECK(json != NULL);
    CHECK(intake_event_to_json(&view, json, cap) < cap);
    Intake__V1__Event *back = NULL;
    if (intake_send_event_parse(json, strlen(json), &back, err, sizeof err) < 0) {
      fprintf(stderr, "re-parse failed: %s\n%s\n", err, json);
      CHECK(0);
    }
    size_t len2;
    uint8_t *bytes2 = pack(back, &len2);
    CHECK(len2 == len && memcmp(bytes, bytes2, len) == 0);
    free(bytes2);
    intake__v1__event__free_unpacked(back, NULL);
    free(json);
  }
  free(bytes);
  intake__v1__event__free_unpacked(ev, NULL);
  return 0;
}
