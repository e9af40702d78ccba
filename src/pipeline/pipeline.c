#include "pipeline/pipeline.h"

#include <errno.h>
#include <stddef.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "converge/converge.h"
#include "core/log.h"
#include "decode/batch.h"
#include "decode/event.h"
#include "encode/json.h"
#include "dedup/dedup.h"
#include "dedup/watch.h"
#include "pipeline/persist.h"
#include "route/route.h"
#include "sink/sink.h"

/* Per-event state of a job; lives in the job's single allocation. Its address is the opaque of
 * the event's Kafka records and the dedup owner of its key while in flight. */
typedef struct pend {
  struct intake_job *job;
  uint32_t index;
  uint8_t kind;               /* PEND_* */
  uint8_t failed;             /* a record of this event failed */
  uint8_t records_left;       /* records produced and not yet reported (<= 16 topics) */
  uint8_t converged;          /* suppressed on a converged route: acked CONVERGED */
  struct pend *waiters;       /* PEND_OWNER: copies following this one */
  struct pend *next_waiter;   /* PEND_FOLLOWER: next in the owner's list */
  intake_dedup_probe_t probe;
} pend_t;

enum { PEND_NONE = 0, PEND_OWNER, PEND_FOLLOWER, PEND_DEAD_LETTER, PEND_SUMMARY };

/* A converged rule of one routing: its converge table and where its summaries go. */
typedef struct conv_route {
  intake_pipeline_t *p;
  intake_converge_t *c;             /* owned; NULL while `adopt` is set */
  struct conv_route *adopt;         /* build: the old routing's route whose table this takes */
  intake_converge_conf_t conf;
  intake_converge_stats_t *st;      /* registry entry by rule name */
  const char *name;                 /* = st->name */
  size_t n_topics;
  intake_sink_topic_t *topics[INTAKE_ROUTE_MAX_TOPICS];
  intake_topic_stats_t *tstats[INTAKE_ROUTE_MAX_TOPICS];
  intake_route_stats_t *rstats;
} conv_route_t;

/* A summary record: not tied to a batch; produced again after a failure, a bounded number of
 * times. Starts with a pend so that on_delivery tells it apart by `kind`. */
typedef struct summary_rec {
  pend_t hdr;                       /* kind PEND_SUMMARY */
  intake_converge_stats_t *st;
  intake_sink_topic_t *topic;
  intake_topic_stats_t *ts;
  struct summary_rec *next;         /* retry list */
  uint32_t tries;
  uint32_t key_len, value_len;
  char route[65];
  uint8_t data[];                   /* key, then value */
} summary_rec_t;

#define CONV_LOOKAHEAD 8             /* events between a slot's prefetch and its check */
#define SUMMARY_MAX_TRIES 5         /* then counted in summaries_failed and dropped */
#define MAX_CONV_STATS 4096

struct intake_job {
  intake_pipeline_t *pipeline;
  void *owner;                /* NULL once detached */
  intake_gateway_stats_t *gw; /* the sending gateway's counters */
  uint64_t received_ms;       /* loop clock at submit, for the latency histogram */
  intake_job_t *next_ready;   /* completed-job list */
  uint64_t seq;
  uint32_t n_events;
  uint32_t pending;           /* unresolved pends + 1 while submit runs */
  int failed;                 /* some record failed: ack RETRY */
  int status_override;        /* -1, or INTAKE_BATCH_STATUS_REJECTED */
  const char *detail;
  intake_rejection_t *rejections;
  size_t n_rejections, cap_rejections;
  uint8_t *outcomes;          /* n_events */
  pend_t pends[];             /* n_events */
};

/* A job is one malloc per batch (~15 KB for 200 events). A free list of job blocks, tried on
 * 2026-11-28 to spare glibc the malloc_consolidate that a request of that size triggers, was
 * worse end to end: intaked's CPU per event flat out was 9.2 against 7.4 us without it (means
 * of 5 alternating runs of bench/tls.sh), and its profile showed _int_malloc at 14% against 2%:
 * without those consolidations, the fastbins full of librdkafka's freed records slow every
 * other allocation down. */

struct intake_pipeline {
  uv_loop_t *loop;
  const intake_config_t *cfg;
  intake_job_done_cb done;
  intake_pipeline_resume_cb resume;
  void *ctx;
  intake_decoder_t *decoder;
  intake_dedup_t *dedup;
  intake_persist_t *persist;        /* dedup snapshots; NULL when dedup.snapshot_path is unset */
  intake_converge_snapshot_stats_t conv_snap; /* "<dedup.snapshot_path>.converge" */
  intake_router_t *router;
  intake_sink_t *sink;
  intake_sink_topic_t **topics;     /* by router topic index */
  intake_sink_topic_t *dead_letter;
  intake_event_t *events;           /* scratch: the batch being submitted */
  uint32_t events_cap;              /* entries in events and parsed */
  char *json;                       /* scratch: an event rendered for a JSON route */
  size_t json_cap;                  /* 6 * validate.max_event_bytes + 512 (json.h's bound) */
  uint8_t *parsed;                  /* scratch: 1 = events[i] parsed and valid */
  intake_job_t *ready;              /* jobs completed, to report from the idle callback */
  uv_idle_t idle;
  uv_timer_t sweep_timer;
  intake_dedup_watch_t dedup_watch; /* says when the table cannot hold the window */
  uint64_t jobs;
  uint64_t high_water, low_water;   /* records in flight: refuse above high, resume below low */
  int refused;                      /* a submit was refused since the last resume */
  int closing;                      /* intake_pipeline_close() was called */
  uint64_t wall_loop_ms;            /* loop_wall_ms(): uv_now() when last read */
  uint64_t wall_cached_ms;          /* loop_wall_ms(): the wall clock then */
  intake_log_limit_t delivery_log, produce_log; /* one line a second at most */
  intake_gateway_stats_t **gateways;  /* registry, INTAKE_MAX_GATEWAY_STATS + 1 ("_other") */
  size_t n_gateways;
  uint32_t *gateway_index;          /* open addressing: slot -> gateways index + 1, 0 = empty */
  /* Counters by name, for every topic and rule any config has had: fixed-capacity arrays, so
   * the pointers below (and the sink's per-topic user pointers) stay valid across reloads. */
  intake_topic_stats_t *topic_stats;
  size_t n_topic_stats;
  intake_route_stats_t *route_stats;
  size_t n_route_stats;
  intake_topic_stats_t **tstats;    /* by router topic index */
  intake_route_stats_t **rstats;    /* by router rule index */
  conv_route_t **conv;              /* by router rule index; NULL = no convergence */
  size_t n_rules;                   /* entries in conv */
  size_t n_conv;                    /* non-NULL entries in conv */
  intake_converge_stats_t *conv_stats; /* registry by rule name, MAX_CONV_STATS */
  size_t n_conv_stats;
  summary_rec_t *summary_retry;     /* summaries to produce again at the next tick */
  uv_timer_t conv_timer;            /* scans the converge tables, retries summaries */
  intake_topic_stats_t *dlq_stats;
  intake_latency_t latency;
  intake_counters_t c;
};

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall-clock ms, read once per loop iteration: delivery reports come by the thousand per
 * iteration, and a clock read each cost ~25 ns/event (7.6% of the hot path). uv_now() is the
 * loop's cached time, so the value is at most one iteration stale; dedup keeps 10 ms ticks. */
