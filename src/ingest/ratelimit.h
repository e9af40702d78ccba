/* Per-gateway rate limit (gateway.rate_limit, gateway.rate_burst): one token bucket per gateway
 * id, shared by all of that gateway's connections, in events.
 *
 * A batch is admitted while the bucket is not in debt; its events are then charged, which may
 * take the bucket below zero (a batch is never split, and its size is only known once decoded).
 * A gateway in debt gets RETRY with the time until the debt is paid: an explicit slow-down
 * signal, nothing dropped. So the long-run rate never exceeds rate_limit, and a burst exceeds
 * rate_burst by at most one batch.
 *
 * Memory is bounded: the table holds 2 * listen.max_connections + 16 ids. When a new id finds
 * it full, an id whose bucket has refilled is forgotten (which changes nothing), else the
 * next one round-robin (which at worst forgives one batch's debt). Buckets are looked up by id
 * per batch, not held by connections, so the table may be rebuilt on reload. */
#ifndef INTAKE_INGEST_RATELIMIT_H
#define INTAKE_INGEST_RATELIMIT_H

#include <stdint.h>

typedef struct intake_ratelimit intake_ratelimit_t;
typedef struct intake_bucket intake_bucket_t;

/* `rate` events/s (> 0), `burst` events (0 = rate), for up to `max_connections` connections at
 * once. NULL on out of memory. */
intake_ratelimit_t *intake_ratelimit_create(uint32_t rate, uint32_t burst, uint32_t max_connections);
void intake_ratelimit_destroy(intake_ratelimit_t *rl);

/* A reload: new rate and burst for every bucket (balances are kept, capped at the new burst);
 * the table grows when max_connections did. Returns 0 or -ENOMEM (nothing changed). */
int intake_ratelimit_configure(intake_ratelimit_t *rl, uint32_t rate, uint32_t burst,
                               uint32_t max_connections);

/* The bucket of `gateway_id` (created full). Valid until the next call into `rl`. */
intake_bucket_t *intake_ratelimit_bucket(intake_ratelimit_t *rl, const char *gateway_id,
                                         uint64_t now_ms);

/* 0 when a batch may go in now; else the milliseconds until it may (>= 1). */
uint64_t intake_ratelimit_wait_ms(const intake_ratelimit_t *rl, intake_bucket_t *b, uint64_t now_ms);

/* Charges `events` admitted events. */
void intake_ratelimit_charge(intake_bucket_t *b, uint32_t events);

#endif
