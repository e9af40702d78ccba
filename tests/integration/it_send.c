/* intake-send against the real broker: a file of JSON lines (good events, an event intaked
 * rejects, lines that are not events, a blank line) goes through intaked; each event's outcome
 * is printed on its own line, each bad line is reported as file:line on stderr without stopping
 * the others, and the exit status says what happened (0, 1, 2, 3). The events reach Kafka once,
 * with every field as written; a retransmit (zstd, one event per batch, window 1) is answered
 * duplicate and produces nothing. Round trip: what intake-tail prints of those records, sent
 * by intake-send to a second intaked, is accepted there and produces the very same record
 * values. Typing: lines written one at a time into intake-send's stdin are answered one at a
 * time, also after intaked closed the idle connection in between. Repeats on a converged
 * route are answered converged (status 0). TLS with a client certificate. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

static const char CONFIG[] =
    "listen:\n"
    "  port: ${PORT}\n"
    "admin:\n"
    "  enabled: false\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "routes:\n"
    "  default_topic: ${P}.events\n"
    "  dead_letter_topic: ${P}.dlq\n"
    "  rules:\n"
    "    - name: fire\n"
    "      match: {type: smoke.alarm}\n"
    "      topics: ${P}.fire\n";

/* The second intaked of the round trip: everything to one topic. */
static const char CONFIG_COPY[] =
    "listen:\n"
    "  port: ${PORT}\n"
    "  idle_timeout: 1s\n"
    "admin:\n"
    "  enabled: false\n"
    "kafka:\n"
    "  mode: brokers\n"
    "  brokers: ${BROKERS}\n"
    "routes:\n"
    "  default_topic: ${P}.copy\n"
    "  dead_letter_topic: ${P}.dlq2\n"
    "  rules:\n"
    "    - name: storm\n"
    "      match: {type: storm.alarm}\n"
    "      topics: ${P}.copy\n"
    "      converge: {window: 1m}\n";

typedef struct {
  int status;
  char *out, *err;
} run_t;

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  IT_CHECKF(f != NULL, "%s: cannot open", path);
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    fwrite(chunk, 1, n, m);
  fclose(m);
  fclose(f);
  return buf;
}

/* Runs `intake-send ARGS` (stdin /dev/null unless ARGS redirects it later) and collects its
 * exit status, stdout and stderr. */
static run_t send_cmd(const char *args) {
  char cmd[4096], out[512], err[512];
  snprintf(out, sizeof out, "%s/send.out", itest_dir());
  snprintf(err, sizeof err, "%s/send.err", itest_dir());
  snprintf(cmd, sizeof cmd, "%s --timeout 30s </dev/null %s >%s 2>%s", ITEST_SEND, args, out,
           err);
  int st = system(cmd);
  IT_CHECKF(st != -1 && WIFEXITED(st), "intake-send did not exit normally: %d", st);
  run_t r = {WEXITSTATUS(st), slurp(out), slurp(err)};
  itest_log("intake-send %s -> %d\n%s%s", args, r.status, r.out, r.err);
  return r;
}

static void run_free(run_t *r) {
  free(r->out);
  free(r->err);
}

static void expect_in(const char *text, const char *want) {
  IT_CHECKF(strstr(text, want) != NULL, "wanted \"%s\" in:\n%s", want, text);
}

static size_t count_lines(const char *text) {
  size_t n = 0;
  for (; *text; text++)
    n += *text == '\n';
  return n;
}

/* Waits at most timeout_ms until the file at `path` contains `needle`. */
static void wait_file(const char *path, const char *needle, int timeout_ms) {
  int64_t deadline = itest_mono_ms() + timeout_ms;
  for (;;) {
    int found = 0;
    if (access(path, R_OK) == 0) { /* the shell creates it after opening the FIFO */
      char *text = slurp(path);
      found = strstr(text, needle) != NULL;
      free(text);
    }
    if (found)
      return;
    IT_CHECKF(itest_mono_ms() < deadline, "no \"%s\" in %s within %d ms", needle, path,
              timeout_ms);
    itest_sleep_ms(50);
  }
}

/* A person typing: intake-send reads a FIFO; each line is answered before the next is written,
 * and intaked closes the idle connection between two of them. */
