/* intake-send: reads events as JSON lines (send/event_json.h) from files or stdin, sends them to
 * intaked over the gateway protocol (client/gwclient.h) and prints what intaked answered for each
 * one. A newcomer's first event, a script's one-off replay, or intake-tail's output sent back.
 *
 * Lines are sent as they come: a batch leaves when it is full, and also whenever the input
 * would block (so typing one line at a terminal gets its answer at once). Up to --window batches
 * are in flight; a RETRY is resent (after retry_after_ms when intaked asks for it), and a lost
 * connection is reopened and every unanswered batch resent — dedup absorbs what did land, so
 * such an event may come back "duplicate" though it was this run that delivered it. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "client/gwclient.h"
#include "send/event_json.h"

#define MAX_WINDOW 256
#define MAX_LINE (64 << 20) /* intaked's largest frame (gateway.max_frame_bytes) is 64 MiB */
#define DEFAULT_PORT 7400

enum { EXIT_OK = 0, EXIT_NOT_ALL = 1, EXIT_USAGE = 2, EXIT_TROUBLE = 3 };

typedef struct {
  char host[256];
  uint16_t port;
  const char *gateway_id;
  const char *token;
  const char *token_file;
  unsigned window, batch, retries;
  int zstd, tls, now, quiet, check;
  const char *ca, *cert, *key, *server_name;
  int timeout_ms;
} opts_t;

/* One event read, waiting for its answer. */
typedef struct {
  Intake__V1__Event *ev;
  const char *file;
  unsigned long line;
} item_t;

typedef struct {
  uint64_t seq;                /* 0: slot free */
  item_t *items;
  size_t n;
  unsigned tries;              /* times sent */
} batch_t;

typedef struct {
  opts_t o;
  intake_client_t *c;
  uint32_t window, batch_max, frame_max;
  uint64_t next_seq;
  batch_t inflight[MAX_WINDOW];
  unsigned n_inflight;
  item_t *cur;                 /* the batch being filled */
  size_t cur_n, cur_bytes;
  uint64_t accepted, duplicate, converged, rejected, unanswered, bad;
  uint64_t checked;            /* --check: lines that are events */
  int gave_up;                 /* the connection could not be kept: stop reading */
} sender_t;

static void usage(FILE *f) {
  fprintf(f,
"usage: intake-send [options] [FILE...]\n"
"Sends events, one JSON object per line (the proto3 JSON mapping of intake.v1.Event, as\n"
"intake-tail prints it; a whole intake-tail line is read too), from each FILE or from stdin\n"
"(none, or \"-\") to intaked over the gateway protocol, and prints intaked's answer per event.\n"
"A batch leaves when it is full or when the input pauses, so typed lines are answered at once.\n"
"  -a, --address HOST[:PORT]  intaked's gateway listener (default 127.0.0.1:7400; [::1]:7400)\n"
"  -g, --gateway-id ID        the gateway id sent in HELLO (default intake-send)\n"
"      --token TOKEN          the token sent in HELLO (default none)\n"
"      --token-file FILE      read the token from FILE's first line instead (not visible in ps)\n"
"  -w, --window N             batches in flight at most (default 4; intaked's WELCOME caps it)\n"
"  -n, --batch N              events per batch at most (default 100; WELCOME caps it)\n"
"  -z, --zstd                 send batches zstd-compressed\n"
"      --tls                  TLS, intaked's certificate checked against the system CAs\n"
"      --ca FILE              TLS, checked against the CA(s) in FILE (PEM)\n"
"      --cert FILE --key FILE TLS with this client certificate and key (PEM)\n"
"      --server-name NAME     the name intaked's certificate must carry (default HOST)\n"
"      --now                  give events without time_ms (or 0) the current time\n"
"      --timeout DURATION     for connecting and for each answer (default 60s; 500ms, 2m)\n"
"      --retries N            resends of a batch (RETRY, lost connection) before giving up\n"
"                             (default 5)\n"
"  -q, --quiet                no line per event, only errors and the summary\n"
"      --check                only read the lines: report those that are not events, send\n"
"                             nothing, connect to nothing (exit 0, or 1 for a bad line)\n"
"Output: one line per event on stdout, in the order answers come:\n"
"  FILE:LINE OUTCOME SOURCE_ID EVENT_ID [REASON: DETAIL]\n"
"OUTCOME is accepted (in Kafka), duplicate (intaked already had it: not produced again; after\n"
"a lost connection this run's own first copy may be what it had),\n"
"converged (accepted, counted as a repeat of an open alarm), rejected (invalid: REASON says\n"
"why; it went to the dead-letter topic) or unanswered (no final answer after the retries: its\n"
"fate is unknown, and sending it again is safe). A line that is not an event is reported on\n"
"stderr as FILE:LINE: MESSAGE and not sent; the other lines go on. A summary ends on stderr.\n"
"Exit status: 0 every event accepted, duplicate or converged; 1 a line was not an event, a\n"
"file could not be read, or intaked rejected an event; 2 bad options; 3 intaked could not be\n"
"reached or kept (refused HELLO, connection lost beyond the retries): events unanswered.\n");
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out) {
  char *end;
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  *out = strtoull(s, &end, 10);
  return errno || *end || *out > max ? -1 : 0;
}

