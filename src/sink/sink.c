#include "sink/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"

struct intake_sink_topic {
  char *name;
  rd_kafka_topic_t *rkt;      /* NULL for the counting sink */
  void *user;
};

typedef struct {
  void *opaque;
  intake_sink_topic_t *topic;
} unconfirmed_t;

struct intake_sink {
  rd_kafka_t *rk;
  rd_kafka_queue_t *mainq;
  int pipe_fds[2];            /* librdkafka writes to [1] when its main queue becomes non-empty */
  uv_poll_t poll;             /* watches pipe_fds[0] */
  uv_timer_t timer;           /* safety net: serves the queue even if a wakeup is missed */
  int closing;
  intake_sink_delivery_cb cb;
  void *ctx;
  char *bootstrap;
  int embedded;
  uint32_t embedded_partitions;
  uint64_t max_in_flight;
  intake_sink_topic_t **topics;
  size_t n_topics, cap_topics;
  int brokers_up;             /* from the last statistics: brokers in state UP */
  intake_log_limit_t error_log; /* librdkafka's error callback: one line a second */
  intake_log_limit_t rdlog_log; /* librdkafka's warnings and errors: one line a second */
  intake_log_limit_t auth_log;  /* authentication / TLS handshake failures: one line a second */
  int scram_nonce_bug;        /* SCRAM configured on a librdkafka that Kafka 4.x refuses */
  /* INTAKE_KAFKA_COUNTING: records "sent" and not yet confirmed, confirmed from `idle`. */
  int counting;
  uv_idle_t idle;
  unconfirmed_t *unconfirmed;
  size_t n_unconfirmed, cap_unconfirmed;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  intake_sink_t *s = opaque;
  intake_sink_topic_t *t = rd_kafka_topic_opaque(m->rkt);
  (void)rk;
  s->cb(s->ctx, m->_private, t ? t->user : NULL, (int)m->err);
}

/* librdkafka's statistics JSON lists every broker with its "state"; counting the UP ones is
 * all readiness needs, so a substring count does instead of a JSON parser. */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  intake_sink_t *s = opaque;
  (void)rk;
  (void)len;
  int up = 0;
  for (const char *p = json; (p = strstr(p, "\"state\":\"UP\"")) != NULL; p++)
    up++;
  s->brokers_up = up;
  return 0; /* librdkafka frees json */
}

/* Both callbacks run on the loop thread, from rd_kafka_poll(): errors always do, and logs do
 * because of log.queue (below). A broker that is down repeats its errors on every reconnect, so
 * each is limited to one line a second with the count of the lines held back. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  intake_sink_t *s = opaque;
  uint64_t held;
  (void)rk;
  /* A refused login or certificate does not heal by retrying: nothing will be delivered until
   * the configuration changes. Such failures get an error line of their own, with their own
   * limit, so that an operator can alert on it and a storm of other errors cannot hide it. */
  if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR__SSL) {
    if (!intake_log_allow(&s->auth_log, &held))
      return;
    const char *msg = err == RD_KAFKA_RESP_ERR__SSL ? "kafka TLS handshake failed"
                                                    : "kafka authentication failed";
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION && s->scram_nonce_bug)
      /* The message reads "invalid credentials" even when they are right. */
      LOG_ERROR(msg,
                "code=%s reason=\"%s\" hint=\"librdkafka %s sends a SCRAM nonce that Kafka 4.0 "
                "and later refuse (fixed in librdkafka 2.6.1, confluentinc/librdkafka#4895); "
                "use SASL PLAIN over SASL_SSL or TLS client certificates\" suppressed=%llu",
                rd_kafka_err2name(err), reason, rd_kafka_version_str(),
                (unsigned long long)held);
    else
      LOG_ERROR(msg, "code=%s reason=\"%s\" suppressed=%llu", rd_kafka_err2name(err), reason,
                (unsigned long long)held);
    return;
  }
  if (intake_log_allow(&s->error_log, &held))
    LOG_WARN("kafka error", "code=%s reason=\"%s\" suppressed=%llu", rd_kafka_err2name(err),
             reason, (unsigned long long)held);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  intake_sink_t *s = rd_kafka_opaque(rk);
  intake_log_level_t l = level <= 3 ? INTAKE_LOG_ERROR : level <= 5 ? INTAKE_LOG_WARN : INTAKE_LOG_DEBUG;
  uint64_t held = 0;
  if (l >= INTAKE_LOG_WARN && s && !intake_log_allow(&s->rdlog_log, &held))
    return;
  intake_log(l, "librdkafka", "facility=%s text=\"%s\" suppressed=%llu", fac, buf,
             (unsigned long long)held);
}

