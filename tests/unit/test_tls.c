/* Unit tests for src/ingest/tls.c: a client session and a server session pumped into each other
 * through memory (handshake, data both ways, refusals, the certificate identity check), the
 * context errors an operator sees, and the gateway client's TLS mode against a server thread
 * on a socket. Certificates come from tests/tls/make-certs.sh, run into a temp dir.
 *
 * Also a measurement, not run by CTest:
 *   test_tls --bench N
 * runs N handshakes through memory (EC P-256 certificates, TLS 1.3, with and without a client
 * certificate) and reports the server side's CPU time per handshake, the heap a server session
 * holds once it has carried data, and the server's cost per MiB of plaintext received in
 * 64 KiB writes. */
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/gwclient.h"
#include "ingest/frame.h"
#include "ingest/tls.h"

static char dir[256];

static const char *pem(const char *name) {
  static char paths[8][512];
  static int next;
  char *p = paths[next++ % 8];
  snprintf(p, sizeof paths[0], "%s/%s", dir, name);
  return p;
}

static int setup(void **state) {
  (void)state;
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/test-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir))
    return -1;
  char cmd[1536];
  snprintf(cmd, sizeof cmd, "'%s/tests/tls/make-certs.sh' '%s' gw-1 gw-2", INTAKE_SOURCE_DIR, dir);
  if (system(cmd) != 0)
    return -1;
  /* A certificate whose CN and DNS names differ, with a wildcard name, for the identity check:
   * CN=cn-only, DNS:san-only, DNS:*.wild. */
  snprintf(cmd, sizeof cmd,
           "cd '%s' && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
           "-out mixed.key 2>/dev/null && "
           "openssl req -new -key mixed.key -subj /CN=cn-only -out mixed.csr 2>/dev/null && "
           "printf 'subjectAltName=DNS:san-only,DNS:*.wild\\nextendedKeyUsage=clientAuth\\n' "
           "> mixed.ext && "
           "openssl x509 -req -in mixed.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
           "-extfile mixed.ext -out mixed.pem 2>/dev/null && "
           "printf 'not a certificate\\n' > garbage.pem",
           dir);
  return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* ---- helpers ----------------------------------------------------------------------------- */

typedef struct {
  const char *client_ca;      /* server: listen.tls.client_ca_file */
  bool require;               /* server: require_client_cert */
  intake_tls_version_t min;   /* server: min_version */
} server_opts_t;

static intake_tls_ctx_t *server_ctx(const server_opts_t *o) {
  intake_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.tls_cert_file = (char *)pem("server.pem");
  cfg.tls_key_file = (char *)pem("server.key");
  cfg.tls_client_ca_file = o && o->client_ca ? (char *)o->client_ca : NULL;
  cfg.tls_require_client_cert = o && o->require;
  cfg.tls_min_version = o ? o->min : INTAKE_TLS_1_2;
  char err[256] = "";
  intake_tls_ctx_t *ctx = intake_tls_server_ctx_create(&cfg, err, sizeof err);
  if (ctx == NULL)
    fail_msg("server context: %s", err);
  return ctx;
}

/* A client context trusting `ca`, presenting <cert>.pem/.key when cert is not NULL. */
static intake_tls_ctx_t *client_ctx(const char *ca, const char *cert) {
  char c[64], k[64], err[256] = "";
  snprintf(c, sizeof c, "%s.pem", cert ? cert : "");
  snprintf(k, sizeof k, "%s.key", cert ? cert : "");
  intake_tls_ctx_t *ctx = intake_tls_client_ctx_create(pem(ca), cert ? pem(c) : NULL,
                                                       cert ? pem(k) : NULL, INTAKE_TLS_1_2, err,
                                                       sizeof err);
  if (ctx == NULL)
    fail_msg("client context: %s", err);
  return ctx;
}

/* Moves what `from` has for its peer into `to`, straight into to's buffer, as much as fits.
 * Returns the bytes moved. */
static size_t move(intake_tls_t *from, intake_tls_t *to) {
  size_t moved = 0;
  for (;;) {
    size_t room;
    void *p = intake_tls_feed_space(to, &room);
    if (room == 0)
      break;
    size_t n = intake_tls_take(from, p, room);
    if (n == 0)
      break;
    intake_tls_feed_commit(to, n);
    moved += n;
  }
  return moved;
}

