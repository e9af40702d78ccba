/* Unit tests for the gateway client (src/client/gwclient.c) against an in-test socket peer:
 * the test thread plays both sides, writing the peer's bytes before the client reads them. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include <cmocka.h>

#include "client/gwclient.h"
#include "ingest/frame.h"

typedef struct {
  int listen_fd;
  int peer_fd;            /* intaked's side of the connection */
  uint16_t port;
  intake_client_t *c;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(f->listen_fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(f->listen_fd, 4), 0);
  socklen_t sl = sizeof a;
  assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&a, &sl), 0);
  f->port = ntohs(a.sin_port);
  assert_int_equal(intake_client_connect("127.0.0.1", f->port, 2000, &f->c), 0);
  f->peer_fd = accept(f->listen_fd, NULL, NULL);
  assert_true(f->peer_fd >= 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  intake_client_close(f->c);
  if (f->peer_fd >= 0)
    close(f->peer_fd);
  close(f->listen_fd);
  free(f);
  return 0;
}

static void peer_write(fixture_t *f, const void *buf, size_t len) {
  assert_int_equal(send(f->peer_fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void peer_write_frame(fixture_t *f, uint8_t type, const void *payload, size_t len) {
  uint8_t hdr[INTAKE_FRAME_HEADER_BYTES];
  intake_frame_header(hdr, type, (uint32_t)len);
  peer_write(f, hdr, sizeof hdr);
  if (len > 0)
    peer_write(f, payload, len);
}

/* Reads one whole frame from the client; returns its payload (caller frees). */
static uint8_t *peer_read_frame(fixture_t *f, uint8_t *type, size_t *len) {
  uint8_t hdr[INTAKE_FRAME_HEADER_BYTES];
  assert_int_equal(recv(f->peer_fd, hdr, sizeof hdr, MSG_WAITALL), (ssize_t)sizeof hdr);
  uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
  assert_true(n >= 1);
  *type = hdr[4];
  *len = n - 1;
  uint8_t *p = malloc(*len + 1);
  assert_non_null(p);
  if (*len > 0)
    assert_int_equal(recv(f->peer_fd, p, *len, MSG_WAITALL), (ssize_t)*len);
  return p;
}

static void peer_write_ack(fixture_t *f, uint64_t seq, size_t n_outcomes) {
  Intake__V1__BatchAck ack = INTAKE__V1__BATCH_ACK__INIT;
  Intake__V1__Outcome outcomes[8] = {0};
  ack.seq = seq;
  ack.n_outcomes = n_outcomes;
  ack.outcomes = outcomes;
  uint8_t buf[256];
  size_t len = intake__v1__batch_ack__pack(&ack, buf);
  peer_write_frame(f, INTAKE_FRAME_BATCH_ACK, buf, len);
}

static void test_connect_refused(void **state) {
  (void)state;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t sl = sizeof a;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
  close(fd); /* bound, never listened: the port is closed */
  intake_client_t *c = NULL;
  assert_int_equal(intake_client_connect("127.0.0.1", ntohs(a.sin_port), 1000, &c), -ECONNREFUSED);
  assert_null(c);
  assert_int_equal(intake_client_connect("no-such-host.invalid", 1, 1000, &c), -ENOENT);
}

static void test_hello_welcome(void **state) {
  fixture_t *f = *state;
  Intake__V1__Welcome w = INTAKE__V1__WELCOME__INIT;
  w.protocol_version = 1;
  w.max_in_flight = 8;
  w.max_frame_bytes = 1 << 20;
  w.max_batch_events = 1000;
  uint8_t buf[64];
  size_t len = intake__v1__welcome__pack(&w, buf);
  peer_write_frame(f, INTAKE_FRAME_WELCOME, buf, len); /* queued before the hello is read */

  intake_client_msg_t m;
  assert_int_equal(intake_client_hello(f->c, "gw-7", "s3cret", 2000, &m), 0);
  assert_int_equal(m.type, INTAKE_FRAME_WELCOME);
  assert_non_null(m.welcome);
  assert_int_equal(m.welcome->max_in_flight, 8);
  assert_int_equal(m.welcome->max_batch_events, 1000);
  intake_client_msg_free(&m);
  intake_client_msg_free(&m); /* idempotent */

  uint8_t type;
  uint8_t *p = peer_read_frame(f, &type, &len);
  assert_int_equal(type, INTAKE_FRAME_HELLO);
  Intake__V1__Hello *h = intake__v1__hello__unpack(NULL, len, p);
  assert_non_null(h);
  assert_string_equal(h->gateway_id, "gw-7");
  assert_string_equal(h->token, "s3cret");
  assert_int_equal(h->protocol_version, 1);
  intake__v1__hello__free_unpacked(h, NULL);
  free(p);
}

static void test_hello_answered_by_error(void **state) {
  fixture_t *f = *state;
  Intake__V1__ProtocolError e = INTAKE__V1__PROTOCOL_ERROR__INIT;
  e.code = INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED;
  e.detail = "bad token";
  uint8_t buf[64];
  size_t len = intake__v1__protocol_error__pack(&e, buf);
  peer_write_frame(f, INTAKE_FRAME_ERROR, buf, len);
  intake_client_msg_t m;
  assert_int_equal(intake_client_hello(f->c, "gw", NULL, 2000, &m), -EPROTO);
  assert_non_null(m.error);
  assert_int_equal(m.error->code, INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED);
  assert_string_equal(m.error->detail, "bad token");
  intake_client_msg_free(&m);
}

static void make_events(Intake__V1__Event ev[3], Intake__V1__Event *ptrs[3]) {
  static const char *ids[3] = {"e1", "e2", "e3"};
  for (int i = 0; i < 3; i++) {
    intake__v1__event__init(&ev[i]);
    ev[i].source_id = "13131313131320000001";
    ev[i].source_kind = INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA;
    ev[i].event_id = (char *)ids[i];
    ev[i].seq = (uint64_t)i + 1;
    ev[i].type = "gb28181.alarm.6";
    ev[i].severity = 2;
    ev[i].time_ms = 1700000000000 + i;
    ptrs[i] = &ev[i];
  }
}

static void check_events(const Intake__V1__Batch *b, Intake__V1__Event *ptrs[3]) {
  assert_int_equal(b->n_events, 3);
  for (int i = 0; i < 3; i++) {
    assert_string_equal(b->events[i]->event_id, ptrs[i]->event_id);
    assert_string_equal(b->events[i]->source_id, ptrs[i]->source_id);
    assert_int_equal(b->events[i]->seq, ptrs[i]->seq);
    assert_int_equal(b->events[i]->time_ms, ptrs[i]->time_ms);
  }
}

static void test_send_batch_plain(void **state) {
  fixture_t *f = *state;
  Intake__V1__Event ev[3], *ptrs[3];
  make_events(ev, ptrs);
  assert_int_equal(intake_client_send_batch(f->c, 42, ptrs, 3, 0), 0);

  uint8_t type;
  size_t len;
  uint8_t *p = peer_read_frame(f, &type, &len);
  assert_int_equal(type, INTAKE_FRAME_BATCH);
  /* Byte-for-byte what protobuf-c packs for the same Batch. */
  Intake__V1__Batch want = INTAKE__V1__BATCH__INIT;
  want.seq = 42;
  want.n_events = 3;
  want.events = ptrs;
  size_t wlen = intake__v1__batch__get_packed_size(&want);
  uint8_t *wbuf = malloc(wlen);
  intake__v1__batch__pack(&want, wbuf);
  assert_int_equal(len, wlen);
  assert_memory_equal(p, wbuf, wlen);
  free(wbuf);

  Intake__V1__Batch *b = intake__v1__batch__unpack(NULL, len, p);
  assert_non_null(b);
  assert_int_equal(b->seq, 42);
  assert_int_equal(b->events_zstd.len, 0);
  check_events(b, ptrs);
  intake__v1__batch__free_unpacked(b, NULL);
  free(p);
}

static void test_send_batch_zstd(void **state) {
  fixture_t *f = *state;
  Intake__V1__Event ev[3], *ptrs[3];
  make_events(ev, ptrs);
  assert_int_equal(intake_client_send_batch(f->c, 7, ptrs, 3, INTAKE_CLIENT_ZSTD), 0);

  uint8_t type;
  size_t len;
  uint8_t *p = peer_read_frame(f, &type, &len);
  assert_int_equal(type, INTAKE_FRAME_BATCH);
  Intake__V1__Batch *b = intake__v1__batch__unpack(NULL, len, p);
  assert_non_null(b);
  assert_int_equal(b->seq, 7);
  assert_int_equal(b->n_events, 0);
  assert_true(b->events_zstd.len > 0);
  unsigned long long size = ZSTD_getFrameContentSize(b->events_zstd.data, b->events_zstd.len);
  assert_true(size != ZSTD_CONTENTSIZE_UNKNOWN && size != ZSTD_CONTENTSIZE_ERROR);
  uint8_t *raw = malloc(size);
  assert_int_equal(ZSTD_decompress(raw, size, b->events_zstd.data, b->events_zstd.len), size);
  Intake__V1__Batch *inner = intake__v1__batch__unpack(NULL, size, raw);
  assert_non_null(inner);
  assert_int_equal(inner->seq, 0); /* only `events` inside */
  assert_int_equal(inner->events_zstd.len, 0);
  check_events(inner, ptrs);
  intake__v1__batch__free_unpacked(inner, NULL);
  intake__v1__batch__free_unpacked(b, NULL);
  free(raw);
  free(p);
}

static void test_send_encoded_garbage_and_raw(void **state) {
  fixture_t *f = *state;
  ProtobufCBinaryData evs[2] = {{3, (uint8_t *)"\xff\xff\xff"}, {0, NULL}};
  assert_int_equal(intake_client_send_batch_encoded(f->c, 1, evs, 2, 0), 0);
  uint8_t type;
  size_t len;
  uint8_t *p = peer_read_frame(f, &type, &len);
  static const uint8_t want[] = {0x08, 0x01, 0x12, 0x03, 0xff, 0xff, 0xff, 0x12, 0x00};
  assert_int_equal(len, sizeof want);
  assert_memory_equal(p, want, sizeof want);
  free(p);

  assert_int_equal(intake_client_send_raw(f->c, "\x00\x00\x00\x01\x77", 5), 0);
  p = peer_read_frame(f, &type, &len);
  assert_int_equal(type, 0x77);
  assert_int_equal(len, 0);
  free(p);
}

static void test_recv_pipelined_split_and_eof(void **state) {
  fixture_t *f = *state;
  intake_client_msg_t m;
  assert_int_equal(intake_client_recv(f->c, 50, &m), -ETIMEDOUT);

  /* Two acks in one write, out of order. */
  peer_write_ack(f, 2, 1);
  peer_write_ack(f, 1, 3);
  assert_int_equal(intake_client_recv(f->c, 1000, &m), 0);
  assert_non_null(m.ack);
  assert_int_equal(m.ack->seq, 2);
  assert_int_equal(m.ack->n_outcomes, 1);
  intake_client_msg_free(&m);
  assert_int_equal(intake_client_recv(f->c, 1000, &m), 0);
  assert_int_equal(m.ack->seq, 1);
  assert_int_equal(m.ack->n_outcomes, 3);
  intake_client_msg_free(&m);

  /* A frame split across writes: the partial bytes survive a timeout. */
  Intake__V1__BatchAck ack = INTAKE__V1__BATCH_ACK__INIT;
  ack.seq = 9;
  ack.status = INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY;
  ack.detail = "kafka: timed out";
  uint8_t buf[128];
  uint8_t frame[INTAKE_FRAME_HEADER_BYTES + sizeof buf];
  size_t len = intake__v1__batch_ack__pack(&ack, buf);
  intake_frame_header(frame, INTAKE_FRAME_BATCH_ACK, (uint32_t)len);
  memcpy(frame + INTAKE_FRAME_HEADER_BYTES, buf, len);
  peer_write(f, frame, 7);
  assert_int_equal(intake_client_recv(f->c, 50, &m), -ETIMEDOUT);
  peer_write(f, frame + 7, INTAKE_FRAME_HEADER_BYTES + len - 7);
  assert_int_equal(intake_client_recv(f->c, 1000, &m), 0);
  assert_int_equal(m.ack->seq, 9);
  assert_int_equal(m.ack->status, INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY);
  assert_string_equal(m.ack->detail, "kafka: timed out");
  intake_client_msg_free(&m);

  close(f->peer_fd);
  f->peer_fd = -1;
  assert_int_equal(intake_client_recv(f->c, 1000, &m), -ECONNRESET);
  /* The first send after the peer closed may still succeed; the RST fails a later one. */
  int err = 0;
  for (int i = 0; i < 100 && err == 0; i++) {
    err = intake_client_send_raw(f->c, "x", 1);
    if (err == 0)
      usleep(10000);
  }
  assert_true(err == -EPIPE || err == -ECONNRESET);
}

static void test_recv_bad_frames(void **state) {
  fixture_t *f = *state;
  intake_client_msg_t m;
  peer_write_frame(f, 0x66, "abc", 3);
  assert_int_equal(intake_client_recv(f->c, 1000, &m), -EBADMSG);
  assert_int_equal(m.type, 0x66);
  peer_write_frame(f, INTAKE_FRAME_BATCH_ACK, "\xff\xff", 2); /* truncated varint */
  assert_int_equal(intake_client_recv(f->c, 1000, &m), -EBADMSG);
  assert_null(m.ack);
  peer_write(f, "\x7f\xff\xff\xff\x04", 5);
  assert_int_equal(intake_client_recv(f->c, 1000, &m), -EMSGSIZE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_connect_refused),
      cmocka_unit_test_setup_teardown(test_hello_welcome, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hello_answered_by_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_send_batch_plain, setup, teardown),
      cmocka_unit_test_setup_teardown(test_send_batch_zstd, setup, teardown),
      cmocka_unit_test_setup_teardown(test_send_encoded_garbage_and_raw, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recv_pipelined_split_and_eof, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recv_bad_frames, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
