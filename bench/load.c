#include "load.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "client/gwclient.h"
#include "ingest/frame.h"
#include "kio.h"

#define PREFIX_ROOM 16          /* room before a slot's events for the Batch.seq field */
#define OLD_SLOTS 32            /* batches kept for late retransmissions, one a second */
#define LATE_MIN_NS 5000000000ll
#define STALL_NS 60000000000ll  /* an ack this late: the connection is declared dead */
#define DRAIN_NS 90000000000ll  /* after the run, wait this long for the last acks */
#define STORM_LIFE_MS 30000     /* a storming camera calms down after about this long */
#define ZSTD_LEVEL 1            /* gateways compress fast */

/* A batch's events, kept for retransmission: Batch field-2 entries after PREFIX_ROOM bytes. */
typedef struct {
  uint8_t *buf;
  size_t len, cap;            /* bytes of events (after PREFIX_ROOM), allocated */
  uint32_t n;                 /* events */
  uint64_t *refs;             /* their ledger refs */
  uint32_t busy;              /* flights and queued retransmissions using it */
  int used;
  int64_t made_ns;
} slot_t;

enum { K_FRESH, K_COPY, K_LATE, K_RESEND };

typedef struct {
  uint64_t seq;               /* Batch.seq */
  uint32_t batch_no;          /* this copy's place in the send order */
  int64_t send_ns;
  slot_t *slot;
} flight_t;

typedef struct {
  slot_t *slot;
  int kind;
} queued_t;

typedef struct {
  uint32_t src;
  int64_t due_ms;
  int64_t until_ms;           /* calms down then: another camera takes its place */
  uint64_t ref;               /* its current alarm */
  const char *type;
  uint32_t type_len, severity;
  uint16_t len;
  uint8_t bytes[CITY_EVENT_MAX];
} storm_t;

typedef struct {
  uint32_t src;
  int64_t due_ms;
  int started, clear;
  const char *type;
  uint32_t type_len, severity;
} flap_t;

typedef struct gw {
  const load_opts_t *o;
  unsigned id, n;
  ledger_t *ledger;
  city_rng_t rng;
  intake_client_t *cli;
  unsigned window, batch;
  uint64_t next_seq;
  uint32_t batch_no;
  slot_t *ring;
  unsigned n_ring, ring_pos;
  slot_t *last_fresh;
  slot_t old[OLD_SLOTS];
  unsigned old_pos;
  int64_t old_next_ns;
  flight_t *fl;
  unsigned n_fl;
  queued_t *q;
  unsigned q_head, q_len, q_cap;
  storm_t *storms;
  unsigned n_storms, storm_head;
  unsigned *relays;           /* storms whose current alarm is relayed in the next batch */
  unsigned n_relays;
  flap_t *flaps;
  unsigned n_flaps, flap_head;
  uint32_t n_owned;           /* sources s = id + k * n, k < n_owned */
  uint32_t n_owned_cams;
  ZSTD_CCtx *zc;
  uint8_t *zbuf;
  size_t zcap;
  int64_t t0_ns, t_end_ns, gen_end_ns, last_ack_ns;
  int64_t next_send_ns, interval_ns, next_drop_ns;
  uint64_t quota;
  char gw_id[32];
  load_counters_t c;
  hist_t lat;
  load_second_t *secs;
  unsigned n_secs, max_sec;
  char error[256];
} gw_t;

static uint32_t *cam_seq;     /* next Event.seq per camera; a camera is owned by one thread */

/* Every thread warms its connection up (one batch, acked), then all start together at t0. */
static pthread_barrier_t start_barrier;
static _Atomic int64_t start_t0;

/* ---- slots and the retransmission queue -------------------------------------------------- */

static void slot_reserve(slot_t *s, size_t more) {
  if (s->len + more <= s->cap)
    return;
  size_t cap = s->cap ? s->cap : 65536;
  while (cap < s->len + more)
    cap *= 2;
  uint8_t *b = realloc(s->buf, PREFIX_ROOM + cap);
  if (!b) {
    fprintf(stderr, "intake-bench: out of memory\n");
    exit(1);
  }
  s->buf = b;
  s->cap = cap;
}

static void slot_add(slot_t *s, uint64_t ref, const uint8_t *ev, size_t len) {
  slot_reserve(s, len + 3);
  uint8_t *p = s->buf + PREFIX_ROOM + s->len;
  *p++ = 2 << 3 | 2; /* Batch.events */
  size_t v = len;
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  memcpy(p, ev, len);
  s->len = (size_t)(p + len - (s->buf + PREFIX_ROOM));
  s->refs[s->n++] = ref;
}

static void slot_copy(slot_t *dst, const slot_t *src, unsigned batch) {
  dst->len = 0;
  dst->n = 0;
  slot_reserve(dst, src->len);
  memcpy(dst->buf + PREFIX_ROOM, src->buf + PREFIX_ROOM, src->len);
  dst->len = src->len;
  memcpy(dst->refs, src->refs, src->n * sizeof *src->refs);
  dst->n = src->n;
  dst->used = 1;
  dst->made_ns = src->made_ns;
  (void)batch;
}

static void q_push(gw_t *g, slot_t *s, int kind) {
  if (g->q_len == g->q_cap) {
    unsigned cap = g->q_cap ? g->q_cap * 2 : 64;
    queued_t *q = malloc(cap * sizeof *q);
    if (!q) {
      fprintf(stderr, "intake-bench: out of memory\n");
      exit(1);
    }
    for (unsigned i = 0; i < g->q_len; i++)
      q[i] = g->q[(g->q_head + i) % g->q_cap];
    free(g->q);
    g->q = q;
    g->q_head = 0;
    g->q_cap = cap;
  }
  g->q[(g->q_head + g->q_len) % g->q_cap] = (queued_t){s, kind};
  g->q_len++;
  s->busy++;
}

static queued_t q_pop(gw_t *g) {
  queued_t x = g->q[g->q_head];
  g->q_head = (g->q_head + 1) % g->q_cap;
  g->q_len--;
  return x;
}

