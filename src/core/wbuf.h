/* A bounded text writer with snprintf semantics, and the JSON string and base64 encodings the
 * logs, the JSON record encoder, the admin endpoints and intake-tail share.
 *
 * Writes never go past `cap`; `len` keeps counting what the whole text needs, so a caller that
 * finds len >= cap knows the exact size to retry with (the admin endpoint renders /metrics that
 * way: once into a guess, once into the exact size). The text is NUL-terminated within cap
 * (when cap > 0) by intake_wbuf_finish(). */
#ifndef INTAKE_CORE_WBUF_H
#define INTAKE_CORE_WBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  char *buf;                  /* caller's storage, may be NULL when cap is 0 */
  size_t cap;                 /* bytes of buf */
  size_t len;                 /* bytes the text needs so far (may exceed cap) */
} intake_wbuf_t;

static inline void intake_wbuf_init(intake_wbuf_t *w, char *buf, size_t cap) {
  w->buf = buf;
  w->cap = cap;
  w->len = 0;
}

/* True while everything written so far fits (with room for the NUL). */
static inline bool intake_wbuf_fits(const intake_wbuf_t *w) { return w->len < w->cap; }

void intake_wbuf_put(intake_wbuf_t *w, const void *s, size_t n);
void intake_wbuf_puts(intake_wbuf_t *w, const char *s);
void intake_wbuf_putc(intake_wbuf_t *w, char c);
void intake_wbuf_printf(intake_wbuf_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void intake_wbuf_u64(intake_wbuf_t *w, uint64_t v);
void intake_wbuf_i64(intake_wbuf_t *w, int64_t v);

/* s[0..n) escaped for the inside of a JSON string (RFC 8259): `"` `\` and control characters
 * escaped (\n \r \t \b \f, else \u00XX), DEL as \u007f, valid UTF-8 passed through, and each
 * byte of an invalid UTF-8 sequence (overlong, surrogate, past U+10FFFF, truncated) replaced by
 * U+FFFD, so the output is always valid JSON text. No surrounding quotes. */
void intake_wbuf_json_escape(intake_wbuf_t *w, const char *s, size_t n);

/* The same, with the surrounding quotes. */
void intake_wbuf_json_str(intake_wbuf_t *w, const char *s, size_t n);

/* Standard base64 (RFC 4648 §4, with padding) of data[0..n). */
void intake_wbuf_base64(intake_wbuf_t *w, const void *data, size_t n);

/* NUL-terminates the text (truncated to cap - 1 when it did not fit) and returns len. */
size_t intake_wbuf_finish(intake_wbuf_t *w);

#endif
