#include "itest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ingest/frame.h"

#ifndef ITEST_INTAKED
#error "ITEST_INTAKED (path of the intaked binary) must be defined"
#endif
#ifndef ITEST_KAFKA_STATE
#define ITEST_KAFKA_STATE ""
#endif

#define MAX_DAEMONS 8
#define LOG_TAIL_BYTES 6000

static struct {
  char name[64];
  char dir[256];
  char prefix[160];
  char bootstrap[256];
  struct {
    itest_daemon_t *d;                  /* valid while pid > 0 */
    pid_t pid;                          /* 0 once reaped */
    char name[32];
    char log_path[512];
  } daemons[MAX_DAEMONS];               /* every daemon started, for failure reports */
  int n_daemons;
  char **strings;                       /* itest_topic() results */
  size_t n_strings;
  int closed_port_fd;                   /* held by itest_closed_port() */
} g = {.closed_port_fd = -1};

/* --- Failure handling ---------------------------------------------------------------------- */

/* Async-signal-safe: used from the alarm handler as well. */
static void write_str(const char *s) {
  size_t len = strlen(s);
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, s, len);
    if (n <= 0)
      return;
    s += n;
    len -= (size_t)n;
  }
}

/* Async-signal-safe tail of a daemon's log. */
static void print_tail(const char *name, const char *log_path) {
  write_str("---- last lines of intaked log ");
  write_str(name);
  write_str(" (");
  write_str(log_path);
  write_str(") ----\n");
  int fd = open(log_path, O_RDONLY);
  if (fd < 0)
    return;
  off_t size = lseek(fd, 0, SEEK_END);
  off_t from = size > LOG_TAIL_BYTES ? size - LOG_TAIL_BYTES : 0;
  lseek(fd, from, SEEK_SET);
  char buf[1024];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0)
    if (write(STDERR_FILENO, buf, (size_t)n) < 0)
      break;
  close(fd);
  write_str("---- end of log ----\n");
}

__attribute__((noreturn)) static void dump_and_exit(void) {
  for (int i = 0; i < g.n_daemons; i++)
    print_tail(g.daemons[i].name, g.daemons[i].log_path);
  for (int i = 0; i < g.n_daemons; i++)
    if (g.daemons[i].pid > 0) {
      kill(g.daemons[i].pid, SIGKILL);
      waitpid(g.daemons[i].pid, NULL, 0);
    }
  write_str("temp dir kept: ");
  write_str(g.dir);
  write_str("\n");
  _exit(1);
}

void itest_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s:%d: FAIL: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  fflush(stderr);
  fflush(stdout);
  dump_and_exit();
}

static void on_alarm(int sig) {
  (void)sig;
  write_str("FAIL: ");
  write_str(g.name);
  write_str(": test timed out\n");
  dump_and_exit();
}

void itest_log(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", g.name);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
}

/* --- Lifecycle ----------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len_out) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  IT_CHECK(buf != NULL);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len - 1 == 0) {
      cap *= 2;
      buf = realloc(buf, cap);
      IT_CHECK(buf != NULL);
    }
  }
  fclose(f);
  buf[len] = '\0';
  if (len_out)
    *len_out = len;
  return buf;
}

void itest_init(const char *name, bool need_broker, unsigned timeout_s) {
  snprintf(g.name, sizeof g.name, "%s", name);
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm(timeout_s);

  const char *tmp = getenv("TMPDIR");
  snprintf(g.dir, sizeof g.dir, "%s/intake-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
  IT_CHECKF(mkdtemp(g.dir) != NULL, "mkdtemp %s: %s", g.dir, strerror(errno));

  unsigned r = 0;
  int fd = open("/dev/urandom", O_RDONLY);
  if (fd < 0 || read(fd, &r, sizeof r) != (ssize_t)sizeof r)
    r = (unsigned)time(NULL) ^ (unsigned)getpid() << 16;
  if (fd >= 0)
    close(fd);
  snprintf(g.prefix, sizeof g.prefix, "it.%s.%d.%08x", name, (int)getpid(), r);

  if (need_broker) {
    char path[512];
    snprintf(path, sizeof path, "%s/bootstrap", ITEST_KAFKA_STATE);
    char *b = read_file(path, NULL);
    IT_CHECKF(b != NULL, "no broker: cannot read %s (the CTest fixture `kafka` starts it: "
                         "tests/kafka/kafka.sh start %s)", path, ITEST_KAFKA_STATE);
    b[strcspn(b, "\r\n")] = '\0';
    snprintf(g.bootstrap, sizeof g.bootstrap, "%s", b);
    free(b);
  }
  itest_log("dir %s, topics %s.*%s%s", g.dir, g.prefix, need_broker ? ", broker " : "",
            g.bootstrap);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

void itest_finish(void) {
  for (int i = 0; i < g.n_daemons; i++) {
    itest_daemon_t *d = g.daemons[i].d;
    if (g.daemons[i].pid <= 0)
      continue;
    int rc = itest_daemon_stop(d, 30000);
    IT_CHECKF(rc == 0, "intaked %s exited with %d at the end of the test", d->name, rc);
  }
  alarm(0);
  if (getenv("ITEST_KEEP") == NULL)
    nftw(g.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  for (size_t i = 0; i < g.n_strings; i++)
    free(g.strings[i]);
  free(g.strings);
  g.strings = NULL;
  g.n_strings = 0;
  if (g.closed_port_fd >= 0)
    close(g.closed_port_fd);
  /* Let librdkafka's background threads finish so sanitizers see no leaks. */
  rd_kafka_wait_destroyed(5000);
  fprintf(stderr, "%s: PASS\n", g.name);
}

