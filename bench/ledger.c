#include "ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kio.h"

#define CHUNK (1u << LEDGER_CHUNK_BITS)
#define N_DATA_TOPICS CITY_T_DLQ /* topics 0..3 carry events; 4 is the dead-letter topic */

void ledger_init(ledger_t *l, unsigned thread) {
  memset(l, 0, sizeof *l);
  l->thread = thread;
}

void ledger_dispose(ledger_t *l) {
  for (size_t i = 0; i < l->n_chunks; i++)
    free(l->chunks[i]);
  free(l->chunks);
  memset(l, 0, sizeof *l);
}

uint64_t ledger_add(ledger_t *l) {
  uint64_t i = l->count;
  if ((i >> LEDGER_CHUNK_BITS) == l->n_chunks) {
    if (l->n_chunks == l->cap_chunks) {
      size_t cap = l->cap_chunks ? l->cap_chunks * 2 : 16;
      ledger_entry_t **c = realloc(l->chunks, cap * sizeof *c);
      if (!c)
        goto oom;
      l->chunks = c;
      l->cap_chunks = cap;
    }
    if (!(l->chunks[l->n_chunks] = calloc(CHUNK, sizeof(ledger_entry_t))))
      goto oom;
    l->n_chunks++;
  }
  l->count++;
  return (uint64_t)l->thread << LEDGER_THREAD_SHIFT | i;
oom:
  fprintf(stderr, "intake-bench: ledger: out of memory at %llu entries\n", (unsigned long long)i);
  exit(1);
}

int ledger_answer(ledger_entry_t *e, int outcome, uint32_t batch_no, uint16_t idx) {
  switch (outcome) {
  case 3:
    e->flags |= LEDGER_F_CONVERGED;
    __attribute__((fallthrough)); /* CONVERGED is accepted */
  case 0:
    e->n_accepted = sat_inc(e->n_accepted);
    if (!(e->flags & LEDGER_F_POS_ACCEPTED)) {
      e->flags = (uint8_t)((e->flags & ~LEDGER_F_POS_LOST) | LEDGER_F_POS_ACCEPTED);
      e->pos = batch_no;
      e->idx = idx;
      return 1;
    }
    return 0;
  case 1:
    e->n_duplicate = sat_inc(e->n_duplicate);
    return 0;
  default:
    e->n_rejected = sat_inc(e->n_rejected);
    return 0;
  }
}

void ledger_lost(ledger_entry_t *e, uint32_t batch_no, uint16_t idx) {
  if (!(e->flags & (LEDGER_F_POS_ACCEPTED | LEDGER_F_POS_LOST))) {
    e->flags |= LEDGER_F_POS_LOST;
    e->pos = batch_no;
    e->idx = idx;
  }
  e->n_lost = sat_inc(e->n_lost);
}

/* ---- verification ------------------------------------------------------------------------- */

typedef struct {
  uint64_t hash;
  ledger_entry_t *e;
} dlq_ref_t;

typedef struct {
  ledger_t *ledgers;
  unsigned n_ledgers;
  verify_result_t *r;
  uint64_t *last;          /* [source][data topic]: (pos << 16 | idx) + 1 of the latest record */
  dlq_ref_t *dlq;          /* invalid entries by hash */
  size_t n_dlq;
} vctx_t;

/* The position of the copy that delivered e, when it is certain. */
static int pos_certain(const ledger_entry_t *e) {
  if (e->flags & LEDGER_F_INVALID)
    return 0;
  if (e->flags & LEDGER_F_POS_ACCEPTED)
    return 1;
  return e->n_duplicate && e->n_lost == 1 && !(e->flags & LEDGER_F_SEQ_CONFLICT);
}

static ledger_entry_t *entry_of(vctx_t *v, const rd_kafka_message_t *m) {
  const char *sid, *eid;
  size_t sl, el;
  uint64_t ref;
  if (city_peek_ids(m->payload, m->len, &sid, &sl, &eid, &el) < 0 ||
      city_parse_ref(eid, el, &ref) < 0)
    return NULL;
  uint64_t thread = ref >> LEDGER_THREAD_SHIFT, i = ref & ((1ull << LEDGER_THREAD_SHIFT) - 1);
  if (thread >= v->n_ledgers || i >= v->ledgers[thread].count)
    return NULL;
  return ledger_at(&v->ledgers[thread], i);
}

