/* Exact de-duplication: three tables, open addressing, each sized to its byte budget exactly.
 *
 * Event-id table ("ev"): buckets of one 64-byte cache line holding 5 slots: five 64-bit
 * fingerprints (key bits 64..127), five 32-bit commit ticks, and 6 more fingerprint bits per
 * slot (key bits 0..5) packed in the last word: 12.8 bytes a slot. (It was 4 slots of 16 bytes,
 * 96 fingerprint bits each; the city workload needs ~18.5 bytes a key at most for the 64-byte
 * per-source target, which 16-byte slots reach only above 0.85 load. bench/ANALYSIS.md.)
 * The home bucket is ((fp * buckets) >> 64), a multiply instead of a power-of-two mask, so
 * any budget is used whole: a 48 MiB table is 786,432 buckets, not 524,288.
 * Probing is linear over buckets (wrapping at the end): a key lives in the first bucket from
 * its home that had room when it was inserted, so a lookup reads buckets until it finds the
 * key or reads a bucket with an empty slot. Deletion (sweep only) is backward-shift: later keys
 * of the run move up into the hole, so there are no tombstones and runs never grow from
 * deletions. A miss and an insert read the same buckets (the insert goes where the miss
 * stopped), so check()+commit() of a new key pay for one run, not two. An insert reuses a
 * forgotten slot of its run first (past the window, or past the effective window when memory
 * cannot hold the whole window: table.h). It replaced the oldest key *of its run* above 85%
 * load until 2026-12: runs are short, so a key committed seconds ago could go while keys
 * minutes old stayed elsewhere, and retransmits reached Kafka twice in a 10-minute soak
 * (bench/soak.sh). Mean buckets (= cache lines) read by a miss, from
 * a simulation of this scheme with 5 slots a bucket (4 slots of 16 bytes in brackets): load 0.5:
 * 1.16 (1.23), 0.6: 1.36 (1.49), 0.65: 1.53 (1.71), 0.69: 1.75 (1.99), 0.75: 2.29 (2.68),
 * 0.8: 3.2 (3.8), 0.85: 5.1 (6.25). So the city's keys in 48 MiB (load 0.69, 5 slots) cost a
 * miss about what they cost in 64 MiB of 16-byte slots (load 0.65, 4 slots): 1.75 vs 1.71.
 *
 * False duplicates. A key's home is a function of its 64-bit fingerprint, so only keys with the
 * same home can share those bits: a new key is wrongly found when one of the ~5 x load keys of
 * its home bucket has the same 70 stored bits, probability ~ 5 x load x buckets / 2^70 a
 * check: 2.3e-15 for the city table (786,432 buckets, load 0.69), i.e. one event in ~900 years
 * at the city's 15,000 events/s. (The 16-byte slots' 96 bits gave ~3e-23; 64 bits without the
 * tag would be ~1.5e-13: one in ~14 years.)
 *
 * Source table ("src"): 32-byte slots {hi, lo, tick, top, bitmap} (96 fingerprint bits), 4 to a
 * bucket of two cache lines (128 bytes, prefetched together), same scheme. A sequenced event is
 * a duplicate if its source's window has its bit, else if the event-id table has its key:
 * every commit stores the key, so the window adds the (source, seq) identity (a copy under a
 * new event id) without being the only memory of an event.
 *
 * In-flight map ("fl"): {key hi, key lo, owner}, slot-level linear probing at load <= 1/2,
 * backward-shift deletion, doubled when needed (the only allocation after create).
 *
 * Tables of 2 MiB and more are mmap'ed, advised onto huge pages and populated at create, so the
 * loop thread does not take a page fault (and a 2 MiB page clear) on its first writes into
 * each page during the first minute of traffic.
 *
 * Empty slots: hi == 0. A fingerprint whose hi is 0 is stored as 1 (fp_hi()), merging two of
 * 2^64 values; owners are never NULL, so the in-flight map uses owner == NULL instead.
 *
 * Time: 32-bit ticks of 10 ms (Unix ms / 10, modulo 2^32); ages are the signed 32-bit
 * difference, so the clock may run backwards (a key from the "future" is simply live) and ticks
 * wrap harmlessly — as long as the sweep visits every slot at least once per 2^31 ticks
 * (248 days); the pipeline's timer does it every ~30 s. A key is live while its age in ticks is
 * <= the effective window, ceil(window / 10 ms) while memory holds the window: it stays a
 * duplicate for at least window_ms after commit and at most window_ms + 20 ms: exact to 10 ms
 * (100 ms was required), with no base epoch to rebase. */