const char *itest_bootstrap(void) {
  return g.bootstrap;
}

const char *itest_prefix(void) {
  return g.prefix;
}

const char *itest_dir(void) {
  return g.dir;
}

const char *itest_topic(const char *suffix) {
  char *s;
  IT_CHECK(asprintf(&s, "%s.%s", g.prefix, suffix) > 0);
  g.strings = realloc(g.strings, (g.n_strings + 1) * sizeof *g.strings);
  IT_CHECK(g.strings != NULL);
  g.strings[g.n_strings++] = s;
  return s;
}

int64_t itest_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t itest_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void itest_sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static int bind_loopback(uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  IT_CHECK(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  IT_CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  socklen_t sl = sizeof a;
  IT_CHECK(getsockname(fd, (struct sockaddr *)&a, &sl) == 0);
  *port = ntohs(a.sin_port);
  return fd;
}

uint16_t itest_free_port(void) {
  uint16_t port;
  close(bind_loopback(&port));
  return port;
}

uint16_t itest_closed_port(void) {
  uint16_t port;
  int fd = bind_loopback(&port);
  if (g.closed_port_fd >= 0)
    close(g.closed_port_fd);
  g.closed_port_fd = fd; /* bound, not listening: connections are refused */
  return port;
}

/* --- The daemon ---------------------------------------------------------------------------- */

/* Appends s[0..n) to the growing string *buf. */
static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
  if (*len + n + 1 > *cap) {
    while (*len + n + 1 > *cap)
      *cap = *cap ? *cap * 2 : 1024;
    *buf = realloc(*buf, *cap);
    IT_CHECK(*buf != NULL);
  }
  memcpy(*buf + *len, s, n);
  *len += n;
  (*buf)[*len] = '\0';
}

static char *expand_template(const char *tpl, uint16_t port) {
  char *out = NULL;
  size_t len = 0, cap = 0;
  char portbuf[8];
  snprintf(portbuf, sizeof portbuf, "%u", (unsigned)port);
  for (const char *p = tpl; *p;) {
    const char *val = NULL;
    size_t skip = 0;
    if (strncmp(p, "${PORT}", 7) == 0)
      val = portbuf, skip = 7;
    else if (strncmp(p, "${BROKERS}", 10) == 0)
      val = g.bootstrap, skip = 10;
    else if (strncmp(p, "${P}", 4) == 0)
      val = g.prefix, skip = 4;
    if (val != NULL) {
      append(&out, &len, &cap, val, strlen(val));
      p += skip;
    } else {
      append(&out, &len, &cap, p, 1);
      p++;
    }
  }
  return out;
}

static void register_daemon(itest_daemon_t *d) {
  IT_CHECKF(g.n_daemons < MAX_DAEMONS, "more than %d daemons", MAX_DAEMONS);
  g.daemons[g.n_daemons].d = d;
  g.daemons[g.n_daemons].pid = d->pid;
  snprintf(g.daemons[g.n_daemons].name, sizeof g.daemons[0].name, "%s", d->name);
  snprintf(g.daemons[g.n_daemons].log_path, sizeof g.daemons[0].log_path, "%s", d->log_path);
  g.n_daemons++;
}

static void unregister_daemon(pid_t pid) {
  for (int i = 0; i < g.n_daemons; i++)
    if (g.daemons[i].pid == pid)
      g.daemons[i].pid = 0;
}

