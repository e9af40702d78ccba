/* intaked's configuration: one table of keys (config.c), loaded from YAML.
 *
 * Every key has a type, a default and bounds; unknown keys, duplicate keys, wrong node types
 * and bad values are errors reported as "file:line: key.path: message", e.g.
 *   conf/intaked.yaml:14: dedup.window: must be between 1s and 7d (got 30d)
 * conf/intaked.yaml documents every key. Durations need a unit (ms s m h d; only "0" may go
 * without); sizes take B KiB MiB GiB TiB (1024) or KB MB GB TB (1000), or none (bytes).
 * Cross-field checks run after the whole file is read. The loaded struct is immutable: a
 * reload builds a new one. */
#ifndef INTAKE_CONFIG_H
#define INTAKE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Record value encoding of a route (routes.rules[].encoding). */
typedef enum {
  INTAKE_ENCODING_PROTOBUF = 0, /* the intake.v1.Event bytes exactly as the gateway sent them */
  INTAKE_ENCODING_JSON = 1      /* the event rendered by intake_event_to_json() (encode/json.h) */
} intake_encoding_t;

typedef struct {
  char *key;                   /* attribute name */
  char *value;                 /* required value; NULL = the key must merely be present */
} intake_attr_match_t;

/* routes.rules[].converge: alarm convergence on this rule's topics (src/converge/converge.h). */
typedef struct {
  bool enabled;                /* the rule has a converge section */
  bool key_source;             /* key: [source, type, attributes: [...]]; default source + type */
  bool key_type;
  char **key_attrs;            /* attribute names in the key, <= 8 */
  size_t n_key_attrs;
  uint64_t window_ms;          /* window, default 30s, 100ms..1d: silence that ends an episode */
  bool refresh;                /* refresh, default true: each repeat restarts the window */
  uint64_t summary_every_ms;   /* summary_every, default 0 = only at the end, else 1s..1d */
  uint32_t flap_count;         /* flap.count, default 0 = off, 1..65000 */
  uint64_t flap_window_ms;     /* flap.window, default 60s, 1s..1d */
  uint64_t memory_bytes;       /* memory, default 16MiB, 64KiB..16GiB */
  uint32_t max_event_bytes;    /* max_event_bytes, default 432, 64..64KiB: largest event an
                                  episode keeps for its summary; larger ones are not converged */
} intake_converge_config_t;

typedef struct {
  char *name;                  /* routes.rules[].name, unique, 1..64 of [A-Za-z0-9._-], not
                                  "default"; used in the "route" header */
  char **topics;               /* routes.rules[].topics, >= 1, distinct, valid Kafka names,
                                  never the dead-letter topic */
  size_t n_topics;
  uint32_t kinds_mask;         /* match.kind: bit (1 << INTAKE_KIND_*); 0 = any kind */
  char **types;                /* match.type: exact event type codes (non-empty); empty = any */
  size_t n_types;
  uint32_t severity_min;       /* match.severity.min, default 0, 0..9, <= max */
  uint32_t severity_max;       /* match.severity.max, default 9, 0..9 */
  char **region_prefixes;      /* match.region_prefix: 1..12 digits each; empty = any */
  size_t n_region_prefixes;
  intake_attr_match_t *attributes; /* match.attributes: all must match, file order; empty = any */
  size_t n_attributes;
  bool stop;                   /* routes.rules[].stop: when matched, later rules are skipped */
  intake_encoding_t encoding;  /* routes.rules[].encoding: the record value on this rule's
                                  topics, default protobuf */
  intake_converge_config_t converge; /* routes.rules[].converge */
} intake_route_rule_t;

typedef struct {
  char *key;
  char *value;                 /* the YAML scalar's text ("5", "true"), never NULL */
} intake_kv_t;

typedef enum {
  INTAKE_KAFKA_EMBEDDED = 0,
  INTAKE_KAFKA_BROKERS = 1,
  /* Benchmarks only, never accepted from a config file: records are built and counted, not
   * sent, and confirmed on the next loop iteration (bench/hotpath.c measures the pipeline
   * without librdkafka this way). */
  INTAKE_KAFKA_COUNTING = 2
} intake_kafka_mode_t;

typedef enum {
  INTAKE_LOG_DEBUG = 0,
  INTAKE_LOG_INFO = 1,
  INTAKE_LOG_WARN = 2,
  INTAKE_LOG_ERROR = 3
} intake_log_level_t;

typedef enum {
  INTAKE_LOG_FORMAT_LOGFMT = 0,
  INTAKE_LOG_FORMAT_JSON = 1
} intake_log_format_t;