/* The next ring slot nobody uses. */
static slot_t *slot_next(gw_t *g) {
  for (unsigned k = 0; k < g->n_ring; k++) {
    slot_t *s = &g->ring[g->ring_pos];
    g->ring_pos = (g->ring_pos + 1) % g->n_ring;
    if (!s->busy) {
      s->len = 0;
      s->n = 0;
      s->used = 1;
      return s;
    }
  }
  fprintf(stderr, "intake-bench: gateway %u: every batch slot busy\n", g->id);
  exit(1);
}

/* ---- making events ---------------------------------------------------------------------- */

static uint32_t owned_source(gw_t *g, uint32_t k) { return g->id + k * g->n; }

static uint32_t random_source(gw_t *g) { return owned_source(g, city_below(&g->rng, g->n_owned)); }

static uint32_t random_camera(gw_t *g) {
  /* owned cameras are the owned indexes k with id + k*n >= CITY_SENSORS */
  uint32_t first = (CITY_SENSORS - g->id + g->n - 1) / g->n;
  return owned_source(g, first + city_below(&g->rng, g->n_owned_cams));
}

static uint32_t random_sensor(gw_t *g) {
  uint32_t sensors = g->n_owned - g->n_owned_cams;
  return owned_source(g, city_below(&g->rng, sensors));
}

static uint64_t next_cam_seq(uint32_t src) { return cam_seq[src - CITY_SENSORS]++; }

/* Registers an encoded fresh event in the ledger and the batch. */
static void add_fresh(gw_t *g, slot_t *s, uint64_t ref, const city_event_t *e,
                      const uint8_t *bytes, size_t len, uint8_t flags) {
  ledger_entry_t *le = ledger_at(g->ledger, ref & ((1ull << LEDGER_THREAD_SHIFT) - 1));
  le->hash = XXH3_64bits(bytes, len);
  le->src = e ? e->src : 0;
  le->topics = e ? (uint8_t)city_route(e) : 0;
  le->flags = flags;
  slot_add(s, ref, bytes, len);
  g->c.events_made++;
}

static void make_normal(gw_t *g, slot_t *s, int64_t wall_ms, uint8_t *buf) {
  city_event_t e;
  uint32_t src = random_source(g);
  uint64_t ref = ledger_add(g->ledger);
  city_event(&e, &g->rng, src, ref, city_is_camera(src) ? next_cam_seq(src) : 0, wall_ms, -1);
  size_t len = city_encode(&e, buf);
  add_fresh(g, s, ref, &e, buf, len, 0);
}

static void make_invalid(gw_t *g, slot_t *s, int64_t wall_ms, uint8_t *buf) {
  uint32_t src = random_source(g);
  uint64_t ref = ledger_add(g->ledger);
  size_t len = city_invalid((int)city_below(&g->rng, CITY_BAD_COUNT), &g->rng, src, ref, wall_ms,
                            buf);
  add_fresh(g, s, ref, NULL, buf, len, LEDGER_F_INVALID);
  ledger_at(g->ledger, ref & ((1ull << LEDGER_THREAD_SHIFT) - 1))->src = src;
  g->c.invalid_made++;
}

/* A camera reusing one of its last few sequence numbers under a new event id (rebooted and
 * renumbering, or registered twice): exact dedup by (source, seq) answers DUPLICATE. */
static void make_seq_repeat(gw_t *g, slot_t *s, int64_t wall_ms, uint8_t *buf) {
  uint32_t src = random_camera(g);
  uint32_t next = cam_seq[src - CITY_SENSORS];
  if (next < 3) {
    make_normal(g, s, wall_ms, buf);
    return;
  }
  uint64_t seq = next - 1 - city_below(&g->rng, next - 2 < 8 ? next - 2 : 8);
  city_event_t e;
  uint64_t ref = ledger_add(g->ledger);
  city_event(&e, &g->rng, src, ref, seq, wall_ms, -1);
  size_t len = city_encode(&e, buf);
  add_fresh(g, s, ref, &e, buf, len, LEDGER_F_SEQ_CONFLICT);
  g->c.seq_repeats++;
}

static void storm_event(gw_t *g, slot_t *s, storm_t *st, int64_t wall_ms, int64_t mono_ms,
                        uint8_t *buf) {
  city_event_t e;
  uint64_t ref = ledger_add(g->ledger);
  if (!st->type || mono_ms >= st->until_ms) {
    st->src = random_camera(g);
    st->until_ms = mono_ms + STORM_LIFE_MS / 2 + city_below(&g->rng, STORM_LIFE_MS);
    city_event(&e, &g->rng, st->src, ref, next_cam_seq(st->src), wall_ms, -1);
  } else {
    city_event_t prev;
    prev.src = st->src;
    prev.type = st->type;
    prev.type_len = st->type_len;
    prev.severity = st->severity;
    city_event_repeat(&e, &prev, &g->rng, ref, next_cam_seq(st->src), wall_ms);
  }
  size_t len = city_encode(&e, buf);
  add_fresh(g, s, ref, &e, buf, len, 0);
  st->ref = ref;
  st->type = e.type;
  st->type_len = e.type_len;
  st->severity = e.severity;
  st->len = (uint16_t)len;
  memcpy(st->bytes, buf, len);
  g->c.storm_repeats++;
  if (city_chance(&g->rng, g->o->storm_relay))
    g->relays[g->n_relays++] = (unsigned)(st - g->storms);
}

static void flap_event(gw_t *g, slot_t *s, flap_t *f, int64_t wall_ms, uint8_t *buf) {
  city_event_t e;
  uint64_t ref = ledger_add(g->ledger);
  if (!f->started) {
    city_event(&e, &g->rng, f->src, ref, 0, wall_ms, 0);
    f->started = 1;
    f->clear = 0;
    f->type = e.type;
    f->type_len = e.type_len;
    f->severity = e.severity;
  } else {
    city_event_t prev;
    prev.src = f->src;
    prev.type = f->type;
    prev.type_len = f->type_len;
    prev.severity = f->severity;
    city_event_repeat(&e, &prev, &g->rng, ref, 0, wall_ms);
    f->clear = !f->clear;
    e.clear = f->clear;
  }
  size_t len = city_encode(&e, buf);
  add_fresh(g, s, ref, &e, buf, len, 0);
  g->c.flap_events++;
}

