/* Unit tests for src/core: log lines in logfmt and JSON (pair parsing, escaping, numbers,
 * truncation), the rate limiter, and the text writer's JSON escaping and base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/log.h"
#include "core/wbuf.h"

#define TS 1795850000123LL /* 2026-11-28T07:13:20.123Z */

static char line[8192];

static const char *fmt_line(intake_log_format_t f, const char *msg, const char *pairs) {
  intake_log_format_line(line, sizeof line, f, INTAKE_LOG_INFO, TS, msg, pairs);
  return line;
}

static void test_logfmt(void **state) {
  assert_string_equal(fmt_line(INTAKE_LOG_FORMAT_LOGFMT, "listening", "address=127.0.0.1:7400 n=3"),
                      "ts=2026-11-28T07:13:20.123Z level=info msg=\"listening\" "
                      "address=127.0.0.1:7400 n=3\n");
  assert_string_equal(fmt_line(INTAKE_LOG_FORMAT_LOGFMT, "stopped", NULL),
                      "ts=2026-11-28T07:13:20.123Z level=info msg=\"stopped\"\n");
  /* Quoted values stay quoted; quotes and newlines inside are escaped; a bare value with
   * blanks runs to the next key and gets quotes. */
  assert_string_equal(
      fmt_line(INTAKE_LOG_FORMAT_LOGFMT, "x",
               "gateway=\"gw \"1\"\" reason=\"a\nb\" error=connection reset by peer k=v"),
      "ts=2026-11-28T07:13:20.123Z level=info msg=\"x\" gateway=\"gw \\\"1\\\"\" "
      "reason=\"a\\nb\" error=\"connection reset by peer\" k=v\n");
  /* An empty value, an unclosed quote, text without a key. */
  assert_string_equal(fmt_line(INTAKE_LOG_FORMAT_LOGFMT, "x", "a= b=\"open"),
                      "ts=2026-11-28T07:13:20.123Z level=info msg=\"x\" a=\"\" b=\"open\"\n");
  assert_string_equal(fmt_line(INTAKE_LOG_FORMAT_LOGFMT, "x", "just text a=1"),
                      "ts=2026-11-28T07:13:20.123Z level=info msg=\"x\" _=\"just text\" a=1\n");
}

static void test_json(void **state) {
  assert_string_equal(
      fmt_line(INTAKE_LOG_FORMAT_JSON, "stats",
               "received=12 ratio=0.5 neg=-3 zero=0 lead=007 addr=127.0.0.1:1 "
               "gateway=\"42\" text=\"say \"hi\"\\\" err=no such file"),
      "{\"ts\":\"2026-11-28T07:13:20.123Z\",\"level\":\"info\",\"msg\":\"stats\","
      "\"received\":12,\"ratio\":0.5,\"neg\":-3,\"zero\":0,\"lead\":\"007\","
      "\"addr\":\"127.0.0.1:1\",\"gateway\":\"42\",\"text\":\"say \\\"hi\\\"\\\\\","
      "\"err\":\"no such file\"}\n");
  assert_string_equal(fmt_line(INTAKE_LOG_FORMAT_JSON, "q\"", NULL),
                      "{\"ts\":\"2026-11-28T07:13:20.123Z\",\"level\":\"info\",\"msg\":\"q\\\"\"}\n");
  /* Invalid UTF-8 and control bytes still give valid JSON. */
  assert_string_equal(fmt_line(INTAKE_LOG_FORMAT_JSON, "x", "v=\"\xff\x01\xc3\xa9\""),
                      "{\"ts\":\"2026-11-28T07:13:20.123Z\",\"level\":\"info\",\"msg\":\"x\","
                      "\"v\":\"\\ufffd\\u0001\xc3\xa9\"}\n");
}

