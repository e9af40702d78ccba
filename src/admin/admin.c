#include "admin/admin.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <librdkafka/rdkafka.h>

#include "core/log.h"
#include "core/loopwatch.h"
#include "core/wbuf.h"
#include "decode/validate.h"
#include "pipeline/pipeline.h"

enum {
  MAX_BODY = 4096,              /* request body (only POST /-/reload takes one, and ignores it) */
  MEMORY_LIMIT = 16 * 1024,     /* MHD's per-connection buffer: request line and headers */
  MAX_CONNECTIONS = 64,         /* scrapers and probes; more are refused by MHD */
  IDLE_TIMEOUT_S = 10,
  METRICS_GUESS = 64 * 1024,    /* first buffer for /metrics; a second pass gets the exact size */
};

struct intake_admin {
  uv_loop_t *loop;
  struct MHD_Daemon *mhd;
  uv_poll_t poll;               /* MHD's epoll descriptor */
  uv_timer_t timer;             /* MHD_get_timeout(): connection timeouts, pending work */
  int handles_open;             /* poll + timer; freed when both are closed */
  intake_server_t *server;
  const char *version;
  intake_admin_reload_cb reload;
  void *reload_ctx;
  double start_time;            /* Unix seconds at create */
  char address[64];
  void (*done)(void *);
  void *done_arg;
  intake_log_limit_t error_log; /* MHD's own error messages */
  intake_loopwatch_t *loopwatch; /* the loop's busy time per iteration (NULL: out of memory) */
};

/* ---- /metrics ------------------------------------------------------------------------------ */

/* Label values escape \, " and newline (exposition format 0.0.4). */
static void label_value(intake_wbuf_t *w, const char *s) {
  for (; *s; s++) {
    if (*s == '\\')
      intake_wbuf_put(w, "\\\\", 2);
    else if (*s == '"')
      intake_wbuf_put(w, "\\\"", 2);
    else if (*s == '\n')
      intake_wbuf_put(w, "\\n", 2);
    else
      intake_wbuf_putc(w, *s);
  }
}

