#include "converge/converge.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define XXH_INLINE_ALL /* a few ns on short keys, as in dedup.c */
#include <xxhash.h>

enum { S_FREE = 0, S_ACTIVE, S_CLEARED, S_FLAPPING };
_Static_assert((int)S_ACTIVE == (int)INTAKE_CONVERGE_EP_ACTIVE &&
                   (int)S_CLEARED == (int)INTAKE_CONVERGE_EP_CLEARED &&
                   (int)S_FLAPPING == (int)INTAKE_CONVERGE_EP_FLAPPING,
               "exported states are the slot states");

/* One episode; followed in the pool by the bytes of its latest event. 80 bytes. */
typedef struct {
  uint64_t hash;              /* key hash; never read while S_FREE */
  uint64_t fp;                /* fingerprint of the event that opened the episode */
  int64_t first_ms, last_ms;  /* daemon clock */
  int64_t expires_ms;         /* closed (or forgotten, S_CLEARED) at this time */
  int64_t next_summary_ms;    /* next periodic summary (summary_every > 0) */
  int64_t flap_start_ms;      /* start of the current flap window */
  uint32_t repeats;           /* suppressed in this episode */
  uint32_t last_len;          /* bytes of the latest event after the slot header */
  uint32_t prev, next;        /* age list (oldest first) or free list; slot + 1, 0 = none */
  uint16_t flap_toggles;      /* toggles in the flap window (saturating) */
  uint8_t state;              /* S_* */
  uint8_t last_clear;         /* the latest event was a clear */
  uint32_t _pad;
} slot_t;

_Static_assert(sizeof(slot_t) == 80, "slot header is 80 bytes");

struct intake_converge {
  intake_converge_conf_t conf;  /* key_attrs points at _attrs */
  char *_attrs[INTAKE_CONVERGE_MAX_KEY_ATTRS];
  intake_converge_emit_cb emit;
  void *ctx;
  intake_converge_counters_t *n;
  uint8_t *pool;              /* n_slots * stride bytes */
  size_t stride;              /* sizeof(slot_t) + max_event_bytes, rounded up to 16 */
  uint32_t n_slots;
  uint32_t *index;            /* open addressing, linear probing: slot + 1, 0 = empty */
  uint32_t mask;              /* index entries - 1 */
  uint32_t free_head;         /* slot + 1 */
  uint32_t old_head, old_tail; /* age list */
  uint32_t cursor;            /* next slot tick() scans */
};

static slot_t *slot_at(const intake_converge_t *c, uint32_t i) {
  return (slot_t *)(c->pool + (size_t)i * c->stride);
}
static uint8_t *slot_bytes(slot_t *s) { return (uint8_t *)(s + 1); }

/* Zeroed memory on 2 MiB boundaries with transparent huge pages asked for (madvise): the table
 * is read at random, and with 4 KiB pages every check() also paid a TLB miss. Freed with free(). */
static void *huge_zalloc(size_t len) {
  const size_t huge = 2u << 20;
  void *m = NULL;
  if (len < huge)
    return calloc(1, len);
  if (posix_memalign(&m, huge, len) != 0)
    return NULL;
  madvise(m, len, MADV_HUGEPAGE); /* a hint: fine when THP is off */
  memset(m, 0, len);
  return m;
}

const char *intake_converge_conf_check(const intake_converge_conf_t *conf) {
  if (conf->window_ms == 0)
    return "window must be > 0";
  if (conf->n_key_attrs > INTAKE_CONVERGE_MAX_KEY_ATTRS)
    return "too many key attributes";
  if (conf->flap_count > 0 && conf->flap_window_ms == 0)
    return "flap.window must be > 0";
  if (conf->max_event_bytes == 0)
    return "max_event_bytes must be > 0";
  size_t stride = (sizeof(slot_t) + conf->max_event_bytes + 15) & ~(size_t)15;
  if (conf->memory_bytes < 2 * (stride + 8))
    return "memory must hold at least two episodes";
  return NULL;
}

static size_t stride_of(const intake_converge_conf_t *conf) {
  return (sizeof(slot_t) + conf->max_event_bytes + 15) & ~(size_t)15;
}

