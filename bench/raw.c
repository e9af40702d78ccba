#include "raw.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "city.h"
#include "hist.h"
#include "kio.h"

#define POOL 200000u  /* distinct events cycled through; far more than a producer batch holds */

typedef struct {
  uint8_t *value;
  uint32_t len;
  uint32_t src;
  uint8_t topics;
  char dedup_key[33];
} pooled_t;

/* A group of `group` consecutive events, the counterpart of a gateway's batch: its latency runs
 * from its first produce call to the delivery report of its last record. */
#define GROUP_RING 8192u
typedef struct {
  int64_t start_ns;
  uint32_t pending;           /* records produced and not yet reported */
  int closed;                 /* every record of the group has been produced */
} group_t;

typedef struct {
  uint64_t delivered, failed;
  group_t *groups;
  hist_t *lat;
} dr_t;

static void group_done(dr_t *d, group_t *g) {
  hist_add(d->lat, (uint64_t)(kio_mono_ns() - g->start_ns) / 1000);
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  dr_t *d = opaque;
  (void)rk;
  if (m->err)
    d->failed++;
  else
    d->delivered++;
  group_t *g = &d->groups[(uintptr_t)m->_private % GROUP_RING];
  if (--g->pending == 0 && g->closed)
    group_done(d, g);
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int raw_run(const raw_opts_t *o, raw_result_t *r, char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  err[0] = '\0';
  char names[CITY_N_TOPICS][256];
  const char *topics[CITY_N_TOPICS];
  for (int t = 0; t < CITY_N_TOPICS; t++) {
    snprintf(names[t], sizeof names[t], "%s.%s", o->prefix, city_topic_suffix[t]);
    topics[t] = names[t];
  }
  if (kio_create_topics(o->bootstrap, topics, CITY_N_TOPICS, o->partitions, err, errlen) < 0)
    return -1;

  /* The records: the city's background events, as intaked would write them. */
  size_t n_pool = o->records < POOL ? (size_t)o->records : POOL;
  if (n_pool == 0)
    n_pool = 1;
  pooled_t *pool = calloc(n_pool, sizeof *pool);
  if (!pool) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  city_rng_t rng = {(o->seed + 7) * 0x9e3779b97f4a7c15ull | 1};
  int64_t wall = kio_wall_ms();
  uint8_t buf[CITY_EVENT_MAX];
  for (size_t i = 0; i < n_pool; i++) {
    city_event_t e;
    uint32_t src = city_below(&rng, CITY_SOURCES);
    city_event(&e, &rng, src, i, city_is_camera(src) ? 1 + i : 0, wall, -1);
    size_t len = city_encode(&e, buf);
    pool[i].value = malloc(len);
    if (!pool[i].value) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    memcpy(pool[i].value, buf, len);
    pool[i].len = (uint32_t)len;
    pool[i].src = src;
    pool[i].topics = (uint8_t)city_route(&e);
    XXH128_hash_t h = XXH3_128bits(buf, len);
    snprintf(pool[i].dedup_key, sizeof pool[i].dedup_key, "%016llx%016llx",
             (unsigned long long)h.high64, (unsigned long long)h.low64);
  }

  dr_t dr = {0, 0, calloc(GROUP_RING, sizeof(group_t)), &r->lat};
  if (!dr.groups) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  char e[512];
  static const char *const base[][2] = {
      {"client.id", "intake-bench-raw"},
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"compression.codec", "zstd"},
      {"message.timeout.ms", "30000"},
      {"queue.buffering.max.messages", "1000000"},
  };
  if (rd_kafka_conf_set(conf, "bootstrap.servers", o->bootstrap, e, sizeof e))
    goto conf_fail;
  for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
    if (rd_kafka_conf_set(conf, base[i][0], base[i][1], e, sizeof e))
      goto conf_fail;
  for (size_t i = 0; i < o->n_props; i++) {
    char kv[512];
    snprintf(kv, sizeof kv, "%s", o->props[i]);
    char *eq = strchr(kv, '=');
    if (!eq) {
      snprintf(e, sizeof e, "not key=value: %.400s", kv);
      goto conf_fail;
    }
    *eq = '\0';
    if (rd_kafka_conf_set(conf, kv, eq + 1, e, sizeof e))
      goto conf_fail;
  }
  rd_kafka_conf_set_opaque(conf, &dr);
  rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (!rk) {
    snprintf(err, errlen, "rd_kafka_new: %s", e);
    return -1;
  }
  rd_kafka_topic_t *rkt[CITY_N_TOPICS];
  for (int t = 0; t < CITY_N_TOPICS; t++)
    rkt[t] = rd_kafka_topic_new(rk, topics[t], NULL);
  /* Warm the connection and metadata so the clock measures producing, not bootstrapping. */
  const struct rd_kafka_metadata *md;
  if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
    rd_kafka_metadata_destroy(md);

  double cpu0 = cpu_seconds();
  int64_t t0 = kio_mono_ns();
  char received[24] = "";
  int64_t received_at = -1;
  unsigned group = o->group ? o->group : 200;
  double group_ns = o->rate > 0 ? (double)group / o->rate * 1e9 : 0;
  uint64_t gno = 0;
  group_t *g = &dr.groups[0];
  for (uint64_t i = 0; r->records < o->records; i++) {
    const pooled_t *p = &pool[i % n_pool];
    if (i % group == 0) {
      if (i) { /* close the previous group */
        g->closed = 1;
        if (g->pending == 0)
          group_done(&dr, g);
      }
      gno++;
      if (group_ns > 0) { /* paced: this group's time comes, serving reports meanwhile */
        int64_t due = t0 + (int64_t)((double)(gno - 1) * group_ns);
        for (int64_t now = kio_mono_ns(); now < due; now = kio_mono_ns())
          rd_kafka_poll(rk, (int)((due - now) / 1000000));
      }
      g = &dr.groups[gno % GROUP_RING];
      *g = (group_t){kio_mono_ns(), 0, 0};
    }
    uint32_t sl;
    const char *sid = city_source_id(p->src, &sl);
    if ((i & 1023) == 0) {
      int64_t now = kio_wall_ms();
      if (now != received_at) {
        snprintf(received, sizeof received, "%lld", (long long)now);
        received_at = now;
      }
    }
    r->events++;
    for (int t = 0; t < CITY_T_DLQ && r->records < o->records; t++) {
      if (!((p->topics >> t) & 1))
        continue;
      const char *route = city_topic_rule[t];
      rd_kafka_headers_t *h = rd_kafka_headers_new(6);
      rd_kafka_header_add(h, "gateway_id", -1, "bench-gw-000", 12);
      rd_kafka_header_add(h, "received_ms", -1, received, (ssize_t)strlen(received));
      rd_kafka_header_add(h, "route", -1, route, (ssize_t)strlen(route));
      rd_kafka_header_add(h, "schema", -1, "intake.v1.Event", 15);
      rd_kafka_header_add(h, "dedup_key", -1, p->dedup_key, 32);
      rd_kafka_header_add(h, "content-type", -1, "application/x-protobuf", 22);
      for (;;) {
        rd_kafka_resp_err_t pe = rd_kafka_producev(
            rk, RD_KAFKA_V_RKT(rkt[t]), RD_KAFKA_V_KEY(sid, sl),
            RD_KAFKA_V_VALUE(p->value, p->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE((void *)(uintptr_t)gno), RD_KAFKA_V_END);
        if (pe == RD_KAFKA_RESP_ERR_NO_ERROR) {
          g->pending++;
          break;
        }
        if (pe != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
          snprintf(err, errlen, "produce: %s", rd_kafka_err2str(pe));
          rd_kafka_headers_destroy(h);
          goto done;
        }
        rd_kafka_poll(rk, 1); /* the queue is full: serve delivery reports */
      }
      r->records++;
    }
    if ((i & 255) == 0)
      rd_kafka_poll(rk, 0);
    /* Flat out, but like a real application: at most `inflight` records waiting for their
     * delivery reports. (Queueing all of them up front measured slower: a queue of a million
     * records costs page faults and cache misses that no running service pays.) */
    while (o->inflight && r->records - (dr.delivered + dr.failed) > o->inflight)
      rd_kafka_poll(rk, 1);
  }
  g->closed = 1;
  if (g->pending == 0 && gno)
    group_done(&dr, g);
  r->produce_s = (double)(kio_mono_ns() - t0) / 1e9;
  rd_kafka_flush(rk, 120000);
done:
  r->seconds = (double)(kio_mono_ns() - t0) / 1e9;
  r->cpu_s = cpu_seconds() - cpu0;
  r->delivered = dr.delivered;
  r->failed = dr.failed;
  r->rps = (double)r->delivered / r->seconds;
  r->eps = r->records ? r->rps * (double)r->events / (double)r->records : 0;
  for (int t = 0; t < CITY_N_TOPICS; t++)
    rd_kafka_topic_destroy(rkt[t]);
  rd_kafka_destroy(rk);
  for (size_t i = 0; i < n_pool; i++)
    free(pool[i].value);
  free(pool);
  free(dr.groups);
  return err[0] ? -1 : 0;

conf_fail:
  snprintf(err, errlen, "kafka config: %s", e);
  rd_kafka_conf_destroy(conf);
  for (size_t i = 0; i < n_pool; i++)
    free(pool[i].value);
  free(pool);
  return -1;
}