/* A line that would not fit leaves whole fields out and says so; JSON stays closed. */
static void test_truncation(void **state) {
  char pairs[2048], small[200];
  snprintf(pairs, sizeof pairs, "a=1 b=\"%0150d\" c=2", 0);
  size_t n = intake_log_format_line(small, sizeof small, INTAKE_LOG_FORMAT_JSON, INTAKE_LOG_WARN,
                                    TS, "m", pairs);
  assert_true(n < sizeof small);
  assert_string_equal(small, "{\"ts\":\"2026-11-28T07:13:20.123Z\",\"level\":\"warn\",\"msg\":\"m\","
                             "\"a\":1,\"truncated\":true}\n");
  n = intake_log_format_line(small, sizeof small, INTAKE_LOG_FORMAT_LOGFMT, INTAKE_LOG_ERROR, TS,
                             "m", pairs);
  assert_string_equal(small, "ts=2026-11-28T07:13:20.123Z level=error msg=\"m\" a=1 "
                             "truncated=true\n");
}

static void test_rate_limit(void **state) {
  intake_log_limit_t l = {.interval_ms = 60000};
  uint64_t held = 99;
  assert_true(intake_log_allow(&l, &held));
  assert_int_equal(held, 0);
  assert_false(intake_log_allow(&l, &held));
  assert_false(intake_log_allow(&l, &held));
  assert_int_equal(l.suppressed, 2);
  l.last_ms -= 60000; /* a minute later */
  assert_true(intake_log_allow(&l, &held));
  assert_int_equal(held, 2);
  assert_int_equal(l.suppressed, 0);

  intake_log_limit_t b = {.interval_ms = 60000, .burst = 3};
  for (int i = 0; i < 3; i++)
    assert_true(intake_log_allow(&b, &held));
  assert_false(intake_log_allow(&b, &held));
  assert_false(intake_log_allow(&b, &held));
  b.last_ms -= 60000; /* the next window */
  assert_true(intake_log_allow(&b, &held));
  assert_int_equal(held, 2);
  assert_true(intake_log_allow(&b, &held));
  assert_int_equal(held, 0);
}

static void test_wbuf(void **state) {
  char b[16];
  intake_wbuf_t w;
  intake_wbuf_init(&w, b, sizeof b);
  intake_wbuf_puts(&w, "0123456789");
  intake_wbuf_u64(&w, 18446744073709551615ULL);
  assert_false(intake_wbuf_fits(&w));
  assert_int_equal(intake_wbuf_finish(&w), 30);
  assert_string_equal(b, "012345678918446"); /* cut, NUL-terminated */
  intake_wbuf_init(&w, NULL, 0);
  intake_wbuf_i64(&w, INT64_MIN);
  assert_int_equal(intake_wbuf_finish(&w), 20);

  static const struct {
    const char *in, *out;
  } b64[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
             {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}, {"\xff\xfe\xfd", "//79"}};
  for (size_t i = 0; i < sizeof b64 / sizeof b64[0]; i++) {
    char o[32];
    intake_wbuf_init(&w, o, sizeof o);
    intake_wbuf_base64(&w, b64[i].in, strlen(b64[i].in));
    intake_wbuf_finish(&w);
    assert_string_equal(o, b64[i].out);
  }

  static const struct {
    const char *in;
    size_t len;
    const char *out;
  } esc[] = {
      {"a\"b\\c/", 6, "a\\\"b\\\\c/"},
      {"\t\r\n\b\f\x1f\x7f", 7, "\\t\\r\\n\\b\\f\\u001f\\u007f"},
      {"nul\0x", 5, "nul\\u0000x"},
      {"\xe4\xb8\xad\xf0\x9f\x98\x80", 7, "\xe4\xb8\xad\xf0\x9f\x98\x80"}, /* 中 😀 */
      {"\xc0\xaf", 2, "\\ufffd\\ufffd"},                           /* overlong */
      {"\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd"},               /* surrogate */
      {"\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd"},   /* > U+10FFFF */
      {"\xe4\xb8", 2, "\\ufffd\\ufffd"},                           /* truncated */
  };
  for (size_t i = 0; i < sizeof esc / sizeof esc[0]; i++) {
    char o[64];
    intake_wbuf_init(&w, o, sizeof o);
    intake_wbuf_json_escape(&w, esc[i].in, esc[i].len);
    intake_wbuf_finish(&w);
    assert_string_equal(o, esc[i].out);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_logfmt),     cmocka_unit_test(test_json),
      cmocka_unit_test(test_truncation), cmocka_unit_test(test_rate_limit),
      cmocka_unit_test(test_wbuf),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
