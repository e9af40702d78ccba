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
 * stopped), so check()+commit() of a new key pay for one run, not two. An insert reuses an
 * expired slot of its run first; above 85% load it replaces the oldest key of its run (an
 * eviction) instead of taking an empty slot. Mean buckets (= cache lines) read by a miss, from
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
 * <= ceil(window / 10 ms): it stays a duplicate for at least window_ms after commit and at most
 * window_ms + 20 ms: exact to 10 ms (100 ms was required), with no base epoch to rebase. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE, MADV_POPULATE_WRITE */
#endif
#define XXH_INLINE_ALL /* XXH3 on short ids is a few ns: inlined, no calls, no ABI concerns */
#include <xxhash.h>

#include "dedup/dedup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it: pages are touched instead */
#endif

#define TICK_MS 10u
#define EV_SLOTS 5u                          /* slots per 64-byte ev bucket */
#define SRC_SLOTS 4u                         /* slots per 128-byte src bucket */
#define TAG_MASK 63u                         /* key bits 0..5 kept next to the 64-bit fingerprint */
#define MIN_BUCKETS 256u                     /* 1280 slots / 16 KiB ev; 1024 slots / 32 KiB src */
#define MAX_LOAD_PCT 85u                     /* beyond it an insert evicts instead of growing runs */
#define MAX_WINDOW_MS (30ull * 24 * 3600 * 1000) /* ticks stay far below 2^31 */
#define HUGE_BYTES (2u << 20)                /* tables this big are mmap'ed on 2 MiB pages */
#define PAGE_BYTES 4096u
#define FL_MIN_SLOTS 256u

__extension__ typedef unsigned __int128 u128_t;

typedef struct {
  uint64_t fp[EV_SLOTS];  /* key fingerprint bits 64..127; 0 = empty slot */
  uint32_t ts[EV_SLOTS];  /* tick of the last commit */
  uint32_t tags;          /* bits 6i..6i+5: key fingerprint bits 0..5 of slot i */
} ev_bucket_t;

typedef struct {
  uint64_t hi;  /* source fingerprint bits 64..127; 0 = empty slot */
  uint32_t lo;  /* bits 0..31 */
  uint32_t ts;  /* tick of the last commit */
  uint64_t top; /* highest seq committed */
  uint64_t bits;/* bit i set: seq top - i committed (i < 64) */
} src_slot_t;

typedef struct {
  src_slot_t s[SRC_SLOTS];
} src_bucket_t;

typedef struct {
  uint64_t hi, lo; /* full key fingerprint */
  void *owner;     /* NULL = empty slot */
} fl_slot_t;

typedef struct {
  void *mem;          /* nb buckets (ev_bucket_t or src_bucket_t) */
  size_t bytes;       /* the buckets: nb x bucket size */
  size_t map_bytes;   /* the mapping (bytes rounded up to a page) when mapped, else 0 */
  uint64_t nb;        /* buckets */
  uint64_t count;     /* occupied slots, live or not yet swept */
  uint64_t max_count; /* MAX_LOAD_PCT of the slots */
  uint64_t deep[3];   /* counts at 50/70/80% load: prefetch one more bucket past each (ev) */
} tab_t;

