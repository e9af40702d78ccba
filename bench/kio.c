#include "kio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int64_t kio_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t kio_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double kio_proc_cpu(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long ut, st;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double kio_self_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

double kio_machine_cpu(void) {
  FILE *f = fopen("/proc/stat", "r");
  unsigned long long v[8] = {0};
  if (!f)
    return -1;
  int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (got != 8)
    return -1;
  /* user nice system (idle iowait) irq softirq steal */
  return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static rd_kafka_t *new_handle(rd_kafka_type_t type, const char *bootstrap, char *err,
                              size_t errlen) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  char e[512];
  if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof e) != RD_KAFKA_CONF_OK)
    goto fail;
  if (type == RD_KAFKA_CONSUMER) {
    char group[64];
    snprintf(group, sizeof group, "intake-bench-verify-%d-%lld", (int)getpid(),
             (long long)kio_mono_ns());
    /* Fetch big: the verifier reads millions of small records. */
    static const char *const kv[][2] = {
        {"enable.auto.commit", "false"},      {"enable.partition.eof", "false"},
        {"fetch.wait.max.ms", "50"},          {"max.partition.fetch.bytes", "8388608"},
        {"fetch.max.bytes", "67108864"},      {"queued.max.messages.kbytes", "262144"},
        {"auto.offset.reset", "earliest"},
    };
    if (rd_kafka_conf_set(conf, "group.id", group, e, sizeof e) != RD_KAFKA_CONF_OK)
      goto fail;
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
      if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], e, sizeof e) != RD_KAFKA_CONF_OK)
        goto fail;
  }
  rd_kafka_t *rk = rd_kafka_new(type, conf, e, sizeof e);
  if (!rk) {
    snprintf(err, errlen, "rd_kafka_new: %s", e);
    return NULL;
  }
  return rk;
fail:
  snprintf(err, errlen, "kafka config: %s", e);
  rd_kafka_conf_destroy(conf);
  return NULL;
}

/* Partition count of `topic`, waiting up to timeout_ms for it to appear; 0 if it does not. */
static int partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms) {
  int64_t deadline = kio_mono_ns() + (int64_t)timeout_ms * 1000000;
  rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
  int n = 0;
  while (t) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 5000);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && md->topics[0].err == 0)
      n = md->topics[0].partition_cnt;
    if (md)
      rd_kafka_metadata_destroy(md);
    if (n > 0 || kio_mono_ns() >= deadline)
      break;
    usleep(100000);
  }
  if (t)
    rd_kafka_topic_destroy(t);
  return n;
}

int kio_create_topics(const char *bootstrap, const char *const *topics, size_t n, int partitions,
                      char *err, size_t errlen) {
  rd_kafka_t *rk = new_handle(RD_KAFKA_PRODUCER, bootstrap, err, errlen);
  if (!rk)
    return -1;
  int rc = -1;
  char e[512];
  rd_kafka_NewTopic_t **nt = calloc(n, sizeof *nt);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_event_t *ev = NULL;
  if (!nt)
    goto done;
  for (size_t i = 0; i < n; i++)
    if (!(nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, 1, e, sizeof e))) {
      snprintf(err, errlen, "topic %s: %s", topics[i], e);
      goto done;
    }
  rd_kafka_AdminOptions_set_operation_timeout(opt, 15000, e, sizeof e);
  rd_kafka_CreateTopics(rk, nt, n, opt, q);
  ev = rd_kafka_queue_poll(q, 30000);
  if (!ev) {
    snprintf(err, errlen, "CreateTopics: no answer in 30 s");
    goto done;
  }
  if (rd_kafka_event_error(ev)) {
    snprintf(err, errlen, "CreateTopics: %s", rd_kafka_event_error_string(ev));
    goto done;
  }
  size_t cnt;
  const rd_kafka_topic_result_t **tr =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
  for (size_t i = 0; i < cnt; i++) {
    rd_kafka_resp_err_t te = rd_kafka_topic_result_error(tr[i]);
    if (te && te != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      snprintf(err, errlen, "create topic %s: %s", rd_kafka_topic_result_name(tr[i]),
               rd_kafka_topic_result_error_string(tr[i]));
      goto done;
    }
  }
  for (size_t i = 0; i < n; i++)
    if (partition_count(rk, topics[i], 20000) <= 0) {
      snprintf(err, errlen, "topic %s not in the broker's metadata after 20 s", topics[i]);
      goto done;
    }
  rc = 0;