/* Runs both handshakes until each is done or has failed. Returns 0 when both are done. */
static int handshake(intake_tls_t *c, intake_tls_t *s) {
  for (int i = 0; i < 20; i++) {
    int rc = intake_tls_handshake(c);
    int rs = intake_tls_handshake(s);
    size_t m = move(c, s) + move(s, c);
    if (rc == 0 && rs == 0 && m == 0)
      return 0;
    if ((rc == -EPROTO || rs == -EPROTO) && m == 0)
      return -EPROTO;
  }
  return -ETIMEDOUT;
}

typedef struct {
  intake_tls_ctx_t *sctx, *cctx;
  intake_tls_t *s, *c;
} pair_t;

static void pair_open(pair_t *p, intake_tls_ctx_t *sctx, intake_tls_ctx_t *cctx,
                      const char *server_name) {
  p->sctx = sctx;
  p->cctx = cctx;
  p->s = intake_tls_create(sctx, NULL);
  p->c = intake_tls_create(cctx, server_name);
  assert_non_null(p->s);
  assert_non_null(p->c);
}

static void pair_close(pair_t *p) {
  intake_tls_destroy(p->c);
  intake_tls_destroy(p->s);
  intake_tls_ctx_destroy(p->cctx);
  intake_tls_ctx_destroy(p->sctx);
}

/* Sends len bytes from `from` to `to` through both sessions, the out and in buffers filling
 * up along the way (writes see -ENOBUFS), and checks they arrive intact. */
static void transfer(intake_tls_t *from, intake_tls_t *to, size_t len) {
  uint8_t *src = malloc(len), *dst = malloc(len);
  assert_non_null(src);
  assert_non_null(dst);
  for (size_t i = 0; i < len; i++)
    src[i] = (uint8_t)(i * 7 + i / 251);
  size_t sent = 0, got = 0;
  int full = 0;
  for (int rounds = 0; got < len; rounds++) {
    assert_true(rounds < 10000);
    while (sent < len) {
      ssize_t n = intake_tls_write(from, src + sent, len - sent);
      if (n == -ENOBUFS) {
        full++;
        break;
      }
      assert_true(n > 0);
      sent += (size_t)n;
    }
    move(from, to);
    for (;;) {
      /* An odd, small reader buffer: records are handed out in pieces. */
      ssize_t n = intake_tls_read(to, dst + got, len - got < 3000 ? len - got : 3000);
      if (n == -EAGAIN)
        break;
      assert_true(n > 0);
      got += (size_t)n;
    }
    move(to, from); /* session tickets and the like go back */
  }
  assert_int_equal(got, len);
  assert_memory_equal(src, dst, len);
  if (len > 64 * 1024)
    assert_true(full > 0); /* the bounded out buffer was exercised */
  free(src);
  free(dst);
}

/* ---- sessions ---------------------------------------------------------------------------- */

static void test_handshake_and_data(void **state) {
  (void)state;
  pair_t p;
  pair_open(&p, server_ctx(NULL), client_ctx("ca.pem", NULL), "localhost");
  assert_int_equal(intake_tls_state(p.s), INTAKE_TLS_HANDSHAKE);
  /* Nothing from the server before the client speaks. */
  assert_int_equal(intake_tls_handshake(p.s), -EAGAIN);
  assert_int_equal(intake_tls_out_pending(p.s), 0);
  assert_int_equal(handshake(p.c, p.s), 0);
  assert_int_equal(intake_tls_state(p.s), INTAKE_TLS_OPEN);
  assert_int_equal(intake_tls_state(p.c), INTAKE_TLS_OPEN);
  assert_string_equal(intake_tls_version(p.s), "TLSv1.3");
  assert_string_equal(intake_tls_error(p.s), "");
  assert_false(intake_tls_ctx_verifies_peer(p.sctx));
  /* No client certificate: no identity. */
  assert_false(intake_tls_peer_matches(p.s, "gw-1"));
  char cn[64];
  intake_tls_peer_cn(p.s, cn, sizeof cn);
  assert_string_equal(cn, "");

  transfer(p.c, p.s, 1);
  transfer(p.c, p.s, 300 * 1024);
  transfer(p.s, p.c, 200 * 1024);
  transfer(p.c, p.s, 16384);

  /* close_notify: the reader sees the end, and the session says so. */
  intake_tls_close_notify(p.c);
  move(p.c, p.s);
  uint8_t b[16];
  assert_int_equal(intake_tls_read(p.s, b, sizeof b), 0);
  assert_int_equal(intake_tls_state(p.s), INTAKE_TLS_CLOSED);
  /* Only the client's direction ended: the server still answers, the client still reads. */
  transfer(p.s, p.c, 1000);
  intake_tls_close_notify(p.s);
  move(p.s, p.c);
  assert_int_equal(intake_tls_read(p.c, b, sizeof b), 0);
  assert_int_equal(intake_tls_write(p.s, "x", 1), -EPIPE); /* after our own close_notify */
  pair_close(&p);
}

