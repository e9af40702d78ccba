/* The load generator's ledger: one entry per distinct event it made (a copy re-sent later is
 * the same entry), with every answer intaked gave for its copies; and the verifier that holds
 * the topics read back from Kafka against it.
 *
 * Each gateway thread owns one ledger, so recording needs no locks; an entry's ref is
 * (thread << 40 | index) and is written into the event id (city.h), which is how a record
 * read back finds its entry.
 *
 * What the answers promise (proto/intake.proto), and so what the verifier expects of Kafka:
 *   - a copy answered ACCEPTED: the event is on each of its topics exactly once;
 *   - answered DUPLICATE only, after a copy whose answer was lost (connection dropped) or was
 *     RETRY: it was delivered by that copy, exactly once;
 *   - answered DUPLICATE only, never lost: not in Kafka (a sequence-number repeat), or, for an
 *     event nobody delivered, a false duplicate: an event lost;
 *   - REJECTED: in the dead-letter topic once per REJECTED answer, never on a data topic;
 *   - no answer at all: in Kafka at most once;
 *   - CONVERGED (alarm convergence on some route): accepted, but the verifier cannot tell which
 *     routes converged it, so it allows 0 or 1 record per topic (the bench's routes have none).
 * Per-source order: on every topic, a source's events appear in the order of the copies that
 * delivered them (batch send order, then position in the batch). */
#ifndef INTAKE_BENCH_LEDGER_H
#define INTAKE_BENCH_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "city.h"

#define LEDGER_CHUNK_BITS 20
#define LEDGER_THREAD_SHIFT 40
#define LEDGER_MAX_THREADS 255

enum {
  LEDGER_F_INVALID = 1,       /* made invalid on purpose: must be REJECTED */
  LEDGER_F_SEQ_CONFLICT = 2,  /* reuses a sequence number of its camera under a new id */
  LEDGER_F_POS_ACCEPTED = 4,  /* pos is that of the copy answered ACCEPTED */
  LEDGER_F_POS_LOST = 8,      /* pos is that of the first copy whose answer was lost */
  LEDGER_F_CONVERGED = 16     /* answered CONVERGED: on a converged route it may be absent */
};

typedef struct {
  uint64_t hash;              /* XXH3-64 of the Event bytes as sent */
  uint32_t src;               /* source index */
  uint32_t pos;               /* batch number (the thread's send order) of the delivering copy */
  uint16_t idx;               /* its position in that batch */
  uint8_t flags;              /* LEDGER_F_* */
  uint8_t topics;             /* expected topics, 1 << CITY_T_* (data topics only) */
  uint8_t n_accepted;         /* answers: ACCEPTED (counts saturate at 255) */
  uint8_t n_duplicate;        /*          DUPLICATE */
  uint8_t n_rejected;         /*          REJECTED */
  uint8_t n_lost;             /* copies answered RETRY, or whose answer never came */
  uint8_t seen[CITY_N_TOPICS];/* records found per topic (verifier) */
} ledger_entry_t;

typedef struct {
  ledger_entry_t **chunks;    /* of 1 << LEDGER_CHUNK_BITS entries */
  size_t n_chunks, cap_chunks;
  uint64_t count;             /* entries in use */
  unsigned thread;
} ledger_t;

void ledger_init(ledger_t *l, unsigned thread);
void ledger_dispose(ledger_t *l);

/* A new zeroed entry; returns its ref (thread << 40 | index). Exits on out of memory. */
uint64_t ledger_add(ledger_t *l);

static inline ledger_entry_t *ledger_at(const ledger_t *l, uint64_t index) {
  return &l->chunks[index >> LEDGER_CHUNK_BITS][index & ((1u << LEDGER_CHUNK_BITS) - 1)];
}

static inline uint8_t sat_inc(uint8_t v) { return v == 255 ? v : (uint8_t)(v + 1); }

/* Records an answer (intake.v1.Outcome: 0 ACCEPTED, 1 DUPLICATE, 2 REJECTED, 3 CONVERGED, which
 * counts as accepted) for the copy at (batch_no, idx). Returns 1 when this made the event
 * accepted for the first time. */
int ledger_answer(ledger_entry_t *e, int outcome, uint32_t batch_no, uint16_t idx);

/* Records a copy whose fate is unknown (answered RETRY, or its connection dropped). */
void ledger_lost(ledger_entry_t *e, uint32_t batch_no, uint16_t idx);

/* Verification against Kafka. */
typedef struct {
  /* what the ledger expects */
  uint64_t entries;           /* distinct events made */
  uint64_t invalid;           /* of which invalid */
  uint64_t accepted;          /* answered ACCEPTED at least once */
  uint64_t accepted_twice;    /* answered ACCEPTED for two copies or more (a dedup miss) */
  uint64_t delivered_by_lost; /* DUPLICATE after a lost copy: delivered once by that copy */
  uint64_t dropped_repeats;   /* sequence-number repeats answered DUPLICATE: not in Kafka */
  uint64_t false_duplicates;  /* DUPLICATE with no copy ever delivered: lost events */
  uint64_t valid_rejected;    /* a valid event answered REJECTED (a generator or daemon bug) */
  uint64_t invalid_accepted;  /* an invalid event answered ACCEPTED or DUPLICATE */
  uint64_t unresolved;        /* no final answer: may be in Kafka once, or not */
  uint64_t expected_records;  /* data records that must be there */
  /* what Kafka has */
  uint64_t records;           /* read from the data topics */
  uint64_t dlq_records;       /* read from the dead-letter topic */
  uint64_t foreign;           /* records whose event id names no entry */
  uint64_t exactly_once;      /* (event, topic) pairs found exactly once where expected */
  uint64_t missing;           /* ... found 0 times */
  uint64_t duplicated;        /* ... found more than once */
  uint64_t extra;             /* records of events that must not be there, or on a topic not
                                 theirs */
  uint64_t ambiguous_found;   /* events allowed 0 or 1 times, found once */
  uint64_t ambiguous_over;    /* ... found more than once */
  uint64_t bad_value;         /* value is not the bytes sent */
  uint64_t bad_key;           /* key is not the source id */
  uint64_t bad_header;        /* "route" header missing or not the rule of the topic */
  uint64_t order_checked;     /* records checked for per-source order */
  uint64_t order_violations;  /* a source's record after one the generator sent later */
  uint64_t dlq_expected_min, dlq_expected_max;
  uint64_t dlq_found;         /* DLQ records matched to an invalid event */
  uint64_t dlq_missing;       /* invalid events with fewer DLQ records than REJECTED answers */
  uint64_t dlq_extra;         /* ... with more than their answers allow, or matching nothing */
  double read_s;              /* time to read the topics back */
  int pass;
} verify_result_t;

/* Reads `topics` (CITY_N_TOPICS names, indexed by CITY_T_*) from `bootstrap` up to their high
 * watermarks and checks them against the ledgers of threads 0..n_ledgers-1. Returns 0 with *out
 * filled (out->pass says the verdict), or -1 with a message in err when the topics could not be
 * read. */
int verify_run(const char *bootstrap, const char *const topics[CITY_N_TOPICS],
               ledger_t *ledgers, unsigned n_ledgers, verify_result_t *out, char *err,
               size_t errlen);

/* Prints the result as a readable block (lines prefixed "verify: "). */
void verify_print(const verify_result_t *v, FILE *f);

#endif