done:
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(opt);
  rd_kafka_queue_destroy(q);
  if (nt) {
    for (size_t i = 0; i < n; i++)
      if (nt[i])
        rd_kafka_NewTopic_destroy(nt[i]);
    free(nt);
  }
  rd_kafka_destroy(rk);
  return rc;
}

typedef struct {
  size_t topic;
  int32_t partition;
  int64_t next, high;
} part_t;

int kio_read_all(const char *bootstrap, const char *const *topics, size_t n, kio_record_cb cb,
                 void *ctx, int timeout_ms, char *err, size_t errlen) {
  rd_kafka_t *rk = new_handle(RD_KAFKA_CONSUMER, bootstrap, err, errlen);
  if (!rk)
    return -1;
  int rc = -1;
  int64_t deadline = kio_mono_ns() + (int64_t)timeout_ms * 1000000;
  part_t *parts = NULL;
  size_t n_parts = 0;
  rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(64);
  rd_kafka_queue_t *q = NULL;
  rd_kafka_message_t *msgs[1024];
  const rd_kafka_topic_t *seen_rkt[64];
  size_t seen_topic[64], n_seen = 0;
  for (size_t i = 0; i < n; i++) {
    int np = partition_count(rk, topics[i], 20000);
    if (np <= 0) {
      snprintf(err, errlen, "topic %s does not exist", topics[i]);
      goto done;
    }
    part_t *np_parts = realloc(parts, (n_parts + (size_t)np) * sizeof *parts);
    if (!np_parts) {
      snprintf(err, errlen, "out of memory");
      goto done;
    }
    parts = np_parts;
    for (int p = 0; p < np; p++) {
      int64_t lo, hi;
      rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topics[i], p, &lo, &hi, 15000);
      if (e) {
        snprintf(err, errlen, "watermarks of %s [%d]: %s", topics[i], p, rd_kafka_err2str(e));
        goto done;
      }
      parts[n_parts++] = (part_t){i, p, lo, hi};
      rd_kafka_topic_partition_list_add(tl, topics[i], p)->offset = lo;
    }
  }
  rd_kafka_resp_err_t e = rd_kafka_assign(rk, tl);
  if (e) {
    snprintf(err, errlen, "assign: %s", rd_kafka_err2str(e));
    goto done;
  }
  q = rd_kafka_queue_get_consumer(rk);
  for (;;) {
    int done = 1;
    for (size_t i = 0; i < n_parts; i++)
      if (parts[i].next < parts[i].high)
        done = 0;
    if (done)
      break;
    if (kio_mono_ns() > deadline) {
      snprintf(err, errlen, "did not read the topics back within %d ms", timeout_ms);
      goto done;
    }
    ssize_t got = rd_kafka_consume_batch_queue(q, 200, msgs, sizeof msgs / sizeof msgs[0]);
    for (ssize_t k = 0; k < got; k++) {
      rd_kafka_message_t *m = msgs[k];
      if (m->err == 0) {
        /* topic handle -> topic index, cached: a strcmp per record adds up over millions */
        size_t ti = n;
        for (size_t i = 0; i < n_seen; i++)
          if (seen_rkt[i] == m->rkt)
            ti = seen_topic[i];
        if (ti == n) {
          const char *tn = rd_kafka_topic_name(m->rkt);
          for (size_t i = 0; i < n; i++)
            if (!strcmp(topics[i], tn))
              ti = i;
          if (n_seen < sizeof seen_rkt / sizeof seen_rkt[0]) {
            seen_rkt[n_seen] = m->rkt;
            seen_topic[n_seen++] = ti;
          }
        }
        part_t *p = NULL;
        for (size_t i = 0; i < n_parts; i++)
          if (parts[i].partition == m->partition && parts[i].topic == ti) {
            p = &parts[i];
            break;
          }
        /* A fetch restarted after an error may hand out records again: count each once. */
        if (p && m->offset >= p->next && m->offset < p->high) {
          cb(ctx, p->topic, m);
          p->next = m->offset + 1;
        }
      } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        fprintf(stderr, "intake-bench: consumer: %s\n", rd_kafka_message_errstr(m));
      }
      rd_kafka_message_destroy(m);
    }
  }
  rc = 0;
done:
  if (q)
    rd_kafka_queue_destroy(q);
  rd_kafka_topic_partition_list_destroy(tl);
  free(parts);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return rc;
}