#define XXH_INLINE_ALL /* XXH3 on short ids is a few ns: inlined, no calls, no ABI concerns */
#include <xxhash.h>

#include "dedup/dedup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dedup/table.h"

#define MAX_WINDOW_MS (30ull * 24 * 3600 * 1000) /* ticks stay far below 2^31 */
#define FL_MIN_SLOTS 256u

typedef struct {
  uint64_t hi, lo; /* full key fingerprint */
  void *owner;     /* NULL = empty slot */
} fl_slot_t;


struct intake_dedup {
  tab_t ev;                /* (source, event id) keys, 12.8 bytes a slot */
  tab_t src;               /* per-source sequence windows, 32-byte slots */
  fl_slot_t *fl;           /* in-flight map */
  uint64_t fl_mask;        /* its slots - 1 */
  uint64_t fl_count;       /* its entries */
  uint64_t window_ms;      /* as set */
  uint64_t cursor;         /* sweep position in [0, ev slots + src slots) */
};

static int32_t window_ticks(uint64_t window_ms) {
  if (window_ms < 1)
    window_ms = 1;
  if (window_ms > MAX_WINDOW_MS)
    window_ms = MAX_WINDOW_MS;
  return (int32_t)((window_ms + TICK_MS - 1) / TICK_MS);
}

/* ---- in-flight map ------------------------------------------------------------------------- */

static inline fl_slot_t *fl_find(const intake_dedup_t *d, uint64_t hi, uint64_t lo) {
  for (uint64_t i = lo & d->fl_mask;; i = (i + 1) & d->fl_mask) {
    fl_slot_t *s = &d->fl[i];
    if (!s->owner)
      return NULL;
    if (s->hi == hi && s->lo == lo)
      return s;
  }
}

static inline fl_slot_t *fl_insert_slot(fl_slot_t *slots, uint64_t mask, uint64_t lo) {
  uint64_t i = lo & mask;
  while (slots[i].owner)
    i = (i + 1) & mask;
  return &slots[i];
}

static int fl_grow(intake_dedup_t *d) {
  uint64_t cap = (d->fl_mask + 1) * 2;
  fl_slot_t *slots = calloc(cap, sizeof *slots);
  if (!slots)
    return -ENOMEM;
  for (uint64_t i = 0; i <= d->fl_mask; i++)
    if (d->fl[i].owner)
      *fl_insert_slot(slots, cap - 1, d->fl[i].lo) = d->fl[i];
  free(d->fl);
  d->fl = slots;
  d->fl_mask = cap - 1;
  return 0;
}

static void fl_remove(intake_dedup_t *d, uint64_t hi, uint64_t lo) {
  fl_slot_t *s = d->fl_count ? fl_find(d, hi, lo) : NULL;
  if (!s)
    return;
  uint64_t mask = d->fl_mask, i = (uint64_t)(s - d->fl);
  for (uint64_t j = (i + 1) & mask; d->fl[j].owner; j = (j + 1) & mask) {
    uint64_t home = d->fl[j].lo & mask;
    if (((j - home) & mask) >= ((j - i) & mask)) {
      d->fl[i] = d->fl[j];
      i = j;
    }
  }
  d->fl[i].owner = NULL;
  d->fl_count--;
}

/* ---- public ------------------------------------------------------------------------------- */

