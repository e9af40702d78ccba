/* intaked: takes alert streams from sensor gateways, de-duplicates and routes them, and writes
 * them to Kafka; a gateway's batch is acknowledged only once Kafka has every event of it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "admin/admin.h"
#include "config/config.h"
#include "core/log.h"
#include "core/notify.h"
#include "dedup/dedup.h"
#include "ingest/server.h"
#include "ingest/tls.h"
#include "pipeline/pipeline.h"
#include "sink/sink.h"

#ifndef INTAKE_VERSION /* set by CMake from the project version */
#define INTAKE_VERSION "0.0.0"
#endif

typedef struct {
  uv_loop_t *loop;
  const char *path;           /* config file, read again on reload */
  intake_config_t *cfg;       /* the running config; replaced whole by a reload */
  intake_server_t *server;
  intake_admin_t *admin;      /* NULL when admin.enabled is false */
  uv_timer_t watchdog;        /* WATCHDOG=1 to systemd, when the unit sets WatchdogSec= */
  uv_signal_t sigterm, sigint, sighup;
  uv_timer_t stats;
  int stopping;
  int exit_code;
} daemon_t;

static void usage(FILE *f) {
  fprintf(f,
          "usage: intaked [-c FILE]          run with the config FILE (default conf/intaked.yaml)\n"
          "       intaked --check-config FILE validate FILE and exit (0 = valid)\n"
          "       intaked --version\n");
}

/* Descriptors intaked holds besides its gateway connections: the admin listener and its 64
 * connections, librdkafka (per broker a socket, plus its threads' wakeup fds and the bootstrap
 * connections), libuv's epoll, signal and async fds, the delivery-report pipe, the dedup
 * snapshot's temp file and directory, the tokens and config files, stdio. 128 covers that with
 * a dozen brokers to spare. */
#define FD_RESERVE 128

/* Every gateway connection is a descriptor, and the usual soft limit (1024; systemd's default
 * since v240, kept low for select() users) is below what listen.max_connections allows: past
 * it accept() fails with EMFILE, and libuv then accepts and closes the waiting connections
 * itself (its reserve-fd trick) without telling us: no log line, no refused count, gateways
 * just see EOF (it_storm: 1,002 of 2,000 got in). Nothing here uses select() (libuv,
 * libmicrohttpd and librdkafka poll with epoll/poll), so, as systemd advises for such programs
 * (and Redis and nginx do for their client limits), raise the soft limit to the hard one, which
 * any process may do; and warn when even that is too low. Idempotent: after a reload it only
 * checks. */
static void raise_fd_limit(uint64_t max_connections) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
    LOG_WARN("cannot read the file descriptor limit", "error=\"%s\"", strerror(errno));
    return;
  }
  const rlim_t want = (rlim_t)max_connections + FD_RESERVE;
  if (rl.rlim_cur < rl.rlim_max) {
    const rlim_t before = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max; /* never unlimited: the kernel caps the hard one at fs.nr_open */
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
      LOG_INFO("file descriptor limit raised", "from=%llu to=%llu", (unsigned long long)before,
               (unsigned long long)rl.rlim_cur);
    } else {
      LOG_WARN("cannot raise the file descriptor limit", "limit=%llu hard=%llu error=\"%s\"",
               (unsigned long long)before, (unsigned long long)rl.rlim_max, strerror(errno));
      rl.rlim_cur = before;
    }
  }
  if (rl.rlim_cur < want)
    LOG_WARN("file descriptor limit too low for listen.max_connections: connections past it "
             "fail with EMFILE; raise the hard limit (LimitNOFILE=, ulimit -Hn)",
             "limit=%llu max_connections=%llu reserve=%d needed=%llu",
             (unsigned long long)rl.rlim_cur, (unsigned long long)max_connections, FD_RESERVE,
             (unsigned long long)want);
}

static void on_closed(uv_handle_t *h) { (void)h; }

