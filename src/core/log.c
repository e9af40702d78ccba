#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/wbuf.h"

static intake_log_level_t min_level = INTAKE_LOG_INFO;
static intake_log_format_t line_format = INTAKE_LOG_FORMAT_LOGFMT;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void intake_log_set_level(intake_log_level_t level) { min_level = level; }
intake_log_level_t intake_log_get_level(void) { return min_level; }
void intake_log_set_format(intake_log_format_t format) { line_format = format; }
intake_log_format_t intake_log_get_format(void) { return line_format; }

enum {
  PAIRS_MAX = 2048,  /* the formatted pairs; longer ones are cut */
  LINE_MAX_ = 8192,  /* one output line: a field that does not fit is left out (truncated=true) */
  FIELDS_MAX = 64,
};

typedef struct {
  const char *key, *val;
  size_t key_len, val_len;
  bool quoted;
} field_t;

static bool key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

/* Length of `key` when s[i..n) starts with `key=`, else 0. */
static size_t key_at(const char *s, size_t i, size_t n) {
  size_t j = i;
  while (j < n && key_char(s[j]))
    j++;
  return j > i && j < n && s[j] == '=' ? j - i : 0;
}

/* A value ends at i: the end, or blanks followed by `key=`. */
static bool boundary(const char *s, size_t i, size_t n) {
  if (i == n)
    return true;
  if (s[i] != ' ')
    return false;
  while (i < n && s[i] == ' ')
    i++;
  return i == n || key_at(s, i, n) > 0;
}

static size_t parse_pairs(const char *s, size_t n, field_t *f, size_t max) {
  size_t nf = 0, i = 0;
  while (i < n && s[i] == ' ')
    i++;
  while (i < n && nf < max) {
    field_t *x = &f[nf++];
    size_t kl = key_at(s, i, n);
    if (kl == 0) { /* text without a key: kept under "_" */
      x->key = "_", x->key_len = 1;
    } else {
      x->key = s + i, x->key_len = kl;
      i += kl + 1;
    }
    x->quoted = false;
    size_t j = i;
    if (kl && i < n && s[i] == '"') {
      for (j = i + 1; j < n; j++)
        if (s[j] == '"' && boundary(s, j + 1, n))
          break;
      x->quoted = true;
      x->val = s + i + 1;
      x->val_len = j - i - 1; /* an unclosed quote runs to the end */
      i = j < n ? j + 1 : n;
    } else {
      while (!boundary(s, j, n))
        j++;
      x->val = s + i, x->val_len = j - i;
      i = j;
    }
    while (i < n && s[i] == ' ')
      i++;
  }
  return nf;
}

/* A JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)? */
static bool is_number(const char *s, size_t n) {
  size_t i = 0;
  if (i < n && s[i] == '-')
    i++;
  if (i == n)
    return false;
  if (s[i] == '0')
    i++;
  else if (s[i] >= '1' && s[i] <= '9')
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++;
  else
    return false;
  if (i < n && s[i] == '.') {
    size_t d = ++i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++;
    if (i == d)
      return false;
  }
  return i == n && n <= 32;
}

/* A bare logfmt value needs quotes when empty or holding a blank, `"`, `=`, `\` or a control. */
static bool needs_quotes(const char *s, size_t n) {
  if (n == 0)
    return true;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
      return true;
  }
  return false;
}

static void put_field(intake_wbuf_t *w, intake_log_format_t format, const field_t *f) {
  if (format == INTAKE_LOG_FORMAT_JSON) {
    intake_wbuf_putc(w, ',');
    intake_wbuf_json_str(w, f->key, f->key_len);
    intake_wbuf_putc(w, ':');
    if (!f->quoted && is_number(f->val, f->val_len))
      intake_wbuf_put(w, f->val, f->val_len);
    else
      intake_wbuf_json_str(w, f->val, f->val_len);
    return;
  }
  intake_wbuf_putc(w, ' ');
  intake_wbuf_put(w, f->key, f->key_len);
  intake_wbuf_putc(w, '=');
  if (f->quoted || needs_quotes(f->val, f->val_len))
    intake_wbuf_json_str(w, f->val, f->val_len);
  else
    intake_wbuf_put(w, f->val, f->val_len);
}

size_t intake_log_format_line(char *buf, size_t cap, intake_log_format_t format,
                              intake_log_level_t level, int64_t ts_ms, const char *msg,
                              const char *pairs) {
  enum { RESERVE = 24 }; /* room for the truncation mark, the closing brace and the newline */
  field_t fields[FIELDS_MAX];
  size_t nf = pairs ? parse_pairs(pairs, strlen(pairs), fields, FIELDS_MAX) : 0;
  char ts[64];
  time_t sec = (time_t)(ts_ms / 1000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts_ms % 1000));
  const char *lvl = level_names[(unsigned)level < 4 ? level : 3];
  intake_wbuf_t w;
  intake_wbuf_init(&w, buf, cap > RESERVE ? cap - RESERVE : 0);
  if (format == INTAKE_LOG_FORMAT_JSON) {
    intake_wbuf_printf(&w, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, lvl);
    intake_wbuf_json_str(&w, msg, strlen(msg));
  } else {
    intake_wbuf_printf(&w, "ts=%s level=%s msg=", ts, lvl);
    intake_wbuf_json_str(&w, msg, strlen(msg));
  }
  bool truncated = !intake_wbuf_fits(&w);
  for (size_t i = 0; i < nf && !truncated; i++) {
    size_t before = w.len;
    put_field(&w, format, &fields[i]);
    if (!intake_wbuf_fits(&w)) {
      w.len = before; /* leave the field out whole rather than cut it */
      truncated = true;
    }
  }
  if (w.len > w.cap)
    w.len = w.cap; /* the message alone overflowed: keep what fits */
  w.cap = cap;     /* now use the reserve */
  if (truncated)
    intake_wbuf_puts(&w, format == INTAKE_LOG_FORMAT_JSON ? ",\"truncated\":true" : " truncated=true");
  if (format == INTAKE_LOG_FORMAT_JSON)
    intake_wbuf_putc(&w, '}');
  intake_wbuf_putc(&w, '\n');
  return intake_wbuf_finish(&w);
}

void intake_log(intake_log_level_t level, const char *msg, const char *fmt, ...) {
  if (level < min_level)
    return;
  char pairs[PAIRS_MAX] = "";
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pairs, sizeof pairs, fmt, ap);
    va_end(ap);
  }
  struct timeval tv;
  gettimeofday(&tv, NULL);
  char line[LINE_MAX_];
  size_t n = intake_log_format_line(line, sizeof line, line_format, level,
                                    (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000, msg, pairs);
  if (n >= sizeof line)
    n = sizeof line - 1;
  ssize_t wr = write(STDERR_FILENO, line, n);
  (void)wr;
}

bool intake_log_allow(intake_log_limit_t *l, uint64_t *suppressed) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  if (l->last_ms && now - l->last_ms < l->interval_ms) {
    if (l->used >= (l->burst ? l->burst : 1)) {
      l->suppressed++;
      return false;
    }
    l->used++;
  } else {
    l->last_ms = now ? now : 1;
    l->used = 1;
  }
  *suppressed = l->suppressed;
  l->suppressed = 0;
  return true;
}