static int status_code(int st) {
  if (WIFEXITED(st))
    return WEXITSTATUS(st);
  if (WIFSIGNALED(st))
    return 128 + WTERMSIG(st);
  return 255;
}

/* Reaps the daemon if it exited. Returns its code, or -1 while it runs. */
static int reap(itest_daemon_t *d) {
  if (d->pid <= 0)
    return d->exit_code;
  int st;
  pid_t r = waitpid(d->pid, &st, WNOHANG);
  if (r == d->pid) {
    unregister_daemon(d->pid);
    d->pid = 0;
    d->exit_code = status_code(st);
    return d->exit_code;
  }
  return -1;
}

/* Writes the config and starts intaked on `port` (0: a free one); does not wait. */
static void daemon_spawn(itest_daemon_t *d, const char *name, const char *yaml_template,
                         uint16_t port) {
  memset(d, 0, sizeof *d);
  snprintf(d->name, sizeof d->name, "%s", name);
  d->port = port ? port : itest_free_port();
  d->exit_code = -1;
  snprintf(d->config_path, sizeof d->config_path, "%s/%s.yaml", g.dir, name);
  snprintf(d->log_path, sizeof d->log_path, "%s/%s.log", g.dir, name);

  char *yaml = expand_template(yaml_template, d->port);
  FILE *f = fopen(d->config_path, "w");
  IT_CHECKF(f != NULL, "%s: %s", d->config_path, strerror(errno));
  fputs(yaml, f);
  /* Tests run in parallel (ctest -j): a daemon whose test does not configure the admin
   * listener gets a free port instead of the fixed default 9400, which two would share. */
  if (strncmp(yaml, "admin:", 6) != 0 && !strstr(yaml, "\nadmin:"))
    fputs("admin: {port: 0}\n", f);
  fclose(f);
  free(yaml);

  int logfd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  IT_CHECKF(logfd >= 0, "%s: %s", d->log_path, strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  IT_CHECK(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
    dup2(logfd, STDOUT_FILENO);
    dup2(logfd, STDERR_FILENO);
    signal(SIGPIPE, SIG_DFL);
    execl(ITEST_INTAKED, "intaked", "-c", d->config_path, (char *)NULL);
    fprintf(stderr, "exec %s: %s\n", ITEST_INTAKED, strerror(errno));
    _exit(127);
  }
  close(logfd);
  d->pid = pid;
  register_daemon(d);
}

void itest_daemon_launch(itest_daemon_t *d, const char *name, const char *yaml_template,
                         uint16_t port) {
  daemon_spawn(d, name, yaml_template, port);
  itest_log("intaked %s pid %d started for 127.0.0.1:%u (not waiting until it listens)", d->name,
            (int)d->pid, (unsigned)d->port);
}

void itest_daemon_start(itest_daemon_t *d, const char *name, const char *yaml_template) {
  daemon_spawn(d, name, yaml_template, 0);

  /* Ready when the port accepts a connection. */
  int64_t deadline = itest_mono_ms() + 20000;
  for (;;) {
    intake_client_t *c;
    if (intake_client_connect("127.0.0.1", d->port, 500, &c) == 0) {
      intake_client_close(c);
      break;
    }
    int rc = reap(d);
    IT_CHECKF(rc < 0, "intaked %s exited with %d during start", d->name, rc);
    IT_CHECKF(itest_mono_ms() < deadline, "intaked %s not listening on port %u after 20 s",
              d->name, (unsigned)d->port);
    itest_sleep_ms(50);
  }
  itest_log("intaked %s pid %d listening on 127.0.0.1:%u", d->name, (int)d->pid,
            (unsigned)d->port);
}

void itest_daemon_signal(itest_daemon_t *d, int sig) {
  IT_CHECKF(d->pid > 0, "intaked %s is not running", d->name);
  kill(d->pid, sig);
}

int itest_daemon_wait(itest_daemon_t *d, int timeout_ms) {
  int64_t deadline = itest_mono_ms() + timeout_ms;
  for (;;) {
    int rc = reap(d);
    if (rc >= 0 || itest_mono_ms() >= deadline)
      return rc;
    itest_sleep_ms(20);
  }
}

int itest_daemon_stop(itest_daemon_t *d, int timeout_ms) {
  if (d->pid > 0)
    kill(d->pid, SIGTERM);
  int rc = itest_daemon_wait(d, timeout_ms);
  if (rc < 0) {
    itest_log("intaked %s still running %d ms after SIGTERM: SIGKILL", d->name, timeout_ms);
    kill(d->pid, SIGKILL);
    rc = itest_daemon_wait(d, 10000);
  }
  return rc;
}

char *itest_daemon_log(const itest_daemon_t *d) {
  char *s = read_file(d->log_path, NULL);
  IT_CHECKF(s != NULL, "cannot read %s", d->log_path);
  return s;
}

char *itest_daemon_wait_log(const itest_daemon_t *d, const char *needle, int timeout_ms) {
  int64_t deadline = itest_mono_ms() + timeout_ms;
  for (;;) {
    char *log = itest_daemon_log(d);
    char *line = itest_log_last_line(log, needle);
    free(log);
    if (line != NULL || itest_mono_ms() >= deadline)
      return line;
    itest_sleep_ms(50);
  }
}

intake_client_t *itest_connect(const itest_daemon_t *d, const char *gateway_id,
                               uint32_t *max_in_flight) {
  intake_client_t *c;
  int err = intake_client_connect("127.0.0.1", d->port, 5000, &c);
  IT_CHECKF(err == 0, "connect to intaked %s: %s", d->name, strerror(-err));
  intake_client_msg_t m;
  err = intake_client_hello(c, gateway_id, "", 10000, &m);
  IT_CHECKF(err == 0, "hello to intaked %s: %s (got frame type %u, error code %d)", d->name,
            strerror(-err), m.type, m.error ? (int)m.error->code : -1);
  IT_CHECK(m.welcome->protocol_version == 1);
  IT_CHECK(m.welcome->max_in_flight >= 1);
  if (max_in_flight)
    *max_in_flight = m.welcome->max_in_flight;
  intake_client_msg_free(&m);
  return c;
}

Intake__V1__BatchAck *itest_recv_ack(intake_client_t *c, int timeout_ms) {
  intake_client_msg_t m;
  int err = intake_client_recv(c, timeout_ms, &m);
  IT_CHECKF(err == 0, "waiting %d ms for an ack: %s", timeout_ms, strerror(-err));
  IT_CHECKF(m.ack != NULL, "expected an ack, got frame type %u (error code %d: %s)", m.type,
            m.error ? (int)m.error->code : -1, m.error ? m.error->detail : "");
  Intake__V1__BatchAck *ack = m.ack;
  m.ack = NULL;
  intake_client_msg_free(&m);
  return ack;
}

void itest_expect_error_and_close(intake_client_t *c, int code, int timeout_ms) {
  intake_client_msg_t m;
  int err = intake_client_recv(c, timeout_ms, &m);
  IT_CHECKF(err == 0, "waiting for ProtocolError %d: %s", code, strerror(-err));
  IT_CHECKF(m.error != NULL, "expected ProtocolError %d, got frame type %u", code, m.type);
  IT_CHECKF((int)m.error->code == code, "expected ProtocolError code %d, got %d (\"%s\")", code,
            (int)m.error->code, m.error->detail);
  intake_client_msg_free(&m);
  err = intake_client_recv(c, timeout_ms, &m);
  IT_CHECKF(err == -ECONNRESET, "connection not closed after ProtocolError %d: %s", code,
            err == 0 ? "got another frame" : strerror(-err));
}

/* --- Log lines ----------------------------------------------------------------------------- */

char *itest_log_last_line(const char *log, const char *needle) {
  const char *found = NULL;
  for (const char *p = log; (p = strstr(p, needle)) != NULL; p++)
    found = p;
  if (found == NULL)
    return NULL;
  const char *start = found;
  while (start > log && start[-1] != '\n')
    start--;
  size_t len = strcspn(start, "\n");
  return strndup(start, len);
}

static const char *logfmt_find(const char *line, const char *key) {
  size_t klen = strlen(key);
  for (const char *p = line; (p = strstr(p, key)) != NULL; p++)
    if ((p == line || p[-1] == ' ') && p[klen] == '=')
      return p + klen + 1;
  return NULL;
}

bool itest_logfmt_u64(const char *line, const char *key, uint64_t *value) {
  const char *v = logfmt_find(line, key);
  if (v == NULL)
    return false;
  if (*v == '"')
    v++;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno != 0 || end == v || (*end != '\0' && *end != ' ' && *end != '"'))
    return false;
  *value = x;
  return true;
}