static void set_conf(intake_converge_t *c, const intake_converge_conf_t *conf) {
  for (size_t i = 0; i < INTAKE_CONVERGE_MAX_KEY_ATTRS; i++) {
    free(c->_attrs[i]);
    c->_attrs[i] = NULL;
  }
  c->conf = *conf;
  for (size_t i = 0; i < conf->n_key_attrs; i++)
    c->_attrs[i] = strdup(conf->key_attrs[i]);
  c->conf.key_attrs = (const char *const *)c->_attrs;
  for (size_t i = 0; i < conf->n_key_attrs; i++)
    if (!c->_attrs[i])
      c->conf.n_key_attrs = i; /* out of memory: fewer key attributes, never a crash */
}

intake_converge_t *intake_converge_create(const intake_converge_conf_t *conf,
                                          intake_converge_emit_cb emit, void *ctx,
                                          intake_converge_counters_t *counters) {
  if (intake_converge_conf_check(conf))
    return NULL;
  intake_converge_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  set_conf(c, conf);
  c->emit = emit;
  c->ctx = ctx;
  c->n = counters;
  c->stride = stride_of(conf);
  /* Per slot: the stride, plus two index entries (load <= 1/2). */
  uint64_t n = conf->memory_bytes / (c->stride + 2 * sizeof(uint32_t));
  if (n > UINT32_MAX / 4)
    n = UINT32_MAX / 4;
  c->n_slots = (uint32_t)n;
  uint32_t entries = 2;
  while (entries < 2 * c->n_slots)
    entries <<= 1;
  c->mask = entries - 1;
  c->pool = huge_zalloc((size_t)c->n_slots * c->stride);
  c->index = huge_zalloc((size_t)entries * sizeof *c->index);
  if (!c->pool || !c->index) {
    intake_converge_destroy(c);
    return NULL;
  }
  for (uint32_t i = 0; i < c->n_slots; i++)
    slot_at(c, i)->next = i + 2 <= c->n_slots ? i + 2 : 0;
  c->free_head = c->n_slots ? 1 : 0;
  c->n->capacity = c->n_slots;
  c->n->episodes = 0;
  return c;
}

void intake_converge_destroy(intake_converge_t *c) {
  if (!c)
    return;
  for (size_t i = 0; i < INTAKE_CONVERGE_MAX_KEY_ATTRS; i++)
    free(c->_attrs[i]);
  free(c->pool);
  free(c->index);
  free(c);
}

bool intake_converge_compatible(const intake_converge_t *c, const intake_converge_conf_t *conf) {
  return c->conf.memory_bytes == conf->memory_bytes && stride_of(conf) == c->stride &&
         c->conf.max_event_bytes == conf->max_event_bytes;
}

int intake_converge_update(intake_converge_t *c, const intake_converge_conf_t *conf, void *ctx,
                           intake_converge_counters_t *counters) {
  if (!intake_converge_compatible(c, conf) || intake_converge_conf_check(conf))
    return -1;
  set_conf(c, conf);
  c->ctx = ctx;
  if (counters != c->n) {
    counters->episodes = c->n->episodes;
    counters->capacity = c->n->capacity;
    c->n = counters;
  }
  return 0;
}

static uint64_t key_hash(const intake_converge_t *c, const intake_event_t *ev) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  if (c->conf.key_source)
    h = XXH3_64bits_withSeed(ev->source_id.ptr, ev->source_id.len, h);
  h = XXH3_64bits_withSeed("\x01", 1, h); /* separators: ("ab","c") differs from ("a","bc") */
  if (c->conf.key_type)
    h = XXH3_64bits_withSeed(ev->type.ptr, ev->type.len, h);
  for (size_t i = 0; i < c->conf.n_key_attrs; i++) {
    intake_str_t v = {"", 0};
    const char *name = c->conf.key_attrs[i];
    bool present = intake_event_attribute(ev, name, strlen(name), &v);
    h = XXH3_64bits_withSeed(present ? "\x02" : "\x03", 1, h);
    h = XXH3_64bits_withSeed(v.ptr, v.len, h);
  }
  return h | 1ull << 63; /* never 0; the index uses the low bits (home()) */
}

static uint32_t home(const intake_converge_t *c, uint64_t hash) { return (uint32_t)hash & c->mask; }

