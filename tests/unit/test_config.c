/* Unit tests for src/config: defaults, the shipped file, every class of error, parse helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "decode/event.h"

static char err[512];

static int load(intake_config_t *cfg, const char *yaml) {
  memset(err, 0, sizeof err);
  return intake_config_load_string(cfg, "x.yaml", yaml, strlen(yaml), err, sizeof err);
}

/* Loads `yaml`, which must fail with exactly `want`, and checks nothing is left to dispose. */
static void expect_error(const char *yaml, const char *want) {
  intake_config_t cfg;
  memset(&cfg, 0xa5, sizeof cfg);
  int rc = load(&cfg, yaml);
  if (rc == 0 || strcmp(err, want) != 0)
    print_error("yaml:\n%s\nwant: %s\ngot:  %s (rc %d)\n", yaml, want, err, rc);
  assert_int_equal(rc, -1);
  assert_string_equal(err, want);
  assert_null(cfg.path);
  assert_null(cfg.rules);
  assert_null(cfg.listen_address);
  assert_null(cfg.kafka_properties);
}

static void test_defaults(void **state) {
  intake_config_t c;
  assert_int_equal(intake_config_defaults(&c), 0);
  assert_string_equal(c.path, "");
  assert_string_equal(c.listen_address, "127.0.0.1");
  assert_int_equal(c.listen_port, 7400);
  assert_int_equal(c.max_connections, 1024);
  assert_int_equal(c.idle_timeout_ms, 120000);
  assert_int_equal(c.max_frame_bytes, 1 << 20);
  assert_int_equal(c.max_batch_events, 1000);
  assert_int_equal(c.max_in_flight, 8);
  assert_int_equal(c.hello_timeout_ms, 10000);
  assert_null(c.tokens_file);
  assert_int_equal(c.max_id_bytes, 64);
  assert_int_equal(c.max_type_bytes, 64);
  assert_int_equal(c.max_attributes, 32);
  assert_int_equal(c.max_attribute_bytes, 256);
  assert_int_equal(c.max_payload_bytes, 4096);
  assert_int_equal(c.max_future_skew_ms, 600000);
  assert_int_equal(c.max_event_age_ms, 7ULL * 86400000);
  assert_int_equal(c.max_decompressed_bytes, 8 << 20);
  assert_int_equal(c.dedup_window_ms, 600000);
  assert_int_equal(c.dedup_memory_bytes, 256ULL << 20);
  assert_int_equal(c.dedup_seq_memory_bytes, 64ULL << 20);
  assert_string_equal(c.default_topic, "intake.events");
  assert_string_equal(c.dead_letter_topic, "intake.deadletter");
  assert_int_equal(c.n_rules, 0);
  assert_int_equal(c.kafka_mode, INTAKE_KAFKA_EMBEDDED);
  assert_null(c.kafka_brokers);
  assert_int_equal(c.embedded_partitions, 4);
  assert_int_equal(c.delivery_timeout_ms, 30000);
  assert_int_equal(c.n_kafka_properties, 0);
  assert_int_equal(c.log_level, INTAKE_LOG_INFO);
  assert_int_equal(c.stats_interval_ms, 10000);
  assert_int_equal(c.log_format, INTAKE_LOG_FORMAT_LOGFMT);
  assert_true(c.admin_enabled);
  assert_string_equal(c.admin_address, "127.0.0.1");
  assert_int_equal(c.admin_port, 9400);
  intake_config_dispose(&c);
  assert_null(c.listen_address);
  assert_null(c.admin_address);
  intake_config_dispose(&c); /* twice is harmless */
}

/* An empty file and empty sections give the defaults. */
static void test_empty_is_defaults(void **state) {
  intake_config_t c;
  assert_int_equal(load(&c, ""), 0);
  assert_string_equal(c.path, "x.yaml");
  assert_int_equal(c.listen_port, 7400);
  intake_config_dispose(&c);
  assert_int_equal(load(&c, "# nothing\nlisten:\nroutes:\n  rules: []\nkafka:\n  properties:\n"), 0);
  assert_int_equal(c.n_rules, 0);
  assert_int_equal(c.dedup_window_ms, 600000);
  intake_config_dispose(&c);
}