/* "500ms", "10s", "2m" or a bare number of seconds. */
static int parse_duration_ms(const char *s, int *out) {
  char *end;
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  unsigned long long mul = !*end || !strcmp(end, "s") ? 1000 : !strcmp(end, "ms") ? 1
                           : !strcmp(end, "m") ? 60000 : 0;
  if (errno || !mul || v > 86400000ULL / mul)
    return -1;
  *out = (int)(v * mul);
  return 0;
}

/* "host", "host:port", "[v6]" or "[v6]:port". */
static int parse_address(const char *s, opts_t *o) {
  const char *port = NULL;
  size_t hl;
  if (*s == '[') {
    const char *close = strchr(s, ']');
    if (!close || (close[1] && close[1] != ':'))
      return -1;
    hl = (size_t)(close - s - 1);
    s++;
    port = close[1] ? close + 2 : NULL;
  } else {
    const char *colon = strrchr(s, ':');
    if (colon && strchr(s, ':') != colon) { /* a bare IPv6 address */
      hl = strlen(s);
    } else {
      hl = colon ? (size_t)(colon - s) : strlen(s);
      port = colon ? colon + 1 : NULL;
    }
  }
  if (hl == 0 || hl >= sizeof o->host)
    return -1;
  memcpy(o->host, s, hl);
  o->host[hl] = '\0';
  unsigned long long p = DEFAULT_PORT;
  if (port && (parse_uint(port, 65535, &p) < 0 || p == 0))
    return -1;
  o->port = (uint16_t)p;
  return 0;
}

