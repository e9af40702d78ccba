/* Exact de-duplication: three tables, all open addressing with power-of-two capacity.
 *
 * Event-id table ("ev"): 16-byte slots {fingerprint hi 64 bits, lo 32 bits, tick 32 bits}, in
 * buckets of 4 slots = one 64-byte cache line. Probing is linear over buckets: a key lives in
 * the first bucket from its home bucket (hi & mask) that had room when it was inserted, so a
 * lookup reads buckets until it finds the key or reads a bucket with an empty slot. Deletion
 * (sweep only) is backward-shift: later keys of the run move up into the hole, so there are no
 * tombstones and runs never grow from deletions. Bucket size 4 was chosen from a simulation of
 * this scheme (mean buckets read by a miss / by a hit): load 0.5: 1.23 / 1.05, 0.7: 2.06 / 1.19,
 * 0.85: 6.2 / 1.59; with 2 slots per bucket 0.85 costs 11.7 / 2.3. A miss and an insert read the
 * same buckets (the insert goes where the miss stopped), so check()+commit() of a new key pay
 * for one run, not two. An insert reuses an expired slot of its run first; above 85% load it
 * replaces the oldest key of its run (an eviction) instead of taking an empty slot.
 *
 * Cost against load, bench/dedup_bench.c (920k sources, 16% of events sequenced, 10% copies;
 * 2-core AMD EPYC VM, best of 5), ns per event for probe_init + prefetch + check + begin, and
 * with the commit: load 0.34: 64 (107), 0.50: 84 (134), 0.60: 102 (153), 0.67: 112 (169),
 * 0.80: 150 (224), at the 0.85 cap while evicting: 195 (301). Linear probing's long runs set in
 * above ~0.6; dedup.h tells operators to size for that.
 *
 * Source table ("src"): 32-byte slots {hi, lo, tick, top, bitmap}, same scheme with buckets of
 * 4 slots = two cache lines (128 bytes, prefetched together). A sequenced event is a duplicate
 * if its source's window has its bit, else if the event-id table has its key: every commit
 * stores the key, so the window adds the (source, seq) identity (a copy under a new event id)
 * without being the only memory of an event.
 *
 * In-flight map ("fl"): {key hi, key lo, owner}, slot-level linear probing at load <= 1/2,
 * backward-shift deletion, doubled when needed (the only allocation after create).
 *
 * Empty slots: hi == 0. A fingerprint whose hi is 0 is stored as 1 (fp_hi()), merging two of
 * 2^64 values; owners are never NULL, so the in-flight map uses owner == NULL instead.
 *
 * Time: 32-bit ticks of 10 ms (Unix ms / 10, modulo 2^32); ages are the signed 32-bit
 * difference, so the clock may run backwards (a key from the "future" is simply live) and ticks
 * wrap harmlessly — as long as the sweep visits every slot at least once per 2^31 ticks
 * (248 days); the pipeline's timer does it every ~30 s. A key is live while its age in ticks is
 * <= ceil(window / 10 ms): it stays a duplicate for at least window_ms after commit and at most
 * window_ms + 20 ms: exact to 10 ms (100 ms was required), with no base epoch to rebase. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE */
#endif
#define XXH_INLINE_ALL /* XXH3 on short ids is a few ns: inlined, no calls, no ABI concerns */
#include <xxhash.h>

#include "dedup/dedup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define TICK_MS 10u
#define BUCKET_SLOTS 4u                      /* slots per bucket in ev and src */
#define MIN_BUCKETS 256u                     /* 1024 slots: 16 KiB ev, 32 KiB src */
#define MAX_LOAD_PCT 85u                     /* beyond it an insert evicts instead of growing runs */
#define MAX_WINDOW_MS (30ull * 24 * 3600 * 1000) /* ticks stay far below 2^31 */
#define HUGE_BYTES (2u << 20)                /* tables this big are mmap'ed on 2 MiB pages */
#define FL_MIN_SLOTS 256u

typedef struct {
  uint64_t hi;  /* fingerprint bits 64..127; 0 = empty slot */
  uint32_t lo;  /* fingerprint bits 0..31 */
  uint32_t ts;  /* tick of the last commit */
} slot_t;       /* an ev slot; the head of a src slot */