static void test_shipped_config(void **state) {
  intake_config_t c;
  int rc = intake_config_load(&c, INTAKE_SOURCE_DIR "/conf/intaked.yaml", err, sizeof err);
  if (rc != 0)
    print_error("%s\n", err);
  assert_int_equal(rc, 0);
  assert_string_equal(c.path, INTAKE_SOURCE_DIR "/conf/intaked.yaml");
  assert_string_equal(c.listen_address, "127.0.0.1");
  assert_int_equal(c.listen_port, 7400);
  assert_int_equal(c.kafka_mode, INTAKE_KAFKA_EMBEDDED);
  assert_null(c.kafka_brokers);
  assert_null(c.tokens_file);
  assert_string_equal(c.default_topic, "intake.events");
  assert_string_equal(c.dead_letter_topic, "intake.deadletter");

  /* The shipped values are the defaults, so the file documents them truthfully. */
  intake_config_t d;
  assert_int_equal(intake_config_defaults(&d), 0);
  assert_int_equal(c.max_connections, d.max_connections);
  assert_int_equal(c.idle_timeout_ms, d.idle_timeout_ms);
  assert_int_equal(c.keepalive_ms, d.keepalive_ms);
  assert_int_equal(c.write_backlog_bytes, d.write_backlog_bytes);
  assert_int_equal(c.tls_min_version, d.tls_min_version);
  assert_null(c.tls_cert_file);
  assert_int_equal(c.rate_limit, d.rate_limit);
  assert_int_equal(c.rate_burst, d.rate_burst);
  assert_int_equal(c.max_frame_bytes, d.max_frame_bytes);
  assert_int_equal(c.max_batch_events, d.max_batch_events);
  assert_int_equal(c.max_in_flight, d.max_in_flight);
  assert_int_equal(c.hello_timeout_ms, d.hello_timeout_ms);
  assert_int_equal(c.max_id_bytes, d.max_id_bytes);
  assert_int_equal(c.max_type_bytes, d.max_type_bytes);
  assert_int_equal(c.max_attributes, d.max_attributes);
  assert_int_equal(c.max_attribute_bytes, d.max_attribute_bytes);
  assert_int_equal(c.max_payload_bytes, d.max_payload_bytes);
  assert_int_equal(c.max_future_skew_ms, d.max_future_skew_ms);
  assert_int_equal(c.max_event_age_ms, d.max_event_age_ms);
  assert_int_equal(c.max_decompressed_bytes, d.max_decompressed_bytes);
  assert_int_equal(c.dedup_window_ms, d.dedup_window_ms);
  assert_int_equal(c.log_format, d.log_format);
  assert_int_equal(c.admin_enabled, d.admin_enabled);
  assert_string_equal(c.admin_address, d.admin_address);
  assert_int_equal(c.admin_port, d.admin_port);
  /* Except dedup memory: the file is sized for a laptop and says what the city's defaults are. */
  assert_int_equal(c.dedup_memory_bytes, 16 << 20);
  assert_int_equal(d.dedup_memory_bytes, 256 << 20);
  assert_int_equal(c.dedup_seq_memory_bytes, 4 << 20);
  assert_int_equal(d.dedup_seq_memory_bytes, 64 << 20);
  assert_int_equal(c.dedup_snapshot_interval_ms, d.dedup_snapshot_interval_ms);
  assert_null(c.dedup_snapshot_path); /* off with the embedded Kafka */
  assert_null(d.dedup_snapshot_path);
  assert_int_equal(c.embedded_partitions, d.embedded_partitions);
  assert_int_equal(c.delivery_timeout_ms, d.delivery_timeout_ms);
  assert_int_equal(c.log_level, d.log_level);
  assert_int_equal(c.stats_interval_ms, d.stats_interval_ms);
  intake_config_dispose(&d);

  assert_int_equal(c.n_rules, 2);
  const intake_route_rule_t *fire = &c.rules[0], *cam = &c.rules[1];
  assert_string_equal(fire->name, "fire");
  assert_int_equal(fire->kinds_mask, 1u << INTAKE_KIND_SENSOR);
  assert_int_equal(fire->n_types, 2);
  assert_string_equal(fire->types[0], "smoke.alarm");
  assert_string_equal(fire->types[1], "gas.alarm");
  assert_int_equal(fire->severity_min, 1);
  assert_int_equal(fire->severity_max, 2);
  assert_int_equal(fire->n_topics, 1);
  assert_string_equal(fire->topics[0], "intake.fire");
  assert_false(fire->stop);
  assert_string_equal(cam->name, "camera-intrusion");
  assert_int_equal(cam->kinds_mask, 1u << INTAKE_KIND_CAMERA);
  assert_int_equal(cam->n_types, 1);
  assert_string_equal(cam->types[0], "gb28181.alarm.6");
  assert_int_equal(cam->n_region_prefixes, 1);
  assert_string_equal(cam->region_prefixes[0], "330782");
  assert_string_equal(cam->topics[0], "intake.video");
  assert_int_equal(cam->severity_min, 0);
  assert_int_equal(cam->severity_max, 9);

  assert_int_equal(c.n_kafka_properties, 1);
  assert_string_equal(c.kafka_properties[0].key, "linger.ms");
  assert_string_equal(c.kafka_properties[0].value, "5");
  intake_config_dispose(&c);
}

static void test_values_ok(void **state) {
  intake_config_t c;
  int rc = load(&c, "listen:\n"
                    "  address: \"::1\"\n"
                    "  port: 0\n"
                    "  idle_timeout: 2h\n"
                    "gateway:\n"
                    "  max_frame_bytes: 64KiB\n"
                    "  hello_timeout: 250ms\n"
                    "  tokens_file: /etc/intake/tokens\n"
                    "validate:\n"
                    "  max_payload_bytes: 0\n"
                    "  max_decompressed_bytes: 2MB\n"
                    "dedup:\n"
                    "  window: 7d\n"
                    "  memory: 1GiB\n"
                    "kafka:\n"
                    "  mode: brokers\n"
                    "  brokers: \"k1:9092,k2:9092\"\n"
                    "  delivery_timeout: 2m\n"
                    "log:\n"
                    "  level: debug\n"
                    "  stats_interval: 0\n");
  if (rc != 0)
    print_error("%s\n", err);
  assert_int_equal(rc, 0);
  assert_string_equal(c.listen_address, "::1");
  assert_int_equal(c.listen_port, 0);
  assert_int_equal(c.idle_timeout_ms, 2 * 3600000);
  assert_int_equal(c.max_frame_bytes, 65536);
  assert_int_equal(c.hello_timeout_ms, 250);
  assert_string_equal(c.tokens_file, "/etc/intake/tokens");
  assert_int_equal(c.max_payload_bytes, 0);
  assert_int_equal(c.max_decompressed_bytes, 2000000);
  assert_int_equal(c.dedup_window_ms, 7ULL * 86400000);
  assert_int_equal(c.dedup_memory_bytes, 1ULL << 30);
  assert_int_equal(c.kafka_mode, INTAKE_KAFKA_BROKERS);
  assert_string_equal(c.kafka_brokers, "k1:9092,k2:9092");
  assert_int_equal(c.delivery_timeout_ms, 120000);
  assert_int_equal(c.log_level, INTAKE_LOG_DEBUG);
  assert_int_equal(c.stats_interval_ms, 0);
  /* Untouched keys keep their defaults. */
  assert_int_equal(c.max_connections, 1024);
  assert_string_equal(c.default_topic, "intake.events");
  intake_config_dispose(&c);
}

