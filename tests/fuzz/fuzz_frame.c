/* libFuzzer target: a gateway's byte stream, split into frames by intake_frame_parse() and
 * handled as server.c's conn_process() does: the first frame must be a HELLO (unpacked with
 * protobuf-c, version and gateway_id checked), then BATCH payloads go down the batch path of
 * fuzz_common.h; anything else, like a protocol error, ends the connection. The stream ends
 * where the input does, as if the gateway closed the connection there. */
#include "fuzz_common.h"
#include "ingest/frame.h"

/* handle_hello()'s checks. Returns 0 when the daemon would answer WELCOME. */
static int hello(const intake_frame_t *f) {
  Intake__V1__Hello *h = intake__v1__hello__unpack(NULL, f->payload_len, f->payload);
  if (!h)
    return -1;
  int rc = -1;
  FUZZ_CHECK(h->gateway_id != NULL && h->token != NULL);
  size_t idlen = strlen(h->gateway_id);
  if (h->protocol_version == 1 && idlen >= 1 && idlen <= 64) {
    char id[65];
    for (size_t i = 0; i < idlen; i++)
      id[i] = (h->gateway_id[i] > 0x20 && h->gateway_id[i] < 0x7f) ? h->gateway_id[i] : '_';
    id[idlen] = '\0';
    FUZZ_CHECK(strlen(id) == idlen);
    rc = 0;
  }
  intake__v1__hello__free_unpacked(h, NULL);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_ctx_t *c = fuzz_ctx();
  const uint32_t max = c->cfg.max_frame_bytes;
  int ready = 0;
  size_t off = 0;
  for (;;) {
    const uint8_t *p = data + off;
    size_t left = size - off;
    intake_frame_t f;
    int rc = intake_frame_parse(p, left, max, &f);
    uint32_t n = left >= 4 ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                           : 0;
    if (rc == INTAKE_FRAME_NEED_MORE) {
      FUZZ_CHECK(left < 4 || (n >= 1 && n <= max && (size_t)n + 4 > left));
      break;
    }
    if (rc == INTAKE_FRAME_EMPTY) {
      FUZZ_CHECK(left >= 4 && n == 0);
      break;
    }
    if (rc == INTAKE_FRAME_TOO_LARGE) {
      FUZZ_CHECK(left >= 4 && n > max);
      break;
    }
    FUZZ_CHECK(rc == INTAKE_FRAME_OK);
    FUZZ_CHECK(f.frame_len == (size_t)n + 4 && f.frame_len <= left);
    FUZZ_CHECK(f.payload == p + INTAKE_FRAME_HEADER_BYTES && f.payload_len == n - 1);
    FUZZ_CHECK(f.type == p[4]);
    /* Any shorter read of the same frame is incomplete, whatever the split. */
    intake_frame_t g;
    FUZZ_CHECK(intake_frame_parse(p, f.frame_len - 1, max, &g) == INTAKE_FRAME_NEED_MORE);
    uint8_t hdr[INTAKE_FRAME_HEADER_BYTES];
    intake_frame_header(hdr, f.type, f.payload_len);
    FUZZ_CHECK(memcmp(hdr, p, INTAKE_FRAME_HEADER_BYTES) == 0);

    if (!ready) {
      if (f.type != INTAKE_FRAME_HELLO || hello(&f) < 0)
        break;
      ready = 1;
    } else if (f.type == INTAKE_FRAME_BATCH) {
      if (fuzz_batch_payload(c, f.payload, f.payload_len) < 0)
        break;
    } else {
      break;
    }
    off += f.frame_len;
  }
  return 0;
}
