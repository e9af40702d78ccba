/* The hostile-input corpus (tests/hostile/, MANIFEST there) replayed against one intaked and the
 * real broker.
 *
 * For each case, on a new connection: a "hello" case first says HELLO, sends one valid batch
 * and waits for its ack, then sends the file's bytes; a "raw" case sends them right away. The
 * reaction must be the manifest's: a ProtocolError with its code and then the close; the
 * connection closed without an answer; or a BatchAck (OK with event 0 REJECTED for the right
 * reason and the rest ACCEPTED, OK with all ACCEPTED, or REJECTED), after which the connection
 * must still take a valid batch. After every case intaked must still be running (the next case
 * connects anew). At the end:
 *   - every valid event sent (before, inside and after the hostile bytes) is in the events
 *     topic exactly once, and nothing else is;
 *   - every rejected event is in the dead-letter topic exactly once with its reject_reason;
 *   - each ProtocolError was logged once with its code;
 *   - intaked exits 0 on SIGTERM and its final stats line reconciles:
 *     received = delivered + duplicate + rejected + failed + in_flight, with the counts the
 *     acks announced.
 *
 * A case flagged xfail is a known wrong reaction (reported, to be fixed in src/): it runs, its
 * actual reaction is printed as XFAIL, its events are not held to exactly-once, and the test
 * fails if it behaves as the manifest says (XPASS), so that the flag is removed with the fix. */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <zstd.h>

#include "../hostile/hostile.h"
#include "ingest/frame.h"
#include "itest.h"

#define HOSTILE_DIR ITEST_SOURCE_DIR "/tests/hostile"
#define MAX_CASES 256
#define MAX_EVENTS 2048
#define ACK_TIMEOUT_MS 30000
#define CLOSE_TIMEOUT_MS 10000

static const char CONFIG[] =
    "listen:\n"
    "  address: 127.0.0.1\n"
    "  port: ${PORT}\n"
    "gateway:\n"
    "  max_frame_bytes: 1MiB\n"
    "  max_batch_events: 100\n"
    "  max_in_flight_batches: 8\n"
    "validate:\n"
    "  max_decompressed_bytes: 8MiB\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "  delivery_timeout: 20s\n"
    "  properties:\n"
    "    linger.ms: 5\n"
    "log:\n"
    "  stats_interval: 1s\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n";

typedef struct {
  uint8_t *p;
  size_t n;
} blob_t;

typedef struct {
  char file[128];
  char session[16];            /* raw | hello */
  char expect[64];             /* see MANIFEST */
  bool xfail;
  char why[512];
  blob_t bytes;                /* the file, NOW markers replaced */
} case_t;

/* An event that must be in a topic: exactly once, or (from an xfail case) at most once. */
typedef struct {
  blob_t value;
  char *reason;                /* dead-letter: expected reject_reason header (owned) */
  char *gateway_id;            /* when set: expected gateway_id header (owned) */
  bool maybe;
  const char *from;            /* case name, for messages */
} want_t;

static itest_daemon_t d;
static const char *topic, *dlq;
static want_t events[MAX_EVENTS], dead[MAX_EVENTS];
static size_t n_events, n_dead;
static uint64_t expect_received, acked_accepted, acked_rejected, maybe_events;
static uint64_t errors_by_code[32];
static int n_xfail;

/* Adds an expected record; takes ownership of `reason`. */
static void want(want_t *list, size_t *n, const uint8_t *p, size_t len, char *reason,
                 bool maybe, const char *from) {
  IT_CHECK(*n < MAX_EVENTS);
  want_t *w = &list[(*n)++];
  memset(w, 0, sizeof *w);
  w->value.p = malloc(len ? len : 1);
  IT_CHECK(w->value.p != NULL);
  memcpy(w->value.p, p, len);
  w->value.n = len;
  w->reason = reason;
  w->maybe = maybe;
  w->from = from;
}

/* ---- reading the corpus ---------------------------------------------------------------------- */

static blob_t read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  IT_CHECKF(f != NULL, "%s: %s", path, strerror(errno));
  blob_t b = {0};
  size_t cap = 0;
  for (;;) {
    if (b.n == cap) {
      cap = cap ? cap * 2 : 4096;
      b.p = realloc(b.p, cap);
      IT_CHECK(b.p != NULL);
    }
    size_t got = fread(b.p + b.n, 1, cap - b.n, f);
    if (got == 0)
      break;
    b.n += got;
  }
  fclose(f);
  return b;
}