/* Fills a fresh batch: relayed copies first, then due storm repeats and flaps (each kind at
 * most a quarter of the batch; the rest wait for the next one), then the city's background. */
static slot_t *build_fresh(gw_t *g, int64_t now_ns) {
  slot_t *s = slot_next(g);
  int64_t wall = kio_wall_ms(), mono_ms = now_ns / 1000000;
  uint8_t buf[CITY_EVENT_MAX];
  unsigned quarter = g->batch / 4 ? g->batch / 4 : 1;
  unsigned k = 0;
  for (; k < g->n_relays && s->n < quarter; k++) {
    storm_t *st = &g->storms[g->relays[k]];
    slot_add(s, st->ref, st->bytes, st->len);
    g->c.storm_relays++;
  }
  memmove(g->relays, g->relays + k, (g->n_relays - k) * sizeof *g->relays);
  g->n_relays -= k;
  for (unsigned m = 0; g->n_storms && m < quarter && s->n < g->batch; m++) {
    storm_t *st = &g->storms[g->storm_head];
    if (st->due_ms > mono_ms || g->n_relays >= g->n_storms)
      break;
    storm_event(g, s, st, wall, mono_ms, buf);
    st->due_ms += g->o->storm_period_ms;
    if (st->due_ms < mono_ms) /* fell behind (flat out is slower than the period): catch up */
      st->due_ms = mono_ms + g->o->storm_period_ms;
    g->storm_head = (g->storm_head + 1) % g->n_storms;
  }
  for (unsigned m = 0; g->n_flaps && m < quarter && s->n < g->batch; m++) {
    flap_t *f = &g->flaps[g->flap_head];
    if (f->due_ms > mono_ms)
      break;
    flap_event(g, s, f, wall, buf);
    f->due_ms += g->o->flap_period_ms;
    if (f->due_ms < mono_ms)
      f->due_ms = mono_ms + g->o->flap_period_ms;
    g->flap_head = (g->flap_head + 1) % g->n_flaps;
  }
  while (s->n < g->batch && (!g->quota || g->c.events_made < g->quota)) {
    if (city_chance(&g->rng, g->o->invalid))
      make_invalid(g, s, wall, buf);
    else if (g->n_owned_cams && city_chance(&g->rng, g->o->seq_repeat))
      make_seq_repeat(g, s, wall, buf);
    else
      make_normal(g, s, wall, buf);
  }
  s->made_ns = now_ns;
  return s;
}

/* The warm-up batch: ordinary events and one invalid one, so that intaked's producer has its
 * idempotence PID and every topic's metadata before the clock starts. */
static slot_t *build_warm(gw_t *g, int64_t now_ns) {
  slot_t *s = slot_next(g);
  int64_t wall = kio_wall_ms();
  uint8_t buf[CITY_EVENT_MAX];
  make_invalid(g, s, wall, buf);
  while (s->n < g->batch)
    make_normal(g, s, wall, buf);
  s->made_ns = now_ns;
  return s;
}

/* ---- the connection --------------------------------------------------------------------- */

static void set_error(gw_t *g, const char *fmt, const char *what, int err) {
  if (!g->error[0])
    snprintf(g->error, sizeof g->error, fmt, g->id, what, err < 0 ? strerror(-err) : "");
}

/* A gateway connection to intaked, over TLS when the options ask for it. */
static int load_connect(const load_opts_t *o, intake_client_t **c) {
  if (!o->tls_ca)
    return intake_client_connect(o->host, o->port, 5000, c);
  intake_client_tls_t tls = {.ca_file = o->tls_ca, .cert_file = o->tls_cert, .key_file = o->tls_key};
  return intake_client_connect_tls(o->host, o->port, 5000, &tls, c);
}

static int connect_gw(gw_t *g, int64_t deadline_ns) {
  int err = -ETIMEDOUT;
  for (unsigned attempt = 0; kio_mono_ns() < deadline_ns; attempt++) {
    intake_client_t *c;
    intake_client_msg_t m;
    if ((err = load_connect(g->o, &c)) == 0) {
      err = intake_client_hello(c, g->gw_id, "", 10000, &m);
      if (err == 0) {
        unsigned w = m.welcome->max_in_flight, b = m.welcome->max_batch_events;
        intake_client_msg_free(&m);
        if (!g->window)
          g->window = g->o->window && g->o->window < w ? g->o->window : w;
        if (!g->batch)
          g->batch = g->o->batch < b ? g->o->batch : b;
        g->cli = c;
        return 0;
      }
      intake_client_msg_free(&m);
      intake_client_close(c);
    }
    struct timespec ts = {0, (attempt < 10 ? 50 + 50 * (long)attempt : 500) * 1000000L};
    nanosleep(&ts, NULL);
  }
  return err;
}

static load_second_t *second(gw_t *g, int64_t now_ns) {
  int64_t sec = (now_ns - g->t0_ns) / 1000000000;
  if (sec < 0)
    sec = 0;
  if (sec >= (int64_t)g->n_secs)
    sec = g->n_secs - 1;
  if ((unsigned)sec + 1 > g->max_sec)
    g->max_sec = (unsigned)sec + 1;
  return &g->secs[sec];
}

/* Sends the slot's events as a new BATCH (a new seq and place in the send order). Returns 0,
 * or a gwclient error: the connection is broken (the copy is then counted lost). */