static void test_in_buffer_is_bounded(void **state) {
  (void)state;
  pair_t p;
  pair_open(&p, server_ctx(NULL), client_ctx("ca.pem", NULL), "127.0.0.1");
  assert_int_equal(handshake(p.c, p.s), 0);
  /* Feeding more than the in buffer holds: it takes what fits and no more. */
  static uint8_t junk[256 * 1024];
  size_t fed = intake_tls_feed(p.s, junk, sizeof junk);
  assert_true(fed > 16 * 1024 && fed < sizeof junk);
  assert_int_equal(intake_tls_in_pending(p.s), fed);
  assert_int_equal(intake_tls_feed(p.s, junk, 1), 0);
  size_t room;
  assert_null(intake_tls_feed_space(p.s, &room));
  assert_int_equal(room, 0);
  /* Zeros are no TLS record: the session fails, and says so. */
  uint8_t b[64];
  assert_int_equal(intake_tls_read(p.s, b, sizeof b), -EPROTO);
  assert_int_equal(intake_tls_state(p.s), INTAKE_TLS_FAILED);
  assert_true(strlen(intake_tls_error(p.s)) > 0);
  assert_int_equal(intake_tls_read(p.s, b, sizeof b), -EPROTO);
  assert_int_equal(intake_tls_write(p.s, "x", 1), -EPROTO);
  pair_close(&p);
}

static void test_plain_tcp_peer_fails(void **state) {
  (void)state;
  intake_tls_ctx_t *sctx = server_ctx(NULL);
  intake_tls_t *s = intake_tls_create(sctx, NULL);
  /* A gateway speaking the plain protocol: a HELLO frame header and some payload. */
  uint8_t hello[] = {0, 0, 0, 12, 1, 0x0a, 4, 'g', 'w', '-', '1', 0x18, 1, 0, 0, 0};
  assert_int_equal(intake_tls_feed(s, hello, sizeof hello), sizeof hello);
  uint8_t b[64];
  assert_int_equal(intake_tls_read(s, b, sizeof b), -EPROTO);
  assert_int_equal(intake_tls_state(s), INTAKE_TLS_FAILED);
  assert_true(strlen(intake_tls_error(s)) > 0);
  intake_tls_destroy(s);
  intake_tls_ctx_destroy(sctx);
}

static void test_wrong_ca_refused(void **state) {
  (void)state;
  pair_t p;
  /* The client trusts another CA: it refuses the server and tells it why (an alert). */
  pair_open(&p, server_ctx(NULL), client_ctx("other-ca.pem", NULL), "localhost");
  assert_int_equal(handshake(p.c, p.s), -EPROTO);
  assert_int_equal(intake_tls_state(p.c), INTAKE_TLS_FAILED);
  assert_non_null(strstr(intake_tls_error(p.c), "certificate verify failed"));
  assert_int_equal(intake_tls_state(p.s), INTAKE_TLS_FAILED);
  assert_non_null(strstr(intake_tls_error(p.s), "unknown ca"));
  pair_close(&p);
}