bool itest_logfmt_str(const char *line, const char *key, char *out, size_t len) {
  const char *v = logfmt_find(line, key);
  if (v == NULL || len == 0)
    return false;
  size_t n = *v == '"' ? strcspn(v + 1, "\"") : strcspn(v, " ");
  if (*v == '"')
    v++;
  if (n >= len)
    n = len - 1;
  memcpy(out, v, n);
  out[n] = '\0';
  return true;
}

/* --- Events -------------------------------------------------------------------------------- */

static char *dup_or_empty(const char *s) {
  if (s == NULL || *s == '\0')
    return (char *)protobuf_c_empty_string;
  char *d = strdup(s);
  IT_CHECK(d != NULL);
  return d;
}

static void free_str(char *s) {
  if (s != NULL && s != protobuf_c_empty_string)
    free(s);
}

Intake__V1__Event *itest_event_new(const char *source_id, int kind, const char *event_id,
                                   uint64_t seq, const char *type, uint32_t severity,
                                   int64_t time_ms) {
  Intake__V1__Event *ev = malloc(sizeof *ev);
  IT_CHECK(ev != NULL);
  intake__v1__event__init(ev);
  ev->source_id = dup_or_empty(source_id);
  ev->source_kind = (Intake__V1__SourceKind)kind;
  ev->event_id = dup_or_empty(event_id);
  ev->seq = seq;
  ev->type = dup_or_empty(type);
  ev->severity = severity;
  ev->time_ms = time_ms;
  return ev;
}

