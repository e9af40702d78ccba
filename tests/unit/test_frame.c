/* Framing: u32 big-endian length (type + payload), u8 type, payload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "ingest/frame.h"

static void test_header_round_trip(void **state) {
  (void)state;
  uint8_t buf[64];
  intake_frame_header(buf, INTAKE_FRAME_BATCH, 3);
  memcpy(buf + 5, "abc", 3);
  assert_memory_equal(buf, "\x00\x00\x00\x04\x03", 5);
  intake_frame_t f;
  assert_int_equal(intake_frame_parse(buf, 8, 1024, &f), INTAKE_FRAME_OK);
  assert_int_equal(f.type, INTAKE_FRAME_BATCH);
  assert_int_equal(f.payload_len, 3);
  assert_memory_equal(f.payload, "abc", 3);
  assert_int_equal(f.frame_len, 8);
}

static void test_partial_frames_need_more(void **state) {
  (void)state;
  uint8_t buf[16];
  intake_frame_header(buf, INTAKE_FRAME_HELLO, 4);
  intake_frame_t f;
  for (size_t n = 0; n < 9; n++)
    assert_int_equal(intake_frame_parse(buf, n, 1024, &f), INTAKE_FRAME_NEED_MORE);
  assert_int_equal(intake_frame_parse(buf, 9, 1024, &f), INTAKE_FRAME_OK);
}

static void test_oversized_reported_before_payload(void **state) {
  (void)state;
  uint8_t buf[5];
  intake_frame_header(buf, INTAKE_FRAME_BATCH, 2000);
  intake_frame_t f;
  /* Only the length is in: the frame is refused without waiting for 2000 bytes. */
  assert_int_equal(intake_frame_parse(buf, 4, 1024, &f), INTAKE_FRAME_TOO_LARGE);
  intake_frame_header(buf, INTAKE_FRAME_BATCH, 1023); /* length 1024: at the limit */
  assert_int_equal(intake_frame_parse(buf, 5, 1024, &f), INTAKE_FRAME_NEED_MORE);
  const uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
  assert_int_equal(intake_frame_parse(huge, 4, UINT32_MAX - 1, &f), INTAKE_FRAME_TOO_LARGE);
}

static void test_zero_length_is_an_error(void **state) {
  (void)state;
  const uint8_t zero[5] = {0, 0, 0, 0, 3};
  intake_frame_t f;
  assert_int_equal(intake_frame_parse(zero, 5, 1024, &f), INTAKE_FRAME_EMPTY);
}

static void test_back_to_back_frames(void **state) {
  (void)state;
  uint8_t buf[32];
  intake_frame_header(buf, 1, 2);
  memcpy(buf + 5, "hi", 2);
  intake_frame_header(buf + 7, 3, 0);
  intake_frame_t f;
  assert_int_equal(intake_frame_parse(buf, 12, 64, &f), INTAKE_FRAME_OK);
  assert_int_equal(f.frame_len, 7);
  assert_int_equal(intake_frame_parse(buf + 7, 5, 64, &f), INTAKE_FRAME_OK);
  assert_int_equal(f.type, 3);
  assert_int_equal(f.payload_len, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_round_trip),
      cmocka_unit_test(test_partial_frames_need_more),
      cmocka_unit_test(test_oversized_reported_before_payload),
      cmocka_unit_test(test_zero_length_is_an_error),
      cmocka_unit_test(test_back_to_back_frames),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
