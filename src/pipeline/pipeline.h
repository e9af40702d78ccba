/* The pipeline joins the stages for one batch: decode → validate → dedup → route → sink, and
 * turns Kafka's delivery reports back into the batch's ack.
 *
 * A submitted batch becomes a job. Every accepted event is produced to each of its topics; a
 * rejected event goes to the dead-letter topic; a duplicate produces nothing; a retransmit
 * whose first copy is still in flight follows that copy's outcome. The job completes — and
 * its `done` callback fires, always from a delivery report or a later loop iteration, never
 * from within submit — once every record it produced is confirmed or failed. Only then is the
 * gateway acked: OK when everything was confirmed, RETRY when anything failed. */
#ifndef INTAKE_PIPELINE_H
#define INTAKE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "converge/converge.h"
#include "decode/validate.h"
#include "dedup/dedup.h"
#include "pipeline/converge_persist.h"
#include "pipeline/persist.h"

typedef struct intake_pipeline intake_pipeline_t;
typedef struct intake_job intake_job_t;

/* Per-event outcome, the values of intake.v1.Outcome. CONVERGED: accepted, and suppressed on at
 * least one converged route (every record it did produce is confirmed). */
enum {
  INTAKE_OUTCOME_ACCEPTED = 0,
  INTAKE_OUTCOME_DUPLICATE = 1,
  INTAKE_OUTCOME_REJECTED = 2,
  INTAKE_OUTCOME_CONVERGED = 3
};
/* Batch status, the values of intake.v1.BatchStatus. */
enum { INTAKE_BATCH_STATUS_OK = 0, INTAKE_BATCH_STATUS_RETRY = 1, INTAKE_BATCH_STATUS_REJECTED = 2 };

typedef struct {
  uint32_t index;
  intake_reject_t reason;
  char detail[96];
} intake_rejection_t;

typedef struct {
  uint64_t seq;
  int status;                       /* INTAKE_BATCH_STATUS_* */
  uint32_t n_events;
  const uint8_t *outcomes;          /* n_events entries when status is OK, else NULL */
  const intake_rejection_t *rejections;
  size_t n_rejections;
  const char *detail;               /* for RETRY / REJECTED */
} intake_batch_result_t;

/* Event counters. At every moment:
 *   received = delivered + duplicate + rejected + failed + in_flight */
typedef struct {
  uint64_t received;                /* events in accepted batches */
  uint64_t delivered;               /* produced and confirmed by Kafka on every route */
  uint64_t duplicate;               /* not produced: seen within the window, or followed a copy */
  uint64_t rejected;                /* invalid: answered REJECTED, sent to the dead-letter topic */
  uint64_t failed;                  /* Kafka did not confirm: the batch was answered RETRY */
  uint64_t in_flight;               /* waiting for Kafka */
  uint64_t batches;                 /* batches submitted */
  uint64_t batches_ok, batches_retry, batches_rejected;
  uint64_t batches_throttled;       /* answered RETRY for the gateway rate limit, unprocessed
                                       (not in `batches`: their events were never received) */
  uint64_t records_in_flight;       /* records produced, not yet reported */
  uint64_t records_delivered, records_failed;
  uint64_t dead_letter_delivered, dead_letter_failed;
  uint64_t rejected_by_reason[INTAKE_REJECT_COUNT];
} intake_counters_t;

/* The event counters of one gateway; they reconcile like the totals. */
typedef struct {
  uint64_t received, delivered, duplicate, rejected, failed, in_flight;
} intake_event_counts_t;

#define INTAKE_MAX_GATEWAY_STATS 4096 /* distinct gateway ids counted; later ones count as "_other" */

typedef struct {
  char id[65];
  intake_event_counts_t c;
  uint64_t batches_throttled;       /* see intake_counters_t */
} intake_gateway_stats_t;

/* Records per topic (rule topics, the default topic, and last the dead-letter topic);
 * in flight = produced - delivered - failed. */
typedef struct {
  const char *name;
  uint64_t produced, delivered, failed;
} intake_topic_stats_t;

/* Records each rule sent to its topics ("default" last). */
typedef struct {
  const char *name;
  uint64_t records;
} intake_route_stats_t;

/* Convergence counters of a rule with `converge` (by rule name; kept across reloads). */
typedef struct {
  const char *name;
  intake_converge_counters_t c;     /* episodes, repeats, summaries emitted, flapping, ... */
  uint64_t summaries_delivered;     /* summary records Kafka confirmed */
  uint64_t summaries_failed;        /* summary records given up after their retries */
  uint64_t summary_retries;         /* summary records produced again after a failure */
} intake_converge_stats_t;

/* Delivery latency of accepted events, from the batch's arrival to Kafka's confirmation of the
 * event's last record, in loop-clock milliseconds. counts[i] holds events with latency <=
 * intake_latency_bounds_ms[i] (and above the previous bound); the last bound is +Inf. */