static int dlq_cmp(const void *a, const void *b) {
  uint64_t x = ((const dlq_ref_t *)a)->hash, y = ((const dlq_ref_t *)b)->hash;
  return x < y ? -1 : x > y;
}

static void on_record(void *ctx, size_t topic, const rd_kafka_message_t *m) {
  vctx_t *v = ctx;
  verify_result_t *r = v->r;
  uint64_t h = XXH3_64bits(m->payload, m->len);
  if (topic == CITY_T_DLQ) {
    r->dlq_records++;
    size_t lo = 0, hi = v->n_dlq;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (v->dlq[mid].hash < h)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo < v->n_dlq && v->dlq[lo].hash == h)
      v->dlq[lo].e->seen[CITY_T_DLQ] = sat_inc(v->dlq[lo].e->seen[CITY_T_DLQ]);
    else
      r->dlq_extra++; /* matches no invalid event (a valid one dead-lettered, or unknown) */
    return;
  }
  r->records++;
  ledger_entry_t *e = entry_of(v, m);
  if (!e) {
    r->foreign++;
    return;
  }
  e->seen[topic] = sat_inc(e->seen[topic]);
  if (h != e->hash)
    r->bad_value++;
  uint32_t sl;
  const char *sid = city_source_id(e->src, &sl);
  if (!m->key || m->key_len != sl || memcmp(m->key, sid, sl) != 0)
    r->bad_key++;
  rd_kafka_headers_t *hdrs;
  const void *val;
  size_t size;
  const char *rule = city_topic_rule[topic];
  if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      rd_kafka_header_get_last(hdrs, "route", &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      size != strlen(rule) || memcmp(val, rule, size) != 0)
    r->bad_header++;
  if (e->seen[topic] == 1 && pos_certain(e)) {
    uint64_t cur = ((uint64_t)e->pos << 16 | e->idx) + 1;
    uint64_t *last = &v->last[(size_t)e->src * N_DATA_TOPICS + topic];
    r->order_checked++;
    if (*last > cur)
      r->order_violations++;
    else
      *last = cur;
  }
}