void itest_event_set_location(Intake__V1__Event *ev, double lon, double lat, const char *region) {
  if (ev->location == NULL) {
    ev->location = malloc(sizeof *ev->location);
    IT_CHECK(ev->location != NULL);
    intake__v1__location__init(ev->location);
  }
  ev->location->lon = lon;
  ev->location->lat = lat;
  free_str(ev->location->region);
  ev->location->region = dup_or_empty(region);
}

void itest_event_add_attr(Intake__V1__Event *ev, const char *key, const char *value) {
  Intake__V1__Event__AttributesEntry *e = malloc(sizeof *e);
  IT_CHECK(e != NULL);
  intake__v1__event__attributes_entry__init(e);
  e->key = dup_or_empty(key);
  e->value = dup_or_empty(value);
  ev->attributes = realloc(ev->attributes, (ev->n_attributes + 1) * sizeof *ev->attributes);
  IT_CHECK(ev->attributes != NULL);
  ev->attributes[ev->n_attributes++] = e;
}

void itest_event_set_payload(Intake__V1__Event *ev, const void *data, size_t len) {
  free(ev->payload.data);
  ev->payload.data = malloc(len ? len : 1);
  IT_CHECK(ev->payload.data != NULL);
  memcpy(ev->payload.data, data, len);
  ev->payload.len = len;
}

void itest_event_free(Intake__V1__Event *ev) {
  if (ev == NULL)
    return;
  free_str(ev->source_id);
  free_str(ev->event_id);
  free_str(ev->type);
  if (ev->location) {
    free_str(ev->location->region);
    free(ev->location);
  }
  for (size_t i = 0; i < ev->n_attributes; i++) {
    free_str(ev->attributes[i]->key);
    free_str(ev->attributes[i]->value);
    free(ev->attributes[i]);
  }
  free(ev->attributes);
  free(ev->payload.data);
  free(ev);
}

ProtobufCBinaryData itest_event_pack(const Intake__V1__Event *ev) {
  ProtobufCBinaryData b;
  b.len = intake__v1__event__get_packed_size(ev);
  b.data = malloc(b.len ? b.len : 1);
  IT_CHECK(b.data != NULL);
  intake__v1__event__pack(ev, b.data);
  return b;
}

/* --- Kafka --------------------------------------------------------------------------------- */

static rd_kafka_t *new_handle(rd_kafka_type_t type, const char *bootstrap) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  IT_CHECK(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err) ==
           RD_KAFKA_CONF_OK);
  if (type == RD_KAFKA_CONSUMER) {
    char group[256];
    snprintf(group, sizeof group, "%s.reader.%ld", g.prefix, (long)itest_mono_ms());
    IT_CHECK(rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) == RD_KAFKA_CONF_OK);
    IT_CHECK(rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) ==
             RD_KAFKA_CONF_OK);
    IT_CHECK(rd_kafka_conf_set(conf, "enable.partition.eof", "false", err, sizeof err) ==
             RD_KAFKA_CONF_OK);
    IT_CHECK(rd_kafka_conf_set(conf, "fetch.wait.max.ms", "50", err, sizeof err) ==
             RD_KAFKA_CONF_OK);
  }
  rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
  IT_CHECKF(rk != NULL, "rd_kafka_new: %s", err);
  return rk;
}

