#include "ingest/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* The in buffer holds two full-size records (16 KiB of plaintext each plus their overhead), so
 * one recv() of a busy connection feeds two records' worth of batches. */
#define TLS_IN_BYTES (34 * 1024)
/* The out buffer holds one full record with any cipher's overhead (header, explicit IV, MAC or
 * tag, CBC padding: < 1 KiB), so a record never needs two take() calls. */
#define TLS_OUT_BYTES (17 * 1024)
/* TLS's largest record payload: intake_tls_write() takes at most this per call. */
#define TLS_RECORD_MAX 16384

struct intake_tls_ctx {
  SSL_CTX *ssl;        /* sessions hold their own reference (SSL_new) */
  bool verify_peer;    /* server: client certificates are requested */
};

struct intake_tls {
  SSL *ssl;            /* reads from and writes to `_int` (owned by ssl) */
  BIO *_ext;           /* the network side of the BIO pair: we feed it and take from it */
  intake_tls_state_t state;
  char error[160];     /* why it failed, "" otherwise */
};

/* ---- contexts ---------------------------------------------------------------------------- */

/* The reason of the oldest queued OpenSSL error (the root cause: later ones are the callers'
 * "PEM lib" and the like), or `fallback`. */
static const char *ssl_reason(const char *fallback) {
  unsigned long e = ERR_peek_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  return r ? r : fallback;
}

/* "KEY: PATH: why": the file's open error when it cannot be opened (OpenSSL's reason would be a
 * bare "system lib"), else OpenSSL's reason, with its "no start line" made readable. */
static void file_error(char *err, size_t errlen, const char *key, const char *path,
                       const char *what) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    snprintf(err, errlen, "%s: %s: %s", key, path, strerror(errno));
  } else {
    fclose(f);
    unsigned long e = ERR_peek_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
      snprintf(err, errlen, "%s: %s: no PEM %s in it", key, path, what);
    else
      snprintf(err, errlen, "%s: %s: bad %s (%s)", key, path, what, ssl_reason("unreadable"));
  }
  ERR_clear_error();
}

/* An encrypted key would make OpenSSL's default callback prompt on the terminal: a daemon must
 * fail instead. */
static int no_password(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return 0;
}

/* Loads the certificate chain and its key into `ctx`, checking they belong together and that
 * the certificate has not expired. Returns 0 or -1 with a message in err. */
static int load_identity(SSL_CTX *ctx, const char *cert_key, const char *cert_file,
                         const char *key_key, const char *key_file, char *err, size_t errlen) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
    file_error(err, errlen, cert_key, cert_file, "certificate");
    return -1;
  }
  BIO *b = BIO_new_file(key_file, "r");
  EVP_PKEY *pkey = b ? PEM_read_bio_PrivateKey(b, NULL, no_password, NULL) : NULL;
  BIO_free(b);
  if (pkey == NULL) {
    file_error(err, errlen, key_key, key_file, "private key (an encrypted key is not supported)");
    return -1;
  }
  X509 *cert = SSL_CTX_get0_certificate(ctx);
  int rc = -1;
  if (!X509_check_private_key(cert, pkey))
    snprintf(err, errlen, "%s: %s: key does not match %s %s", key_key, key_file, cert_key,
             cert_file);
  else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1)
    snprintf(err, errlen, "%s: %s: %s", key_key, key_file, ssl_reason("key not usable"));
  else if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
    snprintf(err, errlen, "%s: %s: certificate has expired", cert_key, cert_file);
  else
    rc = 0;
  EVP_PKEY_free(pkey);
  ERR_clear_error();
  return rc;
}