static void on_stopped(void *arg) {
  daemon_t *d = arg;
  intake_pipeline_log_stats(intake_server_pipeline(d->server));
  uv_close((uv_handle_t *)&d->stats, on_closed);
  uv_close((uv_handle_t *)&d->sigterm, on_closed);
  uv_close((uv_handle_t *)&d->sigint, on_closed);
  uv_close((uv_handle_t *)&d->watchdog, on_closed);
  if (d->admin) {
    intake_admin_close(d->admin, NULL, NULL);
    d->admin = NULL;
  }
  uv_close((uv_handle_t *)&d->sighup, on_closed);
  LOG_INFO("stopped", NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
  daemon_t *d = h->data;
  if (d->stopping) {
    LOG_WARN("second signal: exiting without waiting for Kafka", "signal=%d", signum);
    exit(1);
  }
  d->stopping = 1;
  intake_notify_stopping();
  LOG_INFO("stopping: no new connections; finishing in-flight batches", "signal=%s",
           signum == SIGTERM ? "SIGTERM" : "SIGINT");
  /* In-flight records either land or time out within kafka.delivery_timeout. */
  intake_server_shutdown(d->server, d->cfg->delivery_timeout_ms + 5000, on_stopped, d);
}

/* Pinged from the loop: a loop stuck in a callback stops the pings, and systemd restarts us. */
static void on_watchdog(uv_timer_t *t) {
  (void)t;
  intake_notify_watchdog();
}

static void on_stats(uv_timer_t *t) {
  daemon_t *d = t->data;
  intake_pipeline_log_stats(intake_server_pipeline(d->server));
}

/* Reads the config file again and applies what can change live: routes, limits, windows,
 * tokens, log level and format, stats interval. Connections, in-flight batches and dedup state
 * are untouched. A file that fails validation changes nothing. Returns 0 or -1 (err set). */
static int daemon_reload_config(daemon_t *d, char *err, size_t errlen) {
  intake_config_t *next = calloc(1, sizeof *next);
  if (!next) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  if (intake_config_load(next, d->path, err, errlen) < 0) {
    free(next);
    LOG_ERROR("reload refused: the running config stays", "error=\"%s\"", err);
    return -EINVAL;
  }
  char changed[512];
  intake_config_keep_restart_only(next, d->cfg, changed, sizeof changed);
  if (changed[0])
    LOG_WARN("reload: these keys take effect at the next restart; running values kept",
             "keys=\"%s\"", changed);
  if (intake_server_reload(d->server, next, err, errlen) < 0) {
    intake_config_dispose(next);
    free(next);
    LOG_ERROR("reload refused: the running config stays", "error=\"%s\"", err);
    return -EINVAL; /* a router the new rules cannot build, an unreadable tokens file, ... */
  }
  intake_log_set_level(next->log_level);
  intake_log_set_format(next->log_format);
  raise_fd_limit(next->max_connections); /* live key: warn if the new value does not fit */
  if (next->stats_interval_ms != d->cfg->stats_interval_ms) {
    uv_timer_stop(&d->stats);
    if (next->stats_interval_ms)
      uv_timer_start(&d->stats, on_stats, next->stats_interval_ms, next->stats_interval_ms);
  }
  intake_config_dispose(d->cfg);
  free(d->cfg);
  d->cfg = next;
  LOG_INFO("reloaded", "config=%s rules=%zu", d->path, next->n_rules);
  return 0;
}

static int daemon_reload(void *ctx, char *err, size_t errlen) {
  intake_notify_reloading();
  int rc = daemon_reload_config(ctx, err, errlen);
  intake_notify_ready(NULL);
  return rc;
}

static void on_sighup(uv_signal_t *h, int signum) {
  daemon_t *d = h->data;
  char err[1024];
  (void)signum;
  if (!d->stopping)
    daemon_reload(d, err, sizeof err);
}

static void check_delivery(void *ctx, void *opaque, void *topic_user, int err) {
  (void)ctx, (void)opaque, (void)topic_user, (void)err;
}

/* --check-config goes past the YAML: what only librdkafka or OpenSSL can judge on the whole
 * set or on disk (a missing sasl.password, an unreadable ssl.ca.location, a key that does not
 * match its certificate) would otherwise pass here and stop the daemon at start or reload.
 * Builds the producer (nothing is sent; it is destroyed at once) and the gateway TLS context. */
static int check_resources(const intake_config_t *cfg, char *err, size_t errlen) {
  if (cfg->tls_cert_file) {
    intake_tls_ctx_t *tls = intake_tls_server_ctx_create(cfg, err, errlen);
    if (!tls)
      return -1;
    intake_tls_ctx_destroy(tls);
  }
  if (cfg->kafka_mode != INTAKE_KAFKA_BROKERS)
    return 0;
  uv_loop_t loop;
  if (uv_loop_init(&loop) < 0) {
    snprintf(err, errlen, "cannot create an event loop");
    return -1;
  }
  /* Without brokers to contact, the probe producer stays quiet: no connection attempts, and
   * its one warning about that is below the level shown here. */
  intake_log_set_level(INTAKE_LOG_ERROR);
  intake_config_t probe = *cfg;
  probe.kafka_brokers = "";
  intake_sink_t *sink = intake_sink_create(&loop, &probe, NULL, 0, check_delivery, NULL, err, errlen);
  if (sink) {
    intake_sink_close(sink);
    uv_run(&loop, UV_RUN_DEFAULT);
    intake_sink_destroy(sink);
  }
  uv_loop_close(&loop);
  return sink ? 0 : -1;
}

int main(int argc, char **argv) {
  const char *path = "conf/intaked.yaml";
  int check_only = 0;
  for (int i = 1; i < argc; i++) {
    if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
      path = argv[++i];
    } else if (!strcmp(argv[i], "--check-config") && i + 1 < argc) {
      path = argv[++i];
      check_only = 1;
    } else if (!strcmp(argv[i], "--version")) {
      printf("intaked %s\n", INTAKE_VERSION);
      return 0;
    } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }

  daemon_t d;
  memset(&d, 0, sizeof d);
  char err[1024] = "";
  d.path = path;
  d.cfg = calloc(1, sizeof *d.cfg);
  if (!d.cfg || intake_config_load(d.cfg, path, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", d.cfg ? err : "out of memory");
    free(d.cfg);
    return 1;
  }
  if (check_only) {
    if (check_resources(d.cfg, err, sizeof err) < 0) {
      fprintf(stderr, "%s: %s\n", path, err);
      intake_config_dispose(d.cfg);
      free(d.cfg);
      return 1;
    }
    printf("%s: ok\n", path);
    /* What the dedup memory holds: past this rate the effective window shrinks. */
    uint64_t keys = intake_dedup_keys_for(d.cfg->dedup_memory_bytes);
    printf("dedup: dedup.memory (%llu bytes) holds %llu events: %llu new events/s for the "
           "%llu s window, at most; above that the effective window shrinks (README: sizing)\n",
           (unsigned long long)d.cfg->dedup_memory_bytes, (unsigned long long)keys,
           (unsigned long long)(keys * 1000 / d.cfg->dedup_window_ms),
           (unsigned long long)(d.cfg->dedup_window_ms / 1000));
    intake_config_dispose(d.cfg);
    free(d.cfg);
    return 0;
  }
  intake_log_set_level(d.cfg->log_level);
  intake_log_set_format(d.cfg->log_format);
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit(d.cfg->max_connections); /* before any socket is opened */

  d.loop = uv_default_loop();
  d.server = intake_server_create(d.loop, d.cfg, err, sizeof err);
  if (!d.server || err[0]) {
    LOG_ERROR("cannot start", "config=%s error=\"%s\"", path, err);
    if (d.server) {
      /* The listener failed: close what the server opened, then free it. */
      intake_server_shutdown(d.server, 0, NULL, NULL);
      uv_run(d.loop, UV_RUN_DEFAULT);
      intake_server_destroy(d.server);
    }
    intake_config_dispose(d.cfg);
    free(d.cfg);
    return 1;
  }
  intake_pipeline_t *p = intake_server_pipeline(d.server);
  if (intake_pipeline_is_embedded(p)) {
    LOG_WARN("EMBEDDED KAFKA: in-process mock cluster, nothing is durable and old records are "
             "forgotten; set kafka.mode: brokers for real use",
             "bootstrap=%s", intake_pipeline_bootstrap(p));
  } else {
    LOG_INFO("kafka", "brokers=%s", intake_pipeline_bootstrap(p));
  }
  LOG_INFO("listening", "address=%s version=%s config=%s", intake_server_address(d.server),
           INTAKE_VERSION, path);

  uv_signal_init(d.loop, &d.sigterm);
  uv_signal_init(d.loop, &d.sigint);
  uv_signal_init(d.loop, &d.sighup);
  d.sigterm.data = d.sigint.data = d.sighup.data = &d;
  uv_signal_start(&d.sigterm, on_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_signal, SIGINT);
  uv_signal_start(&d.sighup, on_sighup, SIGHUP);
  uv_timer_init(d.loop, &d.stats);
  d.stats.data = &d;
  if (d.cfg->stats_interval_ms)
    uv_timer_start(&d.stats, on_stats, d.cfg->stats_interval_ms, d.cfg->stats_interval_ms);

  uv_timer_init(d.loop, &d.watchdog);
  if (d.cfg->admin_enabled) {
    d.admin = intake_admin_create(d.loop, d.cfg, d.server, INTAKE_VERSION, daemon_reload, &d, err,
                                  sizeof err);
    if (!d.admin) {
      LOG_ERROR("cannot start", "config=%s error=\"%s\"", path, err);
      d.exit_code = 1;
      d.stopping = 1;
      intake_server_shutdown(d.server, 0, on_stopped, &d); /* nothing was accepted yet */
    } else {
      LOG_INFO("admin listening", "address=%s", intake_admin_address(d.admin));
    }
  }
  if (!d.stopping) {
    char status[160];
    snprintf(status, sizeof status, "listening on %s, admin on %s",
             intake_server_address(d.server), d.admin ? intake_admin_address(d.admin) : "(off)");
    intake_notify_ready(status);
    uint64_t wd_usec = intake_notify_watchdog_usec();
    if (wd_usec) {
      uint64_t every = wd_usec / 2000 ? wd_usec / 2000 : 1; /* half the interval, in ms */
      d.watchdog.data = &d;
      uv_timer_start(&d.watchdog, on_watchdog, every, every);
      intake_notify_watchdog();
    }
  }

  uv_run(d.loop, UV_RUN_DEFAULT);

  intake_server_destroy(d.server);
  uv_loop_close(d.loop);
  intake_config_dispose(d.cfg);
  free(d.cfg);
  return d.exit_code;
}
