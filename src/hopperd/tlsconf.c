/* SPDX-License-Identifier: MIT */
/* TLS contexts of a configuration (see tlsconf.h). */
#include "tlsconf.h"

#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"
#include "tls.h"

/* The identity check of a source's context: its own copy of the list. */
static int
check_names(void *arg, const char *const *names, size_t n, char *why, size_t whylen)
{
    return hd_auth_tls_names(arg, names, n, why, whylen);
}

static const char *
field_key(int field)
{
    switch (field) {
    case HD_TLS_F_CERT:
        return "tls_cert";
    case HD_TLS_F_KEY:
        return "tls_key";
    case HD_TLS_F_CA:
        return "tls_ca";
    case HD_TLS_F_CIPHERS:
        return "tls_ciphers";
    case HD_TLS_F_CIPHERSUITES:
        return "tls_ciphersuites";
    default:
        return "tls";
    }
}

static SSL_CTX *
build(const struct hd_config *cfg, const struct hd_section *sec, const char *kind,
      const struct hd_tls_conf *t, int is_server, char *err, size_t errlen)
{
    struct hd_tls_settings st = {
        .is_server = is_server,
        .cert = t->cert,
        .key = t->key,
        .ca = t->ca,
        .ciphers = t->ciphers,
        .ciphersuites = t->ciphersuites,
    };
    _Static_assert(HD_TLS_VERIFY_NONE == 0 && HD_TLS_VERIFY_OPTIONAL == 1 &&
                       HD_TLS_VERIFY_REQUIRED == 2,
                   "config.c verify_names order");
    st.verify = t->verify_client;
    if (is_server && t->allowed_peers[0] != '\0') {
        st.check = check_names;
        st.check_arg = strdup(t->allowed_peers);
        st.check_free = free;
        if (st.check_arg == NULL) {
            snprintf(err, errlen, "%s:%d: [%s %s]: out of memory", cfg->file, sec->line, kind,
                     sec->name);
            return NULL;
        }
    }
    int field;
    char why[HD_ERR_LEN];
    SSL_CTX *ctx = hd_tls_ctx_new(&st, &field, why, sizeof(why));
    if (ctx == NULL) {
        const char *key = field_key(field);
        snprintf(err, errlen, "%s:%d: [%s %s]: %s: %s", cfg->file,
                 hd_config_key_line(sec, kind, key), kind, sec->name, key, why);
    }
    return ctx;
}

void
hd_tls_contexts_free(SSL_CTX **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        SSL_CTX_free(v[i]);
        v[i] = NULL;
    }
}

int
hd_tls_contexts_new(const struct hd_config *cfg, SSL_CTX **src, SSL_CTX **sink, char *err,
                    size_t errlen)
{
    memset(src, 0, cfg->nsources * sizeof(*src));
    memset(sink, 0, cfg->nsinks * sizeof(*sink));
    for (size_t i = 0; i < cfg->nsources; i++) {
        const struct hd_source_conf *sc = &cfg->sources[i];
        if (sc->tls.enabled &&
            (src[i] = build(cfg, &sc->s, "source", &sc->tls, 1, err, errlen)) == NULL) {
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->nsinks; i++) {
        const struct hd_sink_conf *kc = &cfg->sinks[i];
        if (kc->tls.enabled &&
            (sink[i] = build(cfg, &kc->s, "sink", &kc->tls, 0, err, errlen)) == NULL) {
            goto fail;
        }
    }
    return 0;
fail:
    hd_tls_contexts_free(src, cfg->nsources);
    hd_tls_contexts_free(sink, cfg->nsinks);
    return -1;
}
