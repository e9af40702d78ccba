/* A route with `encoding: json` carries the event as proto3 JSON (content-type
 * application/json), while another route of the same event keeps the protobuf bytes. */
#include <stdlib.h>
#include <string.h>

#include "itest.h"

static const char CONFIG[] =
    "listen: {address: 127.0.0.1, port: ${PORT}}\n"
    "kafka: {mode: brokers, brokers: \"${BROKERS}\", delivery_timeout: 20s}\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "  rules:\n"
    "    - {name: as-json, match: {type: smoke.alarm}, topics: ${P}.json, encoding: json}\n"
    "    - {name: as-protobuf, match: {type: smoke.alarm}, topics: ${P}.pb}\n";

#define N 5

int main(void) {
  itest_init("json", true, 120);
  const char *topics[] = {itest_topic("json"), itest_topic("pb"), itest_topic("events"),
                          itest_topic("dlq")};
  itest_create_topics(itest_bootstrap(), topics, 4, 2);
  itest_daemon_t d;
  itest_daemon_start(&d, "main", CONFIG);
  intake_client_t *c = itest_connect(&d, "gw-json", NULL);

  ProtobufCBinaryData ev[N];
  char ids[N][16];
  for (int i = 0; i < N; i++) {
    snprintf(ids[i], sizeof ids[i], "j-%d", i);
    Intake__V1__Event *e = itest_event_new("json-src", INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR,
                                           ids[i], (uint64_t)i + 1, "smoke.alarm", 2,
                                           itest_now_ms() - 1000);
    itest_event_add_attr(e, "note", "say \"hi\"\n");
    ev[i] = itest_event_pack(e);
    itest_event_free(e);
  }
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 1, ev, N, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECK_INT(ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK);
  for (size_t i = 0; i < ack->n_outcomes; i++)
    IT_CHECK_INT(ack->outcomes[i], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  intake_client_close(c);

  itest_records_t js = itest_consume(itest_bootstrap(), topics[0], N, 20000);
  itest_records_t pb = itest_consume(itest_bootstrap(), topics[1], N, 20000);
  IT_CHECK_INT(js.n, N);
  IT_CHECK_INT(pb.n, N);
  for (int i = 0; i < N; i++) {
    IT_CHECK_INT(itest_records_count(&pb, "json-src", ev[i].data, ev[i].len), 1);
    char want_id[128];
    snprintf(want_id, sizeof want_id, "\"event_id\":\"%s\"", ids[i]);
    size_t found = 0;
    for (size_t r = 0; r < js.n; r++) {
      char *text = strndup((const char *)js.v[r].value, js.v[r].value_len);
      if (strstr(text, want_id)) {
        found++;
        IT_CHECK_STR(itest_record_header(&js.v[r], "content-type"), "application/json");
        IT_CHECK_STR(itest_record_header(&js.v[r], "route"), "as-json");
        IT_CHECK_STR(js.v[r].key, "json-src");
        IT_CHECKF(text[0] == '{' && text[js.v[r].value_len - 1] == '}', "not an object: %s", text);
        IT_CHECKF(strstr(text, "\"source_id\":\"json-src\"") &&
                      strstr(text, "\"source_kind\":\"SOURCE_KIND_SENSOR\"") &&
                      strstr(text, "\"type\":\"smoke.alarm\"") &&
                      strstr(text, "\"note\":\"say \\\"hi\\\"\\n\""),
                  "unexpected JSON: %s", text);
      }
      free(text);
    }
    IT_CHECKF(found == 1, "%s is in the JSON topic %zu times", ids[i], found);
  }
  for (int r = 0; r < N; r++)
    IT_CHECK_STR(itest_record_header(&pb.v[r], "content-type"), "application/x-protobuf");
  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  itest_records_free(&js);
  itest_records_free(&pb);
  for (int i = 0; i < N; i++)
    free(ev[i].data);
  itest_finish();
  return 0;
}