static int parse_args(int argc, char **argv, opts_t *o) {
  enum { O_TOKEN = 256, O_TOKEN_FILE, O_TLS, O_CA, O_CERT, O_KEY, O_SNI, O_NOW, O_TIMEOUT,
         O_RETRIES, O_CHECK };
  static const struct option longs[] = {
      {"address", required_argument, 0, 'a'},     {"gateway-id", required_argument, 0, 'g'},
      {"token", required_argument, 0, O_TOKEN},
      {"token-file", required_argument, 0, O_TOKEN_FILE},
      {"window", required_argument, 0, 'w'},      {"batch", required_argument, 0, 'n'},
      {"zstd", no_argument, 0, 'z'},              {"tls", no_argument, 0, O_TLS},
      {"ca", required_argument, 0, O_CA},         {"cert", required_argument, 0, O_CERT},
      {"key", required_argument, 0, O_KEY},       {"server-name", required_argument, 0, O_SNI},
      {"now", no_argument, 0, O_NOW},             {"timeout", required_argument, 0, O_TIMEOUT},
      {"retries", required_argument, 0, O_RETRIES}, {"quiet", no_argument, 0, 'q'},
      {"check", no_argument, 0, O_CHECK},
      {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
  int ch;
  unsigned long long v;
  while ((ch = getopt_long(argc, argv, "a:g:w:n:zqh", longs, NULL)) != -1) {
    switch (ch) {
    case 'a':
      if (parse_address(optarg, o) < 0) {
        fprintf(stderr, "intake-send: --address: expected HOST[:PORT] (got \"%s\")\n", optarg);
        return -1;
      }
      break;
    case 'g': o->gateway_id = optarg; break;
    case O_TOKEN: o->token = optarg; break;
    case O_TOKEN_FILE: o->token_file = optarg; break;
    case 'w':
    case 'n':
    case O_RETRIES:
      if (parse_uint(optarg, ch == 'w' ? MAX_WINDOW : ch == 'n' ? 100000 : 1000, &v) < 0 ||
          (v == 0 && ch != O_RETRIES)) {
        fprintf(stderr, "intake-send: %s: expected a whole number from %d to %d (got \"%s\")\n",
                ch == 'w' ? "--window" : ch == 'n' ? "--batch" : "--retries",
                ch == O_RETRIES ? 0 : 1, ch == 'w' ? MAX_WINDOW : ch == 'n' ? 100000 : 1000,
                optarg);
        return -1;
      }
      *(ch == 'w' ? &o->window : ch == 'n' ? &o->batch : &o->retries) = (unsigned)v;
      break;
    case 'z': o->zstd = 1; break;
    case O_TLS: o->tls = 1; break;
    case O_CA: o->ca = optarg, o->tls = 1; break;
    case O_CERT: o->cert = optarg, o->tls = 1; break;
    case O_KEY: o->key = optarg, o->tls = 1; break;
    case O_SNI: o->server_name = optarg; break;
    case O_NOW: o->now = 1; break;
    case O_TIMEOUT:
      if (parse_duration_ms(optarg, &o->timeout_ms) < 0 || o->timeout_ms == 0) {
        fprintf(stderr, "intake-send: --timeout: expected a duration like 10s (got \"%s\")\n",
                optarg);
        return -1;
      }
      break;
    case 'q': o->quiet = 1; break;
    case O_CHECK: o->check = 1; break;
    case 'h': usage(stdout); exit(EXIT_OK);
    default: return -1;
    }
  }
  if (!o->cert != !o->key) {
    fprintf(stderr, "intake-send: --cert and --key go together\n");
    return -1;
  }
  return 0;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* "REJECT_REASON_BAD_TIME" → "bad_time", as the dead-letter header reject_reason spells it. */
static void reason_name(int reason, char *out, size_t len) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&intake__v1__reject_reason__descriptor, reason);
  if (!v) {
    snprintf(out, len, "reason_%d", reason);
    return;
  }
  const char *s = v->name + strlen("REJECT_REASON_");
  size_t i = 0;
  for (; s[i] && i + 1 < len; i++)
    out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
  out[i] = '\0';
}

static const char *error_code_name(int code) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&intake__v1__error_code__descriptor, code);
  return v ? v->name : "ERROR_CODE_?";
}

static void print_outcome(sender_t *s, const item_t *it, const char *outcome, const char *why) {
  if (s->o.quiet)
    return;
  printf("%s:%lu %s %s %s%s%s\n", it->file, it->line, outcome, it->ev->source_id,
         it->ev->event_id, why ? " " : "", why ? why : "");
}

static void batch_free(batch_t *b) {
  for (size_t i = 0; i < b->n; i++)
    intake__v1__event__free_unpacked(b->items[i].ev, NULL);
  free(b->items);
  memset(b, 0, sizeof *b);
}

/* Gives up on every event of b: its fate is unknown. */
static void batch_unanswered(sender_t *s, batch_t *b, const char *why) {
  for (size_t i = 0; i < b->n; i++)
    print_outcome(s, &b->items[i], "unanswered", why);
  s->unanswered += b->n;
  batch_free(b);
  s->n_inflight--;
}

/* ---- the connection ----------------------------------------------------------------------- */

static int load_token(opts_t *o) {
  static char buf[1024];
  if (!o->token_file)
    return 0;
  FILE *f = fopen(o->token_file, "r");
  if (!f || !fgets(buf, sizeof buf, f)) {
    fprintf(stderr, "intake-send: --token-file %s: %s\n", o->token_file,
            f ? "empty" : strerror(errno));
    if (f)
      fclose(f);
    return -1;
  }
  fclose(f);
  buf[strcspn(buf, "\r\n")] = '\0';
  o->token = buf;
  return 0;
}

/* Connects and says HELLO. Returns 0, or -1 after saying why on stderr; *fatal is set when
 * trying again cannot help (intaked refused this gateway). */