static int send_slot(gw_t *g, slot_t *s, int kind) {
  uint64_t seq = ++g->next_seq;
  uint32_t batch_no = ++g->batch_no;
  uint8_t *payload;
  size_t len;
  uint8_t hdr[12];
  size_t hl = 0;
  hdr[hl++] = 1 << 3; /* Batch.seq */
  for (uint64_t v = seq; ; v >>= 7) {
    hdr[hl++] = (uint8_t)(v >= 0x80 ? (v & 0x7f) | 0x80 : v);
    if (v < 0x80)
      break;
  }
  if (city_chance(&g->rng, g->o->zstd)) {
    /* Batch{seq, events_zstd: zstd(Batch{events})}; ZSTD_compressCCtx records the size */
    size_t bound = ZSTD_compressBound(s->len) + 32;
    if (bound > g->zcap) {
      free(g->zbuf);
      g->zcap = bound * 2;
      if (!(g->zbuf = malloc(g->zcap))) {
        fprintf(stderr, "intake-bench: out of memory\n");
        exit(1);
      }
    }
    size_t z = ZSTD_compressCCtx(g->zc, g->zbuf + 32, g->zcap - 32, s->buf + PREFIX_ROOM, s->len,
                                 ZSTD_LEVEL);
    if (ZSTD_isError(z)) {
      fprintf(stderr, "intake-bench: zstd: %s\n", ZSTD_getErrorName(z));
      exit(1);
    }
    uint8_t f3[12];
    size_t fl = 0;
    f3[fl++] = 3 << 3 | 2;
    for (uint64_t v = z; ; v >>= 7) {
      f3[fl++] = (uint8_t)(v >= 0x80 ? (v & 0x7f) | 0x80 : v);
      if (v < 0x80)
        break;
    }
    payload = g->zbuf + 32 - fl - hl;
    memcpy(payload, hdr, hl);
    memcpy(payload + hl, f3, fl);
    len = hl + fl + z;
  } else {
    payload = s->buf + PREFIX_ROOM - hl;
    memcpy(payload, hdr, hl);
    len = hl + s->len;
  }
  int64_t now = kio_mono_ns();
  int err = intake_client_send_frame(g->cli, INTAKE_FRAME_BATCH, payload, len);
  g->c.batches_sent++;
  g->c.events_sent += s->n;
  g->c.bytes_sent += len + INTAKE_FRAME_HEADER_BYTES;
  if (now >= g->t0_ns)
    second(g, now)->sent += s->n;
  switch (kind) {
  case K_FRESH: g->c.batches_fresh++; break;
  case K_COPY: g->c.batches_copy++; break;
  case K_LATE: g->c.batches_late++; break;
  default: g->c.batches_resend++; break;
  }
  flight_t *f = &g->fl[g->n_fl++];
  *f = (flight_t){seq, batch_no, now, s};
  s->busy++;
  return err;
}

/* Every copy in flight lost its answer: record that, queue them again in send order, close. */
static void drop_connection(gw_t *g) {
  /* send order = batch_no order; the window is small, so insertion sort */
  for (unsigned i = 1; i < g->n_fl; i++)
    for (unsigned j = i; j > 0 && g->fl[j - 1].batch_no > g->fl[j].batch_no; j--) {
      flight_t t = g->fl[j];
      g->fl[j] = g->fl[j - 1];
      g->fl[j - 1] = t;
    }
  for (unsigned i = 0; i < g->n_fl; i++) {
    flight_t *f = &g->fl[i];
    for (uint32_t k = 0; k < f->slot->n; k++)
      ledger_lost(ledger_at(g->ledger, f->slot->refs[k] & ((1ull << LEDGER_THREAD_SHIFT) - 1)),
                  f->batch_no, (uint16_t)k);
    g->c.lost_copies++;
    q_push(g, f->slot, K_RESEND);
    f->slot->busy--;
  }
  g->n_fl = 0;
  intake_client_close(g->cli);
  g->cli = NULL;
}

static void handle_ack(gw_t *g, const Intake__V1__BatchAck *ack, int64_t now) {
  flight_t *f = NULL;
  for (unsigned i = 0; i < g->n_fl; i++)
    if (g->fl[i].seq == ack->seq)
      f = &g->fl[i];
  if (!f) {
    g->c.acks_unmatched++;
    return;
  }
  g->c.acks++;
  g->last_ack_ns = now;
  uint64_t us = (uint64_t)(now - f->send_ns) / 1000;
  int timed = now >= g->t0_ns; /* not the warm-up batch */
  load_second_t *sec = timed ? second(g, now) : NULL;
  if (timed) {
    hist_add(&g->lat, us);
    hist_add(&sec->lat, us);
  }
  slot_t *s = f->slot;
  const uint64_t mask = (1ull << LEDGER_THREAD_SHIFT) - 1;
  if (ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK && ack->n_outcomes == s->n) {
    g->c.acks_ok++;
    for (uint32_t i = 0; i < s->n; i++) {
      ledger_entry_t *e = ledger_at(g->ledger, s->refs[i] & mask);
      int o = (int)ack->outcomes[i];
      switch (o) {
      case 0: g->c.answers_accepted++; break;
      case 1: g->c.answers_duplicate++; break;
      case 2: g->c.answers_rejected++; break;
      case 3: g->c.answers_converged++; break;
      default: /* an outcome this bench does not know: its fate is unknown */
        g->c.answers_unknown++;
        ledger_lost(e, f->batch_no, (uint16_t)i);
        continue;
      }
      if (ledger_answer(e, o, f->batch_no, (uint16_t)i)) {
        unsigned r = (unsigned)__builtin_popcount(e->topics);
        g->c.unique_accepted++;
        g->c.unique_records += r;
        if (sec) {
          sec->accepted++;
          sec->records += r;
        }
      }
    }
  } else if (ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_REJECTED) {
    g->c.acks_rejected++;
  } else {
    /* RETRY (or an ack without one outcome per event): fate unknown, retransmit */
    if (ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY)
      g->c.acks_retry++;
    else
      g->c.acks_malformed++;
    for (uint32_t i = 0; i < s->n; i++)
      ledger_lost(ledger_at(g->ledger, s->refs[i] & mask), f->batch_no, (uint16_t)i);
    g->c.lost_copies++;
    q_push(g, s, K_RESEND);
  }
  s->busy--;
  *f = g->fl[--g->n_fl];
}

