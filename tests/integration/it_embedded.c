/* The embedded default: intaked started with the shipped conf/intaked.yaml (only the listen
 * port changed) runs on its in-process Kafka, logs loudly that nothing is durable, prints the
 * bootstrap address, and a batch sent to it can be read back through that address. */
#include <stdlib.h>

#include <librdkafka/rdkafka.h>

#include "itest.h"

#define N 12

/* The shipped config with `port: N` in the listen section replaced by ${PORT}, and the admin
 * listener's port by 0 (any free port: tests run in parallel). */
static char *shipped_config_template(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/conf/intaked.yaml", ITEST_SOURCE_DIR);
  FILE *f = fopen(path, "r");
  IT_CHECKF(f != NULL, "cannot open %s", path);
  char *out = NULL;
  size_t cap = 0;
  FILE *o = open_memstream(&out, &cap);
  IT_CHECK(o != NULL);
  char line[1024];
  int in_listen = 0, in_admin = 0, replaced = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] != ' ' && line[0] != '#' && line[0] != '\n') {
      in_listen = strncmp(line, "listen:", 7) == 0;
      in_admin = strncmp(line, "admin:", 6) == 0;
    }
    const char *p = line + strspn(line, " ");
    if (in_listen && !replaced && strncmp(p, "port:", 5) == 0) {
      fprintf(o, "%.*sport: ${PORT}\n", (int)(p - line), line);
      replaced = 1;
    } else if (in_admin && strncmp(p, "port:", 5) == 0) {
      fprintf(o, "%.*sport: 0\n", (int)(p - line), line);
    } else {
      fputs(line, o);
    }
  }
  fclose(f);
  fclose(o);
  IT_CHECKF(replaced, "%s: no listen.port line to replace", path);
  return out;
}

/* Names of every non-internal topic the cluster at `bootstrap` has. */
static size_t list_topics(const char *bootstrap, char **names, size_t max) {
  char err[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  IT_CHECK(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err) ==
           RD_KAFKA_CONF_OK);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  IT_CHECKF(rk != NULL, "%s", err);
  const struct rd_kafka_metadata *md;
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
  IT_CHECKF(e == 0, "metadata from the embedded cluster at %s: %s", bootstrap,
            rd_kafka_err2str(e));
  size_t n = 0;
  for (int i = 0; i < md->topic_cnt && n < max; i++)
    if (md->topics[i].topic[0] != '_')
      names[n++] = strdup(md->topics[i].topic);
  rd_kafka_metadata_destroy(md);
  rd_kafka_destroy(rk);
  return n;
}

int main(void) {
  itest_init("embedded", false, 120);
  char *tpl = shipped_config_template();
  itest_daemon_t d;
  itest_daemon_start(&d, "embedded", tpl);
  free(tpl);

  char *line = itest_daemon_wait_log(&d, "bootstrap=", 10000);
  IT_CHECKF(line != NULL, "intaked printed no bootstrap= address");
  char bootstrap[128];
  IT_CHECK(itest_logfmt_str(line, "bootstrap", bootstrap, sizeof bootstrap));
  IT_CHECKF(strstr(line, "level=warn") != NULL || strstr(line, "level=error") != NULL,
            "the embedded-mode line is not a warning: %s", line);
  IT_CHECKF(strcasestr(line, "durable") != NULL, "the warning does not say nothing is durable: %s",
            line);
  itest_log("embedded Kafka at %s", bootstrap);
  free(line);

  /* A batch of events of several kinds, so that some match the shipped rules. */
  Intake__V1__Event *evs[N];
  ProtobufCBinaryData bytes[N];
  int64_t now = itest_now_ms();
  for (int i = 0; i < N; i++) {
    char source[32], id[32];
    snprintf(id, sizeof id, "emb-%d-%lld", i, (long long)now);
    if (i % 3 == 0) {
      snprintf(source, sizeof source, "3307820000131000%04d", i);
      evs[i] = itest_event_new(source, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA, id, 0,
                               "gb28181.alarm.6", 2, now);
      itest_event_set_location(evs[i], 120.07, 29.31, "330782");
    } else if (i % 3 == 1) {
      snprintf(source, sizeof source, "smoke-%d", i);
      evs[i] = itest_event_new(source, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id, 0,
                               "smoke.alarm", 1, now);
    } else {
      snprintf(source, sizeof source, "other-%d", i);
      evs[i] = itest_event_new(source, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_OTHER, id, 0,
                               "door.open", 5, now);
    }
    bytes[i] = itest_event_pack(evs[i]);
  }
  intake_client_t *c = itest_connect(&d, "gw-embedded", NULL);
  IT_CHECK_INT(intake_client_send_batch_encoded(c, 1, bytes, N, INTAKE_CLIENT_ZSTD), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, 30000);
  IT_CHECKF(ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK, "status %d (%s)",
            ack->status, ack->detail);
  IT_CHECK_INT(ack->n_outcomes, N);
  for (int i = 0; i < N; i++)
    IT_CHECK_INT(ack->outcomes[i], INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  intake_client_close(c);

  /* Read every topic back through the printed address: each event is there, keyed by its
   * source, at most once per topic. */
  char *names[64];
  size_t n_topics = list_topics(bootstrap, names, 64);
  IT_CHECK(n_topics > 0);
  int found[N] = {0};
  for (size_t t = 0; t < n_topics; t++) {
    itest_records_t rs = itest_consume(bootstrap, names[t], 0, 10000);
    itest_log("%s: %zu records", names[t], rs.n);
    for (int i = 0; i < N; i++) {
      size_t k = itest_records_count(&rs, evs[i]->source_id, bytes[i].data, bytes[i].len);
      IT_CHECKF(k <= 1, "event %d %zu times in %s", i, k, names[t]);
      found[i] += (int)k;
    }
    itest_records_free(&rs);
    free(names[t]);
  }
  for (int i = 0; i < N; i++)
    IT_CHECKF(found[i] >= 1, "event %d (%s) not readable through %s", i, evs[i]->type,
              bootstrap);

  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  for (int i = 0; i < N; i++) {
    itest_event_free(evs[i]);
    free(bytes[i].data);
  }
  itest_finish();
  return 0;
}