static uint64_t loop_wall_ms(intake_pipeline_t *p) {
  uint64_t loop_now = uv_now(p->loop);
  if (loop_now != p->wall_loop_ms || p->wall_cached_ms == 0) {
    p->wall_loop_ms = loop_now;
    p->wall_cached_ms = (uint64_t)wall_ms();
  }
  return p->wall_cached_ms;
}

/* Counts an event both in the totals and in its gateway's counters. */
#define COUNT(p, job, field, delta)                                                                \
  do {                                                                                             \
    (p)->c.field += (delta);                                                                       \
    (job)->gw->c.field += (delta);                                                                 \
  } while (0)

const double intake_latency_bounds_ms[INTAKE_LATENCY_BUCKETS] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 1.0 / 0.0};

static void observe_latency(intake_pipeline_t *p, uint64_t ms) {
  size_t i = 0;
  while (i < INTAKE_LATENCY_BUCKETS - 1 && (double)ms > intake_latency_bounds_ms[i])
    i++;
  p->latency.counts[i]++;
  p->latency.count++;
  p->latency.sum_ms += ms;
}

#define GATEWAY_INDEX_SLOTS (4 * INTAKE_MAX_GATEWAY_STATS) /* power of two, load <= 1/4 */

/* The counters of `id`, created on first sight; past INTAKE_MAX_GATEWAY_STATS distinct ids,
 * those of "_other" (so a flood of made-up ids cannot grow memory). NULL on out of memory. */
static intake_gateway_stats_t *gateway_stats(intake_pipeline_t *p, const char *id) {
  uint32_t h = 2166136261u; /* FNV-1a: one short id per batch */
  for (const char *c = id; *c; c++)
    h = (h ^ (uint8_t)*c) * 16777619u;
  uint32_t i = h & (GATEWAY_INDEX_SLOTS - 1);
  for (; p->gateway_index[i]; i = (i + 1) & (GATEWAY_INDEX_SLOTS - 1))
    if (!strcmp(p->gateways[p->gateway_index[i] - 1]->id, id))
      return p->gateways[p->gateway_index[i] - 1];
  if (p->n_gateways == INTAKE_MAX_GATEWAY_STATS)
    id = "_other"; /* takes the last array slot, outside the index */
  else if (p->n_gateways > INTAKE_MAX_GATEWAY_STATS)
    return p->gateways[INTAKE_MAX_GATEWAY_STATS];
  intake_gateway_stats_t *g = calloc(1, sizeof *g);
  if (!g)
    return NULL;
  snprintf(g->id, sizeof g->id, "%s", id);
  if (p->n_gateways < INTAKE_MAX_GATEWAY_STATS)
    p->gateway_index[i] = (uint32_t)p->n_gateways + 1;
  p->gateways[p->n_gateways++] = g;
  return g;
}

static void job_finish(intake_pipeline_t *p, intake_job_t *job) {
  p->jobs--;
  if (job->owner) {
    intake_batch_result_t r = {
        .seq = job->seq,
        .n_events = job->n_events,
        .rejections = job->rejections,
        .n_rejections = job->n_rejections,
        .detail = job->detail,
    };
    if (job->status_override >= 0) {
      r.status = job->status_override;
    } else if (job->failed) {
      r.status = INTAKE_BATCH_STATUS_RETRY;
      if (!r.detail)
        r.detail = "Kafka did not confirm every record; retransmit the batch";
    } else {
      r.status = INTAKE_BATCH_STATUS_OK;
      r.outcomes = job->outcomes;
    }
    p->done(job->owner, job, &r);
  }
  if (job->status_override >= 0)
    p->c.batches_rejected++;
  else if (job->failed)
    p->c.batches_retry++;
  else
    p->c.batches_ok++;
  free(job->rejections);
  free(job);
}

static void on_idle(uv_idle_t *h) {
  intake_pipeline_t *p = h->data;
  intake_job_t *list = p->ready;
  p->ready = NULL;
  uv_idle_stop(&p->idle);
  /* Reverse to complete in the order jobs finished. */
  intake_job_t *rev = NULL;
  while (list) {
    intake_job_t *next = list->next_ready;
    list->next_ready = rev;
    rev = list;
    list = next;
  }
  while (rev) {
    intake_job_t *next = rev->next_ready;
    job_finish(p, rev);
    rev = next;
  }
}

/* Completion is deferred to the idle callback, so done() never runs inside submit or inside
 * librdkafka's delivery callback, where the connection might be in the middle of something. */
static void job_release(intake_pipeline_t *p, intake_job_t *job) {
  if (--job->pending)
    return;
  job->next_ready = p->ready;
  p->ready = job;
  if (!p->closing) /* after close, destroy() finishes what is on the list */
    uv_idle_start(&p->idle, on_idle);
}

static void maybe_resume(intake_pipeline_t *p) {
  if (p->refused && p->c.records_in_flight <= p->low_water) {
    p->refused = 0;
    p->resume(p->ctx);
  }
}

static void resolve_follower(intake_pipeline_t *p, pend_t *w, int ok) {
  intake_job_t *job = w->job;
  COUNT(p, job, in_flight, -1);
  if (ok) {
    job->outcomes[w->index] = INTAKE_OUTCOME_DUPLICATE;
    COUNT(p, job, duplicate, 1);
  } else {
    job->failed = 1;
    COUNT(p, job, failed, 1);
  }
  job_release(p, job);
}

static void resolve_owner(intake_pipeline_t *p, pend_t *e) {
  intake_job_t *job = e->job;
  int ok = !e->failed;
  uint64_t now = loop_wall_ms(p);
  COUNT(p, job, in_flight, -1);
  if (ok) {
    intake_dedup_commit(p->dedup, &e->probe, now);
    job->outcomes[e->index] = e->converged ? INTAKE_OUTCOME_CONVERGED : INTAKE_OUTCOME_ACCEPTED;
    COUNT(p, job, delivered, 1);
    observe_latency(p, uv_now(p->loop) - job->received_ms);
  } else {
    /* Not remembered: the gateway's retransmit must be produced. */
    intake_dedup_abort(p->dedup, &e->probe);
    job->failed = 1;
    COUNT(p, job, failed, 1);
  }
  for (pend_t *w = e->waiters, *next; w; w = next) {
    next = w->next_waiter;
    resolve_follower(p, w, ok);
  }
  e->waiters = NULL;
  job_release(p, job); /* last: it may complete the job */
}

static void summary_produce(intake_pipeline_t *p, summary_rec_t *r);

static void summary_delivered(intake_pipeline_t *p, summary_rec_t *r, int err) {
  if (!err) {
    p->c.records_delivered++;
    r->st->summaries_delivered++;
    free(r);
    return;
  }
  p->c.records_failed++;
  uint64_t held;
  if (intake_log_allow(&p->delivery_log, &held))
    LOG_WARN("kafka did not confirm a convergence summary", "route=%s error=%s tries=%u suppressed=%llu",
             r->route, rd_kafka_err2name((rd_kafka_resp_err_t)err), r->tries,
             (unsigned long long)held);
  if (p->closing || r->tries >= SUMMARY_MAX_TRIES) {
    r->st->summaries_failed++;
    free(r);
    return;
  }
  r->next = p->summary_retry; /* produced again at the next tick: never from here */
  p->summary_retry = r;
}

