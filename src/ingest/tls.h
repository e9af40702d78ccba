/* TLS for gateway connections (OpenSSL 3), independent of the event loop.
 *
 * A context (intake_tls_ctx_t) holds the certificate, key, CAs and verification policy; a
 * session (intake_tls_t) is one connection's TLS state on memory buffers: the caller moves the
 * bytes between the socket and the session, so the same code serves libuv (intaked), blocking
 * sockets (the gateway client) and a unit test that pumps two sessions into each other.
 *
 *   bytes from the socket ──feed──▶ [ in ]  ──▶ SSL ──read──▶ plaintext into a caller buffer
 *   plaintext ─────────────write──▶  SSL ──▶ [ out ] ──take──▶ bytes for the socket
 *
 * Both buffers have a fixed size (allocated once, on first use) and every call is bounded by
 * them: feed accepts only what fits, read decrypts only what the caller's buffer holds. The
 * handshake is driven by the same calls (read, write or handshake), and any call may leave
 * bytes to send (handshake messages, alerts, session tickets): after each call, send what
 * intake_tls_out_pending() reports. Nothing allocates per call once a session has run its
 * first handshake.
 *
 * Errors: functions return a byte count (>= 0) or a negative errno:
 *   -EAGAIN   the session needs more bytes from the peer (feed them, then call again)
 *   -ENOBUFS  the out buffer is full: take() its bytes, send them, then call again
 *   -EPROTO   TLS failed (handshake refused, certificate not verified, bad record, alert from
 *             the peer); intake_tls_error() says why. The session is dead: send what is
 *             pending (the alert for the peer) and close.
 * Not thread-safe; a session is used by one thread at a time. */
#ifndef INTAKE_INGEST_TLS_H
#define INTAKE_INGEST_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config/config.h"

typedef struct intake_tls_ctx intake_tls_ctx_t;
typedef struct intake_tls intake_tls_t;

/* Builds the server context from listen.tls.*: the certificate chain and its key (checked to
 * match), the oldest version accepted, and with client_ca_file the CAs gateway certificates
 * are verified against (require_client_cert: a gateway without a valid certificate fails the
 * handshake; without it, a certificate is verified only when the gateway presents one).
 * Files are read now; later changes to them need a new context. Returns NULL with a message in
 * err, e.g. "listen.tls.key_file: /etc/x.key: No such file or directory" or
 * "listen.tls.key_file: /etc/x.key: key does not match listen.tls.cert_file". `cfg` must have
 * cert_file and key_file set. */
intake_tls_ctx_t *intake_tls_server_ctx_create(const intake_config_t *cfg, char *err,
                                               size_t errlen);

/* Builds a client context: intaked's certificate is verified against the CAs in ca_file (NULL:
 * the system's default CAs); cert_file/key_file (both or neither, may be NULL) are the
 * gateway's own certificate (chain) and key. min_version: INTAKE_TLS_1_2 or INTAKE_TLS_1_3.
 * Returns NULL with a message in err (naming the file and what is wrong with it). */
intake_tls_ctx_t *intake_tls_client_ctx_create(const char *ca_file, const char *cert_file,
                                               const char *key_file,
                                               intake_tls_version_t min_version, char *err,
                                               size_t errlen);

/* Releases the caller's reference. Sessions made from it keep the context alive until they
 * are destroyed, so a reload may replace the context while old connections run on. Accepts
 * NULL. */
void intake_tls_ctx_destroy(intake_tls_ctx_t *ctx);

/* Whether sessions of this server context request a client certificate (client_ca_file set). */
bool intake_tls_ctx_verifies_peer(const intake_tls_ctx_t *ctx);

typedef enum {
  INTAKE_TLS_HANDSHAKE = 0,  /* handshake in progress */
  INTAKE_TLS_OPEN,           /* handshake done: application data flows */
  INTAKE_TLS_CLOSED,         /* the peer sent close_notify: no more data from it */
  INTAKE_TLS_FAILED          /* see intake_tls_error() */
} intake_tls_state_t;

