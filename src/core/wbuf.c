#include "core/wbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void intake_wbuf_put(intake_wbuf_t *w, const void *s, size_t n) {
  if (w->len < w->cap) {
    size_t room = w->cap - w->len;
    memcpy(w->buf + w->len, s, n < room ? n : room);
  }
  w->len += n;
}

void intake_wbuf_puts(intake_wbuf_t *w, const char *s) { intake_wbuf_put(w, s, strlen(s)); }

void intake_wbuf_putc(intake_wbuf_t *w, char c) {
  if (w->len < w->cap)
    w->buf[w->len] = c;
  w->len++;
}

void intake_wbuf_printf(intake_wbuf_t *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = w->len < w->cap ? w->cap - w->len : 0;
  int n = vsnprintf(room ? w->buf + w->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0)
    w->len += (size_t)n;
}

void intake_wbuf_u64(intake_wbuf_t *w, uint64_t v) {
  char tmp[20];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  intake_wbuf_put(w, tmp + i, sizeof tmp - i);
}

void intake_wbuf_i64(intake_wbuf_t *w, int64_t v) {
  if (v < 0) {
    intake_wbuf_putc(w, '-');
    intake_wbuf_u64(w, (uint64_t)0 - (uint64_t)v);
  } else {
    intake_wbuf_u64(w, (uint64_t)v);
  }
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (Unicode Table 3-7), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0)
      lo = 0xa0; /* overlong */
    else if (c == 0xed)
      hi = 0x9f; /* surrogates */
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0)
      lo = 0x90; /* overlong */
    else if (c == 0xf4)
      hi = 0x8f; /* past U+10FFFF */
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xbf)
      return 0;
  return len;
}

void intake_wbuf_json_escape(intake_wbuf_t *w, const char *str, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  size_t run = 0; /* start of the bytes that need no escaping, copied in one put */
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      i++;
      continue;
    }
    if (c >= 0x80) {
      size_t l = utf8_seq(s + i, n - i);
      if (l) {
        i += l;
        continue;
      }
    }
    intake_wbuf_put(w, s + run, i - run);
    switch (c) {
    case '"': intake_wbuf_put(w, "\\\"", 2); break;
    case '\\': intake_wbuf_put(w, "\\\\", 2); break;
    case '\n': intake_wbuf_put(w, "\\n", 2); break;
    case '\r': intake_wbuf_put(w, "\\r", 2); break;
    case '\t': intake_wbuf_put(w, "\\t", 2); break;
    case '\b': intake_wbuf_put(w, "\\b", 2); break;
    case '\f': intake_wbuf_put(w, "\\f", 2); break;
    default:
      if (c >= 0x80) {
        intake_wbuf_put(w, "\\ufffd", 6);
      } else {
        char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        intake_wbuf_put(w, u, 6);
      }
    }
    run = ++i;
  }
  intake_wbuf_put(w, s + run, n - run);
}

void intake_wbuf_json_str(intake_wbuf_t *w, const char *s, size_t n) {
  intake_wbuf_putc(w, '"');
  intake_wbuf_json_escape(w, s, n);
  intake_wbuf_putc(w, '"');
}

void intake_wbuf_base64(intake_wbuf_t *w, const void *data, size_t n) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *p = data;
  char out[4];
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    out[0] = tab[v >> 18], out[1] = tab[(v >> 12) & 63], out[2] = tab[(v >> 6) & 63];
    out[3] = tab[v & 63];
    intake_wbuf_put(w, out, 4);
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)p[i] << 16;
    out[0] = tab[v >> 18], out[1] = tab[(v >> 12) & 63], out[2] = out[3] = '=';
    intake_wbuf_put(w, out, 4);
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    out[0] = tab[v >> 18], out[1] = tab[(v >> 12) & 63], out[2] = tab[(v >> 6) & 63];
    out[3] = '=';
    intake_wbuf_put(w, out, 4);
  }
}

size_t intake_wbuf_finish(intake_wbuf_t *w) {
  if (w->cap > 0)
    w->buf[w->len < w->cap ? w->len : w->cap - 1] = '\0';
  return w->len;
}