static void test_rules(void **state) {
  intake_config_t c;
  int rc = load(&c, "routes:\n"
                    "  rules:\n"
                    "    - name: all\n"
                    "      topics: t.all\n"
                    "    - name: fire\n"
                    "      match:\n"
                    "        kind: [sensor, alarm_input]\n"
                    "        type: smoke.alarm\n"
                    "        severity: 3\n"
                    "        region_prefix: [\"3307\", 0571]\n"
                    "        attributes: {zone: north, verified: null, count: 3, flag: ~, e: \"\"}\n"
                    "      topics: [t.fire, t.audit]\n"
                    "      stop: true\n"
                    "    - name: none\n"
                    "      match: ~\n"
                    "      topics: [t.x]\n"
                    "      stop: false\n");
  if (rc != 0)
    print_error("%s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(c.n_rules, 3);
  const intake_route_rule_t *a = &c.rules[0], *f = &c.rules[1], *n = &c.rules[2];
  assert_string_equal(a->name, "all");
  assert_int_equal(a->n_topics, 1);
  assert_string_equal(a->topics[0], "t.all");
  assert_int_equal(a->kinds_mask, 0);
  assert_int_equal(a->n_types + a->n_region_prefixes + a->n_attributes, 0);
  assert_int_equal(a->severity_min, 0);
  assert_int_equal(a->severity_max, 9);
  assert_false(a->stop);

  assert_int_equal(f->kinds_mask, (1u << INTAKE_KIND_SENSOR) | (1u << INTAKE_KIND_ALARM_INPUT));
  assert_int_equal(f->n_types, 1);
  assert_string_equal(f->types[0], "smoke.alarm");
  assert_int_equal(f->severity_min, 3);
  assert_int_equal(f->severity_max, 3);
  assert_int_equal(f->n_region_prefixes, 2);
  assert_string_equal(f->region_prefixes[0], "3307");
  assert_string_equal(f->region_prefixes[1], "0571"); /* text kept: leading zero survives */
  assert_int_equal(f->n_attributes, 5);
  assert_string_equal(f->attributes[0].key, "zone");
  assert_string_equal(f->attributes[0].value, "north");
  assert_string_equal(f->attributes[1].key, "verified");
  assert_null(f->attributes[1].value);
  assert_string_equal(f->attributes[2].value, "3");
  assert_null(f->attributes[3].value);
  assert_string_equal(f->attributes[4].key, "e");
  assert_string_equal(f->attributes[4].value, ""); /* quoted empty: must be present and empty */
  assert_int_equal(f->n_topics, 2);
  assert_string_equal(f->topics[1], "t.audit");
  assert_true(f->stop);

  assert_string_equal(n->name, "none");
  assert_int_equal(n->kinds_mask, 0);
  assert_false(n->stop);
  intake_config_dispose(&c);
}

static void test_properties_kept_as_text_in_order(void **state) {
  intake_config_t c;
  int rc = load(&c, "kafka:\n"
                    "  properties:\n"
                    "    linger.ms: 20\n"
                    "    enable.idempotence: true\n"
                    "    client.id: \"intaked-1\"\n"
                    "    batch.num.messages: 10000\n");
  if (rc != 0)
    print_error("%s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(c.n_kafka_properties, 4);
  assert_string_equal(c.kafka_properties[0].key, "linger.ms");
  assert_string_equal(c.kafka_properties[0].value, "20");
  assert_string_equal(c.kafka_properties[1].key, "enable.idempotence");
  assert_string_equal(c.kafka_properties[1].value, "true");
  assert_string_equal(c.kafka_properties[2].value, "intaked-1");
  assert_string_equal(c.kafka_properties[3].key, "batch.num.messages");
  intake_config_dispose(&c);
}

/* An anchor reused through an alias loads as a copy. */
static void test_alias(void **state) {
  intake_config_t c;
  int rc = load(&c, "routes:\n"
                    "  rules:\n"
                    "    - name: a\n"
                    "      match: {type: &alarms [x.alarm, y.alarm]}\n"
                    "      topics: [t.a]\n"
                    "    - name: b\n"
                    "      match: {type: *alarms}\n"
                    "      topics: [t.b]\n");
  if (rc != 0)
    print_error("%s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(c.rules[1].n_types, 2);
  assert_string_equal(c.rules[1].types[1], "y.alarm");
  assert_ptr_not_equal(c.rules[0].types[1], c.rules[1].types[1]);
  intake_config_dispose(&c);
}

static void test_error_unknown_key(void **state) {
  expect_error("listen:\n  port: 1\n  prot: 2\n", "x.yaml:3: listen.prot: unknown key");
  expect_error("\n\nlisten2:\n  port: 1\n", "x.yaml:3: listen2: unknown key");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: t\n      stops: true\n",
               "x.yaml:5: routes.rules[0].stops: unknown key");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: t\n      match: {sev: 1}\n",
               "x.yaml:5: routes.rules[0].match.sev: unknown key");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: t\n"
               "      match:\n        severity: {min: 1, mx: 2}\n",
               "x.yaml:6: routes.rules[0].match.severity.mx: unknown key");
}