static void test_server_name_checked(void **state) {
  (void)state;
  const char *good[] = {"localhost", "127.0.0.1", "::1", NULL};
  const char *bad[] = {"intake.example", "127.0.0.2", "local", NULL};
  for (int i = 0; good[i]; i++) {
    pair_t p;
    pair_open(&p, server_ctx(NULL), client_ctx("ca.pem", NULL), good[i]);
    assert_int_equal(handshake(p.c, p.s), 0);
    pair_close(&p);
  }
  for (int i = 0; bad[i]; i++) {
    pair_t p;
    pair_open(&p, server_ctx(NULL), client_ctx("ca.pem", NULL), bad[i]);
    assert_int_equal(handshake(p.c, p.s), -EPROTO);
    assert_non_null(strstr(intake_tls_error(p.c), "mismatch"));
    pair_close(&p);
  }
}

static void test_min_version_1_3(void **state) {
  (void)state;
  server_opts_t o = {.min = INTAKE_TLS_1_3};
  pair_t p;
  pair_open(&p, server_ctx(&o), client_ctx("ca.pem", NULL), "localhost");
  assert_int_equal(handshake(p.c, p.s), 0);
  assert_string_equal(intake_tls_version(p.c), "TLSv1.3");
  assert_non_null(intake_tls_cipher(p.c));
  pair_close(&p);
}

/* Runs a handshake with a client presenting `cert` (NULL: none) to a server with the CA and
 * `require`; then has the client read, which is where TLS 1.3 tells it of a refusal. Returns
 * whether the server accepted; the pair stays open for the caller to inspect. */
static bool try_client_cert(pair_t *p, const char *cert, bool require) {
  server_opts_t o = {.client_ca = pem("ca.pem"), .require = require};
  pair_open(p, server_ctx(&o), client_ctx("ca.pem", cert), "localhost");
  assert_true(intake_tls_ctx_verifies_peer(p->sctx));
  int rc = handshake(p->c, p->s);
  if (rc == 0) {
    assert_int_equal(intake_tls_state(p->s), INTAKE_TLS_OPEN);
    return true;
  }
  assert_int_equal(intake_tls_state(p->s), INTAKE_TLS_FAILED);
  /* TLS 1.3: the client was done before the server judged its certificate; the alert reaches
   * it on its next read. */
  uint8_t b[16];
  assert_int_equal(intake_tls_read(p->c, b, sizeof b), -EPROTO);
  assert_true(strlen(intake_tls_error(p->c)) > 0);
  return false;
}

static void test_client_cert_required(void **state) {
  (void)state;
  pair_t p;
  assert_false(try_client_cert(&p, NULL, true));
  assert_non_null(strstr(intake_tls_error(p.s), "did not return a certificate"));
  assert_non_null(strstr(intake_tls_error(p.c), "certificate required"));
  pair_close(&p);

  assert_false(try_client_cert(&p, "rogue", true)); /* signed by an unrelated CA */
  assert_non_null(strstr(intake_tls_error(p.s), "certificate verify failed"));
  pair_close(&p);

  /* The server's own certificate is signed by the right CA but is for serverAuth only. */
  assert_false(try_client_cert(&p, "server", true));
  assert_non_null(strstr(intake_tls_error(p.s), "unsuitable certificate purpose"));
  pair_close(&p);

  assert_true(try_client_cert(&p, "gw-1", true));
  transfer(p.c, p.s, 1000);
  transfer(p.s, p.c, 1000);
  assert_true(intake_tls_peer_matches(p.s, "gw-1"));
  char cn[64];
  intake_tls_peer_cn(p.s, cn, sizeof cn);
  assert_string_equal(cn, "gw-1");
  pair_close(&p);
}

static void test_client_cert_optional(void **state) {
  (void)state;
  pair_t p;
  assert_true(try_client_cert(&p, NULL, false)); /* none: welcome, but no identity */
  assert_false(intake_tls_peer_matches(p.s, "gw-1"));
  pair_close(&p);
  assert_false(try_client_cert(&p, "rogue", false)); /* one that fails is still refused */
  pair_close(&p);
  assert_true(try_client_cert(&p, "gw-2", false));
  assert_true(intake_tls_peer_matches(p.s, "gw-2"));
  assert_false(intake_tls_peer_matches(p.s, "gw-1"));
  pair_close(&p);
}

