/* SPDX-License-Identifier: MIT */
/* TLS over OpenSSL 3 (see tls.h).
 *
 * The identity check lives in the context's ex_data (CTX_CHECK: a struct
 * check, freed with the context), so a context replaced on reload takes
 * its own list of allowed names with it and connections made from the old
 * one keep judging by the old one. The check's reason goes to the SSL's
 * ex_data (SSL_NOTE: a buffer owned by the caller).
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "netutil.h"

const char *const hd_tls_fail_names[HD_TLS_FAIL_NKINDS] = {
    "handshake", "no_certificate", "verify", "not_allowed", "record",
};

struct check {
    hd_tls_check_fn *fn;
    void *arg;
    void (*free_arg)(void *);
};

static int ctx_check_idx = -1; /* SSL_CTX ex_data: struct check * */
static int ssl_note_idx = -1;  /* SSL ex_data: char[HD_TLS_NOTE_LEN] */
static BIO_METHOD *out_method; /* client connections' write BIO (see out_flush()) */
static int out_type;           /* its BIO type */
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static BIO_METHOD *make_out_method(void);

static void
check_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    struct check *c = ptr;
    if (c != NULL) {
        if (c->free_arg != NULL) {
            c->free_arg(c->arg);
        }
        free(c);
    }
}

static void
make_indices(void)
{
    ctx_check_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, check_free);
    ssl_note_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    out_method = make_out_method();
}

static int
indices(void)
{
    pthread_once(&idx_once, make_indices);
    return ctx_check_idx >= 0 && ssl_note_idx >= 0 && out_method != NULL ? 0 : -1;
}

/* OpenSSL's reason for the oldest error of this thread ("no start line"),
 * or `dflt`; the queue is cleared. */
static void
ossl_reason(char *out, size_t outlen, const char *dflt)
{
    unsigned long e = ERR_get_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    if (r != NULL) {
        snprintf(out, outlen, "%s", r);
    } else if (e != 0) {
        ERR_error_string_n(e, out, outlen);
    } else {
        snprintf(out, outlen, "%s", dflt);
    }
    ERR_clear_error();
}

/* An encrypted key would make OpenSSL prompt on the terminal: refuse. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int
empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

/* A private key must be readable by its owner only (OpenSSH's rule). */
static int
key_mode_ok(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return 0;
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        snprintf(err, errlen,
                 "%s: private key is accessible by group or others (mode %04o); allow its "
                 "owner only (chmod 600)",
                 path, (unsigned)(st.st_mode & 07777));
        return 0;
    }
    return 1;
}

/* Server side, depth 0 of a chain that verified: the identity check. */
static int
verify_cb(int ok, X509_STORE_CTX *xs)
{
    if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0) {
        return ok;
    }
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    if (ssl == NULL) {
        return ok;
    }
    const struct check *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_check_idx);
    if (c == NULL || c->fn == NULL) {
        return ok;
    }
    char buf[4096];
    const char *names[HD_TLS_MAX_NAMES];
    size_t n = hd_tls_cert_names(X509_STORE_CTX_get_current_cert(xs), buf, sizeof(buf), names,
                                 HD_TLS_MAX_NAMES);
    char why[HD_TLS_NOTE_LEN];
    why[0] = '\0';
    if (c->fn(c->arg, names, n, why, sizeof(why))) {
        return 1;
    }
    char *note = SSL_get_ex_data(ssl, ssl_note_idx);
    if (note != NULL) {
        snprintf(note, HD_TLS_NOTE_LEN, "%s", why[0] != '\0' ? why : "identity refused");
    }
    X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