static void test_error_duplicate_key(void **state) {
  expect_error("listen:\n  port: 1\n  port: 2\n",
               "x.yaml:3: listen.port: duplicate key (first at line 2)");
  expect_error("log:\n  level: info\nlisten:\n  port: 1\nlog:\n  level: warn\n",
               "x.yaml:5: log: duplicate key (first at line 1)");
  expect_error("kafka:\n  properties:\n    linger.ms: 1\n    linger.ms: 2\n",
               "x.yaml:4: kafka.properties.linger.ms: duplicate key (first at line 3)");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: t\n"
               "      match: {attributes: {z: 1, z: 2}}\n",
               "x.yaml:5: routes.rules[0].match.attributes.z: duplicate key (first at line 5)");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: [t1]\n"
               "    - name: a\n      topics: [t2]\n",
               "x.yaml:5: routes.rules[1].name: duplicate rule name \"a\" (also routes.rules[0])");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: [t1, t2, t1]\n",
               "x.yaml:4: routes.rules[0].topics: duplicate topic \"t1\"");
}

static void test_error_bounds(void **state) {
  expect_error("dedup:\n  window: 30d\n",
               "x.yaml:2: dedup.window: must be between 1s and 7d (got 30d)");
  expect_error("dedup:\n  window: 999ms\n",
               "x.yaml:2: dedup.window: must be between 1s and 7d (got 999ms)");
  expect_error("listen:\n  port: 65536\n",
               "x.yaml:2: listen.port: must be between 0 and 65535 (got 65536)");
  expect_error("listen:\n  max_connections: 0\n",
               "x.yaml:2: listen.max_connections: must be between 1 and 100000 (got 0)");
  expect_error("gateway:\n  max_frame_bytes: 1000\n",
               "x.yaml:2: gateway.max_frame_bytes: must be between 1KiB and 64MiB (got 1000)");
  expect_error("gateway:\n  max_frame_bytes: 65MiB\n",
               "x.yaml:2: gateway.max_frame_bytes: must be between 1KiB and 64MiB (got 65MiB)");
  expect_error("listen:\n  idle_timeout: 250ms\n",
               "x.yaml:2: listen.idle_timeout: must be between 1s and 1d (got 250ms)");
  expect_error("log:\n  stats_interval: 500ms\n",
               "x.yaml:2: log.stats_interval: must be 0 (off) or between 1s and 1d (got 500ms)");
  /* Overflow of the number or of number * unit is out of bounds, not wrapped. */
  expect_error("listen:\n  port: 99999999999999999999999\n",
               "x.yaml:2: listen.port: must be between 0 and 65535 (got 99999999999999999999999)");
  expect_error("dedup:\n  memory: 18446744073709551615GiB\n",
               "x.yaml:2: dedup.memory: must be between 1MiB and 64GiB "
               "(got 18446744073709551615GiB)");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: t\n"
               "      match: {severity: {min: 10}}\n",
               "x.yaml:5: routes.rules[0].match.severity.min: must be between 0 and 9 (got 10)");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: t\n"
               "      match:\n        severity: {min: 3, max: 1}\n",
               "x.yaml:6: routes.rules[0].match.severity: min (3) must not exceed max (1)");
}

static void test_error_bad_unit(void **state) {
  expect_error("dedup:\n  window: 10\n",
               "x.yaml:2: dedup.window: expected a duration: a whole number and a unit ms, s, m, "
               "h or d, e.g. 10s (got \"10\")");
  expect_error("dedup:\n  window: 10x\n",
               "x.yaml:2: dedup.window: expected a duration: a whole number and a unit ms, s, m, "
               "h or d, e.g. 10s (got \"10x\")");
  expect_error("dedup:\n  memory: 8 MiB\n",
               "x.yaml:2: dedup.memory: expected a size: a whole number and an optional unit B, "
               "KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 8MiB (got \"8 MiB\")");
  expect_error("listen:\n  port: -1\n",
               "x.yaml:2: listen.port: expected a whole number (got \"-1\")");
  expect_error("listen:\n  port: 0x10\n",
               "x.yaml:2: listen.port: expected a whole number (got \"0x10\")");
}