static void test_identity_match(void **state) {
  (void)state;
  pair_t p;
  assert_true(try_client_cert(&p, "gw-1", true));
  assert_true(intake_tls_peer_matches(p.s, "gw-1"));
  assert_false(intake_tls_peer_matches(p.s, "gw-2"));
  assert_false(intake_tls_peer_matches(p.s, "GW-1")); /* ids are case-sensitive */
  assert_false(intake_tls_peer_matches(p.s, "gw-"));  /* no prefixes */
  assert_false(intake_tls_peer_matches(p.s, "gw-10"));
  assert_false(intake_tls_peer_matches(p.s, ""));
  /* The client's view of the server: no client-side identity check is offered. */
  pair_close(&p);

  /* CN and DNS names are each enough; a wildcard name is not expanded. */
  assert_true(try_client_cert(&p, "mixed", true));
  assert_true(intake_tls_peer_matches(p.s, "cn-only"));
  assert_true(intake_tls_peer_matches(p.s, "san-only"));
  assert_false(intake_tls_peer_matches(p.s, "gw.wild"));
  assert_false(intake_tls_peer_matches(p.s, "wild"));
  pair_close(&p);
}

/* ---- contexts ---------------------------------------------------------------------------- */

static void expect_server_error(const char *cert, const char *key, const char *ca,
                                const char *want) {
  intake_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.tls_cert_file = (char *)cert;
  cfg.tls_key_file = (char *)key;
  cfg.tls_client_ca_file = (char *)ca;
  cfg.tls_require_client_cert = ca != NULL;
  char err[512] = "";
  intake_tls_ctx_t *ctx = intake_tls_server_ctx_create(&cfg, err, sizeof err);
  if (ctx != NULL || strstr(err, want) == NULL)
    fail_msg("expected an error with \"%s\", got %s \"%s\"", want, ctx ? "a context" : "",
             err);
}

static void test_ctx_errors(void **state) {
  (void)state;
  char want[600];
  const char *missing = pem("missing.key");
  snprintf(want, sizeof want, "listen.tls.key_file: %s: No such file or directory", missing);
  expect_server_error(pem("server.pem"), missing, NULL, want);
  snprintf(want, sizeof want, "listen.tls.cert_file: %s: No such file", pem("nope.pem"));
  expect_server_error(pem("nope.pem"), pem("server.key"), NULL, want);
  expect_server_error(pem("server.pem"), pem("gw-1.key"), NULL,
                      "key does not match listen.tls.cert_file");
  snprintf(want, sizeof want, "listen.tls.cert_file: %s: no PEM certificate", pem("garbage.pem"));
  expect_server_error(pem("garbage.pem"), pem("server.key"), NULL, want);
  expect_server_error(pem("server.pem"), pem("garbage.pem"), NULL,
                      "listen.tls.key_file");
  expect_server_error(pem("server.pem"), pem("server.pem"), NULL, "private key");
  expect_server_error(pem("server.pem"), pem("server.key"), pem("garbage.pem"),
                      "listen.tls.client_ca_file");
  expect_server_error(pem("server.pem"), pem("server.key"), pem("nothing-here.pem"),
                      "No such file");

  char err[256] = "";
  assert_null(intake_tls_client_ctx_create(pem("nope.pem"), NULL, NULL, INTAKE_TLS_1_2, err,
                                           sizeof err));
  assert_non_null(strstr(err, "ca_file"));
  assert_null(intake_tls_client_ctx_create(pem("ca.pem"), pem("gw-1.pem"), pem("gw-2.key"),
                                           INTAKE_TLS_1_2, err, sizeof err));
  assert_non_null(strstr(err, "key does not match"));
  assert_null(intake_tls_client_ctx_create(pem("ca.pem"), pem("gw-1.pem"), NULL,
                                           INTAKE_TLS_1_2, err, sizeof err));
  /* Every context, good or bad, is released: valgrind checks. */
  intake_tls_ctx_destroy(NULL);
  intake_tls_destroy(NULL);
}

static void test_ctx_outlives_its_owner(void **state) {
  (void)state;
  /* A reload drops the old context while its connections still run on it. */
  intake_tls_ctx_t *sctx = server_ctx(NULL), *cctx = client_ctx("ca.pem", NULL);
  intake_tls_t *s = intake_tls_create(sctx, NULL), *c = intake_tls_create(cctx, "localhost");
  intake_tls_ctx_destroy(sctx);
  intake_tls_ctx_destroy(cctx);
  assert_int_equal(handshake(c, s), 0);
  transfer(c, s, 5000);
  intake_tls_destroy(s);
  intake_tls_destroy(c);
}