/* Replaces every NOW marker (hostile.h) with the current time, as a 6-byte varint too. */
static void stamp_now(blob_t *b) {
  uint8_t marker[7], now[7];
  uint64_t m = INTAKE_NOW_MARKER, t = (uint64_t)itest_now_ms() - 1000;
  marker[0] = now[0] = 0x38; /* field 7, varint */
  for (int i = 0; i < 6; i++, m >>= 7, t >>= 7) {
    marker[1 + i] = (uint8_t)((m & 0x7f) | (i < 5 ? 0x80 : 0));
    now[1 + i] = (uint8_t)((t & 0x7f) | (i < 5 ? 0x80 : 0));
  }
  IT_CHECK(t == 0); /* the time fits 6 varint bytes (until 2109) */
  for (size_t i = 0; i + sizeof marker <= b->n; i++)
    if (memcmp(b->p + i, marker, sizeof marker) == 0)
      memcpy(b->p + i, now, sizeof now);
}

static size_t load_manifest(case_t *cases) {
  blob_t m = read_all(HOSTILE_DIR "/MANIFEST");
  m.p = realloc(m.p, m.n + 1);
  IT_CHECK(m.p != NULL);
  m.p[m.n] = '\0';
  size_t n = 0;
  for (char *line = (char *)m.p, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    if (line[0] == '#' || line[0] == '\0')
      continue;
    IT_CHECK(n < MAX_CASES);
    case_t *c = &cases[n];
    char flags[32];
    int k = sscanf(line, "%127s %15s %63s %31s", c->file, c->session, c->expect, flags);
    IT_CHECKF(k == 4, "MANIFEST: bad line: %s", line);
    c->xfail = strcmp(flags, "xfail") == 0;
    const char *why = strchr(line, '#');
    snprintf(c->why, sizeof c->why, "%s", why ? why + 2 : "");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", HOSTILE_DIR, c->file);
    c->bytes = read_all(path);
    stamp_now(&c->bytes);
    n++;
  }
  free(m.p);
  IT_CHECKF(n > 0, "no cases in %s/MANIFEST", HOSTILE_DIR);
  return n;
}

/* ---- walking the case's bytes (a small wire reader of our own) ------------------------------- */

static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (int i = 0; i < 10 && *p < end; i++) {
    uint8_t b = *(*p)++;
    x |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1;
}

typedef struct {
  uint64_t seq;
  blob_t ev[128];              /* pointers into the case's bytes or into `inner` */
  size_t n;
  uint8_t *inner;              /* decompressed events_zstd, owned */
} batch_t;

/* Collects field 2 (events) of a Batch message; finds seq (1) and events_zstd (3). Only for
 * cases whose manifest says the batch is acked, i.e. well-formed. */
static void walk_batch(const uint8_t *p, size_t len, batch_t *b, int depth) {
  const uint8_t *end = p + len;
  while (p < end) {
    uint64_t tag, v;
    IT_CHECK(rd_varint(&p, end, &tag) == 0);
    switch (tag & 7) {
    case 0:
      IT_CHECK(rd_varint(&p, end, &v) == 0);
      if (tag >> 3 == 1)
        b->seq = v;
      break;
    case 1:
      p += 8;
      break;
    case 5:
      p += 4;
      break;
    case 2:
      IT_CHECK(rd_varint(&p, end, &v) == 0 && v <= (uint64_t)(end - p));
      if (tag >> 3 == 2) {
        IT_CHECK(b->n < sizeof b->ev / sizeof b->ev[0]);
        b->ev[b->n++] = (blob_t){(uint8_t *)p, (size_t)v};
      } else if (tag >> 3 == 3 && depth == 0) {
        unsigned long long size = ZSTD_getFrameContentSize(p, (size_t)v);
        IT_CHECK(size != ZSTD_CONTENTSIZE_ERROR && size != ZSTD_CONTENTSIZE_UNKNOWN);
        b->inner = malloc(size ? size : 1);
        IT_CHECK(b->inner != NULL);
        size_t got = ZSTD_decompress(b->inner, size, p, (size_t)v);
        IT_CHECK(!ZSTD_isError(got));
        walk_batch(b->inner, got, b, 1);
      }
      p += v;
      break;
    default:
      IT_FAIL("unexpected wire type in an acked batch");
    }
  }
}