typedef struct {
  slot_t h;     /* source fingerprint, tick of the last commit */
  uint64_t top; /* highest seq committed */
  uint64_t bits;/* bit i set: seq top - i committed (i < 64) */
} src_slot_t;

typedef struct {
  uint64_t hi, lo; /* full key fingerprint */
  void *owner;     /* NULL = empty slot */
} fl_slot_t;

typedef struct {
  unsigned char *mem; /* buckets of BUCKET_SLOTS slots of `stride` bytes */
  size_t bytes;       /* size of mem */
  int mapped;         /* mem is an mmap (else aligned_alloc) */
  uint64_t mask;      /* buckets - 1 */
  uint64_t count;     /* occupied slots, live or not yet swept */
  uint64_t max_count; /* MAX_LOAD_PCT of the slots */
  uint64_t deep[3];   /* counts at 50/70/80% load: prefetch one more bucket past each */
} tab_t;

struct intake_dedup {
  tab_t ev;                /* (source, event id) keys, 16-byte slots */
  tab_t src;               /* per-source sequence windows, 32-byte slots */
  fl_slot_t *fl;           /* in-flight map */
  uint64_t fl_mask;        /* its slots - 1 */
  uint64_t fl_count;       /* its entries */
  uint64_t window_ms;      /* as set */
  int32_t window_ticks;    /* ceil(window_ms / TICK_MS) */
  uint64_t cursor;         /* sweep position in [0, ev slots + src slots) */
  uint64_t evictions;      /* live keys or windows replaced because a table was full */
  uint64_t expired;        /* keys or windows dropped (or reused) after their window */
};

#define EV_STRIDE sizeof(slot_t)
#define SRC_STRIDE sizeof(src_slot_t)
_Static_assert(sizeof(slot_t) == 16, "ev slot must be 16 bytes");
_Static_assert(sizeof(src_slot_t) == 32, "src slot must be 32 bytes");

/* ---- time ------------------------------------------------------------------------------ */

static inline uint32_t tick_of(uint64_t now_ms) { return (uint32_t)(now_ms / TICK_MS); }

/* Signed age in ticks; negative when the clock went backwards since the commit. */
static inline int32_t age_of(uint32_t tick, uint32_t ts) { return (int32_t)(tick - ts); }

static int32_t window_ticks(uint64_t window_ms) {
  if (window_ms < 1)
    window_ms = 1;
  if (window_ms > MAX_WINDOW_MS)
    window_ms = MAX_WINDOW_MS;
  return (int32_t)((window_ms + TICK_MS - 1) / TICK_MS);
}

/* ---- generic bucketed table (ev and src) --------------------------------------------------- */

static inline uint64_t fp_hi(uint64_t h) { return h | (h == 0); }

static inline slot_t *tab_slot(const tab_t *t, uint64_t b, unsigned i, size_t stride) {
  return (slot_t *)(void *)(t->mem + (b * BUCKET_SLOTS + i) * stride);
}

static inline const unsigned char *tab_bucket(const tab_t *t, uint64_t hi, size_t stride) {
  return t->mem + (hi & t->mask) * BUCKET_SLOTS * stride;
}

/* Largest power-of-two bucket count whose table fits `budget`; 0 if below MIN_BUCKETS. */
static uint64_t tab_buckets_for(uint64_t budget, size_t stride) {
  uint64_t bucket_bytes = BUCKET_SLOTS * stride;
  uint64_t max = budget / bucket_bytes;
  if (max < MIN_BUCKETS)
    return 0;
  uint64_t n = MIN_BUCKETS;
  while (n <= max / 2)
    n *= 2;
  return n;
}

