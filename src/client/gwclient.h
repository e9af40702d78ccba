/* A small blocking gateway client for intaked (proto/intake.proto), for tests, benchmarks and
 * tools. Plain POSIX sockets, no event loop: every call blocks at most for its timeout.
 *
 * Sending and receiving are separate calls, so a caller may pipeline: send several batches
 * (up to Welcome.max_in_flight), then read the acks, which may come in any order.
 *
 *   intake_client_t *c;
 *   intake_client_msg_t m;
 *   if (intake_client_connect("127.0.0.1", 7400, 5000, &c) < 0) ...
 *   if (intake_client_hello(c, "gw-1", "", 5000, &m) < 0) ...   // m.welcome
 *   intake_client_msg_free(&m);
 *   intake_client_send_batch(c, 1, events, n, INTAKE_CLIENT_ZSTD);
 *   intake_client_recv(c, 10000, &m);                           // m.ack (or m.error)
 *   intake_client_msg_free(&m);
 *   intake_client_close(c);
 *
 * intake_client_connect_tls() does the same over TLS (OpenSSL), optionally presenting a client
 * certificate; every other call is the same for both.
 *
 * Errors are negative errno values; no function prints anything. Not thread-safe: one thread
 * per client. */
#ifndef INTAKE_CLIENT_GWCLIENT_H
#define INTAKE_CLIENT_GWCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "intake.pb-c.h"

#define INTAKE_CLIENT_PROTOCOL_VERSION 1

/* Largest frame the client accepts from intaked; a longer one is -EMSGSIZE. Acks are small,
 * so this only guards against a broken peer. */
#define INTAKE_CLIENT_MAX_RECV_FRAME (64u << 20)

/* Flags for intake_client_send_batch*(). */
enum {
  INTAKE_CLIENT_ZSTD = 1 /* send the events as Batch.events_zstd instead of Batch.events */
};

typedef struct intake_client intake_client_t;

/* One frame received from intaked, decoded according to its type. Exactly one of the pointers
 * is set when intake_client_recv() returns 0. Release with intake_client_msg_free(). */
typedef struct {
  uint8_t type;                      /* frame type byte, INTAKE_FRAME_* (ingest/frame.h) */
  Intake__V1__Welcome *welcome;      /* type WELCOME */
  Intake__V1__BatchAck *ack;         /* type BATCH_ACK */
  Intake__V1__ProtocolError *error;  /* type ERROR */
} intake_client_msg_t;

/* Connects to host:port (a numeric IPv4/IPv6 address or a name), waiting at most timeout_ms
 * (< 0: no limit). On success returns 0 and a new client in *out, to be released with
 * intake_client_close(). Returns -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, ... (the connect
 * errno) or -ENOENT when the name does not resolve. */
int intake_client_connect(const char *host, uint16_t port, int timeout_ms, intake_client_t **out);

/* TLS options for intake_client_connect_tls(). Files are PEM. */
typedef struct {
  const char *ca_file;      /* CAs that sign intaked's certificate; NULL = the system's CAs */
  const char *cert_file;    /* the gateway's certificate (chain); NULL = present none */
  const char *key_file;     /* its private key (unencrypted); set with cert_file */
  const char *server_name;  /* the name (or IP address) intaked's certificate must carry, also
                               sent as SNI when it is a name; NULL = `host` as given */
  char *error;              /* when not NULL, why TLS failed is written here (error_len bytes,
                               NUL-terminated): a bad file, or the handshake's reason */
  size_t error_len;
} intake_client_tls_t;

/* Like intake_client_connect(), then a TLS handshake within the same timeout: intaked's
 * certificate chain is verified against tls->ca_file and its name against tls->server_name
 * (or host). Afterwards every call of this client goes through TLS. Returns 0, an error of
 * intake_client_connect(), -EINVAL (a file cannot be used; tls->error says why), -EPROTO (the
 * handshake failed, e.g. intaked's certificate is not trusted or intaked refused ours),
 * -ETIMEDOUT or -ECONNRESET (intaked closed during the handshake).
 *
 * With TLS 1.3 the client finishes its handshake before intaked has checked the client
 * certificate: a refused certificate then shows as the first recv() failing with -ECONNRESET,
 * and intake_client_tls_error() holding intaked's alert ("tlsv13 alert certificate
 * required"). */
int intake_client_connect_tls(const char *host, uint16_t port, int timeout_ms,
                              const intake_client_tls_t *tls, intake_client_t **out);

