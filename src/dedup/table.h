/* Private to src/dedup: the bucketed open-addressing tables behind dedup.c, and the age
 * histogram that lets a full table forget its oldest keys first.
 *
 * Two layouts share one implementation: the event-id table ("ev", K = EV) of 64-byte buckets
 * holding 5 slots of 12.8 bytes, and the source table ("src", K = SRC) of 128-byte buckets
 * holding 4 slots of 32 bytes. K is always a constant, so each inlined use compiles to one
 * layout's code. See dedup.c for the scheme (probing, deletion, false-duplicate odds).
 *
 * Forgetting oldest first. Each table has a cut: keys stamped before it are treated as absent
 * (check() does not see them, an insert reuses their slot, the sweep deletes them), like keys
 * older than the window. The cut only moves forward. It moves when the keys younger than the
 * window no longer fit in TARGET_LOAD_PCT of the slots: to the oldest time that leaves at most
 * that many keys stamped after it. It is computed from a histogram of the table's keys by the
 * slice of time they were stamped in (RING slices of 2^shift ticks, about the window / 512
 * each), on every sweep call and whenever inserts have added 1/128 of the slots since the last
 * computation. The horizon at time now, min(window, now - cut), is exact as a guarantee: every
 * key committed within it is still held, and no key younger than it is forgotten while an older
 * one is kept; between computations it grows as time passes. Only when the sweep falls so far behind that the table
 * reaches MAX_LOAD_PCT with no forgotten key in an insert's run does an insert evict the oldest
 * key of its run ("forced"; counted apart, never seen in the soak). */
#ifndef INTAKE_DEDUP_TABLE_H
#define INTAKE_DEDUP_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TICK_MS 10u
#define EV_SLOTS 5u        /* slots per 64-byte ev bucket */
#define SRC_SLOTS 4u       /* slots per 128-byte src bucket */
#define TAG_MASK 63u       /* key bits 0..5 kept next to the 64-bit fingerprint */
#define MIN_BUCKETS 256u   /* 1280 slots / 16 KiB ev; 1024 slots / 32 KiB src */
/* Live keys the horizon keeps a table at, at most. A miss reads 1.75 buckets at load 0.69 and
 * 2.29 at 0.75 (dedup.c); forgotten keys the sweep has not reached yet add a few percent on
 * top. 72% holds the city's 2.72 M keys in 48 MiB (load 0.69) without shrinking the window. */
#define TARGET_LOAD_PCT 72u
/* Occupied slots (live or forgotten) beyond which an insert evicts instead of taking an empty
 * slot: only reached when the sweep lags far behind the horizon. */
#define MAX_LOAD_PCT 85u
/* While forgotten keys hold more than slots / 32 beyond the target, each insert first sweeps
 * this many slots: a small table at a high rate outruns the daemon's sweep timer (1 MiB at
 * 100,000 keys/s fills 12% of its slots in one 100 ms tick; tests/integration/it_dedup_full.c),
 * and the inserts then keep occupancy near the target themselves. */
#define ASSIST_SLOTS 32u
#define RING 1024u         /* histogram slices; a power of two */
#define RING_SPAN 512u     /* slices the window spans at most: the ring covers 2-4 windows */

enum { EV = 0, SRC = 1 };

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

_Static_assert(sizeof(ev_bucket_t) == 64, "an ev bucket must be one cache line");
_Static_assert(sizeof(src_slot_t) == 32, "src slot must be 32 bytes");
_Static_assert(sizeof(src_bucket_t) == 128, "a src bucket must be two cache lines");

typedef struct {
  void *mem;            /* nb buckets (ev_bucket_t or src_bucket_t) */
  size_t bytes;         /* the buckets: nb x bucket size */
  size_t map_bytes;     /* the mapping (bytes rounded up to a page) when mapped, else 0 */
  uint64_t nb;          /* buckets */
  uint64_t slots;       /* nb x slots a bucket */
  uint64_t count;       /* occupied slots, live or not yet swept */
  uint64_t max_count;   /* MAX_LOAD_PCT of the slots */
  uint64_t target;      /* TARGET_LOAD_PCT of the slots: live keys the horizon aims at */
  uint64_t deep[3];     /* counts at 50/70/80% load: prefetch one more bucket past each (ev) */
  /* Forgetting oldest first (see the top of this file). */
  int32_t window;       /* the configured window, ticks */
  int has_cut;          /* keys were forgotten before their window: `cut` applies */
  uint32_t cut;         /* keys stamped before this tick are forgotten */
  int32_t horizon;      /* min(window, now - cut) at the last computation, for the stats */
  uint64_t recheck_at;  /* an insert that brings count here recomputes the cut */
  uint64_t assist_at;   /* above this count, each insert first sweeps ASSIST_SLOTS slots */
  uint64_t assist;      /* where the inserts' sweeping continues (a slot index) */
  int hold;             /* no deletions (a snapshot is exporting): inserts do not sweep */
  uint32_t head;        /* newest tick stamped (the histogram's present) */
  int head_set;         /* head is a stamp (until the first, ages from 0 mean nothing) */
  unsigned shift;       /* a slice is 2^shift ticks */
  uint64_t retired;     /* keys stamped in slices older than the ring */
  uint32_t ring[RING];  /* keys per slice: slice s at ring[s % RING] */
  uint32_t first[RING]; /* the oldest stamp added to the slice since it was last empty */
  /* Counters. */
  uint64_t commits;     /* keys stamped new (inserts, not refreshes) */
  uint64_t evictions;   /* keys forgotten before their window: horizon, or forced */
  uint64_t forced;      /* of which a live key evicted by a full run */
  uint64_t expired;     /* keys dropped or reused after their window */
} tab_t;