static void on_delivery(void *ctx, void *opaque, void *topic_user, int err) {
  intake_pipeline_t *p = ctx;
  pend_t *e = opaque;
  intake_topic_stats_t *ts = topic_user;
  if (err)
    ts->failed++;
  else
    ts->delivered++;
  p->c.records_in_flight--;
  if (e->kind == PEND_SUMMARY) {
    summary_delivered(p, (summary_rec_t *)e, err);
    maybe_resume(p);
    return;
  }
  if (err) {
    e->failed = 1;
    if (e->kind == PEND_DEAD_LETTER)
      p->c.dead_letter_failed++;
    else
      p->c.records_failed++;
    uint64_t held;
    if (intake_log_allow(&p->delivery_log, &held))
      LOG_WARN("kafka did not confirm a record; its batch will be answered RETRY",
               "error=%s suppressed=%llu", rd_kafka_err2name((rd_kafka_resp_err_t)err),
               (unsigned long long)held);
  } else if (e->kind == PEND_DEAD_LETTER) {
    p->c.dead_letter_delivered++;
  } else {
    p->c.records_delivered++;
  }
  if (--e->records_left == 0) {
    if (e->kind == PEND_DEAD_LETTER) {
      if (e->failed)
        e->job->failed = 1;
      job_release(p, e->job);
    } else {
      resolve_owner(p, e);
    }
  }
  maybe_resume(p);
}

/* 8 lowercase hex digits of v, most significant first, as the bytes of a little-endian word:
 * the nibbles are spread one per byte and turned into digits all at once (a table lookup per
 * byte cost ~110 instructions per event, this ~40, in intake-hotpath). */
static inline uint64_t hex32(uint32_t v) {
  uint64_t x = v;
  x = (x | x << 16) & 0x0000ffff0000ffffull;
  x = (x | x << 8) & 0x00ff00ff00ff00ffull;
  x = (x | x << 4) & 0x0f0f0f0f0f0f0f0full; /* nibble i in byte i */
  x = __builtin_bswap64(x);                  /* most significant nibble first in memory */
  uint64_t letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull; /* >= 10 */
  return x + 0x3030303030303030ull + letters * ('a' - '0' - 10);
}

/* 32 hex digits of the 128-bit key. */
static void hex128(char out[33], uint64_t hi, uint64_t lo) {
  uint64_t w[4] = {hex32((uint32_t)(hi >> 32)), hex32((uint32_t)hi), hex32((uint32_t)(lo >> 32)),
                   hex32((uint32_t)lo)};
  memcpy(out, w, 32);
  out[32] = '\0';
}

static void add_rejection(intake_job_t *job, uint32_t index, intake_reject_t reason,
                          const char *detail) {
  if (job->n_rejections == job->cap_rejections) {
    size_t cap = job->cap_rejections ? job->cap_rejections * 2 : 4;
    intake_rejection_t *r = realloc(job->rejections, cap * sizeof *r);
    if (!r)
      return; /* the outcome still says REJECTED; only the detail is lost */
    job->rejections = r;
    job->cap_rejections = cap;
  }
  intake_rejection_t *r = &job->rejections[job->n_rejections++];
  r->index = index;
  r->reason = reason;
  snprintf(r->detail, sizeof r->detail, "%s", detail);
}

/* What every record of one batch shares, computed once per batch. */
typedef struct {
  const char *gateway_id;
  size_t gateway_id_len;
  char received[24];          /* received_ms header value */
  size_t received_len;
  int64_t now;                /* wall clock at submit: the convergence clock */
} batch_ctx_t;

static void reject(intake_pipeline_t *p, intake_job_t *job, uint32_t i, const uint8_t *raw,
                   uint32_t raw_len, const intake_event_t *ev, intake_reject_t reason,
                   const char *detail, const batch_ctx_t *bc) {
  pend_t *e = &job->pends[i];
  job->outcomes[i] = INTAKE_OUTCOME_REJECTED;
  add_rejection(job, i, reason, detail);
  COUNT(p, job, rejected, 1);
  p->c.rejected_by_reason[reason]++;
  const char *rname = intake_reject_name(reason);
  /* The dead-letter record must itself fit in Kafka, whatever the gateway sent: the value is
   * cut at validate.max_event_bytes (the header "truncated_from" then gives the size sent), and
   * an over-long source id is no key. */
  char original[24] = "";
  size_t original_len = 0;
  if (raw_len > p->cfg->max_event_bytes) {
    original_len = (size_t)snprintf(original, sizeof original, "%u", raw_len);
    raw_len = p->cfg->max_event_bytes;
  }
  intake_sink_header_t h[] = {
      {"gateway_id", bc->gateway_id, bc->gateway_id_len},
      {"received_ms", bc->received, bc->received_len},
      {"reject_reason", rname, strlen(rname)},
      {"reject_detail", detail, strlen(detail)},
      {"schema", "intake.v1.Event", 15},
      {"content-type", "application/x-protobuf", 22},
      {"truncated_from", original, original_len},
  };
  size_t n_headers = sizeof h / sizeof h[0] - (original_len ? 0 : 1);
  const void *key = ev && ev->source_id.len && ev->source_id.len <= p->cfg->max_id_bytes
                        ? ev->source_id.ptr
                        : NULL;
  size_t key_len = key ? ev->source_id.len : 0;
  e->kind = PEND_DEAD_LETTER;
  e->records_left = 1;
  int rc = intake_sink_produce(p->sink, p->dead_letter, key, key_len, raw, raw_len, h, n_headers,
                               e);
  if (rc < 0) {
    p->c.dead_letter_failed++;
    job->failed = 1;
    uint64_t held;
    if (intake_log_allow(&p->produce_log, &held))
      LOG_WARN("dead-letter produce failed; the batch will be answered RETRY", "error=%s suppressed=%llu",
               rd_kafka_err2name((rd_kafka_resp_err_t)-rc), (unsigned long long)held);
    return;
  }
  p->c.records_in_flight++;
  p->dlq_stats->produced++;
  job->pending++;
}