static void serve(intake_sink_t *s) {
  /* rd_kafka_poll(rk, 0) serves what is queued now and returns; bound the rounds so a flood of
   * reports cannot keep the loop from reading sockets. */
  for (int i = 0; i < 64; i++)
    if (rd_kafka_poll(s->rk, 0) == 0)
      break;
}

static void on_pipe(uv_poll_t *p, int status, int events) {
  intake_sink_t *s = p->data;
  char drain[256];
  (void)status;
  (void)events;
  while (read(s->pipe_fds[0], drain, sizeof drain) > 0) {
  }
  serve(s);
}

static void on_timer(uv_timer_t *t) { serve(t->data); }

static void on_counting_idle(uv_idle_t *h) {
  intake_sink_t *s = h->data;
  unconfirmed_t *list = s->unconfirmed;
  size_t n = s->n_unconfirmed;
  /* Swap in a fresh array: callbacks may produce again. */
  s->unconfirmed = NULL;
  s->n_unconfirmed = s->cap_unconfirmed = 0;
  uv_idle_stop(&s->idle);
  for (size_t i = 0; i < n; i++)
    s->cb(s->ctx, list[i].opaque, list[i].topic->user, 0);
  if (!s->unconfirmed) {
    s->unconfirmed = list;
    s->cap_unconfirmed = n;
  } else {
    free(list);
  }
}

static intake_sink_t *create_counting(intake_sink_t *s, uv_loop_t *loop) {
  s->counting = 1;
  s->bootstrap = strdup("counting");
  s->max_in_flight = 900000;
  uv_idle_init(loop, &s->idle);
  s->idle.data = s;
  return s;
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, char *err, size_t errlen) {
  char e[512];
  if (rd_kafka_conf_set(conf, k, v, e, sizeof e) != RD_KAFKA_CONF_OK) {
    snprintf(err, errlen, "kafka.properties: %s: %s", k, e);
    return -1;
  }
  return 0;
}