static int min_version(intake_tls_version_t v) {
  return v == INTAKE_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

static intake_tls_ctx_t *ctx_new(const SSL_METHOD *method, intake_tls_version_t minv, char *err,
                                 size_t errlen) {
  intake_tls_ctx_t *c = calloc(1, sizeof *c);
  if (c == NULL || (c->ssl = SSL_CTX_new(method)) == NULL) {
    snprintf(err, errlen, "TLS: cannot create a context: %s", ssl_reason("out of memory"));
    ERR_clear_error();
    free(c);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(c->ssl, min_version(minv));
  /* Partial writes: intake_tls_write() hands over one record at a time, and the out buffer
   * takes one record. A moving buffer: a retried write may come from a copy of the bytes. */
  SSL_CTX_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* Client-initiated TLS 1.2 renegotiation only costs the server CPU; gateways have no use for
   * it. */
  SSL_CTX_set_options(c->ssl, SSL_OP_NO_RENEGOTIATION);
  return c;
}

intake_tls_ctx_t *intake_tls_server_ctx_create(const intake_config_t *cfg, char *err,
                                               size_t errlen) {
  if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL) {
    snprintf(err, errlen, "listen.tls: cert_file and key_file must be set");
    return NULL;
  }
  intake_tls_ctx_t *c = ctx_new(TLS_server_method(), cfg->tls_min_version, err, errlen);
  if (c == NULL)
    return NULL;
  if (load_identity(c->ssl, "listen.tls.cert_file", cfg->tls_cert_file, "listen.tls.key_file",
                    cfg->tls_key_file, err, errlen) < 0)
    goto fail;
  /* No server-side session cache: it would grow with every gateway (20k entries by default);
   * TLS 1.3 resumption still works through stateless tickets. A reload makes a new context
   * with new ticket keys, so no session outlives a CA change. The id context is required as
   * soon as client certificates are verified: without it, a resumption attempt fails the
   * handshake. */
  SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
  static const unsigned char sid_ctx[] = "intaked";
  SSL_CTX_set_session_id_context(c->ssl, sid_ctx, sizeof sid_ctx - 1);
  if (cfg->tls_client_ca_file) {
    const char *ca = cfg->tls_client_ca_file;
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (names == NULL || SSL_CTX_load_verify_locations(c->ssl, ca, NULL) != 1) {
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      file_error(err, errlen, "listen.tls.client_ca_file", ca, "CA certificate");
      goto fail;
    }
    /* The CA names go into the CertificateRequest, so a gateway with several certificates
     * picks the right one. */
    SSL_CTX_set_client_CA_list(c->ssl, names);
    /* The client-certificate purpose (extendedKeyUsage clientAuth when present) is checked by
     * OpenSSL's default for a server; a server certificate cannot pose as a gateway's. */
    SSL_CTX_set_verify(c->ssl,
                       cfg->tls_require_client_cert
                           ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                           : SSL_VERIFY_PEER,
                       NULL);
    c->verify_peer = true;
  }
  return c;

fail:
  intake_tls_ctx_destroy(c);
  return NULL;
}

intake_tls_ctx_t *intake_tls_client_ctx_create(const char *ca_file, const char *cert_file,
                                               const char *key_file,
                                               intake_tls_version_t min_version, char *err,
                                               size_t errlen) {
  if ((cert_file == NULL) != (key_file == NULL)) {
    snprintf(err, errlen, "cert_file and key_file go together");
    return NULL;
  }
  intake_tls_ctx_t *c = ctx_new(TLS_client_method(), min_version, err, errlen);
  if (c == NULL)
    return NULL;
  if (ca_file ? SSL_CTX_load_verify_locations(c->ssl, ca_file, NULL) != 1
              : SSL_CTX_set_default_verify_paths(c->ssl) != 1) {
    file_error(err, errlen, "ca_file", ca_file ? ca_file : "(system default)", "CA certificate");
    goto fail;
  }
  SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
  if (cert_file &&
      load_identity(c->ssl, "cert_file", cert_file, "key_file", key_file, err, errlen) < 0)
    goto fail;
  return c;

fail:
  intake_tls_ctx_destroy(c);
  return NULL;
}

void intake_tls_ctx_destroy(intake_tls_ctx_t *ctx) {
  if (ctx == NULL)
    return;
  SSL_CTX_free(ctx->ssl);
  free(ctx);
}

bool intake_tls_ctx_verifies_peer(const intake_tls_ctx_t *ctx) { return ctx->verify_peer; }

/* ---- sessions ---------------------------------------------------------------------------- */

intake_tls_t *intake_tls_create(intake_tls_ctx_t *ctx, const char *server_name) {
  intake_tls_t *t = calloc(1, sizeof *t);
  if (t == NULL)
    return NULL;
  BIO *in = NULL;
  if ((t->ssl = SSL_new(ctx->ssl)) == NULL ||
      BIO_new_bio_pair(&in, TLS_OUT_BYTES, &t->_ext, TLS_IN_BYTES) != 1)
    goto fail;
  SSL_set_bio(t->ssl, in, in); /* ssl owns `in` now (one reference for both directions) */
  if (SSL_is_server(t->ssl)) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (server_name) {
      unsigned char ip[16];
      if (inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1) {
        /* An address is checked against the certificate's IP SANs and is never sent as SNI
         * (RFC 6066 allows host names only). */
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name) != 1)
          goto fail;
      } else if (SSL_set_tlsext_host_name(t->ssl, server_name) != 1 ||
                 SSL_set1_host(t->ssl, server_name) != 1) {
        goto fail;
      }
    }
  }
  return t;

