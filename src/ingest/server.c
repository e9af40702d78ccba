#include "ingest/server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "decode/wire.h"
#include "ingest/frame.h"
#include "ingest/ratelimit.h"
#include "ingest/tls.h"
#include "ingest/tokens.h"
#include "intake.pb-c.h"

#define PROTOCOL_VERSION 1
#define READ_CHUNK (64 * 1024) /* one read holds ~300 events of 200 B (perf-notes.md) */
/* How long a closing connection may take to flush its last frames (an ERROR, the final acks)
 * to a peer that does not read them, before it is closed regardless. */
#define CLOSE_LINGER_MS 10000

enum { CONN_HELLO = 0, CONN_READY, CONN_DRAINING, CONN_CLOSING };

typedef struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;           /* hello timeout, then idle timeout */
  intake_server_t *srv;
  struct conn *prev, *next;   /* server's connection list */
  struct conn *next_paused;   /* server's paused list */
  int state;                  /* CONN_* */
  int paused;                 /* waiting for the pipeline to resume */
  int write_blocked;          /* its unread acks passed listen.write_backlog */
  int eof;                    /* the gateway closed its sending side; acks still go out */
  int finishing;              /* flushing its last frames, then closed (see conn_finish) */
  int reading;                /* uv_read_start is in force */
  int handles_open;           /* tcp + timer; freed when both are closed */
  int tls_ready;              /* TLS: the handshake is done */
  int tls_started;            /* TLS: the peer has sent something */
  intake_tls_t *tls;          /* NULL: plain TCP. With TLS the socket carries ciphertext and
                                 buf holds the decrypted stream */
  uv_shutdown_t shutdown_req;
  uint8_t *buf;               /* read buffer: buf[off..len) not yet parsed */
  size_t off, len, cap;
  intake_job_t **jobs;        /* batches in flight, `window` slots */
  uint32_t window;            /* gateway.max_in_flight_batches when it connected */
  uint32_t n_jobs;
  char gateway_id[65];
  char peer[64];
} conn_t;

struct intake_server {
  uv_loop_t *loop;
  const intake_config_t *cfg;
  uv_tcp_t listener;
  int listening;
  char address[64];
  intake_pipeline_t *pipeline;
  intake_tokens_t *tokens;
  intake_ratelimit_t *ratelimit; /* created when gateway.rate_limit is first set */
  intake_tls_ctx_t *tls;         /* listen.tls: new connections get a session of it; NULL = plain
                                    TCP. A reload replaces it; open sessions keep the old one */
  uint8_t *tls_plain;            /* a frame packed before it is encrypted (TLS only) */
  size_t tls_plain_cap;
  conn_t *conns;
  conn_t *paused;
  int stopping;
  uv_timer_t stop_timer;
  void (*stop_done)(void *);
  void *stop_arg;
  intake_server_stats_t stats;
  intake_log_limit_t error_log; /* protocol errors and accept failures: 100 lines per 10 s */
};

static void conn_close(conn_t *c);
static void conn_finish(conn_t *c);
static void conn_process(conn_t *c);
static void conn_update_reading(conn_t *c);
static void on_timeout(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);
static void on_tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_tls_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);
static void tls_input(conn_t *c);
static void tls_failed(conn_t *c, const char *why);
static void check_stopped(intake_server_t *s);

/* ---- writing frames ---------------------------------------------------------------------- */

typedef struct {
  uv_write_t req;
  conn_t *conn;
  int close_after;
  uint8_t data[];
} wreq_t;

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = w->conn;
  int close_after = w->close_after;
  free(w);
  if (close_after || status < 0) {
    conn_close(c);
    return;
  }
  if (c->state == CONN_CLOSING || c->finishing)
    return;
  /* The gateway is reading its acks: it is alive, whatever it sends. */
  uv_timer_again(&c->timer);
  if (c->write_blocked && c->tcp.write_queue_size <= c->srv->cfg->write_backlog_bytes / 2) {
    c->write_blocked = 0;
    conn_update_reading(c);
  }
}

/* Queues what the TLS session has for the peer as one write (at most its out buffer, 17 KiB).
 * `close_after`: close once written (at once when there is nothing). Returns 0, or -1 when the
 * connection was closed. */
static int tls_flush(conn_t *c, int close_after) {
  size_t n = intake_tls_out_pending(c->tls);
  if (n == 0) {
    if (close_after)
      conn_close(c);
    return close_after ? -1 : 0;
  }
  wreq_t *w = malloc(sizeof *w + n);
  if (!w) {
    conn_close(c);
    return -1;
  }
  w->conn = c;
  w->close_after = close_after;
  n = intake_tls_take(c->tls, w->data, n);
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
    free(w);
    conn_close(c);
    return -1;
  }
  return 0;
}

/* send_frame() over TLS: the frame is packed into the server's scratch buffer and encrypted
 * into the session's out buffer, which is queued whenever it fills (a frame over 16 KiB
 * becomes several writes). Returns 0, or -1 when the connection was closed. */