typedef enum {
  INTAKE_TLS_1_2 = 0,
  INTAKE_TLS_1_3 = 1
} intake_tls_version_t;

typedef struct intake_config {
  char *path;                       /* file it was loaded from (the name given to
                                       load_string), "" for defaults */

  /* listen: */
  char *listen_address;             /* listen.address, default "127.0.0.1"; an IPv4 or IPv6
                                       literal (inet_pton), not a host name */
  uint16_t listen_port;             /* listen.port, default 7400; 0 = pick a free port */
  uint32_t max_connections;         /* listen.max_connections, default 1024, 1..100000 */
  uint64_t idle_timeout_ms;         /* listen.idle_timeout, default 120s, 1s..1d */
  uint64_t keepalive_ms;            /* listen.keepalive: TCP keepalive idle time, default 60s,
                                       0 = off, else 1s..2h (probes follow every keepalive/4,
                                       at least 1s; 4 unanswered close the connection) */
  uint64_t write_backlog_bytes;     /* listen.write_backlog: acks queued for a gateway that
                                       does not read them; above it the connection is not read
                                       until they drain; also its SO_SNDBUF. Default 256 KiB,
                                       4 KiB..64 MiB */
  /* listen.tls: gateway connections use TLS when cert_file and key_file are both set (PEM;
     both or neither). Reloadable: new connections use the new files. */
  char *tls_cert_file;              /* listen.tls.cert_file, default unset; a chain is allowed */
  char *tls_key_file;               /* listen.tls.key_file, default unset */
  char *tls_client_ca_file;         /* listen.tls.client_ca_file: CAs that sign gateway
                                       certificates, default unset; needs TLS on */
  bool tls_require_client_cert;     /* listen.tls.require_client_cert, default false; needs
                                       client_ca_file. Without it a certificate is verified
                                       when a gateway presents one */
  bool tls_match_gateway_id;        /* listen.tls.match_gateway_id, default false; needs
                                       require_client_cert: HELLO's gateway_id must equal the
                                       certificate's subject CN or one of its DNS names */
  intake_tls_version_t tls_min_version; /* listen.tls.min_version: "1.2" | "1.3", default 1.2 */

  /* gateway: */
  uint32_t max_frame_bytes;         /* gateway.max_frame_bytes, default 1 MiB, 1 KiB..64 MiB */
  uint32_t max_batch_events;        /* gateway.max_batch_events, default 1000, 1..100000 */
  uint32_t max_in_flight;           /* gateway.max_in_flight_batches, default 8, 1..1024 */
  uint64_t hello_timeout_ms;        /* gateway.hello_timeout, default 10s, 100ms..5m */
  char *tokens_file;                /* gateway.tokens_file, default NULL = any token accepted;
                                       kept as written (a relative path is relative to the
                                       daemon's working directory); not opened by the loader */
  uint32_t rate_limit;              /* gateway.rate_limit: events per second per gateway id,
                                       default 0 = off, else 1..100M. Over it a batch is
                                       answered RETRY with retry_after_ms (nothing processed) */
  uint32_t rate_burst;              /* gateway.rate_burst: events a gateway may send at once
                                       above the rate, default 0 = one second's worth
                                       (rate_limit); needs rate_limit */

  /* validate: */
  uint32_t max_id_bytes;            /* validate.max_id_bytes (source_id, event_id), default 64,
                                       1..1024 */
  uint32_t max_type_bytes;          /* validate.max_type_bytes, default 64, 1..1024 */
  uint32_t max_attributes;          /* validate.max_attributes, default 32, 0..1024 */
  uint32_t max_attribute_bytes;     /* validate.max_attribute_bytes (key or value), default 256,
                                       1..64 KiB */
  uint32_t max_payload_bytes;       /* validate.max_payload_bytes, default 4 KiB, 0..1 MiB */
  uint32_t max_event_bytes;         /* validate.max_event_bytes: a whole serialized event,
                                       default 64 KiB, 1 KiB..900 KiB */
  uint64_t max_future_skew_ms;      /* validate.max_future_skew, default 10m, 1s..1d */
  uint64_t max_event_age_ms;        /* validate.max_event_age, default 7d, 1m..365d */
  uint32_t max_decompressed_bytes;  /* validate.max_decompressed_bytes, default 8 MiB,
                                       1 KiB..256 MiB */

  /* dedup: */
  uint64_t dedup_window_ms;         /* dedup.window, default 10m, 1s..7d */
  uint64_t dedup_memory_bytes;      /* dedup.memory (event-id table), default 256 MiB, 1 MiB..64 GiB */
  uint64_t dedup_seq_memory_bytes;  /* dedup.sequence_memory (per-source windows), default
                                       64 MiB, 1 MiB..64 GiB */
  char *dedup_snapshot_path;        /* dedup.snapshot_path, default NULL = the dedup state is
                                       not persisted; else saved there (atomically: a temp file
                                       beside it, renamed) and loaded at start; kept as written
                                       (relative = to the working directory) */
  uint64_t dedup_snapshot_interval_ms; /* dedup.snapshot_interval, default 30s; 0 = only at
                                       shutdown, else 1s..1d */

  /* routes: */
  char *default_topic;              /* routes.default_topic, default "intake.events" */
  char *dead_letter_topic;          /* routes.dead_letter_topic, default "intake.deadletter";
                                       differs from default_topic. Topic names: 1..249 of
                                       [a-zA-Z0-9._-], not "." or ".." */
  intake_route_rule_t *rules;       /* routes.rules, in file order */
  size_t n_rules;

  /* kafka: */
  intake_kafka_mode_t kafka_mode;   /* kafka.mode: "embedded" | "brokers", default embedded */
  char *kafka_brokers;              /* kafka.brokers, required when mode is brokers, and an
                                       error when mode is embedded (it would be ignored) */
  uint32_t embedded_partitions;     /* kafka.embedded_partitions, default 4, 1..64 */
  uint64_t delivery_timeout_ms;     /* kafka.delivery_timeout, default 30s, 1s..1h
                                       (librdkafka message.timeout.ms) */
  intake_kv_t *kafka_properties;    /* kafka.properties: passed to librdkafka as-is, in order;
                                       validated with rd_kafka_conf_set() at load; the keys
                                       intaked owns (bootstrap.servers, metadata.broker.list,
                                       message.timeout.ms, delivery.timeout.ms, acks,
                                       request.required.acks, test.mock.num.brokers) are
                                       rejected */
  size_t n_kafka_properties;

  /* log: */
  intake_log_level_t log_level;     /* log.level: debug|info|warn|error, default info */
  intake_log_format_t log_format;   /* log.format: logfmt|json, default logfmt */
  uint64_t stats_interval_ms;       /* log.stats_interval, default 10s, 0 = off, else 1s..1d */

  /* admin: */
  bool admin_enabled;               /* admin.enabled, default true */
  char *admin_address;              /* admin.address, default "127.0.0.1"; an IPv4 or IPv6
                                       literal, like listen.address */
  uint16_t admin_port;              /* admin.port, default 9400; 0 = pick a free port */
} intake_config_t;

