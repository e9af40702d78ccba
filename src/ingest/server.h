/* The gateway listener: accepts TCP connections, runs the session (HELLO, then batches within
 * the in-flight window), hands each BATCH frame to the pipeline and writes its ack back.
 *
 * Backpressure: when the pipeline refuses a batch because Kafka is behind, the connection stops
 * reading (the frame stays in its buffer) and resumes when the pipeline calls back: gateways
 * feel it as TCP flow control, and nothing is dropped or slept on. */
#ifndef INTAKE_INGEST_SERVER_H
#define INTAKE_INGEST_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "pipeline/pipeline.h"

typedef struct intake_server intake_server_t;

typedef struct {
  uint64_t connections;           /* open now */
  uint64_t accepted;              /* connections accepted since start */
  uint64_t refused;               /* over listen.max_connections */
  uint64_t protocol_errors;       /* connections closed with a ProtocolError frame */
  uint64_t auth_failures;
  uint64_t paused;                /* times a connection paused for backpressure */
  uint64_t write_blocked;         /* times a connection stopped being read: its unread acks
                                     passed listen.write_backlog (a slow reader) */
  uint64_t timeouts;              /* closed for gateway.hello_timeout or listen.idle_timeout */
  uint64_t linger_closed;         /* closed before their last frames could be written */
  uint64_t tls_failures;          /* TLS handshakes that failed: refused or missing client
                                     certificates, peers not speaking TLS, handshakes not done
                                     within gateway.hello_timeout */
} intake_server_stats_t;

/* Creates the pipeline (and with it the Kafka producer) and binds the listener. `cfg` must
 * outlive the server. Returns NULL with a message in err. */
intake_server_t *intake_server_create(uv_loop_t *loop, const intake_config_t *cfg, char *err,
                                      size_t errlen);

/* Applies a reloaded config (routes, limits, windows, tokens) without touching connections or
 * in-flight batches; see intake_pipeline_reload(). On error (-1, message in err) nothing
 * changed. `cfg` must stay valid until the next reload or destroy. */
int intake_server_reload(intake_server_t *s, const intake_config_t *cfg, char *err, size_t errlen);

/* The bound address ("127.0.0.1:7400"). */
const char *intake_server_address(const intake_server_t *s);

intake_pipeline_t *intake_server_pipeline(intake_server_t *s);
void intake_server_stats(const intake_server_t *s, intake_server_stats_t *out);

/* True once intake_server_shutdown() was called (or the listener failed): not ready. */
int intake_server_stopping(const intake_server_t *s);

/* Graceful stop: closes the listener, stops reading from gateways, lets in-flight batches finish
 * and be acked, then closes every connection and calls `done` once all is quiet (or after
 * `deadline_ms`, when what is still in flight is failed). */
void intake_server_shutdown(intake_server_t *s, uint64_t deadline_ms, void (*done)(void *), void *arg);

/* Frees everything; call after the loop has finished (uv_run returned). */
void intake_server_destroy(intake_server_t *s);

#endif