/* A new session of `ctx` (server or client, as the context). For a client, `server_name` is
 * the name intaked's certificate must carry (an IP literal is checked against its IP
 * addresses) and, unless it is an IP, is sent as SNI; NULL skips the name check (the chain is
 * still verified). Ignored for a server. Returns NULL when out of memory. */
intake_tls_t *intake_tls_create(intake_tls_ctx_t *ctx, const char *server_name);

/* Frees the session and its buffers. Accepts NULL. */
void intake_tls_destroy(intake_tls_t *t);

/* --- Bytes from the peer ------------------------------------------------------------------- */

/* Copies up to len ciphertext bytes received from the peer into the in buffer. Returns how
 * many it took (0 when the buffer is full: read() first). */
size_t intake_tls_feed(intake_tls_t *t, const void *data, size_t len);

/* Zero-copy variant of feed: the free space of the in buffer, for the socket to read into
 * directly. Returns its start and stores its size in *len (0 when full). The space stays valid
 * until the next call on the session; then commit the bytes actually written there. */
void *intake_tls_feed_space(intake_tls_t *t, size_t *len);
void intake_tls_feed_commit(intake_tls_t *t, size_t n);

/* Ciphertext fed and not yet consumed by the TLS layer. */
size_t intake_tls_in_pending(const intake_tls_t *t);

/* --- Plaintext ------------------------------------------------------------------------------ */

/* Runs the handshake as far as the bytes fed allow. Returns 0 once it is done (then and on every
 * later call), -EAGAIN, -ENOBUFS or -EPROTO. */
int intake_tls_handshake(intake_tls_t *t);

/* Decrypts into buf[0..cap) (cap > 0), finishing the handshake first. Returns the bytes
 * written (> 0), 0 when the peer has closed the TLS session (close_notify), -EAGAIN, -ENOBUFS
 * or -EPROTO. Call until it returns < 1: one record may yield several reads. */
ssize_t intake_tls_read(intake_tls_t *t, void *buf, size_t cap);

/* Encrypts up to len bytes (len > 0) into the out buffer, at most one record (16 KiB) per
 * call. Returns the bytes taken (> 0), -ENOBUFS (take() the out buffer, then call again with
 * the same bytes), -EAGAIN (handshake not done and waiting for the peer), -EPIPE (we sent
 * close_notify already) or -EPROTO. Writing goes on after the peer's close_notify (TLS closes
 * each direction on its own). */
ssize_t intake_tls_write(intake_tls_t *t, const void *data, size_t len);

/* Queues a close_notify alert (the session's orderly end) in the out buffer. Best effort: on a
 * session that is not open it does nothing. */
void intake_tls_close_notify(intake_tls_t *t);

/* --- Bytes for the peer --------------------------------------------------------------------- */

/* Ciphertext waiting in the out buffer. */
size_t intake_tls_out_pending(const intake_tls_t *t);

/* Moves up to cap bytes of the out buffer into dst. Returns the count. */
size_t intake_tls_take(intake_tls_t *t, void *dst, size_t cap);

/* --- State and identity --------------------------------------------------------------------- */

intake_tls_state_t intake_tls_state(const intake_tls_t *t);

/* Why the session failed ("" when it has not): e.g. "certificate verify failed: unable to get
 * local issuer certificate", "peer did not return a certificate", "wrong version number" (a
 * peer that does not speak TLS), "tlsv1 alert unknown ca" (the peer refused us). */
const char *intake_tls_error(const intake_tls_t *t);

/* True when the peer presented a certificate that was verified against the context's CAs and
 * `id` equals, byte for byte, its subject CN or one of its DNS names (no wildcards, no case
 * folding: gateway ids are case-sensitive). False before the handshake is done. */
bool intake_tls_peer_matches(const intake_tls_t *t, const char *id);

/* The verified peer certificate's subject CN into buf ("" when there is none, or it is not
 * verified), NUL-terminated, non-printable bytes as '_'. For logs. */
void intake_tls_peer_cn(const intake_tls_t *t, char *buf, size_t len);

/* Negotiated protocol and cipher, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384" (static strings). */
const char *intake_tls_version(const intake_tls_t *t);
const char *intake_tls_cipher(const intake_tls_t *t);

#endif
