/* libFuzzer target: intake_config_load_string() on arbitrary YAML, then the router built from
 * what loaded, then dispose. A loaded config must respect every bound config.h documents; a
 * refused one leaves a "name:line: ..." or "name: ..." message and a zeroed struct. */
#include "fuzz_common.h"

#define IN(v, lo, hi) ((v) >= (lo) && (v) <= (hi))
#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define SEC 1000ull
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

static void check_bounds(const intake_config_t *c) {
  FUZZ_CHECK(c->listen_address != NULL && c->default_topic != NULL && c->dead_letter_topic != NULL);
  FUZZ_CHECK(IN(c->max_connections, 1u, 100000u));
  FUZZ_CHECK(IN(c->idle_timeout_ms, 1 * SEC, 1 * DAY));
  FUZZ_CHECK(IN(c->max_frame_bytes, 1 * KIB, 64 * MIB));
  FUZZ_CHECK(IN(c->max_batch_events, 1u, 100000u));
  FUZZ_CHECK(IN(c->max_in_flight, 1u, 1024u));
  FUZZ_CHECK(IN(c->hello_timeout_ms, 100ull, 5 * MIN));
  FUZZ_CHECK(c->keepalive_ms == 0 || IN(c->keepalive_ms, 1 * SEC, 2 * HOUR));
  FUZZ_CHECK(IN(c->write_backlog_bytes, 4 * KIB, 64 * MIB));
  FUZZ_CHECK((c->tls_cert_file == NULL) == (c->tls_key_file == NULL));
  FUZZ_CHECK(c->tls_cert_file || (!c->tls_client_ca_file && !c->tls_require_client_cert &&
                                  !c->tls_match_gateway_id));
  FUZZ_CHECK(!c->tls_require_client_cert || c->tls_client_ca_file);
  FUZZ_CHECK(!c->tls_match_gateway_id || c->tls_require_client_cert);
  FUZZ_CHECK(c->rate_limit <= 100000000u && (c->rate_limit > 0 || c->rate_burst == 0));
  FUZZ_CHECK(IN(c->max_id_bytes, 1u, 1024u));
  FUZZ_CHECK(IN(c->max_type_bytes, 1u, 1024u));
  FUZZ_CHECK(c->max_attributes <= 1024u);
  FUZZ_CHECK(IN(c->max_attribute_bytes, 1u, 64 * KIB));
  FUZZ_CHECK(c->max_payload_bytes <= 1 * MIB);
  FUZZ_CHECK(IN(c->max_future_skew_ms, 1 * SEC, 1 * DAY));
  FUZZ_CHECK(IN(c->max_event_age_ms, 1 * MIN, 365 * DAY));
  FUZZ_CHECK(IN(c->max_decompressed_bytes, 1 * KIB, 256 * MIB));
  FUZZ_CHECK(IN(c->dedup_window_ms, 1 * SEC, 7 * DAY));
  FUZZ_CHECK(IN(c->dedup_memory_bytes, 1 * MIB, 64 * GIB));
  FUZZ_CHECK(IN(c->dedup_seq_memory_bytes, 1 * MIB, 64 * GIB));
  FUZZ_CHECK(strcmp(c->default_topic, c->dead_letter_topic) != 0);
  FUZZ_CHECK(c->kafka_mode == INTAKE_KAFKA_EMBEDDED || c->kafka_mode == INTAKE_KAFKA_BROKERS);
  FUZZ_CHECK((c->kafka_mode == INTAKE_KAFKA_BROKERS) == (c->kafka_brokers != NULL));
  FUZZ_CHECK(IN(c->embedded_partitions, 1u, 64u));
  FUZZ_CHECK(IN(c->delivery_timeout_ms, 1 * SEC, 1 * HOUR));
  FUZZ_CHECK(c->stats_interval_ms == 0 || IN(c->stats_interval_ms, 1 * SEC, 1 * DAY));
  FUZZ_CHECK(IN((int)c->log_level, INTAKE_LOG_DEBUG, INTAKE_LOG_ERROR));
  for (size_t i = 0; i < c->n_rules; i++) {
    const intake_route_rule_t *r = &c->rules[i];
    FUZZ_CHECK(r->name != NULL && strcmp(r->name, "default") != 0);
    FUZZ_CHECK(r->n_topics >= 1);
    FUZZ_CHECK(r->severity_min <= r->severity_max && r->severity_max <= 9);
    for (size_t t = 0; t < r->n_topics; t++)
      FUZZ_CHECK(strcmp(r->topics[t], c->dead_letter_topic) != 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const intake_config_t zero;
  intake_config_t cfg;
  char err[512];
  memset(err, 0x7f, sizeof err);
  int rc = intake_config_load_string(&cfg, "fuzz.yaml", (const char *)data, size, err, sizeof err);
  if (rc == 0) {
    check_bounds(&cfg);
    intake_router_t *r = intake_router_create(&cfg, err, sizeof err);
    if (r) {
      FUZZ_CHECK(intake_router_n_topics(r) >= 1);
      FUZZ_CHECK(strcmp(intake_router_rule_name(r, intake_router_n_rules(r) - 1), "default") == 0);
      intake_router_destroy(r);
    } else {
      FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
    }
  } else {
    FUZZ_CHECK(rc == -1);
    FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
    FUZZ_CHECK(strncmp(err, "fuzz.yaml:", 10) == 0 || strncmp(err, "fuzz.yaml: ", 11) == 0);
    FUZZ_CHECK(memcmp(&cfg, &zero, sizeof cfg) == 0);
  }
  intake_config_dispose(&cfg);
  intake_config_dispose(&cfg); /* a disposed config is fine */
  return 0;
}