/* Index position of `hash`, or of the empty entry where it would go. */
static uint32_t find_pos(const intake_converge_t *c, uint64_t hash) {
  uint32_t i = home(c, hash);
  while (c->index[i] && slot_at(c, c->index[i] - 1)->hash != hash)
    i = (i + 1) & c->mask;
  return i;
}

static void age_unlink(intake_converge_t *c, uint32_t id, slot_t *s) {
  if (s->prev)
    slot_at(c, s->prev - 1)->next = s->next;
  else
    c->old_head = s->next;
  if (s->next)
    slot_at(c, s->next - 1)->prev = s->prev;
  else
    c->old_tail = s->prev;
  s->prev = s->next = 0;
  (void)id;
}

/* Removes slot `s` from the index (backward-shift deletion) and the age list; frees it. */
static void slot_free(intake_converge_t *c, slot_t *s) {
  uint32_t id = (uint32_t)(((uint8_t *)s - c->pool) / c->stride) + 1;
  uint32_t i = find_pos(c, s->hash);
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & c->mask;
    if (!c->index[j])
      break;
    uint32_t k = home(c, slot_at(c, c->index[j] - 1)->hash);
    /* Move j back to i unless its home k lies cyclically in (i, j]. */
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      c->index[i] = c->index[j];
      i = j;
    }
  }
  c->index[i] = 0;
  age_unlink(c, id, s);
  s->state = S_FREE;
  s->next = c->free_head;
  c->free_head = id;
  c->n->episodes--;
}

static void emit(intake_converge_t *c, slot_t *s, intake_summary_reason_t reason) {
  intake_event_t ev;
  memset(&ev, 0, sizeof ev);
  if (intake_event_parse(slot_bytes(s), s->last_len, &ev) < 0)
    memset(&ev, 0, sizeof ev); /* never: the bytes were parsed when stored */
  intake_converge_summary_t sum = {
      .reason = reason,
      .source_id = ev.source_id,
      .type = ev.type,
      .first_seen_ms = s->first_ms,
      .last_seen_ms = s->last_ms,
      .repeat_count = s->repeats,
      .flapping = s->state == S_FLAPPING,
      .flap_count = s->flap_toggles,
      .last = slot_bytes(s),
      .last_len = s->last_len,
  };
  c->n->summaries++;
  c->emit(c->ctx, &sum);
}

/* Ends an episode that is over: a summary for an open one, then the slot is freed. */
static void close_slot(intake_converge_t *c, slot_t *s, intake_summary_reason_t reason) {
  if (s->state == S_ACTIVE || s->state == S_FLAPPING)
    emit(c, s, reason);
  slot_free(c, s);
}

static void keep_last(slot_t *s, const intake_event_t *ev, int64_t now) {
  memcpy(slot_bytes(s), ev->raw, ev->raw_len);
  s->last_len = ev->raw_len;
  s->last_ms = now;
  s->last_clear = ev->clear;
}

/* Counts a toggle; true when it makes the source flap. */
static bool toggle(intake_converge_t *c, slot_t *s, int64_t now) {
  if (c->conf.flap_count == 0)
    return false;
  if (s->flap_toggles == 0 || now - s->flap_start_ms > (int64_t)c->conf.flap_window_ms) {
    s->flap_start_ms = now;
    s->flap_toggles = 0;
  }
  if (s->flap_toggles < UINT16_MAX)
    s->flap_toggles++;
  return s->flap_toggles > c->conf.flap_count;
}

static intake_converge_verdict_t start_flapping(intake_converge_t *c, slot_t *s, int64_t now) {
  s->state = S_FLAPPING;
  s->first_ms = s->flap_start_ms;
  s->expires_ms = now + (int64_t)c->conf.flap_window_ms;
  c->n->flapping++;
  c->n->repeats_suppressed++;
  emit(c, s, INTAKE_SUMMARY_FLAPPING);
  return INTAKE_CONVERGE_SUPPRESS;
}

static void open_episode(intake_converge_t *c, slot_t *s, uint64_t fp, int64_t now) {
  s->fp = fp;
  s->first_ms = now;
  s->repeats = 0;
  s->state = S_ACTIVE;
  s->expires_ms = now + (int64_t)c->conf.window_ms;
  s->next_summary_ms = now + (int64_t)c->conf.summary_every_ms;
  c->n->episodes_opened++;
}