static void typing(itest_daemon_t *d) {
  char fifo[512], out[512], err[512], cmd[4096];
  snprintf(fifo, sizeof fifo, "%s/typing", itest_dir());
  snprintf(out, sizeof out, "%s/typing.out", itest_dir());
  snprintf(err, sizeof err, "%s/typing.err", itest_dir());
  IT_CHECK(mkfifo(fifo, 0600) == 0);
  snprintf(cmd, sizeof cmd, "exec %s -a 127.0.0.1:%u --now --retries 0 <%s >%s 2>%s", ITEST_SEND,
           d->port, fifo, out, err);
  pid_t pid = fork();
  IT_CHECK(pid >= 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  FILE *w = fopen(fifo, "w"); /* opens once the child has it open for reading */
  IT_CHECK(w != NULL);
  fprintf(w, "{\"source_id\":\"typist\",\"source_kind\":1,\"event_id\":\"t-1\",\"type\":\"t\"}\n");
  fflush(w);
  wait_file(out, "<stdin>:1 accepted typist t-1\n", 20000);
  char *line = itest_daemon_wait_log(d, "idle for listen.idle_timeout", 20000);
  IT_CHECKF(line != NULL, "intaked did not close the idle connection");
  free(line);
  fprintf(w, "{\"source_id\":\"typist\",\"source_kind\":1,\"event_id\":\"t-2\",\"type\":\"t\"}\n");
  fflush(w);
  wait_file(out, "<stdin>:2 accepted typist t-2\n", 20000);
  fclose(w);
  int st;
  IT_CHECK(waitpid(pid, &st, 0) == pid);
  char *e = slurp(err);
  IT_CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "typing: status %d, stderr:\n%s", st, e);
  expect_in(e, "2 events: 2 accepted");
  free(e);
}

/* Over TLS with a client certificate that intaked requires and binds to the gateway id. */
static void over_tls(const char *events_file) {
  char certs[512], conf[4096], args[4096], cmd[2048];
  snprintf(certs, sizeof certs, "%s/certs", itest_dir());
  snprintf(cmd, sizeof cmd, "'%s/tests/tls/make-certs.sh' '%s' gw-1 >/dev/null", ITEST_SOURCE_DIR,
           certs);
  IT_CHECK_INT(system(cmd), 0);
  snprintf(conf, sizeof conf,
           "listen:\n"
           "  port: ${PORT}\n"
           "  tls:\n"
           "    cert_file: \"%s/server.pem\"\n"
           "    key_file: \"%s/server.key\"\n"
           "    client_ca_file: \"%s/ca.pem\"\n"
           "    require_client_cert: true\n"
           "    match_gateway_id: true\n"
           "admin:\n"
           "  enabled: false\n"
           "kafka:\n"
           "  mode: brokers\n"
           "  brokers: ${BROKERS}\n"
           "routes:\n"
           "  default_topic: ${P}.tls\n"
           "  dead_letter_topic: ${P}.dlq3\n",
           certs, certs, certs);
  itest_daemon_t d;
  itest_daemon_start(&d, "tls", conf);
  snprintf(args, sizeof args, "-a 127.0.0.1:%u -g gw-1 --ca %s/ca.pem --cert %s/gw-1.pem "
           "--key %s/gw-1.key -z %s", d.port, certs, certs, certs, events_file);
  run_t r = send_cmd(args);
  IT_CHECK_INT(r.status, 0);
  expect_in(r.out, "accepted cam-1 e-2");
  run_free(&r);
  /* No client certificate: refused, nothing sent, status 3. */
  snprintf(args, sizeof args, "-a 127.0.0.1:%u -g gw-1 --ca %s/ca.pem %s", d.port, certs,
           events_file);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 3);
  IT_CHECK_STR(r.out, "");
  run_free(&r);
  IT_CHECK_INT(itest_daemon_stop(&d, 20000), 0);
}

static const itest_record_t *by_key(const itest_records_t *rs, const char *key) {
  const itest_record_t *found = NULL;
  for (size_t i = 0; i < rs->n; i++)
    if (rs->v[i].key && !strcmp(rs->v[i].key, key)) {
      IT_CHECKF(found == NULL, "two records with key %s", key);
      found = &rs->v[i];
    }
  IT_CHECKF(found != NULL, "no record with key %s", key);
  return found;
}

