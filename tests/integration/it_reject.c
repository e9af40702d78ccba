/* Hostile and invalid input.
 *
 * Invalid events in a batch with valid ones: the valid ones are ACCEPTED and delivered; each
 * invalid one is REJECTED with its reason in the ack (index + reason) and lands in the
 * dead-letter topic with its raw bytes as the value and a `reject_reason` header.
 *
 * Framing violations (oversized frame length, unknown frame type, invalid zstd, a batch before
 * HELLO, a zero-length frame, more batches in flight than the window) get a ProtocolError with
 * the right code and the connection is closed, while the daemon keeps serving another
 * connection opened before and new connections opened after. A batch over max_batch_events is
 * answered REJECTED. */
#include <errno.h>
#include <stdlib.h>

#include "ingest/frame.h"
#include "itest.h"

static const char CONFIG[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "gateway:\n"
    "  max_frame_bytes: 64KiB\n"
    "  max_batch_events: 50\n"
    "  max_in_flight_batches: 4\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 20s\n"
    "validate:\n"
    "  max_future_skew: 10m\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n";

typedef struct {
  Intake__V1__Event *ev;
  ProtobufCBinaryData bytes;
  int reason;                  /* Intake__V1__RejectReason, 0 = valid */
  const char *reason_name;     /* expected reject_reason header */
} item_t;

static const char *topic, *dlq;
static itest_daemon_t d;

static Intake__V1__Event *valid(const char *event_id) {
  Intake__V1__Event *ev = itest_event_new("13131313131320000001",
                                          INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA, event_id,
                                          0, "gb28181.alarm.2", 4, itest_now_ms() - 5000);
  itest_event_set_location(ev, 120.07, 29.31, "330782");
  return ev;
}

/* A keeper connection sends a small valid batch and must get an OK ack with it ACCEPTED. */
static uint64_t keeper_seq;
static size_t keeper_events;
static void keeper_check(intake_client_t *k, const char *after) {
  char id[64];
  snprintf(id, sizeof id, "keeper-%llu", (unsigned long long)++keeper_seq);
  Intake__V1__Event *ev = valid(id);
  IT_CHECK_INT(intake_client_send_batch(k, keeper_seq, &ev, 1, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(k, 30000);
  IT_CHECKF(ack->seq == keeper_seq && ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK &&
                ack->n_outcomes == 1 &&
                ack->outcomes[0] == INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED,
            "after %s: the other connection's batch was not accepted", after);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  itest_event_free(ev);
  keeper_events++;
}

static void invalid_events(intake_client_t *c) {
  int64_t now = itest_now_ms();
  item_t items[] = {
      {valid("ok-0"), {0}, 0, NULL},
      {NULL, {0}, INTAKE__V1__REJECT_REASON__REJECT_REASON_MISSING_SOURCE_ID, "missing_source_id"},
      {valid("ok-2"), {0}, 0, NULL},
      {NULL, {0}, INTAKE__V1__REJECT_REASON__REJECT_REASON_MISSING_EVENT_ID, "missing_event_id"},
      {NULL, {0}, INTAKE__V1__REJECT_REASON__REJECT_REASON_BAD_SEVERITY, "bad_severity"},
      {NULL, {0}, INTAKE__V1__REJECT_REASON__REJECT_REASON_BAD_TIME, "bad_time"},
      {NULL, {0}, INTAKE__V1__REJECT_REASON__REJECT_REASON_BAD_UTF8, "bad_utf8"},
      {NULL, {0}, INTAKE__V1__REJECT_REASON__REJECT_REASON_BAD_SOURCE_KIND, "bad_source_kind"},
      {valid("ok-8"), {0}, 0, NULL},
  };
  const size_t n = sizeof items / sizeof items[0];
  items[1].ev = valid("bad-1");
  free(items[1].ev->source_id);
  items[1].ev->source_id = (char *)protobuf_c_empty_string;
  items[3].ev = valid("");
  items[4].ev = valid("bad-4");
  items[4].ev->severity = 42;
  items[5].ev = valid("bad-5");
  items[5].ev->time_ms = now + 24 * 3600 * 1000; /* a day ahead; max_future_skew is 10m */
  items[6].ev = valid("bad-6");
  free(items[6].ev->type);
  items[6].ev->type = strdup("alarm.\xff\xfe.bad");
  items[7].ev = valid("bad-7");
  items[7].ev->source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_UNSPECIFIED;

  ProtobufCBinaryData bytes[sizeof items / sizeof items[0]];
  for (size_t i = 0; i < n; i++)
    bytes[i] = items[i].bytes = itest_event_pack(items[i].ev);
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 1, bytes, n, 0), 0);

  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECK_INT(ack->seq, 1);
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "status %d (%s)",
            ack->status, ack->detail);
  IT_CHECK_INT(ack->n_outcomes, n);
  size_t n_bad = 0;
  for (size_t i = 0; i < n; i++) {
    int want = items[i].reason ? INTAKE__V1__OUTCOME__OUTCOME_REJECTED
                               : INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED;
    IT_CHECKF((int)ack->outcomes[i] == want, "event %zu: outcome %d, expected %d", i,
              ack->outcomes[i], want);
    n_bad += items[i].reason != 0;
  }
  IT_CHECK_INT(ack->n_rejections, n_bad);
  for (size_t j = 0; j < ack->n_rejections; j++) {
    const Intake__V1__Rejection *r = ack->rejections[j];
    IT_CHECKF(r->index < n && items[r->index].reason != 0, "rejection for valid event %u",
              r->index);
    IT_CHECKF((int)r->reason == items[r->index].reason,
              "event %u: reject reason %d (\"%s\"), expected %d (%s)", r->index, r->reason,
              r->detail, items[r->index].reason, items[r->index].reason_name);
    itest_log("event %u rejected: %s (%s)", r->index, items[r->index].reason_name, r->detail);
  }
  intake__v1__batch_ack__free_unpacked(ack, NULL);

  /* The valid ones are in the events topic, the invalid ones in the dead-letter topic. */
  itest_records_t rs = itest_consume(itest_bootstrap(), topic, n - n_bad, 30000);
  IT_CHECK_INT(rs.n, n - n_bad);
  for (size_t i = 0; i < n; i++)
    if (items[i].reason == 0)
      IT_CHECKF(itest_records_count(&rs, items[i].ev->source_id, items[i].bytes.data,
                                    items[i].bytes.len) == 1,
                "valid event %zu not delivered once", i);
  itest_records_free(&rs);

  rs = itest_consume(itest_bootstrap(), dlq, n_bad, 30000);
  IT_CHECKF(rs.n == n_bad, "dead-letter topic holds %zu records, expected %zu", rs.n, n_bad);
  for (size_t i = 0; i < n; i++) {
    if (items[i].reason == 0)
      continue;
    const itest_record_t *hit = NULL;
    for (size_t k = 0; k < rs.n; k++)
      if (rs.v[k].value_len == items[i].bytes.len &&
          memcmp(rs.v[k].value, items[i].bytes.data, items[i].bytes.len) == 0)
        hit = &rs.v[k];
    IT_CHECKF(hit != NULL, "rejected event %zu (%s) not in the dead-letter topic with its raw "
                           "bytes", i, items[i].reason_name);
    IT_CHECK_STR(itest_record_header(hit, "reject_reason"), items[i].reason_name);
  }
  itest_records_free(&rs);

  for (size_t i = 0; i < n; i++) {
    itest_event_free(items[i].ev);
    free(items[i].bytes.data);
  }
}