intake_converge_verdict_t intake_converge_check(intake_converge_t *c, const intake_event_t *ev,
                                                uint64_t fp, int64_t now) {
  if (ev->raw_len > c->conf.max_event_bytes) {
    c->n->oversize++;
    return INTAKE_CONVERGE_PASS;
  }
  uint64_t h = key_hash(c, ev);
  uint32_t pos = find_pos(c, h);
  slot_t *s = c->index[pos] ? slot_at(c, c->index[pos] - 1) : NULL;
  if (s && now >= s->expires_ms) {
    close_slot(c, s, INTAKE_SUMMARY_EXPIRED);
    s = NULL;
  }
  if (!s) {
    if (ev->clear)
      return INTAKE_CONVERGE_PASS; /* nothing to close */
    if (!c->free_head) {           /* full: close the oldest episode early */
      slot_t *old = slot_at(c, c->old_head - 1);
      c->n->evicted++;
      close_slot(c, old, INTAKE_SUMMARY_EVICTED);
    }
    uint32_t id = c->free_head;
    s = slot_at(c, id - 1);
    c->free_head = s->next;
    memset(s, 0, sizeof *s);
    s->hash = h;
    s->prev = c->old_tail;
    if (c->old_tail)
      slot_at(c, c->old_tail - 1)->next = id;
    else
      c->old_head = id;
    c->old_tail = id;
    c->index[find_pos(c, h)] = id; /* recomputed: an eviction may have shifted entries */
    c->n->episodes++;
    open_episode(c, s, fp, now);
    keep_last(s, ev, now);
    return INTAKE_CONVERGE_PASS;
  }
  switch (s->state) {
  case S_ACTIVE:
    if (!ev->clear) {
      keep_last(s, ev, now);
      if (fp == s->fp) /* a retransmit of the first event: dedup says it was not delivered */
        return INTAKE_CONVERGE_PASS;
      if (s->repeats < UINT32_MAX)
        s->repeats++;
      c->n->repeats_suppressed++;
      if (c->conf.refresh)
        s->expires_ms = now + (int64_t)c->conf.window_ms;
      return INTAKE_CONVERGE_SUPPRESS;
    }
    keep_last(s, ev, now);
    if (toggle(c, s, now))
      return start_flapping(c, s, now);
    emit(c, s, INTAKE_SUMMARY_CLEARED);
    if (c->conf.flap_count == 0) {
      slot_free(c, s);
    } else { /* remembered for flap counting */
      s->state = S_CLEARED;
      s->expires_ms = now + (int64_t)c->conf.flap_window_ms;
    }
    return INTAKE_CONVERGE_PASS;
  case S_CLEARED:
    if (ev->clear)
      return INTAKE_CONVERGE_PASS;
    keep_last(s, ev, now);
    if (toggle(c, s, now)) {
      s->repeats = 0;
      return start_flapping(c, s, now);
    }
    open_episode(c, s, fp, now);
    return INTAKE_CONVERGE_PASS;
  default: /* S_FLAPPING: everything is suppressed until no toggle for flap.window */
    if (ev->clear != s->last_clear) {
      if (s->flap_toggles < UINT16_MAX)
        s->flap_toggles++;
      s->expires_ms = now + (int64_t)c->conf.flap_window_ms;
    }
    keep_last(s, ev, now);
    if (s->repeats < UINT32_MAX)
      s->repeats++;
    c->n->repeats_suppressed++;
    return INTAKE_CONVERGE_SUPPRESS;
  }
}

void intake_converge_prefetch(const intake_converge_t *c, const intake_event_t *ev, int stage) {
  if (ev->raw_len > c->conf.max_event_bytes)
    return;
  uint32_t i = home(c, key_hash(c, ev));
  if (stage == 0) {
    __builtin_prefetch(&c->index[i]);
  } else if (c->index[i]) {
    slot_t *s = slot_at(c, c->index[i] - 1);
    __builtin_prefetch(s, 1);
    __builtin_prefetch((const char *)s + 64, 1);
  }
}