static int tab_init(tab_t *t, uint64_t budget, size_t stride) {
  uint64_t buckets = tab_buckets_for(budget, stride);
  if (!buckets || buckets > SIZE_MAX / (BUCKET_SLOTS * stride))
    return -EINVAL;
  size_t bytes = (size_t)buckets * BUCKET_SLOTS * stride;
  memset(t, 0, sizeof *t);
  if (bytes >= HUGE_BYTES) {
    /* Random access over tens of MiB misses the TLB on 4 KiB pages; THP here is in "madvise"
     * mode, so ask for 2 MiB pages, on a 2 MiB-aligned range (over-map, trim both ends). */
    size_t len = bytes + HUGE_BYTES;
    unsigned char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
      return -ENOMEM;
    uintptr_t a = ((uintptr_t)raw + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1);
    unsigned char *mem = (unsigned char *)a;
    if (mem > raw)
      munmap(raw, (size_t)(mem - raw));
    size_t tail = (size_t)(raw + len - (mem + bytes));
    if (tail)
      munmap(mem + bytes, tail);
    (void)madvise(mem, bytes, MADV_HUGEPAGE); /* advisory: fine if refused */
    t->mem = mem;
    t->mapped = 1;
  } else {
    /* Small tables (tests) come from malloc so that ASan and valgrind see their bounds. */
    t->mem = aligned_alloc(128, bytes);
    if (!t->mem)
      return -ENOMEM;
    memset(t->mem, 0, bytes);
  }
  t->bytes = bytes;
  t->mask = buckets - 1;
  uint64_t slots = buckets * BUCKET_SLOTS;
  t->max_count = slots / 100 * MAX_LOAD_PCT + slots % 100 * MAX_LOAD_PCT / 100;
  t->deep[0] = slots / 2;
  t->deep[1] = slots / 10 * 7;
  t->deep[2] = slots / 10 * 8;
  return 0;
}

static void tab_dispose(tab_t *t) {
  if (!t->mem)
    return;
  if (t->mapped)
    munmap(t->mem, t->bytes);
  else
    free(t->mem);
  t->mem = NULL;
}

/* The slot holding (hi, lo), live or expired, or NULL. (A branch-free compare of the four
 * slots measured slower: 16 -> 23 ns a check after prefetch, 64 -> 100 without. The branches
 * are predictable, and predicting them lets the next checks of a batch issue their loads.) */
static inline slot_t *tab_find(const tab_t *t, uint64_t hi, uint32_t lo, size_t stride) {
  uint64_t b = hi & t->mask;
  for (uint64_t n = 0; n <= t->mask; n++, b = (b + 1) & t->mask) {
    int room = 0;
    for (unsigned i = 0; i < BUCKET_SLOTS; i++) {
      slot_t *s = tab_slot(t, b, i, stride);
      if (s->hi == hi && s->lo == lo)
        return s;
      room |= s->hi == 0;
    }
    if (room)
      return NULL;
  }
  return NULL;
}

typedef enum {
  UP_LIVE,    /* the key was there and live: caller refreshes it */
  UP_FRESH    /* the slot now holds the key as new: caller initialises it */
} up_t;

/* Finds (hi, lo) or makes room for it in its run: an expired slot of the run if any (counted as
 * expired), else an empty slot while under MAX_LOAD_PCT, else the oldest live key of the run
 * (counted as evicted). Sets the fingerprint of a fresh slot; the caller sets ts and payload. */
static slot_t *tab_upsert(intake_dedup_t *d, tab_t *t, uint64_t hi, uint32_t lo, uint32_t tick,
                          size_t stride, up_t *how) {
  int32_t w = d->window_ticks;
  slot_t *empty = NULL, *stale = NULL, *oldest = NULL;
  int32_t oldest_age = INT32_MIN;
  uint64_t b = hi & t->mask;
  for (uint64_t n = 0; n <= t->mask; n++, b = (b + 1) & t->mask) {
    for (unsigned i = 0; i < BUCKET_SLOTS; i++) {
      slot_t *s = tab_slot(t, b, i, stride);
      if (s->hi == 0) {
        if (!empty)
          empty = s;
        continue;
      }
      int32_t age = age_of(tick, s->ts);
      if (s->hi == hi && s->lo == lo) {
        if (age <= w) {
          *how = UP_LIVE;
          return s;
        }
        d->expired++; /* the old instance ended; this commit starts a new one in place */
        *how = UP_FRESH;
        return s;
      }
      if (age > w) {
        if (!stale)
          stale = s;
      } else if (age > oldest_age) {
        oldest_age = age;
        oldest = s;
      }
    }
    if (empty)
      break;
  }
  slot_t *s;
  if (stale) {
    d->expired++;
    s = stale;
  } else if (empty && (t->count < t->max_count || !oldest)) {
    /* Over the limit with no key in the run (its home bucket is empty): take the slot anyway.
     * Such a bucket can only gain one key this way, so the table never fills up. */
    t->count++;
    s = empty;
  } else if (oldest) {
    d->evictions++;
    s = oldest;
  } else {
    return NULL; /* NEVER: a table with no empty slot */
  }
  memset(s, 0, stride);
  s->hi = hi;
  s->lo = lo;
  *how = UP_FRESH;
  return s;
}

