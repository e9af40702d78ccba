/* libFuzzer target: a BATCH frame payload (intake.v1.Batch, plain or zstd) through src/decode,
 * as intake_pipeline_submit() walks it: intake_batch_open() with a decoder bounded like the
 * daemon's, intake_batch_next(), and for each event intake_event_parse() (checked against
 * protobuf-c's unpack), intake_validate() and the shipped routing rules. See fuzz_common.h. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_batch_payload(fuzz_ctx(), data, size);
  /* The same bytes as text, and as one event: most mutations of a batch are not a batch. */
  fuzz_text((const char *)data, size);
  if (size <= UINT32_MAX)
    fuzz_event(fuzz_ctx(), data, (uint32_t)size);
  return 0;
}