int main(void) {
  itest_init("send", true, 170);
  const char *topics[] = {itest_topic("events"), itest_topic("fire"), itest_topic("dlq"),
                          itest_topic("copy")};
  itest_create_topics(itest_bootstrap(), topics, 4, 2);
  itest_daemon_t d, copy;
  itest_daemon_start(&d, "main", CONFIG);

  char in[512], good[512], args[2048];
  snprintf(in, sizeof in, "%s/in.jsonl", itest_dir());
  snprintf(good, sizeof good, "%s/good.jsonl", itest_dir());
  int64_t now = itest_now_ms();
  FILE *f = fopen(in, "w");
  IT_CHECK(f != NULL);
  /* 1: a smoke alarm with every field (route fire) */
  fprintf(f,
          "{\"source_id\":\"smoke-1\",\"source_kind\":\"SOURCE_KIND_SENSOR\",\"event_id\":\"e-1\","
          "\"seq\":\"5\",\"type\":\"smoke.alarm\",\"severity\":1,\"time_ms\":\"%lld\","
          "\"location\":{\"lon\":120.07,\"lat\":29.31,\"region\":\"330782\"},"
          "\"attributes\":{\"value\":\"42\",\"unit\":\"ppm\"},\"payload\":\"AAH/\","
          "\"clear\":false}\n",
          (long long)now - 1000);
  /* 2: a camera clear, camelCase and short kind */
  fprintf(f, "{\"sourceId\":\"cam-1\",\"sourceKind\":\"camera\",\"eventId\":\"e-2\","
             "\"type\":\"gb28181.alarm.6\",\"severity\":\"2\",\"timeMs\":%lld,\"clear\":true}\n",
          (long long)now - 2000);
  fprintf(f, "\n");                                                           /* 3: blank */
  fprintf(f, "{\"source_id\":\"smoke-9\" \"event_id\":\"x\"}\n");             /* 4: bad JSON */
  fprintf(f, "{\"source_id\":\"smoke-2\",\"source_kind\":1,\"event_id\":\"e-5\",\"type\":\"t\","
             "\"severity\":12,\"time_ms\":\"%lld\"}\n", /* 5: rejected by intaked */
          (long long)now);
  fprintf(f, "{\"source_id\":\"smoke-3\",\"sevrity\":1}\n");               /* 6: misspelt */
  /* 7: no time_ms: --now stamps it */
  fprintf(f, "{\"source_id\":\"gas-1\",\"source_kind\":\"sensor\",\"event_id\":\"e-7\","
             "\"type\":\"gas.level\",\"attributes\":{\"ppm\":\"7\"}}");  /* no final newline */
  fclose(f);
  f = fopen(good, "w");
  IT_CHECK(f != NULL);
  fprintf(f, "{\"source_id\":\"cam-1\",\"source_kind\":2,\"event_id\":\"e-2\",\"type\":\"x\","
             "\"time_ms\":\"%lld\"}\n", (long long)now);
  fclose(f);

  /* First send: three accepted, one rejected, two bad lines: status 1. */
  snprintf(args, sizeof args, "-a 127.0.0.1:%u -g gw-send --now %s", d.port, in);
  run_t r = send_cmd(args);
  IT_CHECK_INT(r.status, 1);
  char want[2048];
  snprintf(want, sizeof want,
           "%s:1 accepted smoke-1 e-1\n%s:2 accepted cam-1 e-2\n"
           "%s:5 rejected smoke-2 e-5 bad_severity: ",
           in, in, in);
  IT_CHECKF(!strncmp(r.out, want, strlen(want)), "stdout:\n%s\nwanted first:\n%s", r.out, want);
  snprintf(want, sizeof want, "%s:7 accepted gas-1 e-7\n", in);
  expect_in(r.out, want);
  IT_CHECK_INT(count_lines(r.out), 4);
  snprintf(want, sizeof want, "%s:4: column ", in);
  expect_in(r.err, want);
  snprintf(want, sizeof want, "%s:6: unknown field \"sevrity\"", in);
  expect_in(r.err, want);
  expect_in(r.err, "intake-send: 4 events: 3 accepted, 0 duplicate, 0 converged, 1 rejected, "
                   "0 unanswered; 2 bad lines\n");
  run_free(&r);

  /* A retransmit, zstd, one event a batch, window 1: duplicates, produced nothing. */
  snprintf(args, sizeof args, "-a 127.0.0.1:%u -g gw-send --now -z -w 1 -n 1 - < %s", d.port,
           in);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 1);
  expect_in(r.out, "<stdin>:1 duplicate smoke-1 e-1\n<stdin>:2 duplicate cam-1 e-2\n"
                   "<stdin>:5 rejected smoke-2 e-5 bad_severity: ");
  expect_in(r.out, "<stdin>:7 duplicate gas-1 e-7\n");
  expect_in(r.err, "<stdin>:4: column ");
  expect_in(r.err, "0 accepted, 3 duplicate, 0 converged, 1 rejected");
  run_free(&r);

  /* Only duplicates and nothing bad: status 0. */
  snprintf(args, sizeof args, "-a 127.0.0.1:%u %s", d.port, good);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 0);
  snprintf(want, sizeof want, "%s:1 duplicate cam-1 e-2\n", good);
  IT_CHECK_STR(r.out, want);
  run_free(&r);

  /* --check reads and connects to nothing. */
  snprintf(args, sizeof args, "--check -a 127.0.0.1:%u %s", itest_closed_port(), in);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 1);
  IT_CHECK_STR(r.out, "");
  snprintf(want, sizeof want, "%s:6: unknown field \"sevrity\"", in);
  expect_in(r.err, want);
  expect_in(r.err, "intake-send: 4 events read, nothing sent (--check); 2 bad lines\n");
  run_free(&r);
  snprintf(args, sizeof args, "--check %s", good);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 0);
  run_free(&r);

  /* Bad options: 2; nobody listening: 3; an unreadable file: 1 (after the rest is sent). */
  r = send_cmd("--window 0");
  IT_CHECK_INT(r.status, 2);
  expect_in(r.err, "--window: expected a whole number");
  run_free(&r);
  snprintf(args, sizeof args, "-a 127.0.0.1:%u %s", itest_closed_port(), good);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 3);
  expect_in(r.err, "intake-send: connect 127.0.0.1 port ");
  run_free(&r);
  snprintf(args, sizeof args, "-a 127.0.0.1:%u %s/missing.jsonl %s", d.port, itest_dir(), good);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 1);
  expect_in(r.err, "missing.jsonl: No such file or directory");
  expect_in(r.out, "duplicate cam-1 e-2");
  run_free(&r);

  /* Kafka has each event once, with every field as written. */
  itest_records_t fire = itest_consume(itest_bootstrap(), itest_topic("fire"), 1, 20000);
  itest_records_t events = itest_consume(itest_bootstrap(), itest_topic("events"), 2, 20000);
  /* A rejected event is not remembered: both sends of it went to the dead-letter topic. */
  itest_records_t dlq = itest_consume(itest_bootstrap(), itest_topic("dlq"), 2, 20000);
  IT_CHECK_INT(fire.n, 1);
  IT_CHECK_INT(events.n, 2);
  IT_CHECK_INT(dlq.n, 2);
  IT_CHECK_STR(itest_record_header(&dlq.v[0], "reject_reason"), "bad_severity");
  IT_CHECK_STR(itest_record_header(&dlq.v[1], "reject_reason"), "bad_severity");
  IT_CHECK_STR(itest_record_header(&fire.v[0], "gateway_id"), "gw-send");
  Intake__V1__Event *e = itest_record_event(by_key(&fire, "smoke-1"));
  IT_CHECK_STR(e->event_id, "e-1");
  IT_CHECK_INT(e->source_kind, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_SENSOR);
  IT_CHECK_INT(e->seq, 5);
  IT_CHECK_INT(e->severity, 1);
  IT_CHECK_INT(e->time_ms, now - 1000);
  IT_CHECK(e->location && e->location->lon == 120.07 && e->location->lat == 29.31);
  IT_CHECK_STR(e->location->region, "330782");
  IT_CHECK_INT(e->n_attributes, 2);
  IT_CHECK_STR(e->attributes[0]->key, "value");
  IT_CHECK_STR(e->attributes[1]->value, "ppm");
  IT_CHECK(e->payload.len == 3 && !memcmp(e->payload.data, "\x00\x01\xff", 3));
  intake__v1__event__free_unpacked(e, NULL);
  e = itest_record_event(by_key(&events, "cam-1"));
  IT_CHECK_INT(e->source_kind, INTAKE__V1__SOURCE_KIND__SOURCE_KIND_CAMERA);
  IT_CHECK_INT(e->severity, 2);
  IT_CHECK(e->clear);
  IT_CHECK(e->location == NULL);
  intake__v1__event__free_unpacked(e, NULL);
  e = itest_record_event(by_key(&events, "gas-1"));
  IT_CHECKF(e->time_ms >= now && e->time_ms <= itest_now_ms(), "--now: time_ms %lld",
            (long long)e->time_ms);
  intake__v1__event__free_unpacked(e, NULL);

  /* Round trip: intake-tail's lines, as they are, into a second intaked. */
  char tailed[512], cmd[2048];
  snprintf(tailed, sizeof tailed, "%s/tail.jsonl", itest_dir());
  snprintf(cmd, sizeof cmd, "%s -b %s -t %s -t %s --from-beginning -n 3 --timeout 20s > %s",
           ITEST_TAIL, itest_bootstrap(), itest_topic("fire"), itest_topic("events"), tailed);
  IT_CHECK_INT(system(cmd), 0);
  itest_daemon_start(&copy, "copy", CONFIG_COPY);
  snprintf(args, sizeof args, "-a 127.0.0.1:%u -g gw-copy %s", copy.port, tailed);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 0);
  IT_CHECK_INT(count_lines(r.out), 3);
  expect_in(r.err, "3 events: 3 accepted, 0 duplicate");
  run_free(&r);
  itest_records_t copied = itest_consume(itest_bootstrap(), itest_topic("copy"), 3, 20000);
  IT_CHECK_INT(copied.n, 3);
  const char *keys[] = {"smoke-1", "cam-1", "gas-1"};
  for (int i = 0; i < 3; i++) {
    const itest_record_t *a = by_key(i == 0 ? &fire : &events, keys[i]);
    const itest_record_t *b = by_key(&copied, keys[i]);
    IT_CHECKF(a->value_len == b->value_len && !memcmp(a->value, b->value, a->value_len),
              "%s: the value sent back differs from the original", keys[i]);
    IT_CHECK_STR(itest_record_header(b, "dedup_key"), itest_record_header(a, "dedup_key"));
  }
  itest_records_free(&copied);
  itest_records_free(&fire);
  itest_records_free(&events);
  itest_records_free(&dlq);

  /* A camera repeating an alarm on a converged route: the repeats are answered converged. */
  char storm[512];
  snprintf(storm, sizeof storm, "%s/storm.jsonl", itest_dir());
  f = fopen(storm, "w");
  IT_CHECK(f != NULL);
  for (int i = 1; i <= 3; i++)
    fprintf(f, "{\"source_id\":\"cam-9\",\"source_kind\":\"camera\",\"event_id\":\"s-%d\","
               "\"type\":\"storm.alarm\",\"severity\":2}\n", i);
  fclose(f);
  snprintf(args, sizeof args, "-a 127.0.0.1:%u --now %s", copy.port, storm);
  r = send_cmd(args);
  IT_CHECK_INT(r.status, 0);
  snprintf(want, sizeof want, "%s:1 accepted cam-9 s-1\n%s:2 converged cam-9 s-2\n"
           "%s:3 converged cam-9 s-3\n", storm, storm, storm);
  IT_CHECK_STR(r.out, want);
  expect_in(r.err, "3 events: 1 accepted, 0 duplicate, 2 converged");
  run_free(&r);

  typing(&copy);
  over_tls(good);

  IT_CHECK_INT(itest_daemon_stop(&copy, 20000), 0);
  IT_CHECK_INT(itest_daemon_stop(&d, 20000), 0);
  itest_finish();
  return 0;
}