static void meta(intake_wbuf_t *w, const char *name, const char *type, const char *help) {
  intake_wbuf_printf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{label="value"} v`; label may be NULL. */
static void sample(intake_wbuf_t *w, const char *name, const char *label, const char *value,
                   uint64_t v) {
  intake_wbuf_puts(w, name);
  if (label) {
    intake_wbuf_printf(w, "{%s=\"", label);
    label_value(w, value);
    intake_wbuf_put(w, "\"}", 2);
  }
  intake_wbuf_putc(w, ' ');
  intake_wbuf_u64(w, v);
  intake_wbuf_putc(w, '\n');
}

static void metric(intake_wbuf_t *w, const char *name, const char *type, const char *help,
                   uint64_t v) {
  meta(w, name, type, help);
  sample(w, name, NULL, NULL, v);
}

/* A gauge in seconds from a count of `per_second` units (ms, us). */
static void seconds(intake_wbuf_t *w, const char *name, const char *help, uint64_t v,
                    double per_second) {
  meta(w, name, "gauge", help);
  intake_wbuf_printf(w, "%s %.6f\n", name, (double)v / per_second);
}

/* A histogram from per-bucket counts (not cumulative) with bounds in ms; the last bound is +Inf. */
static void histogram(intake_wbuf_t *w, const char *name, const char *help, const double *bounds_ms,
                      const uint64_t *counts, int n, double sum_s, uint64_t count) {
  meta(w, name, "histogram", help);
  uint64_t cum = 0;
  for (int i = 0; i < n; i++) {
    cum += counts[i];
    if (i == n - 1)
      intake_wbuf_printf(w, "%s_bucket{le=\"+Inf\"} ", name);
    else
      intake_wbuf_printf(w, "%s_bucket{le=\"%g\"} ", name, bounds_ms[i] / 1000.0);
    intake_wbuf_u64(w, cum);
    intake_wbuf_putc(w, '\n');
  }
  intake_wbuf_printf(w, "%s_sum %.6f\n", name, sum_s);
  intake_wbuf_printf(w, "%s_count ", name);
  intake_wbuf_u64(w, count);
  intake_wbuf_putc(w, '\n');
}

/* One family over the gateways: the uint64_t at `offset` of intake_gateway_stats_t. */
static void gateway_family(intake_wbuf_t *w, intake_gateway_stats_t *const *gw, size_t n,
                           const char *name, const char *type, const char *help, size_t offset) {
  meta(w, name, type, help);
  for (size_t i = 0; i < n; i++) {
    uint64_t v;
    memcpy(&v, (const char *)gw[i] + offset, sizeof v);
    sample(w, name, "gateway", gw[i]->id, v);
  }
}

static void render_metrics(intake_admin_t *a, intake_wbuf_t *w) {
  intake_pipeline_t *p = intake_server_pipeline(a->server);
  const intake_counters_t *c = intake_pipeline_counters(p);

  meta(w, "intake_build_info", "gauge", "Build and library versions; always 1.");
  intake_wbuf_puts(w, "intake_build_info{version=\"");
  label_value(w, a->version);
  intake_wbuf_printf(w, "\",librdkafka=\"%s\",libuv=\"%s\",libmicrohttpd=\"%s\"} 1\n",
                     rd_kafka_version_str(), uv_version_string(), MHD_get_version());
  meta(w, "intake_process_start_time_seconds", "gauge", "Start time of the process, Unix seconds.");
  intake_wbuf_printf(w, "intake_process_start_time_seconds %.3f\n", a->start_time);
  size_t rss = 0;
  if (uv_resident_set_memory(&rss) == 0)
    metric(w, "intake_process_resident_memory_bytes", "gauge", "Resident memory of the process.",
           rss);

  /* Events: received = delivered + duplicate + rejected + failed + in_flight at every scrape. */
  metric(w, "intake_events_received_total", "counter",
         "Events in accepted batches; = delivered + duplicate + rejected + failed + in_flight.",
         c->received);
  metric(w, "intake_events_delivered_total", "counter",
         "Events produced and confirmed by Kafka on every route.", c->delivered);
  metric(w, "intake_events_duplicate_total", "counter",
         "Events not produced: seen within the dedup window, or followed an in-flight copy.",
         c->duplicate);
  metric(w, "intake_events_rejected_total", "counter",
         "Invalid events: answered REJECTED and written to the dead-letter topic.", c->rejected);
  metric(w, "intake_events_failed_total", "counter",
         "Events Kafka did not confirm; their batches were answered RETRY.", c->failed);
  metric(w, "intake_events_in_flight", "gauge", "Events waiting for Kafka.", c->in_flight);
  meta(w, "intake_events_rejected_by_reason_total", "counter",
       "Invalid events by reject reason (intake.v1.RejectReason).");
  for (int r = 1; r < INTAKE_REJECT_COUNT; r++)
    sample(w, "intake_events_rejected_by_reason_total", "reason",
           intake_reject_name((intake_reject_t)r), c->rejected_by_reason[r]);

  metric(w, "intake_batches_received_total", "counter", "Batches submitted by gateways.",
         c->batches);
  meta(w, "intake_batches_answered_total", "counter", "Batches acknowledged, by BatchAck status.");
  sample(w, "intake_batches_answered_total", "status", "ok", c->batches_ok);
  sample(w, "intake_batches_answered_total", "status", "retry", c->batches_retry);
  sample(w, "intake_batches_answered_total", "status", "rejected", c->batches_rejected);
  metric(w, "intake_batches_throttled_total", "counter",
         "Batches answered RETRY with retry_after_ms for gateway.rate_limit, not processed.",
         c->batches_throttled);
  metric(w, "intake_batches_in_flight", "gauge", "Batches not yet acknowledged.",
         intake_pipeline_jobs(p));

  metric(w, "intake_records_in_flight", "gauge",
         "Kafka records produced and not yet reported (dead-letter records included).",
         c->records_in_flight);
  metric(w, "intake_records_delivered_total", "counter",
         "Kafka records confirmed on the routed topics (dead-letter records not included).",
         c->records_delivered);
  metric(w, "intake_records_failed_total", "counter",
         "Kafka records that failed on the routed topics (dead-letter records not included).",
         c->records_failed);
  metric(w, "intake_dead_letter_records_delivered_total", "counter",
         "Dead-letter records confirmed.", c->dead_letter_delivered);
  metric(w, "intake_dead_letter_records_failed_total", "counter", "Dead-letter records that failed.",
         c->dead_letter_failed);

  intake_gateway_stats_t *const *gw;
  size_t n_gw = intake_pipeline_gateway_stats(p, &gw);
#define GW(name, type, help, field)                                                            \
  gateway_family(w, gw, n_gw, name, type, help, offsetof(intake_gateway_stats_t, field))
  GW("intake_gateway_events_received_total", "counter",
     "Events received per gateway id (\"_other\" past 4096 ids); they reconcile like the totals.",
     c.received);
  GW("intake_gateway_events_delivered_total", "counter", "Events delivered per gateway.",
     c.delivered);
  GW("intake_gateway_events_duplicate_total", "counter", "Duplicate events per gateway.",
     c.duplicate);
  GW("intake_gateway_events_rejected_total", "counter", "Rejected events per gateway.", c.rejected);
  GW("intake_gateway_events_failed_total", "counter", "Failed events per gateway.", c.failed);
  GW("intake_gateway_events_in_flight", "gauge", "Events waiting for Kafka per gateway.",
     c.in_flight);
  GW("intake_gateway_batches_throttled_total", "counter",
     "Batches answered RETRY for gateway.rate_limit per gateway.", batches_throttled);
#undef GW

  const intake_topic_stats_t *t;
  size_t n_t = intake_pipeline_topic_stats(p, &t);
  meta(w, "intake_topic_records_produced_total", "counter", "Records produced per topic.");
  for (size_t i = 0; i < n_t; i++)
    sample(w, "intake_topic_records_produced_total", "topic", t[i].name, t[i].produced);
  meta(w, "intake_topic_records_delivered_total", "counter", "Records confirmed per topic.");
  for (size_t i = 0; i < n_t; i++)
    sample(w, "intake_topic_records_delivered_total", "topic", t[i].name, t[i].delivered);
  meta(w, "intake_topic_records_failed_total", "counter", "Records failed per topic.");
  for (size_t i = 0; i < n_t; i++)
    sample(w, "intake_topic_records_failed_total", "topic", t[i].name, t[i].failed);
  meta(w, "intake_topic_records_in_flight", "gauge",
       "Records not yet reported per topic (produced - delivered - failed).");
  for (size_t i = 0; i < n_t; i++)
    sample(w, "intake_topic_records_in_flight", "topic", t[i].name,
           t[i].produced - t[i].delivered - t[i].failed);

  const intake_route_stats_t *r;
  size_t n_r = intake_pipeline_route_stats(p, &r);
  meta(w, "intake_route_records_total", "counter",
       "Records each routing rule sent to its topics (\"default\": the default topic).");
  for (size_t i = 0; i < n_r; i++)
    sample(w, "intake_route_records_total", "route", r[i].name, r[i].records);

  /* Alarm convergence, per rule with `converge`. */
  const intake_converge_stats_t *cv;
  size_t n_cv = intake_pipeline_converge_stats(p, &cv);
  static const struct {
    const char *name, *type, *help;
    size_t off;
  } cvm[] = {
      {"intake_converge_episodes_opened_total", "counter", "Episodes opened (first events passed).",
       offsetof(intake_converge_stats_t, c.episodes_opened)},
      {"intake_converge_repeats_suppressed_total", "counter",
       "Events suppressed on a converged route (still delivered on routes without convergence).",
       offsetof(intake_converge_stats_t, c.repeats_suppressed)},
      {"intake_converge_summaries_total", "counter", "Summaries emitted (one record per topic).",
       offsetof(intake_converge_stats_t, c.summaries)},
      {"intake_converge_summary_records_delivered_total", "counter",
       "Summary records Kafka confirmed.", offsetof(intake_converge_stats_t, summaries_delivered)},
      {"intake_converge_summary_records_failed_total", "counter",
       "Summary records given up after their retries.",
       offsetof(intake_converge_stats_t, summaries_failed)},
      {"intake_converge_summary_retries_total", "counter",
       "Summary records produced again after a failure.",
       offsetof(intake_converge_stats_t, summary_retries)},
      {"intake_converge_flapping_total", "counter", "Sources reported as flapping.",
       offsetof(intake_converge_stats_t, c.flapping)},
      {"intake_converge_evictions_total", "counter",
       "Episodes closed early because the table was full.",
       offsetof(intake_converge_stats_t, c.evicted)},
      {"intake_converge_oversize_total", "counter",
       "Events over converge.max_event_bytes, passed unconverged.",
       offsetof(intake_converge_stats_t, c.oversize)},
      {"intake_converge_episodes", "gauge", "Episodes held.",
       offsetof(intake_converge_stats_t, c.episodes)},
      {"intake_converge_capacity", "gauge", "Episode slots.",
       offsetof(intake_converge_stats_t, c.capacity)},
  };
  for (size_t m = 0; n_cv && m < sizeof cvm / sizeof cvm[0]; m++) {
    meta(w, cvm[m].name, cvm[m].type, cvm[m].help);
    for (size_t i = 0; i < n_cv; i++)
      sample(w, cvm[m].name, "route", cv[i].name,
             *(const uint64_t *)((const char *)&cv[i] + cvm[m].off));
  }

  intake_dedup_stats_t ds;
  intake_pipeline_dedup_stats(p, &ds);
  metric(w, "intake_dedup_entries", "gauge", "(source, event id) keys held.", ds.entries);
  metric(w, "intake_dedup_capacity", "gauge", "Slots in the event-id table.", ds.capacity);
  metric(w, "intake_dedup_sources", "gauge", "Per-source sequence windows held.", ds.sources);
  metric(w, "intake_dedup_source_capacity", "gauge", "Slots in the source table.",
         ds.source_capacity);
  metric(w, "intake_dedup_in_flight", "gauge", "Keys whose first copy is waiting for Kafka.",
         ds.in_flight);
  metric(w, "intake_dedup_memory_bytes", "gauge", "Memory held by the dedup tables.", ds.bytes);
  metric(w, "intake_dedup_evictions_total", "counter",
         "Keys or windows forgotten before their window because a table was full (oldest first).",
         ds.evictions);
  metric(w, "intake_dedup_forced_evictions_total", "counter",
         "Of those, keys evicted by a full probe run instead of by age (the sweep fell behind).",
         ds.forced_evictions);
  metric(w, "intake_dedup_commits_total", "counter",
         "Keys stored new in the event-id table (its rate is what the memory must hold).",
         ds.commits);
  seconds(w, "intake_dedup_window_seconds", "dedup.window: how long a delivered event is a "
          "duplicate, while memory holds it.", ds.window_ms, 1000.0);
  seconds(w, "intake_dedup_effective_window_seconds",
          "Every event committed this recently is still recognized: dedup.window until the "
          "table is full, then less (oldest keys are forgotten first).",
          ds.effective_window_ms, 1000.0);
  metric(w, "intake_dedup_expired_total", "counter", "Keys or windows dropped after their window.",
         ds.expired);

  /* dedup.snapshot_path: all zero when unset. */
  intake_snapshot_stats_t snap;
  intake_pipeline_snapshot_stats(p, &snap);
  meta(w, "intake_dedup_snapshots_total", "counter",
       "Dedup snapshots by result: written (the final one included), failed (the previous file "
       "stays), skipped (the previous one was still being written).");
  sample(w, "intake_dedup_snapshots_total", "result", "written", snap.written);
  sample(w, "intake_dedup_snapshots_total", "result", "failed", snap.failed);
  sample(w, "intake_dedup_snapshots_total", "result", "skipped", snap.skipped);
  seconds(w, "intake_dedup_snapshot_last_seconds",
          "Duration of the last snapshot written, start to rename.", snap.last_ms, 1e3);
  seconds(w, "intake_dedup_snapshot_last_loop_seconds",
          "Event-loop time the last snapshot took (its export steps, summed).", snap.last_loop_us,
          1e6);
  metric(w, "intake_dedup_snapshot_last_keys", "gauge", "Keys in the last snapshot written.",
         snap.last_keys);
  metric(w, "intake_dedup_snapshot_last_bytes", "gauge", "File size of the last snapshot written.",
         snap.last_bytes);
  seconds(w, "intake_dedup_snapshot_last_created_seconds",
          "Unix time the last snapshot written started: it holds every key committed before.",
          snap.last_created_ms, 1e3);
  metric(w, "intake_dedup_snapshot_loaded_keys", "gauge", "Keys loaded from the snapshot at start.",
         snap.loaded_keys);
  metric(w, "intake_dedup_snapshot_load_errors_total", "counter",
         "1 when the snapshot found at start was unusable (reported, moved aside, ignored).",
         snap.load_errors);

  /* "<dedup.snapshot_path>.converge": the open convergence episodes across a restart. */
  intake_converge_snapshot_stats_t cs;
  intake_pipeline_converge_snapshot_stats(p, &cs);
  metric(w, "intake_converge_snapshot_loaded_episodes", "gauge",
         "Convergence episodes loaded from the snapshot at start.", cs.loaded_episodes);
  metric(w, "intake_converge_snapshot_skipped_episodes", "gauge",
         "Episodes in the snapshot found at start that were not loaded (rule gone or its key "
         "changed, or refused by the table).",
         cs.skipped_episodes);
  metric(w, "intake_converge_snapshot_load_errors_total", "counter",
         "1 when the convergence snapshot found at start was unusable (reported, moved aside, "
         "ignored).",
         cs.load_errors);

  metric(w, "intake_kafka_queue_depth", "gauge", "Records queued in librdkafka, not yet reported.",
         intake_pipeline_kafka_queue_depth(p));
  metric(w, "intake_kafka_ready", "gauge", "1 while a Kafka broker is reachable.",
         intake_pipeline_kafka_ready(p) ? 1 : 0);

  const intake_latency_t *lat = intake_pipeline_latency(p);
  histogram(w, "intake_delivery_latency_seconds",
            "Accepted events, from the batch's arrival to Kafka's confirmation of their last "
            "record.",
            intake_latency_bounds_ms, lat->counts, INTAKE_LATENCY_BUCKETS,
            (double)lat->sum_ms / 1000.0, lat->count);

  if (a->loopwatch) {
    intake_loopwatch_stats_t lw;
    intake_loopwatch_stats(a->loopwatch, &lw);
    histogram(w, "intake_loop_busy_seconds",
              "Event-loop iterations by the time they worked between two waits for I/O (what an "
              "ack may wait behind).",
              intake_loopwatch_bounds_ms, lw.counts, INTAKE_LOOPWATCH_BUCKETS,
              (double)lw.busy_ns / 1e9, lw.iterations);
    seconds(w, "intake_loop_busy_max_seconds", "The longest event-loop iteration since start.",
            lw.busy_max_ns, 1e9);
    seconds(w, "intake_loop_cpu_max_seconds",
            "The most CPU time one event-loop iteration used since start (our own work, unlike "
            "a busy time stretched by a crowded machine).",
            lw.cpu_max_ns, 1e9);
  }

  intake_server_stats_t ss;
  intake_server_stats(a->server, &ss);
  metric(w, "intake_connections", "gauge", "Gateway connections open.", ss.connections);
  metric(w, "intake_connections_accepted_total", "counter", "Gateway connections accepted.",
         ss.accepted);
  metric(w, "intake_connections_refused_total", "counter",
         "Gateway connections refused over listen.max_connections.", ss.refused);
  metric(w, "intake_protocol_errors_total", "counter",
         "Gateway connections closed with a ProtocolError.", ss.protocol_errors);
  metric(w, "intake_auth_failures_total", "counter",
         "HELLOs refused: unknown id, wrong token, or not the id of the TLS client certificate.",
         ss.auth_failures);
  metric(w, "intake_tls_handshake_failures_total", "counter",
         "Gateway TLS handshakes that failed (refused certificates, peers not speaking TLS, "
         "handshake timeouts).", ss.tls_failures);
  metric(w, "intake_backpressure_pauses_total", "counter",
         "Times a connection stopped reading because Kafka was behind.", ss.paused);
  metric(w, "intake_slow_reader_pauses_total", "counter",
         "Times a connection stopped being read because its unread acks passed "
         "listen.write_backlog.", ss.write_blocked);
  metric(w, "intake_connection_timeouts_total", "counter",
         "Connections closed for gateway.hello_timeout or listen.idle_timeout.", ss.timeouts);
  metric(w, "intake_connections_lingered_out_total", "counter",
         "Closing connections whose last frames the gateway never read.", ss.linger_closed);
}

size_t intake_admin_metrics(intake_admin_t *a, char *buf, size_t cap) {
  intake_wbuf_t w;
  intake_wbuf_init(&w, buf, cap);
  render_metrics(a, &w);
  return intake_wbuf_finish(&w);
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

typedef struct {
  size_t body;                  /* request body bytes seen */
} request_t;

static const char TEXT[] = "text/plain; charset=utf-8";

/* Queues a response; `body` is copied unless `owned` (then MHD frees it). */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body, size_t len, int owned, const char *allow) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
  if (!resp) {
    if (owned)
      free(body);
    return MHD_NO;
  }
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (allow)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result rc = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text) {
  return reply(conn, status, TEXT, (char *)text, strlen(text), 0, NULL);
}

static enum MHD_Result serve_metrics(intake_admin_t *a, struct MHD_Connection *conn) {
  size_t cap = METRICS_GUESS;
  char *buf = malloc(cap);
  if (!buf)
    return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
  size_t len = intake_admin_metrics(a, buf, cap);
  if (len >= cap) { /* nothing changes between the passes: this runs on the loop thread */
    cap = len + 1;
    char *nb = realloc(buf, cap);
    if (!nb) {
      free(buf);
      return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    buf = nb;
    len = intake_admin_metrics(a, buf, cap);
  }
  return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", buf, len, 1, NULL);
}

static enum MHD_Result serve_readyz(intake_admin_t *a, struct MHD_Connection *conn) {
  if (intake_server_stopping(a->server))
    return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready: shutting down\n");
  if (!intake_pipeline_kafka_ready(intake_server_pipeline(a->server)))
    return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                      "not ready: no Kafka broker reachable\n");
  return reply_text(conn, MHD_HTTP_OK, "ready\n");
}

static enum MHD_Result serve_reload(intake_admin_t *a, struct MHD_Connection *conn) {
  if (!a->reload)
    return reply_text(conn, MHD_HTTP_NOT_IMPLEMENTED, "reload is not available\n");
  if (intake_server_stopping(a->server))
    return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down\n");
  char err[1024] = "", body[1100];
  int rc = a->reload(a->reload_ctx, err, sizeof err);
  if (rc == 0)
    return reply_text(conn, MHD_HTTP_OK, "reloaded\n");
  err[sizeof err - 1] = '\0';
  if (err[0])
    snprintf(body, sizeof body, "%s\n", err);
  else
    snprintf(body, sizeof body, "reload failed: %s\n", strerror(rc < 0 ? -rc : rc));
  return reply_text(conn, rc == -EINVAL ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_INTERNAL_SERVER_ERROR,
                    body);
}

typedef struct {
  const char *path;
  int post;                     /* POST only; else GET and HEAD */
  enum MHD_Result (*serve)(intake_admin_t *, struct MHD_Connection *);
} route_t;

static enum MHD_Result serve_healthz(intake_admin_t *a, struct MHD_Connection *conn) {
  (void)a; /* answering at all proves the loop turns */
  return reply_text(conn, MHD_HTTP_OK, "ok\n");
}

static const route_t routes[] = {
    {"/metrics", 0, serve_metrics},
    {"/healthz", 0, serve_healthz},
    {"/readyz", 0, serve_readyz},
    {"/-/reload", 1, serve_reload},
};

static enum MHD_Result dispatch(intake_admin_t *a, struct MHD_Connection *conn, const char *url,
                                const char *method) {
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    if (strcmp(url, routes[i].path) != 0)
      continue;
    int ok = routes[i].post ? !strcmp(method, MHD_HTTP_METHOD_POST)
                            : !strcmp(method, MHD_HTTP_METHOD_GET) ||
                                  !strcmp(method, MHD_HTTP_METHOD_HEAD);
    if (!ok) {
      const char *allow = routes[i].post ? "POST" : "GET, HEAD";
      static const char msg[] = "method not allowed\n";
      return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, TEXT, (char *)msg, sizeof msg - 1, 0, allow);
    }
    return routes[i].serve(a, conn);
  }
  return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* MHD calls this first with the headers (*state NULL), then once per piece of body, then once
 * more with *upload_size 0: the response is queued on that last call. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **state) {
  intake_admin_t *a = cls;
  request_t *r = *state;
  (void)version;
  (void)upload;
  if (!r) {
    if (!(r = calloc(1, sizeof *r)))
      return MHD_NO;
    *state = r;
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && (strlen(cl) > 9 || strtoull(cl, NULL, 10) > MAX_BODY))
      return reply_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
    return MHD_YES;
  }
  if (*upload_size) {
    r->body += *upload_size;
    *upload_size = 0; /* consumed (and ignored) */
    if (r->body > MAX_BODY) /* chunked: no Content-Length to check up front */
      return reply_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
    return MHD_YES;
  }
  return dispatch(a, conn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **state,
                         enum MHD_RequestTerminationCode why) {
  (void)cls;
  (void)conn;
  (void)why;
  free(*state);
  *state = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  intake_admin_t *a = cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
    msg[--n] = '\0';
  uint64_t held;
  if (intake_log_allow(&a->error_log, &held))
    LOG_WARN("admin http", "error=\"%s\" suppressed=%llu", msg, (unsigned long long)held);
}

/* ---- loop integration ---------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* MHD_run() processes whatever is ready (epoll_wait with timeout 0); MHD_get_timeout() then says
 * when it must run again: 0 when it left work pending (its edge-triggered ready list), the next
 * connection timeout otherwise, or no timeout at all. */
static void run(intake_admin_t *a) {
  MHD_run(a->mhd);
  MHD_UNSIGNED_LONG_LONG ms;
  if (MHD_get_timeout(a->mhd, &ms) == MHD_YES)
    uv_timer_start(&a->timer, on_timer, ms, 0);
  else
    uv_timer_stop(&a->timer);
}

static void on_timer(uv_timer_t *t) { run(t->data); }

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  run(p->data);
}

static void format_address(intake_admin_t *a, const intake_config_t *cfg, uint16_t port) {
  if (strchr(cfg->admin_address, ':'))
    snprintf(a->address, sizeof a->address, "[%s]:%u", cfg->admin_address, port);
  else
    snprintf(a->address, sizeof a->address, "%s:%u", cfg->admin_address, port);
}

intake_admin_t *intake_admin_create(uv_loop_t *loop, const intake_config_t *cfg,
                                    intake_server_t *server, const char *version,
                                    intake_admin_reload_cb reload, void *reload_ctx, char *err,
                                    size_t errlen) {
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
  int rc;
  if (strchr(cfg->admin_address, ':')) {
    rc = uv_ip6_addr(cfg->admin_address, cfg->admin_port, (struct sockaddr_in6 *)&addr);
    flags |= MHD_USE_IPv6;
  } else {
    rc = uv_ip4_addr(cfg->admin_address, cfg->admin_port, (struct sockaddr_in *)&addr);
  }
  if (rc < 0) {
    snprintf(err, errlen, "admin.address: %s: %s", cfg->admin_address, uv_strerror(rc));
    return NULL;
  }
  intake_admin_t *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "admin: out of memory");
    return NULL;
  }
  a->loop = loop;
  a->server = server;
  a->version = version;
  a->reload = reload;
  a->reload_ctx = reload_ctx;
  a->error_log.interval_ms = 1000;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  a->start_time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;

  /* Without MHD_USE_INTERNAL_POLLING_THREAD (or thread-per-connection) MHD starts no thread:
   * everything happens inside MHD_run(), called from this loop. */
  a->mhd = MHD_start_daemon(
      flags, cfg->admin_port, NULL, NULL, on_request, a,
      MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a, /* first, or MHD warns on stderr */
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
      MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MEMORY_LIMIT,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
      MHD_OPTION_END);
  if (!a->mhd) {
    /* MHD says why through the logger; errno is what bind() left. */
    snprintf(err, errlen, "admin.address: cannot listen on %s:%u: %s", cfg->admin_address,
             cfg->admin_port, strerror(errno ? errno : EADDRINUSE));
    free(a);
    return NULL;
  }
  const union MHD_DaemonInfo *port = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
  const union MHD_DaemonInfo *efd = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_EPOLL_FD);
  if (!efd) {
    snprintf(err, errlen, "admin: libmicrohttpd has no epoll support");
    MHD_stop_daemon(a->mhd);
    free(a);
    return NULL;
  }
  format_address(a, cfg, port ? port->port : cfg->admin_port);
  uv_poll_init(loop, &a->poll, efd->epoll_fd);
  uv_timer_init(loop, &a->timer);
  a->poll.data = a->timer.data = a;
  a->handles_open = 2;
  uv_poll_start(&a->poll, UV_READABLE, on_poll);
  run(a); /* arms the timer if MHD wants one */
  a->loopwatch = intake_loopwatch_start(loop); /* what /metrics says of the loop */
  return a;
}

const char *intake_admin_address(const intake_admin_t *a) { return a->address; }

static void on_handle_closed(uv_handle_t *h) {
  intake_admin_t *a = h->data;
  if (--a->handles_open > 0)
    return;
  void (*done)(void *) = a->done;
  void *arg = a->done_arg;
  free(a);
  if (done)
    done(arg);
}

void intake_admin_close(intake_admin_t *a, void (*done)(void *), void *arg) {
  a->done = done;
  a->done_arg = arg;
  intake_loopwatch_close(a->loopwatch);
  /* The poll handle lets go of the epoll descriptor now (uv_close stops it at once), so MHD may
   * close the descriptor right after. */
  uv_close((uv_handle_t *)&a->poll, on_handle_closed);
  uv_close((uv_handle_t *)&a->timer, on_handle_closed);
  MHD_stop_daemon(a->mhd);
  a->mhd = NULL;
}