static int open_session(sender_t *s, int *fatal) {
  char tls_err[256] = "";
  intake_client_tls_t tls = {s->o.ca, s->o.cert, s->o.key, s->o.server_name, tls_err,
                             sizeof tls_err};
  int rc = s->o.tls ? intake_client_connect_tls(s->o.host, s->o.port, s->o.timeout_ms, &tls, &s->c)
                    : intake_client_connect(s->o.host, s->o.port, s->o.timeout_ms, &s->c);
  *fatal = 0;
  if (rc < 0) {
    fprintf(stderr, "intake-send: connect %s port %u: %s%s%s\n", s->o.host, s->o.port,
            rc == -ENOENT ? "name does not resolve" : strerror(-rc), *tls_err ? ": " : "",
            tls_err);
    *fatal = rc == -EINVAL; /* a TLS file that cannot be used */
    s->c = NULL;
    return -1;
  }
  intake_client_msg_t m;
  rc = intake_client_hello(s->c, s->o.gateway_id, s->o.token, s->o.timeout_ms, &m);
  if (rc < 0) {
    const char *te = intake_client_tls_error(s->c);
    if (m.error) {
      fprintf(stderr, "intake-send: intaked refused HELLO: %s: %s\n",
              error_code_name(m.error->code), m.error->detail);
      *fatal = m.error->code == INTAKE__V1__ERROR_CODE__ERROR_CODE_NOT_AUTHENTICATED ||
               m.error->code == INTAKE__V1__ERROR_CODE__ERROR_CODE_BAD_VERSION;
    } else {
      fprintf(stderr, "intake-send: HELLO: %s%s%s\n", strerror(-rc), *te ? ": " : "", te);
    }
    intake_client_msg_free(&m);
    intake_client_close(s->c);
    s->c = NULL;
    return -1;
  }
  const Intake__V1__Welcome *w = m.welcome;
  s->window = s->o.window < w->max_in_flight ? s->o.window : w->max_in_flight;
  if (s->window == 0)
    s->window = 1;
  s->batch_max = s->o.batch < w->max_batch_events ? s->o.batch : w->max_batch_events;
  if (s->batch_max == 0)
    s->batch_max = 1;
  s->frame_max = w->max_frame_bytes;
  intake_client_msg_free(&m);
  return 0;
}

/* Sends b under a new sequence number (a nonzero seq also marks its slot taken, so a batch
 * that could not go out is still resent by reconnect()). */
static int send_batch(sender_t *s, batch_t *b) {
  b->seq = ++s->next_seq;
  b->tries++;
  if (!s->c)
    return -ENOTCONN;
  Intake__V1__Event **evs = malloc((b->n ? b->n : 1) * sizeof *evs);
  if (!evs)
    return -ENOMEM;
  for (size_t i = 0; i < b->n; i++)
    evs[i] = b->items[i].ev;
  int rc = intake_client_send_batch(s->c, b->seq, evs, b->n, s->o.zstd ? INTAKE_CLIENT_ZSTD : 0);
  free(evs);
  return rc;
}

/* The connection failed: reopen it and resend every batch in flight, each counting a try. A
 * batch over --retries, or every one when no connection can be had, is given up. */
static void give_up_all(sender_t *s, const char *why) {
  s->gave_up = 1;
  for (unsigned i = 0; i < MAX_WINDOW; i++)
    if (s->inflight[i].seq)
      batch_unanswered(s, &s->inflight[i], why);
}

static void reconnect(sender_t *s, const char *why) {
  intake_client_close(s->c);
  s->c = NULL;
  for (unsigned attempt = 1;; attempt++) {
    for (unsigned i = 0; i < MAX_WINDOW; i++)
      if (s->inflight[i].seq && s->inflight[i].tries > s->o.retries)
        batch_unanswered(s, &s->inflight[i], why);
    if (attempt > s->o.retries + 1) {
      give_up_all(s, why);
      return;
    }
    if (attempt > 1)
      sleep_ms(200u << (attempt < 6 ? attempt : 6)); /* 0.8 s .. 12.8 s between tries */
    int fatal;
    if (open_session(s, &fatal) < 0) {
      if (fatal) {
        give_up_all(s, why);
        return;
      }
      continue;
    }
    int ok = 1;
    for (unsigned i = 0; i < MAX_WINDOW && ok; i++)
      if (s->inflight[i].seq)
        ok = send_batch(s, &s->inflight[i]) == 0;
    if (ok)
      return;
    intake_client_close(s->c);
    s->c = NULL;
  }
}