/* Empties slot i of bucket b and closes the gap: a later key of the same run whose home is at
 * or before the hole moves into it, and so on until a bucket that had room. */
static void tab_delete(tab_t *t, uint64_t b, unsigned i, size_t stride) {
  uint64_t hole_b = b;
  slot_t *hole = tab_slot(t, b, i, stride);
  memset(hole, 0, stride);
  t->count--;
  for (uint64_t j = (b + 1) & t->mask, n = 0; n < t->mask; n++, j = (j + 1) & t->mask) {
    int room = 0;
    slot_t *mover = NULL;
    uint64_t reach = (j - hole_b) & t->mask;
    for (unsigned k = 0; k < BUCKET_SLOTS; k++) {
      slot_t *s = tab_slot(t, j, k, stride);
      if (s->hi == 0) {
        room = 1;
      } else if (!mover && ((j - (s->hi & t->mask)) & t->mask) >= reach) {
        mover = s; /* its probe path from home to j passes the hole */
      }
    }
    if (mover) {
      memcpy(hole, mover, stride);
      memset(mover, 0, stride);
      hole = mover;
      hole_b = j;
    }
    if (room)
      return; /* no key beyond a bucket with room passed through it */
  }
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
  d->window_ticks = window_ticks(window_ms);
  if (tab_init(&d->ev, event_bytes, EV_STRIDE) < 0 || tab_init(&d->src, source_bytes, SRC_STRIDE) < 0)
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

void intake_dedup_set_window(intake_dedup_t *d, uint64_t window_ms) {
  d->window_ms = window_ms < 1 ? 1 : window_ms > MAX_WINDOW_MS ? MAX_WINDOW_MS : window_ms;
  d->window_ticks = window_ticks(d->window_ms);
}

uint64_t intake_dedup_window_ms(const intake_dedup_t *d) { return d->window_ms; }

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
    const unsigned char *b = tab_bucket(&d->src, fp_hi(p->src_hi), SRC_STRIDE);
    __builtin_prefetch(b);
    __builtin_prefetch(b + 64);
  }
  {
    /* A miss (and the insert after it) reads the run up to a bucket with room: 1.2 buckets
     * on average at load 0.5, 2.1 at 0.7, 3.8 at 0.8 (see the top of this file). In
     * bench/dedup_bench.c the extra lines took ~105 -> ~70 ns at load 0.66 and ~225 -> ~90 ns
     * at 0.77 when prefetches were interleaved with hashing; prefetched in a loop of their own
     * they gained 3-7% at 0.67-0.78 load and cost nothing measurable below. They cannot hide
     * the long tail of runs at 0.8+: there a check costs ~2x. */
    const tab_t *t = &d->ev;
    uint64_t hi = fp_hi(p->key_hi);
    unsigned n = 1u + (t->count >= t->deep[0]) + (t->count >= t->deep[1]) + (t->count >= t->deep[2]);
    for (unsigned k = 0; k < n; k++)
      __builtin_prefetch(tab_bucket(t, hi + k, EV_STRIDE));
  }
  if (d->fl_count)
    __builtin_prefetch(&d->fl[p->key_lo & d->fl_mask]);
}