/* Partition count of `topic`, waiting up to timeout_ms for it to appear. 0 if it does not. */
static int partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms) {
  int64_t deadline = itest_mono_ms() + timeout_ms;
  rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
  IT_CHECK(t != NULL);
  int n = 0;
  for (;;) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, t, &md, 5000);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && md->topics[0].err == 0)
      n = md->topics[0].partition_cnt;
    if (md != NULL)
      rd_kafka_metadata_destroy(md);
    if (n > 0 || itest_mono_ms() >= deadline)
      break;
    itest_sleep_ms(100);
  }
  rd_kafka_topic_destroy(t);
  return n;
}

static void create_topics(const char *bootstrap, const char *const *topics, size_t n,
                          int partitions, const char *const *config_kv, size_t n_kv) {
  rd_kafka_t *rk = new_handle(RD_KAFKA_PRODUCER, bootstrap);
  rd_kafka_NewTopic_t **nt = calloc(n, sizeof *nt);
  IT_CHECK(nt != NULL);
  char err[512];
  for (size_t i = 0; i < n; i++) {
    nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, 1, err, sizeof err);
    IT_CHECKF(nt[i] != NULL, "NewTopic %s: %s", topics[i], err);
    for (size_t k = 0; k + 1 < n_kv; k += 2)
      IT_CHECK(rd_kafka_NewTopic_set_config(nt[i], config_kv[k], config_kv[k + 1]) == 0);
  }
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_operation_timeout(opt, 10000, err, sizeof err);
  rd_kafka_CreateTopics(rk, nt, n, opt, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
  IT_CHECKF(ev != NULL, "CreateTopics: no answer in 20 s");
  IT_CHECKF(rd_kafka_event_error(ev) == 0, "CreateTopics: %s", rd_kafka_event_error_string(ev));
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  IT_CHECK(res != NULL);
  size_t cnt;
  const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
  for (size_t i = 0; i < cnt; i++) {
    rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
    IT_CHECKF(e == 0 || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS, "create topic %s: %s",
              rd_kafka_topic_result_name(tr[i]), rd_kafka_topic_result_error_string(tr[i]));
  }
  rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(opt);
  rd_kafka_queue_destroy(q);
  for (size_t i = 0; i < n; i++) {
    rd_kafka_NewTopic_destroy(nt[i]);
    IT_CHECKF(partition_count(rk, topics[i], 15000) > 0, "topic %s not in metadata", topics[i]);
  }
  free(nt);
  rd_kafka_destroy(rk);
}

void itest_create_topics(const char *bootstrap, const char *const *topics, size_t n,
                         int partitions) {
  create_topics(bootstrap, topics, n, partitions, NULL, 0);
}

void itest_create_topic_config(const char *bootstrap, const char *topic, int partitions,
                               const char *const *config_kv, size_t n_kv) {
  create_topics(bootstrap, &topic, 1, partitions, config_kv, n_kv);
}

typedef struct {
  char *topic;
  int32_t partition;
  int64_t next;                 /* offset after the last record read */
} part_t;

struct itest_consumer {
  rd_kafka_t *rk;
  part_t *parts;
  size_t n_parts;
  itest_records_t records;
};

itest_consumer_t *itest_consumer_new(const char *bootstrap, const char *const *topics, size_t n) {
  itest_consumer_t *c = calloc(1, sizeof *c);
  IT_CHECK(c != NULL);
  c->rk = new_handle(RD_KAFKA_CONSUMER, bootstrap);
  rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(16);
  for (size_t i = 0; i < n; i++) {
    int np = partition_count(c->rk, topics[i], 15000);
    IT_CHECKF(np > 0, "topic %s does not exist", topics[i]);
    for (int p = 0; p < np; p++) {
      rd_kafka_topic_partition_list_add(tl, topics[i], p)->offset = RD_KAFKA_OFFSET_BEGINNING;
      c->parts = realloc(c->parts, (c->n_parts + 1) * sizeof *c->parts);
      IT_CHECK(c->parts != NULL);
      c->parts[c->n_parts++] = (part_t){strdup(topics[i]), p, 0};
    }
  }
  rd_kafka_resp_err_t err = rd_kafka_assign(c->rk, tl);
  IT_CHECKF(err == 0, "assign: %s", rd_kafka_err2str(err));
  rd_kafka_topic_partition_list_destroy(tl);
  return c;
}