/* ---- the gateway client over TLS --------------------------------------------------------- */

/* A one-connection server on a thread: TLS handshake on the accepted socket, then it reads
 * one frame and answers it with a WELCOME frame. */
typedef struct {
  int listen_fd;
  uint16_t port;
  server_opts_t opts;
  int accepted;          /* result: 1 when the handshake succeeded */
  char error[160];
  uint8_t frame_type;    /* the frame received */
  size_t frame_len;
} tserver_t;

static void ts_flush(int fd, intake_tls_t *t) {
  uint8_t b[4096];
  size_t n;
  while ((n = intake_tls_take(t, b, sizeof b)) > 0)
    if (send(fd, b, n, MSG_NOSIGNAL) != (ssize_t)n)
      return;
}

static void *tserver_run(void *arg) {
  tserver_t *ts = arg;
  int fd = accept(ts->listen_fd, NULL, NULL);
  if (fd < 0)
    return NULL;
  intake_tls_ctx_t *ctx = server_ctx(&ts->opts);
  intake_tls_t *t = intake_tls_create(ctx, NULL);
  uint8_t plain[1 << 16];
  size_t have = 0;
  for (;;) {
    ssize_t n = intake_tls_read(t, plain + have, sizeof plain - have);
    ts_flush(fd, t);
    if (n > 0) {
      ts->accepted = 1;
      have += (size_t)n;
      intake_frame_t f;
      if (intake_frame_parse(plain, have, 1 << 16, &f) == INTAKE_FRAME_OK) {
        ts->frame_type = f.type;
        ts->frame_len = f.frame_len;
        Intake__V1__Welcome w = INTAKE__V1__WELCOME__INIT;
        w.protocol_version = 1;
        w.max_in_flight = 4;
        uint8_t out[64];
        size_t len = intake__v1__welcome__pack(&w, out + INTAKE_FRAME_HEADER_BYTES);
        intake_frame_header(out, INTAKE_FRAME_WELCOME, (uint32_t)len);
        /* No cmocka assertion on this thread: a failed one would longjmp across threads. */
        if (intake_tls_write(t, out, INTAKE_FRAME_HEADER_BYTES + len) !=
            (ssize_t)(INTAKE_FRAME_HEADER_BYTES + len))
          ts->accepted = -1;
        ts_flush(fd, t);
        break;
      }
      continue;
    }
    if (n == -EAGAIN) {
      if (intake_tls_state(t) == INTAKE_TLS_OPEN)
        ts->accepted = 1;
      size_t room;
      void *p = intake_tls_feed_space(t, &room);
      ssize_t r = room ? recv(fd, p, room, 0) : 0;
      if (r <= 0)
        break;
      intake_tls_feed_commit(t, (size_t)r);
      continue;
    }
    if (n == -EPROTO) {
      ts->accepted = 0;
      snprintf(ts->error, sizeof ts->error, "%s", intake_tls_error(t));
    }
    break;
  }
  /* Wait for the client to go, so it reads everything first. */
  struct pollfd pf = {.fd = fd, .events = POLLIN};
  (void)poll(&pf, 1, 5000);
  close(fd);
  intake_tls_destroy(t);
  intake_tls_ctx_destroy(ctx);
  return NULL;
}

static void tserver_start(tserver_t *ts, pthread_t *th) {
  ts->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(ts->listen_fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(ts->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(ts->listen_fd, 4), 0);
  socklen_t sl = sizeof a;
  assert_int_equal(getsockname(ts->listen_fd, (struct sockaddr *)&a, &sl), 0);
  ts->port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(th, NULL, tserver_run, ts), 0);
}

static void tserver_join(tserver_t *ts, pthread_t th) {
  pthread_join(th, NULL);
  close(ts->listen_fd);
}

