/* Logging to stderr, one line per call, in logfmt or JSON (log.format):
 *
 *   ts=2026-11-28T07:12:44.123Z level=info msg="listening" address=127.0.0.1:7400 config=x.yaml
 *   {"ts":"2026-11-28T07:12:44.123Z","level":"info","msg":"listening","address":"127.0.0.1:7400",...}
 *
 * Each line is written with a single write(2), so lines from the Kafka client's threads never
 * interleave with ours.
 *
 * Call sites pass their fields as a printf format of logfmt pairs, `key=value key="value" ...`.
 * The logger reads the pairs back (keys are [A-Za-z0-9_.-]+) and writes them in the configured
 * format with proper escaping, so a call site never escapes anything:
 *   - a value in double quotes ends at the `"` that is followed by the end or by ` key=`;
 *     quotes, backslashes and control characters inside it are escaped on output;
 *   - a bare value runs to the next ` key=` or the end, so `error=%s` with a message that
 *     contains blanks stays one value (and is quoted in logfmt);
 *   - in JSON, a bare value that is a decimal number becomes a JSON number, anything else a
 *     string (invalid UTF-8 becomes U+FFFD).
 * Keeping the printf form (rather than a typed field list) keeps every call site as it is;
 * the one ambiguity it leaves is a value that itself contains `" key=` or ` key=`. */
#ifndef INTAKE_CORE_LOG_H
#define INTAKE_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

void intake_log_set_level(intake_log_level_t level);
intake_log_level_t intake_log_get_level(void);
void intake_log_set_format(intake_log_format_t format);
intake_log_format_t intake_log_get_format(void);

/* `msg` is a fixed text; `fmt` (may be NULL) gives the " key=value" pairs described above. */
void intake_log(intake_log_level_t level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats one line as intake_log() would (without writing it) into buf[0..cap), NUL-terminated,
 * newline included; returns its length. `ts_ms` is the wall-clock time to print. For tests. */
size_t intake_log_format_line(char *buf, size_t cap, intake_log_format_t format,
                              intake_log_level_t level, int64_t ts_ms, const char *msg,
                              const char *pairs);

/* Rate limit for a repeated log line: at most `burst` lines (0 counts as 1) per window of
 * `interval_ms`, the window starting at the first line let through; the lines held back are
 * counted and reported with the next one that passes (as "suppressed=N"). Zero-initialize, then
 * set interval_ms (and burst). Not thread-safe: use one limiter per thread (every user in
 * intaked runs on the loop thread). */
typedef struct {
  uint64_t interval_ms;
  uint32_t burst;             /* lines per window; 0 = 1 */
  uint32_t used;              /* lines let through in the current window */
  uint64_t last_ms;           /* monotonic ms at which the current window started */
  uint64_t suppressed;        /* lines held back since the last line let through */
} intake_log_limit_t;

/* Returns true when a line may be logged now; then *suppressed holds how many were held back
 * before it (and the count restarts). */
bool intake_log_allow(intake_log_limit_t *l, uint64_t *suppressed);

#define LOG_DEBUG(msg, ...) intake_log(INTAKE_LOG_DEBUG, msg, __VA_ARGS__)
#define LOG_INFO(msg, ...) intake_log(INTAKE_LOG_INFO, msg, __VA_ARGS__)
#define LOG_WARN(msg, ...) intake_log(INTAKE_LOG_WARN, msg, __VA_ARGS__)
#define LOG_ERROR(msg, ...) intake_log(INTAKE_LOG_ERROR, msg, __VA_ARGS__)

#endif