fail:
  ERR_clear_error();
  intake_tls_destroy(t);
  return NULL;
}

void intake_tls_destroy(intake_tls_t *t) {
  if (t == NULL)
    return;
  SSL_free(t->ssl); /* frees the inner BIO */
  BIO_free(t->_ext);
  free(t);
}

size_t intake_tls_feed(intake_tls_t *t, const void *data, size_t len) {
  size_t done = 0;
  while (done < len) {
    size_t room;
    void *p = intake_tls_feed_space(t, &room);
    if (room == 0)
      break;
    if (room > len - done)
      room = len - done;
    memcpy(p, (const uint8_t *)data + done, room);
    intake_tls_feed_commit(t, room);
    done += room;
  }
  return done;
}

void *intake_tls_feed_space(intake_tls_t *t, size_t *len) {
  char *p = NULL;
  ssize_t n = BIO_nwrite0(t->_ext, &p);
  if (n <= 0) {
    *len = 0;
    return NULL;
  }
  *len = (size_t)n;
  return p;
}

void intake_tls_feed_commit(intake_tls_t *t, size_t n) {
  char *p;
  if (n > 0)
    (void)BIO_nwrite(t->_ext, &p, (int)n);
}

size_t intake_tls_in_pending(const intake_tls_t *t) {
  return BIO_ctrl_wpending(t->_ext); /* written to our end, not yet read by the SSL's end */
}

/* Turns a failed SSL call into a return code, recording why a session failed. */
static int io_result(intake_tls_t *t, int r) {
  int e = SSL_get_error(t->ssl, r);
  switch (e) {
  case SSL_ERROR_WANT_READ:
    return -EAGAIN;
  case SSL_ERROR_WANT_WRITE:
    return -ENOBUFS;
  case SSL_ERROR_ZERO_RETURN:
    t->state = INTAKE_TLS_CLOSED;
    return 0;
  default:
    break;
  }
  t->state = INTAKE_TLS_FAILED;
  unsigned long err = ERR_peek_error();
  long vr = SSL_get_verify_result(t->ssl);
  if (e == SSL_ERROR_SSL && ERR_GET_LIB(err) == ERR_LIB_SSL &&
      ERR_GET_REASON(err) == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK)
    snprintf(t->error, sizeof t->error, "certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
  else if (e == SSL_ERROR_SSL && err != 0)
    snprintf(t->error, sizeof t->error, "%s", ssl_reason("TLS error"));
  else
    snprintf(t->error, sizeof t->error, "%s", "unexpected end of TLS stream");
  ERR_clear_error();
  return -EPROTO;
}

int intake_tls_handshake(intake_tls_t *t) {
  if (t->state != INTAKE_TLS_HANDSHAKE)
    return t->state == INTAKE_TLS_FAILED ? -EPROTO : 0;
  /* SSL_get_error() reads this thread's error queue: it must hold nothing older than the call. */
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->state = INTAKE_TLS_OPEN;
    return 0;
  }
  r = io_result(t, r);
  return r == 0 ? -EPROTO : r; /* close_notify in the middle of a handshake: a failure */
}

ssize_t intake_tls_read(intake_tls_t *t, void *buf, size_t cap) {
  if (t->state == INTAKE_TLS_FAILED)
    return -EPROTO;
  if (t->state == INTAKE_TLS_CLOSED)
    return 0;
  if (t->state == INTAKE_TLS_HANDSHAKE) {
    int r = intake_tls_handshake(t);
    if (r < 0)
      return r;
  }
  ERR_clear_error();
  size_t n = 0;
  int r = SSL_read_ex(t->ssl, buf, cap, &n);
  if (r == 1)
    return (ssize_t)n;
  return io_result(t, r);
}

