#include "ingest/frame.h"

int intake_frame_parse(const uint8_t *buf, size_t len, uint32_t max_frame_bytes, intake_frame_t *f) {
  if (len < 4)
    return INTAKE_FRAME_NEED_MORE;
  uint32_t n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
  if (n == 0)
    return INTAKE_FRAME_EMPTY;
  if (n > max_frame_bytes)
    return INTAKE_FRAME_TOO_LARGE;
  if (len - 4 < n)
    return INTAKE_FRAME_NEED_MORE;
  f->type = buf[4];
  f->payload = buf + INTAKE_FRAME_HEADER_BYTES;
  f->payload_len = n - 1;
  f->frame_len = (size_t)n + 4;
  return INTAKE_FRAME_OK;
}

void intake_frame_header(uint8_t out[INTAKE_FRAME_HEADER_BYTES], uint8_t type, uint32_t payload_len) {
  uint32_t n = payload_len + 1;
  out[0] = (uint8_t)(n >> 24);
  out[1] = (uint8_t)(n >> 16);
  out[2] = (uint8_t)(n >> 8);
  out[3] = (uint8_t)n;
  out[4] = type;
}