#define INTAKE_LATENCY_BUCKETS 14
extern const double intake_latency_bounds_ms[INTAKE_LATENCY_BUCKETS];
typedef struct {
  uint64_t counts[INTAKE_LATENCY_BUCKETS];
  uint64_t count;
  uint64_t sum_ms;
} intake_latency_t;

/* Called when a job completes. `owner` is what submit got; the result lives until the callback
 * returns. Not called for jobs that were detached. */
typedef void (*intake_job_done_cb)(void *owner, intake_job_t *job, const intake_batch_result_t *r);

/* Called when the pipeline, after refusing a submit with -EAGAIN, can take work again. */
typedef void (*intake_pipeline_resume_cb)(void *ctx);

/* Creates the pipeline and its Kafka producer. `cfg` must outlive the pipeline. Returns NULL with
 * a message in err. */
intake_pipeline_t *intake_pipeline_create(uv_loop_t *loop, const intake_config_t *cfg,
                                          intake_job_done_cb done, intake_pipeline_resume_cb resume,
                                          void *ctx, char *err, size_t errlen);

/* Errors of intake_pipeline_submit() that are the gateway's fault: a protocol error. */
enum { INTAKE_SUBMIT_MALFORMED = -1001, INTAKE_SUBMIT_BAD_ZSTD = -1002 };

/* Applies a new config: routes, validation limits, batch size and dedup window (the dedup
 * state is kept). Built whole before anything changes: on error (-1, message in err) the old
 * config stays in force. `cfg` must outlive the pipeline or the next reload; the caller keeps
 * the fields that need a restart (listen, kafka, dedup memory) equal to the running ones. */
int intake_pipeline_reload(intake_pipeline_t *p, const intake_config_t *cfg, char *err,
                           size_t errlen);

/* Submits one BATCH frame payload from gateway `gateway_id` (copied as needed; the payload may
 * be reused when submit returns). On 0, *job is set and `done(owner, job, result)` fires later.
 * Returns -EAGAIN when too many records are in flight (nothing was done: submit again after the
 * resume callback), INTAKE_SUBMIT_MALFORMED / INTAKE_SUBMIT_BAD_ZSTD with *detail set (a
 * protocol error for the connection), or -ENOMEM. */
int intake_pipeline_submit(intake_pipeline_t *p, const uint8_t *payload, size_t len,
                           const char *gateway_id, void *owner, intake_job_t **job,
                           const char **detail);

/* The owner goes away (connection closed): the job still completes — its records are still
 * delivered and dedup still learns from them — but no done callback fires for it. */
void intake_pipeline_detach(intake_job_t *job);

/* Events in the job's batch (known once submit returned 0). */
uint32_t intake_job_events(const intake_job_t *job);

/* Counts a batch of `gateway_id` answered RETRY for its rate limit without being submitted. */
void intake_pipeline_count_throttled(intake_pipeline_t *p, const char *gateway_id);

/* Jobs not yet completed. */
uint64_t intake_pipeline_jobs(const intake_pipeline_t *p);

const intake_counters_t *intake_pipeline_counters(const intake_pipeline_t *p);

/* Kafka bootstrap address (the embedded cluster's in embedded mode). */
const char *intake_pipeline_bootstrap(const intake_pipeline_t *p);
int intake_pipeline_is_embedded(const intake_pipeline_t *p);
uint64_t intake_pipeline_kafka_queue_depth(const intake_pipeline_t *p);

size_t intake_pipeline_gateway_stats(const intake_pipeline_t *p, intake_gateway_stats_t *const **out);
size_t intake_pipeline_topic_stats(const intake_pipeline_t *p, const intake_topic_stats_t **out);
size_t intake_pipeline_route_stats(const intake_pipeline_t *p, const intake_route_stats_t **out);
const intake_latency_t *intake_pipeline_latency(const intake_pipeline_t *p);
/* Convergence counters of every rule that has had `converge`. */
size_t intake_pipeline_converge_stats(const intake_pipeline_t *p,
                                      const intake_converge_stats_t **out);
/* Whether Kafka is reachable (see intake_sink_ready()). */
int intake_pipeline_kafka_ready(const intake_pipeline_t *p);

void intake_pipeline_dedup_stats(const intake_pipeline_t *p, intake_dedup_stats_t *out);

/* The dedup snapshot counters (pipeline/persist.h); all zero when dedup.snapshot_path is unset. */
void intake_pipeline_snapshot_stats(const intake_pipeline_t *p, intake_snapshot_stats_t *out);

/* The convergence snapshot counters (pipeline/converge_persist.h); all zero when
 * dedup.snapshot_path is unset. */
void intake_pipeline_converge_snapshot_stats(const intake_pipeline_t *p,
                                             intake_converge_snapshot_stats_t *out);

/* Logs the counters (msg="stats") at info level. */
void intake_pipeline_log_stats(const intake_pipeline_t *p);

/* Stops the timers and the producer's queue watch; every job must have completed, or is failed
 * now. Then destroy after the loop has run the close callbacks. */
void intake_pipeline_close(intake_pipeline_t *p);
void intake_pipeline_destroy(intake_pipeline_t *p);

#endif