intake_sink_t *intake_sink_create(uv_loop_t *loop, const intake_config_t *cfg,
                                  const char *const *topics, size_t n_topics,
                                  intake_sink_delivery_cb cb, void *ctx, char *err, size_t errlen) {
  intake_sink_t *s = calloc(1, sizeof *s);
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  char num[32];
  err[0] = '\0';
  if (!s || !conf)
    goto fail;
  s->pipe_fds[0] = s->pipe_fds[1] = -1;
  s->cb = cb;
  s->ctx = ctx;
  s->embedded = cfg->kafka_mode == INTAKE_KAFKA_EMBEDDED;
  s->embedded_partitions = cfg->embedded_partitions;
  s->error_log.interval_ms = s->rdlog_log.interval_ms = s->auth_log.interval_ms = 1000;
  if (cfg->kafka_mode == INTAKE_KAFKA_COUNTING) {
    rd_kafka_conf_destroy(conf);
    return create_counting(s, loop);
  }
  snprintf(num, sizeof num, "%llu", (unsigned long long)cfg->delivery_timeout_ms);
  if (set(conf, "client.id", "intaked", err, errlen) ||
      set(conf, "enable.idempotence", "true", err, errlen) ||
      set(conf, "acks", "all", err, errlen) ||
      set(conf, "compression.codec", "zstd", err, errlen) ||
      set(conf, "message.timeout.ms", num, err, errlen) ||
      /* librdkafka's default; room for the pipeline's own in-flight bound below. */
      set(conf, "queue.buffering.max.messages", "1000000", err, errlen) ||
      /* Statistics feed readiness (intake_sink_ready); they are cheap at 1 s. */
      set(conf, "statistics.interval.ms", "1000", err, errlen) ||
      /* Logs go to the main queue and are served by rd_kafka_poll() on the loop thread, like
       * delivery reports, instead of being called from librdkafka's threads: the rate
       * limiter in on_log() needs no lock then. */
      set(conf, "log.queue", "true", err, errlen))
    goto fail;
  if (s->embedded) {
    if (set(conf, "test.mock.num.brokers", "1", err, errlen))
      goto fail;
  } else if (set(conf, "bootstrap.servers", cfg->kafka_brokers, err, errlen)) {
    goto fail;
  }
  for (size_t i = 0; i < cfg->n_kafka_properties; i++) {
    const intake_kv_t *kv = &cfg->kafka_properties[i];
    if (!strcmp(kv->key, "acks") || !strcmp(kv->key, "enable.idempotence") ||
        !strcmp(kv->key, "request.required.acks"))
      LOG_WARN("kafka.properties overrides a delivery guarantee", "key=%s value=\"%s\"", kv->key,
               kv->value);
    if (set(conf, kv->key, kv->value, err, errlen))
      goto fail;
    if (!strcmp(kv->key, "sasl.mechanisms") || !strcmp(kv->key, "sasl.mechanism"))
      s->scram_nonce_bug = !strncasecmp(kv->value, "SCRAM-", 6) && rd_kafka_version() < 0x020601ff;
  }
  char qmax[32];
  size_t qlen = sizeof qmax;
  if (rd_kafka_conf_get(conf, "queue.buffering.max.messages", qmax, &qlen) == RD_KAFKA_CONF_OK)
    s->max_in_flight = strtoull(qmax, NULL, 10) * 9 / 10;
  if (s->max_in_flight < 1)
    s->max_in_flight = 1;
  rd_kafka_conf_set_opaque(conf, s);
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_error_cb(conf, on_error);
  rd_kafka_conf_set_log_cb(conf, on_log);
  rd_kafka_conf_set_stats_cb(conf, on_stats);

  char e[512];
  s->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (!s->rk) {
    snprintf(err, errlen, "kafka: cannot create producer: %s", e);
    goto fail;
  }
  conf = NULL; /* owned by rk now */
  rd_kafka_set_log_queue(s->rk, NULL); /* NULL: the main queue (log.queue above) */
  if (s->embedded) {
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(s->rk);
    if (!mc) {
      snprintf(err, errlen, "kafka: embedded mock cluster did not start");
      goto fail;
    }
    s->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(mc));
    for (size_t i = 0; i < n_topics; i++)
      intake_sink_ensure_topic(s, topics[i]);
  } else {
    s->bootstrap = strdup(cfg->kafka_brokers);
  }
  if (pipe2(s->pipe_fds, O_NONBLOCK | O_CLOEXEC) < 0) {
    snprintf(err, errlen, "kafka: pipe: %s", strerror(errno));
    goto fail;
  }
  s->mainq = rd_kafka_queue_get_main(s->rk);
  rd_kafka_queue_io_event_enable(s->mainq, s->pipe_fds[1], "1", 1);
  uv_poll_init(loop, &s->poll, s->pipe_fds[0]);
  s->poll.data = s;
  uv_poll_start(&s->poll, UV_READABLE, on_pipe);
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_timer, 100, 100);
  return s;

fail:
  if (conf)
    rd_kafka_conf_destroy(conf);
  if (s) {
    if (s->rk)
      rd_kafka_destroy(s->rk);
    free(s->bootstrap);
    free(s);
  }
  if (err[0] == '\0')
    snprintf(err, errlen, "kafka: out of memory");
  return NULL;
}

const char *intake_sink_bootstrap(const intake_sink_t *s) { return s->bootstrap; }
int intake_sink_is_embedded(const intake_sink_t *s) { return s->embedded; }
uint64_t intake_sink_max_in_flight(const intake_sink_t *s) { return s->max_in_flight; }
uint64_t intake_sink_queue_depth(const intake_sink_t *s) {
  return s->counting ? s->n_unconfirmed : (uint64_t)rd_kafka_outq_len(s->rk);
}

void intake_sink_ensure_topic(intake_sink_t *s, const char *name) {
  if (!s->embedded || s->counting)
    return;
  rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(s->rk);
  rd_kafka_mock_topic_create(mc, name, (int)s->embedded_partitions, 1);
}

