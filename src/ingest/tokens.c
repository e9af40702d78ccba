#include "ingest/tokens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char *gateway_id;
  char *token;
} entry_t;

struct intake_tokens {
  entry_t *entries;
  size_t n;
};

void intake_tokens_destroy(intake_tokens_t *t) {
  if (!t)
    return;
  for (size_t i = 0; i < t->n; i++) {
    free(t->entries[i].gateway_id);
    free(t->entries[i].token);
  }
  free(t->entries);
  free(t);
}

intake_tokens_t *intake_tokens_load(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "gateway.tokens_file: cannot open %s", path);
    return NULL;
  }
  intake_tokens_t *t = calloc(1, sizeof *t);
  char line[1024];
  size_t lineno = 0, cap = 0;
  while (t && fgets(line, sizeof line, f)) {
    lineno++;
    char *hash = strchr(line, '#');
    if (hash)
      *hash = '\0';
    char *save, *id = strtok_r(line, " \t\r\n", &save), *tok = strtok_r(NULL, " \t\r\n", &save);
    if (!id)
      continue;
    if (!tok || strtok_r(NULL, " \t\r\n", &save)) {
      snprintf(err, errlen, "%s:%zu: expected \"gateway_id token\"", path, lineno);
      goto fail;
    }
    if (t->n == cap) {
      cap = cap ? cap * 2 : 16;
      entry_t *e = realloc(t->entries, cap * sizeof *e);
      if (!e)
        goto oom;
      t->entries = e;
    }
    t->entries[t->n].gateway_id = strdup(id);
    t->entries[t->n].token = strdup(tok);
    t->n++;
    if (!t->entries[t->n - 1].gateway_id || !t->entries[t->n - 1].token)
      goto oom;
  }
  if (!t)
    goto oom;
  fclose(f);
  return t;
oom:
  snprintf(err, errlen, "gateway.tokens_file: out of memory");
fail:
  fclose(f);
  intake_tokens_destroy(t);
  return NULL;
}

/* Compares all of both strings whatever their content, so the time taken tells nothing about
 * how much of a guessed token was right. */
static bool equal_ct(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  unsigned char diff = (unsigned char)(la != lb);
  for (size_t i = 0; i < lb; i++)
    diff |= (unsigned char)(a[i < la ? i : 0] ^ b[i]) & (unsigned char)(i < la ? 0xff : 0);
  return diff == 0 && la == lb;
}

bool intake_tokens_check(const intake_tokens_t *t, const char *gateway_id, const char *token) {
  bool ok = false;
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->entries[i].gateway_id, gateway_id) == 0)
      ok = equal_ct(token, t->entries[i].token);
  return ok;
}
