/* SPDX-License-Identifier: MIT */
/* TLS over OpenSSL 3 for hopperd's links and hopperctl: contexts built
 * with one policy, the non-blocking operations mapped to what an event loop
 * waits for, and a small stream (fd + optional SSL) for the relay threads
 * and hopperctl, which wait with poll(2).
 *
 * Policy, the same for every context (docs/SECURITY.md, TLS): TLS 1.2 at
 * least (1.3 preferred: OpenSSL negotiates the highest), no renegotiation,
 * no compression, OpenSSL's default cipher lists unless `ciphers` /
 * `ciphersuites` are given, no session resumption on the server side (no
 * cache, no tickets: every connection proves its certificate). A private
 * key file that its group or others may access is refused, as OpenSSH
 * refuses such private keys; an encrypted key is refused (nobody is there
 * to type its passphrase).
 *
 * A server context may carry an identity check (hd_tls_check_fn): it runs
 * inside the handshake, after the client's certificate chain verified, on
 * the certificate's names (subject CNs and DNS subjectAltNames). When it
 * says no, the handshake fails with an alert and the reason is kept for
 * the log (hd_tls_note_set()).
 *
 * Threads: contexts are shared between threads (OpenSSL locks them;
 * SSL_new() takes a reference, so a context replaced on reload lives on in
 * the connections made from it). One SSL object belongs to one thread. The
 * OpenSSL error queue is per thread; every operation here clears it first.
 *
 * A leaf of hopperd_wire: it includes nothing of hopperd but netutil.h.
 */
#ifndef HOPPER_SRC_HOPPERD_TLS_H
#define HOPPER_SRC_HOPPERD_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum hd_tls_verify {
    HD_TLS_VERIFY_NONE = 0,
    HD_TLS_VERIFY_OPTIONAL = 1,
    HD_TLS_VERIFY_REQUIRED = 2
};

/* The setting a context could not be built from (for the caller's
 * FILE:LINE). */
enum hd_tls_field {
    HD_TLS_F_OTHER = 0,
    HD_TLS_F_CERT,
    HD_TLS_F_KEY,
    HD_TLS_F_CA,
    HD_TLS_F_CIPHERS,
    HD_TLS_F_CIPHERSUITES,
};

/* Why a TLS connection failed; each failure of a source is counted under
 * one (metrics: hopperd_source_tls_failures_total{reason}). */
enum hd_tls_fail {
    HD_TLS_FAIL_HANDSHAKE = 0, /* no TLS (plaintext), no common version or cipher, bad message */
    HD_TLS_FAIL_NO_CERT,       /* tls_verify_client = required and no certificate came */
    HD_TLS_FAIL_VERIFY,        /* the certificate did not verify (unknown CA, expired...) */
    HD_TLS_FAIL_NOT_ALLOWED,   /* verified, but none of its names is allowed */
    HD_TLS_FAIL_RECORD,        /* after the handshake: a bad record, a fatal alert */
    HD_TLS_FAIL_NKINDS
};
extern const char *const hd_tls_fail_names[HD_TLS_FAIL_NKINDS];

#define HD_TLS_NOTE_LEN 160 /* the identity check's reason for a refusal */
/* OpenSSL's read buffer per connection: reads run ahead, a read(2) takes
 * up to this much (many records). Records read ahead are invisible to
 * poll/epoll: read until WANT_READ before waiting. */
#define HD_TLS_READ_BUF (64 * 1024)
#define HD_TLS_MAX_NAMES 32 /* certificate names looked at */

/* May a client whose verified certificate carries names[0..n) connect?
 * 1 yes; 0 no, with the reason in why. */
typedef int hd_tls_check_fn(void *arg, const char *const *names, size_t n, char *why,
                            size_t whylen);

struct hd_tls_settings {
    int is_server;
    const char *cert;         /* PEM chain, leaf first; NULL or "" = none (a client without one) */
    const char *key;          /* PEM private key of cert */
    const char *ca;           /* PEM bundle: server: verifies clients; client: verifies the server,
                               * NULL or "" = the system's trust store */
    int verify;               /* server: enum hd_tls_verify (a client always verifies) */
    const char *ciphers;      /* TLS 1.2 cipher list; NULL or "" = OpenSSL's default */
    const char *ciphersuites; /* TLS 1.3 suites; NULL or "" = OpenSSL's default */
    hd_tls_check_fn *check;   /* server: identity check, or NULL */
    void *check_arg;          /* passed to check; the context owns it from here on ... */
    void (*check_free)(void *); /* ... and releases it with this (may be NULL) */
};

