/* Helpers for the integration tests: a real intaked against the real Kafka broker that the
 * CTest fixture `kafka` starts (tests/kafka/kafka.sh).
 *
 * Each test binary calls itest_init() first. It gets a private temp dir and a topic prefix
 * ("it.<test>.<pid>.<random>") so that runs never see each other's records. The checks below
 * survive NDEBUG; a failed check prints where and why, the tail of every intaked log, kills the
 * daemons and exits 1. The temp dir is kept on failure and removed by itest_finish().
 *
 * Paths come from compile definitions set in CMakeLists.txt: ITEST_INTAKED (the daemon binary),
 * ITEST_KAFKA_STATE (kafka.sh's state dir, holding `bootstrap`) and ITEST_SOURCE_DIR. */
#ifndef INTAKE_ITEST_H
#define INTAKE_ITEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "client/gwclient.h"
#include "intake.pb-c.h"

/* --- Checks -------------------------------------------------------------------------------- */

/* Prints "file:line: FAIL: message", the daemons' log tails, kills them and exits 1. */
void itest_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define IT_FAIL(...) itest_fail(__FILE__, __LINE__, __VA_ARGS__)
#define IT_CHECK(cond)                                                                      \
  do {                                                                                      \
    if (!(cond))                                                                            \
      itest_fail(__FILE__, __LINE__, "%s", #cond);                                          \
  } while (0)
#define IT_CHECKF(cond, ...)                                                                \
  do {                                                                                      \
    if (!(cond))                                                                            \
      itest_fail(__FILE__, __LINE__, __VA_ARGS__);                                          \
  } while (0)
#define IT_CHECK_INT(a, b)                                                                  \
  do {                                                                                      \
    long long a_ = (long long)(a), b_ = (long long)(b);                                     \
    if (a_ != b_)                                                                           \
      itest_fail(__FILE__, __LINE__, "%s == %s (%lld != %lld)", #a, #b, a_, b_);            \
  } while (0)
#define IT_CHECK_STR(a, b)                                                                  \
  do {                                                                                      \
    const char *a_ = (a), *b_ = (b);                                                        \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                    \
      itest_fail(__FILE__, __LINE__, "%s == %s (\"%s\" != \"%s\")", #a, #b,                 \
                 a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                   \
  } while (0)

/* Prints "name: message" to stderr: progress notes that show up in CTest's output. */
void itest_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* --- Test lifecycle ------------------------------------------------------------------------ */

/* Sets up the test `name`: temp dir, topic prefix, an alarm that fails the test after
 * `timeout_s` (so it dies with its log tails rather than being killed silently by CTest).
 * With need_broker, reads the broker's address from ITEST_KAFKA_STATE/bootstrap. */
void itest_init(const char *name, bool need_broker, unsigned timeout_s);

/* Stops any daemon still running (failing the test if one exits non-zero), removes the temp
 * dir, prints "name: PASS" and frees everything. */
void itest_finish(void);

/* The broker's bootstrap address ("127.0.0.1:PORT"). */
const char *itest_bootstrap(void);

/* The per-run topic prefix, "it.<name>.<pid>.<random>". */
const char *itest_prefix(void);

/* "<prefix>.<suffix>"; the string lives until itest_finish(). */
const char *itest_topic(const char *suffix);

/* The test's temp dir. */
const char *itest_dir(void);

/* Wall-clock milliseconds since the Unix epoch, and monotonic milliseconds. */
int64_t itest_now_ms(void);
int64_t itest_mono_ms(void);

/* Sleeps `ms` milliseconds. */
void itest_sleep_ms(int ms);

/* A port on 127.0.0.1 that was free a moment ago. */
uint16_t itest_free_port(void);

/* A local TCP port that refuses connections (bound, never listening, held until
 * itest_finish()): an unreachable broker address. */
uint16_t itest_closed_port(void);

/* --- The daemon ---------------------------------------------------------------------------- */

typedef struct {
  char name[32];               /* label used in messages, e.g. "main" */
  pid_t pid;                   /* 0 once reaped */
  uint16_t port;               /* listen.port given to it */
  char config_path[512];
  char log_path[512];          /* its stdout and stderr */
  int exit_code;               /* after stop: exit status, or 128 + signal */
} itest_daemon_t;

/* Writes a config from `yaml_template`, replacing ${PORT} with a free port, ${BROKERS} with
 * the test broker's address and ${P} with the topic prefix; starts `intaked -c FILE` and waits
 * (20 s at most) until its port accepts connections. Fails the test if it dies or never
 * listens. *d must stay valid until the daemon is stopped (itest_finish() stops any left). */
void itest_daemon_start(itest_daemon_t *d, const char *name, const char *yaml_template);

/* Like itest_daemon_start(), but on `port` (0: a free one) and returning as soon as the process
 * is started, without waiting until it listens: for tests whose own clients find that out, e.g.
 * gateways that keep retrying their connects while intaked restarts on the same port. Whether
 * it died during start shows in itest_daemon_wait(d, 0). */
void itest_daemon_launch(itest_daemon_t *d, const char *name, const char *yaml_template,
                         uint16_t port);

/* Sends SIGTERM and waits at most timeout_ms for the exit (then SIGKILL). Returns the exit
 * status (0..255) or 128 + signal number; also stored in d->exit_code. */
int itest_daemon_stop(itest_daemon_t *d, int timeout_ms);

/* Sends `sig` to the daemon without waiting. */
void itest_daemon_signal(itest_daemon_t *d, int sig);

/* Waits at most timeout_ms for the daemon to exit by itself. Returns its exit status as in
 * itest_daemon_stop(), or -1 if it is still running. */
int itest_daemon_wait(itest_daemon_t *d, int timeout_ms);

/* The daemon's whole log so far (malloc'd, NUL-terminated). */
char *itest_daemon_log(const itest_daemon_t *d);

/* Waits at most timeout_ms for a log line containing `needle`; returns that line (malloc'd,
 * without the newline) or NULL. */
char *itest_daemon_wait_log(const itest_daemon_t *d, const char *needle, int timeout_ms);

/* Connects to the daemon and says hello as `gateway_id`; fails the test unless the answer is a
 * Welcome. Stores Welcome.max_in_flight in *max_in_flight when not NULL. */
intake_client_t *itest_connect(const itest_daemon_t *d, const char *gateway_id,
                               uint32_t *max_in_flight);

/* Receives the next frame within timeout_ms and fails the test unless it is a BatchAck;
 * returns it (free with intake__v1__batch_ack__free_unpacked(ack, NULL)). */
Intake__V1__BatchAck *itest_recv_ack(intake_client_t *c, int timeout_ms);

/* Receives the next frame within timeout_ms and fails the test unless it is a ProtocolError
 * with `code`; then checks the daemon closes the connection within timeout_ms. */
void itest_expect_error_and_close(intake_client_t *c, int code, int timeout_ms);

/* --- Admin (the daemon's config needs an `admin:` section, e.g. port 0) --------------------- */

/* A response of a minimal HTTP/1.0 client. */
typedef struct {
  int status;
  char *headers;               /* the header block, names as sent */
  char *body;
  size_t body_len;
} itest_http_t;

/* `address` is "127.0.0.1:PORT". Sends `method path` with a body of `body_len` bytes of 'x' (0:
 * none), reads the whole response (the server closes after HTTP/1.0); fails the test when none
 * comes within 10 s. Free with itest_http_free(). */
itest_http_t itest_http(const char *address, const char *method, const char *path, size_t body_len);
void itest_http_free(itest_http_t *h);

/* The daemon's admin address ("127.0.0.1:PORT") from its "admin listening" log line (waits up
 * to 10 s). */
void itest_admin_address(const itest_daemon_t *d, char *out, size_t len);

/* The value of the sample `series` (exact name and labels, e.g. "intake_x_total" or
 * "intake_x_total{gateway=\"gw-1\"}") in a /metrics text, or -1 when absent. */
double itest_metric_in(const char *text, const char *series);

/* GETs /metrics from `address` and returns itest_metric_in() of it. */
double itest_metric(const char *address, const char *series);

/* --- Log lines (logfmt) -------------------------------------------------------------------- */

/* The last line of `log` containing `needle` (malloc'd), or NULL. */
char *itest_log_last_line(const char *log, const char *needle);

/* Finds `key=` at a field boundary in a logfmt `line` and parses its value as an unsigned
 * integer. Returns true on success. */
bool itest_logfmt_u64(const char *line, const char *key, uint64_t *value);

/* Copies the value of `key=` (unquoted) into out[0..len). Returns true when found. */
bool itest_logfmt_str(const char *line, const char *key, char *out, size_t len);

/* --- Events -------------------------------------------------------------------------------- */

/* A new Event with every string copied (NULL leaves a string empty). Free with
 * itest_event_free(). `kind` is an Intake__V1__SourceKind value. */
Intake__V1__Event *itest_event_new(const char *source_id, int kind, const char *event_id,
                                   uint64_t seq, const char *type, uint32_t severity,
                                   int64_t time_ms);
void itest_event_set_location(Intake__V1__Event *ev, double lon, double lat, const char *region);
void itest_event_add_attr(Intake__V1__Event *ev, const char *key, const char *value);
void itest_event_set_payload(Intake__V1__Event *ev, const void *data, size_t len);
void itest_event_free(Intake__V1__Event *ev);

/* The Event serialized with protobuf-c (exactly what intake_client_send_batch() sends);
 * free data with free(). */
ProtobufCBinaryData itest_event_pack(const Intake__V1__Event *ev);

/* --- Kafka --------------------------------------------------------------------------------- */

typedef struct {
  char *name;
  char *value;                 /* NUL-terminated copy (NULL for a null header) */
  size_t len;
} itest_header_t;

typedef struct {
  char *topic;
  int32_t partition;
  int64_t offset;
  char *key;                   /* NUL-terminated copy, NULL when the record has no key */
  size_t key_len;
  uint8_t *value;
  size_t value_len;
  itest_header_t *headers;
  size_t n_headers;
} itest_record_t;

typedef struct {
  itest_record_t *v;           /* in consumption order: per partition, by offset */
  size_t n;
  size_t cap;
} itest_records_t;

/* Creates topics with `partitions` partitions via the admin API (existing ones are fine) and
 * waits until the broker's metadata lists them. */
void itest_create_topics(const char *bootstrap, const char *const *topics, size_t n,
                         int partitions);

/* Creates one topic with topic-level configs config_kv = {name, value, name, value, ...}
 * (n_kv strings), e.g. {"max.message.bytes", "1024"}. */
void itest_create_topic_config(const char *bootstrap, const char *topic, int partitions,
                               const char *const *config_kv, size_t n_kv);

/* A consumer assigned to every partition of `topics` from the beginning (no group
 * membership), which reads incrementally. */
typedef struct itest_consumer itest_consumer_t;
itest_consumer_t *itest_consumer_new(const char *bootstrap, const char *const *topics, size_t n);
void itest_consumer_free(itest_consumer_t *c);

/* Asks the broker for every partition's current high watermark, then reads until the consumer
 * has everything below it: afterwards records() holds every record that was in Kafka when this
 * was called. Fails the test after timeout_ms. */
void itest_consumer_catch_up(itest_consumer_t *c, int timeout_ms);

/* Records read so far (owned by the consumer). */
const itest_records_t *itest_consumer_records(const itest_consumer_t *c);

/* Reads `topic` from the beginning until at least `expect` records are there (catching up to
 * the high watermark each time, so extra records are seen too) or timeout_ms passes. Returns
 * the records (free with itest_records_free()). */
itest_records_t itest_consume(const char *bootstrap, const char *topic, size_t expect,
                              int timeout_ms);
void itest_records_free(itest_records_t *r);

/* The value of header `name` (the last one of that name), or NULL. */
const char *itest_record_header(const itest_record_t *r, const char *name);

/* Decodes the record value as an Event; fails the test if it is not one. Free with
 * intake__v1__event__free_unpacked(ev, NULL). */
Intake__V1__Event *itest_record_event(const itest_record_t *r);

/* Number of records in `rs` with this key and value. */
size_t itest_records_count(const itest_records_t *rs, const char *key, const void *value,
                           size_t value_len);

#endif