/* The first frame of the case must be a BATCH: its events. */
static void case_batch(const case_t *c, batch_t *b) {
  memset(b, 0, sizeof *b);
  intake_frame_t f;
  IT_CHECKF(intake_frame_parse(c->bytes.p, c->bytes.n, 64u << 20, &f) == INTAKE_FRAME_OK &&
                f.type == INTAKE_FRAME_BATCH,
            "%s: expected a BATCH frame in the file", c->file);
  walk_batch(f.payload, f.payload_len, b, 0);
}

/* gateway_id of the HELLO frame at the start of the case, mapped as server.c does for logs and
 * headers: bytes outside 0x21..0x7e become '_'. */
static char *hello_gateway_id(const case_t *c) {
  intake_frame_t f;
  IT_CHECK(intake_frame_parse(c->bytes.p, c->bytes.n, 64u << 20, &f) == INTAKE_FRAME_OK);
  Intake__V1__Hello *h = intake__v1__hello__unpack(NULL, f.payload_len, f.payload);
  IT_CHECK(h != NULL);
  char *id = strdup(h->gateway_id);
  IT_CHECK(id != NULL);
  for (char *s = id; *s; s++)
    if (!(*s > 0x20 && *s < 0x7f))
      *s = '_';
  intake__v1__hello__free_unpacked(h, NULL);
  return id;
}

/* ---- valid traffic around the hostile bytes -------------------------------------------------- */

static uint64_t valid_seq = 1000;

/* Sends one valid event on `c` and requires an OK ack with it ACCEPTED. */
/* Takes ownership of `gateway_id` (the expected gateway_id header, or NULL). */
static void valid_batch(intake_client_t *c, const char *case_name, const char *when,
                        char *gateway_id) {
  char id[160];
  snprintf(id, sizeof id, "%s-%s", when, case_name);
  Intake__V1__Event *ev = itest_event_new("hostile-valid-0001",
                                          INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR, id, 0,
                                          "smoke.alarm", 2, itest_now_ms() - 1000);
  ProtobufCBinaryData b = itest_event_pack(ev);
  uint64_t seq = ++valid_seq;
  IT_CHECK_INT(intake_client_send_batch_encoded(c, seq, &b, 1, 0), 0);
  Intake__V1__BatchAck *ack = itest_recv_ack(c, ACK_TIMEOUT_MS);
  IT_CHECKF(ack->seq == seq && ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK &&
                ack->n_outcomes == 1 && ack->outcomes[0] == INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED,
            "%s: the valid batch %s it was not accepted (seq %llu, status %d: %s)", case_name,
            when, (unsigned long long)ack->seq, ack->status, ack->detail);
  intake__v1__batch_ack__free_unpacked(ack, NULL);
  want(events, &n_events, b.data, b.len, NULL, false, case_name);
  events[n_events - 1].gateway_id = gateway_id;
  expect_received++;
  acked_accepted++;
  free(b.data);
  itest_event_free(ev);
}

/* ---- reactions --------------------------------------------------------------------------------- */

static char problem[1024];

#define MISMATCH(...) (snprintf(problem, sizeof problem, __VA_ARGS__), problem)

static const char *frame_name(const intake_client_msg_t *m) {
  static char buf[600];
  if (m->error) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&intake__v1__error_code__descriptor, m->error->code);
    snprintf(buf, sizeof buf, "ProtocolError %s (\"%s\")", v ? v->name : "?", m->error->detail);
  } else if (m->ack) {
    snprintf(buf, sizeof buf, "BatchAck seq %llu status %d (\"%s\") with %zu outcomes",
             (unsigned long long)m->ack->seq, m->ack->status, m->ack->detail, m->ack->n_outcomes);
  } else if (m->welcome) {
    snprintf(buf, sizeof buf, "Welcome");
  } else {
    snprintf(buf, sizeof buf, "frame type %u", m->type);
  }
  return buf;
}

static int enum_value(const ProtobufCEnumDescriptor *desc, const char *prefix, const char *name) {
  char full[128];
  snprintf(full, sizeof full, "%s%s", prefix, name);
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(desc, full);
  IT_CHECKF(v != NULL, "MANIFEST: unknown %s%s", prefix, name);
  return v->value;
}

