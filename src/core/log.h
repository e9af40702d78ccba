/* Logging in logfmt to stderr: `ts=2026-11-28T07:12:44.123Z level=info msg="listening" k=v ...`.
 * One line per call, written with a single write(2) so lines from the Kafka client's threads
 * never interleave with ours. */
#ifndef INTAKE_CORE_LOG_H
#define INTAKE_CORE_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"

void intake_log_set_level(intake_log_level_t level);
intake_log_level_t intake_log_get_level(void);

/* `msg` is quoted; `fmt` (may be NULL) appends already-formatted " key=value" pairs. */
void intake_log(intake_log_level_t level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Rate limit for a repeated log line: at most one line per `interval_ms`; the lines held back are
 * counted and reported with the next one that passes (as "suppressed=N"). */
typedef struct {
  uint64_t interval_ms;
  uint64_t last_ms;           /* monotonic ms of the last line let through */
  uint64_t suppressed;        /* lines held back since then */
} intake_log_limit_t;

/* Returns true when a line may be logged now; then *suppressed holds how many were held back
 * before it (and the count restarts). */
bool intake_log_allow(intake_log_limit_t *l, uint64_t *suppressed);

#define LOG_DEBUG(msg, ...) intake_log(INTAKE_LOG_DEBUG, msg, __VA_ARGS__)
#define LOG_INFO(msg, ...) intake_log(INTAKE_LOG_INFO, msg, __VA_ARGS__)
#define LOG_WARN(msg, ...) intake_log(INTAKE_LOG_WARN, msg, __VA_ARGS__)
#define LOG_ERROR(msg, ...) intake_log(INTAKE_LOG_ERROR, msg, __VA_ARGS__)

#endif
