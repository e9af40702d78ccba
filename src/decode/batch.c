#include "decode/batch.h"

#include <stdlib.h>
#include <zstd.h>

#include "decode/wire.h"

struct intake_decoder {
  ZSTD_DCtx *zctx;
  uint8_t *buf;               /* decompressed events, reused per batch */
  size_t cap;                 /* grows on demand up to max */
  uint32_t max;
};

intake_decoder_t *intake_decoder_create(uint32_t max_decompressed_bytes) {
  intake_decoder_t *d = calloc(1, sizeof *d);
  if (!d)
    return NULL;
  d->zctx = ZSTD_createDCtx();
  if (!d->zctx) {
    free(d);
    return NULL;
  }
  d->max = max_decompressed_bytes;
  return d;
}

void intake_decoder_destroy(intake_decoder_t *d) {
  if (!d)
    return;
  ZSTD_freeDCtx(d->zctx);
  free(d->buf);
  free(d);
}

/* One pass over a Batch message: validates the framing of every top-level field, counts the
 * events (field 2), and finds seq (1) and events_zstd (3). */
static int scan(const uint8_t *p, size_t len, uint64_t *seq, uint32_t *n_events,
                const uint8_t **zstd, uint32_t *zstd_len) {
  wire_cursor_t c = {p, p + len};
  uint32_t field, type;
  while (c.p < c.end) {
    if (wire_tag(&c, &field, &type) < 0)
      return -1;
    if (field == 1) {
      if (type != WIRE_VARINT || wire_varint(&c, seq) < 0)
        return -1;
    } else if (field == 2 || field == 3) {
      const uint8_t *v;
      uint32_t n;
      if (type != WIRE_LEN || wire_bytes(&c, &v, &n) < 0)
        return -1;
      if (field == 2) {
        (*n_events)++;
      } else if (zstd) {
        *zstd = v;
        *zstd_len = n;
      } else {
        return -1; /* events_zstd inside the decompressed content */
      }
    } else if (wire_skip(&c, type) < 0) {
      return -1;
    }
  }
  return 0;
}

intake_batch_status_t intake_batch_open(intake_decoder_t *d, const uint8_t *payload, size_t len,
                                        intake_batch_t *b, const char **detail) {
  const uint8_t *z = NULL;
  uint32_t zlen = 0;
  b->seq = 0;
  b->n_events = 0;
  if (scan(payload, len, &b->seq, &b->n_events, &z, &zlen) < 0) {
    *detail = "batch is not a valid intake.v1.Batch message";
    return INTAKE_BATCH_MALFORMED;
  }
  if (!z) {
    b->_p = payload;
    b->_end = payload + len;
    return INTAKE_BATCH_OK;
  }
  if (b->n_events) {
    *detail = "batch sets both events and events_zstd";
    return INTAKE_BATCH_MALFORMED;
  }
  unsigned long long size = ZSTD_getFrameContentSize(z, zlen);
  if (size == ZSTD_CONTENTSIZE_ERROR) {
    *detail = "events_zstd is not a zstd frame";
    return INTAKE_BATCH_BAD_ZSTD;
  }
  if (size == ZSTD_CONTENTSIZE_UNKNOWN) {
    *detail = "events_zstd frame does not record its content size";
    return INTAKE_BATCH_BAD_ZSTD;
  }
  size_t frame_len = ZSTD_findFrameCompressedSize(z, zlen);
  if (ZSTD_isError(frame_len) || frame_len != zlen) {
    *detail = "events_zstd must be exactly one zstd frame";
    return INTAKE_BATCH_BAD_ZSTD;
  }
  if (size == 0) { /* an empty frame, or a skippable one: no events */
    static const uint8_t nothing[1];
    b->_p = b->_end = nothing;
    return INTAKE_BATCH_OK;
  }
  if (size > d->max) {
    *detail = "events_zstd content size is over validate.max_decompressed_bytes";
    return INTAKE_BATCH_BAD_ZSTD;
  }
  if (size > d->cap) {
    size_t cap = d->cap ? d->cap : 64 * 1024;
    while (cap < size)
      cap *= 2;
    if (cap > d->max)
      cap = d->max;
    uint8_t *nb = realloc(d->buf, cap ? cap : 1);
    if (!nb) {
      *detail = "out of memory for decompression";
      return INTAKE_BATCH_BAD_ZSTD;
    }
    d->buf = nb;
    d->cap = cap;
  }
  size_t got = ZSTD_decompressDCtx(d->zctx, d->buf, (size_t)size, z, zlen);
  if (ZSTD_isError(got) || got != size) {
    *detail = "events_zstd does not decompress";
    return INTAKE_BATCH_BAD_ZSTD;
  }
  uint64_t inner_seq = 0;
  if (scan(d->buf, got, &inner_seq, &b->n_events, NULL, NULL) < 0) {
    *detail = "events_zstd content is not a valid intake.v1.Batch message";
    return INTAKE_BATCH_MALFORMED;
  }
  b->_p = d->buf;
  b->_end = d->buf + got;
  return INTAKE_BATCH_OK;
}

int intake_batch_next(intake_batch_t *b, const uint8_t **event, uint32_t *len) {
  wire_cursor_t c = {b->_p, b->_end};
  uint32_t field, type;
  while (c.p < c.end) {
    if (wire_tag(&c, &field, &type) < 0)
      break;
    if (field == 2 && type == WIRE_LEN) {
      if (wire_bytes(&c, event, len) < 0)
        break;
      b->_p = c.p;
      return 1;
    }
    if (wire_skip(&c, type) < 0)
      break;
  }
  b->_p = b->_end;
  return 0;
}