SSL_CTX *
hd_tls_ctx_new(const struct hd_tls_settings *s, int *field, char *err, size_t errlen)
{
    *field = HD_TLS_F_OTHER;
    SSL_CTX *ctx = NULL;
    struct check *chk = NULL;
    char why[256];
    if (indices() < 0) {
        snprintf(err, errlen, "OpenSSL: no ex_data index");
        goto fail;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(s->is_server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) {
        ossl_reason(why, sizeof(why), "out of memory");
        snprintf(err, errlen, "SSL_CTX_new: %s", why);
        goto fail;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        ossl_reason(why, sizeof(why), "cannot require TLS 1.2");
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Writes of a partly written buffer continue from its new address
     * (the native replies buffer grows) and may be short. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read ahead into a large buffer: one read(2) takes as many records as
     * the socket holds, not a 5-byte header and then one record body per
     * read(2). Records read ahead wait inside OpenSSL, where poll and
     * epoll cannot see them: every reader reads until OpenSSL wants the
     * socket before it waits (hd_stream_recv()'s callers; the listener
     * through SSL_has_pending(), conn.c). */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, HD_TLS_READ_BUF);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (s->is_server) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_CIPHER_SERVER_PREFERENCE);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    if (!empty(s->ciphers) && !SSL_CTX_set_cipher_list(ctx, s->ciphers)) {
        *field = HD_TLS_F_CIPHERS;
        ossl_reason(why, sizeof(why), "no usable cipher");
        snprintf(err, errlen, "'%s': %s", s->ciphers, why);
        goto fail;
    }
    if (!empty(s->ciphersuites) && !SSL_CTX_set_ciphersuites(ctx, s->ciphersuites)) {
        *field = HD_TLS_F_CIPHERSUITES;
        ossl_reason(why, sizeof(why), "no usable cipher suite");
        snprintf(err, errlen, "'%s': %s", s->ciphersuites, why);
        goto fail;
    }
    if (!empty(s->cert)) {
        if (SSL_CTX_use_certificate_chain_file(ctx, s->cert) != 1) {
            *field = HD_TLS_F_CERT;
            ossl_reason(why, sizeof(why), "cannot load");
            snprintf(err, errlen, "%s: %s", s->cert, why);
            goto fail;
        }
        if (!key_mode_ok(s->key, err, errlen)) {
            *field = HD_TLS_F_KEY;
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, s->key, SSL_FILETYPE_PEM) != 1) {
            *field = HD_TLS_F_KEY;
            int mismatch = ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH;
            ossl_reason(why, sizeof(why), "cannot load");
            snprintf(err, errlen,
                     mismatch ? "%s: the key does not match the certificate (%s)" : "%s: %s",
                     s->key, why);
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            *field = HD_TLS_F_KEY;
            ossl_reason(why, sizeof(why), "does not match");
            snprintf(err, errlen, "%s: the key does not match the certificate %s (%s)", s->key,
                     s->cert, why);
            goto fail;
        }
    }
    if (!empty(s->ca)) {
        if (SSL_CTX_load_verify_locations(ctx, s->ca, NULL) != 1) {
            *field = HD_TLS_F_CA;
            ossl_reason(why, sizeof(why), "cannot load");
            snprintf(err, errlen, "%s: %s", s->ca, why);
            goto fail;
        }
        if (s->is_server) {
            /* Tell clients which CAs are accepted, so those holding several
             * certificates can pick. */
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->ca);
            if (names == NULL) {
                *field = HD_TLS_F_CA;
                ossl_reason(why, sizeof(why), "no certificate in it");
                snprintf(err, errlen, "%s: %s", s->ca, why);
                goto fail;
            }
            SSL_CTX_set_client_CA_list(ctx, names);
        }
    } else if (!s->is_server && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        *field = HD_TLS_F_CA;
        ossl_reason(why, sizeof(why), "cannot load");
        snprintf(err, errlen, "the system's trust store: %s", why);
        goto fail;
    }
    if (s->is_server) {
        int mode = SSL_VERIFY_NONE;
        if (s->verify == HD_TLS_VERIFY_REQUIRED) {
            mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        } else if (s->verify == HD_TLS_VERIFY_OPTIONAL) {
            mode = SSL_VERIFY_PEER;
        }
        SSL_CTX_set_verify(ctx, mode, s->check != NULL ? verify_cb : NULL);
        if (s->check != NULL) {
            chk = calloc(1, sizeof(*chk));
            if (chk == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            chk->fn = s->check;
            chk->arg = s->check_arg;
            chk->free_arg = s->check_free;
            if (!SSL_CTX_set_ex_data(ctx, ctx_check_idx, chk)) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            chk = NULL; /* the context's now */
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
fail:
    if (chk != NULL) {
        free(chk);
    }
    if (ctx != NULL && SSL_CTX_get_ex_data(ctx, ctx_check_idx) != NULL) {
        SSL_CTX_free(ctx); /* frees check_arg through check_free() */
    } else {
        SSL_CTX_free(ctx);
        if (s->check_free != NULL) {
            s->check_free(s->check_arg);
        }
    }
    ERR_clear_error();
    return NULL;
}

int
hd_tls_io_status(SSL *ssl, int ret)
{
    if (ret > 0) {
        return HD_TLS_IO_DONE;
    }
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        return HD_TLS_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return HD_TLS_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return HD_TLS_IO_EOF;
    case SSL_ERROR_SYSCALL:
        /* The stream ended without close_notify (errno 0, empty queue). */
        if (ERR_peek_error() == 0 && errno == 0) {
            return HD_TLS_IO_EOF;
        }
        return HD_TLS_IO_ERROR;
    case SSL_ERROR_SSL:
        if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return HD_TLS_IO_EOF;
        }
        return HD_TLS_IO_ERROR;
    default:
        return HD_TLS_IO_ERROR;
    }
}