static void test_error_wrong_type(void **state) {
  expect_error("listen: 7400\n", "x.yaml:1: listen: expected a mapping");
  expect_error("- a\n- b\n", "x.yaml:1: (top level): expected a mapping");
  expect_error("listen:\n  port: [1, 2]\n", "x.yaml:2: listen.port: expected a scalar");
  expect_error("routes:\n  rules: {name: a}\n", "x.yaml:2: routes.rules: expected a sequence");
  expect_error("routes:\n  rules:\n    - fire\n", "x.yaml:3: routes.rules[0]: expected a mapping");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: {a: b}\n",
               "x.yaml:4: routes.rules[0].topics: expected a scalar or a sequence");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: [t]\n      match: [1]\n",
               "x.yaml:5: routes.rules[0].match: expected a mapping");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: [t]\n      stop: yes\n",
               "x.yaml:5: routes.rules[0].stop: expected true or false (got \"yes\")");
  expect_error("kafka:\n  properties:\n    linger.ms: [1]\n",
               "x.yaml:3: kafka.properties.linger.ms: expected a scalar");
  expect_error("listen:\n  address: localhost\n",
               "x.yaml:2: listen.address: expected an IPv4 or IPv6 address (got \"localhost\")");
  expect_error("listen:\n  address: ~\n", "x.yaml:2: listen.address: must not be null or empty");
}

static void test_error_bad_enum(void **state) {
  expect_error("kafka:\n  mode: cluster\n",
               "x.yaml:2: kafka.mode: must be one of embedded|brokers (got \"cluster\")");
  expect_error("log:\n  level: verbose\n",
               "x.yaml:2: log.level: must be one of debug|info|warn|error (got \"verbose\")");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: [t]\n"
               "      match: {kind: [sensor, drone]}\n",
               "x.yaml:5: routes.rules[0].match.kind[1]: must be one of "
               "sensor|camera|alarm_input|platform|other (got \"drone\")");
}

static void test_error_brokers(void **state) {
  expect_error("kafka:\n  embedded_partitions: 2\n  mode: brokers\n",
               "x.yaml:3: kafka.brokers: required when kafka.mode is brokers");
  expect_error("kafka:\n  brokers: \"k:9092\"\n",
               "x.yaml:2: kafka.brokers: set, but kafka.mode is embedded (events would go to the "
               "in-process mock cluster); set kafka.mode: brokers");
}

static void test_error_topics(void **state) {
  expect_error("routes:\n  default_topic: \"bad topic\"\n",
               "x.yaml:2: routes.default_topic: invalid Kafka topic name: use 1..249 characters "
               "of a-z A-Z 0-9 . _ - (got \"bad topic\")");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: [ok, \"..\"]\n",
               "x.yaml:4: routes.rules[0].topics[1]: invalid Kafka topic name: use 1..249 "
               "characters of a-z A-Z 0-9 . _ - (got \"..\")");
  char yaml[600], want[700], longname[251];
  memset(longname, 'a', 250);
  longname[250] = '\0';
  snprintf(yaml, sizeof yaml, "routes:\n  dead_letter_topic: %s\n", longname);
  snprintf(want, sizeof want,
           "x.yaml:2: routes.dead_letter_topic: invalid Kafka topic name: use 1..249 characters "
           "of a-z A-Z 0-9 . _ - (got \"%s\")",
           longname);
  expect_error(yaml, want);
  longname[249] = '\0'; /* 249 characters is the limit, and allowed */
  snprintf(yaml, sizeof yaml, "routes:\n  dead_letter_topic: %s\n", longname);
  intake_config_t c;
  assert_int_equal(load(&c, yaml), 0);
  intake_config_dispose(&c);

  expect_error("routes:\n  default_topic: same\n  dead_letter_topic: same\n",
               "x.yaml:3: routes.dead_letter_topic: the default topic and the dead-letter topic "
               "must differ (both \"same\")");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: [x, dl]\n  dead_letter_topic: dl\n",
               "x.yaml:4: routes.rules[0].topics: \"dl\" is the dead-letter topic; valid events "
               "are not routed there");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: []\n",
               "x.yaml:4: routes.rules[0].topics: a rule needs at least one topic");
  expect_error("routes:\n  rules:\n    - name: a\n      stop: true\n",
               "x.yaml:3: routes.rules[0].topics: required: a rule needs at least one topic");
  expect_error("routes:\n  rules:\n    - topics: [t]\n", "x.yaml:3: routes.rules[0].name: required");
  expect_error("routes:\n  rules:\n    - name: \"fire alarm\"\n      topics: [t]\n",
               "x.yaml:3: routes.rules[0].name: rule names are 1..64 characters of a-z A-Z 0-9 . "
               "_ - (got \"fire alarm\")");
  expect_error("routes:\n  rules:\n    - name: default\n      topics: [t]\n",
               "x.yaml:3: routes.rules[0].name: \"default\" is reserved for the default route "
               "(got \"default\")");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: [t]\n"
               "      match: {region_prefix: [\"33a\"]}\n",
               "x.yaml:5: routes.rules[0].match.region_prefix[0]: expected 1..12 digits "
               "(got \"33a\")");
}

static void test_error_properties(void **state) {
  expect_error("kafka:\n  properties:\n    bootstrap.servers: \"h:9092\"\n",
               "x.yaml:3: kafka.properties.bootstrap.servers: not allowed here: set by intaked "
               "from kafka.brokers");
  expect_error("kafka:\n  properties:\n    acks: 1\n",
               "x.yaml:3: kafka.properties.acks: not allowed here: managed by intaked: gateways "
               "are acked only after acks=all delivery");
  expect_error("kafka:\n  properties:\n    linger.ms: ~\n",
               "x.yaml:3: kafka.properties.linger.ms: expected a value");
  /* librdkafka judges names and values; its wording is its own, the prefix is ours. */
  intake_config_t c;
  assert_int_equal(load(&c, "kafka:\n  properties:\n    linger.msec: 5\n"), -1);
  assert_memory_equal(err, "x.yaml:3: kafka.properties.linger.msec: ", 40);
  assert_non_null(strstr(err, "linger.msec"));
  assert_int_equal(load(&c, "kafka:\n  properties:\n    linger.ms: soon\n"), -1);
  assert_memory_equal(err, "x.yaml:3: kafka.properties.linger.ms: ", 38);
}