intake_dedup_t *intake_dedup_create(uint64_t window_ms, uint64_t event_bytes,
                                    uint64_t source_bytes) {
  if (window_ms < 1 || window_ms > MAX_WINDOW_MS)
    return NULL;
  intake_dedup_t *d = calloc(1, sizeof *d);
  if (!d)
    return NULL;
  d->window_ms = window_ms;
  int32_t w = window_ticks(window_ms);
  if (tab_init(&d->ev, EV, event_bytes, w) < 0 || tab_init(&d->src, SRC, source_bytes, w) < 0)
    goto fail;
  d->fl = calloc(FL_MIN_SLOTS, sizeof *d->fl);
  if (!d->fl)
    goto fail;
  d->fl_mask = FL_MIN_SLOTS - 1;
  return d;
fail:
  intake_dedup_destroy(d);
  return NULL;
}

void intake_dedup_destroy(intake_dedup_t *d) {
  if (!d)
    return;
  tab_dispose(&d->ev);
  tab_dispose(&d->src);
  free(d->fl);
  free(d);
}

void intake_dedup_set_window(intake_dedup_t *d, uint64_t window_ms, uint64_t now_ms) {
  d->window_ms = window_ms < 1 ? 1 : window_ms > MAX_WINDOW_MS ? MAX_WINDOW_MS : window_ms;
  int32_t w = window_ticks(d->window_ms);
  tab_set_window(&d->ev, EV, w, tick_of(now_ms));
  tab_set_window(&d->src, SRC, w, tick_of(now_ms));
}

uint64_t intake_dedup_window_ms(const intake_dedup_t *d) { return d->window_ms; }

uint64_t intake_dedup_event_bytes_for(uint64_t keys) {
  /* slots = keys / target load, 64 bytes per EV_SLOTS slots */
  return (keys * 100 + TARGET_LOAD_PCT - 1) / TARGET_LOAD_PCT * sizeof(ev_bucket_t) / EV_SLOTS;
}

uint64_t intake_dedup_keys_for(uint64_t event_bytes) {
  return event_bytes / sizeof(ev_bucket_t) * EV_SLOTS * TARGET_LOAD_PCT / 100;
}

void intake_dedup_probe_init(intake_dedup_probe_t *p, const char *source_id, size_t source_len,
                             const char *event_id, size_t event_len, uint64_t seq) {
  /* src = XXH3-128(source_id); key = XXH3-128(event_id, seed = src.lo) XOR src. Distinct sources
   * hash their event ids with different seeds; two sources whose src.lo happen to be equal still
   * differ in src.hi, which the XOR carries into the key, so no pair of sources shares keys
   * systematically. This is ~17 ns for a 20-byte source and a 32-byte id; hashing one
   * length-prefixed copy of both was ~21 ns without the source hash (the copy's stores stall
   * the hash's wider loads) and needed a streaming path for long ids. */
  XXH128_hash_t s = XXH3_128bits(source_len ? source_id : "", source_len);
  XXH128_hash_t k = XXH3_128bits_withSeed(event_len ? event_id : "", event_len, s.low64);
  p->key_hi = k.high64 ^ s.high64;
  p->key_lo = k.low64 ^ s.low64;
  p->src_hi = s.high64;
  p->src_lo = s.low64;
  p->seq = seq;
}

void intake_dedup_prefetch(const intake_dedup_t *d, const intake_dedup_probe_t *p) {
  if (p->seq) {
    const src_bucket_t *b = (const src_bucket_t *)d->src.mem + tab_home(&d->src, fp_hi(p->src_hi));
    __builtin_prefetch(b);
    __builtin_prefetch((const unsigned char *)b + 64);
  }
  {
    /* A miss (and the insert after it) reads the run up to a bucket with room: 1.16 buckets
     * on average at load 0.5, 1.82 at 0.7, 3.2 at 0.8 (see the top of this file). With 4-slot
     * buckets, bench/dedup_bench.c measured the extra lines taking ~105 -> ~70 ns at load 0.66
     * and ~225 -> ~90 ns at 0.77 when prefetches were interleaved with hashing; prefetched in a
     * loop of their own they gained 3-7% at 0.67-0.78 load and cost nothing measurable below.
     * They cannot hide the long tail of runs at 0.8+: there a check costs ~2x. */
    const tab_t *t = &d->ev;
    uint64_t b = tab_home(t, fp_hi(p->key_hi));
    unsigned n = 1u + (t->count >= t->deep[0]) + (t->count >= t->deep[1]) + (t->count >= t->deep[2]);
    for (unsigned k = 0; k < n; k++, b = tab_next(t, b))
      __builtin_prefetch(evb(t, b));
  }
  if (d->fl_count)
    __builtin_prefetch(&d->fl[p->key_lo & d->fl_mask]);
}