/* ---- time ------------------------------------------------------------------------------- */

static inline uint32_t tick_of(uint64_t now_ms) { return (uint32_t)(now_ms / TICK_MS); }

/* Signed age in ticks; negative when the clock went backwards since the commit. */
static inline int32_t age_of(uint32_t tick, uint32_t ts) { return (int32_t)(tick - ts); }

/* ---- slot access ------------------------------------------------------------------------ */

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
static inline uint32_t *s_ts_ptr(const tab_t *t, int K, uint64_t b, unsigned i) {
  return K == EV ? &evb(t, b)->ts[i] : &srcs(t, b, i)->ts;
}

/* Home bucket: the high half of fp x buckets (Lemire's range reduction), uniform over any
 * bucket count. */
__extension__ typedef unsigned __int128 u128_t;
static inline uint64_t tab_home(const tab_t *t, uint64_t hi) {
  return (uint64_t)(((u128_t)hi * t->nb) >> 64);
}
static inline uint64_t tab_next(const tab_t *t, uint64_t b) { return b + 1 == t->nb ? 0 : b + 1; }

/* ---- the age histogram ------------------------------------------------------------------- */

/* Slices from ts's slice to the head's, modulo the slice numbers' range. */
static inline uint32_t hist_slice_age(const tab_t *t, uint32_t ts) {
  uint32_t d = (t->head >> t->shift) - (ts >> t->shift);
  return t->shift ? d & (UINT32_MAX >> t->shift) : d;
}
void hist_advance(tab_t *t, uint32_t tick);
/* Counts a key stamped `ts` (the head moves up to it if it is newer). */
static inline void hist_add(tab_t *t, uint32_t ts) {
  if (age_of(ts, t->head) > 0 || !t->head_set)
    hist_advance(t, ts);
  if (hist_slice_age(t, ts) < RING) {
    uint32_t r = (ts >> t->shift) & (RING - 1);
    if (t->ring[r]++ == 0 || age_of(t->first[r], ts) > 0)
      t->first[r] = ts;
  } else {
    t->retired++;
  }
}
/* Uncounts a key stamped `ts`. */
static inline void hist_del(tab_t *t, uint32_t ts) {
  if (hist_slice_age(t, ts) < RING)
    t->ring[(ts >> t->shift) & (RING - 1)]--;
  else
    t->retired--;
}
/* The age (ticks) beyond which a key is forgotten at `now`: the window, or less past the cut. */
static inline int32_t tab_horizon(const tab_t *t, uint32_t now) {
  int32_t h = t->window;
  if (t->has_cut) {
    int32_t a = age_of(now, t->cut);
    if (a < h)
      h = a < 0 ? 0 : a;
  }
  return h;
}
/* Restamps slot (b, i) with tick `ts`. */
static inline void s_stamp(tab_t *t, int K, uint64_t b, unsigned i, uint32_t ts) {
  uint32_t *p = s_ts_ptr(t, K, b, i);
  hist_del(t, *p);
  *p = ts;
  hist_add(t, ts);
}

/* ---- table operations (table.c) ----------------------------------------------------------- */

/* Sizes the table to every whole bucket `budget` pays for; window in ticks. 0 or -errno. */
int tab_init(tab_t *t, int K, uint64_t budget, int32_t window);
void tab_dispose(tab_t *t);
/* A new window (ticks) from `now` on. A wider one is reached as time passes: keys older than
 * the old window may already be swept, so they are cut. The histogram is rebuilt with wider
 * slices if the ring no longer covers twice the window. */
void tab_set_window(tab_t *t, int K, int32_t window, uint32_t now);
/* Moves the cut forward as far as the target load needs, at `now`, from the histogram. */
void tab_horizon_update(tab_t *t, uint32_t now);

/* Finds (hi, lo), live or not: 1 with its bucket and slot, or 0. Inlined: the hot path. (A
 * branch-free compare of the slots measured slower with 16-byte slots: 16 -> 23 ns a check
 * after prefetch, 64 -> 100 without. The branches are predictable, and predicting them lets
 * the next checks of a batch issue their loads.) The tag is read only when the 64 bits match. */
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
  UP_LIVE,    /* the key was there, within the horizon: the caller may restamp it */
  UP_FRESH    /* the slot now holds the key as new, stamped `tick`: caller sets the payload */
} up_t;

/* Finds (hi, lo) at time `now` or makes room for it in its run: a forgotten slot of the run
 * (past the horizon) if any, else an empty slot while under MAX_LOAD_PCT, else (forced) the
 * oldest key of the run. A fresh slot gets the key, stamp `stamp` (now, or an imported key's
 * own tick) and payload 0. Returns 1 with the slot, or 0: NEVER (a table with no empty slot). */
int tab_upsert(tab_t *t, int K, uint64_t hi, uint32_t lo, uint32_t now, uint32_t stamp,
               uint64_t *ob, unsigned *oi, up_t *how);

/* Sweeps slots [*idx, end) (slot i is slot i % slots of bucket i / slots), deleting keys past
 * the horizon, at most `budget` visits; returns visits. */
size_t tab_sweep(tab_t *t, int K, uint64_t *idx, uint64_t end, uint32_t tick, size_t budget);

/* Checks every invariant, the histogram's sums included. 0 or a negative line. */
int tab_verify(const tab_t *t, int K);

#endif