/* A batch holding one event whose bytes are not an Event: REJECTED, reason MALFORMED. */
static void malformed_event(intake_client_t *c) {
  Intake__V1__Event *ok = valid("ok-m");
  ProtobufCBinaryData evs[2] = {itest_event_pack(ok), {2, (uint8_t *)"\x0a\x7f"}};
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 2, evs, 2, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "status %d (%s)",
            ack->status, ack->detail);
  IT_CHECK_INT(ack->n_outcomes, 2);
  IT_CHECK_INT(ack->outcomes[0], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  IT_CHECK_INT(ack->outcomes[1], INTAKE__V1__OUTCOME__OUTCOME_REJECTED);
  IT_CHECK_INT(ack->n_rejections, 1);
  IT_CHECK_INT(ack->rejections[0]->index, 1);
  IT_CHECK_INT(ack->rejections[0]->reason, INTAKE__V1__REJECT_REASON__REJECT_REASON_MALFORMED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  itest_records_t rs = itest_consume(itest_bootstrap(), dlq, 7, 30000);
  IT_CHECKF(itest_records_count(&rs, NULL, evs[1].data, evs[1].len) == 1,
            "malformed event not in the dead-letter topic");
  for (size_t k = 0; k < rs.n; k++)
    if (rs.v[k].value_len == 2 && memcmp(rs.v[k].value, evs[1].data, 2) == 0)
      IT_CHECK_STR(itest_record_header(&rs.v[k], "reject_reason"), "malformed");
  itest_records_free(&rs);
  free(evs[0].data);
  itest_event_free(ok);
}

static intake_client_t *hello(uint32_t *max_frame) {
  intake_client_t *c;
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &c), 0);
  intake_client_msg_t m;
  IT_CHECK_INT(intake_client_hello(c, "gw-hostile", NULL, 10000, &m), 0);
  if (max_frame)
    *max_frame = m.welcome->max_frame_bytes;
  intake_client_msg_free(&m);
  return c;
}