static void test_error_syntax(void **state) {
  expect_error("listen:\n  port: 1\n   address: x\n",
               "x.yaml:3: YAML syntax error: mapping values are not allowed in this context");
  expect_error("listen:\n  port: [1, 2\nlog:\n  level: info\n",
               "x.yaml:3: YAML syntax error: did not find expected ',' or ']' "
               "(while parsing a flow sequence at line 2)");
  expect_error("listen:\n  port: 1\n---\nlog: {}\n",
               "x.yaml:4: only one YAML document is allowed");
  expect_error("listen:\n  address: \"\xff\"\n",
               "x.yaml:2: YAML syntax error: invalid leading UTF-8 octet");
}

/* Checks keep running after an error; the message is the earliest by line, even when a later
 * check (here the cross-field one) finds an error on an earlier line. */
static void test_error_earliest_line_wins(void **state) {
  expect_error("kafka:\n  mode: brokers\nlisten:\n  port: 70000\n",
               "x.yaml:2: kafka.brokers: required when kafka.mode is brokers");
  expect_error("listen:\n  port: 70000\n  prot: 1\ndedup:\n  window: 1\n",
               "x.yaml:2: listen.port: must be between 0 and 65535 (got 70000)");
}

static void test_missing_file(void **state) {
  intake_config_t c;
  assert_int_equal(intake_config_load(&c, "/nonexistent/intaked.yaml", err, sizeof err), -1);
  assert_string_equal(err, "/nonexistent/intaked.yaml: No such file or directory");
  assert_null(c.path);
}

/* A short buffer truncates the message but still terminates it. */
static void test_short_error_buffer(void **state) {
  intake_config_t c;
  char small[12];
  memset(small, 'z', sizeof small);
  const char *y = "listen:\n  prot: 1\n";
  assert_int_equal(intake_config_load_string(&c, "x.yaml", y, strlen(y), small, sizeof small), -1);
  assert_string_equal(small, "x.yaml:2: l");
  assert_int_equal(intake_config_load_string(&c, "x.yaml", y, strlen(y), NULL, 0), -1);
}