static batch_t *find_batch(sender_t *s, uint64_t seq) {
  for (unsigned i = 0; i < MAX_WINDOW; i++)
    if (s->inflight[i].seq == seq)
      return &s->inflight[i];
  return NULL;
}

static void on_ack(sender_t *s, const Intake__V1__BatchAck *a) {
  batch_t *b = find_batch(s, a->seq);
  if (!b) {
    fprintf(stderr, "intake-send: an answer for batch %llu, which is not in flight\n",
            (unsigned long long)a->seq);
    return;
  }
  char why[600], reason[64];
  switch (a->status) {
  case INTAKE__V1__BATCH_STATUS__BATCH_STATUS_OK:
    for (size_t i = 0; i < b->n; i++) {
      int out = i < a->n_outcomes ? (int)a->outcomes[i] : -1;
      switch (out) {
      case INTAKE__V1__OUTCOME__OUTCOME_ACCEPTED:
        print_outcome(s, &b->items[i], "accepted", NULL);
        s->accepted++;
        break;
      case INTAKE__V1__OUTCOME__OUTCOME_DUPLICATE:
        print_outcome(s, &b->items[i], "duplicate", NULL);
        s->duplicate++;
        break;
      case INTAKE__V1__OUTCOME__OUTCOME_CONVERGED:
        print_outcome(s, &b->items[i], "converged", NULL);
        s->converged++;
        break;
      case INTAKE__V1__OUTCOME__OUTCOME_REJECTED:
        snprintf(why, sizeof why, "unspecified: (no detail)");
        for (size_t r = 0; r < a->n_rejections; r++)
          if (a->rejections[r]->index == i) {
            reason_name(a->rejections[r]->reason, reason, sizeof reason);
            snprintf(why, sizeof why, "%s: %s", reason, a->rejections[r]->detail);
          }
        print_outcome(s, &b->items[i], "rejected", why);
        s->rejected++;
        break;
      default:
        print_outcome(s, &b->items[i], "unanswered", "(no outcome in intaked's answer)");
        s->unanswered++;
      }
    }
    batch_free(b);
    s->n_inflight--;
    break;
  case INTAKE__V1__BATCH_STATUS__BATCH_STATUS_REJECTED:
    snprintf(why, sizeof why, "batch: %s", a->detail);
    for (size_t i = 0; i < b->n; i++)
      print_outcome(s, &b->items[i], "rejected", why);
    s->rejected += b->n;
    batch_free(b);
    s->n_inflight--;
    break;
  default: /* RETRY, or a status this client does not know: resend is what is safe */
    if (b->tries > s->o.retries) {
      snprintf(why, sizeof why, "(intaked answered RETRY %u times: %s)", b->tries, a->detail);
      batch_unanswered(s, b, why);
      break;
    }
    /* Throttled: intaked says how long; otherwise Kafka failed something, and a short pause
     * growing with the tries gives it room. */
    sleep_ms(a->retry_after_ms ? a->retry_after_ms : 250u << (b->tries < 5 ? b->tries : 5));
    if (send_batch(s, b) < 0)
      reconnect(s, "(connection lost)");
  }
  fflush(stdout);
}

/* Waits for one answer and handles it. */
static void wait_one(sender_t *s) {
  intake_client_msg_t m;
  int rc = intake_client_recv(s->c, s->o.timeout_ms, &m);
  if (rc == 0 && m.ack) {
    on_ack(s, m.ack);
  } else {
    char why[512];
    if (rc == 0 && m.error)
      snprintf(why, sizeof why, "%s: %s", error_code_name(m.error->code), m.error->detail);
    else
      snprintf(why, sizeof why, "%s", rc == -ECONNRESET ? "connection closed by intaked"
                                      : rc == -ETIMEDOUT ? "no answer within --timeout"
                                      : rc < 0 ? strerror(-rc) : "unexpected frame");
    fprintf(stderr, "intake-send: %s; reconnecting to resend %u batch(es)\n", why, s->n_inflight);
    char tagged[600];
    snprintf(tagged, sizeof tagged, "(%s)", why);
    reconnect(s, tagged);
  }
  intake_client_msg_free(&m);
}

static void drain(sender_t *s) {
  while (s->n_inflight > 0 && !s->gave_up)
    wait_one(s);
}