int verify_run(const char *bootstrap, const char *const topics[CITY_N_TOPICS],
               ledger_t *ledgers, unsigned n_ledgers, verify_result_t *out, char *err,
               size_t errlen) {
  memset(out, 0, sizeof *out);
  vctx_t v = {ledgers, n_ledgers, out, NULL, NULL, 0};
  v.last = calloc((size_t)CITY_SOURCES * N_DATA_TOPICS, sizeof *v.last);
  size_t n_invalid = 0;
  for (unsigned t = 0; t < n_ledgers; t++)
    for (uint64_t i = 0; i < ledgers[t].count; i++)
      n_invalid += (ledger_at(&ledgers[t], i)->flags & LEDGER_F_INVALID) != 0;
  v.dlq = calloc(n_invalid ? n_invalid : 1, sizeof *v.dlq);
  if (!v.last || !v.dlq) {
    snprintf(err, errlen, "out of memory");
    free(v.last);
    free(v.dlq);
    return -1;
  }
  for (unsigned t = 0; t < n_ledgers; t++)
    for (uint64_t i = 0; i < ledgers[t].count; i++) {
      ledger_entry_t *e = ledger_at(&ledgers[t], i);
      memset(e->seen, 0, sizeof e->seen);
      if (e->flags & LEDGER_F_INVALID)
        v.dlq[v.n_dlq++] = (dlq_ref_t){e->hash, e};
    }
  qsort(v.dlq, v.n_dlq, sizeof *v.dlq, dlq_cmp);

  int64_t t0 = kio_mono_ns();
  int rc = kio_read_all(bootstrap, topics, CITY_N_TOPICS, on_record, &v, 600000, err, errlen);
  out->read_s = (double)(kio_mono_ns() - t0) / 1e9;
  free(v.last);
  free(v.dlq);
  if (rc < 0)
    return -1;

  verify_result_t *r = out;
  enum { WANT_0, WANT_1, WANT_AMBIG };
  for (unsigned t = 0; t < n_ledgers; t++)
    for (uint64_t i = 0; i < ledgers[t].count; i++) {
      const ledger_entry_t *e = ledger_at(&ledgers[t], i);
      r->entries++;
      if (e->flags & LEDGER_F_INVALID) {
        r->invalid++;
        if (e->n_accepted || e->n_duplicate)
          r->invalid_accepted++;
        for (unsigned k = 0; k < N_DATA_TOPICS; k++)
          r->extra += e->seen[k];
        uint64_t lo = e->n_rejected, hi = (uint64_t)e->n_rejected + e->n_lost;
        uint64_t s = e->seen[CITY_T_DLQ];
        r->dlq_expected_min += lo;
        r->dlq_expected_max += hi;
        r->dlq_found += s < hi ? s : hi;
        if (s < lo)
          r->dlq_missing++;
        if (s > hi)
          r->dlq_extra += s - hi;
        continue;
      }
      int want;
      if (e->n_accepted) {
        r->accepted++;
        if (e->n_accepted > 1)
          r->accepted_twice++;
        want = e->flags & LEDGER_F_CONVERGED ? WANT_AMBIG : WANT_1;
      } else if (e->n_duplicate && e->n_lost) {
        if (e->flags & LEDGER_F_SEQ_CONFLICT) {
          want = WANT_AMBIG;
        } else {
          r->delivered_by_lost++;
          want = WANT_1;
        }
      } else if (e->n_duplicate) {
        if (e->flags & LEDGER_F_SEQ_CONFLICT)
          r->dropped_repeats++;
        else
          r->false_duplicates++;
        want = WANT_0;
      } else if (e->n_rejected) {
        r->valid_rejected++;
        want = WANT_0;
      } else {
        r->unresolved++;
        want = WANT_AMBIG;
      }
      for (unsigned k = 0; k < N_DATA_TOPICS; k++) {
        unsigned s = e->seen[k];
        if (!((e->topics >> k) & 1) || want == WANT_0) {
          r->extra += s;
        } else if (want == WANT_1) {
          r->expected_records++;
          if (s == 1)
            r->exactly_once++;
          else if (s == 0)
            r->missing++;
          else
            r->duplicated++;
        } else if (s == 1) {
          r->ambiguous_found++;
        } else if (s > 1) {
          r->ambiguous_over++;
        }
      }
    }
  r->pass = !r->missing && !r->duplicated && !r->extra && !r->foreign && !r->ambiguous_over &&
            !r->bad_value && !r->bad_key && !r->bad_header && !r->order_violations &&
            !r->false_duplicates && !r->valid_rejected && !r->invalid_accepted &&
            !r->dlq_missing && !r->dlq_extra;
  return 0;
}

void verify_print(const verify_result_t *r, FILE *f) {
#define U(x) (unsigned long long)(x)
  fprintf(f, "verify: read %llu data records + %llu dead-letter records in %.1f s\n",
          U(r->records), U(r->dlq_records), r->read_s);
  fprintf(f,
          "verify: ledger: %llu distinct events (%llu invalid); accepted %llu; delivered by a "
          "copy whose ack was lost %llu; sequence repeats dropped %llu; unresolved %llu\n",
          U(r->entries), U(r->invalid), U(r->accepted), U(r->delivered_by_lost),
          U(r->dropped_repeats), U(r->unresolved));
  fprintf(f,
          "verify: exactly once: %llu of %llu expected (event, topic) records; missing %llu; "
          "duplicated %llu; extra %llu; foreign %llu\n",
          U(r->exactly_once), U(r->expected_records), U(r->missing), U(r->duplicated),
          U(r->extra), U(r->foreign));
  fprintf(f,
          "verify: content: bad value %llu; bad key %llu; bad route header %llu; order: %llu "
          "records checked, %llu out of per-source order\n",
          U(r->bad_value), U(r->bad_key), U(r->bad_header), U(r->order_checked),
          U(r->order_violations));
  fprintf(f,
          "verify: answers: accepted twice %llu; false duplicates %llu; valid rejected %llu; "
          "invalid accepted %llu; ambiguous found once %llu, more than once %llu\n",
          U(r->accepted_twice), U(r->false_duplicates), U(r->valid_rejected),
          U(r->invalid_accepted), U(r->ambiguous_found), U(r->ambiguous_over));
  fprintf(f,
          "verify: dead-letter: expected %llu..%llu, matched %llu; events short of their "
          "records %llu; extra %llu\n",
          U(r->dlq_expected_min), U(r->dlq_expected_max), U(r->dlq_found), U(r->dlq_missing),
          U(r->dlq_extra));
  fprintf(f, "verify: %s\n", r->pass ? "PASS" : "FAIL");
#undef U
}
