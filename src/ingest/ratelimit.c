#include "ingest/ratelimit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct intake_bucket {
  char id[65];
  uint32_t next;           /* chain in the hash index, or in the free list; UINT32_MAX = end */
  uint64_t hash;
  double tokens;           /* may be negative: debt from the last admitted batch */
  uint64_t updated_ms;     /* loop time tokens were last refilled to */
};

#define NONE UINT32_MAX

struct intake_ratelimit {
  double rate, burst;      /* events per ms, events */
  intake_bucket_t *entries;
  uint32_t *heads;         /* hash index: n_heads chains */
  uint32_t n_entries, n_heads, used;
  uint32_t free_list;
  uint32_t evict_cursor;   /* where the next eviction scan starts, so it is fair */
};

static void refill(const intake_ratelimit_t *rl, intake_bucket_t *b, uint64_t now_ms) {
  if (now_ms > b->updated_ms) {
    b->tokens += (double)(now_ms - b->updated_ms) * rl->rate;
    if (b->tokens > rl->burst)
      b->tokens = rl->burst;
    b->updated_ms = now_ms;
  }
}

static uint32_t capacity_for(uint32_t max_connections) {
  return 2 * max_connections + 16;
}

/* Builds a table of `n` entries and moves the entries of `old` (if any) into it. */
static int build(intake_ratelimit_t *rl, uint32_t n) {
  uint32_t n_heads = 1;
  while (n_heads < n)
    n_heads <<= 1;
  intake_bucket_t *entries = calloc(n, sizeof *entries);
  uint32_t *heads = malloc(n_heads * sizeof *heads);
  if (!entries || !heads) {
    free(entries);
    free(heads);
    return -ENOMEM;
  }
  memset(heads, 0xff, n_heads * sizeof *heads);
  uint32_t used = 0;
  for (uint32_t i = 0; i < rl->n_entries; i++) {
    if (rl->entries[i].id[0] == '\0')
      continue;
    entries[used] = rl->entries[i];
    uint32_t h = (uint32_t)(entries[used].hash & (n_heads - 1));
    entries[used].next = heads[h];
    heads[h] = used++;
  }
  for (uint32_t i = used; i < n; i++)
    entries[i].next = i + 1 < n ? i + 1 : NONE;
  free(rl->entries);
  free(rl->heads);
  rl->entries = entries;
  rl->heads = heads;
  rl->n_entries = n;
  rl->n_heads = n_heads;
  rl->used = used;
  rl->free_list = used < n ? used : NONE;
  rl->evict_cursor = 0;
  return 0;
}

intake_ratelimit_t *intake_ratelimit_create(uint32_t rate, uint32_t burst, uint32_t max_connections) {
  intake_ratelimit_t *rl = calloc(1, sizeof *rl);
  if (!rl || intake_ratelimit_configure(rl, rate, burst, max_connections) < 0) {
    free(rl);
    return NULL;
  }
  return rl;
}

void intake_ratelimit_destroy(intake_ratelimit_t *rl) {
  if (!rl)
    return;
  free(rl->entries);
  free(rl->heads);
  free(rl);
}

int intake_ratelimit_configure(intake_ratelimit_t *rl, uint32_t rate, uint32_t burst,
                               uint32_t max_connections) {
  uint32_t want = capacity_for(max_connections);
  if (want > rl->n_entries && build(rl, want) < 0)
    return -ENOMEM;
  rl->rate = rate / 1000.0;
  rl->burst = burst ? burst : rate;
  for (uint32_t i = 0; i < rl->n_entries; i++)
    if (rl->entries[i].tokens > rl->burst)
      rl->entries[i].tokens = rl->burst;
  return 0;
}

static void unlink_entry(intake_ratelimit_t *rl, uint32_t idx) {
  uint32_t *pp = &rl->heads[rl->entries[idx].hash & (rl->n_heads - 1)];
  while (*pp != idx)
    pp = &rl->entries[*pp].next;
  *pp = rl->entries[idx].next;
  memset(&rl->entries[idx], 0, sizeof rl->entries[idx]);
  rl->entries[idx].next = rl->free_list;
  rl->free_list = idx;
  rl->used--;
}

/* Frees an entry of a full table: one whose bucket has refilled (forgetting it changes
 * nothing), else the one at the round-robin cursor. */
static void evict(intake_ratelimit_t *rl, uint64_t now_ms) {
  for (uint32_t k = 0; k < rl->n_entries; k++) {
    uint32_t i = (rl->evict_cursor + k) % rl->n_entries;
    intake_bucket_t *b = &rl->entries[i];
    refill(rl, b, now_ms);
    if (b->tokens >= rl->burst) {
      rl->evict_cursor = (i + 1) % rl->n_entries;
      unlink_entry(rl, i);
      return;
    }
  }
  uint32_t i = rl->evict_cursor;
  rl->evict_cursor = (i + 1) % rl->n_entries;
  unlink_entry(rl, i);
}

intake_bucket_t *intake_ratelimit_bucket(intake_ratelimit_t *rl, const char *gateway_id,
                                         uint64_t now_ms) {
  size_t len = strlen(gateway_id);
  if (len > 64)
    len = 64;
  uint64_t hash = XXH3_64bits(gateway_id, len);
  for (uint32_t i = rl->heads[hash & (rl->n_heads - 1)]; i != NONE; i = rl->entries[i].next) {
    intake_bucket_t *b = &rl->entries[i];
    if (b->hash == hash && strncmp(b->id, gateway_id, 64) == 0)
      return b;
  }
  if (rl->free_list == NONE)
    evict(rl, now_ms);
  uint32_t idx = rl->free_list;
  intake_bucket_t *b = &rl->entries[idx];
  rl->free_list = b->next;
  memcpy(b->id, gateway_id, len);
  b->id[len] = '\0';
  b->hash = hash;
  b->tokens = rl->burst;
  b->updated_ms = now_ms;
  uint32_t h = (uint32_t)(hash & (rl->n_heads - 1));
  b->next = rl->heads[h];
  rl->heads[h] = idx;
  rl->used++;
  return b;
}

uint64_t intake_ratelimit_wait_ms(const intake_ratelimit_t *rl, intake_bucket_t *b, uint64_t now_ms) {
  refill(rl, b, now_ms);
  if (b->tokens >= 0)
    return 0;
  /* Round up: a gateway that waits exactly this long is admitted. */
  uint64_t ms = (uint64_t)(-b->tokens / rl->rate) + 1;
  return ms;
}

void intake_ratelimit_charge(intake_bucket_t *b, uint32_t events) {
  b->tokens -= events;
}
