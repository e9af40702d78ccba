#include "client/gwclient.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "ingest/frame.h"
#include "ingest/tls.h"

/* A blocked send gives up after this long: a test must fail, not hang, when the peer stops
 * reading. */
#define SEND_TIMEOUT_S 10

#define ZSTD_LEVEL 3

/* Plaintext staged for one TLS record: a frame header and the start of its payload go out
 * as one record instead of a 5-byte record and the rest. */
#define TLS_STAGE_BYTES 16384

struct intake_client {
  int fd;             /* connected, blocking socket */
  uint8_t *rbuf;      /* received bytes (decrypted with TLS) not yet returned as frames:
                         rbuf[0..rlen) */
  size_t rlen;
  size_t rcap;
  intake_tls_ctx_t *tls_ctx;  /* NULL: plain TCP */
  intake_tls_t *tls;
  uint8_t *stage;             /* TLS_STAGE_BYTES, TLS only */
  char tls_error[160];        /* why TLS failed, "" otherwise */
};

static int tls_flush(intake_client_t *c);
static int tls_fill(intake_client_t *c, int64_t deadline);
static void tls_failed(intake_client_t *c);

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until `deadline` (-1 = none) as a poll() timeout. */
static int remaining(int64_t deadline) {
  if (deadline < 0)
    return -1;
  int64_t left = deadline - now_ms();
  return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Waits until `fd` has something to read. Returns 0, -ETIMEDOUT at `deadline`, or -errno. */
static int wait_readable(int fd, int64_t deadline) {
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, remaining(deadline));
    if (r > 0)
      return 0;
    if (r == 0)
      return -ETIMEDOUT;
    if (errno != EINTR)
      return -errno;
  }
}

/* Non-blocking connect to one address, then back to blocking. Returns fd or -errno. */
static int connect_one(const struct addrinfo *ai, int64_t deadline) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    return -errno;
  int flags = fcntl(fd, F_GETFL);
  int err = 0;
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    err = -errno;
    goto fail;
  }
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
    if (errno != EINPROGRESS) {
      err = -errno;
      goto fail;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r;
    do
      r = poll(&p, 1, remaining(deadline));
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      err = -errno;
      goto fail;
    }
    if (r == 0) {
      err = -ETIMEDOUT;
      goto fail;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
      err = -errno;
      goto fail;
    }
    if (soerr != 0) {
      err = -soerr;
      goto fail;
    }
  }
  if (fcntl(fd, F_SETFL, flags) < 0) {
    err = -errno;
    goto fail;
  }
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {.tv_sec = SEND_TIMEOUT_S};
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;

fail:
  close(fd);
  return err;
}

int intake_client_connect(const char *host, uint16_t port, int timeout_ms, intake_client_t **out) {
  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  char service[8];
  snprintf(service, sizeof service, "%u", (unsigned)port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  if (getaddrinfo(host, service, &hints, &res) != 0 || res == NULL)
    return -ENOENT;
  int fd = -ENOENT;
  for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    fd = connect_one(ai, deadline);
    if (fd >= 0 || fd == -ETIMEDOUT)
      break;
  }
  freeaddrinfo(res);
  if (fd < 0)
    return fd;

  intake_client_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    close(fd);
    return -ENOMEM;
  }
  c->fd = fd;
  *out = c;
  return 0;
}