/* Keeps one batch a second for late retransmissions. */
static void keep_old(gw_t *g, slot_t *s, int64_t now) {
  if (now < g->old_next_ns)
    return;
  g->old_next_ns = now + 1000000000;
  for (unsigned k = 0; k < OLD_SLOTS; k++) {
    slot_t *o = &g->old[g->old_pos];
    g->old_pos = (g->old_pos + 1) % OLD_SLOTS;
    if (!o->busy) {
      if (!o->refs && !(o->refs = malloc(g->batch * sizeof *o->refs))) {
        fprintf(stderr, "intake-bench: out of memory\n");
        exit(1);
      }
      slot_copy(o, s, g->batch);
      return;
    }
  }
}

static void queue_copies(gw_t *g, slot_t *fresh, int64_t now) {
  if (city_chance(&g->rng, g->o->retransmit)) {
    /* half the time one still in flight (its copy follows the first), else a recent one */
    slot_t *s = NULL;
    if (g->n_fl && city_below(&g->rng, 2))
      s = g->fl[city_below(&g->rng, g->n_fl)].slot;
    else {
      slot_t *r = &g->ring[city_below(&g->rng, g->n_ring)];
      s = r->used ? r : fresh;
    }
    q_push(g, s, K_COPY);
  }
  if (city_chance(&g->rng, g->o->late_retransmit)) {
    slot_t *o = &g->old[city_below(&g->rng, OLD_SLOTS)];
    if (o->used && now - o->made_ns >= LATE_MIN_NS)
      q_push(g, o, K_LATE);
  }
}

static void gw_fail(gw_t *g, const char *what, int err) {
  set_error(g, "gateway %u: %s: %s", what, err);
}