intake_sink_topic_t *intake_sink_topic(intake_sink_t *s, const char *name, void *user) {
  for (size_t i = 0; i < s->n_topics; i++)
    if (!strcmp(s->topics[i]->name, name))
      return s->topics[i];
  if (s->n_topics == s->cap_topics) {
    size_t cap = s->cap_topics ? s->cap_topics * 2 : 8;
    intake_sink_topic_t **t = realloc(s->topics, cap * sizeof *t);
    if (!t)
      return NULL;
    s->topics = t;
    s->cap_topics = cap;
  }
  intake_sink_topic_t *t = calloc(1, sizeof *t);
  if (!t || !(t->name = strdup(name))) {
    free(t);
    return NULL;
  }
  t->user = user;
  if (!s->counting) {
    /* A copy of the default topic conf, so topic-level settings given on the global conf
     * (message.timeout.ms, kafka.properties) still apply; a fresh conf would drop them. */
    rd_kafka_topic_conf_t *tc = rd_kafka_default_topic_conf_dup(s->rk);
    rd_kafka_topic_conf_set_opaque(tc, t);
    t->rkt = rd_kafka_topic_new(s->rk, name, tc); /* takes tc */
    if (!t->rkt) {
      free(t->name);
      free(t);
      return NULL;
    }
  }
  s->topics[s->n_topics++] = t;
  return t;
}

int intake_sink_ready(const intake_sink_t *s) {
  return s->counting || s->embedded || s->brokers_up > 0;
}

static void free_topics(intake_sink_t *s) {
  for (size_t i = 0; i < s->n_topics; i++) {
    if (s->topics[i]->rkt)
      rd_kafka_topic_destroy(s->topics[i]->rkt);
    free(s->topics[i]->name);
    free(s->topics[i]);
  }
  free(s->topics);
}

int intake_sink_produce(intake_sink_t *s, intake_sink_topic_t *topic, const void *key,
                        size_t key_len, const void *value, size_t value_len,
                        const intake_sink_header_t *headers, size_t n_headers, void *opaque) {
  if (s->counting) {
    if (s->n_unconfirmed == s->cap_unconfirmed) {
      size_t cap = s->cap_unconfirmed ? s->cap_unconfirmed * 2 : 4096;
      unconfirmed_t *u = realloc(s->unconfirmed, cap * sizeof *u);
      if (!u)
        return -RD_KAFKA_RESP_ERR__QUEUE_FULL;
      s->unconfirmed = u;
      s->cap_unconfirmed = cap;
    }
    (void)key;
    (void)key_len;
    (void)value;
    (void)value_len;
    (void)headers;
    (void)n_headers;
    s->unconfirmed[s->n_unconfirmed].opaque = opaque;
    s->unconfirmed[s->n_unconfirmed++].topic = topic;
    uv_idle_start(&s->idle, on_counting_idle);
    return 0;
  }
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(n_headers);
  for (size_t i = 0; i < n_headers; i++)
    rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value, (ssize_t)headers[i].len);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      s->rk, RD_KAFKA_V_RKT(topic->rkt), RD_KAFKA_V_KEY(key, key_len),
      RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
  if (e) {
    rd_kafka_headers_destroy(hdrs); /* only owned by librdkafka on success */
    return -(int)e;
  }
  return 0;
}

static void on_closed(uv_handle_t *h) { (void)h; }

void intake_sink_close(intake_sink_t *s) {
  if (s->closing)
    return;
  s->closing = 1;
  if (s->counting) {
    uv_close((uv_handle_t *)&s->idle, on_closed);
    return;
  }
  uv_close((uv_handle_t *)&s->poll, on_closed);
  uv_close((uv_handle_t *)&s->timer, on_closed);
}

void intake_sink_destroy(intake_sink_t *s) {
  if (!s)
    return;
  if (s->counting) {
    for (size_t i = 0; i < s->n_unconfirmed; i++)
      s->cb(s->ctx, s->unconfirmed[i].opaque, s->unconfirmed[i].topic->user,
            RD_KAFKA_RESP_ERR__PURGE_QUEUE);
    free(s->unconfirmed);
    free_topics(s);
    free(s->bootstrap);
    free(s);
    return;
  }
  /* Purge what is still queued so its delivery reports (failed) fire now, then serve them. */
  rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_poll(s->rk, 0);
  free_topics(s);
  if (s->mainq)
    rd_kafka_queue_destroy(s->mainq);
  rd_kafka_destroy(s->rk);
  if (s->pipe_fds[0] >= 0)
    close(s->pipe_fds[0]);
  if (s->pipe_fds[1] >= 0)
    close(s->pipe_fds[1]);
  free(s->bootstrap);
  free(s);
}