int
hd_tls_accept_step(SSL *ssl)
{
    ERR_clear_error();
    errno = 0;
    return hd_tls_io_status(ssl, SSL_do_handshake(ssl));
}

void
hd_tls_describe(SSL *ssl, char *why, size_t whylen)
{
    int e = errno;
    long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (ERR_peek_error() != 0) {
        ossl_reason(why, whylen, "TLS error");
    } else if (vr != X509_V_OK) {
        snprintf(why, whylen, "certificate: %s", X509_verify_cert_error_string(vr));
    } else if (e != 0) {
        snprintf(why, whylen, "%s", strerror(e));
    } else {
        snprintf(why, whylen, "connection closed");
    }
}

int
hd_tls_classify(SSL *ssl, char *why, size_t whylen)
{
    long vr = SSL_get_verify_result(ssl);
    const char *note = SSL_get_ex_data(ssl, ssl_note_idx);
    unsigned long e = ERR_peek_error();
    int kind = HD_TLS_FAIL_HANDSHAKE;
    if (vr == X509_V_ERR_APPLICATION_VERIFICATION && note != NULL && note[0] != '\0') {
        snprintf(why, whylen, "%s", note);
        kind = HD_TLS_FAIL_NOT_ALLOWED;
    } else if (vr != X509_V_OK) {
        snprintf(why, whylen, "certificate verification failed: %s",
                 X509_verify_cert_error_string(vr));
        kind = HD_TLS_FAIL_VERIFY;
    } else if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
               ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        snprintf(why, whylen, "no client certificate (tls_verify_client = required)");
        kind = HD_TLS_FAIL_NO_CERT;
    } else {
        hd_tls_describe(ssl, why, whylen);
        if (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST ||
            ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER ||
            ERR_GET_REASON(e) == SSL_R_PACKET_LENGTH_TOO_LONG ||
            ERR_GET_REASON(e) == SSL_R_RECORD_LENGTH_MISMATCH) {
            size_t used = strlen(why);
            snprintf(why + used, whylen - used, " (not TLS: plaintext to a TLS port?)");
        }
    }
    ERR_clear_error();
    return kind;
}

void
hd_tls_note_set(SSL *ssl, char *note)
{
    if (indices() == 0) {
        note[0] = '\0';
        SSL_set_ex_data(ssl, ssl_note_idx, note);
    }
}

void
hd_tls_summary(SSL *ssl, char *out, size_t outlen)
{
    const char *cn = "-";
    char buf[512];
    const char *names[1];
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer != NULL && hd_tls_cert_names(peer, buf, sizeof(buf), names, 1) == 1) {
        cn = names[0];
    }
    snprintf(out, outlen, "%s %s, peer %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl), cn);
}

/* Append s[0..n) to the names unless it holds a NUL (a forged name). */
static size_t
add_name(const unsigned char *s, int n, char *buf, size_t buflen, size_t *used, const char **names,
         size_t count, size_t max)
{
    if (n <= 0 || count >= max || memchr(s, '\0', (size_t)n) != NULL ||
        *used + (size_t)n + 1 > buflen) {
        return count;
    }
    memcpy(buf + *used, s, (size_t)n);
    buf[*used + (size_t)n] = '\0';
    names[count] = buf + *used;
    *used += (size_t)n + 1;
    return count + 1;
}

size_t
hd_tls_cert_names(X509 *cert, char *buf, size_t buflen, const char **names, size_t max)
{
    size_t count = 0, used = 0;
    if (cert == NULL) {
        return 0;
    }
    X509_NAME *subj = X509_get_subject_name(cert);
    for (int i = -1;
         subj != NULL && (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;) {
        ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, d);
        if (n >= 0) {
            count = add_name(utf8, n, buf, buflen, &used, names, count, max);
            OPENSSL_free(utf8);
        }
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS) {
            count = add_name(ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName),
                             buf, buflen, &used, names, count, max);
        }
    }
    GENERAL_NAMES_free(sans);
    return count;
}

/* Client connections (hd_tls_connect) write through a BIO of ours:
 * OpenSSL encrypts a whole batch into it, one 16 KiB record after another,
 * and it goes to the socket in large writes here, not in a write(2) per
 * record (that syscall per record was the largest cost of a TLS sink's
 * drain). A memory BIO did this before, but BIO_reset() clears its whole
 * buffer (memset) on every flush: 5 % of a TLS drain's CPU. This one only
 * appends, and is emptied by setting its length to 0. */