static void test_parse_duration(void **state) {
  uint64_t v = 123;
  assert_int_equal(intake_parse_duration_ms("250ms", &v), 0);
  assert_int_equal(v, 250);
  assert_int_equal(intake_parse_duration_ms("10s", &v), 0);
  assert_int_equal(v, 10000);
  assert_int_equal(intake_parse_duration_ms("5m", &v), 0);
  assert_int_equal(v, 300000);
  assert_int_equal(intake_parse_duration_ms("2h", &v), 0);
  assert_int_equal(v, 7200000);
  assert_int_equal(intake_parse_duration_ms("7d", &v), 0);
  assert_int_equal(v, 604800000);
  assert_int_equal(intake_parse_duration_ms("0", &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(intake_parse_duration_ms("0s", &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(intake_parse_duration_ms("18446744073709551615ms", &v), 0);
  assert_true(v == UINT64_MAX);

  v = 42;
  const char *bad[] = {"",     "10",   "s",    "10 s", " 10s", "+10s", "-10s", "1.5s",
                       "10S",  "10sec", "1h30m", "0x10s", "10ms ", "213503982335d",
                       "18446744073709551616ms", "99999999999999999999999s", NULL};
  for (const char **b = bad; *b; b++) {
    if (intake_parse_duration_ms(*b, &v) != -1)
      print_error("accepted \"%s\"\n", *b);
    assert_int_equal(intake_parse_duration_ms(*b, &v), -1);
  }
  assert_int_equal(v, 42); /* untouched on error */
  assert_int_equal(intake_parse_duration_ms(NULL, &v), -1);
  /* The largest whole number of days that fits, and one more. */
  assert_int_equal(intake_parse_duration_ms("213503982334d", &v), 0);
  assert_true(v == 213503982334ULL * 86400000ULL);
}

static void test_parse_bytes(void **state) {
  uint64_t v = 0;
  assert_int_equal(intake_parse_bytes("512", &v), 0);
  assert_int_equal(v, 512);
  assert_int_equal(intake_parse_bytes("512B", &v), 0);
  assert_int_equal(v, 512);
  assert_int_equal(intake_parse_bytes("64KiB", &v), 0);
  assert_int_equal(v, 65536);
  assert_int_equal(intake_parse_bytes("8MiB", &v), 0);
  assert_int_equal(v, 8 << 20);
  assert_int_equal(intake_parse_bytes("1GiB", &v), 0);
  assert_int_equal(v, 1 << 30);
  assert_int_equal(intake_parse_bytes("2TiB", &v), 0);
  assert_int_equal(v, 2ULL << 40);
  assert_int_equal(intake_parse_bytes("3KB", &v), 0);
  assert_int_equal(v, 3000);
  assert_int_equal(intake_parse_bytes("3MB", &v), 0);
  assert_int_equal(v, 3000000);
  assert_int_equal(intake_parse_bytes("3GB", &v), 0);
  assert_int_equal(v, 3000000000ULL);
  assert_int_equal(intake_parse_bytes("0", &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(intake_parse_bytes("16777215TiB", &v), 0);
  assert_true(v == 16777215ULL << 40);

  v = 42;
  const char *bad[] = {"",    "KiB",  "1 KiB", "1kib", "1k",  "1.5MiB", "-1",
                       "+1",  " 1",   "1KiBx", "0x10", "16777216TiB", "18446744073709551616",
                       "18446744073709551615KB", NULL};
  for (const char **b = bad; *b; b++) {
    if (intake_parse_bytes(*b, &v) != -1)
      print_error("accepted \"%s\"\n", *b);
    assert_int_equal(intake_parse_bytes(*b, &v), -1);
  }
  assert_int_equal(v, 42);
  assert_int_equal(intake_parse_bytes("18446744073709551615", &v), 0);
  assert_true(v == UINT64_MAX);
}

/* The container's config (docker/intaked.yaml) stays valid: brokers mode, all interfaces. */
static void test_docker_config(void **state) {
  intake_config_t c;
  int rc = intake_config_load(&c, INTAKE_SOURCE_DIR "/docker/intaked.yaml", err, sizeof err);
  if (rc != 0)
    print_error("%s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(c.kafka_mode, INTAKE_KAFKA_BROKERS);
  assert_string_equal(c.kafka_brokers, "kafka:9092");
  assert_string_equal(c.listen_address, "0.0.0.0");
  assert_int_equal(c.listen_port, 7400);
  assert_true(c.admin_enabled);
  assert_string_equal(c.admin_address, "0.0.0.0");
  assert_int_equal(c.admin_port, 9400); /* the image's HEALTHCHECK port */
  assert_string_equal(c.dedup_snapshot_path, "/var/lib/intake/dedup.snap"); /* brokers: persisted */
  intake_config_dispose(&c);
}

/* listen.keepalive / write_backlog, listen.tls.*, gateway.rate_limit / rate_burst: values,
 * defaults, and the checks that tie them together. */
static void test_connection_keys(void **state) {
  (void)state;
  intake_config_t c;
  assert_int_equal(intake_config_defaults(&c), 0);
  assert_int_equal(c.keepalive_ms, 60000);
  assert_int_equal(c.write_backlog_bytes, 256 * 1024);
  assert_null(c.tls_cert_file);
  assert_null(c.tls_key_file);
  assert_null(c.tls_client_ca_file);
  assert_false(c.tls_require_client_cert);
  assert_false(c.tls_match_gateway_id);
  assert_int_equal(c.tls_min_version, INTAKE_TLS_1_2);
  assert_int_equal(c.rate_limit, 0);
  assert_int_equal(c.rate_burst, 0);
  intake_config_dispose(&c);

  int rc = load(&c, "listen:\n"
                    "  keepalive: 0\n"
                    "  write_backlog: 1MiB\n"
                    "  tls:\n"
                    "    cert_file: /etc/intake/server.pem\n"
                    "    key_file: /etc/intake/server.key\n"
                    "    client_ca_file: /etc/intake/gateways-ca.pem\n"
                    "    require_client_cert: true\n"
                    "    match_gateway_id: true\n"
                    "    min_version: 1.3\n"
                    "gateway:\n"
                    "  rate_limit: 5000\n"
                    "  rate_burst: 20000\n");
  if (rc != 0)
    print_error("%s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(c.keepalive_ms, 0);
  assert_int_equal(c.write_backlog_bytes, 1 << 20);
  assert_string_equal(c.tls_cert_file, "/etc/intake/server.pem");
  assert_string_equal(c.tls_key_file, "/etc/intake/server.key");
  assert_string_equal(c.tls_client_ca_file, "/etc/intake/gateways-ca.pem");
  assert_true(c.tls_require_client_cert);
  assert_true(c.tls_match_gateway_id);
  assert_int_equal(c.tls_min_version, INTAKE_TLS_1_3);
  assert_int_equal(c.rate_limit, 5000);
  assert_int_equal(c.rate_burst, 20000);
  intake_config_dispose(&c);

  expect_error("listen:\n  tls:\n    cert_file: a.pem\n",
               "x.yaml:3: listen.tls.key_file: listen.tls.cert_file and listen.tls.key_file go "
               "together (set both, or neither)");
  expect_error("listen:\n  tls:\n    client_ca_file: ca.pem\n",
               "x.yaml:3: listen.tls.client_ca_file: set, but TLS is off (listen.tls.cert_file and "
               "key_file are unset)");
  expect_error("listen:\n  tls:\n    cert_file: a.pem\n    key_file: a.key\n"
               "    require_client_cert: true\n",
               "x.yaml:5: listen.tls.require_client_cert: needs listen.tls.client_ca_file (the CA "
               "that signs gateway certificates)");
  expect_error("listen:\n  tls:\n    cert_file: a.pem\n    key_file: a.key\n"
               "    client_ca_file: ca.pem\n    match_gateway_id: true\n",
               "x.yaml:6: listen.tls.match_gateway_id: needs listen.tls.require_client_cert: true "
               "(the id is checked against the certificate)");
  expect_error("listen:\n  tls:\n    min_version: 1.1\n",
               "x.yaml:3: listen.tls.min_version: must be one of 1.2|1.3 (got \"1.1\")");
  expect_error("listen:\n  tls:\n    cert: a.pem\n", "x.yaml:3: listen.tls.cert: unknown key");
  expect_error("listen:\n  tls: yes\n", "x.yaml:2: listen.tls: expected a mapping");
  expect_error("gateway:\n  rate_burst: 10\n",
               "x.yaml:2: gateway.rate_burst: set, but gateway.rate_limit is 0 (off)");
  expect_error("listen:\n  write_backlog: 1KiB\n",
               "x.yaml:2: listen.write_backlog: must be between 4KiB and 64MiB (got 1KiB)");
}

/* dedup.snapshot_path and dedup.snapshot_interval; the path needs a restart. */
static void test_snapshot_keys(void **state) {
  intake_config_t c, r;
  assert_int_equal(load(&c, "dedup:\n  snapshot_path: /var/lib/intake/d.snap\n"
                            "  snapshot_interval: 0\n"),
                   0);
  assert_string_equal(c.dedup_snapshot_path, "/var/lib/intake/d.snap");
  assert_int_equal(c.dedup_snapshot_interval_ms, 0);
  intake_config_dispose(&c);
  assert_int_equal(load(&c, ""), 0);
  assert_null(c.dedup_snapshot_path);
  assert_int_equal(c.dedup_snapshot_interval_ms, 30000);
  intake_config_dispose(&c);
  expect_error("dedup:\n  snapshot_interval: 500ms\n",
               "x.yaml:2: dedup.snapshot_interval: must be 0 (off) or between 1s and 1d (got 500ms)");
  expect_error("dedup:\n  snapshot_path: \"\"\n",
               "x.yaml:2: dedup.snapshot_path: must not be empty (got \"\")");

  assert_int_equal(load(&r, "dedup:\n  snapshot_path: a.snap\n  snapshot_interval: 10s\n"), 0);
  assert_int_equal(load(&c, "dedup:\n  snapshot_path: b.snap\n  snapshot_interval: 5s\n"), 0);
  char changed[256];
  intake_config_keep_restart_only(&c, &r, changed, sizeof changed);
  assert_string_equal(changed, "dedup.snapshot_path");
  assert_string_equal(c.dedup_snapshot_path, "a.snap"); /* kept */
  assert_int_equal(c.dedup_snapshot_interval_ms, 5000); /* live */
  intake_config_dispose(&c);
  intake_config_dispose(&r);
}

/* log.format, admin.*, routes.rules[].encoding. */
static void test_ops_keys(void **state) {
  intake_config_t c;
  assert_int_equal(load(&c, "log:\n  format: json\nadmin:\n  enabled: false\n"
                            "  address: \"::1\"\n  port: 0\nroutes:\n  rules:\n"
                            "    - {name: a, topics: t1, encoding: json}\n"
                            "    - {name: b, topics: t2, encoding: protobuf}\n"
                            "    - {name: c, topics: t3}\n"),
                   0);
  assert_int_equal(c.log_format, INTAKE_LOG_FORMAT_JSON);
  assert_false(c.admin_enabled);
  assert_string_equal(c.admin_address, "::1");
  assert_int_equal(c.admin_port, 0);
  assert_int_equal(c.rules[0].encoding, INTAKE_ENCODING_JSON);
  assert_int_equal(c.rules[1].encoding, INTAKE_ENCODING_PROTOBUF);
  assert_int_equal(c.rules[2].encoding, INTAKE_ENCODING_PROTOBUF);
  intake_config_dispose(&c);
  assert_int_equal(load(&c, "admin:\n  enabled: TRUE\n"), 0);
  assert_true(c.admin_enabled);
  intake_config_dispose(&c);
  expect_error("log:\n  format: text\n",
               "x.yaml:2: log.format: must be one of logfmt|json (got \"text\")");
  expect_error("admin:\n  enabled: yes\n",
               "x.yaml:2: admin.enabled: expected true or false (got \"yes\")");
  expect_error("admin:\n  port: 70000\n",
               "x.yaml:2: admin.port: must be between 0 and 65535 (got 70000)");
  expect_error("admin:\n  address: localhost\n",
               "x.yaml:2: admin.address: expected an IPv4 or IPv6 address (got \"localhost\")");
  expect_error("admin:\n  listen: 1\n", "x.yaml:2: admin.listen: unknown key");
  expect_error("routes:\n  rules:\n    - name: a\n      topics: t\n      encoding: avro\n",
               "x.yaml:5: routes.rules[0].encoding: must be one of protobuf|json (got \"avro\")");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ops_keys),
      cmocka_unit_test(test_docker_config),
      cmocka_unit_test(test_snapshot_keys),
      cmocka_unit_test(test_connection_keys),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_empty_is_defaults),
      cmocka_unit_test(test_shipped_config),
      cmocka_unit_test(test_values_ok),
      cmocka_unit_test(test_rules),
      cmocka_unit_test(test_properties_kept_as_text_in_order),
      cmocka_unit_test(test_alias),
      cmocka_unit_test(test_error_unknown_key),
      cmocka_unit_test(test_error_duplicate_key),
      cmocka_unit_test(test_error_bounds),
      cmocka_unit_test(test_error_bad_unit),
      cmocka_unit_test(test_error_wrong_type),
      cmocka_unit_test(test_error_bad_enum),
      cmocka_unit_test(test_error_brokers),
      cmocka_unit_test(test_error_topics),
      cmocka_unit_test(test_error_properties),
      cmocka_unit_test(test_error_syntax),
      cmocka_unit_test(test_error_earliest_line_wins),
      cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_short_error_buffer),
      cmocka_unit_test(test_parse_duration),
      cmocka_unit_test(test_parse_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
