/* Kafka helpers for the bench (librdkafka): create topics, read topics back to their high
 * watermarks. Functions return 0, or -1 with a message in err[0..errlen). */
#ifndef INTAKE_BENCH_KIO_H
#define INTAKE_BENCH_KIO_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

/* Creates `topics` with `partitions` partitions, replication 1 (existing ones are fine), and
 * waits until the broker's metadata lists them all. */
int kio_create_topics(const char *bootstrap, const char *const *topics, size_t n, int partitions,
                      char *err, size_t errlen);

/* Called for every record, in offset order per partition; `topic` indexes the list given to
 * kio_read_all(). */
typedef void (*kio_record_cb)(void *ctx, size_t topic, const rd_kafka_message_t *m);

/* Reads every partition of `topics` from the beginning up to the high watermark it has when
 * the call starts, giving each record to cb once. Fails after timeout_ms. */
int kio_read_all(const char *bootstrap, const char *const *topics, size_t n, kio_record_cb cb,
                 void *ctx, int timeout_ms, char *err, size_t errlen);

/* Monotonic and wall-clock time. */
int64_t kio_mono_ns(void);
int64_t kio_wall_ms(void);

/* CPU seconds (user + system, all threads) used so far by process `pid` (-1 if unreadable), by
 * this process, and by the whole machine (busy time summed over cores, from /proc/stat). */
double kio_proc_cpu(int pid);
double kio_self_cpu(void);
double kio_machine_cpu(void);

#endif