static void produce_event(intake_pipeline_t *p, intake_job_t *job, uint32_t i,
                          const intake_event_t *ev, const batch_ctx_t *bc) {
  pend_t *e = &job->pends[i];
  intake_route_target_t targets[INTAKE_ROUTE_MAX_TOPICS];
  size_t n = intake_router_route(p->router, ev, targets);
  char dedup_key[33];
  hex128(dedup_key, e->probe.key_hi, e->probe.key_lo);
  e->kind = PEND_OWNER;
  e->records_left = 0;
  COUNT(p, job, in_flight, 1);
  job->pending++;
  size_t json_len = 0; /* rendered on the first JSON route, then shared by the others */
  int verdict[INTAKE_ROUTE_MAX_TOPICS]; /* per target: converge verdict of its rule, -1 = none */
  for (size_t t = 0; t < n; t++) {
    conv_route_t *cr = p->conv[targets[t].rule];
    verdict[t] = -1;
    if (cr) {
      size_t u = 0; /* a rule with several topics is asked once per event */
      while (u < t && targets[u].rule != targets[t].rule)
        u++;
      verdict[t] = u < t ? verdict[u]
                         : (int)intake_converge_check(cr->c, ev, e->probe.key_hi ^ e->probe.key_lo,
                                                      bc->now);
      if (verdict[t] == INTAKE_CONVERGE_SUPPRESS) {
        e->converged = 1;
        continue;
      }
    }
    const char *route = intake_router_rule_name(p->router, targets[t].rule);
    const void *value = ev->raw;
    size_t value_len = ev->raw_len;
    int json = intake_router_rule_encoding(p->router, targets[t].rule) == INTAKE_ENCODING_JSON;
    if (json) {
      if (!json_len) /* fits: the buffer holds intake_event_json_bound() of the largest event */
        json_len = intake_event_to_json(ev, p->json, p->json_cap);
      value = p->json;
      value_len = json_len;
    }
    intake_sink_header_t h[] = {
        {"gateway_id", bc->gateway_id, bc->gateway_id_len},
        {"received_ms", bc->received, bc->received_len},
        {"route", route, strlen(route)},
        {"schema", "intake.v1.Event", 15},
        {"dedup_key", dedup_key, 32},
        json ? (intake_sink_header_t){"content-type", "application/json", 16}
             : (intake_sink_header_t){"content-type", "application/x-protobuf", 22},
        {"kind", "event", 5}, /* only on converged routes, where summaries share the topic */
    };
    size_t n_headers = sizeof h / sizeof h[0] - (verdict[t] < 0 ? 1 : 0);
    int rc = intake_sink_produce(p->sink, p->topics[targets[t].topic], ev->source_id.ptr,
                                 ev->source_id.len, value, value_len, h, n_headers, e);
    if (rc < 0) {
      /* Not queued (e.g. the queue is full despite the high-water mark): the event fails and
       * the batch is answered RETRY; never dropped silently. */
      e->failed = 1;
      p->c.records_failed++;
      uint64_t held;
      if (intake_log_allow(&p->produce_log, &held))
        LOG_WARN("produce failed; the batch will be answered RETRY", "topic=%s error=%s suppressed=%llu",
                 intake_router_topic_name(p->router, targets[t].topic),
                 rd_kafka_err2name((rd_kafka_resp_err_t)-rc), (unsigned long long)held);
      continue;
    }
    e->records_left++;
    p->c.records_in_flight++;
    p->tstats[targets[t].topic]->produced++;
    p->rstats[targets[t].rule]->records++;
  }
  if (e->records_left == 0)
    resolve_owner(p, e);
}

int intake_pipeline_submit(intake_pipeline_t *p, const uint8_t *payload, size_t len,
                           const char *gateway_id, void *owner, intake_job_t **jobp,
                           const char **detail) {
  if (p->c.records_in_flight > p->high_water) {
    p->refused = 1;
    return -EAGAIN;
  }
  intake_batch_t b;
  intake_batch_status_t st = intake_batch_open(p->decoder, payload, len, &b, detail);
  if (st != INTAKE_BATCH_OK)
    return st == INTAKE_BATCH_BAD_ZSTD ? INTAKE_SUBMIT_BAD_ZSTD : INTAKE_SUBMIT_MALFORMED;
  const intake_config_t *cfg = p->cfg;
  int too_many = b.n_events > cfg->max_batch_events;
  uint32_t n = too_many ? 0 : b.n_events;
  /* Not zeroed beyond the header: zeroing ~80 bytes per event showed in the profile; pass 1
   * sets every pend. */
  intake_job_t *job = malloc(sizeof *job + n * sizeof(pend_t) + n);
  if (!job) {
    *detail = "out of memory";
    return -ENOMEM;
  }
  memset(job, 0, sizeof *job);
  job->pipeline = p;
  job->owner = owner;
  job->received_ms = uv_now(p->loop);
  job->gw = gateway_stats(p, gateway_id);
  if (!job->gw) {
    free(job);
    *detail = "out of memory";
    return -ENOMEM;
  }
  job->seq = b.seq;
  job->n_events = n;
  job->pending = 1;
  job->status_override = -1;
  job->outcomes = (uint8_t *)&job->pends[n];
  p->jobs++;
  p->c.batches++;
  *jobp = job;
  if (too_many) {
    job->status_override = INTAKE_BATCH_STATUS_REJECTED;
    job->detail = "batch has more events than gateway.max_batch_events";
    job_release(p, job);
    return 0;
  }

  int64_t now = wall_ms();
  batch_ctx_t bc = {.gateway_id = gateway_id, .gateway_id_len = strlen(gateway_id), .now = now};
  bc.received_len = (size_t)snprintf(bc.received, sizeof bc.received, "%lld", (long long)now);
  char why[96];

  /* Pass 1: parse, validate and hash every event, prefetching its dedup buckets, so that the
   * table's cache misses overlap instead of being paid one after another in pass 2. */
  const uint8_t *raw;
  uint32_t raw_len;
  for (uint32_t i = 0; i < n; i++) {
    if (!intake_batch_next(&b, &raw, &raw_len)) { /* never: open counted the same fields */
      raw = (const uint8_t *)"";
      raw_len = 0;
    }
    intake_event_t *ev = &p->events[i];
    pend_t *e = &job->pends[i];
    memset(e, 0, offsetof(pend_t, probe)); /* the probe is set below when needed */
    e->job = job;
    e->index = i;
    job->outcomes[i] = INTAKE_OUTCOME_ACCEPTED;
    p->parsed[i] = 0;
    COUNT(p, job, received, 1);
    if (intake_event_parse(raw, raw_len, ev) < 0) {
      reject(p, job, i, raw, raw_len, NULL, INTAKE_REJECT_MALFORMED,
             "not a decodable intake.v1.Event", &bc);
      continue;
    }
    intake_reject_t r = intake_validate(ev, cfg, now, why, sizeof why);
    if (r != INTAKE_REJECT_NONE) {
      reject(p, job, i, raw, raw_len, ev, r, why, &bc);
      continue;
    }
    intake_dedup_probe_init(&e->probe, ev->source_id.ptr, ev->source_id.len, ev->event_id.ptr,
                            ev->event_id.len, ev->seq);
    intake_dedup_prefetch(p->dedup, &e->probe);
    for (size_t k = 0; p->n_conv && k < p->n_rules; k++) /* converged rules it may match */
      if (p->conv[k])
        intake_converge_prefetch(p->conv[k]->c, ev, 0);
    p->parsed[i] = 1;
  }

  /* Pass 2: dedup, route, produce. */
  for (uint32_t i = 0; i < n; i++) {
    /* Converge tables: pass 1 fetched the index lines; fetch the episode slots a few events
     * ahead: on a table far larger than the caches, check() then finds both in cache. */
    uint32_t ahead = i + CONV_LOOKAHEAD;
    if (p->n_conv && ahead < n && p->parsed[ahead])
      for (size_t r = 0; r < p->n_rules; r++)
        if (p->conv[r])
          intake_converge_prefetch(p->conv[r]->c, &p->events[ahead], 1);
    if (!p->parsed[i])
      continue;
    pend_t *e = &job->pends[i];
    void *first = NULL;
    switch (intake_dedup_check(p->dedup, &e->probe, (uint64_t)now, &first)) {
    case INTAKE_DEDUP_DUPLICATE:
      job->outcomes[i] = INTAKE_OUTCOME_DUPLICATE;
      COUNT(p, job, duplicate, 1);
      break;
    case INTAKE_DEDUP_IN_FLIGHT: {
      pend_t *o = first;
      e->kind = PEND_FOLLOWER;
      e->next_waiter = o->waiters;
      o->waiters = e;
      COUNT(p, job, in_flight, 1);
      job->pending++;
      break;
    }
    case INTAKE_DEDUP_NEW:
      if (intake_dedup_begin(p->dedup, &e->probe, e) < 0) {
        job->failed = 1;
        COUNT(p, job, failed, 1);
        break;
      }
      produce_event(p, job, i, &p->events[i], &bc);
      break;
    }
  }
  job_release(p, job);
  return 0;
}