void intake_client_close(intake_client_t *c) {
  if (c == NULL)
    return;
  if (c->tls && intake_tls_state(c->tls) == INTAKE_TLS_OPEN) {
    /* An orderly end, so intaked tells a closed session from a cut one; best effort, without
     * waiting on a full send buffer. */
    uint8_t buf[256];
    intake_tls_close_notify(c->tls);
    size_t n = intake_tls_take(c->tls, buf, sizeof buf);
    if (n > 0)
      (void)send(c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  intake_tls_destroy(c->tls);
  intake_tls_ctx_destroy(c->tls_ctx);
  free(c->stage);
  close(c->fd);
  free(c->rbuf);
  free(c);
}

int intake_client_fd(const intake_client_t *c) {
  return c->fd;
}

const char *intake_client_tls_error(const intake_client_t *c) { return c->tls_error; }

const char *intake_client_tls_version(const intake_client_t *c) {
  return c->tls ? intake_tls_version(c->tls) : NULL;
}

int intake_client_connect_tls(const char *host, uint16_t port, int timeout_ms,
                              const intake_client_tls_t *tls, intake_client_t **out) {
  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  char msg[256] = "";
  intake_tls_ctx_t *ctx = intake_tls_client_ctx_create(tls->ca_file, tls->cert_file,
                                                       tls->key_file, INTAKE_TLS_1_2, msg,
                                                       sizeof msg);
  if (ctx == NULL) {
    if (tls->error && tls->error_len)
      snprintf(tls->error, tls->error_len, "%s", msg);
    return -EINVAL;
  }
  intake_client_t *c;
  int err = intake_client_connect(host, port, remaining(deadline), &c);
  if (err < 0) {
    intake_tls_ctx_destroy(ctx);
    return err;
  }
  c->tls_ctx = ctx;
  c->tls = intake_tls_create(ctx, tls->server_name ? tls->server_name : host);
  c->stage = malloc(TLS_STAGE_BYTES);
  if (c->tls == NULL || c->stage == NULL) {
    intake_client_close(c);
    return -ENOMEM;
  }
  for (;;) {
    int r = intake_tls_handshake(c->tls);
    int ferr = tls_flush(c); /* our flight, or the alert that says why we gave up */
    if (r == 0 && ferr == 0)
      break;
    if (r == -EAGAIN && ferr == 0)
      err = tls_fill(c, deadline);
    else if (r == -ENOBUFS && ferr == 0)
      err = 0;
    else if (r == -EPROTO)
      err = -EPROTO;
    else
      err = ferr;
    if (err < 0) {
      if (err == -EPROTO)
        tls_failed(c);
      else
        snprintf(c->tls_error, sizeof c->tls_error, "handshake: %s", strerror(-err));
      if (tls->error && tls->error_len)
        snprintf(tls->error, tls->error_len, "%s", c->tls_error);
      intake_client_close(c);
      return err;
    }
  }
  *out = c;
  return 0;
}

/* Writes all of buf to the socket (blocking, bounded by SO_SNDTIMEO). */
static int sock_send(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* ---- TLS plumbing: the session works on memory buffers; these move its bytes over the
 * blocking socket. ---------------------------------------------------------------------------- */

/* Records why TLS failed on `c` (and in the caller's buffer during connect). */
static void tls_failed(intake_client_t *c) {
  snprintf(c->tls_error, sizeof c->tls_error, "%s", intake_tls_error(c->tls));
}

/* Sends whatever the session has for the peer. */
static int tls_flush(intake_client_t *c) {
  uint8_t buf[8192];
  size_t n;
  while ((n = intake_tls_take(c->tls, buf, sizeof buf)) > 0) {
    int err = sock_send(c->fd, buf, n);
    if (err < 0)
      return err;
  }
  return 0;
}

/* Waits (until deadline) for ciphertext and feeds it to the session, straight into its buffer.
 * Returns > 0, -ETIMEDOUT, -ECONNRESET on EOF, or -errno. */
static int tls_fill(intake_client_t *c, int64_t deadline) {
  for (;;) {
    size_t room;
    void *p = intake_tls_feed_space(c->tls, &room);
    if (room == 0)
      return 1; /* the session still holds unread ciphertext: let it work first */
    int r = wait_readable(c->fd, deadline);
    if (r < 0)
      return r;
    ssize_t n = recv(c->fd, p, room, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0)
      return errno == ECONNRESET || errno == EPIPE ? -ECONNRESET : -errno;
    if (n == 0)
      return -ECONNRESET;
    intake_tls_feed_commit(c->tls, (size_t)n);
    return (int)n;
  }
}

/* Encrypts and sends all of buf. A TLS failure is -ECONNRESET (the reason in tls_error). */
static int tls_send(intake_client_t *c, const void *buf, size_t len) {
  const uint8_t *p = buf;
  int err = 0;
  while (len > 0) {
    ssize_t n = intake_tls_write(c->tls, p, len);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n == -ENOBUFS) {
      if ((err = tls_flush(c)) < 0)
        return err;
    } else if (n == -EAGAIN) { /* renegotiation-like state; wait for the peer, bounded */
      if ((err = tls_flush(c)) < 0 || (err = tls_fill(c, now_ms() + SEND_TIMEOUT_S * 1000)) < 0)
        return err;
    } else {
      tls_failed(c);
      (void)tls_flush(c);
      return n == -EPIPE ? -EPIPE : -ECONNRESET;
    }
  }
  return tls_flush(c);
}

int intake_client_send_raw(intake_client_t *c, const void *buf, size_t len) {
  return c->tls ? tls_send(c, buf, len) : sock_send(c->fd, buf, len);
}

/* One TLS record for the header and the payload's first bytes, then the rest. */
static int tls_send_frame(intake_client_t *c, const uint8_t *hdr, const uint8_t *payload,
                          size_t len) {
  size_t first = len < TLS_STAGE_BYTES - INTAKE_FRAME_HEADER_BYTES
                     ? len
                     : TLS_STAGE_BYTES - INTAKE_FRAME_HEADER_BYTES;
  memcpy(c->stage, hdr, INTAKE_FRAME_HEADER_BYTES);
  if (first > 0)
    memcpy(c->stage + INTAKE_FRAME_HEADER_BYTES, payload, first);
  int err = tls_send(c, c->stage, INTAKE_FRAME_HEADER_BYTES + first);
  if (err < 0 || first == len)
    return err;
  return tls_send(c, payload + first, len - first);
}

int intake_client_send_frame(intake_client_t *c, uint8_t type, const void *payload, size_t len) {
  if (len > UINT32_MAX - 1)
    return -EMSGSIZE;
  uint8_t hdr[INTAKE_FRAME_HEADER_BYTES];
  intake_frame_header(hdr, type, (uint32_t)len);
  if (c->tls)
    return tls_send_frame(c, hdr, payload, len);
  struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)payload, len}};
  struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len > 0 ? 2 : 1};
  size_t left = sizeof hdr + len;
  /* One sendmsg() normally; on a short write, finish with plain sends. */
  ssize_t n;
  do
    n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  if ((size_t)n == left)
    return 0;
  size_t done = (size_t)n;
  int err = 0;
  if (done < sizeof hdr) {
    if ((err = intake_client_send_raw(c, hdr + done, sizeof hdr - done)) < 0)
      return err;
    done = sizeof hdr;
  }
  return intake_client_send_raw(c, (const uint8_t *)payload + (done - sizeof hdr),
                                len - (done - sizeof hdr));
}