static inline int ev_seen(const intake_dedup_t *d, const intake_dedup_probe_t *p, uint32_t tick) {
  uint64_t b;
  unsigned i;
  return tab_find(&d->ev, EV, fp_hi(p->key_hi), (uint32_t)p->key_lo, &b, &i) &&
         age_of(tick, evb(&d->ev, b)->ts[i]) <= tab_horizon(&d->ev, tick);
}

intake_dedup_result_t intake_dedup_check(intake_dedup_t *d, const intake_dedup_probe_t *p,
                                         uint64_t now_ms, void **owner) {
  if (d->fl_count) {
    const fl_slot_t *f = fl_find(d, p->key_hi, p->key_lo);
    if (f) {
      if (owner)
        *owner = f->owner;
      return INTAKE_DEDUP_IN_FLIGHT;
    }
  }
  uint32_t tick = tick_of(now_ms);
  if (p->seq) {
    /* The window knows the seq whatever its event id; anything it cannot confirm goes on to
     * the key, which every commit also stored: a seq below the window, a window that expired,
     * was evicted or restarted. */
    uint64_t b;
    unsigned i;
    const src_slot_t *s = tab_find(&d->src, SRC, fp_hi(p->src_hi), (uint32_t)p->src_lo, &b, &i)
                              ? srcs(&d->src, b, i)
                              : NULL;
    if (s && age_of(tick, s->ts) <= tab_horizon(&d->src, tick) && p->seq <= s->top &&
        s->top - p->seq < 64 && ((s->bits >> (s->top - p->seq)) & 1))
      return INTAKE_DEDUP_DUPLICATE;
  }
  return ev_seen(d, p, tick) ? INTAKE_DEDUP_DUPLICATE : INTAKE_DEDUP_NEW;
}

int intake_dedup_begin(intake_dedup_t *d, const intake_dedup_probe_t *p, void *owner) {
  if (!owner)
    return -EINVAL; /* NULL marks an empty slot */
  fl_slot_t *s = d->fl_count ? fl_find(d, p->key_hi, p->key_lo) : NULL;
  if (s) { /* NEVER by contract (begin after NEW); keep one entry, the latest owner */
    s->owner = owner;
    return 0;
  }
  if ((d->fl_count + 1) * 2 > d->fl_mask + 1 && fl_grow(d) < 0)
    return -ENOMEM;
  s = fl_insert_slot(d->fl, d->fl_mask, p->key_lo);
  s->hi = p->key_hi;
  s->lo = p->key_lo;
  s->owner = owner;
  d->fl_count++;
  return 0;
}

static void ev_commit(intake_dedup_t *d, const intake_dedup_probe_t *p, uint32_t tick) {
  up_t how;
  uint64_t b;
  unsigned i;
  if (tab_upsert(&d->ev, EV, fp_hi(p->key_hi), (uint32_t)p->key_lo, tick, tick, &b, &i, &how) &&
      how == UP_LIVE)
    s_stamp(&d->ev, EV, b, i, tick);
}

void intake_dedup_commit(intake_dedup_t *d, const intake_dedup_probe_t *p, uint64_t now_ms) {
  fl_remove(d, p->key_hi, p->key_lo);
  uint32_t tick = tick_of(now_ms);
  /* Every event is kept by key, sequenced ones too: a seq that slides out of its 64-number
   * window was only a bit, and a gateway resending an old batch after newer ones (a lost ack)
   * must still be caught. Storing only seqs committed below the window, as first designed,
   * delivered such copies twice (tests/integration/it_dedup.c, step 3b). */
  ev_commit(d, p, tick);
  if (!p->seq)
    return;
  up_t how;
  uint64_t b;
  unsigned i;
  if (!tab_upsert(&d->src, SRC, fp_hi(p->src_hi), (uint32_t)p->src_lo, tick, tick, &b, &i, &how))
    return;
  src_slot_t *s = srcs(&d->src, b, i);
  if (how == UP_LIVE)
    s_stamp(&d->src, SRC, b, i, tick);
  if (how == UP_FRESH) {
    s->top = p->seq;
    s->bits = 1;
  } else if (p->seq > s->top) {
    uint64_t ahead = p->seq - s->top;
    s->bits = ahead < 64 ? (s->bits << ahead) | 1 : 1;
    s->top = p->seq;
  } else if (s->top - p->seq < 64) {
    s->bits |= 1ull << (s->top - p->seq);
  } /* else below the window: kept by key only */
}