/* error:CODE — the ProtocolError, then the close. */
static const char *expect_error(intake_client_t *c, const char *code_name) {
  int code = enum_value(&intake__v1__error_code__descriptor, "ERROR_CODE_", code_name);
  intake_client_msg_t m;
  int err = intake_client_recv(c, CLOSE_TIMEOUT_MS, &m);
  if (err != 0)
    return MISMATCH("no ProtocolError %s: %s", code_name, strerror(-err));
  if (!m.error || (int)m.error->code != code) {
    MISMATCH("expected ProtocolError %s, got %s", code_name, frame_name(&m));
    intake_client_msg_free(&m);
    return problem;
  }
  intake_client_msg_free(&m);
  errors_by_code[code & 31]++;
  err = intake_client_recv(c, CLOSE_TIMEOUT_MS, &m);
  if (err != -ECONNRESET) {
    if (err == 0) {
      MISMATCH("after the ProtocolError: %s instead of the close", frame_name(&m));
      intake_client_msg_free(&m);
      return problem;
    }
    return MISMATCH("connection not closed after the ProtocolError: %s", strerror(-err));
  }
  return NULL;
}

/* close — the gateway stops mid-frame and closes its side: intaked answers nothing and closes. */
static const char *expect_close(intake_client_t *c) {
  IT_CHECK(shutdown(intake_client_fd(c), SHUT_WR) == 0);
  intake_client_msg_t m;
  int err = intake_client_recv(c, CLOSE_TIMEOUT_MS, &m);
  if (err == 0) {
    MISMATCH("expected no answer, got %s", frame_name(&m));
    intake_client_msg_free(&m);
    return problem;
  }
  if (err != -ECONNRESET)
    return MISMATCH("connection not closed after the gateway's close: %s", strerror(-err));
  return NULL;
}

/* reject:REASON, accept, batch_rejected — a BatchAck. */
static const char *expect_ack(intake_client_t *c, const case_t *k, const char *what) {
  batch_t b;
  case_batch(k, &b);
  const char *reason = strncmp(what, "reject:", 7) == 0 ? what + 7 : NULL;
  int reason_code = reason ? enum_value(&intake__v1__reject_reason__descriptor, "REJECT_REASON_",
                                        reason)
                           : 0;
  intake_client_msg_t m;
  const char *bad = NULL;
  int err = intake_client_recv(c, ACK_TIMEOUT_MS, &m);
  if (err != 0) {
    bad = MISMATCH("no BatchAck: %s", strerror(-err));
    goto done;
  }
  if (!m.ack) {
    bad = MISMATCH("expected a BatchAck, got %s", frame_name(&m));
    goto done;
  }
  const Intake__V1__BatchAck *a = m.ack;
  if (a->seq != b.seq) {
    bad = MISMATCH("ack for seq %llu, the batch was %llu", (unsigned long long)a->seq,
                   (unsigned long long)b.seq);
    goto done;
  }
  if (strcmp(what, "batch_rejected") == 0) {
    if (a->status != INTAKE__V1__BATCH_STATUS__BATCH_STATUS_REJECTED)
      bad = MISMATCH("expected status REJECTED, got %s", frame_name(&m));
    goto done;
  }
  if (a->status != INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK || a->n_outcomes != b.n) {
    bad = MISMATCH("expected status OK with %zu outcomes, got %s", b.n, frame_name(&m));
    goto done;
  }
  for (size_t i = 0; i < b.n; i++) {
    int want_outcome = (reason && i == 0) ? INTAKE__V1__OUTCOME__OUTCOME_REJECTED
                                          : INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED;
    if ((int)a->outcomes[i] != want_outcome) {
      bad = MISMATCH("event %zu: outcome %d, expected %d", i, a->outcomes[i], want_outcome);
      goto done;
    }
  }
  if (reason) {
    if (a->n_rejections != 1 || a->rejections[0]->index != 0 ||
        (int)a->rejections[0]->reason != reason_code) {
      bad = MISMATCH("expected one rejection (index 0, %s), got %zu (first: index %u reason %d "
                     "\"%s\")",
                     reason, a->n_rejections, a->n_rejections ? a->rejections[0]->index : 0,
                     a->n_rejections ? a->rejections[0]->reason : 0,
                     a->n_rejections ? a->rejections[0]->detail : "");
      goto done;
    }
    itest_log("  event 0 rejected: %s", a->rejections[0]->detail);
  } else if (a->n_rejections != 0) {
    bad = MISMATCH("unexpected rejections: %zu", a->n_rejections);
  }

done:
  /* What intaked now holds, whatever the verdict (an xfail case's events may or may not land). */
  if (m.ack && m.ack->status != INTAKE__V1__BATCH_STATUS__BATCH_STATUS_REJECTED)
    expect_received += b.n;
  if (m.ack && m.ack->status == INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK && !bad) {
    for (size_t i = 0; i < b.n; i++) {
      if (reason && i == 0) {
        char *lower = strdup(reason);
        IT_CHECK(lower != NULL);
        for (char *s = lower; *s; s++)
          *s = (char)(*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s);
        want(dead, &n_dead, b.ev[i].p, b.ev[i].n, lower, false, k->file);
        acked_rejected++;
      } else {
        want(events, &n_events, b.ev[i].p, b.ev[i].n, NULL, false, k->file);
        acked_accepted++;
      }
    }
  } else if (m.ack && m.ack->status != INTAKE__V1__BATCH_STATUS__BATCH_STATUS_REJECTED) {
    for (size_t i = 0; i < b.n; i++) {
      want(events, &n_events, b.ev[i].p, b.ev[i].n, NULL, true, k->file);
      want(dead, &n_dead, b.ev[i].p, b.ev[i].n, NULL, true, k->file);
      maybe_events++;
    }
  }
  intake_client_msg_free(&m);
  free(b.inner);
  return bad;
}

