/* Gateway credentials (gateway.tokens_file): one "gateway_id token" pair per line, '#' starts a
 * comment. Tokens are compared in constant time. */
#ifndef INTAKE_INGEST_TOKENS_H
#define INTAKE_INGEST_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct intake_tokens intake_tokens_t;

/* Returns NULL with "file:line: message" in err on failure. */
intake_tokens_t *intake_tokens_load(const char *path, char *err, size_t errlen);
void intake_tokens_destroy(intake_tokens_t *t);
bool intake_tokens_check(const intake_tokens_t *t, const char *gateway_id, const char *token);

#endif
