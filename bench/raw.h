/* The baseline: a plain librdkafka producer writing the records intaked would write for the
 * city's events (same values, keys, topics and fan-out, the same six headers) to the same
 * broker, flat out, with intaked's producer settings: enable.idempotence=true, acks=all,
 * compression.codec=zstd, queue.buffering.max.messages=1000000, then the same
 * kafka.properties (linger.ms, batch.num.messages, ...). One application thread calls
 * rd_kafka_producev() as intaked's loop does; records are pre-built, so the rate is what
 * librdkafka and the broker allow. Paced (rate > 0), it measures instead how long a group of
 * events as big as a gateway batch takes to be confirmed: the floor under intaked's ack
 * latency. */
#ifndef INTAKE_BENCH_RAW_H
#define INTAKE_BENCH_RAW_H

#include <stddef.h>
#include <stdint.h>

#include "hist.h"

typedef struct {
  const char *bootstrap;
  const char *prefix;          /* topics <prefix>.<suffix>, created here */
  int partitions;
  uint64_t records;            /* produce this many records */
  uint64_t inflight;           /* at most this many without a delivery report; 0 = no limit */
  double rate;                 /* events/s, paced by group; 0 = flat out */
  unsigned group;              /* events per group (a gateway batch's counterpart), 200 */
  const char *const *props;    /* "key=value" librdkafka properties, applied last */
  size_t n_props;
  uint64_t seed;
} raw_opts_t;

typedef struct {
  uint64_t records;            /* produced */
  uint64_t events;             /* events they carry (an event fans out to 1+ topics) */
  uint64_t delivered, failed;  /* delivery reports */
  double seconds;              /* first produce -> last delivery report */
  double produce_s;            /* first produce -> last rd_kafka_producev() returned */
  double rps, eps;             /* delivered records/s, events/s */
  double cpu_s;                /* this process's CPU time over the run */
  hist_t lat;                  /* per group: first produce -> last delivery report */
} raw_result_t;

int raw_run(const raw_opts_t *o, raw_result_t *r, char *err, size_t errlen);

#endif