static void test_client_hello_over_tls(void **state) {
  (void)state;
  tserver_t ts = {.opts = {.client_ca = pem("ca.pem"), .require = true}};
  pthread_t th;
  tserver_start(&ts, &th);
  char err[160] = "";
  intake_client_tls_t o = {.ca_file = pem("ca.pem"), .cert_file = pem("gw-1.pem"),
                           .key_file = pem("gw-1.key"), .error = err, .error_len = sizeof err};
  intake_client_t *c;
  assert_int_equal(intake_client_connect_tls("127.0.0.1", ts.port, 5000, &o, &c), 0);
  assert_string_equal(intake_client_tls_version(c), "TLSv1.3");
  intake_client_msg_t m;
  assert_int_equal(intake_client_hello(c, "gw-1", "", 5000, &m), 0);
  assert_int_equal(m.welcome->max_in_flight, 4);
  intake_client_msg_free(&m);
  assert_string_equal(intake_client_tls_error(c), "");
  intake_client_close(c);
  tserver_join(&ts, th);
  assert_int_equal(ts.accepted, 1);
  assert_int_equal(ts.frame_type, INTAKE_FRAME_HELLO);
}

static void test_client_refusals(void **state) {
  (void)state;
  /* Our CA does not sign the server's certificate: connect fails and says why. */
  tserver_t ts = {0};
  pthread_t th;
  tserver_start(&ts, &th);
  char err[160] = "";
  intake_client_tls_t o = {.ca_file = pem("other-ca.pem"), .error = err, .error_len = sizeof err};
  intake_client_t *c;
  assert_int_equal(intake_client_connect_tls("127.0.0.1", ts.port, 5000, &o, &c), -EPROTO);
  assert_non_null(strstr(err, "certificate verify failed"));
  tserver_join(&ts, th);
  assert_int_equal(ts.accepted, 0);

  /* The server requires a certificate and we have none: TLS 1.3 lets connect succeed; the
   * first read fails with the server's alert. */
  tserver_t ts2 = {.opts = {.client_ca = pem("ca.pem"), .require = true}};
  tserver_start(&ts2, &th);
  intake_client_tls_t o2 = {.ca_file = pem("ca.pem")};
  assert_int_equal(intake_client_connect_tls("127.0.0.1", ts2.port, 5000, &o2, &c), 0);
  intake_client_msg_t m;
  assert_int_equal(intake_client_hello(c, "gw-1", "", 5000, &m), -ECONNRESET);
  assert_non_null(strstr(intake_client_tls_error(c), "certificate required"));
  intake_client_close(c);
  tserver_join(&ts2, th);
  assert_int_equal(ts2.accepted, 0);
  assert_non_null(strstr(ts2.error, "did not return a certificate"));

  /* A bad file is reported before anything is sent. */
  intake_client_tls_t o3 = {.ca_file = pem("ca.pem"), .cert_file = pem("gw-1.pem"),
                            .key_file = pem("nope.key"), .error = err, .error_len = sizeof err};
  assert_int_equal(intake_client_connect_tls("127.0.0.1", 1, 1000, &o3, &c), -EINVAL);
  assert_non_null(strstr(err, "nope.key"));
}

/* ---- measurement ------------------------------------------------------------------------- */