static void record_add(itest_records_t *rs, const rd_kafka_message_t *m) {
  if (rs->n == rs->cap) {
    rs->cap = rs->cap ? rs->cap * 2 : 64;
    rs->v = realloc(rs->v, rs->cap * sizeof *rs->v);
    IT_CHECK(rs->v != NULL);
  }
  itest_record_t *r = &rs->v[rs->n++];
  memset(r, 0, sizeof *r);
  r->topic = strdup(rd_kafka_topic_name(m->rkt));
  r->partition = m->partition;
  r->offset = m->offset;
  if (m->key != NULL) {
    r->key = strndup(m->key, m->key_len);
    r->key_len = m->key_len;
  }
  r->value = malloc(m->len ? m->len : 1);
  IT_CHECK(r->value != NULL);
  if (m->len)
    memcpy(r->value, m->payload, m->len);
  r->value_len = m->len;
  rd_kafka_headers_t *hdrs;
  if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    size_t cnt = rd_kafka_header_cnt(hdrs);
    r->headers = calloc(cnt ? cnt : 1, sizeof *r->headers);
    IT_CHECK(r->headers != NULL);
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++) {
      itest_header_t *h = &r->headers[r->n_headers++];
      h->name = strdup(name);
      h->value = val ? strndup(val, size) : NULL;
      h->len = size;
    }
  }
}

static part_t *find_part(itest_consumer_t *c, const char *topic, int32_t partition) {
  for (size_t i = 0; i < c->n_parts; i++)
    if (c->parts[i].partition == partition && strcmp(c->parts[i].topic, topic) == 0)
      return &c->parts[i];
  return NULL;
}

void itest_consumer_catch_up(itest_consumer_t *c, int timeout_ms) {
  int64_t deadline = itest_mono_ms() + timeout_ms;
  int64_t *high = calloc(c->n_parts ? c->n_parts : 1, sizeof *high);
  IT_CHECK(high != NULL);
  for (size_t i = 0; i < c->n_parts; i++) {
    int64_t lo, hi;
    rd_kafka_resp_err_t err;
    /* Right after a topic is created its partitions may not have a leader yet (the broker
     * answers NOT_LEADER / LEADER_NOT_AVAILABLE for a moment): ask again until the deadline. */
    while ((err = rd_kafka_query_watermark_offsets(c->rk, c->parts[i].topic,
                                                   c->parts[i].partition, &lo, &hi, 10000)) &&
           (err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
            err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
            err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) &&
           itest_mono_ms() < deadline)
      itest_sleep_ms(100);
    IT_CHECKF(err == 0, "watermarks of %s [%d]: %s", c->parts[i].topic,
              (int)c->parts[i].partition, rd_kafka_err2str(err));
    high[i] = hi;
    if (c->parts[i].next < lo) /* records before the log start are gone (or none yet) */
      c->parts[i].next = lo;
  }
  for (;;) {
    bool done = true;
    for (size_t i = 0; i < c->n_parts; i++)
      if (c->parts[i].next < high[i])
        done = false;
    if (done)
      break;
    IT_CHECKF(itest_mono_ms() < deadline, "consumer did not catch up in %d ms", timeout_ms);
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 100);
    if (m == NULL)
      continue;
    if (m->err == 0) {
      part_t *p = find_part(c, rd_kafka_topic_name(m->rkt), m->partition);
      IT_CHECK(p != NULL);
      /* A fetch restarted after an error may hand out records again: keep the first copy. */
      if (m->offset >= p->next) {
        record_add(&c->records, m);
        p->next = m->offset + 1;
      }
    } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      itest_log("consumer: %s", rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
  }
  free(high);
}

const itest_records_t *itest_consumer_records(const itest_consumer_t *c) {
  return &c->records;
}

void itest_consumer_free(itest_consumer_t *c) {
  if (c == NULL)
    return;
  rd_kafka_consumer_close(c->rk);
  rd_kafka_destroy(c->rk);
  for (size_t i = 0; i < c->n_parts; i++)
    free(c->parts[i].topic);
  free(c->parts);
  itest_records_free(&c->records);
  free(c);
}

itest_records_t itest_consume(const char *bootstrap, const char *topic, size_t expect,
                              int timeout_ms) {
  int64_t deadline = itest_mono_ms() + timeout_ms;
  itest_consumer_t *c = itest_consumer_new(bootstrap, &topic, 1);
  for (;;) {
    int left = (int)(deadline - itest_mono_ms());
    itest_consumer_catch_up(c, left > 1000 ? left : 1000);
    if (c->records.n >= expect || itest_mono_ms() >= deadline)
      break;
    itest_sleep_ms(100);
  }
  itest_records_t out = c->records;
  c->records = (itest_records_t){0};
  itest_consumer_free(c);
  return out;
}