/* intaked closes a connection idle for listen.idle_timeout (ERROR TIMEOUT), e.g. while a person
 * types the next line. Found before the next batch goes out, that is no failure: a new session
 * is opened without counting against --retries. */
static void reopen_if_closed(sender_t *s) {
  if (!s->c)
    return;
  struct pollfd p = {intake_client_fd(s->c), POLLIN, 0};
  if (poll(&p, 1, 0) <= 0)
    return;
  intake_client_msg_t m;
  int rc = intake_client_recv(s->c, 0, &m);
  int closed = (rc < 0 && rc != -ETIMEDOUT) || (rc == 0 && m.error);
  intake_client_msg_free(&m);
  if (!closed)
    return;
  intake_client_close(s->c);
  s->c = NULL;
  int fatal;
  open_session(s, &fatal); /* on failure send_batch() finds no client and reconnect() retries */
}

/* Sends the batch being filled, first making room in the window. */
static void flush(sender_t *s) {
  if (s->cur_n == 0)
    return;
  while (s->n_inflight >= s->window && !s->gave_up)
    wait_one(s);
  batch_t *b = NULL;
  for (unsigned i = 0; i < MAX_WINDOW && !b; i++)
    if (!s->inflight[i].seq)
      b = &s->inflight[i];
  b->items = s->cur;
  b->n = s->cur_n;
  s->cur = NULL;
  s->cur_n = s->cur_bytes = 0;
  s->n_inflight++;
  if (s->gave_up) {
    batch_unanswered(s, b, "(not sent: intaked could not be reached)");
    return;
  }
  if (s->n_inflight == 1) /* only this batch: nothing else is waiting for an answer */
    reopen_if_closed(s);
  if (send_batch(s, b) < 0)
    reconnect(s, "(connection lost)");
}

static void add_event(sender_t *s, Intake__V1__Event *ev, const char *file, unsigned long line) {
  /* A batch is at most one frame: each event costs its size plus a tag and a length varint. */
  size_t sz = intake__v1__event__get_packed_size(ev) + 11;
  size_t room = s->frame_max > 64 ? s->frame_max - 64 : 0;
  if (sz > room) {
    fprintf(stderr, "%s:%lu: the event is %zu bytes serialized, over intaked's frame limit of %u\n",
            file, line, sz - 11, s->frame_max);
    s->bad++;
    intake__v1__event__free_unpacked(ev, NULL);
    return;
  }
  if (s->cur_n > 0 && s->cur_bytes + sz > room)
    flush(s);
  /* Room for --batch: a reconnect may bring a WELCOME with a larger cap than the last one. */
  if (!s->cur && !(s->cur = malloc(s->o.batch * sizeof *s->cur))) {
    fprintf(stderr, "intake-send: out of memory\n");
    exit(EXIT_TROUBLE);
  }
  s->cur[s->cur_n++] = (item_t){ev, file, line};
  s->cur_bytes += sz;
  if (s->cur_n >= s->batch_max)
    flush(s);
}

/* ---- input ---------------------------------------------------------------------------------- */

/* Reads one input line by line with read(2), so that it can tell when the next read would
 * block: then the events read so far are sent and answered first. */