/* Fills *cfg with every default. Returns 0 or -ENOMEM. Release with intake_config_dispose(). */
int intake_config_defaults(intake_config_t *cfg);

/* Loads `path` over the defaults. Returns 0; or -1 with a message "path:line: key: what" in
 * err[0..errlen) (every check runs; the message is the one earliest by line, or "path: what"
 * when the file cannot be read or memory runs out). On error *cfg is zeroed and holds nothing
 * that needs disposing. `err` may be NULL. Anchors and aliases work; a second YAML document
 * in the file is an error. */
int intake_config_load(intake_config_t *cfg, const char *path, char *err, size_t errlen);

/* Same as intake_config_load() over a YAML text in memory; `name` is used in messages. */
int intake_config_load_string(intake_config_t *cfg, const char *name, const char *yaml,
                              size_t len, char *err, size_t errlen);

/* Frees everything and zeroes *cfg; a zeroed or already disposed config is fine. */
void intake_config_dispose(intake_config_t *cfg);

/* For a reload: the keys that take effect only at a restart (listen.*address/port, kafka.mode,
 * brokers, embedded_partitions, delivery_timeout, properties, dedup.memory, sequence_memory,
 * snapshot_path, admin.*) keep their running values in `next` (values are swapped, so disposing both configs
 * stays correct). `changed` gets the names of those keys that the new file changed, space
 * separated ("" when none), for a warning. */
void intake_config_keep_restart_only(intake_config_t *next, intake_config_t *running, char *changed,
                                     size_t changed_len);

/* Parse helpers, also used for command-line flags. Return 0, or -1 (*out untouched) on bad
 * syntax or when the value overflows 64 bits. Whole numbers only, no sign, no blanks. */
int intake_parse_duration_ms(const char *s, uint64_t *ms); /* "250ms" "10s" "5m" "2h" "7d" "0" */
int intake_parse_bytes(const char *s, uint64_t *bytes);    /* "512" "64KiB" "8MiB" "1GiB" (also KB/MB/GB = powers of 1000) */

#endif