/* Why TLS failed on this client ("" when it has not, or the client is plain TCP). */
const char *intake_client_tls_error(const intake_client_t *c);

/* "TLSv1.3" etc. once a TLS client is connected; NULL for a plain TCP client. */
const char *intake_client_tls_version(const intake_client_t *c);

/* Closes the socket and frees the client. Accepts NULL. */
void intake_client_close(intake_client_t *c);

/* The connected socket, for callers that need to poll it, shutdown() one direction or set
 * options. Owned by the client: do not close it. With TLS it carries ciphertext: a readable
 * socket need not mean a whole frame, and intake_client_recv() may hold decrypted frames the
 * socket no longer signals. */
int intake_client_fd(const intake_client_t *c);

/* Sends a HELLO frame (protocol version INTAKE_CLIENT_PROTOCOL_VERSION) and waits at most
 * timeout_ms for the answer, which is stored in *reply (release with intake_client_msg_free(),
 * whatever this returns). Returns 0 when the answer is a WELCOME (reply->welcome);
 * -EPROTO when it is another frame, typically a ProtocolError (reply->error); or an error of
 * intake_client_send_frame() / intake_client_recv() with *reply empty. `token` may be NULL. */
int intake_client_hello(intake_client_t *c, const char *gateway_id, const char *token,
                        int timeout_ms, intake_client_msg_t *reply);

/* Sends a HELLO frame with an explicit protocol version and does not wait for the answer.
 * Returns 0 or an error of intake_client_send_frame(). */
int intake_client_send_hello(intake_client_t *c, const char *gateway_id, const char *token,
                             uint32_t protocol_version);

/* Serializes events[0..n) with protobuf-c and sends them as one BATCH frame with sequence number
 * `seq`. With INTAKE_CLIENT_ZSTD in flags, the events travel as Batch.events_zstd: one zstd frame
 * (recording its content size) of a serialized Batch holding only `events`. Does not wait for the
 * ack. Returns 0, -ENOMEM, -EIO (zstd failed) or an error of intake_client_send_frame(). */
int intake_client_send_batch(intake_client_t *c, uint64_t seq, Intake__V1__Event *const *events,
                             size_t n, unsigned flags);

/* Like intake_client_send_batch(), but each event is given as its serialized bytes, sent exactly
 * as they are (they need not be a valid Event: for hostile-input tests). */
int intake_client_send_batch_encoded(intake_client_t *c, uint64_t seq,
                                     const ProtobufCBinaryData *events, size_t n,
                                     unsigned flags);

/* Encodes a Batch as intake_client_send_batch_encoded() would send it, without the frame header,
 * into a new buffer *out of *out_len bytes (caller frees with free()). Returns 0, -ENOMEM or
 * -EIO. */
int intake_client_encode_batch(uint64_t seq, const ProtobufCBinaryData *events, size_t n,
                               unsigned flags, uint8_t **out, size_t *out_len);

/* Sends one frame: the 5-byte header for `type` and payload[0..len), whole. Returns 0, or
 * -EPIPE / -ECONNRESET when the peer has closed, -EAGAIN when the send buffer stayed full for
 * the send timeout (10 s), or another negative errno. Never raises SIGPIPE. */
int intake_client_send_frame(intake_client_t *c, uint8_t type, const void *payload, size_t len);

/* Sends raw bytes as they are, no framing (for hostile-input tests). Same returns as
 * intake_client_send_frame(). */
int intake_client_send_raw(intake_client_t *c, const void *buf, size_t len);

/* Waits at most timeout_ms (< 0: no limit) for the next whole frame and decodes it into *msg.
 * Returns 0 with *msg filled (release with intake_client_msg_free()); or, with *msg empty:
 *   -ETIMEDOUT   no whole frame within the timeout (bytes read so far are kept for the next call)
 *   -ECONNRESET  the peer closed the connection (orderly or not) before a whole frame came
 *   -EMSGSIZE    the frame's length is 0 or over INTAKE_CLIENT_MAX_RECV_FRAME
 *   -EBADMSG     unknown frame type or a payload protobuf-c cannot decode (msg->type is set)
 *   -ENOMEM, or another negative errno from the socket.
 * After -EMSGSIZE or -EBADMSG the stream is out of step: close the client. */
int intake_client_recv(intake_client_t *c, int timeout_ms, intake_client_msg_t *msg);

/* Frees what intake_client_recv() or intake_client_hello() stored in *msg and empties it.
 * Safe on an empty or already freed message. */
void intake_client_msg_free(intake_client_msg_t *msg);

#endif