size_t intake_converge_tick(intake_converge_t *c, int64_t now, size_t max_slots) {
  size_t n = max_slots < c->n_slots ? max_slots : c->n_slots;
  for (size_t k = 0; k < n; k++) {
    slot_t *s = slot_at(c, c->cursor);
    c->cursor = c->cursor + 1 < c->n_slots ? c->cursor + 1 : 0;
    if (s->state == S_FREE)
      continue;
    if (now >= s->expires_ms) {
      close_slot(c, s, INTAKE_SUMMARY_EXPIRED);
    } else if (s->state == S_ACTIVE && c->conf.summary_every_ms &&
               now >= s->next_summary_ms) {
      emit(c, s, INTAKE_SUMMARY_PERIODIC);
      s->next_summary_ms = now + (int64_t)c->conf.summary_every_ms;
    }
  }
  return n;
}

void intake_converge_flush(intake_converge_t *c, intake_summary_reason_t reason) {
  for (uint32_t i = 0; i < c->n_slots; i++) {
    slot_t *s = slot_at(c, i);
    if (s->state != S_FREE)
      close_slot(c, s, reason);
  }
}

/* ---- snapshots ------------------------------------------------------------------------------ */

/* Bumped whenever key_hash() changes how it hashes, so that saved hashes are not matched. */
#define KEY_SCHEME 1u

uint64_t intake_converge_key_id(const intake_converge_t *c) {
  XXH64_state_t st;
  XXH64_reset(&st, 0);
  uint8_t head[4] = {KEY_SCHEME, c->conf.key_source, c->conf.key_type,
                     (uint8_t)c->conf.n_key_attrs};
  XXH64_update(&st, head, sizeof head);
  for (size_t i = 0; i < c->conf.n_key_attrs; i++) /* name and its NUL: ("ab","c") != ("a","bc") */
    XXH64_update(&st, c->conf.key_attrs[i], strlen(c->conf.key_attrs[i]) + 1);
  return XXH64_digest(&st);
}

int intake_converge_foreach(const intake_converge_t *c,
                            int (*fn)(void *ctx, const intake_converge_episode_t *e), void *ctx) {
  for (uint32_t id = c->old_head; id;) {
    slot_t *s = slot_at(c, id - 1);
    intake_converge_episode_t e = {
        .hash = s->hash,
        .fp = s->fp,
        .first_ms = s->first_ms,
        .last_ms = s->last_ms,
        .expires_ms = s->expires_ms,
        .next_summary_ms = s->next_summary_ms,
        .flap_start_ms = s->flap_start_ms,
        .repeats = s->repeats,
        .flap_toggles = s->flap_toggles,
        .state = s->state,
        .last_clear = s->last_clear,
        .last_len = s->last_len,
        .last = slot_bytes(s),
    };
    int rc = fn(ctx, &e);
    if (rc)
      return rc;
    id = s->next;
  }
  return 0;
}

int intake_converge_import(intake_converge_t *c, const intake_converge_episode_t *e) {
  if (e->state < S_ACTIVE || e->state > S_FLAPPING || !(e->hash >> 63) ||
      e->last_len > c->conf.max_event_bytes || (e->last_len && !e->last))
    return 0;
  if (c->index[find_pos(c, e->hash)])
    return 0;
  if (!c->free_head) { /* full: the oldest goes, as for a new episode */
    c->n->evicted++;
    close_slot(c, slot_at(c, c->old_head - 1), INTAKE_SUMMARY_EVICTED);
  }
  uint32_t id = c->free_head;
  slot_t *s = slot_at(c, id - 1);
  c->free_head = s->next;
  memset(s, 0, sizeof *s);
  s->hash = e->hash;
  s->fp = e->fp;
  s->first_ms = e->first_ms;
  s->last_ms = e->last_ms;
  s->expires_ms = e->expires_ms;
  s->next_summary_ms = e->next_summary_ms;
  s->flap_start_ms = e->flap_start_ms;
  s->repeats = e->repeats;
  s->flap_toggles = e->flap_toggles;
  s->state = e->state;
  s->last_clear = e->last_clear ? 1 : 0;
  s->last_len = e->last_len;
  if (e->last_len)
    memcpy(slot_bytes(s), e->last, e->last_len);
  s->prev = c->old_tail;
  if (c->old_tail)
    slot_at(c, c->old_tail - 1)->next = id;
  else
    c->old_head = id;
  c->old_tail = id;
  c->index[find_pos(c, e->hash)] = id; /* recomputed: an eviction may have shifted entries */
  c->n->episodes++;
  return 1;
}