/* A context per s. NULL on failure, with *field (enum hd_tls_field) the
 * setting at fault and err "PATH: reason"; check_arg is released then too. */
SSL_CTX *hd_tls_ctx_new(const struct hd_tls_settings *s, int *field, char *err, size_t errlen);

/* What an SSL operation that returned ret asks for next. */
enum hd_tls_io {
    HD_TLS_IO_DONE = 0,   /* it completed */
    HD_TLS_IO_WANT_READ,  /* call it again once the socket is readable */
    HD_TLS_IO_WANT_WRITE, /* ... writable */
    HD_TLS_IO_EOF,        /* the peer closed (close_notify, or the TCP stream ended) */
    HD_TLS_IO_ERROR,      /* fatal: describe it with hd_tls_describe() */
};
int hd_tls_io_status(SSL *ssl, int ret);

/* One step of a server-side handshake (SSL_do_handshake), the error queue
 * cleared first: enum hd_tls_io. */
int hd_tls_accept_step(SSL *ssl);
/* After a failed server handshake: enum hd_tls_fail and a reason in why
 * (the note of the identity check, the verification error, or OpenSSL's
 * reason). */
int hd_tls_classify(SSL *ssl, char *why, size_t whylen);
/* The reason for the last failure on this thread (OpenSSL's error queue or
 * errno), for logs; the queue is cleared. */
void hd_tls_describe(SSL *ssl, char *why, size_t whylen);
/* Attach note[HD_TLS_NOTE_LEN] to ssl: the identity check writes its
 * reason there. note must outlive ssl's handshake. */
void hd_tls_note_set(SSL *ssl, char *note);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384, peer CN=x" (peer "-" without one). */
void hd_tls_summary(SSL *ssl, char *out, size_t outlen);

/* The subject CNs and DNS subjectAltNames of cert (names with an embedded
 * NUL are skipped), copied into buf, pointed at by names[]; the count
 * (at most max). */
size_t hd_tls_cert_names(X509 *cert, char *buf, size_t buflen, const char **names, size_t max);

/* A client handshake on the connected socket fd (blocking or not; it is
 * non-blocking during the handshake): SNI and
 * the name check for server_name (a DNS name; an IP address is checked
 * against the certificate's IP addresses and sent without SNI). Waits with
 * poll(2), at most until deadline_ms (monotonic; 0 = none), giving up with
 * -ECANCELED when abort_fn (may be NULL) returns non-zero. 0 with *out, or
 * -errno (-EPROTO for a TLS failure) with the reason in err. */
int hd_tls_connect(SSL_CTX *ctx, int fd, const char *server_name, uint64_t deadline_ms,
                   int (*abort_fn)(void *), void *arg, SSL **out, char *err, size_t errlen);

/* A connection seen by a thread that waits with poll(2): plain when ssl is
 * NULL. Over a client SSL (hd_tls_connect) OpenSSL writes into a buffer
 * BIO that these functions flush to fd in large writes. */
struct hd_stream {
    int fd;
    SSL *ssl;
};
/* Read some into p[0..n): the count (> 0), 0 at EOF, -EAGAIN when nothing
 * is there now (*wait: the poll events to wait for), or -errno (-EPROTO: a
 * TLS failure; hd_tls_describe() says which). Never blocks on a
 * non-blocking fd. Over TLS, wait (poll) only after -EAGAIN: until then
 * OpenSSL may hold records it read ahead, which poll does not see. */
ssize_t hd_stream_recv(struct hd_stream *st, void *p, size_t n, short *wait);
/* Write all of p[0..n) (see hd_write_all(), netutil.h, for the waiting,
 * the deadline and abort_fn). 0 or -errno. */
int hd_stream_write_all(struct hd_stream *st, const void *p, size_t n, uint64_t deadline_ms,
                        int (*abort_fn)(void *), void *arg);
/* Our side is done, the peer's may go on: close_notify over TLS (flushed,
 * at most a second), shutdown(SHUT_WR) in plaintext. */
void hd_stream_shutdown(struct hd_stream *st);
/* Send close_notify when the connection is sound (not waiting for the
 * peer's), free the SSL, close fd. `broken`: an operation failed, so skip
 * close_notify. Leaves st->fd = -1, st->ssl = NULL. */
void hd_stream_close(struct hd_stream *st, int broken);

#endif