void intake_pipeline_detach(intake_job_t *job) { job->owner = NULL; }
uint64_t intake_pipeline_jobs(const intake_pipeline_t *p) { return p->jobs; }
const intake_counters_t *intake_pipeline_counters(const intake_pipeline_t *p) { return &p->c; }
const char *intake_pipeline_bootstrap(const intake_pipeline_t *p) {
  return intake_sink_bootstrap(p->sink);
}
int intake_pipeline_is_embedded(const intake_pipeline_t *p) { return intake_sink_is_embedded(p->sink); }
uint64_t intake_pipeline_kafka_queue_depth(const intake_pipeline_t *p) {
  return intake_sink_queue_depth(p->sink);
}

uint32_t intake_job_events(const intake_job_t *job) { return job->n_events; }

void intake_pipeline_count_throttled(intake_pipeline_t *p, const char *gateway_id) {
  p->c.batches_throttled++;
  intake_gateway_stats_t *g = gateway_stats(p, gateway_id);
  if (g)
    g->batches_throttled++;
}

size_t intake_pipeline_gateway_stats(const intake_pipeline_t *p, intake_gateway_stats_t *const **out) {
  *out = p->gateways;
  return p->n_gateways;
}
size_t intake_pipeline_topic_stats(const intake_pipeline_t *p, const intake_topic_stats_t **out) {
  *out = p->topic_stats;
  return p->n_topic_stats;
}
size_t intake_pipeline_route_stats(const intake_pipeline_t *p, const intake_route_stats_t **out) {
  *out = p->route_stats;
  return p->n_route_stats;
}
const intake_latency_t *intake_pipeline_latency(const intake_pipeline_t *p) { return &p->latency; }
size_t intake_pipeline_converge_stats(const intake_pipeline_t *p,
                                      const intake_converge_stats_t **out) {
  *out = p->conv_stats;
  return p->n_conv_stats;
}
int intake_pipeline_kafka_ready(const intake_pipeline_t *p) { return intake_sink_ready(p->sink); }

void intake_pipeline_dedup_stats(const intake_pipeline_t *p, intake_dedup_stats_t *out) {
  intake_dedup_stats(p->dedup, out);
}

void intake_pipeline_snapshot_stats(const intake_pipeline_t *p, intake_snapshot_stats_t *out) {
  intake_persist_stats(p->persist, out);
}

void intake_pipeline_converge_snapshot_stats(const intake_pipeline_t *p,
                                             intake_converge_snapshot_stats_t *out) {
  *out = p->conv_snap;
}

void intake_pipeline_log_stats(const intake_pipeline_t *p) {
  const intake_counters_t *c = &p->c;
  intake_dedup_stats_t ds;
  intake_dedup_stats(p->dedup, &ds);
  intake_snapshot_stats_t ss;
  intake_persist_stats(p->persist, &ss);
  LOG_INFO("stats",
           "received=%llu delivered=%llu duplicate=%llu rejected=%llu failed=%llu in_flight=%llu "
           "batches=%llu batches_ok=%llu batches_retry=%llu batches_rejected=%llu "
           "batches_throttled=%llu records_delivered=%llu records_failed=%llu dead_letter_delivered=%llu "
           "dead_letter_failed=%llu kafka_queue=%llu dedup_entries=%llu dedup_sources=%llu "
           "dedup_bytes=%llu dedup_evictions=%llu dedup_effective_window_s=%llu "
           "dedup_keys_per_s=%llu dedup_snapshots=%llu dedup_snapshot_failed=%llu "
           "dedup_snapshot_ms=%llu dedup_snapshot_keys=%llu dedup_snapshot_loaded=%llu "
           "dedup_snapshot_load_errors=%llu converge_snapshot_loaded=%llu "
           "converge_snapshot_skipped=%llu converge_snapshot_load_errors=%llu",
           (unsigned long long)c->received, (unsigned long long)c->delivered,
           (unsigned long long)c->duplicate, (unsigned long long)c->rejected,
           (unsigned long long)c->failed, (unsigned long long)c->in_flight,
           (unsigned long long)c->batches, (unsigned long long)c->batches_ok,
           (unsigned long long)c->batches_retry, (unsigned long long)c->batches_rejected,
           (unsigned long long)c->batches_throttled, (unsigned long long)c->records_delivered, (unsigned long long)c->records_failed,
           (unsigned long long)c->dead_letter_delivered, (unsigned long long)c->dead_letter_failed,
           (unsigned long long)intake_sink_queue_depth(p->sink), (unsigned long long)ds.entries,
           (unsigned long long)ds.sources, (unsigned long long)ds.bytes,
           (unsigned long long)ds.evictions, (unsigned long long)(ds.effective_window_ms / 1000),
           (unsigned long long)p->dedup_watch.keys_per_s, (unsigned long long)ss.written,
           (unsigned long long)ss.failed, (unsigned long long)ss.last_ms,
           (unsigned long long)ss.last_keys, (unsigned long long)ss.loaded_keys,
           (unsigned long long)ss.load_errors, (unsigned long long)p->conv_snap.loaded_episodes,
           (unsigned long long)p->conv_snap.skipped_episodes,
           (unsigned long long)p->conv_snap.load_errors);
  for (size_t i = 0; i < p->n_conv_stats; i++) {
    const intake_converge_stats_t *cs = &p->conv_stats[i];
    LOG_INFO("converge stats",
             "route=%s episodes_opened=%llu repeats_suppressed=%llu summaries=%llu "
             "summaries_delivered=%llu summaries_failed=%llu summary_retries=%llu flapping=%llu "
             "evicted=%llu oversize=%llu episodes=%llu capacity=%llu",
             cs->name, (unsigned long long)cs->c.episodes_opened,
             (unsigned long long)cs->c.repeats_suppressed, (unsigned long long)cs->c.summaries,
             (unsigned long long)cs->summaries_delivered, (unsigned long long)cs->summaries_failed,
             (unsigned long long)cs->summary_retries, (unsigned long long)cs->c.flapping,
             (unsigned long long)cs->c.evicted, (unsigned long long)cs->c.oversize,
             (unsigned long long)cs->c.episodes, (unsigned long long)cs->c.capacity);
  }
}

static void on_sweep(uv_timer_t *t) {
  intake_pipeline_t *p = t->data;
  /* ~64k slots per 100 ms tick sweeps a 16M-slot table in under 30 s, at well under 1 ms a tick
   * (8x that while forgotten keys crowd a full table: dedup.h). While a snapshot exports the
   * tables it only moves the effective window (persist holds deletions). */
  intake_dedup_sweep(p->dedup, (uint64_t)wall_ms(), 65536);
  intake_dedup_watch(&p->dedup_watch, p->dedup, uv_now(t->loop));
}

/* ---- convergence summaries ---------------------------------------------------------------- */