static int send_frame_tls(conn_t *c, uint8_t type, const ProtobufCMessage *msg, int close_after) {
  intake_server_t *s = c->srv;
  if (!c->tls_ready) {
    /* Nothing can be said before the handshake (a refusal at accept): just close. */
    conn_close(c);
    return -1;
  }
  size_t n = INTAKE_FRAME_HEADER_BYTES + protobuf_c_message_get_packed_size(msg);
  if (n > s->tls_plain_cap) {
    uint8_t *p = realloc(s->tls_plain, n);
    if (!p) {
      conn_close(c);
      return -1;
    }
    s->tls_plain = p;
    s->tls_plain_cap = n;
  }
  intake_frame_header(s->tls_plain, type, (uint32_t)(n - INTAKE_FRAME_HEADER_BYTES));
  protobuf_c_message_pack(msg, s->tls_plain + INTAKE_FRAME_HEADER_BYTES);
  for (size_t off = 0; off < n;) {
    ssize_t r = intake_tls_write(c->tls, s->tls_plain + off, n - off);
    if (r > 0)
      off += (size_t)r;
    else if (r != -ENOBUFS || tls_flush(c, 0) < 0) {
      if (r != -ENOBUFS)
        conn_close(c); /* the session failed or was closed by us: the frame cannot go */
      return -1;
    }
  }
  if (close_after)
    intake_tls_close_notify(c->tls); /* an orderly end after the ERROR */
  return tls_flush(c, close_after);
}

/* Packs `msg` into a frame and queues it; `close_after` closes the connection once written. */
static void send_frame(conn_t *c, uint8_t type, const ProtobufCMessage *msg, int close_after) {
  if (c->state == CONN_CLOSING)
    return;
  if (c->tls) {
    if (send_frame_tls(c, type, msg, close_after) < 0)
      return;
    goto queued;
  }
  size_t n = protobuf_c_message_get_packed_size(msg);
  wreq_t *w = malloc(sizeof *w + INTAKE_FRAME_HEADER_BYTES + n);
  if (!w) {
    conn_close(c);
    return;
  }
  w->conn = c;
  w->close_after = close_after;
  intake_frame_header(w->data, type, (uint32_t)n);
  protobuf_c_message_pack(msg, w->data + INTAKE_FRAME_HEADER_BYTES);
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)(INTAKE_FRAME_HEADER_BYTES + n));
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
    free(w);
    conn_close(c);
    return;
  }
queued:
  /* A gateway that sends batches but does not read its acks would make us queue acks without
   * end: stop reading from it until it has read half of them. */
  if (!c->write_blocked && c->tcp.write_queue_size > c->srv->cfg->write_backlog_bytes) {
    c->write_blocked = 1;
    c->srv->stats.write_blocked++;
    conn_update_reading(c);
  }
}

static void protocol_error(conn_t *c, Intake__V1__ErrorCode code, const char *detail) {
  Intake__V1__ProtocolError e = INTAKE__V1__PROTOCOL_ERROR__INIT;
  e.code = code;
  e.detail = (char *)detail;
  c->srv->stats.protocol_errors++;
  /* A misbehaving gateway that reconnects in a loop would flood the log: the count is in
   * /metrics (intake_protocol_errors_total) anyway. */
  uint64_t held;
  if (intake_log_allow(&c->srv->error_log, &held))
    LOG_WARN("protocol error", "peer=%s gateway=\"%s\" code=%s detail=\"%s\" suppressed=%llu",
             c->peer, c->gateway_id,
             protobuf_c_enum_descriptor_get_value(&intake__v1__error_code__descriptor, code)->name,
             detail, (unsigned long long)held);
  c->reading = 0;
  uv_read_stop((uv_stream_t *)&c->tcp);
  send_frame(c, INTAKE_FRAME_ERROR, &e.base, 1);
  if (c->state != CONN_CLOSING) {
    c->state = CONN_DRAINING; /* nothing more is read; in-flight batches are detached on close */
    c->finishing = 1;         /* closed once the ERROR is written, or after the linger */
    uv_timer_start(&c->timer, on_timeout, CLOSE_LINGER_MS, 0);
  }
}

/* ---- connection lifecycle ---------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles_open > 0)
    return;
  intake_server_t *s = c->srv;
  intake_tls_destroy(c->tls);
  free(c->buf);
  free(c->jobs);
  free(c);
  check_stopped(s);
}

static void conn_close(conn_t *c) {
  if (c->state == CONN_CLOSING)
    return;
  intake_server_t *s = c->srv;
  c->state = CONN_CLOSING;
  /* Batches still in flight are delivered all the same; only their acks have nowhere to go. */
  for (uint32_t i = 0; i < c->n_jobs; i++)
    intake_pipeline_detach(c->jobs[i]);
  c->n_jobs = 0;
  if (c->paused) {
    conn_t **pp = &s->paused;
    while (*pp && *pp != c)
      pp = &(*pp)->next_paused;
    if (*pp)
      *pp = c->next_paused;
    c->paused = 0;
  }
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  s->stats.connections--;
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

/* Reads from the socket only while the connection can take frames: not waiting for the
 * pipeline, not behind on reading its acks, not closing, and the gateway still sending. */