static void framing(intake_client_t *keeper) {
  /* Oversized length: refused from the 4 length bytes alone. */
  uint32_t max_frame = 0;
  intake_client_t *c = hello(&max_frame);
  IT_CHECK_INT(max_frame, 64 * 1024);
  uint8_t hdr[INTAKE_FRAME_HEADER_BYTES];
  intake_frame_header(hdr, INTAKE_FRAME_BATCH, max_frame); /* length = max_frame + 1 */
  IT_CHECK_INT(intake_client_send_raw(c, hdr, sizeof hdr), 0);
  itest_expect_error_and_close(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_FRAME_TOO_LARGE, 10000);
  intake_client_close(c);
  keeper_check(keeper, "an oversized frame");

  /* Unknown frame type. */
  c = hello(NULL);
  IT_CHECK_INT(intake_client_send_frame(c, 0x77, "garbage!", 8), 0);
  itest_expect_error_and_close(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, 10000);
  intake_client_close(c);
  keeper_check(keeper, "a garbage frame type");

  /* events_zstd that is not zstd. */
  c = hello(NULL);
  Intake__V1__Batch b = INTAKE__V1__BATCH__INIT;
  b.seq = 1;
  b.events_zstd.data = (uint8_t *)"this is not a zstd frame";
  b.events_zstd.len = 24;
  uint8_t buf[64];
  size_t len = intake__v1__batch__pack(&b, buf);
  IT_CHECK_INT(intake_client_send_frame(c, INTAKE_FRAME_BATCH, buf, len), 0);
  itest_expect_error_and_close(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_ZSTD, 10000);
  intake_client_close(c);
  keeper_check(keeper, "invalid zstd");

  /* A batch before HELLO. */
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &c), 0);
  Intake__V1__Event *ev = valid("before-hello");
  IT_CHECK_INT(intake_client_send_batch(c, 1, &ev, 1, 0), 0);
  itest_event_free(ev);
  itest_expect_error_and_close(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED, 10000);
  intake_client_close(c);
  keeper_check(keeper, "a batch before HELLO");

  /* Garbage bytes right after connecting (length 0 frame, then noise). */
  IT_CHECK_INT(intake_client_connect("127.0.0.1", d.port, 5000, &c), 0);
  IT_CHECK_INT(intake_client_send_raw(c, "\0\0\0\0\xde\xad\xbe\xef", 8), 0);
  itest_expect_error_and_close(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, 10000);
  intake_client_close(c);
  keeper_check(keeper, "a zero-length frame");

  /* More batches in flight than Welcome.max_in_flight: all written at once, so intaked reads
   * them in one go, before any delivery report can free a slot. */
  uint32_t window;
  c = itest_connect(&d, "gw-window", &window);
  ev = valid("window");
  ProtobufCBinaryData one = itest_event_pack(ev);
  itest_event_free(ev);
  uint8_t *stream = NULL;
  size_t stream_len = 0;
  for (uint32_t k = 1; k <= window + 1; k++) {
    uint8_t *payload;
    size_t plen;
    IT_CHECK_INT(intake_client_encode_batch(k, &one, 1, 0, &payload, &plen), 0);
    stream = realloc(stream, stream_len + INTAKE_FRAME_HEADER_BYTES + plen);
    IT_CHECK(stream != NULL);
    intake_frame_header(stream + stream_len, INTAKE_FRAME_BATCH, (uint32_t)plen);
    memcpy(stream + stream_len + INTAKE_FRAME_HEADER_BYTES, payload, plen);
    stream_len += INTAKE_FRAME_HEADER_BYTES + plen;
    free(payload);
  }
  IT_CHECK_INT(intake_client_send_raw(c, stream, stream_len), 0);
  free(stream);
  free(one.data);
  /* Acks of the first `window` batches may come before the error; then the error, then EOF. */
  int got_error = 0;
  for (;;) {
    intake_client_msg_t m;
    int err = intake_client_recv(c, 10000, &m);
    if (err == -ECONNRESET)
      break;
    IT_CHECKF(err == 0, "window exceeded: %s", strerror(-err));
    IT_CHECKF(m.ack != NULL || m.error != NULL, "window exceeded: frame type %u", m.type);
    if (m.error) {
      IT_CHECK_INT(m.error->code, INTAKE__V1__ERROR_CODE__ERROR_CODE_WINDOW_EXCEEDED);
      got_error = 1;
    } else {
      IT_CHECKF(!got_error, "an ack after the ProtocolError");
      IT_CHECK(m.ack->seq <= window);
    }
    intake_client_msg_free(&m);
  }
  IT_CHECKF(got_error, "%u batches in flight with max_in_flight %u: no WINDOW_EXCEEDED",
            window + 1, window);
  intake_client_close(c);
  keeper_check(keeper, "a window overrun");

  /* A batch with more events than gateway.max_batch_events: the batch is REJECTED, the
   * connection stays usable. */
  Intake__V1__Event *many[51];
  for (int i = 0; i < 51; i++) {
    char id[32];
    snprintf(id, sizeof id, "many-%d", i);
    many[i] = valid(id);
  }
  IT_CHECK_INT(intake_client_send_batch(keeper, 1000, many, 51, INTAKE_CLIENT_ZSTD), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(keeper, 30000);
  IT_CHECK_INT(ack->seq, 1000);
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_REJECTED,
            "51 events, max_batch_events 50: status %d", ack->status);
  itest_log("oversized batch: REJECTED (\"%s\")", ack->detail);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  for (int i = 0; i < 51; i++)
    itest_event_free(many[i]);
  keeper_check(keeper, "a rejected batch");

  /* And a new connection is served as well. */
  c = hello(NULL);
  keeper_check(c, "all framing violations (new connection)");
  intake_client_close(c);
}

int main(void) {
  itest_init("reject", true, 170);
  topic = itest_topic("events");
  dlq = itest_topic("dlq");
  const char *topics[] = {topic, dlq};
  itest_create_topics(itest_bootstrap(), topics, 2, 4);
  itest_daemon_start(&d, "main", CONFIG);

  intake_client_t *keeper = itest_connect(&d, "gw-keeper", NULL);
  intake_client_t *c = itest_connect(&d, "gw-reject", NULL);
  invalid_events(c);
  framing(keeper);
  malformed_event(c);
  intake_client_close(c);
  intake_client_close(keeper);

  /* ok-0, ok-2, ok-8, ok-m, the keeper's, and one "window" event (the same in every batch of
   * the window overrun: produced once). */
  itest_records_t rs = itest_consume(itest_bootstrap(), topic, 5 + keeper_events, 30000);
  IT_CHECK_INT(rs.n, 5 + keeper_events);
  itest_records_free(&rs);

  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  itest_finish();
  return 0;
}