static double cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Server-side CPU of n handshakes (the client's work is not counted). */
static void bench_handshakes(int n, const char *client_cert) {
  server_opts_t o = {.client_ca = client_cert ? pem("ca.pem") : NULL, .require = client_cert != NULL};
  intake_tls_ctx_t *sctx = server_ctx(&o), *cctx = client_ctx("ca.pem", client_cert);
  double server = 0;
  for (int i = 0; i < n; i++) {
    intake_tls_t *s = intake_tls_create(sctx, NULL), *c = intake_tls_create(cctx, "localhost");
    for (int r = 0; r < 10; r++) {
      int rc = intake_tls_handshake(c);
      double t0 = cpu_ns();
      int rs = intake_tls_handshake(s);
      server += cpu_ns() - t0;
      size_t m = move(c, s) + move(s, c);
      if (rc == 0 && rs == 0 && m == 0)
        break;
      if (rc == -EPROTO || rs == -EPROTO)
        fail_msg("handshake failed: %s / %s", intake_tls_error(c), intake_tls_error(s));
    }
    intake_tls_destroy(s);
    intake_tls_destroy(c);
  }
  printf("handshake (%s): server %.0f us CPU each (%d handshakes)\n",
         client_cert ? "client certificate" : "no client certificate", server / n / 1000, n);
  intake_tls_ctx_destroy(sctx);
  intake_tls_ctx_destroy(cctx);
}

/* Heap held per open server session once it has received and sent records (its buffers are
 * allocated by then): n pairs are run, then the clients are freed and what is left counted. */
static void bench_memory(int n) {
  intake_tls_ctx_t *sctx = server_ctx(NULL), *cctx = client_ctx("ca.pem", NULL);
  intake_tls_t **s = calloc((size_t)n, sizeof *s), **c = calloc((size_t)n, sizeof *c);
  struct mallinfo2 m0 = mallinfo2();
  for (int i = 0; i < n; i++) {
    c[i] = intake_tls_create(cctx, "localhost");
    s[i] = intake_tls_create(sctx, NULL);
    if (handshake(c[i], s[i]) != 0)
      fail_msg("handshake failed");
    transfer(c[i], s[i], 20000);
    transfer(s[i], c[i], 20000);
  }
  for (int i = 0; i < n; i++)
    intake_tls_destroy(c[i]);
  struct mallinfo2 m1 = mallinfo2();
  printf("memory: %.1f KiB of heap per open server session\n",
         (double)(m1.uordblks - m0.uordblks) / n / 1024);
  for (int i = 0; i < n; i++)
    intake_tls_destroy(s[i]);
  free(s);
  free(c);
  intake_tls_ctx_destroy(sctx);
  intake_tls_ctx_destroy(cctx);
}

static void bench_throughput(size_t mib) {
  intake_tls_ctx_t *sctx = server_ctx(NULL), *cctx = client_ctx("ca.pem", NULL);
  intake_tls_t *s = intake_tls_create(sctx, NULL), *c = intake_tls_create(cctx, "localhost");
  if (handshake(c, s) != 0)
    fail_msg("handshake failed");
  static uint8_t chunk[64 * 1024], dst[64 * 1024];
  memset(chunk, 'x', sizeof chunk);
  size_t total = mib << 20, sent = 0, got = 0;
  double server = 0;
  while (got < total) {
    size_t off = 0;
    while (sent < total && off < sizeof chunk) {
      ssize_t w = intake_tls_write(c, chunk + off, sizeof chunk - off);
      if (w == -ENOBUFS)
        break;
      off += (size_t)w;
      sent += (size_t)w;
    }
    double t0 = cpu_ns();
    move(c, s); /* the socket read's copy, as intaked does it */
    for (;;) {
      ssize_t r = intake_tls_read(s, dst, sizeof dst);
      if (r <= 0)
        break;
      got += (size_t)r;
    }
    server += cpu_ns() - t0;
  }
  printf("receive: server %.0f us CPU per MiB (%s %s), %.0f MiB/s on one core\n",
         server / mib / 1000, intake_tls_version(s), intake_tls_cipher(s), mib / (server / 1e9));
  intake_tls_destroy(s);
  intake_tls_destroy(c);
  intake_tls_ctx_destroy(sctx);
  intake_tls_ctx_destroy(cctx);
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--bench") == 0) {
    long n = strtol(argv[2], NULL, 10);
    if (n <= 0 || n > 1000000)
      n = 200;
    if (setup(NULL) != 0)
      return 1;
    bench_handshakes(n, NULL);
    bench_handshakes(n, "gw-1");
    bench_memory(200);
    bench_throughput(256);
    return teardown(NULL) == 0 ? 0 : 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handshake_and_data),
      cmocka_unit_test(test_in_buffer_is_bounded),
      cmocka_unit_test(test_plain_tcp_peer_fails),
      cmocka_unit_test(test_wrong_ca_refused),
      cmocka_unit_test(test_server_name_checked),
      cmocka_unit_test(test_min_version_1_3),
      cmocka_unit_test(test_client_cert_required),
      cmocka_unit_test(test_client_cert_optional),
      cmocka_unit_test(test_identity_match),
      cmocka_unit_test(test_ctx_errors),
      cmocka_unit_test(test_ctx_outlives_its_owner),
      cmocka_unit_test(test_client_hello_over_tls),
      cmocka_unit_test(test_client_refusals),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