struct outbuf {
    unsigned char *p;
    size_t len, cap;
};

static int
out_write(BIO *b, const char *in, int inl)
{
    struct outbuf *o = BIO_get_data(b);
    if (o == NULL || inl < 0) {
        return -1;
    }
    size_t n = (size_t)inl;
    if (o->len + n > o->cap) {
        size_t ncap = o->cap > 0 ? o->cap : 64 * 1024;
        while (ncap < o->len + n) {
            ncap *= 2;
        }
        unsigned char *np = realloc(o->p, ncap);
        if (np == NULL) {
            return -1;
        }
        o->p = np;
        o->cap = ncap;
    }
    memcpy(o->p + o->len, in, n);
    o->len += n;
    return inl;
}

static long
out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    const struct outbuf *o = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* out_flush() writes it out, after the SSL call returns */
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING:
        return o != NULL ? (long)o->len : 0;
    default:
        return 0;
    }
}

static int
out_create(BIO *b)
{
    struct outbuf *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        return 0;
    }
    BIO_set_data(b, o);
    BIO_set_init(b, 1);
    return 1;
}

static int
out_destroy(BIO *b)
{
    struct outbuf *o = BIO_get_data(b);
    if (o != NULL) {
        free(o->p);
        free(o);
        BIO_set_data(b, NULL);
    }
    return 1;
}

static BIO_METHOD *
make_out_method(void)
{
    int index = BIO_get_new_index();
    out_type = index > 0 ? index | BIO_TYPE_SOURCE_SINK : 0;
    BIO_METHOD *m = index > 0 ? BIO_meth_new(out_type, "hopperd out") : NULL;
    if (m == NULL || !BIO_meth_set_write(m, out_write) || !BIO_meth_set_ctrl(m, out_ctrl) ||
        !BIO_meth_set_create(m, out_create) || !BIO_meth_set_destroy(m, out_destroy)) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

/* Write what ssl's out BIO holds to fd (waiting as hd_write_all() does)
 * and empty it. 0 or -errno. Connections with a socket BIO (the
 * listener's) have nothing to flush. */
static int
out_flush(SSL *ssl, int fd, uint64_t deadline_ms, int (*abort_fn)(void *), void *arg)
{
    BIO *wb = SSL_get_wbio(ssl);
    if (wb == NULL || BIO_method_type(wb) != out_type) {
        return 0;
    }
    struct outbuf *o = BIO_get_data(wb);
    if (o == NULL || o->len == 0) {
        return 0;
    }
    int rc = hd_write_all(fd, o->p, o->len, 1, deadline_ms, abort_fn, arg);
    o->len = 0;
    return rc;
}

/* Flush the out BIO when it holds this much, within a batch. */
#define OUT_FLUSH_AT (256 * 1024)

int
hd_tls_connect(SSL_CTX *ctx, int fd, const char *server_name, uint64_t deadline_ms,
               int (*abort_fn)(void *), void *arg, SSL **out, char *err, size_t errlen)
{
    *out = NULL;
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new_socket(fd, BIO_NOCLOSE);
    BIO *wb = indices() == 0 ? BIO_new(out_method) : NULL;
    if (ssl == NULL || rb == NULL || wb == NULL) {
        char why[256];
        ossl_reason(why, sizeof(why), "out of memory");
        snprintf(err, errlen, "TLS: %s", why);
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(ssl);
        return -ENOMEM;
    }
    SSL_set_bio(ssl, rb, wb); /* the SSL owns both now */
    unsigned char ip[16];
    int is_ip =
        inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1;
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name)
                   : SSL_set_tlsext_host_name(ssl, server_name) && SSL_set1_host(ssl, server_name);
    if (!ok) {
        snprintf(err, errlen, "TLS: bad server name '%s'", server_name);
        SSL_free(ssl);
        return -EINVAL;
    }
    SSL_set_connect_state(ssl);
    /* Non-blocking for the handshake, whatever the caller's socket is: a
     * flight waits in the out BIO until SSL_do_handshake() returns, so
     * a read blocking inside it would wait for a reply to nothing. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) {
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int st = hd_tls_io_status(ssl, SSL_do_handshake(ssl));
        int rc = out_flush(ssl, fd, deadline_ms, abort_fn, arg);
        if (rc < 0) {
            snprintf(err, errlen, "TLS handshake with %s: %s", server_name, strerror(-rc));
            SSL_free(ssl);
            return rc;
        }
        if (st == HD_TLS_IO_DONE) {
            if (fl >= 0 && !(fl & O_NONBLOCK)) {
                fcntl(fd, F_SETFL, fl);
            }
            *out = ssl;
            return 0;
        }
        if (st == HD_TLS_IO_WANT_READ || st == HD_TLS_IO_WANT_WRITE) {
            rc = hd_net_wait(fd, st == HD_TLS_IO_WANT_READ ? POLLIN : POLLOUT, deadline_ms,
                             abort_fn, arg);
            if (rc < 0) {
                snprintf(err, errlen, "TLS handshake with %s: %s", server_name, strerror(-rc));
                SSL_free(ssl);
                return rc;
            }
            continue;
        }
        char why[256];
        hd_tls_describe(ssl, why, sizeof(why));
        snprintf(err, errlen, "TLS handshake with %s: %s", server_name, why);
        SSL_free(ssl);
        return -EPROTO;
    }
}

ssize_t
hd_stream_recv(struct hd_stream *st, void *p, size_t n, short *wait)
{
    *wait = POLLIN;
    if (st->ssl == NULL) {
        for (;;) {
            ssize_t got = recv(st->fd, p, n, MSG_DONTWAIT);
            if (got >= 0) {
                return got;
            }
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(st->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    int status = hd_tls_io_status(st->ssl, r);
    /* A read may have made OpenSSL answer something (an alert, a key
     * update): it goes out now. */
    int frc = out_flush(st->ssl, st->fd, hd_now_ms() + 5000, NULL, NULL);
    if (frc < 0 && status != HD_TLS_IO_EOF) {
        return frc;
    }
    switch (status) {
    case HD_TLS_IO_DONE:
        return r;
    case HD_TLS_IO_WANT_READ:
        return -EAGAIN;
    case HD_TLS_IO_WANT_WRITE:
        *wait = POLLOUT;
        return -EAGAIN;
    case HD_TLS_IO_EOF:
        return 0;
    default:
        return errno != 0 && ERR_peek_error() == 0 ? -errno : -EPROTO;
    }
}