static void conn_update_reading(conn_t *c) {
  int want = (c->state == CONN_HELLO || c->state == CONN_READY) && !c->paused &&
             !c->write_blocked && !c->eof && !c->finishing && !c->srv->stopping;
  if (want && !c->reading)
    uv_read_start((uv_stream_t *)&c->tcp, c->tls ? on_tls_alloc : on_alloc,
                  c->tls ? on_tls_read : on_read);
  else if (!want && c->reading)
    uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = want;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  conn_close(req->data);
}

/* Closes once every frame queued for the gateway is written (a close would discard them),
 * or after CLOSE_LINGER_MS when it does not read them. */
static void conn_finish(conn_t *c) {
  if (c->state == CONN_CLOSING || c->finishing)
    return;
  c->finishing = 1;
  c->state = CONN_DRAINING;
  conn_update_reading(c);
  if (c->tls && c->tls_ready) {
    /* close_notify goes out after the last acks: the gateway can tell an orderly end from a
     * cut connection. */
    intake_tls_close_notify(c->tls);
    if (tls_flush(c, 0) < 0)
      return;
  }
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, CLOSE_LINGER_MS, 0);
}

/* The TLS session failed (or never finished its handshake): logged (rate-limited, like
 * protocol errors), counted when it was the handshake, and closed once the alert that tells
 * the peer why is written. */
static void tls_failed(conn_t *c, const char *why) {
  intake_server_t *s = c->srv;
  uint64_t held;
  if (!c->tls_ready) {
    s->stats.tls_failures++;
    if (intake_log_allow(&s->error_log, &held))
      LOG_WARN("TLS handshake failed", "peer=%s error=\"%s\" suppressed=%llu", c->peer, why,
               (unsigned long long)held);
  } else if (intake_log_allow(&s->error_log, &held)) {
    LOG_WARN("TLS error", "peer=%s gateway=\"%s\" error=\"%s\" suppressed=%llu", c->peer,
             c->gateway_id, why, (unsigned long long)held);
  }
  c->reading = 0;
  uv_read_stop((uv_stream_t *)&c->tcp);
  if (tls_flush(c, 1) < 0)
    return; /* closed: there was no alert to send */
  c->state = CONN_DRAINING;
  c->finishing = 1; /* closed once the alert is written, or after the linger */
  uv_timer_start(&c->timer, on_timeout, CLOSE_LINGER_MS, 0);
}

static void on_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  intake_server_t *s = c->srv;
  if (c->finishing) {
    s->stats.linger_closed++; /* its last frames were never read */
    conn_close(c);
  } else if (c->state == CONN_HELLO && c->tls && !c->tls_ready) {
    s->stats.timeouts++; /* hello_timeout covers the handshake */
    tls_failed(c, "handshake not finished within gateway.hello_timeout");
  } else if (c->state == CONN_HELLO) {
    s->stats.timeouts++;
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_TIMEOUT, "no HELLO within gateway.hello_timeout");
  } else if (c->n_jobs == 0) {
    /* Neither a frame nor an ack read for idle_timeout: a gateway that vanished without a FIN
     * (half-open) ends here at the latest, and frees its slot of listen.max_connections. */
    s->stats.timeouts++;
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_TIMEOUT, "idle for listen.idle_timeout");
  }
  /* else batches are in flight: the repeating idle timer looks again in idle_timeout. */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  conn_t *c = h->data;
  (void)suggested;
  /* Compact only when the tail runs out: the unparsed remainder is at most one partial frame. */
  if (c->cap - c->len < READ_CHUNK / 4 && c->off > 0) {
    memmove(c->buf, c->buf + c->off, c->len - c->off);
    c->len -= c->off;
    c->off = 0;
  }
  /* Grow toward the frame being read (bounded by gateway.max_frame_bytes in conn_process). */
  size_t want = c->len + READ_CHUNK;
  if (c->len - c->off >= 4) {
    const uint8_t *p = c->buf + c->off;
    size_t frame = ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]) + 4;
    if (frame <= (size_t)c->srv->cfg->max_frame_bytes + 4 && c->off + frame > want)
      want = c->off + frame;
  }
  if (want > c->cap) {
    uint8_t *nb = realloc(c->buf, want);
    if (nb) {
      c->buf = nb;
      c->cap = want;
    }
  }
  *b = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_resume(void *ctx) {
  intake_server_t *s = ctx;
  conn_t *list = s->paused;
  s->paused = NULL;
  while (list) {
    conn_t *c = list;
    list = c->next_paused;
    c->paused = 0;
    if (c->state == CONN_CLOSING)
      continue;
    if (c->tls)
      tls_input(c); /* its buffered frames, then the ciphertext it holds */
    else
      conn_process(c);
    if (c->paused || c->state != CONN_READY)
      continue;
    if (s->stopping)
      c->state = CONN_DRAINING; /* its buffered batches are in: read nothing more */
    else if (c->eof && c->n_jobs == 0)
      conn_finish(c); /* half-closed, and its last batches were refused (acked) already */
    else
      conn_update_reading(c);
  }
  check_stopped(s);
}