int intake_client_send_hello(intake_client_t *c, const char *gateway_id, const char *token,
                             uint32_t protocol_version) {
  Intake__V1__Hello h = INTAKE__V1__HELLO__INIT;
  h.gateway_id = (char *)(gateway_id ? gateway_id : "");
  h.token = (char *)(token ? token : "");
  h.protocol_version = protocol_version;
  size_t len = intake__v1__hello__get_packed_size(&h);
  uint8_t *buf = malloc(len ? len : 1);
  if (buf == NULL)
    return -ENOMEM;
  intake__v1__hello__pack(&h, buf);
  int err = intake_client_send_frame(c, INTAKE_FRAME_HELLO, buf, len);
  free(buf);
  return err;
}

int intake_client_hello(intake_client_t *c, const char *gateway_id, const char *token,
                        int timeout_ms, intake_client_msg_t *reply) {
  memset(reply, 0, sizeof *reply);
  int err = intake_client_send_hello(c, gateway_id, token, INTAKE_CLIENT_PROTOCOL_VERSION);
  if (err < 0)
    return err;
  if ((err = intake_client_recv(c, timeout_ms, reply)) < 0)
    return err;
  return reply->welcome != NULL ? 0 : -EPROTO;
}

/* --- Batch encoding ------------------------------------------------------------------------
 * The Batch envelope (fields 1..3) is written by hand rather than by intake__v1__batch__pack():
 * the events go out as exactly the bytes the caller holds, valid Events or not. For valid
 * events the result is byte-for-byte what protobuf-c would produce (unit-tested). */