void intake_dedup_abort(intake_dedup_t *d, const intake_dedup_probe_t *p) {
  fl_remove(d, p->key_hi, p->key_lo);
}

size_t intake_dedup_sweep(intake_dedup_t *d, uint64_t now_ms, size_t budget) {
  uint32_t tick = tick_of(now_ms);
  uint64_t ev_slots = d->ev.slots, src_slots = d->src.slots;
  tab_horizon_update(&d->ev, tick);
  tab_horizon_update(&d->src, tick);
  if (d->ev.hold)
    return 0;
  /* Keys past a shrunken horizon hold slots until the sweep reaches them; while they are more
   * than a few percent of a table, sweep faster so that occupancy (and probe lengths) stay near
   * the target instead of drifting to the eviction limit. */
  if (d->ev.count > d->ev.target + d->ev.slots / 32 ||
      d->src.count > d->src.target + d->src.slots / 32)
    budget *= 8;
  /* one full pass: every slot once, plus one more look after each deletion */
  uint64_t pass = ev_slots + src_slots + d->ev.count + d->src.count;
  if (budget > pass)
    budget = (size_t)pass;
  size_t visited = 0;
  while (visited < budget) {
    /* one cursor over both tables: [0, ev_slots) is ev, then src */
    if (d->cursor < ev_slots) {
      uint64_t i = d->cursor;
      visited += tab_sweep(&d->ev, EV, &i, ev_slots, tick, budget - visited);
      d->cursor = i;
    } else {
      uint64_t i = d->cursor - ev_slots;
      visited += tab_sweep(&d->src, SRC, &i, src_slots, tick, budget - visited);
      d->cursor = i == src_slots ? 0 : ev_slots + i;
    }
  }
  return visited;
}

void intake_dedup_hold_deletions(intake_dedup_t *d, int hold) {
  d->ev.hold = d->src.hold = hold != 0;
}

void intake_dedup_stats(const intake_dedup_t *d, intake_dedup_stats_t *out) {
  out->entries = d->ev.count;
  out->capacity = d->ev.nb * EV_SLOTS;
  out->sources = d->src.count;
  out->source_capacity = d->src.nb * SRC_SLOTS;
  out->in_flight = d->fl_count;
  out->bytes = sizeof *d + d->ev.bytes + d->src.bytes + (d->fl_mask + 1) * sizeof *d->fl;
  out->event_bytes = d->ev.bytes;
  out->evictions = d->ev.evictions + d->src.evictions;
  out->forced_evictions = d->ev.forced + d->src.forced;
  out->expired = d->ev.expired + d->src.expired;
  out->commits = d->ev.commits;
  out->window_ms = d->window_ms;
  out->effective_window_ms = (uint64_t)d->ev.horizon * TICK_MS;
  out->source_window_ms = (uint64_t)d->src.horizon * TICK_MS;
}

/* ---- export and import (snapshots) -------------------------------------------------------- */

size_t intake_dedup_export_keys(const intake_dedup_t *d, uint64_t now_ms, uint64_t *pos,
                                intake_dedup_key_rec_t *out, size_t max) {
  const tab_t *t = &d->ev;
  uint64_t slots = t->nb * EV_SLOTS, i = *pos < slots ? *pos : slots;
  uint64_t end = slots - i > max ? i + max : slots;
  uint32_t tick = tick_of(now_ms);
  int32_t h = tab_horizon(t, tick);
  size_t n = 0;
  for (; i < end; i++) {
    uint64_t b = i / EV_SLOTS;
    unsigned k = (unsigned)(i % EV_SLOTS);
    uint64_t hi = s_hi(t, EV, b, k);
    uint32_t ts = s_ts(t, EV, b, k);
    if (hi && age_of(tick, ts) <= h)
      out[n++] = (intake_dedup_key_rec_t){.hi = hi, .lo = s_lo(t, EV, b, k), .tick = ts};
  }
  *pos = i;
  return n;
}