static void on_job_done(void *owner, intake_job_t *job, const intake_batch_result_t *r) {
  conn_t *c = owner;
  for (uint32_t i = 0; i < c->n_jobs; i++) {
    if (c->jobs[i] == job) {
      c->jobs[i] = c->jobs[--c->n_jobs];
      break;
    }
  }
  Intake__V1__BatchAck ack = INTAKE__V1__BATCH_ACK__INIT;
  ack.seq = r->seq;
  ack.status = (Intake__V1__BatchStatus)r->status;
  ack.detail = (char *)(r->detail ? r->detail : "");
  /* protobuf-c wants the enum array as int-sized values and the rejections as pointers. */
  Intake__V1__Outcome *outcomes = NULL;
  Intake__V1__Rejection *rej = NULL, **rejp = NULL;
  if (r->outcomes && r->n_events) {
    outcomes = malloc(r->n_events * sizeof *outcomes);
    if (outcomes) {
      for (uint32_t i = 0; i < r->n_events; i++)
        outcomes[i] = (Intake__V1__Outcome)r->outcomes[i];
      ack.n_outcomes = r->n_events;
      ack.outcomes = outcomes;
    }
  }
  if (r->n_rejections) {
    rej = malloc(r->n_rejections * sizeof *rej);
    rejp = malloc(r->n_rejections * sizeof *rejp);
    if (rej && rejp) {
      for (size_t i = 0; i < r->n_rejections; i++) {
        intake__v1__rejection__init(&rej[i]);
        rej[i].index = r->rejections[i].index;
        rej[i].reason = (Intake__V1__RejectReason)r->rejections[i].reason;
        rej[i].detail = (char *)r->rejections[i].detail;
        rejp[i] = &rej[i];
      }
      ack.n_rejections = r->n_rejections;
      ack.rejections = rejp;
    }
  }
  send_frame(c, INTAKE_FRAME_BATCH_ACK, &ack.base, 0);
  free(outcomes);
  free(rej);
  free(rejp);
  if (c->n_jobs == 0 && !c->paused &&
      ((c->state == CONN_DRAINING && c->srv->stopping) || (c->state == CONN_READY && c->eof)))
    conn_finish(c); /* every ack it waited for is queued: flush them, then close */
  check_stopped(c->srv);
}

static void handle_hello(conn_t *c, const intake_frame_t *f) {
  intake_server_t *s = c->srv;
  Intake__V1__Hello *h = intake__v1__hello__unpack(NULL, f->payload_len, f->payload);
  if (!h) {
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, "HELLO is not a valid intake.v1.Hello");
    return;
  }
  size_t idlen = strlen(h->gateway_id);
  if (h->protocol_version != PROTOCOL_VERSION) {
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_VERSION, "protocol_version must be 1");
  } else if (idlen == 0 || idlen > 64) {
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, "gateway_id must be 1..64 bytes");
  } else if (s->cfg->tls_match_gateway_id &&
             !(c->tls && intake_tls_peer_matches(c->tls, h->gateway_id))) {
    s->stats.auth_failures++;
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED,
                   "gateway_id is not the identity of the TLS client certificate");
  } else if (s->tokens && !intake_tokens_check(s->tokens, h->gateway_id, h->token)) {
    s->stats.auth_failures++;
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED,
                   "unknown gateway_id or wrong token");
  } else {
    /* Printable ASCII only: the id goes into logs and Kafka headers. */
    for (size_t i = 0; i < idlen; i++)
      c->gateway_id[i] = (h->gateway_id[i] > 0x20 && h->gateway_id[i] < 0x7f) ? h->gateway_id[i] : '_';
    c->gateway_id[idlen] = '\0';
    c->state = CONN_READY;
    Intake__V1__Welcome w = INTAKE__V1__WELCOME__INIT;
    w.protocol_version = PROTOCOL_VERSION;
    w.max_in_flight = c->window;
    w.max_frame_bytes = s->cfg->max_frame_bytes;
    w.max_batch_events = s->cfg->max_batch_events;
    send_frame(c, INTAKE_FRAME_WELCOME, &w.base, 0);
    /* Repeating, so that uv_timer_again() on every read and written ack restarts it (on a
     * one-shot timer it does nothing, and busy gateways were cut off as idle). */
    uv_timer_start(&c->timer, on_timeout, s->cfg->idle_timeout_ms, s->cfg->idle_timeout_ms);
    if (c->tls) {
      char cn[65];
      intake_tls_peer_cn(c->tls, cn, sizeof cn);
      LOG_INFO("gateway connected", "peer=%s gateway=\"%s\" tls=%s cipher=%s cert_cn=\"%s\"",
               c->peer, c->gateway_id, intake_tls_version(c->tls), intake_tls_cipher(c->tls), cn);
    } else {
      LOG_INFO("gateway connected", "peer=%s gateway=\"%s\"", c->peer, c->gateway_id);
    }
  }
  intake__v1__hello__free_unpacked(h, NULL);
}

/* Batch.seq (field 1) without decoding the rest: a throttled batch is answered unprocessed.
 * 0 when absent or unreadable (the gateway's batch is then broken anyway). */
static uint64_t peek_batch_seq(const uint8_t *p, size_t len) {
  wire_cursor_t cur = {p, p + len};
  uint32_t field, type;
  while (cur.p < cur.end && wire_tag(&cur, &field, &type) == 0) {
    uint64_t v;
    if (field == 1 && type == WIRE_VARINT)
      return wire_varint(&cur, &v) == 0 ? v : 0;
    if (wire_skip(&cur, type) < 0)
      break;
  }
  return 0;
}