ssize_t intake_tls_write(intake_tls_t *t, const void *data, size_t len) {
  /* A peer's close_notify ends only its direction: a gateway that half-closes after its last
   * batch still gets their acks. */
  if (t->state == INTAKE_TLS_FAILED)
    return -EPROTO;
  if (SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN)
    return -EPIPE;
  ERR_clear_error();
  size_t n = 0;
  int r = SSL_write_ex(t->ssl, data, len > TLS_RECORD_MAX ? TLS_RECORD_MAX : len, &n);
  if (r == 1) {
    if (t->state == INTAKE_TLS_HANDSHAKE) /* the write finished the handshake */
      t->state = INTAKE_TLS_OPEN;
    return (ssize_t)n;
  }
  return io_result(t, r);
}

void intake_tls_close_notify(intake_tls_t *t) {
  if (t->state != INTAKE_TLS_OPEN && t->state != INTAKE_TLS_CLOSED)
    return;
  ERR_clear_error();
  (void)SSL_shutdown(t->ssl); /* 0: sent, the peer's answer is not awaited */
  ERR_clear_error();
}

size_t intake_tls_out_pending(const intake_tls_t *t) { return BIO_ctrl_pending(t->_ext); }

size_t intake_tls_take(intake_tls_t *t, void *dst, size_t cap) {
  size_t done = 0;
  while (done < cap) {
    int chunk = cap - done > INT32_MAX ? INT32_MAX : (int)(cap - done);
    int n = BIO_read(t->_ext, (uint8_t *)dst + done, chunk);
    if (n <= 0)
      break;
    done += (size_t)n;
  }
  return done;
}

intake_tls_state_t intake_tls_state(const intake_tls_t *t) { return t->state; }
const char *intake_tls_error(const intake_tls_t *t) { return t->error; }
const char *intake_tls_version(const intake_tls_t *t) { return SSL_get_version(t->ssl); }
const char *intake_tls_cipher(const intake_tls_t *t) { return SSL_get_cipher_name(t->ssl); }

/* The peer's certificate, only when it was verified. */
static X509 *verified_peer(const intake_tls_t *t) {
  if (t->state != INTAKE_TLS_OPEN && t->state != INTAKE_TLS_CLOSED)
    return NULL;
  X509 *x = SSL_get0_peer_certificate(t->ssl);
  /* The result is X509_V_OK also when no certificate was presented: hence both checks. */
  return x && SSL_get_verify_result(t->ssl) == X509_V_OK ? x : NULL;
}

static bool asn1_equals(const ASN1_STRING *s, const char *id, size_t len) {
  return (size_t)ASN1_STRING_length(s) == len && memcmp(ASN1_STRING_get0_data(s), id, len) == 0;
}

bool intake_tls_peer_matches(const intake_tls_t *t, const char *id) {
  X509 *x = verified_peer(t);
  size_t len = strlen(id);
  if (x == NULL || len == 0)
    return false;
  /* Compared explicitly rather than with X509_check_host(): that folds case, may skip the CN
   * when DNS names exist, and takes gateway ids for host names (which they need not be). */
  bool match = false;
  GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !match; i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
    match = g->type == GEN_DNS && asn1_equals(g->d.dNSName, id, len);
  }
  GENERAL_NAMES_free(names);
  const X509_NAME *subj = X509_get_subject_name(x);
  for (int i = -1; !match && (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;) {
    /* A CN may be any string type (PrintableString, UTF8String, BMPString): compare its UTF-8. */
    unsigned char *u = NULL;
    int n = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
    match = n >= 0 && (size_t)n == len && memcmp(u, id, len) == 0;
    OPENSSL_free(u);
  }
  ERR_clear_error();
  return match;
}

void intake_tls_peer_cn(const intake_tls_t *t, char *buf, size_t len) {
  if (len == 0)
    return;
  buf[0] = '\0';
  X509 *x = verified_peer(t);
  if (x == NULL)
    return;
  const X509_NAME *subj = X509_get_subject_name(x);
  int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
  unsigned char *u = NULL;
  int n = i < 0 ? -1 : ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
  size_t k = 0;
  for (; n > 0 && k < (size_t)n && k + 1 < len; k++)
    buf[k] = (u[k] > 0x20 && u[k] < 0x7f) ? (char)u[k] : '_';
  buf[k] = '\0';
  OPENSSL_free(u);
  ERR_clear_error();
}