/* welcome — the HELLO in the file is answered WELCOME; a valid batch then goes through, with
 * the gateway_id header made printable. */
static const char *expect_welcome(intake_client_t *c, const case_t *k) {
  intake_client_msg_t m;
  int err = intake_client_recv(c, CLOSE_TIMEOUT_MS, &m);
  if (err != 0)
    return MISMATCH("no Welcome: %s", strerror(-err));
  if (!m.welcome) {
    MISMATCH("expected Welcome, got %s", frame_name(&m));
    intake_client_msg_free(&m);
    return problem;
  }
  intake_client_msg_free(&m);
  valid_batch(c, k->file, "after-welcome", hello_gateway_id(k));
  return NULL;
}

static void run_case(const case_t *k) {
  itest_log("%s%s: %s, expect %s (%s)", k->file, k->xfail ? " [xfail]" : "", k->session,
            k->expect, k->why);
  intake_client_t *c;
  if (strcmp(k->session, "hello") == 0) {
    c = itest_connect(&d, "gw-hostile", NULL);
    valid_batch(c, k->file, "before", NULL);
  } else {
    IT_CHECKF(strcmp(k->session, "raw") == 0, "MANIFEST: unknown session %s", k->session);
    int err = intake_client_connect("127.0.0.1", d.port, 5000, &c);
    IT_CHECKF(err == 0, "%s: connect: %s", k->file, strerror(-err));
  }
  int err = intake_client_send_raw(c, k->bytes.p, k->bytes.n);
  IT_CHECKF(err == 0, "%s: sending %zu bytes: %s", k->file, k->bytes.n, strerror(-err));

  const char *bad;
  bool acked = false;
  if (strncmp(k->expect, "error:", 6) == 0) {
    bad = expect_error(c, k->expect + 6);
  } else if (strcmp(k->expect, "close") == 0) {
    bad = expect_close(c);
  } else if (strcmp(k->expect, "welcome") == 0) {
    bad = expect_welcome(c, k);
  } else {
    IT_CHECKF(strncmp(k->expect, "reject:", 7) == 0 || strcmp(k->expect, "accept") == 0 ||
                  strcmp(k->expect, "batch_rejected") == 0,
              "MANIFEST: unknown reaction %s", k->expect);
    bad = expect_ack(c, k, k->expect);
    acked = true;
  }

  if (bad && k->xfail) {
    itest_log("  XFAIL %s: %s", k->file, bad);
    n_xfail++;
  } else if (bad) {
    IT_FAIL("%s: %s", k->file, bad);
  } else if (k->xfail) {
    IT_FAIL("%s: XPASS: reacted as the manifest expects (%s); remove its xfail flag in "
            "tests/fuzz/gen_corpus.c and regenerate",
            k->file, k->expect);
  }
  /* The connection still takes a valid batch after an acked hostile one. */
  if (acked && !bad)
    valid_batch(c, k->file, "after", NULL);
  intake_client_close(c);
  IT_CHECKF(itest_daemon_wait(&d, 0) < 0, "intaked died on %s (exit %d)", k->file, d.exit_code);
}

