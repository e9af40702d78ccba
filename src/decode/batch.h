/* Batch decoding: the BATCH frame payload (intake.v1.Batch), optionally zstd-compressed, walked
 * in place. One decoder per event loop: it owns the zstd context and the decompression buffer,
 * which are reused for every batch. */
#ifndef INTAKE_DECODE_BATCH_H
#define INTAKE_DECODE_BATCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct intake_decoder intake_decoder_t;

typedef struct {
  uint64_t seq;               /* Batch.seq */
  uint32_t n_events;          /* events in the batch */
  const uint8_t *_p, *_end;   /* cursor over the Batch message holding the events */
} intake_batch_t;

typedef enum {
  INTAKE_BATCH_OK = 0,
  INTAKE_BATCH_MALFORMED = -1, /* not a well-formed Batch message, or both events and events_zstd */
  INTAKE_BATCH_BAD_ZSTD = -2,  /* invalid frame, no content size, or content over the limit */
} intake_batch_status_t;

/* `max_decompressed_bytes` bounds events_zstd's content: a larger declared size is refused before
 * any decompression work, so a zstd bomb costs nothing. Returns NULL on out of memory. */
intake_decoder_t *intake_decoder_create(uint32_t max_decompressed_bytes);
void intake_decoder_destroy(intake_decoder_t *d);

/* Opens the Batch in payload[0..len). On INTAKE_BATCH_OK *b iterates over the events, which
 * point into `payload` or into the decoder's buffer; they stay valid until the next open.
 * On error, *detail names the problem (static string). */
intake_batch_status_t intake_batch_open(intake_decoder_t *d, const uint8_t *payload, size_t len,
                                        intake_batch_t *b, const char **detail);

/* Returns 1 and the next event's bytes, 0 at the end. (The batch was checked by open.) */
int intake_batch_next(intake_batch_t *b, const uint8_t **event, uint32_t *len);

#endif