/* Answers RETRY with retry_after_ms: the gateway is over gateway.rate_limit. */
static void throttle(conn_t *c, const intake_frame_t *f, uint64_t wait_ms) {
  intake_server_t *s = c->srv;
  char detail[96];
  snprintf(detail, sizeof detail, "rate limited: gateway.rate_limit is %u events/s",
           s->cfg->rate_limit);
  Intake__V1__BatchAck ack = INTAKE__V1__BATCH_ACK__INIT;
  ack.seq = peek_batch_seq(f->payload, f->payload_len);
  ack.status = INTAKE__V1__BATCH_STATUS__BATCH_STATUS_RETRY;
  ack.detail = detail;
  ack.retry_after_ms = wait_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)wait_ms;
  intake_pipeline_count_throttled(s->pipeline, c->gateway_id);
  uint64_t held;
  if (intake_log_allow(&s->error_log, &held))
    LOG_INFO("gateway rate limited", "peer=%s gateway=\"%s\" retry_after_ms=%u suppressed=%llu",
             c->peer, c->gateway_id, ack.retry_after_ms, (unsigned long long)held);
  send_frame(c, INTAKE_FRAME_BATCH_ACK, &ack.base, 0);
}

/* Returns 0 to go on parsing, -1 to stop (paused or closed). */
static int handle_batch(conn_t *c, const intake_frame_t *f) {
  intake_server_t *s = c->srv;
  if (c->n_jobs >= c->window) {
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_WINDOW_EXCEEDED,
                   "more unacknowledged batches than Welcome.max_in_flight");
    return -1;
  }
  intake_bucket_t *bucket = NULL;
  if (s->cfg->rate_limit) {
    uint64_t now = uv_now(s->loop);
    bucket = intake_ratelimit_bucket(s->ratelimit, c->gateway_id, now);
    uint64_t wait = intake_ratelimit_wait_ms(s->ratelimit, bucket, now);
    if (wait) {
      throttle(c, f, wait);
      return 0;
    }
  }
  intake_job_t *job;
  const char *detail = "";
  int rc = intake_pipeline_submit(s->pipeline, f->payload, f->payload_len, c->gateway_id, c, &job,
                                  &detail);
  if (rc == -EAGAIN) {
    c->paused = 1;
    c->next_paused = s->paused;
    s->paused = c;
    s->stats.paused++;
    conn_update_reading(c);
    return -1;
  }
  if (rc == INTAKE_SUBMIT_BAD_ZSTD) {
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_ZSTD, detail);
    return -1;
  }
  if (rc < 0) {
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, detail);
    return -1;
  }
  c->jobs[c->n_jobs++] = job;
  if (bucket)
    intake_ratelimit_charge(bucket, intake_job_events(job));
  return 0;
}

static void conn_process(conn_t *c) {
  const uint32_t max = c->srv->cfg->max_frame_bytes;
  while (c->state == CONN_HELLO || c->state == CONN_READY) {
    intake_frame_t f;
    int rc = intake_frame_parse(c->buf + c->off, c->len - c->off, max, &f);
    if (rc == INTAKE_FRAME_NEED_MORE)
      break;
    if (rc == INTAKE_FRAME_TOO_LARGE) {
      protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_FRAME_TOO_LARGE,
                     "frame length over gateway.max_frame_bytes");
      return;
    }
    if (rc == INTAKE_FRAME_EMPTY) {
      protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, "frame length 0");
      return;
    }
    if (c->state == CONN_HELLO) {
      if (f.type != INTAKE_FRAME_HELLO) {
        protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED,
                       "the first frame must be HELLO");
        return;
      }
      handle_hello(c, &f);
    } else if (f.type == INTAKE_FRAME_BATCH) {
      if (handle_batch(c, &f) < 0)
        return; /* paused: the frame stays in the buffer; or closed */
    } else {
      protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME,
                     f.type == INTAKE_FRAME_HELLO ? "HELLO sent twice" : "unexpected frame type");
      return;
    }
    c->off += f.frame_len;
  }
  if (c->off == c->len)
    c->off = c->len = 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  conn_t *c = st->data;
  (void)b;
  if (nread == UV_EOF && c->state == CONN_READY && (c->n_jobs > 0 || c->paused)) {
    /* The gateway shut down its sending side after its last batches and waits for their acks
     * (a half-close): read nothing more, answer what it sent, then close. */
    LOG_INFO("gateway half-closed", "peer=%s gateway=\"%s\" in_flight=%u", c->peer,
             c->gateway_id, c->n_jobs);
    c->eof = 1;
    conn_update_reading(c);
    return;
  }
  if (nread < 0) {
    if (nread != UV_EOF)
      LOG_INFO("connection error", "peer=%s gateway=\"%s\" error=%s", c->peer, c->gateway_id,
               uv_strerror((int)nread));
    else
      LOG_INFO("gateway disconnected", "peer=%s gateway=\"%s\" in_flight=%u", c->peer, c->gateway_id,
               c->n_jobs);
    /* After a plain EOF the gateway may still read: acks it has not got yet are flushed. */
    if (nread == UV_EOF && c->state == CONN_READY)
      conn_finish(c);
    else
      conn_close(c);
    return;
  }
  if (nread == 0)
    return;
  c->len += (size_t)nread;
  if (c->state == CONN_READY)
    uv_timer_again(&c->timer);
  conn_process(c);
}