/* ---- the end: Kafka, logs, counters ------------------------------------------------------------ */

/* A record holds the event `v` when its value is v, or — for a dead-letter record of an event
 * over validate.max_event_bytes — v's first bytes with a "truncated_from" header giving v's
 * size. */
static int holds(const itest_record_t *r, const blob_t *v) {
  if (r->value_len == v->n)
    return memcmp(r->value, v->p, v->n) == 0;
  const char *from = itest_record_header(r, "truncated_from");
  return from && strtoull(from, NULL, 10) == v->n && r->value_len < v->n &&
         memcmp(r->value, v->p, r->value_len) == 0;
}

static size_t count_value(const itest_records_t *rs, const blob_t *v, const itest_record_t **hit) {
  size_t n = 0;
  for (size_t i = 0; i < rs->n; i++)
    if (holds(&rs->v[i], v)) {
      n++;
      *hit = &rs->v[i];
    }
  return n;
}

static void check_topic(const char *name, const want_t *list, size_t n) {
  size_t exact = 0;
  for (size_t i = 0; i < n; i++)
    exact += !list[i].maybe;
  itest_records_t rs = itest_consume(itest_bootstrap(), name, exact, 60000);
  size_t found_maybe = 0;
  for (size_t i = 0; i < n; i++) {
    const itest_record_t *hit = NULL;
    size_t k = count_value(&rs, &list[i].value, &hit);
    if (list[i].maybe) {
      IT_CHECKF(k <= 1, "%s: an event of xfail case %s is there %zu times", name, list[i].from, k);
      found_maybe += k;
      continue;
    }
    IT_CHECKF(k == 1, "%s: an event of %s (%zu bytes) is there %zu times, expected once", name,
              list[i].from, list[i].value.n, k);
    if (list[i].reason)
      IT_CHECKF(itest_record_header(hit, "reject_reason") &&
                    strcmp(itest_record_header(hit, "reject_reason"), list[i].reason) == 0,
                "%s: the event of %s has reject_reason %s, expected %s", name, list[i].from,
                itest_record_header(hit, "reject_reason") ? itest_record_header(hit, "reject_reason")
                                                          : "(none)",
                list[i].reason);
    if (list[i].gateway_id)
      IT_CHECKF(itest_record_header(hit, "gateway_id") &&
                    strcmp(itest_record_header(hit, "gateway_id"), list[i].gateway_id) == 0,
                "%s: the event of %s has gateway_id \"%s\", expected \"%s\"", name, list[i].from,
                itest_record_header(hit, "gateway_id") ? itest_record_header(hit, "gateway_id")
                                                       : "(none)",
                list[i].gateway_id);
  }
  IT_CHECKF(rs.n == exact + found_maybe, "%s holds %zu records, expected %zu (+%zu from xfail "
                                         "cases)",
            name, rs.n, exact, found_maybe);
  itest_log("%s: %zu records, each expected one exactly once%s", name, rs.n,
            found_maybe ? " (plus xfail leftovers)" : "");
  itest_records_free(&rs);
}

static uint64_t stat_field(const char *line, const char *key) {
  uint64_t v = 0;
  IT_CHECKF(itest_logfmt_u64(line, key, &v), "stats line without %s=: %s", key, line);
  return v;
}

