/* The dedup tables: sizing, insertion that forgets oldest first, deletion, the sweep and the
 * horizon (table.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE, MADV_POPULATE_WRITE */
#endif
#include "dedup/table.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it: pages are touched instead */
#endif

#define HUGE_BYTES (2u << 20) /* tables this big are mmap'ed on 2 MiB pages */
#define PAGE_BYTES 4096u

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
/* Moves slot (fb, fi) to the empty slot (tb, ti) and empties it; its stamp goes with it, so
 * the histogram does not change. */
static inline void s_move(tab_t *t, int K, uint64_t tb, unsigned ti, uint64_t fb, unsigned fi) {
  if (K == EV) {
    s_set_key(t, K, tb, ti, evb(t, fb)->fp[fi], s_lo(t, K, fb, fi));
    evb(t, tb)->ts[ti] = evb(t, fb)->ts[fi];
  } else {
    *srcs(t, tb, ti) = *srcs(t, fb, fi);
  }
  s_clear(t, K, fb, fi);
}
/* Buckets from `from` forward to `to`, wrapping. */
static inline uint64_t tab_dist(const tab_t *t, uint64_t from, uint64_t to) {
  return to >= from ? to - from : to + t->nb - from;
}

/* Counts a key that leaves before its window ends as an eviction, after it as expired. */
static inline void count_forgotten(tab_t *t, int32_t age) {
  if (age > t->window)
    t->expired++;
  else
    t->evictions++;
}

/* ---- the histogram and the horizon ---------------------------------------------------------- */

/* The narrowest slices with which RING_SPAN slices cover the window. */
static unsigned shift_for(int32_t window) {
  unsigned s = 0;
  while ((((uint64_t)window + (1u << s) - 1) >> s) > RING_SPAN)
    s++;
  return s;
}

/* Moves the present to `tick` (newer than head): the slices that fall out of the ring are
 * added to `retired`, and their ring entries start over for the new slices that reuse them. */
void hist_advance(tab_t *t, uint32_t tick) {
  if (!t->head_set) {
    t->head = tick;
    t->head_set = 1;
    return;
  }
  uint32_t from = t->head >> t->shift, to = tick >> t->shift;
  uint32_t steps = to - from;
  if (t->shift)
    steps &= UINT32_MAX >> t->shift;
  t->head = tick;
  if (steps >= RING)
    steps = RING;
  for (uint32_t k = 1; k <= steps; k++) {
    uint32_t *c = &t->ring[(from + k) & (RING - 1)];
    t->retired += *c;
    *c = 0;
  }
}

static void hist_rebuild(tab_t *t, int K) {
  memset(t->ring, 0, sizeof t->ring);
  t->retired = 0;
  for (uint64_t b = 0; b < t->nb; b++)
    for (unsigned i = 0; i < slots_of(K); i++)
      if (s_hi(t, K, b, i))
        hist_add(t, s_ts(t, K, b, i));
}

void tab_horizon_update(tab_t *t, uint32_t now) {
  if (age_of(now, t->head) > 0 || !t->head_set)
    hist_advance(t, now);
  /* Walk the slices from the newest back across the window; the first slice that would take
   * the keys kept past the target is cut, with everything older. */
  uint32_t head_slice = t->head >> t->shift;
  uint64_t span = ((uint64_t)t->window >> t->shift) + 1, kept = 0;
  for (uint64_t sa = 0; sa <= span && sa < RING; sa++) {
    uint32_t c = t->ring[(head_slice - (uint32_t)sa) & (RING - 1)];
    if (kept + c > t->target) {
      /* Keep the newest target - kept keys of this slice, as if its keys were spread evenly
       * over the ticks they can have: from the oldest stamp it was given (or the cut, if later)
       * to its end (the head slice's: the newest stamp). A slice is window / 512, so a window
       * shrunk to a few slices (a storm) is still cut finely. The guarantee does not depend on
       * this estimate, only how close to the target the table stays; a later computation moves
       * the cut further if it kept too many. */
      uint32_t r = (head_slice - (uint32_t)sa) & (RING - 1);
      uint32_t lo = (head_slice - (uint32_t)sa) << t->shift;
      uint32_t end = sa == 0 ? t->head + 1 : lo + (1u << t->shift);
      if (age_of(t->first[r], lo) > 0 && age_of(end, t->first[r]) > 0)
        lo = t->first[r];
      if (t->has_cut && age_of(t->cut, lo) > 0 && age_of(end, t->cut) > 0)
        lo = t->cut;
      uint32_t width = end - lo;
      uint32_t cut = end - (uint32_t)((uint64_t)width * (t->target - kept) / c);
      if (!t->has_cut || age_of(cut, t->cut) > 0)
        t->cut = cut;
      t->has_cut = 1;
      break;
    }
    kept += c;
  }
  t->horizon = tab_horizon(t, now);
  t->recheck_at = t->count + (t->slots / 128 ? t->slots / 128 : 1);
}