typedef struct {
  uint8_t *p;
  size_t len, cap;
  int oom;
} wbuf_t;

static void wb_put(wbuf_t *b, const void *src, size_t n) {
  if (b->oom)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  if (n > 0)
    memcpy(b->p + b->len, src, n);
  b->len += n;
}

static void wb_varint(wbuf_t *b, uint64_t v) {
  uint8_t tmp[10];
  size_t n = 0;
  do {
    tmp[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v)
      tmp[n] |= 0x80;
    n++;
  } while (v);
  wb_put(b, tmp, n);
}

/* A length-delimited field (wire type 2). */
static void wb_bytes_field(wbuf_t *b, uint32_t field, const void *data, size_t len) {
  wb_varint(b, (uint64_t)field << 3 | 2);
  wb_varint(b, len);
  wb_put(b, data, len);
}

int intake_client_encode_batch(uint64_t seq, const ProtobufCBinaryData *events, size_t n,
                               unsigned flags, uint8_t **out, size_t *out_len) {
  wbuf_t inner = {0}, outer = {0};
  uint8_t *z = NULL;
  int err = 0;

  /* proto3: a zero seq is the default and is not written. */
  if (seq != 0) {
    wb_varint(&outer, 1 << 3 | 0);
    wb_varint(&outer, seq);
  }
  wbuf_t *ev = (flags & INTAKE_CLIENT_ZSTD) ? &inner : &outer;
  for (size_t i = 0; i < n; i++)
    wb_bytes_field(ev, 2, events[i].data, events[i].len);
  if (flags & INTAKE_CLIENT_ZSTD) {
    if (inner.oom) {
      err = -ENOMEM;
      goto done;
    }
    size_t zcap = ZSTD_compressBound(inner.len);
    if ((z = malloc(zcap)) == NULL) {
      err = -ENOMEM;
      goto done;
    }
    /* ZSTD_compress() writes the content size into the frame header, as the protocol needs. */
    size_t zlen = ZSTD_compress(z, zcap, inner.p, inner.len, ZSTD_LEVEL);
    if (ZSTD_isError(zlen)) {
      err = -EIO;
      goto done;
    }
    wb_bytes_field(&outer, 3, z, zlen);
  }
  if (outer.oom) {
    err = -ENOMEM;
    goto done;
  }
  if (outer.p == NULL) /* empty batch: a valid, empty message */
    wb_put(&outer, "", 0);
  if (outer.oom) {
    err = -ENOMEM;
    goto done;
  }
  *out = outer.p;
  *out_len = outer.len;
  outer.p = NULL;

done:
  free(z);
  free(inner.p);
  free(outer.p);
  return err;
}

int intake_client_send_batch_encoded(intake_client_t *c, uint64_t seq,
                                     const ProtobufCBinaryData *events, size_t n,
                                     unsigned flags) {
  uint8_t *buf;
  size_t len;
  int err = intake_client_encode_batch(seq, events, n, flags, &buf, &len);
  if (err < 0)
    return err;
  err = intake_client_send_frame(c, INTAKE_FRAME_BATCH, buf, len);
  free(buf);
  return err;
}

int intake_client_send_batch(intake_client_t *c, uint64_t seq, Intake__V1__Event *const *events,
                             size_t n, unsigned flags) {
  ProtobufCBinaryData *enc = calloc(n ? n : 1, sizeof *enc);
  if (enc == NULL)
    return -ENOMEM;
  int err = 0;
  for (size_t i = 0; i < n; i++) {
    size_t len = intake__v1__event__get_packed_size(events[i]);
    if ((enc[i].data = malloc(len ? len : 1)) == NULL) {
      err = -ENOMEM;
      goto done;
    }
    enc[i].len = intake__v1__event__pack(events[i], enc[i].data);
  }
  err = intake_client_send_batch_encoded(c, seq, enc, n, flags);

done:
  for (size_t i = 0; i < n; i++)
    free(enc[i].data);
  free(enc);
  return err;
}