/* ---- TLS input ---------------------------------------------------------------------------
 * The socket is read straight into the session's in buffer (34 KiB); records are decrypted
 * into the frame buffer as the plain path reads into it, and frames are run from there. While
 * the connection is paused the socket is not read and nothing more is decrypted: what waits
 * is at most the in buffer of ciphertext. */

static void on_tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  conn_t *c = h->data;
  (void)suggested;
  /* Never full while reading: tls_input() decrypts everything but a partial record before
   * reading resumes, and a record is smaller than the buffer. */
  size_t room;
  void *p = intake_tls_feed_space(c->tls, &room);
  *b = uv_buf_init(p, (unsigned)room);
}

static void tls_input(conn_t *c) {
  if (c->len > c->off)
    conn_process(c); /* frames already decrypted (after a pause) go first */
  /* After the gateway's EOF (or close_notify) nothing is left to decrypt: an EOF is seen only
   * while reading, and reading runs only with the in buffer drained. */
  while ((c->state == CONN_HELLO || c->state == CONN_READY) && !c->paused && !c->eof) {
    uv_buf_t b;
    on_alloc((uv_handle_t *)&c->tcp, 0, &b); /* the frame buffer's free tail, grown as needed */
    if (b.len == 0) {
      conn_close(c); /* out of memory */
      return;
    }
    ssize_t n = intake_tls_read(c->tls, b.base, b.len);
    if (!c->tls_ready && intake_tls_state(c->tls) == INTAKE_TLS_OPEN)
      c->tls_ready = 1;
    if (n != -EPROTO && intake_tls_out_pending(c->tls) > 0 && tls_flush(c, 0) < 0)
      return; /* handshake flights, session tickets */
    if (n > 0) {
      c->len += (size_t)n;
      if (c->state == CONN_READY)
        uv_timer_again(&c->timer);
      conn_process(c);
    } else if (n == 0) {
      on_read((uv_stream_t *)&c->tcp, UV_EOF, NULL); /* close_notify: the gateway's EOF */
      return;
    } else if (n == -EPROTO) {
      tls_failed(c, intake_tls_error(c->tls));
      return;
    } else if (n == -EAGAIN) {
      return;
    } /* -ENOBUFS: flushed above, go on */
  }
}

static void on_tls_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  conn_t *c = st->data;
  if (nread > 0) {
    intake_tls_feed_commit(c->tls, (size_t)nread);
    c->tls_started = 1;
    tls_input(c);
    return;
  }
  if (nread < 0 && !c->tls_ready) {
    /* A connection closed without a byte is a port probe (a load balancer's health check),
     * not a failed handshake. */
    if (c->tls_started) {
      tls_failed(c, nread == UV_EOF ? "connection closed during the handshake"
                                    : uv_strerror((int)nread));
      return;
    }
    conn_close(c);
    return;
  }
  on_read(st, nread, b);
}

/* Socket options of a gateway connection.
 *
 * SO_SNDBUF = listen.write_backlog: gateways only receive acks (bytes per event), so a small
 * send buffer costs nothing, and it stops the kernel from autotuning several MB per
 * connection for a gateway that does not read (2,000 of them would pin GBs of kernel memory).
 *
 * TCP keepalive finds a gateway that vanished without a FIN (power cut, NAT state lost) while
 * it has batches in flight, when the idle timeout does not apply. TCP_USER_TIMEOUT covers the
 * case keepalive does not: acks written but never acknowledged by the peer's kernel. */
static void tune_socket(conn_t *c) {
  const intake_config_t *cfg = c->srv->cfg;
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) < 0)
    return;
  int sndbuf = (int)cfg->write_backlog_bytes;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  uint64_t ms = cfg->keepalive_ms;
  if (ms == 0)
    return;
  unsigned idle = (unsigned)(ms / 1000);
  if (uv_tcp_keepalive(&c->tcp, 1, idle) < 0)
    return;
  int interval = idle / 4 ? (int)(idle / 4) : 1, count = 4;
  unsigned user_timeout = (unsigned)(ms + (uint64_t)interval * count * 1000);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