struct intake_dedup {
  tab_t ev;                /* (source, event id) keys, 12.8 bytes a slot */
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

_Static_assert(sizeof(ev_bucket_t) == 64, "an ev bucket must be one cache line");
_Static_assert(sizeof(src_slot_t) == 32, "src slot must be 32 bytes");
_Static_assert(sizeof(src_bucket_t) == 128, "a src bucket must be two cache lines");

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

/* K is EV or SRC, always a constant: each inlined use compiles to one layout's code. */
enum { EV = 0, SRC = 1 };

static inline uint64_t fp_hi(uint64_t h) { return h | (h == 0); }

static inline unsigned slots_of(int K) { return K == EV ? EV_SLOTS : SRC_SLOTS; }
static inline size_t bucket_bytes(int K) {
  return K == EV ? sizeof(ev_bucket_t) : sizeof(src_bucket_t);
}
static inline ev_bucket_t *evb(const tab_t *t, uint64_t b) { return (ev_bucket_t *)t->mem + b; }
static inline src_slot_t *srcs(const tab_t *t, uint64_t b, unsigned i) {
  return &((src_bucket_t *)t->mem)[b].s[i];
}

/* The part of a key's low 32 bits that the table keeps. */
static inline uint32_t lo_key(int K, uint32_t lo) { return K == EV ? lo & TAG_MASK : lo; }

static inline uint64_t s_hi(const tab_t *t, int K, uint64_t b, unsigned i) {
  return K == EV ? evb(t, b)->fp[i] : srcs(t, b, i)->hi;
}
static inline uint32_t s_lo(const tab_t *t, int K, uint64_t b, unsigned i) {
  return K == EV ? (evb(t, b)->tags >> (6 * i)) & TAG_MASK : srcs(t, b, i)->lo;
}
static inline uint32_t s_ts(const tab_t *t, int K, uint64_t b, unsigned i) {
  return K == EV ? evb(t, b)->ts[i] : srcs(t, b, i)->ts;
}
static inline void s_clear(tab_t *t, int K, uint64_t b, unsigned i) {
  if (K == EV) {
    ev_bucket_t *e = evb(t, b);
    e->fp[i] = 0;
    e->ts[i] = 0;
    e->tags &= ~(TAG_MASK << (6 * i));
  } else {
    memset(srcs(t, b, i), 0, sizeof(src_slot_t));
  }
}
/* A fresh slot holding (hi, lo): tick 0, payload 0. */
static inline void s_set_key(tab_t *t, int K, uint64_t b, unsigned i, uint64_t hi, uint32_t lo) {
  s_clear(t, K, b, i);
  if (K == EV) {
    ev_bucket_t *e = evb(t, b);
    e->fp[i] = hi;
    e->tags |= (lo & TAG_MASK) << (6 * i);
  } else {
    srcs(t, b, i)->hi = hi;
    srcs(t, b, i)->lo = lo;
  }
}
/* Moves slot (fb, fi) to the empty slot (tb, ti) and empties it. */
static inline void s_move(tab_t *t, int K, uint64_t tb, unsigned ti, uint64_t fb, unsigned fi) {
  if (K == EV) {
    s_set_key(t, K, tb, ti, evb(t, fb)->fp[fi], s_lo(t, K, fb, fi));
    evb(t, tb)->ts[ti] = evb(t, fb)->ts[fi];
  } else {
    *srcs(t, tb, ti) = *srcs(t, fb, fi);
  }
  s_clear(t, K, fb, fi);
}

/* Home bucket: the high half of fp x buckets (Lemire's range reduction), uniform over any
 * bucket count. It uses the fingerprint's top bits; the sweep's and import's positions and the
 * prefetch compute it the same way. */
static inline uint64_t tab_home(const tab_t *t, uint64_t hi) {
  return (uint64_t)(((u128_t)hi * t->nb) >> 64);
}
static inline uint64_t tab_next(const tab_t *t, uint64_t b) { return b + 1 == t->nb ? 0 : b + 1; }
/* Buckets from `from` forward to `to`, wrapping. */
static inline uint64_t tab_dist(const tab_t *t, uint64_t from, uint64_t to) {
  return to >= from ? to - from : to + t->nb - from;
}

/* Makes the first writes to a mapped table cost nothing on the loop thread: the kernel
 * allocates (huge) pages and clears them now, at create. MADV_POPULATE_WRITE does it in one
 * call; a kernel without it gets one write per 4 KiB page. */
static void tab_populate(unsigned char *mem, size_t len) {
  if (madvise(mem, len, MADV_POPULATE_WRITE) == 0)
    return;
  for (size_t off = 0; off < len; off += PAGE_BYTES)
    ((volatile unsigned char *)mem)[off] = 0;
}

static int tab_init(tab_t *t, int K, uint64_t budget) {
  memset(t, 0, sizeof *t);
  /* Every whole bucket the budget pays for: the table is sized to the budget, not rounded down
   * to a power of two (which left up to half of it unused). */
  uint64_t buckets = budget / bucket_bytes(K);
  if (buckets < MIN_BUCKETS || buckets > SIZE_MAX / 2 / bucket_bytes(K))
    return -EINVAL;
  size_t bytes = (size_t)buckets * bucket_bytes(K);
  if (bytes >= HUGE_BYTES) {
    /* Random access over tens of MiB misses the TLB on 4 KiB pages; THP here is in "madvise"
     * mode, so ask for 2 MiB pages, on a 2 MiB-aligned range (over-map, trim both ends). */
    size_t map = (bytes + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
    size_t len = map + HUGE_BYTES;
    unsigned char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
      return -ENOMEM;
    uintptr_t a = ((uintptr_t)raw + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1);
    unsigned char *mem = (unsigned char *)a;
    if (mem > raw)
      munmap(raw, (size_t)(mem - raw));
    size_t tail = (size_t)(raw + len - (mem + map));
    if (tail)
      munmap(mem + map, tail);
    (void)madvise(mem, map, MADV_HUGEPAGE); /* advisory: fine if refused */
    tab_populate(mem, map);
    t->mem = mem;
    t->map_bytes = map;
  } else {
    /* Small tables (tests) come from malloc so that ASan and valgrind see their bounds. */
    t->mem = aligned_alloc(bucket_bytes(K), bytes); /* C11: bytes is a multiple of it */
    if (!t->mem)
      return -ENOMEM;
    memset(t->mem, 0, bytes);
  }
  t->bytes = bytes;
  t->nb = buckets;
  uint64_t slots = buckets * slots_of(K);
  t->max_count = slots / 100 * MAX_LOAD_PCT + slots % 100 * MAX_LOAD_PCT / 100;
  t->deep[0] = slots / 2;
  t->deep[1] = slots / 10 * 7;
  t->deep[2] = slots / 10 * 8;
  return 0;
}

static void tab_dispose(tab_t *t) {
  if (!t->mem)
    return;
  if (t->map_bytes)
    munmap(t->mem, t->map_bytes);
  else
    free(t->mem);
  t->mem = NULL;
}

/* Finds (hi, lo), live or expired: 1 with its bucket and slot, or 0. (A branch-free compare of
 * the slots measured slower with 16-byte slots: 16 -> 23 ns a check after prefetch, 64 -> 100
 * without. The branches are predictable, and predicting them lets the next checks of a batch
 * issue their loads.) The tag is read only when the 64 bits match. */
static inline int tab_find(const tab_t *t, int K, uint64_t hi, uint32_t lo, uint64_t *ob,
                           unsigned *oi) {
  uint32_t want = lo_key(K, lo);
  uint64_t b = tab_home(t, hi);
  for (uint64_t n = 0; n < t->nb; n++, b = tab_next(t, b)) {
    int room = 0;
    for (unsigned i = 0; i < slots_of(K); i++) {
      uint64_t h = s_hi(t, K, b, i);
      if (h == hi && s_lo(t, K, b, i) == want) {
        *ob = b;
        *oi = i;
        return 1;
      }
      room |= h == 0;
    }
    if (room)
      return 0;
  }
  return 0;
}

typedef enum {
  UP_LIVE,    /* the key was there and live: caller refreshes it */
  UP_FRESH    /* the slot now holds the key as new: caller initialises it */
} up_t;

/* Finds (hi, lo) or makes room for it in its run: an expired slot of the run if any (counted as
 * expired), else an empty slot while under MAX_LOAD_PCT, else the oldest live key of the run
 * (counted as evicted). Sets the fingerprint of a fresh slot (tick and payload 0); the caller
 * sets them. Returns 1 with the slot, or 0: NEVER (a table with no empty slot). */
static int tab_upsert(intake_dedup_t *d, tab_t *t, int K, uint64_t hi, uint32_t lo, uint32_t tick,
                      uint64_t *ob, unsigned *oi, up_t *how) {
  int32_t w = d->window_ticks;
  uint32_t want = lo_key(K, lo);
  int empty = 0, stale = 0, oldest = 0;
  uint64_t eb = 0, sb = 0, obk = 0;
  unsigned ei = 0, si = 0, oik = 0;
  int32_t oldest_age = INT32_MIN;
  uint64_t b = tab_home(t, hi);
  for (uint64_t n = 0; n < t->nb; n++, b = tab_next(t, b)) {
    for (unsigned i = 0; i < slots_of(K); i++) {
      uint64_t h = s_hi(t, K, b, i);
      if (h == 0) {
        if (!empty)
          empty = 1, eb = b, ei = i;
        continue;
      }
      int32_t age = age_of(tick, s_ts(t, K, b, i));
      if (h == hi && s_lo(t, K, b, i) == want) {
        *ob = b;
        *oi = i;
        if (age <= w) {
          *how = UP_LIVE;
          return 1;
        }
        d->expired++; /* the old instance ended; this commit starts a new one in place */
        s_set_key(t, K, b, i, hi, lo);
        *how = UP_FRESH;
        return 1;
      }
      if (age > w) {
        if (!stale)
          stale = 1, sb = b, si = i;
      } else if (age > oldest_age) {
        oldest_age = age;
        oldest = 1, obk = b, oik = i;
      }
    }
    if (empty)
      break;
  }
  if (stale) {
    d->expired++;
    *ob = sb, *oi = si;
  } else if (empty && (t->count < t->max_count || !oldest)) {
    /* Over the limit with no key in the run (its home bucket is empty): take the slot anyway.
     * Such a bucket can only gain one key this way, so the table never fills up. */
    t->count++;
    *ob = eb, *oi = ei;
  } else if (oldest) {
    d->evictions++;
    *ob = obk, *oi = oik;
  } else {
    return 0; /* NEVER: a table with no empty slot */
  }
  s_set_key(t, K, *ob, *oi, hi, lo);
  *how = UP_FRESH;
  return 1;
}

/* Empties slot i of bucket b and closes the gap: a later key of the same run whose home is at
 * or before the hole moves into it, and so on until a bucket that had room. */
static void tab_delete(tab_t *t, int K, uint64_t b, unsigned i) {
  uint64_t hole_b = b;
  unsigned hole_i = i;
  s_clear(t, K, b, i);
  t->count--;
  uint64_t j = tab_next(t, b);
  for (uint64_t n = 0; n + 1 < t->nb; n++, j = tab_next(t, j)) {
    int room = 0, mover = 0;
    unsigned mi = 0;
    uint64_t reach = tab_dist(t, hole_b, j);
    for (unsigned k = 0; k < slots_of(K); k++) {
      uint64_t h = s_hi(t, K, j, k);
      if (h == 0) {
        room = 1;
      } else if (!mover && tab_dist(t, tab_home(t, h), j) >= reach) {
        mover = 1; /* its probe path from home to j passes the hole */
        mi = k;
      }
    }
    if (mover) {
      s_move(t, K, hole_b, hole_i, j, mi);
      hole_b = j;
      hole_i = mi;
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
  if (tab_init(&d->ev, EV, event_bytes) < 0 || tab_init(&d->src, SRC, source_bytes) < 0)
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
         age_of(tick, evb(&d->ev, b)->ts[i]) <= d->window_ticks;
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
    if (s && age_of(tick, s->ts) <= d->window_ticks && p->seq <= s->top &&
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
  if (tab_upsert(d, &d->ev, EV, fp_hi(p->key_hi), (uint32_t)p->key_lo, tick, &b, &i, &how))
    evb(&d->ev, b)->ts[i] = tick;
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
  if (!tab_upsert(d, &d->src, SRC, fp_hi(p->src_hi), (uint32_t)p->src_lo, tick, &b, &i, &how))
    return;
  src_slot_t *s = srcs(&d->src, b, i);
  s->ts = tick;
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

/* Sweeps slots [*idx, end) of one table (slot i is slot i % slots of bucket i / slots), at most
 * `budget` visits; returns visits. Whole buckets with nothing expired are passed with one
 * branch: occupancy is random, and a branch per slot on it mispredicted half the time (2.3 ns a
 * slot; memory alone allows ~0.7). */
static inline size_t tab_sweep(intake_dedup_t *d, tab_t *t, int K, uint64_t *idx, uint64_t end,
                               uint32_t tick, size_t budget) {
  int32_t w = d->window_ticks;
  const unsigned S = slots_of(K);
  uint64_t i = *idx;
  size_t visited = 0;
  while (visited < budget && i < end) {
    uint64_t b = i / S;
    unsigned k = (unsigned)(i % S);
    if (k == 0 && budget - visited >= S) {
      unsigned dead = 0;
      for (unsigned j = 0; j < S; j++)
        dead |= (unsigned)(s_hi(t, K, b, j) != 0) & (unsigned)(age_of(tick, s_ts(t, K, b, j)) > w);
      if (!dead) {
        i += S;
        visited += S;
        continue;
      }
    }
    visited++;
    if (s_hi(t, K, b, k) && age_of(tick, s_ts(t, K, b, k)) > w) {
      tab_delete(t, K, b, k);
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
  uint64_t ev_slots = d->ev.nb * EV_SLOTS;
  uint64_t src_slots = d->src.nb * SRC_SLOTS;
  /* one full pass: every slot once, plus one more look after each deletion */
  uint64_t pass = ev_slots + src_slots + d->ev.count + d->src.count;
  if (budget > pass)
    budget = (size_t)pass;
  size_t visited = 0;
  while (visited < budget) {
    /* one cursor over both tables: [0, ev_slots) is ev, then src */
    if (d->cursor < ev_slots) {
      uint64_t i = d->cursor;
      visited += tab_sweep(d, &d->ev, EV, &i, ev_slots, tick, budget - visited);
      d->cursor = i;
    } else {
      uint64_t i = d->cursor - ev_slots;
      visited += tab_sweep(d, &d->src, SRC, &i, src_slots, tick, budget - visited);
      d->cursor = i == src_slots ? 0 : ev_slots + i;
    }
  }
  return visited;
}

void intake_dedup_stats(const intake_dedup_t *d, intake_dedup_stats_t *out) {
  out->entries = d->ev.count;
  out->capacity = d->ev.nb * EV_SLOTS;
  out->sources = d->src.count;
  out->source_capacity = d->src.nb * SRC_SLOTS;
  out->in_flight = d->fl_count;
  out->bytes = sizeof *d + d->ev.bytes + d->src.bytes + (d->fl_mask + 1) * sizeof *d->fl;
  out->evictions = d->evictions;
  out->expired = d->expired;
}

/* ---- export and import (snapshots) -------------------------------------------------------- */

size_t intake_dedup_export_keys(const intake_dedup_t *d, uint64_t now_ms, uint64_t *pos,
                                intake_dedup_key_rec_t *out, size_t max) {
  const tab_t *t = &d->ev;
  uint64_t slots = t->nb * EV_SLOTS, i = *pos < slots ? *pos : slots;
  uint64_t end = slots - i > max ? i + max : slots;
  uint32_t tick = tick_of(now_ms);
  size_t n = 0;
  for (; i < end; i++) {
    uint64_t b = i / EV_SLOTS;
    unsigned k = (unsigned)(i % EV_SLOTS);
    uint64_t hi = s_hi(t, EV, b, k);
    uint32_t ts = s_ts(t, EV, b, k);
    if (hi && age_of(tick, ts) <= d->window_ticks)
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
  size_t n = 0;
  for (; i < end; i++) {
    const src_slot_t *s = srcs(t, i / SRC_SLOTS, (unsigned)(i % SRC_SLOTS));
    if (s->hi && age_of(tick, s->ts) <= d->window_ticks)
      out[n++] = (intake_dedup_source_rec_t){
          .hi = s->hi, .lo = s->lo, .tick = s->ts, .top = s->top, .bits = s->bits};
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
  uint64_t b;
  unsigned i;
  if (!tab_upsert(d, &d->ev, EV, k->hi, k->lo, now, &b, &i, &how))
    return 0; /* NEVER */
  uint32_t *ts = &evb(&d->ev, b)->ts[i];
  if (how == UP_FRESH || age_of((uint32_t)tick, *ts) > 0)
    *ts = (uint32_t)tick;
  return 1;
}

int intake_dedup_import_source(intake_dedup_t *d, const intake_dedup_source_rec_t *r,
                               uint64_t now_ms) {
  uint32_t now = tick_of(now_ms);
  int64_t tick = import_tick(d, r->tick, now);
  if (!r->hi || tick < 0)
    return 0;
  up_t how;
  uint64_t b;
  unsigned i;
  if (!tab_upsert(d, &d->src, SRC, r->hi, r->lo, now, &b, &i, &how))
    return 0; /* NEVER */
  src_slot_t *s = srcs(&d->src, b, i);
  if (how == UP_FRESH || age_of((uint32_t)tick, s->ts) > 0) {
    s->ts = (uint32_t)tick;
    s->top = r->top;
    s->bits = r->bits;
  }
  return 1;
}

/* Test hook, not in the header: checks every table invariant. Returns 0 or a negative line. */
int intake_dedup__verify(const intake_dedup_t *d);
static int tab_verify(const tab_t *t, int K) {
  uint64_t count = 0;
  for (uint64_t b = 0; b < t->nb; b++)
    for (unsigned i = 0; i < slots_of(K); i++) {
      uint64_t hi = s_hi(t, K, b, i);
      if (!hi) {
        if (s_lo(t, K, b, i) || s_ts(t, K, b, i))
          return -__LINE__; /* an empty slot is all zero */
        continue;
      }
      count++;
      /* every bucket from home up to b must be full, so lookups reach the key */
      for (uint64_t h = tab_home(t, hi); h != b; h = tab_next(t, h))
        for (unsigned k = 0; k < slots_of(K); k++)
          if (!s_hi(t, K, h, k))
            return -__LINE__;
      uint64_t fb;
      unsigned fi;
      if (!tab_find(t, K, hi, s_lo(t, K, b, i), &fb, &fi) || fb != b || fi != i)
        return -__LINE__;
    }
  if (t->bytes != t->nb * bucket_bytes(K))
    return -__LINE__;
  return count == t->count ? 0 : -__LINE__;
}
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