/* --- Receiving ----------------------------------------------------------------------------- */

/* Reads what is available into rbuf, waiting at most until deadline. Returns bytes read (> 0),
 * -ETIMEDOUT, -ECONNRESET on EOF, or -errno. */
static int fill(intake_client_t *c, int64_t deadline) {
  if (c->rcap - c->rlen < 4096) {
    size_t cap = c->rcap ? c->rcap * 2 : 16384;
    uint8_t *p = realloc(c->rbuf, cap);
    if (p == NULL)
      return -ENOMEM;
    c->rbuf = p;
    c->rcap = cap;
  }
  /* TLS: decrypt what the session holds first (it may hold records the socket no longer
   * signals), then wait for more ciphertext. */
  while (c->tls) {
    ssize_t n = intake_tls_read(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen);
    int err = tls_flush(c); /* tickets, key-update answers, alerts */
    if (n > 0) {
      c->rlen += (size_t)n;
      return (int)n;
    }
    if (n == 0)
      return -ECONNRESET; /* close_notify */
    if (n == -EPROTO) {
      tls_failed(c);
      return -ECONNRESET;
    }
    if (err < 0)
      return err;
    if (n == -EAGAIN && (err = tls_fill(c, deadline)) < 0)
      return err;
  }
  for (;;) {
    int r = wait_readable(c->fd, deadline);
    if (r < 0)
      return r;
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0)
      return errno == ECONNRESET || errno == EPIPE ? -ECONNRESET : -errno;
    if (n == 0)
      return -ECONNRESET;
    c->rlen += (size_t)n;
    return (int)n;
  }
}

static int decode(uint8_t type, const uint8_t *p, size_t len, intake_client_msg_t *msg) {
  msg->type = type;
  switch (type) {
  case INTAKE_FRAME_WELCOME:
    msg->welcome = intake__v1__welcome__unpack(NULL, len, p);
    return msg->welcome ? 0 : -EBADMSG;
  case INTAKE_FRAME_BATCH_ACK:
    msg->ack = intake__v1__batch_ack__unpack(NULL, len, p);
    return msg->ack ? 0 : -EBADMSG;
  case INTAKE_FRAME_ERROR:
    msg->error = intake__v1__protocol_error__unpack(NULL, len, p);
    return msg->error ? 0 : -EBADMSG;
  default:
    return -EBADMSG;
  }
}

int intake_client_recv(intake_client_t *c, int timeout_ms, intake_client_msg_t *msg) {
  memset(msg, 0, sizeof *msg);
  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  for (;;) {
    intake_frame_t f;
    int r = intake_frame_parse(c->rbuf, c->rlen, INTAKE_CLIENT_MAX_RECV_FRAME, &f);
    if (r == INTAKE_FRAME_EMPTY || r == INTAKE_FRAME_TOO_LARGE)
      return -EMSGSIZE;
    if (r == INTAKE_FRAME_OK) {
      int err = decode(f.type, f.payload, f.payload_len, msg);
      /* Acks are small and rare: a memmove per frame is fine in a test client. */
      memmove(c->rbuf, c->rbuf + f.frame_len, c->rlen - f.frame_len);
      c->rlen -= f.frame_len;
      return err;
    }
    if ((r = fill(c, deadline)) < 0)
      return r;
  }
}

void intake_client_msg_free(intake_client_msg_t *msg) {
  if (msg->welcome)
    intake__v1__welcome__free_unpacked(msg->welcome, NULL);
  if (msg->ack)
    intake__v1__batch_ack__free_unpacked(msg->ack, NULL);
  if (msg->error)
    intake__v1__protocol_error__free_unpacked(msg->error, NULL);
  msg->welcome = NULL;
  msg->ack = NULL;
  msg->error = NULL;
}