void itest_records_free(itest_records_t *rs) {
  for (size_t i = 0; i < rs->n; i++) {
    itest_record_t *r = &rs->v[i];
    free(r->topic);
    free(r->key);
    free(r->value);
    for (size_t j = 0; j < r->n_headers; j++) {
      free(r->headers[j].name);
      free(r->headers[j].value);
    }
    free(r->headers);
  }
  free(rs->v);
  *rs = (itest_records_t){0};
}

const char *itest_record_header(const itest_record_t *r, const char *name) {
  const char *v = NULL;
  for (size_t i = 0; i < r->n_headers; i++)
    if (strcmp(r->headers[i].name, name) == 0)
      v = r->headers[i].value;
  return v;
}

Intake__V1__Event *itest_record_event(const itest_record_t *r) {
  Intake__V1__Event *ev = intake__v1__event__unpack(NULL, r->value_len, r->value);
  IT_CHECKF(ev != NULL, "record %s [%d] @%" PRId64 " is not an intake.v1.Event", r->topic,
            (int)r->partition, r->offset);
  return ev;
}

size_t itest_records_count(const itest_records_t *rs, const char *key, const void *value,
                           size_t value_len) {
  size_t n = 0;
  for (size_t i = 0; i < rs->n; i++) {
    const itest_record_t *r = &rs->v[i];
    if (key != NULL && (r->key == NULL || strcmp(r->key, key) != 0))
      continue;
    if (r->value_len == value_len && memcmp(r->value, value, value_len) == 0)
      n++;
  }
  return n;
}

/* --- Admin --------------------------------------------------------------------------------- */

void itest_http_free(itest_http_t *h) {
  free(h->headers);
  free(h->body);
}

itest_http_t itest_http(const char *address, const char *method, const char *path, size_t body_len) {
  char host[64];
  snprintf(host, sizeof host, "%s", address);
  char *colon = strrchr(host, ':');
  IT_CHECK(colon != NULL);
  *colon = '\0';
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
  IT_CHECK(inet_pton(AF_INET, host, &sa.sin_addr) == 1);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  IT_CHECK(fd >= 0);
  IT_CHECKF(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s", address);
  char req[512];
  int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Length: %zu\r\n\r\n",
                   method, path, address, body_len);
  IT_CHECK(write(fd, req, (size_t)n) == n);
  char *body = malloc(body_len + 1);
  memset(body, 'x', body_len);
  /* A refused body may be cut short by the server closing: that is fine. */
  if (body_len)
    (void)!send(fd, body, body_len, MSG_NOSIGNAL);
  free(body);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  int64_t deadline = itest_mono_ms() + 10000;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    IT_CHECKF(itest_mono_ms() < deadline, "%s %s: no complete response in 10 s", method, path);
    if (poll(&p, 1, 1000) <= 0)
      continue;
    if (len + 4096 > cap)
      buf = realloc(buf, cap *= 2);
    ssize_t r = read(fd, buf + len, cap - len - 1);
    if (r <= 0)
      break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = '\0';
  itest_http_t h = {0};
  IT_CHECKF(sscanf(buf, "HTTP/1.%*d %d", &h.status) == 1, "bad response: %.200s", buf);
  char *sep = strstr(buf, "\r\n\r\n");
  IT_CHECK(sep != NULL);
  h.headers = strndup(buf, (size_t)(sep - buf) + 2);
  h.body_len = len - (size_t)(sep + 4 - buf);
  h.body = malloc(h.body_len + 1);
  memcpy(h.body, sep + 4, h.body_len);
  h.body[h.body_len] = '\0';
  free(buf);
  return h;
}

/* The admin address ("127.0.0.1:PORT") from the "admin listening" log line. */
void itest_admin_address(const itest_daemon_t *d, char *out, size_t len) {
  char *line = itest_daemon_wait_log(d, "admin listening", 10000);
  IT_CHECKF(line != NULL, "intaked %s: no \"admin listening\" line", d->name);
  IT_CHECK(itest_logfmt_str(line, "address", out, len));
  free(line);
}

double itest_metric_in(const char *text, const char *series) {
  size_t sl = strlen(series);
  for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
    if (!strncmp(line, series, sl) && line[sl] == ' ')
      return atof(line + sl + 1);
  return -1;
}

double itest_metric(const char *address, const char *series) {
  itest_http_t h = itest_http(address, "GET", "/metrics", 0);
  IT_CHECKF(h.status == 200, "GET %s/metrics: status %d", address, h.status);
  double v = itest_metric_in(h.body, series);
  itest_http_free(&h);
  return v;
}