static void on_connection(uv_stream_t *ls, int status) {
  intake_server_t *s = ls->data;
  if (status < 0) {
    uint64_t held; /* EMFILE repeats on every loop iteration */
    if (intake_log_allow(&s->error_log, &held))
      LOG_WARN("accept failed", "error=\"%s\" suppressed=%llu", uv_strerror(status),
               (unsigned long long)held);
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c)
    return;
  c->srv = s;
  c->window = s->cfg->max_in_flight; /* a reload changes it for new connections only */
  c->jobs = calloc(c->window, sizeof *c->jobs);
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles_open = 2;
  /* A session per connection from the context of now: a reload does not touch it. */
  int tls_ok = !s->tls || (c->tls = intake_tls_create(s->tls, NULL)) != NULL;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->stats.connections++;
  if (!c->jobs || !tls_ok || uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
    conn_close(c);
    return;
  }
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  char host[48] = "?";
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
      snprintf(c->peer, sizeof c->peer, "[%s]:%d", host, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    } else {
      uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
      snprintf(c->peer, sizeof c->peer, "%s:%d", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
    }
  }
  uv_tcp_nodelay(&c->tcp, 1);
  tune_socket(c);
  if (s->stopping) {
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_SHUTTING_DOWN, "intaked is shutting down");
    return;
  }
  if (s->stats.connections > s->cfg->max_connections) {
    s->stats.refused++;
    protocol_error(c, INTAKE__V1__ERROR_CODE__ERROR_CODE_TOO_MANY_CONNECTIONS,
                   "listen.max_connections reached");
    return;
  }
  s->stats.accepted++;
  uv_timer_start(&c->timer, on_timeout, s->cfg->hello_timeout_ms, 0);
  conn_update_reading(c);
}

/* ---- server ------------------------------------------------------------------------------ */

static void log_tls(const intake_config_t *cfg) {
  if (!cfg->tls_cert_file)
    return;
  LOG_INFO("gateway TLS", "cert=%s client_ca=%s require_client_cert=%s match_gateway_id=%s "
           "min_version=%s", cfg->tls_cert_file,
           cfg->tls_client_ca_file ? cfg->tls_client_ca_file : "-",
           cfg->tls_require_client_cert ? "true" : "false",
           cfg->tls_match_gateway_id ? "true" : "false",
           cfg->tls_min_version == INTAKE_TLS_1_3 ? "1.3" : "1.2");
}

intake_server_t *intake_server_create(uv_loop_t *loop, const intake_config_t *cfg, char *err,
                                      size_t errlen) {
  intake_server_t *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->loop = loop;
  s->cfg = cfg;
  /* Every error of a few misbehaving gateways is still seen; a reconnect loop is cut to 10 a
   * second on average. */
  s->error_log.interval_ms = 10000;
  s->error_log.burst = 100;
  if (cfg->tls_cert_file && !(s->tls = intake_tls_server_ctx_create(cfg, err, errlen))) {
    free(s);
    return NULL;
  }
  if (cfg->tokens_file && cfg->tokens_file[0]) {
    s->tokens = intake_tokens_load(cfg->tokens_file, err, errlen);
    if (!s->tokens) {
      intake_tls_ctx_destroy(s->tls);
      free(s);
      return NULL;
    }
  }
  if (cfg->rate_limit &&
      !(s->ratelimit = intake_ratelimit_create(cfg->rate_limit, cfg->rate_burst, cfg->max_connections))) {
    snprintf(err, errlen, "out of memory");
    intake_tokens_destroy(s->tokens);
    intake_tls_ctx_destroy(s->tls);
    free(s);
    return NULL;
  }
  s->pipeline = intake_pipeline_create(loop, cfg, on_job_done, on_resume, s, err, errlen);
  if (!s->pipeline) {
    intake_ratelimit_destroy(s->ratelimit);
    intake_tokens_destroy(s->tokens);
    intake_tls_ctx_destroy(s->tls);
    free(s);
    return NULL;
  }
  log_tls(cfg);
  struct sockaddr_storage addr;
  int rc;
  if (strchr(cfg->listen_address, ':'))
    rc = uv_ip6_addr(cfg->listen_address, cfg->listen_port, (struct sockaddr_in6 *)&addr);
  else
    rc = uv_ip4_addr(cfg->listen_address, cfg->listen_port, (struct sockaddr_in *)&addr);
  if (rc == 0) {
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->listening = 1;
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    /* A reconnect storm puts every gateway in the accept queue at once; past the backlog the
     * kernel drops SYNs and those gateways retry 1 s, 3 s, ... later (it_storm: 975 of 2,000
     * with 1024 here). The kernel caps it at net.core.somaxconn. */
    int backlog = cfg->max_connections > SOMAXCONN ? (int)cfg->max_connections : SOMAXCONN;
    if (rc == 0)
      rc = uv_listen((uv_stream_t *)&s->listener, backlog, on_connection);
  }
  if (rc < 0) {
    snprintf(err, errlen, "listen.address: cannot listen on %s:%u: %s", cfg->listen_address,
             cfg->listen_port, uv_strerror(rc));
    s->stopping = 1;
    return s; /* caller sees err[0] set; destroy after closing the loop */
  }
  struct sockaddr_storage bound;
  int bl = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &bl);
  char host[48];
  if (bound.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&bound, host, sizeof host);
    snprintf(s->address, sizeof s->address, "[%s]:%d", host, ntohs(((struct sockaddr_in6 *)&bound)->sin6_port));
  } else {
    uv_ip4_name((struct sockaddr_in *)&bound, host, sizeof host);
    snprintf(s->address, sizeof s->address, "%s:%d", host, ntohs(((struct sockaddr_in *)&bound)->sin_port));
  }
  return s;
}