void tab_set_window(tab_t *t, int K, int32_t window, uint32_t now) {
  if (window > t->window) {
    uint32_t cut = now - (uint32_t)tab_horizon(t, now);
    if (!t->has_cut || age_of(cut, t->cut) > 0)
      t->cut = cut;
    t->has_cut = 1;
  }
  t->window = window;
  unsigned s = shift_for(window);
  if (s > t->shift) {
    /* the ring no longer spans the window: wider slices, counted again from the table (a full
     * scan, ~1 ns a slot; only when a reload widens the window past what the ring covers) */
    t->shift = s;
    hist_rebuild(t, K);
  }
  t->horizon = tab_horizon(t, now);
}

/* ---- sizing ----------------------------------------------------------------------------------- */

/* Makes the first writes to a mapped table cost nothing on the loop thread: the kernel
 * allocates (huge) pages and clears them now, at create. MADV_POPULATE_WRITE does it in one
 * call; a kernel without it gets one write per 4 KiB page. */
static void tab_populate(unsigned char *mem, size_t len) {
  if (madvise(mem, len, MADV_POPULATE_WRITE) == 0)
    return;
  for (size_t off = 0; off < len; off += PAGE_BYTES)
    ((volatile unsigned char *)mem)[off] = 0;
}

int tab_init(tab_t *t, int K, uint64_t budget, int32_t window) {
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
  t->slots = slots;
  t->max_count = slots / 100 * MAX_LOAD_PCT + slots % 100 * MAX_LOAD_PCT / 100;
  t->target = slots / 100 * TARGET_LOAD_PCT + slots % 100 * TARGET_LOAD_PCT / 100;
  t->deep[0] = slots / 2;
  t->deep[1] = slots / 10 * 7;
  t->deep[2] = slots / 10 * 8;
  t->window = window;
  t->horizon = window;
  t->shift = shift_for(window);
  t->recheck_at = t->target;
  t->assist_at = t->target + slots / 32;
  return 0;
}

void tab_dispose(tab_t *t) {
  if (!t->mem)
    return;
  if (t->map_bytes)
    munmap(t->mem, t->map_bytes);
  else
    free(t->mem);
  t->mem = NULL;
}

/* ---- insertion and deletion ------------------------------------------------------------------ */

/* The generic bodies are instantiated per layout (K constant) by the exported dispatchers below:
 * the commit path gets each layout's own code, as when all of this was static in dedup.c. */
#define INSTANTIATE static inline __attribute__((always_inline))

INSTANTIATE size_t sweep_k(tab_t *t, int K, uint64_t *idx, uint64_t end, uint32_t tick,
                           size_t budget);

INSTANTIATE int upsert_k(tab_t *t, int K, uint64_t hi, uint32_t lo, uint32_t now, uint32_t stamp,
                         uint64_t *ob, unsigned *oi, up_t *how) {
  if (t->count >= t->recheck_at)
    tab_horizon_update(t, now);
  if (t->count >= t->assist_at && !t->hold) {
    /* before the run is read: deletions shift keys, possibly within it */
    if (t->assist >= t->slots)
      t->assist = 0;
    sweep_k(t, K, &t->assist, t->slots, now, ASSIST_SLOTS);
  }
  int32_t h = tab_horizon(t, now);
  uint32_t want = lo_key(K, lo);
  int empty = 0, stale = 0, oldest = 0;
  uint64_t eb = 0, sb = 0, obk = 0;
  unsigned ei = 0, si = 0, oik = 0;
  int32_t oldest_age = INT32_MIN, stale_age = 0;
  uint64_t b = tab_home(t, hi);
  for (uint64_t n = 0; n < t->nb; n++, b = tab_next(t, b)) {
    for (unsigned i = 0; i < slots_of(K); i++) {
      uint64_t k = s_hi(t, K, b, i);
      if (k == 0) {
        if (!empty)
          empty = 1, eb = b, ei = i;
        continue;
      }
      int32_t age = age_of(now, s_ts(t, K, b, i));
      if (k == hi && s_lo(t, K, b, i) == want) {
        *ob = b;
        *oi = i;
        if (age <= h) {
          *how = UP_LIVE;
          return 1;
        }
        /* the old instance was forgotten; this one starts again in place */
        count_forgotten(t, age);
        hist_del(t, s_ts(t, K, b, i));
        s_set_key(t, K, b, i, hi, lo);
        *s_ts_ptr(t, K, b, i) = stamp;
        hist_add(t, stamp);
        t->commits++;
        *how = UP_FRESH;
        return 1;
      }
      if (age > h) {
        if (!stale)
          stale = 1, sb = b, si = i, stale_age = age;
      } else if (age > oldest_age) {
        oldest_age = age;
        oldest = 1, obk = b, oik = i;
      }
    }
    if (empty)
      break;
  }
  if (stale) {
    count_forgotten(t, stale_age);
    hist_del(t, s_ts(t, K, sb, si));
    *ob = sb, *oi = si;
  } else if (empty && (t->count < t->max_count || !oldest)) {
    /* Over the limit with no key in the run (its home bucket is empty): take the slot anyway.
     * Such a bucket can only gain one key this way, so the table never fills up. */
    t->count++;
    *ob = eb, *oi = ei;
  } else if (oldest) {
    t->evictions++;
    t->forced++;
    hist_del(t, s_ts(t, K, obk, oik));
    *ob = obk, *oi = oik;
  } else {
    return 0; /* NEVER: a table with no empty slot */
  }
  s_set_key(t, K, *ob, *oi, hi, lo);
  *s_ts_ptr(t, K, *ob, *oi) = stamp;
  hist_add(t, stamp);
  t->commits++;
  *how = UP_FRESH;
  return 1;
}

