/* Gateway protocol framing (proto/intake.proto): u32 big-endian length, u8 type, payload.
 * The length counts the type byte and the payload. Parsing works in place on a read buffer. */
#ifndef INTAKE_INGEST_FRAME_H
#define INTAKE_INGEST_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define INTAKE_FRAME_HEADER_BYTES 5

typedef enum {
  INTAKE_FRAME_HELLO = 1,
  INTAKE_FRAME_WELCOME = 2,
  INTAKE_FRAME_BATCH = 3,
  INTAKE_FRAME_BATCH_ACK = 4,
  INTAKE_FRAME_ERROR = 5
} intake_frame_type_t;

typedef struct {
  uint8_t type;              /* INTAKE_FRAME_* (not checked here) */
  const uint8_t *payload;    /* points into the parsed buffer */
  uint32_t payload_len;
  size_t frame_len;          /* header + payload: bytes to consume */
} intake_frame_t;

enum {
  INTAKE_FRAME_NEED_MORE = 0,  /* buffer holds a partial frame */
  INTAKE_FRAME_OK = 1,         /* *f describes a whole frame at buf[0] */
  INTAKE_FRAME_EMPTY = -1,     /* length 0: no type byte */
  INTAKE_FRAME_TOO_LARGE = -2  /* length > max_frame_bytes */
};

/* Looks for a frame at buf[0..len). Returns one of the INTAKE_FRAME_* codes above. A length over
 * the limit is reported as soon as the 4 length bytes are in, before its payload arrives. */
int intake_frame_parse(const uint8_t *buf, size_t len, uint32_t max_frame_bytes, intake_frame_t *f);

/* Writes the 5-byte header of a frame of `type` carrying payload_len bytes. */
void intake_frame_header(uint8_t out[INTAKE_FRAME_HEADER_BYTES], uint8_t type, uint32_t payload_len);

#endif
