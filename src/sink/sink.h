/* The Kafka sink: one librdkafka producer, served from the event loop.
 *
 * Delivery reports are delivered on the loop thread: librdkafka signals its main queue through a
 * pipe that a uv_poll_t watches, and the callback runs rd_kafka_poll(rk, 0), which calls the
 * delivery callback given at create time. Nothing here blocks.
 *
 * The producer always runs with enable.idempotence=true and acks=all (kafka.properties may
 * override them; doing so is logged as a warning, since it gives up the delivery guarantee). */
#ifndef INTAKE_SINK_H
#define INTAKE_SINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"

typedef struct intake_sink intake_sink_t;
typedef struct intake_sink_topic intake_sink_topic_t;

/* Called on the loop thread once per produced record: `err` is 0 (rd_kafka_resp_err_t
 * RD_KAFKA_RESP_ERR_NO_ERROR) when Kafka confirmed it, else the librdkafka error code;
 * `opaque` is what intake_sink_produce() got, `topic_user` what intake_sink_topic() got. */
typedef void (*intake_sink_delivery_cb)(void *ctx, void *opaque, void *topic_user, int err);

/* A record header. */
typedef struct {
  const char *name;
  const void *value;
  size_t len;
} intake_sink_header_t;

/* Creates the producer (in embedded mode together with librdkafka's in-process mock cluster,
 * with `topics` created there). Returns NULL with a message in err on failure. */
intake_sink_t *intake_sink_create(uv_loop_t *loop, const intake_config_t *cfg,
                                  const char *const *topics, size_t n_topics,
                                  intake_sink_delivery_cb cb, void *ctx, char *err, size_t errlen);

/* The bootstrap address clients use: the mock cluster's in embedded mode, else kafka.brokers. */
const char *intake_sink_bootstrap(const intake_sink_t *s);
int intake_sink_is_embedded(const intake_sink_t *s);

/* Most records the pipeline should keep in flight: below librdkafka's
 * queue.buffering.max.messages, so a produce never meets a full queue in normal operation. */
uint64_t intake_sink_max_in_flight(const intake_sink_t *s);

/* Returns the topic handle for `name`, created on first use (with `user`, handed to the delivery
 * callback of its records) and kept for the sink's life. NULL on out of memory. */
intake_sink_topic_t *intake_sink_topic(intake_sink_t *s, const char *name, void *user);

/* Whether a broker is reachable: in brokers mode, true while librdkafka's statistics (every
 * second) show at least one broker UP; always true for the embedded and counting modes. */
int intake_sink_ready(const intake_sink_t *s);

/* Embedded mode: creates `name` on the mock cluster (no-op with real brokers). */
void intake_sink_ensure_topic(intake_sink_t *s, const char *name);

/* Produces one record (key and value are copied). Returns 0, or a negative librdkafka error
 * code (e.g. -RD_KAFKA_RESP_ERR__QUEUE_FULL) when it was not queued; then no delivery callback
 * will come for it. */
int intake_sink_produce(intake_sink_t *s, intake_sink_topic_t *topic, const void *key,
                        size_t key_len, const void *value, size_t value_len,
                        const intake_sink_header_t *headers, size_t n_headers, void *opaque);

/* Records queued in librdkafka and not yet reported. */
uint64_t intake_sink_queue_depth(const intake_sink_t *s);

/* Stops watching the producer's queue; call before closing the loop. Then destroy. */
void intake_sink_close(intake_sink_t *s);
/* Destroys the producer; records not yet delivered are reported as failed first. */
void intake_sink_destroy(intake_sink_t *s);

#endif