size_t intake_dedup_export_sources(const intake_dedup_t *d, uint64_t now_ms, uint64_t *pos,
                                   intake_dedup_source_rec_t *out, size_t max) {
  const tab_t *t = &d->src;
  uint64_t slots = t->nb * SRC_SLOTS, i = *pos < slots ? *pos : slots;
  uint64_t end = slots - i > max ? i + max : slots;
  uint32_t tick = tick_of(now_ms);
  int32_t h = tab_horizon(t, tick);
  size_t n = 0;
  for (; i < end; i++) {
    const src_slot_t *s = srcs(t, i / SRC_SLOTS, (unsigned)(i % SRC_SLOTS));
    if (s->hi && age_of(tick, s->ts) <= h)
      out[n++] = (intake_dedup_source_rec_t){
          .hi = s->hi, .lo = s->lo, .tick = s->ts, .top = s->top, .bits = s->bits};
  }
  *pos = i;
  return n;
}

/* The tick an imported entry is stored with, or -1 to skip it: past the table's horizon at
 * `now`, or ahead of now (clamped to now, so a bad clock cannot make a key outlive its
 * window). */
static int64_t import_tick(const tab_t *t, uint32_t tick, uint32_t now) {
  int32_t age = age_of(now, tick);
  if (age > tab_horizon(t, now))
    return -1;
  return age < 0 ? now : tick;
}

int intake_dedup_import_key(intake_dedup_t *d, const intake_dedup_key_rec_t *k, uint64_t now_ms) {
  uint32_t now = tick_of(now_ms);
  int64_t tick = import_tick(&d->ev, k->tick, now);
  if (!k->hi || tick < 0)
    return 0;
  up_t how;
  uint64_t b;
  unsigned i;
  if (!tab_upsert(&d->ev, EV, k->hi, k->lo, now, (uint32_t)tick, &b, &i, &how))
    return 0; /* NEVER */
  if (how == UP_LIVE && age_of((uint32_t)tick, evb(&d->ev, b)->ts[i]) > 0)
    s_stamp(&d->ev, EV, b, i, (uint32_t)tick);
  return 1;
}

int intake_dedup_import_source(intake_dedup_t *d, const intake_dedup_source_rec_t *r,
                               uint64_t now_ms) {
  uint32_t now = tick_of(now_ms);
  int64_t tick = import_tick(&d->src, r->tick, now);
  if (!r->hi || tick < 0)
    return 0;
  up_t how;
  uint64_t b;
  unsigned i;
  if (!tab_upsert(&d->src, SRC, r->hi, r->lo, now, (uint32_t)tick, &b, &i, &how))
    return 0; /* NEVER */
  src_slot_t *s = srcs(&d->src, b, i);
  if (how == UP_FRESH || age_of((uint32_t)tick, s->ts) > 0) {
    if (how == UP_LIVE)
      s_stamp(&d->src, SRC, b, i, (uint32_t)tick);
    s->top = r->top;
    s->bits = r->bits;
  }
  return 1;
}

/* Test hook, not in the header: checks every table invariant. Returns 0 or a negative line. */
int intake_dedup__verify(const intake_dedup_t *d);
int intake_dedup__verify(const intake_dedup_t *d) {
  int r;
  if ((r = tab_verify(&d->ev, EV)) < 0 || (r = tab_verify(&d->src, SRC)) < 0)
    return r;
  uint64_t n = 0;
  for (uint64_t i = 0; i <= d->fl_mask; i++)
    if (d->fl[i].owner) {
      n++;
      if (fl_find(d, d->fl[i].hi, d->fl[i].lo) != &d->fl[i])
        return -__LINE__;
    }
  return n == d->fl_count ? 0 : -__LINE__;
}