int intake_server_reload(intake_server_t *s, const intake_config_t *cfg, char *err, size_t errlen) {
  /* The files are read again whether or not their names changed: a renewed certificate is
   * rotated by replacing the files and reloading. */
  intake_tls_ctx_t *tls = NULL;
  if (cfg->tls_cert_file && !(tls = intake_tls_server_ctx_create(cfg, err, errlen)))
    return -1;
  intake_tokens_t *tokens = NULL;
  if (cfg->tokens_file && cfg->tokens_file[0] &&
      !(tokens = intake_tokens_load(cfg->tokens_file, err, errlen))) {
    intake_tls_ctx_destroy(tls);
    return -1;
  }
  /* Buckets keep their balances across a reload; only the rate and depth change. */
  if (cfg->rate_limit) {
    int rc = s->ratelimit ? intake_ratelimit_configure(s->ratelimit, cfg->rate_limit,
                                                       cfg->rate_burst, cfg->max_connections)
                          : (s->ratelimit = intake_ratelimit_create(cfg->rate_limit, cfg->rate_burst,
                                                                    cfg->max_connections))
                                ? 0
                                : -ENOMEM;
    if (rc < 0) {
      snprintf(err, errlen, "out of memory");
      intake_tokens_destroy(tokens);
      intake_tls_ctx_destroy(tls);
      return -1;
    }
  }
  if (intake_pipeline_reload(s->pipeline, cfg, err, errlen) < 0) {
    intake_tokens_destroy(tokens);
    intake_tls_ctx_destroy(tls);
    return -1;
  }
  intake_tokens_destroy(s->tokens);
  s->tokens = tokens;
  if (s->tls && !tls)
    LOG_WARN("gateway TLS off", "detail=\"listen.tls.cert_file unset by the reload: new "
             "connections are plain TCP; open TLS connections keep their sessions\"");
  intake_tls_ctx_destroy(s->tls); /* open sessions hold their own reference */
  s->tls = tls;
  log_tls(cfg);
  s->cfg = cfg;
  return 0;
}

const char *intake_server_address(const intake_server_t *s) { return s->address; }
intake_pipeline_t *intake_server_pipeline(intake_server_t *s) { return s->pipeline; }
void intake_server_stats(const intake_server_t *s, intake_server_stats_t *out) { *out = s->stats; }
int intake_server_stopping(const intake_server_t *s) { return s->stopping != 0; }

static void on_listener_closed(uv_handle_t *h) { (void)h; }

static void on_stop_timer_closed(uv_handle_t *h) {
  intake_server_t *s = h->data;
  intake_pipeline_close(s->pipeline);
  if (s->stop_done)
    s->stop_done(s->stop_arg);
}

static void finish_stop(intake_server_t *s) {
  if (s->stopping == 2)
    return;
  s->stopping = 2;
  uv_close((uv_handle_t *)&s->stop_timer, on_stop_timer_closed);
}

static void check_stopped(intake_server_t *s) {
  if (s->stopping != 1 || s->stop_done == NULL)
    return;
  if (intake_pipeline_jobs(s->pipeline) > 0 || s->paused)
    return;
  /* Every batch is acked: close what is left (acks queued before are flushed first). */
  for (conn_t *c = s->conns, *next; c; c = next) {
    next = c->next;
    if (c->state != CONN_CLOSING && c->n_jobs == 0)
      conn_finish(c);
  }
  if (s->conns == NULL)
    finish_stop(s);
}

static void on_stop_deadline(uv_timer_t *t) {
  intake_server_t *s = t->data;
  s->paused = NULL; /* conn_close() below unlinks nothing from it any more */
  for (conn_t *c = s->conns; c; c = c->next)
    c->paused = 0;
  LOG_WARN("shutdown deadline reached", "jobs_in_flight=%llu",
           (unsigned long long)intake_pipeline_jobs(s->pipeline));
  for (conn_t *c = s->conns, *next; c; c = next) {
    next = c->next;
    conn_close(c);
  }
  finish_stop(s);
}

void intake_server_shutdown(intake_server_t *s, uint64_t deadline_ms, void (*done)(void *), void *arg) {
  if (s->stop_done)
    return;
  s->stopping = 1;
  s->stop_done = done;
  s->stop_arg = arg;
  if (s->listening) {
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    s->listening = 0;
  }
  /* Every whole batch already read is finished and acked: connections waiting on backpressure
   * keep their buffered frames and submit them as Kafka drains. Bytes still in the kernel's
   * socket buffers are not read; those batches were never accepted, and the gateways
   * retransmit them to the next instance. */
  for (conn_t *c = s->conns; c; c = c->next) {
    if (c->state == CONN_CLOSING)
      continue;
    conn_update_reading(c); /* stops: s->stopping is set */
    if (!c->paused && !c->finishing)
      c->state = CONN_DRAINING;
  }
  uv_timer_init(s->loop, &s->stop_timer);
  s->stop_timer.data = s;
  uv_timer_start(&s->stop_timer, on_stop_deadline, deadline_ms, 0);
  check_stopped(s);
}

void intake_server_destroy(intake_server_t *s) {
  if (!s)
    return;
  intake_pipeline_destroy(s->pipeline);
  intake_tokens_destroy(s->tokens);
  intake_ratelimit_destroy(s->ratelimit);
  intake_tls_ctx_destroy(s->tls);
  free(s->tls_plain);
  free(s);
}