static inline int ev_seen(const intake_dedup_t *d, const intake_dedup_probe_t *p, uint32_t tick) {
  const slot_t *s = tab_find(&d->ev, fp_hi(p->key_hi), (uint32_t)p->key_lo, EV_STRIDE);
  return s && age_of(tick, s->ts) <= d->window_ticks;
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
    const src_slot_t *s =
        (const src_slot_t *)tab_find(&d->src, fp_hi(p->src_hi), (uint32_t)p->src_lo, SRC_STRIDE);
    if (s && age_of(tick, s->h.ts) <= d->window_ticks && p->seq <= s->top &&
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
  slot_t *s = tab_upsert(d, &d->ev, fp_hi(p->key_hi), (uint32_t)p->key_lo, tick, EV_STRIDE, &how);
  if (s)
    s->ts = tick;
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
  src_slot_t *s = (src_slot_t *)(void *)tab_upsert(d, &d->src, fp_hi(p->src_hi),
                                                   (uint32_t)p->src_lo, tick, SRC_STRIDE, &how);
  if (!s)
    return;
  s->h.ts = tick;
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

/* Sweeps slots [*idx, end) of one table, at most `budget` visits; returns visits. Whole
 * buckets with nothing expired are passed with one branch: occupancy is random, and a branch per
 * slot on it mispredicted half the time (2.3 ns a slot; memory alone allows ~0.7). */
static inline size_t tab_sweep(intake_dedup_t *d, tab_t *t, size_t stride, uint64_t *idx,
                               uint64_t end, uint32_t tick, size_t budget) {
  int32_t w = d->window_ticks;
  uint64_t i = *idx;
  size_t visited = 0;
  while (visited < budget && i < end) {
    if (i % BUCKET_SLOTS == 0 && budget - visited >= BUCKET_SLOTS) {
      const unsigned char *b = t->mem + i * stride;
      unsigned dead = 0;
      for (unsigned k = 0; k < BUCKET_SLOTS; k++) {
        const slot_t *s = (const slot_t *)(const void *)(b + k * stride);
        dead |= (unsigned)((s->hi != 0) & (age_of(tick, s->ts) > w));
      }
      if (!dead) {
        i += BUCKET_SLOTS;
        visited += BUCKET_SLOTS;
        continue;
      }
    }
    const slot_t *s = (const slot_t *)(const void *)(t->mem + i * stride);
    visited++;
    if (s->hi && age_of(tick, s->ts) > w) {
      tab_delete(t, i / BUCKET_SLOTS, (unsigned)(i % BUCKET_SLOTS), stride);
      d->expired++;
      continue; /* the backward shift may have moved another key here: look again */
    }
    i++;
  }
  *idx = i;
  return visited;
}

size_t intake_dedup_sweep(intake_dedup_t *d, uint64_t now_ms, size_t budget) {
  uint32_t tick = tick_of(now_ms);
  uint64_t ev_slots = (d->ev.mask + 1) * BUCKET_SLOTS;
  uint64_t src_slots = (d->src.mask + 1) * BUCKET_SLOTS;
  /* one full pass: every slot once, plus one more look after each deletion */
  uint64_t pass = ev_slots + src_slots + d->ev.count + d->src.count;
  if (budget > pass)
    budget = (size_t)pass;
  size_t visited = 0;
  while (visited < budget) {
    /* one cursor over both tables: [0, ev_slots) is ev, then src */
    if (d->cursor < ev_slots) {
      uint64_t i = d->cursor;
      visited += tab_sweep(d, &d->ev, EV_STRIDE, &i, ev_slots, tick, budget - visited);
      d->cursor = i;
    } else {
      uint64_t i = d->cursor - ev_slots;
      visited += tab_sweep(d, &d->src, SRC_STRIDE, &i, src_slots, tick, budget - visited);
      d->cursor = i == src_slots ? 0 : ev_slots + i;
    }
  }
  return visited;
}

void intake_dedup_stats(const intake_dedup_t *d, intake_dedup_stats_t *out) {
  out->entries = d->ev.count;
  out->capacity = (d->ev.mask + 1) * BUCKET_SLOTS;
  out->sources = d->src.count;
  out->source_capacity = (d->src.mask + 1) * BUCKET_SLOTS;
  out->in_flight = d->fl_count;
  out->bytes = sizeof *d + d->ev.bytes + d->src.bytes + (d->fl_mask + 1) * sizeof *d->fl;
  out->evictions = d->evictions;
  out->expired = d->expired;
}

/* ---- export and import (snapshots) -------------------------------------------------------- */

size_t intake_dedup_export_keys(const intake_dedup_t *d, uint64_t now_ms, uint64_t *pos,
                                intake_dedup_key_rec_t *out, size_t max) {
  const tab_t *t = &d->ev;
  uint64_t slots = (t->mask + 1) * BUCKET_SLOTS, i = *pos < slots ? *pos : slots;
  uint64_t end = slots - i > max ? i + max : slots;
  uint32_t tick = tick_of(now_ms);
  size_t n = 0;
  for (; i < end; i++) {
    const slot_t *s = (const slot_t *)(const void *)(t->mem + i * EV_STRIDE);
    if (s->hi && age_of(tick, s->ts) <= d->window_ticks)
      out[n++] = (intake_dedup_key_rec_t){.hi = s->hi, .lo = s->lo, .tick = s->ts};
  }
  *pos = i;
  return n;
}

size_t intake_dedup_export_sources(const intake_dedup_t *d, uint64_t now_ms, uint64_t *pos,
                                   intake_dedup_source_rec_t *out, size_t max) {
  const tab_t *t = &d->src;
  uint64_t slots = (t->mask + 1) * BUCKET_SLOTS, i = *pos < slots ? *pos : slots;
  uint64_t end = slots - i > max ? i + max : slots;
  uint32_t tick = tick_of(now_ms);
  size_t n = 0;
  for (; i < end; i++) {
    const src_slot_t *s = (const src_slot_t *)(const void *)(t->mem + i * SRC_STRIDE);
    if (s->h.hi && age_of(tick, s->h.ts) <= d->window_ticks)
      out[n++] = (intake_dedup_source_rec_t){
          .hi = s->h.hi, .lo = s->h.lo, .tick = s->h.ts, .top = s->top, .bits = s->bits};
  }
  *pos = i;
  return n;
}

/* The tick an imported entry is stored with, or -1 to skip it: past the window at `now`, or
 * ahead of now (clamped to now, so a bad clock cannot make a key outlive its window). */
static int64_t import_tick(const intake_dedup_t *d, uint32_t tick, uint32_t now) {
  int32_t age = age_of(now, tick);
  if (age > d->window_ticks)
    return -1;
  return age < 0 ? now : tick;
}

int intake_dedup_import_key(intake_dedup_t *d, const intake_dedup_key_rec_t *k, uint64_t now_ms) {
  uint32_t now = tick_of(now_ms);
  int64_t tick = import_tick(d, k->tick, now);
  if (!k->hi || tick < 0)
    return 0;
  up_t how;
  slot_t *s = tab_upsert(d, &d->ev, k->hi, k->lo, now, EV_STRIDE, &how);
  if (!s)
    return 0; /* NEVER */
  if (how == UP_FRESH || age_of((uint32_t)tick, s->ts) > 0)
    s->ts = (uint32_t)tick;
  return 1;
}

int intake_dedup_import_source(intake_dedup_t *d, const intake_dedup_source_rec_t *r,
                               uint64_t now_ms) {
  uint32_t now = tick_of(now_ms);
  int64_t tick = import_tick(d, r->tick, now);
  if (!r->hi || tick < 0)
    return 0;
  up_t how;
  src_slot_t *s =
      (src_slot_t *)(void *)tab_upsert(d, &d->src, r->hi, r->lo, now, SRC_STRIDE, &how);
  if (!s)
    return 0; /* NEVER */
  if (how == UP_FRESH || age_of((uint32_t)tick, s->h.ts) > 0) {
    s->h.ts = (uint32_t)tick;
    s->top = r->top;
    s->bits = r->bits;
  }
  return 1;
}

/* Test hook, not in the header: checks every table invariant. Returns 0 or a negative line. */
int intake_dedup__verify(const intake_dedup_t *d);
static int tab_verify(const tab_t *t, size_t stride) {
  uint64_t count = 0;
  for (uint64_t b = 0; b <= t->mask; b++)
    for (unsigned i = 0; i < BUCKET_SLOTS; i++) {
      slot_t *s = tab_slot(t, b, i, stride);
      if (!s->hi)
        continue;
      count++;
      /* every bucket from home up to b must be full, so lookups reach the key */
      for (uint64_t h = s->hi & t->mask; h != b; h = (h + 1) & t->mask)
        for (unsigned k = 0; k < BUCKET_SLOTS; k++)
          if (!tab_slot(t, h, k, stride)->hi)
            return -__LINE__;
      if (tab_find(t, s->hi, s->lo, stride) != s)
        return -__LINE__;
    }
  return count == t->count ? 0 : -__LINE__;
}
int intake_dedup__verify(const intake_dedup_t *d) {
  int r;
  if ((r = tab_verify(&d->ev, EV_STRIDE)) < 0 || (r = tab_verify(&d->src, SRC_STRIDE)) < 0)
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