int
hd_stream_write_all(struct hd_stream *st, const void *p, size_t n, uint64_t deadline_ms,
                    int (*abort_fn)(void *), void *arg)
{
    if (st->ssl == NULL) {
        return hd_write_all(st->fd, p, n, 1, deadline_ms, abort_fn, arg);
    }
    const uint8_t *b = p;
    BIO *wb = SSL_get_wbio(st->ssl);
    while (n > 0) {
        ERR_clear_error();
        errno = 0;
        int w = SSL_write(st->ssl, b, n > INT32_MAX ? INT32_MAX : (int)n);
        int status = hd_tls_io_status(st->ssl, w);
        if (status == HD_TLS_IO_DONE) {
            b += w;
            n -= (size_t)w;
            if (BIO_pending(wb) >= OUT_FLUSH_AT) {
                int rc = out_flush(st->ssl, st->fd, deadline_ms, abort_fn, arg);
                if (rc < 0) {
                    return rc;
                }
            }
            continue;
        }
        if (status != HD_TLS_IO_WANT_READ && status != HD_TLS_IO_WANT_WRITE) {
            return errno != 0 && ERR_peek_error() == 0 ? -errno
                   : status == HD_TLS_IO_EOF           ? -EPIPE
                                                       : -EPROTO;
        }
        int rc = out_flush(st->ssl, st->fd, deadline_ms, abort_fn, arg);
        if (rc == 0) {
            rc = hd_net_wait(st->fd, status == HD_TLS_IO_WANT_READ ? POLLIN : POLLOUT,
                             deadline_ms, abort_fn, arg);
        }
        if (rc < 0) {
            return rc;
        }
    }
    /* Written means handed to the kernel, as for plaintext: the relay
     * acknowledges the batch after this returns. */
    return out_flush(st->ssl, st->fd, deadline_ms, abort_fn, arg);
}

void
hd_stream_shutdown(struct hd_stream *st)
{
    if (st->ssl == NULL) {
        shutdown(st->fd, SHUT_WR);
        return;
    }
    ERR_clear_error();
    SSL_shutdown(st->ssl);
    /* At most a second for it: a peer that reads nothing more must not
     * hold the caller. */
    (void)out_flush(st->ssl, st->fd, hd_now_ms() + 1000, NULL, NULL);
    ERR_clear_error();
}

void
hd_stream_close(struct hd_stream *st, int broken)
{
    if (st->ssl != NULL) {
        if (!broken) {
            hd_stream_shutdown(st); /* close_notify; the peer's is not waited for */
        }
        ERR_clear_error();
        SSL_free(st->ssl);
        st->ssl = NULL;
    }
    if (st->fd >= 0) {
        close(st->fd);
        st->fd = -1;
    }
}