static void check_logs_and_counters(void) {
  char *log = itest_daemon_log(&d);
  /* Every ProtocolError sent was logged with its code, unless server.c's rate limit for these
   * lines (100 per 10 s) held some back: then the lines and their suppressed= counts add up to
   * at most what was sent. */
  uint64_t logged_total = 0, sent_total = 0, suppressed = 0, logged[32] = {0};
  for (const char *p = log; (p = strstr(p, "msg=\"protocol error\"")) != NULL; p++) {
    const char *start = p, *end = strchr(p, '\n');
    while (start > log && start[-1] != '\n')
      start--;
    char *l = strndup(start, end ? (size_t)(end - start) : strlen(start));
    char name[64];
    IT_CHECKF(itest_logfmt_str(l, "code", name, sizeof name), "protocol error without code=: %s", l);
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value_by_name(&intake__v1__error_code__descriptor, name);
    IT_CHECKF(v != NULL, "protocol error with an unknown code: %s", l);
    logged[v->value & 31]++;
    logged_total++;
    uint64_t held = 0;
    if (itest_logfmt_u64(l, "suppressed", &held))
      suppressed += held;
    free(l);
  }
  for (int code = 0; code < 32; code++)
    sent_total += errors_by_code[code];
  if (logged_total == sent_total) {
    for (int code = 0; code < 32; code++)
      IT_CHECKF(logged[code] == errors_by_code[code],
                "%llu \"protocol error\" log lines with code %d, %llu sent",
                (unsigned long long)logged[code], code, (unsigned long long)errors_by_code[code]);
  } else {
    IT_CHECKF(logged_total >= 100 && logged_total + suppressed <= sent_total,
              "%llu \"protocol error\" log lines (+%llu suppressed) for %llu ProtocolErrors sent",
              (unsigned long long)logged_total, (unsigned long long)suppressed,
              (unsigned long long)sent_total);
  }
  itest_log("%llu ProtocolErrors sent, %llu logged with their code", (unsigned long long)sent_total,
            (unsigned long long)logged_total);

  char *line = itest_log_last_line(log, "msg=\"stats\"");
  IT_CHECKF(line != NULL, "no msg=\"stats\" line in the log");
  itest_log("final stats: %s", line);
  uint64_t received = stat_field(line, "received"), delivered = stat_field(line, "delivered"),
           duplicate = stat_field(line, "duplicate"), rejected = stat_field(line, "rejected"),
           failed = stat_field(line, "failed"), in_flight = stat_field(line, "in_flight");
  IT_CHECKF(received == delivered + duplicate + rejected + failed + in_flight,
            "counters do not reconcile: %s", line);
  IT_CHECK_INT(in_flight, 0);
  IT_CHECK_INT(received, expect_received);
  IT_CHECK_INT(duplicate, 0);
  IT_CHECKF(delivered >= acked_accepted && delivered <= acked_accepted + maybe_events,
            "delivered %llu, acks said %llu (+ up to %llu from xfail cases)",
            (unsigned long long)delivered, (unsigned long long)acked_accepted,
            (unsigned long long)maybe_events);
  IT_CHECKF(rejected >= acked_rejected && rejected <= acked_rejected + maybe_events,
            "rejected %llu, acks said %llu (+ up to %llu from xfail cases)",
            (unsigned long long)rejected, (unsigned long long)acked_rejected,
            (unsigned long long)maybe_events);
  IT_CHECKF(failed <= maybe_events, "failed %llu with only %llu events of xfail cases",
            (unsigned long long)failed, (unsigned long long)maybe_events);
  free(line);
  free(log);
}

int main(void) {
  itest_init("hostile", true, 170);
  topic = itest_topic("events");
  dlq = itest_topic("dlq");
  const char *topics[] = {topic, dlq};
  itest_create_topics(itest_bootstrap(), topics, 2, 4);
  itest_daemon_start(&d, "main", CONFIG);

  static case_t cases[MAX_CASES];
  size_t n = load_manifest(cases);
  int64_t t0 = itest_mono_ms();
  for (size_t i = 0; i < n; i++)
    run_case(&cases[i]);
  itest_log("%zu hostile cases in %lld ms (%d xfail); intaked still serving", n,
            (long long)(itest_mono_ms() - t0), n_xfail);

  /* A last connection after everything. */
  intake_client_t *c = itest_connect(&d, "gw-hostile-last", NULL);
  valid_batch(c, "end", "last", NULL);
  intake_client_close(c);

  check_topic(topic, events, n_events);
  check_topic(dlq, dead, n_dead);

  IT_CHECK_INT(itest_daemon_stop(&d, 30000), 0);
  check_logs_and_counters();

  for (size_t i = 0; i < n; i++)
    free(cases[i].bytes.p);
  for (size_t i = 0; i < n_events; i++) {
    free(events[i].value.p);
    free(events[i].gateway_id);
  }
  for (size_t i = 0; i < n_dead; i++) {
    free(dead[i].value.p);
    free(dead[i].reason);
  }
  itest_finish();
  return 0;
}