static void *gw_main(void *arg) {
  gw_t *g = arg;
  const load_opts_t *o = g->o;
  int flat = o->rate <= 0;
  int stopping = 0;
  int64_t drain_deadline = 0;
  g->t0_ns = INT64_MAX; /* nothing is timed until the start */
  int warm = connect_gw(g, kio_mono_ns() + 30000000000ll);
  if (warm < 0) {
    gw_fail(g, "cannot connect", warm);
  } else if ((warm = send_slot(g, build_warm(g, kio_mono_ns()), K_FRESH)) == 0) {
    intake_client_msg_t m;
    if ((warm = intake_client_recv(g->cli, 60000, &m)) == 0 && m.ack)
      handle_ack(g, m.ack, kio_mono_ns());
    else if (warm == 0)
      warm = -EPROTO;
    intake_client_msg_free(&m);
  }
  if (warm < 0 && !g->error[0])
    gw_fail(g, "warm-up batch", warm);
  if (pthread_barrier_wait(&start_barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
    atomic_store(&start_t0, kio_mono_ns() + 50000000);
  pthread_barrier_wait(&start_barrier);
  if (g->error[0]) {
    if (g->cli)
      drop_connection(g);
    return NULL;
  }
  /* The schedule was set up relative to 0: move it to the common start. */
  int64_t t0 = atomic_load(&start_t0), t0_ms = t0 / 1000000;
  g->t0_ns = t0;
  g->t_end_ns = t0 + (int64_t)(o->duration_s * 1e9);
  g->next_send_ns += t0;
  g->old_next_ns += t0;
  g->next_drop_ns += t0;
  for (unsigned k = 0; k < g->n_storms; k++)
    g->storms[k].due_ms += t0_ms;
  for (unsigned k = 0; k < g->n_flaps; k++)
    g->flaps[k].due_ms += t0_ms;
  for (;;) {
    int64_t now = kio_mono_ns();
    if (!stopping && ((o->duration_s > 0 && now >= g->t_end_ns) ||
                      (g->quota && g->c.events_made >= g->quota))) {
      stopping = 1;
      g->gen_end_ns = now;
      drain_deadline = now + DRAIN_NS;
      /* copies not yet sent are dropped; retransmissions of lost ones are not */
      for (unsigned i = 0, n = g->q_len; i < n; i++) {
        queued_t x = q_pop(g);
        if (x.kind == K_RESEND)
          q_push(g, x.slot, x.kind);
        x.slot->busy--;
      }
    }
    if (stopping && g->n_fl == 0 && g->q_len == 0)
      break;
    if (stopping && now > drain_deadline) {
      gw_fail(g, "acks still missing after the drain deadline", 0);
      drop_connection(g);
      break;
    }
    if (!g->cli) {
      if (connect_gw(g, now + 30000000000ll) < 0) {
        gw_fail(g, "cannot reconnect", -ECONNREFUSED);
        break;
      }
    }
    if (!stopping && o->disconnect_ms && now >= g->next_drop_ns && g->n_fl > 0) {
      g->next_drop_ns = now + (int64_t)o->disconnect_ms * 1000000;
      g->c.drops++;
      drop_connection(g);
      continue;
    }
    if (g->n_fl < g->window) {
      int err = 0;
      if (g->q_len) {
        queued_t x = q_pop(g);
        err = send_slot(g, x.slot, x.kind);
        x.slot->busy--;
      } else if (!stopping && (flat || now >= g->next_send_ns)) {
        slot_t *s = build_fresh(g, now);
        if (!flat) {
          int64_t lag = now - g->next_send_ns;
          if (lag > 10000000)
            g->c.late_sends++;
          if ((uint64_t)lag / 1000 > g->c.max_lag_us)
            g->c.max_lag_us = (uint64_t)lag / 1000;
          g->next_send_ns += g->interval_ns;
        }
        err = send_slot(g, s, K_FRESH);
        keep_old(g, s, now);
        queue_copies(g, s, now);
      } else if (g->n_fl == 0) {
        /* nothing in flight, nothing due: sleep until the next batch */
        int64_t wait = g->next_send_ns - now;
        if (wait > 0) {
          struct timespec ts = {wait / 1000000000, wait % 1000000000};
          nanosleep(&ts, NULL);
        }
        continue;
      } else {
        goto wait_ack;
      }
      if (err < 0) {
        g->c.conn_lost++;
        drop_connection(g);
      }
      continue;
    }
  wait_ack:;
    int timeout_ms = 1000;
    if (!flat && !stopping && g->n_fl < g->window) {
      int64_t wait = g->next_send_ns - now;
      timeout_ms = wait <= 0 ? 0 : (int)((wait + 999999) / 1000000);
    }
    intake_client_msg_t m;
    int err = intake_client_recv(g->cli, timeout_ms, &m);
    now = kio_mono_ns();
    if (err == -ETIMEDOUT) {
      int64_t oldest = now;
      for (unsigned i = 0; i < g->n_fl; i++)
        if (g->fl[i].send_ns < oldest)
          oldest = g->fl[i].send_ns;
      if (now - oldest > STALL_NS) {
        g->c.conn_lost++;
        drop_connection(g);
      }
      continue;
    }
    if (err < 0) {
      g->c.conn_lost++;
      drop_connection(g);
      continue;
    }
    if (m.ack) {
      handle_ack(g, m.ack, now);
    } else {
      if (m.error) {
        g->c.protocol_errors++;
        if (!o->quiet)
          fprintf(stderr, "intake-bench: gateway %u: ProtocolError %d: %s\n", g->id,
                  (int)m.error->code, m.error->detail);
      }
      intake_client_msg_free(&m);
      g->c.conn_lost++;
      drop_connection(g);
      continue;
    }
    intake_client_msg_free(&m);
  }
  if (!g->gen_end_ns)
    g->gen_end_ns = kio_mono_ns();
  if (g->cli)
    intake_client_close(g->cli);
  g->cli = NULL;
  return NULL;
}

/* ---- malformed frames on throwaway connections ------------------------------------------ */

typedef struct {
  const load_opts_t *o;
  atomic_int *stop;
  load_counters_t c;
  char error[256];
} chaos_t;

/* Sends one kind of malformed input; returns 1 when intaked answered with the expected
 * ProtocolError and closed the connection. */
static int chaos_one(chaos_t *x, unsigned variant, char *why, size_t whylen) {
  static const struct {
    const char *name;
    int code;
  } v[] = {
      {"unknown frame type", INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME},
      {"undecodable batch", INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME},
      {"frame over max_frame_bytes", INTAKE__V1__ERROR_CODE__ERROR_CODE_FRAME_TOO_LARGE},
      {"events_zstd not zstd", INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_ZSTD},
      {"batch before hello", INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED},
      {"protocol version 2", INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_VERSION},
  };
  variant %= sizeof v / sizeof v[0];
  intake_client_t *c;
  intake_client_msg_t m;
  int ok = 0;
  if (load_connect(x->o, &c) < 0) {
    snprintf(why, whylen, "%s: cannot connect", v[variant].name);
    return 0;
  }
  int err = 0;
  if (variant <= 3) {
    if ((err = intake_client_hello(c, "bench-chaos", "", 10000, &m)) < 0) {
      intake_client_msg_free(&m);
      snprintf(why, whylen, "%s: hello: %s", v[variant].name, strerror(-err));
      intake_client_close(c);
      return 0;
    }
    intake_client_msg_free(&m);
  }
  static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
  static const uint8_t badz[] = {3 << 3 | 2, 4, 'j', 'u', 'n', 'k'};
  static const uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff, INTAKE_FRAME_BATCH};
  switch (variant) {
  case 0: err = intake_client_send_frame(c, 9, "x", 1); break;
  case 1: err = intake_client_send_frame(c, INTAKE_FRAME_BATCH, junk, sizeof junk); break;
  case 2: err = intake_client_send_raw(c, huge, sizeof huge); break;
  case 3: err = intake_client_send_frame(c, INTAKE_FRAME_BATCH, badz, sizeof badz); break;
  case 4: err = intake_client_send_frame(c, INTAKE_FRAME_BATCH, junk, sizeof junk); break;
  default: err = intake_client_send_hello(c, "bench-chaos", "", 2); break;
  }
  if (err == 0)
    err = intake_client_recv(c, 10000, &m);
  if (err < 0) {
    snprintf(why, whylen, "%s: %s", v[variant].name, strerror(-err));
  } else if (!m.error || (int)m.error->code != v[variant].code) {
    snprintf(why, whylen, "%s: expected ProtocolError %d, got frame type %u code %d",
             v[variant].name, v[variant].code, m.type, m.error ? (int)m.error->code : -1);
    intake_client_msg_free(&m);
  } else {
    intake_client_msg_free(&m);
    err = intake_client_recv(c, 10000, &m);
    if (err == -ECONNRESET)
      ok = 1;
    else
      snprintf(why, whylen, "%s: connection not closed after the ProtocolError", v[variant].name);
    if (err == 0)
      intake_client_msg_free(&m);
  }
  intake_client_close(c);
  return ok;
}

static void *chaos_main(void *arg) {
  chaos_t *x = arg;
  unsigned variant = 0;
  while (!atomic_load(x->stop)) {
    for (unsigned slept = 0; slept < x->o->bad_frame_ms && !atomic_load(x->stop); slept += 50) {
      struct timespec ts = {0, 50000000};
      nanosleep(&ts, NULL);
    }
    if (atomic_load(x->stop))
      break;
    char why[200] = "";
    x->c.bad_frames++;
    if (chaos_one(x, variant++, why, sizeof why)) {
      x->c.bad_frames_answered++;
    } else {
      x->c.bad_frames_wrong++;
      if (!x->error[0])
        snprintf(x->error, sizeof x->error, "malformed frame: %s", why);
    }
  }
  return NULL;
}

/* ---- CPU sampling ------------------------------------------------------------------------ */

/* Once a second: the CPU time of the machine, this process and the watched ones, so that the
 * time series shows what else was running (the machine may be shared). */
typedef struct {
  int64_t ns;
  double machine, self, watch[LOAD_MAX_WATCH];
} cpu_sample_t;

typedef struct {
  const load_opts_t *o;
  atomic_int *stop;
  cpu_sample_t *v;
  size_t n, cap;
} sampler_t;

static void sample(sampler_t *x) {
  if (x->n == x->cap)
    return;
  cpu_sample_t *c = &x->v[x->n++];
  c->ns = kio_mono_ns();
  c->machine = kio_machine_cpu();
  c->self = kio_self_cpu();
  for (size_t i = 0; i < x->o->n_watch && i < LOAD_MAX_WATCH; i++)
    c->watch[i] = kio_proc_cpu(x->o->watch_pid[i]);
}

static void *sampler_main(void *arg) {
  sampler_t *x = arg;
  int64_t next = kio_mono_ns();
  while (!atomic_load(x->stop)) {
    sample(x);
    next += 1000000000;
    int64_t wait = next - kio_mono_ns();
    if (wait > 0) {
      struct timespec ts = {wait / 1000000000, wait % 1000000000};
      nanosleep(&ts, NULL);
    }
  }
  sample(x);
  return NULL;
}

/* Spreads each sampling interval's CPU over the seconds since t0 it covers (by its middle). */
static void attribute_cpu(const sampler_t *x, load_result_t *res, int64_t t0, unsigned n_secs) {
  for (size_t k = 1; k < x->n; k++) {
    const cpu_sample_t *a = &x->v[k - 1], *b = &x->v[k];
    double dt = (double)(b->ns - a->ns) / 1e9;
    int64_t mid = a->ns + (b->ns - a->ns) / 2;
    if (dt <= 0 || mid < t0)
      continue;
    unsigned sec = (unsigned)((mid - t0) / 1000000000);
    if (sec >= n_secs)
      continue;
    load_second_t *s = &res->secs[sec];
    s->cpu_machine = (float)((b->machine - a->machine) / dt);
    s->cpu_self = (float)((b->self - a->self) / dt);
    for (size_t i = 0; i < x->o->n_watch && i < LOAD_MAX_WATCH; i++)
      s->cpu_watch[i] = (float)((b->watch[i] - a->watch[i]) / dt);
  }
}

/* ---- the run ---------------------------------------------------------------------------- */

/* Sums every counter but the one maximum. */
static void add_counters(load_counters_t *a, const load_counters_t *b) {
  uint64_t lag = a->max_lag_us > b->max_lag_us ? a->max_lag_us : b->max_lag_us;
  uint64_t *x = (uint64_t *)a;
  const uint64_t *y = (const uint64_t *)b;
  for (size_t i = 0; i < sizeof *a / sizeof(uint64_t); i++)
    x[i] += y[i];
  a->max_lag_us = lag;
}

int load_run(const load_opts_t *o, ledger_t *ledgers, load_result_t *res) {
  memset(res, 0, sizeof *res);
  unsigned n = o->connections;
  if (!cam_seq) {
    cam_seq = malloc(CITY_CAMERAS * sizeof *cam_seq);
    city_rng_t r = {o->seed * 0x9e3779b97f4a7c15ull | 1};
    for (uint32_t i = 0; i < CITY_CAMERAS; i++)
      cam_seq[i] = 1 + city_below(&r, 5000); /* SNs do not start at 1 */
  }
  unsigned n_secs = o->duration_s > 0 ? (unsigned)o->duration_s + 150 : 1800;
  gw_t *gws = calloc(n, sizeof *gws);
  pthread_t *th = calloc(n, sizeof *th);
  if (!gws || !th)
    return -1;
  int64_t t0 = 0; /* the schedule is relative until the threads start (gw_main) */
  for (unsigned i = 0; i < n; i++) {
    gw_t *g = &gws[i];
    g->o = o;
    g->id = i;
    g->n = n;
    g->ledger = &ledgers[i];
    g->rng.s = (o->seed + 1) * 0x9e3779b97f4a7c15ull ^ (i + 1) * 0xbf58476d1ce4e5b9ull;
    g->rng.s |= 1;
    snprintf(g->gw_id, sizeof g->gw_id, "bench-gw-%03u", i);
    g->n_owned = (CITY_SOURCES - i + n - 1) / n;
    g->n_owned_cams = g->n_owned - (CITY_SENSORS - i + n - 1) / n;
    g->quota = o->duration_s > 0 ? 0 : (o->events + n - 1 - i) / n;
    g->n_secs = n_secs;
    g->secs = calloc(n_secs, sizeof *g->secs);
    g->zc = ZSTD_createCCtx();
    if (!g->secs || !g->zc)
      return -1;
  }
  /* Window and batch come from Welcome: one probe connection. */
  {
    gw_t *g = &gws[0];
    if (connect_gw(g, kio_mono_ns() + 20000000000ll) < 0) {
      snprintf(res->error, sizeof res->error, "cannot connect to %s:%u", o->host, o->port);
      return -1;
    }
    intake_client_close(g->cli);
    g->cli = NULL;
  }
  unsigned window = gws[0].window, batch = gws[0].batch;
  double per_conn = o->rate / n;
  for (unsigned i = 0; i < n; i++) {
    gw_t *g = &gws[i];
    g->window = window;
    g->batch = batch;
    g->n_ring = 4 * window + 16;
    g->ring = calloc(g->n_ring, sizeof *g->ring);
    g->fl = calloc(window, sizeof *g->fl);
    if (!g->ring || !g->fl)
      return -1;
    for (unsigned k = 0; k < g->n_ring; k++)
      if (!(g->ring[k].refs = malloc(batch * sizeof *g->ring[k].refs)))
        return -1;
    g->interval_ns = per_conn > 0 ? (int64_t)(batch / per_conn * 1e9) : 0;
    g->next_send_ns = t0 + (per_conn > 0 ? g->interval_ns * i / n : 0);
    g->old_next_ns = t0 + 1000000000;
    if (o->disconnect_ms)
      g->next_drop_ns = t0 + (int64_t)o->disconnect_ms * 1000000 * (i + 1) / n;
    g->n_storms = o->storm_cameras / n + (i < o->storm_cameras % n);
    if (g->n_storms > g->n_owned_cams)
      g->n_storms = g->n_owned_cams;
    g->storms = calloc(g->n_storms ? g->n_storms : 1, sizeof *g->storms);
    g->relays = calloc(g->n_storms ? g->n_storms : 1, sizeof *g->relays);
    int64_t t0_ms = t0 / 1000000;
    for (unsigned k = 0; k < g->n_storms; k++)
      g->storms[k].due_ms = t0_ms + (int64_t)o->storm_period_ms * k / g->n_storms;
    g->n_flaps = o->flap_sensors / n + (i < o->flap_sensors % n);
    g->flaps = calloc(g->n_flaps ? g->n_flaps : 1, sizeof *g->flaps);
    for (unsigned k = 0; k < g->n_flaps; k++) {
      g->flaps[k].src = random_sensor(g);
      g->flaps[k].due_ms = t0_ms + (int64_t)o->flap_period_ms * k / g->n_flaps;
    }
    if (!g->storms || !g->relays || !g->flaps)
      return -1;
  }
  pthread_barrier_init(&start_barrier, NULL, n);
  atomic_int stop = 0, stop_sampler = 0;
  sampler_t sampler = {o, &stop_sampler, calloc(n_secs + 16, sizeof(cpu_sample_t)), 0, n_secs + 16};
  pthread_t sampler_th;
  int sampler_on = sampler.v && pthread_create(&sampler_th, NULL, sampler_main, &sampler) == 0;
  chaos_t chaos = {o, &stop, {0}, ""};
  pthread_t chaos_th;
  int chaos_on = o->bad_frame_ms > 0 && pthread_create(&chaos_th, NULL, chaos_main, &chaos) == 0;
  for (unsigned i = 0; i < n; i++)
    if (pthread_create(&th[i], NULL, gw_main, &gws[i]) != 0) {
      snprintf(res->error, sizeof res->error, "pthread_create failed");
      return -1;
    }
  int64_t gen_end = 0, last = 0;
  for (unsigned i = 0; i < n; i++) {
    pthread_join(th[i], NULL);
    gw_t *g = &gws[i];
    if (g->gen_end_ns > gen_end)
      gen_end = g->gen_end_ns;
    if (g->last_ack_ns > last)
      last = g->last_ack_ns;
  }
  atomic_store(&stop, 1);
  if (chaos_on)
    pthread_join(chaos_th, NULL);
  atomic_store(&stop_sampler, 1);
  if (sampler_on)
    pthread_join(sampler_th, NULL);
  pthread_barrier_destroy(&start_barrier);
  t0 = atomic_load(&start_t0);
  if (last < t0)
    last = gen_end;

  res->window = window;
  res->batch = batch;
  res->n_secs = 0;
  res->secs = calloc(n_secs, sizeof *res->secs);
  if (!res->secs)
    return -1;
  for (unsigned i = 0; i < n; i++) {
    gw_t *g = &gws[i];
    add_counters(&res->c, &g->c);
    hist_merge(&res->lat, &g->lat);
    for (unsigned s = 0; s < g->max_sec; s++) {
      res->secs[s].accepted += g->secs[s].accepted;
      res->secs[s].records += g->secs[s].records;
      res->secs[s].sent += g->secs[s].sent;
      hist_merge(&res->secs[s].lat, &g->secs[s].lat);
    }
    if (g->max_sec > res->n_secs)
      res->n_secs = g->max_sec;
    if (g->error[0] && !res->error[0])
      snprintf(res->error, sizeof res->error, "%s", g->error);
  }
  attribute_cpu(&sampler, res, t0, n_secs);
  free(sampler.v);
  res->c.bad_frames = chaos.c.bad_frames;
  res->c.bad_frames_answered = chaos.c.bad_frames_answered;
  res->c.bad_frames_wrong = chaos.c.bad_frames_wrong;
  if (chaos.error[0] && !res->error[0])
    snprintf(res->error, sizeof res->error, "%s", chaos.error);
  res->gen_s = (double)(gen_end - t0) / 1e9;
  res->total_s = (double)(last - t0) / 1e9;
  /* Steady state: whole seconds from the warmup to the end of generation. */
  unsigned from = (unsigned)o->warmup_s, to = (unsigned)res->gen_s;
  if (to > res->n_secs)
    to = res->n_secs;
  if (to <= from) {
    from = 0;
    to = res->n_secs ? res->n_secs : 1;
  }
  uint64_t acc = 0, rec = 0, sent = 0;
  for (unsigned s = from; s < to && s < n_secs; s++) {
    acc += res->secs[s].accepted;
    rec += res->secs[s].records;
    sent += res->secs[s].sent;
    hist_merge(&res->lat_steady, &res->secs[s].lat);
  }
  res->steady_from = from;
  res->steady_to = to;
  res->steady_eps = (double)acc / (to - from);
  res->steady_rps = (double)rec / (to - from);
  res->sent_eps = (double)sent / (to - from);

  for (unsigned i = 0; i < n; i++) {
    gw_t *g = &gws[i];
    for (unsigned k = 0; k < g->n_ring; k++) {
      free(g->ring[k].buf);
      free(g->ring[k].refs);
    }
    for (unsigned k = 0; k < OLD_SLOTS; k++) {
      free(g->old[k].buf);
      free(g->old[k].refs);
    }
    free(g->ring);
    free(g->fl);
    free(g->q);
    free(g->storms);
    free(g->relays);
    free(g->flaps);
    free(g->secs);
    free(g->zbuf);
    ZSTD_freeCCtx(g->zc);
  }
  free(gws);
  free(th);
  return 0;
}