static int read_input(sender_t *s, int fd, const char *name) {
  size_t cap = 1 << 16, start = 0, end = 0, scanned = 0;
  char *buf = malloc(cap);
  unsigned long lineno = 0;
  int eof = 0, rc = 0, too_long = 0;
  char err[512];
  if (!buf)
    return -1;
  while (!s->gave_up) {
    char *nl = memchr(buf + scanned, '\n', end - scanned);
    scanned = nl ? (size_t)(nl - buf) : end; /* a long line is searched once, not per read */
    if (!nl && !eof) {
      if (start > 0) {
        memmove(buf, buf + start, end - start);
        end -= start, scanned -= start, start = 0;
      }
      if (end == cap && cap >= MAX_LINE) {
        /* Longer than any frame intaked takes: drop it up to its newline, say so once. */
        if (!too_long)
          fprintf(stderr, "%s:%lu: line longer than %d MiB, not read\n", name, lineno + 1,
                  MAX_LINE >> 20);
        s->bad += !too_long;
        too_long = 1;
        end = scanned = 0;
      } else if (end == cap) {
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
          rc = -1;
          break;
        }
        buf = nb, cap *= 2;
      }
      struct pollfd p = {fd, POLLIN, 0};
      if (poll(&p, 1, 0) == 0) {
        flush(s);
        drain(s);
      }
      ssize_t n = read(fd, buf + end, cap - end);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        fprintf(stderr, "intake-send: %s: %s\n", name, strerror(errno));
        s->bad++;
        break;
      }
      if (n == 0)
        eof = 1;
      end += (size_t)n;
      continue;
    }
    if (!nl && start == end)
      break; /* eof, nothing left */
    size_t len = nl ? (size_t)(nl - (buf + start)) : end - start;
    const char *line = buf + start;
    start += len + (nl ? 1 : 0);
    scanned = start;
    lineno++;
    if (too_long) { /* the rest of the line dropped above */
      too_long = 0;
      continue;
    }
    if (intake_send_line_blank(line, len))
      continue;
    Intake__V1__Event *ev;
    if (intake_send_event_parse(line, len, &ev, err, sizeof err) < 0) {
      fprintf(stderr, "%s:%lu: %s\n", name, lineno, err);
      s->bad++;
      continue;
    }
    if (s->o.now && ev->time_ms == 0)
      ev->time_ms = now_ms();
    if (s->o.check) {
      s->checked++;
      intake__v1__event__free_unpacked(ev, NULL);
      continue;
    }
    add_event(s, ev, name, lineno);
  }
  free(buf);
  return rc;
}

int main(int argc, char **argv) {
  sender_t s;
  memset(&s, 0, sizeof s);
  s.o = (opts_t){.port = DEFAULT_PORT, .gateway_id = "intake-send", .window = 4, .batch = 100,
                 .retries = 5, .timeout_ms = 60000};
  strcpy(s.o.host, "127.0.0.1");
  if (parse_args(argc, argv, &s.o) < 0) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (load_token(&s.o) < 0)
    return EXIT_USAGE;
  signal(SIGPIPE, SIG_IGN); /* stdout closed by `| head`: write() fails instead */

  int fatal;
  if (!s.o.check && open_session(&s, &fatal) < 0)
    return EXIT_TROUBLE;

  int n_files = argc - optind;
  for (int i = 0; i < (n_files ? n_files : 1) && !s.gave_up; i++) {
    const char *name = n_files ? argv[optind + i] : "-";
    int fd = strcmp(name, "-") ? open(name, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    if (fd < 0) {
      fprintf(stderr, "intake-send: %s: %s\n", name, strerror(errno));
      s.bad++;
      continue;
    }
    if (read_input(&s, fd, strcmp(name, "-") ? name : "<stdin>") < 0) {
      fprintf(stderr, "intake-send: out of memory\n");
      return EXIT_TROUBLE;
    }
    if (fd != STDIN_FILENO)
      close(fd);
  }
  flush(&s);
  drain(&s);
  fflush(stdout);
  if (s.gave_up)
    fprintf(stderr, "intake-send: gave up on intaked; input after the last line reported above "
                    "was not sent\n");
  intake_client_close(s.c);

  if (s.o.check) {
    fprintf(stderr, "intake-send: %llu event%s read, nothing sent (--check); %llu bad line%s\n",
            (unsigned long long)s.checked, s.checked == 1 ? "" : "s", (unsigned long long)s.bad,
            s.bad == 1 ? "" : "s");
    return s.bad ? EXIT_NOT_ALL : EXIT_OK;
  }
  uint64_t sent = s.accepted + s.duplicate + s.converged + s.rejected + s.unanswered;
  fprintf(stderr,
          "intake-send: %llu event%s: %llu accepted, %llu duplicate, %llu converged, "
          "%llu rejected, %llu unanswered; %llu bad line%s\n",
          (unsigned long long)sent, sent == 1 ? "" : "s", (unsigned long long)s.accepted,
          (unsigned long long)s.duplicate, (unsigned long long)s.converged,
          (unsigned long long)s.rejected, (unsigned long long)s.unanswered,
          (unsigned long long)s.bad, s.bad == 1 ? "" : "s");
  if (s.unanswered || s.gave_up)
    return EXIT_TROUBLE;
  return s.rejected || s.bad ? EXIT_NOT_ALL : EXIT_OK;
}
