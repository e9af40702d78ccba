#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static intake_log_level_t min_level = INTAKE_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void intake_log_set_level(intake_log_level_t level) { min_level = level; }
intake_log_level_t intake_log_get_level(void) { return min_level; }

void intake_log(intake_log_level_t level, const char *msg, const char *fmt, ...) {
  if (level < min_level)
    return;
  char line[2048];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s msg=\"%s\"",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   (int)(tv.tv_usec / 1000), level_names[level], msg);
  if (n < 0)
    return;
  if (fmt && (size_t)n < sizeof line - 1) {
    line[n++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m > 0)
      n += m;
  }
  if ((size_t)n > sizeof line - 2)
    n = sizeof line - 2; /* truncated, still one line */
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}

bool intake_log_allow(intake_log_limit_t *l, uint64_t *suppressed) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  if (l->last_ms && now - l->last_ms < l->interval_ms) {
    l->suppressed++;
    return false;
  }
  l->last_ms = now ? now : 1;
  *suppressed = l->suppressed;
  l->suppressed = 0;
  return true;
}
