/* The admin HTTP listener (admin.address:admin.port): Prometheus metrics, health, readiness and
 * the reload trigger, for operators and orchestrators.
 *
 *   GET  /metrics    Prometheus text format 0.0.4 (see README "Metrics" for every name)
 *   GET  /healthz    200 "ok": the event loop is turning (it answers this very request)
 *   GET  /readyz     200 "ready", or 503 with the reason: Kafka unreachable, shutting down
 *   POST /-/reload   the reload callback: 200 "reloaded", 400/500 with its error, 501 when
 *                    there is no callback, 503 while shutting down
 * HEAD works wherever GET does. Other paths: 404; other methods: 405 with Allow.
 *
 * HTTP is libmicrohttpd's, driven from the daemon's libuv loop thread (no thread of its own):
 * MHD runs in external-polling epoll mode, a uv_poll_t watches MHD's epoll descriptor and a
 * uv_timer_t follows MHD_get_timeout(), and both call MHD_run(). Every request handler therefore
 * runs on the loop thread and reads the pipeline's counters without locks. A request is small
 * (headers within 16 KiB, a body within 4 KiB, else 413/431), connections are capped at 64 and
 * closed after 10 s idle, and every response is built in full before it is queued. */
#ifndef INTAKE_ADMIN_H
#define INTAKE_ADMIN_H

#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "ingest/server.h"

typedef struct intake_admin intake_admin_t;

/* Called on the loop thread for POST /-/reload. Returns 0 when the new configuration is in
 * force (200 "reloaded"), -EINVAL when it was refused as invalid (400), another negative errno
 * for any other failure (500); on failure a message goes into err[0..errlen) (NUL-terminated),
 * which is the response body. It must not block: it runs inside the request. */
typedef int (*intake_admin_reload_cb)(void *ctx, char *err, size_t errlen);

/* Binds admin.address:admin.port and starts serving on `loop`. `server` must outlive the admin
 * listener; `version` is shown in intake_build_info. `reload` may be NULL (the reload
 * endpoint then answers 501). Returns NULL with a message in err when the port cannot be bound or
 * memory runs out. Call only when cfg->admin_enabled. `cfg` is read here only (a reload does not
 * move the listener). */
intake_admin_t *intake_admin_create(uv_loop_t *loop, const intake_config_t *cfg,
                                    intake_server_t *server, const char *version,
                                    intake_admin_reload_cb reload, void *reload_ctx, char *err,
                                    size_t errlen);

/* The bound address, "127.0.0.1:9400" or "[::1]:9400" (the real port when admin.port is 0). */
const char *intake_admin_address(const intake_admin_t *a);

/* Stops serving (open requests are dropped) and frees everything once libuv has closed its
 * handles; `done` (may be NULL) is called then, from a close callback. Call once. */
void intake_admin_close(intake_admin_t *a, void (*done)(void *), void *arg);

/* Renders the /metrics text into buf[0..cap) (NUL-terminated when cap > 0) and returns its full
 * length, which may be >= cap (then call again with more room). For tests and tools. */
size_t intake_admin_metrics(intake_admin_t *a, char *buf, size_t cap);

#endif