/* Empties slot i of bucket b and closes the gap: a later key of the same run whose home is at
 * or before the hole moves into it, and so on until a bucket that had room. */
INSTANTIATE void tab_delete(tab_t *t, int K, uint64_t b, unsigned i) {
  uint64_t hole_b = b;
  unsigned hole_i = i;
  hist_del(t, s_ts(t, K, b, i));
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

/* Whole buckets with nothing forgotten are passed with one branch: occupancy is random, and a
 * branch per slot on it mispredicted half the time (2.3 ns a slot; memory alone allows ~0.7). */
int tab_upsert(tab_t *t, int K, uint64_t hi, uint32_t lo, uint32_t now, uint32_t stamp,
               uint64_t *ob, unsigned *oi, up_t *how) {
  return K == EV ? upsert_k(t, EV, hi, lo, now, stamp, ob, oi, how)
                 : upsert_k(t, SRC, hi, lo, now, stamp, ob, oi, how);
}

INSTANTIATE size_t sweep_k(tab_t *t, int K, uint64_t *idx, uint64_t end, uint32_t tick,
                           size_t budget) {
  int32_t h = tab_horizon(t, tick);
  const unsigned S = slots_of(K);
  uint64_t i = *idx;
  size_t visited = 0;
  while (visited < budget && i < end) {
    uint64_t b = i / S;
    unsigned k = (unsigned)(i % S);
    if (k == 0 && budget - visited >= S) {
      unsigned dead = 0;
      for (unsigned j = 0; j < S; j++)
        dead |= (unsigned)(s_hi(t, K, b, j) != 0) & (unsigned)(age_of(tick, s_ts(t, K, b, j)) > h);
      if (!dead) {
        i += S;
        visited += S;
        continue;
      }
    }
    visited++;
    int32_t age = age_of(tick, s_ts(t, K, b, k));
    if (s_hi(t, K, b, k) && age > h) {
      count_forgotten(t, age);
      tab_delete(t, K, b, k);
      continue; /* the backward shift may have moved another key here: look again */
    }
    i++;
  }
  *idx = i;
  return visited;
}

size_t tab_sweep(tab_t *t, int K, uint64_t *idx, uint64_t end, uint32_t tick, size_t budget) {
  return K == EV ? sweep_k(t, EV, idx, end, tick, budget) : sweep_k(t, SRC, idx, end, tick, budget);
}

int tab_verify(const tab_t *t, int K) {
  uint64_t count = 0;
  uint64_t ring[RING] = {0}, retired = 0;
  for (uint64_t b = 0; b < t->nb; b++)
    for (unsigned i = 0; i < slots_of(K); i++) {
      uint64_t hi = s_hi(t, K, b, i);
      if (!hi) {
        if (s_lo(t, K, b, i) || s_ts(t, K, b, i))
          return -__LINE__; /* an empty slot is all zero */
        continue;
      }
      count++;
      uint32_t ts = s_ts(t, K, b, i);
      if (hist_slice_age(t, ts) < RING)
        ring[(ts >> t->shift) & (RING - 1)]++;
      else
        retired++;
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
  for (unsigned r = 0; r < RING; r++)
    if (ring[r] != t->ring[r])
      return -__LINE__; /* the histogram counts every key by its slice */
  if (retired != t->retired)
    return -__LINE__;
  if (t->horizon < 0 || t->horizon > t->window)
    return -__LINE__;
  return count == t->count ? 0 : -__LINE__;
}