static uint8_t *pb_varint(uint8_t *o, uint64_t v) {
  while (v >= 0x80) {
    *o++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *o++ = (uint8_t)v;
  return o;
}

static uint8_t *pb_bytes(uint8_t *o, uint32_t field, const void *b, size_t len) {
  o = pb_varint(o, (uint64_t)field << 3 | 2);
  o = pb_varint(o, len);
  memcpy(o, b, len);
  return o + len;
}

/* Writes an intake.v1.ConvergenceSummary (proto/intake.proto) into o, which holds at least
 * 96 + 2 * (route, source_id, type, last) bytes; returns the end. */
static uint8_t *encode_summary(uint8_t *o, const intake_converge_summary_t *s, const char *route) {
  if (s->source_id.len)
    o = pb_bytes(o, 1, s->source_id.ptr, s->source_id.len);
  if (s->type.len)
    o = pb_bytes(o, 2, s->type.ptr, s->type.len);
  o = pb_varint(o, 3 << 3);
  o = pb_varint(o, (uint64_t)s->first_seen_ms);
  o = pb_varint(o, 4 << 3);
  o = pb_varint(o, (uint64_t)s->last_seen_ms);
  if (s->repeat_count) {
    o = pb_varint(o, 5 << 3);
    o = pb_varint(o, s->repeat_count);
  }
  if (s->flapping) {
    o = pb_varint(o, 6 << 3);
    o = pb_varint(o, 1);
  }
  if (s->flap_count) {
    o = pb_varint(o, 7 << 3);
    o = pb_varint(o, s->flap_count);
  }
  o = pb_bytes(o, 8, s->last, s->last_len);
  o = pb_varint(o, 9 << 3);
  o = pb_varint(o, (uint64_t)s->reason);
  return pb_bytes(o, 10, route, strlen(route));
}

static void summary_produce(intake_pipeline_t *p, summary_rec_t *r) {
  static const char *const schema = "intake.v1.ConvergenceSummary";
  intake_sink_header_t h[] = {
      {"route", r->route, strlen(r->route)},
      {"kind", "summary", 7},
      {"schema", schema, strlen(schema)},
      {"content-type", "application/x-protobuf", 22},
  };
  r->tries++;
  int rc = intake_sink_produce(p->sink, r->topic, r->data, r->key_len, r->data + r->key_len,
                               r->value_len, h, sizeof h / sizeof h[0], r);
  if (rc < 0) {
    p->c.records_failed++;
    if (r->tries >= SUMMARY_MAX_TRIES) {
      r->st->summaries_failed++;
      free(r);
    } else {
      r->next = p->summary_retry;
      p->summary_retry = r;
    }
    return;
  }
  p->c.records_in_flight++;
  r->ts->produced++;
}

/* The converge callback: one summary record per topic of the rule. */
static void on_summary(void *ctx, const intake_converge_summary_t *s) {
  conv_route_t *cr = ctx;
  intake_pipeline_t *p = cr->p;
  size_t route_len = strlen(cr->name);
  size_t cap = 96 + 2 * (route_len + s->source_id.len + s->type.len + s->last_len);
  for (size_t t = 0; t < cr->n_topics; t++) {
    summary_rec_t *r = malloc(sizeof *r + s->source_id.len + cap);
    if (!r) {
      cr->st->summaries_failed++;
      continue;
    }
    memset(r, 0, sizeof *r);
    r->hdr.kind = PEND_SUMMARY;
    r->st = cr->st;
    r->topic = cr->topics[t];
    r->ts = cr->tstats[t];
    snprintf(r->route, sizeof r->route, "%s", cr->name);
    memcpy(r->data, s->source_id.ptr, s->source_id.len);
    r->key_len = s->source_id.len;
    r->value_len = (uint32_t)(encode_summary(r->data + r->key_len, s, cr->name) -
                              (r->data + r->key_len));
    if (cr->rstats)
      cr->rstats->records++;
    summary_produce(p, r);
  }
}

static void on_conv_tick(uv_timer_t *t) {
  intake_pipeline_t *p = t->data;
  int64_t now = wall_ms();
  size_t n_rules = p->router ? intake_router_n_rules(p->router) : 0;
  /* 8192 slots of 512 B per 100 ms tick: a default 16 MiB table (~32k episodes) is scanned
   * every 0.4 s, so an episode ends at most ~0.5 s after its window. */
  for (size_t i = 0; i < n_rules; i++)
    if (p->conv[i])
      intake_converge_tick(p->conv[i]->c, now, 8192);
  summary_rec_t *r = p->summary_retry;
  p->summary_retry = NULL;
  while (r) {
    summary_rec_t *next = r->next;
    r->st->summary_retries++;
    summary_produce(p, r);
    r = next;
  }
}

/* The entry named `name` in a fixed-capacity array of counter structs that start with their
 * `const char *name`, added (with a copy of the name) when new. NULL when full or out of memory.
 * Entries never move, so pointers to them stay valid for the pipeline's life. */
static void *stat_by_name(void *array, size_t elem_size, size_t *n, size_t cap, const char *name) {
  char *base = array;
  for (size_t i = 0; i < *n; i++)
    if (!strcmp(*(const char **)(base + i * elem_size), name))
      return base + i * elem_size;
  char *copy;
  if (*n == cap || !(copy = strdup(name)))
    return NULL;
  const char **entry = (const char **)(base + (*n)++ * elem_size);
  *entry = copy;
  return entry;
}

_Static_assert(offsetof(intake_topic_stats_t, name) == 0, "stat_by_name needs name first");
_Static_assert(offsetof(intake_route_stats_t, name) == 0, "stat_by_name needs name first");
_Static_assert(offsetof(intake_converge_stats_t, name) == 0, "stat_by_name needs name first");

static intake_converge_stats_t *conv_stat(intake_pipeline_t *p, const char *name) {
  return stat_by_name(p->conv_stats, sizeof *p->conv_stats, &p->n_conv_stats, MAX_CONV_STATS,
                      name);
}

static intake_converge_conf_t conv_conf(const intake_converge_config_t *c) {
  intake_converge_conf_t cc = {
      .key_source = c->key_source,
      .key_type = c->key_type,
      .key_attrs = (const char *const *)c->key_attrs,
      .n_key_attrs = c->n_key_attrs,
      .window_ms = c->window_ms,
      .refresh = c->refresh,
      .summary_every_ms = c->summary_every_ms,
      .flap_count = c->flap_count,
      .flap_window_ms = c->flap_window_ms,
      .memory_bytes = c->memory_bytes,
      .max_event_bytes = c->max_event_bytes,
  };
  return cc;
}

static void conv_route_free(conv_route_t *cr) {
  if (!cr)
    return;
  intake_converge_destroy(cr->c);
  free(cr);
}

/* Loads (save = 0) or writes the convergence snapshot, "<dedup.snapshot_path>.converge"
 * (pipeline/converge_persist.h), for the installed routing's converged rules, by name. */
static void conv_snapshot(intake_pipeline_t *p, int save) {
  char path[4096];
  if (!p->cfg->dedup_snapshot_path)
    return;
  intake_converge_target_t *t = calloc(p->n_rules + 1, sizeof *t);
  if (!t || intake_converge_persist_path(p->cfg->dedup_snapshot_path, path, sizeof path) < 0) {
    p->conv_snap.failed += save;
    p->conv_snap.load_errors += !save;
    LOG_ERROR("converge snapshot skipped: out of memory or path too long", "save=%d", save);
    free(t);
    return;
  }
  size_t n = 0;
  for (size_t i = 0; i < p->n_rules; i++)
    if (p->conv[i])
      t[n++] = (intake_converge_target_t){.name = p->conv[i]->name, .c = p->conv[i]->c};
  if (save)
    intake_converge_persist_save(path, t, n, wall_ms(), &p->conv_snap);
  else
    intake_converge_persist_load(path, t, n, wall_ms(), &p->conv_snap);
  free(t);
}

/* The installed routing's converged route named `name`, or NULL. */
static conv_route_t *conv_find(const intake_pipeline_t *p, const char *name) {
  if (!p->router || !p->conv)
    return NULL;
  for (size_t i = 0; i < intake_router_n_rules(p->router); i++)
    if (p->conv[i] && !strcmp(p->conv[i]->name, name))
      return p->conv[i];
  return NULL;
}

#define MAX_TOPIC_STATS 4096
#define MAX_ROUTE_STATS 4096

static void free_stats(intake_pipeline_t *p) {
  for (size_t i = 0; i < p->n_gateways; i++)
    free(p->gateways[i]);
  free(p->gateways);
  free(p->gateway_index);
  for (size_t i = 0; i < p->n_topic_stats; i++)
    free((char *)p->topic_stats[i].name);
  for (size_t i = 0; i < p->n_route_stats; i++)
    free((char *)p->route_stats[i].name);
  free(p->topic_stats);
  free(p->route_stats);
  for (size_t i = 0; i < p->n_conv_stats; i++)
    free((char *)p->conv_stats[i].name);
  free(p->conv_stats);
}


static intake_topic_stats_t *topic_stat(intake_pipeline_t *p, const char *name) {
  return stat_by_name(p->topic_stats, sizeof *p->topic_stats, &p->n_topic_stats, MAX_TOPIC_STATS,
                      name);
}

static intake_route_stats_t *route_stat(intake_pipeline_t *p, const char *name) {
  return stat_by_name(p->route_stats, sizeof *p->route_stats, &p->n_route_stats, MAX_ROUTE_STATS,
                      name);
}

/* The per-router state: the router itself and, by its topic and rule indexes, the sink topics
 * and counters. Built whole before it replaces the old one, so a failed reload changes nothing. */
typedef struct {
  intake_router_t *router;
  intake_sink_topic_t **topics;
  intake_topic_stats_t **tstats;
  intake_route_stats_t **rstats;
  conv_route_t **conv;
  intake_sink_topic_t *dead_letter;
  intake_topic_stats_t *dlq_stats;
} routing_t;

static void routing_free(routing_t *r) {
  if (r->conv)
    for (size_t i = 0; i < intake_router_n_rules(r->router); i++)
      conv_route_free(r->conv[i]);
  free(r->conv);
  intake_router_destroy(r->router);
  free(r->topics);
  free(r->tstats);
  free(r->rstats);
  memset(r, 0, sizeof *r);
}

static int routing_build(intake_pipeline_t *p, const intake_config_t *cfg, routing_t *r, char *err,
                         size_t errlen) {
  memset(r, 0, sizeof *r);
  if (!(r->router = intake_router_create(cfg, err, errlen)))
    return -1;
  size_t nt = intake_router_n_topics(r->router), nr = intake_router_n_rules(r->router);
  r->topics = calloc(nt, sizeof *r->topics);
  r->tstats = calloc(nt, sizeof *r->tstats);
  r->rstats = calloc(nr, sizeof *r->rstats);
  r->conv = calloc(nr, sizeof *r->conv);
  if (!r->topics || !r->tstats || !r->rstats || !r->conv)
    goto fail;
  for (size_t i = 0; i < nr; i++)
    if (!(r->rstats[i] = route_stat(p, intake_router_rule_name(r->router, i))))
      goto fail;
  for (size_t i = 0; i < nt; i++) {
    const char *name = intake_router_topic_name(r->router, i);
    intake_sink_ensure_topic(p->sink, name);
    if (!(r->tstats[i] = topic_stat(p, name)) ||
        !(r->topics[i] = intake_sink_topic(p->sink, name, r->tstats[i])))
      goto fail;
  }
  /* Converged rules (rule i of the config is rule i of the router): a table each, or the old
   * routing's table of the same name when its size fits (taken over at install). */
  for (size_t i = 0; i < cfg->n_rules && i < nr; i++) {
    const intake_route_rule_t *rule = &cfg->rules[i];
    if (!rule->converge.enabled)
      continue;
    conv_route_t *cr = calloc(1, sizeof *cr);
    if (!cr || !(cr->st = conv_stat(p, rule->name))) {
      free(cr);
      goto fail;
    }
    r->conv[i] = cr;
    cr->p = p;
    cr->name = cr->st->name;
    cr->rstats = r->rstats[i];
    cr->conf = conv_conf(&rule->converge);
    for (size_t t = 0; t < rule->n_topics && t < INTAKE_ROUTE_MAX_TOPICS; t++) {
      if (!(cr->tstats[t] = topic_stat(p, rule->topics[t])) ||
          !(cr->topics[t] = intake_sink_topic(p->sink, rule->topics[t], cr->tstats[t])))
        goto fail;
      cr->n_topics++;
    }
    conv_route_t *old = conv_find(p, rule->name);
    if (old && old->c && intake_converge_compatible(old->c, &cr->conf))
      cr->adopt = old;
    else if (!(cr->c = intake_converge_create(&cr->conf, on_summary, cr, &cr->st->c)))
      goto fail;
  }
  intake_sink_ensure_topic(p->sink, cfg->dead_letter_topic);
  if (!(r->dlq_stats = topic_stat(p, cfg->dead_letter_topic)) ||
      !(r->dead_letter = intake_sink_topic(p->sink, cfg->dead_letter_topic, r->dlq_stats)))
    goto fail;
  return 0;
fail:
  snprintf(err, errlen, "out of memory, or more than %d topics or rules", MAX_TOPIC_STATS);
  routing_free(r);
  return -1;
}

static void routing_install(intake_pipeline_t *p, routing_t *r) {
  /* Converge tables that the new routing takes over keep their episodes. */
  for (size_t i = 0; i < intake_router_n_rules(r->router); i++) {
    conv_route_t *cr = r->conv[i];
    if (cr && cr->adopt) {
      cr->c = cr->adopt->c;
      cr->adopt->c = NULL;
      cr->adopt = NULL;
      intake_converge_update(cr->c, &cr->conf, cr, &cr->st->c);
    }
  }
  p->conv = r->conv;
  p->n_rules = intake_router_n_rules(r->router);
  p->n_conv = 0;
  for (size_t i = 0; i < p->n_rules; i++)
    p->n_conv += r->conv[i] != NULL;
  p->router = r->router;
  p->topics = r->topics;
  p->tstats = r->tstats;
  p->rstats = r->rstats;
  p->dead_letter = r->dead_letter;
  p->dlq_stats = r->dlq_stats;
}

static void routing_uninstall(intake_pipeline_t *p, routing_t *r) {
  r->router = p->router;
  r->topics = p->topics;
  r->tstats = p->tstats;
  r->rstats = p->rstats;
  r->conv = p->conv;
  p->conv = NULL;
  p->n_rules = p->n_conv = 0;
  p->router = NULL;
  p->topics = NULL;
  p->tstats = NULL;
  p->rstats = NULL;
}

/* Sizes what depends on the config's limits: scratch arrays for the largest batch, the decoder's
 * bound, the in-flight watermarks. Returns 0 or -ENOMEM (then nothing changed). */
static int apply_limits(intake_pipeline_t *p, const intake_config_t *cfg) {
  if (!p->events || cfg->max_batch_events > p->events_cap) {
    intake_event_t *ev = calloc(cfg->max_batch_events, sizeof *ev);
    uint8_t *parsed = calloc(cfg->max_batch_events, 1);
    if (!ev || !parsed) {
      free(ev);
      free(parsed);
      return -ENOMEM;
    }
    free(p->events);
    free(p->parsed);
    p->events = ev;
    p->parsed = parsed;
    p->events_cap = cfg->max_batch_events;
  }
  size_t json_cap = 6 * (size_t)cfg->max_event_bytes + 513;
  if (json_cap > p->json_cap) {
    char *json = malloc(json_cap);
    if (!json)
      return -ENOMEM;
    free(p->json);
    p->json = json;
    p->json_cap = json_cap;
  }
  intake_decoder_t *dec = intake_decoder_create(cfg->max_decompressed_bytes);
  if (!dec)
    return -ENOMEM;
  intake_decoder_destroy(p->decoder);
  p->decoder = dec;
  /* Leave room for one whole batch fanned out to every route above the high-water mark. */
  uint64_t max = intake_sink_max_in_flight(p->sink);
  uint64_t batch = (uint64_t)cfg->max_batch_events * INTAKE_ROUTE_MAX_TOPICS;
  p->high_water = max > 2 * batch ? max - batch : max / 2;
  p->low_water = p->high_water / 2;
  return 0;
}

intake_pipeline_t *intake_pipeline_create(uv_loop_t *loop, const intake_config_t *cfg,
                                          intake_job_done_cb done, intake_pipeline_resume_cb resume,
                                          void *ctx, char *err, size_t errlen) {
  intake_pipeline_t *p = calloc(1, sizeof *p);
  err[0] = '\0';
  if (!p)
    goto oom;
  p->loop = loop;
  p->cfg = cfg;
  p->done = done;
  p->resume = resume;
  p->ctx = ctx;
  p->delivery_log.interval_ms = p->produce_log.interval_ms = 1000;
  p->dedup = intake_dedup_create(cfg->dedup_window_ms, cfg->dedup_memory_bytes,
                                 cfg->dedup_seq_memory_bytes);
  if (!p->dedup) {
    snprintf(err, errlen, "dedup: cannot allocate %llu + %llu bytes",
             (unsigned long long)cfg->dedup_memory_bytes,
             (unsigned long long)cfg->dedup_seq_memory_bytes);
    goto fail;
  }
  /* Before anything is served: retransmits of what was delivered before a restart are
   * recognized from the first batch. */
  if (cfg->dedup_snapshot_path) {
    p->persist = intake_persist_create(loop, p->dedup, cfg->dedup_snapshot_path,
                                       cfg->dedup_snapshot_interval_ms);
    if (!p->persist)
      goto oom;
  } else if (cfg->kafka_mode == INTAKE_KAFKA_BROKERS) {
    LOG_WARN("dedup state is not persisted (dedup.snapshot_path unset): after a restart, "
             "retransmits of events delivered before it are produced again",
             NULL);
  }
  p->topic_stats = calloc(MAX_TOPIC_STATS, sizeof *p->topic_stats);
  p->route_stats = calloc(MAX_ROUTE_STATS, sizeof *p->route_stats);
  p->gateways = calloc(INTAKE_MAX_GATEWAY_STATS + 1, sizeof *p->gateways);
  p->gateway_index = calloc(GATEWAY_INDEX_SLOTS, sizeof *p->gateway_index);
  p->conv_stats = calloc(MAX_CONV_STATS, sizeof *p->conv_stats);
  if (!p->topic_stats || !p->route_stats || !p->gateways || !p->gateway_index || !p->conv_stats)
    goto oom;
  /* The sink first (empty topic list: routing_build creates the embedded topics). */
  p->sink = intake_sink_create(loop, cfg, NULL, 0, on_delivery, p, err, errlen);
  if (!p->sink)
    goto fail;
  routing_t r;
  if (routing_build(p, cfg, &r, err, errlen) < 0)
    goto fail;
  routing_install(p, &r);
  if (apply_limits(p, cfg) < 0)
    goto oom;
  conv_snapshot(p, 0); /* before anything is served: repeats continue their episodes */
  uv_idle_init(loop, &p->idle);
  p->idle.data = p;
  uv_timer_init(loop, &p->sweep_timer);
  p->sweep_timer.data = p;
  uv_timer_start(&p->sweep_timer, on_sweep, 100, 100);
  uv_timer_init(loop, &p->conv_timer);
  p->conv_timer.data = p;
  uv_timer_start(&p->conv_timer, on_conv_tick, 100, 100);
  intake_persist_start(p->persist);
  return p;

oom:
  if (err[0] == '\0')
    snprintf(err, errlen, "out of memory");
fail:
  if (p) {
    routing_t built;
    routing_uninstall(p, &built);
    routing_free(&built);
    if (p->sink)
      intake_sink_destroy(p->sink);
    intake_persist_destroy(p->persist);
    intake_dedup_destroy(p->dedup);
    intake_decoder_destroy(p->decoder);
    free_stats(p);
    free(p->events);
    free(p->parsed);
    free(p->json);
    free(p);
  }
  return NULL;
}

static void on_closed(uv_handle_t *h) { (void)h; }

void intake_pipeline_close(intake_pipeline_t *p) {
  p->closing = 1;
  uv_close((uv_handle_t *)&p->idle, on_closed);
  uv_close((uv_handle_t *)&p->sweep_timer, on_closed);
  uv_close((uv_handle_t *)&p->conv_timer, on_closed);
  conv_snapshot(p, 1); /* the open episodes, for the next start; no tick runs after this */
  /* The final dedup snapshot: every job has completed (or the shutdown deadline passed, and
   * what Kafka confirms from here on is not in it). */
  intake_persist_close(p->persist);
  intake_sink_close(p->sink);
}

void intake_pipeline_destroy(intake_pipeline_t *p) {
  if (!p)
    return;
  p->closing = 1;               /* failed summaries are dropped, not queued for a retry */
  intake_sink_destroy(p->sink); /* fails what is still queued through on_delivery */
  for (summary_rec_t *r = p->summary_retry, *next; r; r = next) {
    next = r->next;
    r->st->summaries_failed++;
    free(r);
  }
  p->summary_retry = NULL;
  /* Jobs that completed during destroy are only freed: nobody is left to ack. */
  for (intake_job_t *j = p->ready, *next; j; j = next) {
    next = j->next_ready;
    j->owner = NULL;
    job_finish(p, j);
  }
  routing_t r;
  routing_uninstall(p, &r);
  routing_free(&r);
  intake_persist_destroy(p->persist);
  intake_dedup_destroy(p->dedup);
  intake_decoder_destroy(p->decoder);
  free_stats(p);
  free(p->events);
  free(p->parsed);
  free(p->json);
  free(p);
}

int intake_pipeline_reload(intake_pipeline_t *p, const intake_config_t *cfg, char *err,
                           size_t errlen) {
  routing_t fresh, old;
  if (routing_build(p, cfg, &fresh, err, errlen) < 0)
    return -1;
  if (apply_limits(p, cfg) < 0) {
    routing_free(&fresh);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  /* Nothing in flight refers to the router: records carry their pend and their topic's
   * counters, which live in the registry. So the old routing can go at once. */
  routing_uninstall(p, &old);
  p->router = old.router; /* install reads the old tables through p->conv */
  p->conv = old.conv;
  routing_install(p, &fresh);
  /* Tables no rule took over (the rule is gone, lost `converge` or changed its memory): their
   * open episodes end now, each with a summary (reason EVICTED) on the old rule's topics. */
  for (size_t i = 0; old.conv && i < intake_router_n_rules(old.router); i++)
    if (old.conv[i] && old.conv[i]->c)
      intake_converge_flush(old.conv[i]->c, INTAKE_SUMMARY_EVICTED);
  routing_free(&old);
  p->cfg = cfg;
  intake_dedup_set_window(p->dedup, cfg->dedup_window_ms, (uint64_t)wall_ms());
  intake_persist_set_interval(p->persist, cfg->dedup_snapshot_interval_ms);
  return 0;
}
