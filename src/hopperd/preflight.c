/* SPDX-License-Identifier: MIT */
/* Preflight checks (see preflight.h). Nothing here binds, creates or
 * changes anything: it resolves addresses, stats paths and asks access(2). */
#include "preflight.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "netutil.h"
#include "tlsconf.h"

/* A tcp listener of the configuration: a source or the metrics endpoint. */
struct tcp_listener {
    char what[HD_NAME_MAX + 32]; /* "[source a]: listen" */
    const char *addr;            /* as configured */
    int line;
    struct sockaddr_storage ss;        /* what it would bind */
    char shown[2 * HD_ADDR_MAX + 4]; /* "addr" or "addr (what it binds)" */
};

struct pf {
    const struct hd_config *cfg;
    char *err;
    size_t errlen;
    hd_preflight_warn_fn *warn;
    void *arg;
};

static int pf_error(struct pf *pf, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
pf_error(struct pf *pf, int line, const char *fmt, ...)
{
    char msg[HD_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line > 0) {
        snprintf(pf->err, pf->errlen, "%s:%d: %s", pf->cfg->file, line, msg);
    } else {
        snprintf(pf->err, pf->errlen, "%s: %s", pf->cfg->file, msg);
    }
    return -1;
}

static uint16_t
port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6) {
        return ((const struct sockaddr_in6 *)(const void *)ss)->sin6_port;
    }
    return ((const struct sockaddr_in *)(const void *)ss)->sin_port;
}

/* An IPv4-mapped IPv6 address as the IPv4 address it is; others as they are. */
static void
unmap(const struct sockaddr_storage *in, struct sockaddr_storage *out)
{
    *out = *in;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)in;
    if (in->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)out;
        memset(out, 0, sizeof(*out));
        s4->sin_family = AF_INET;
        s4->sin_port = s6->sin6_port;
        memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
    }
}

static int
is_any(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        return ((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr);
}

/* Would binding both fail with EADDRINUSE? The same port and the same
 * address, or a wildcard on the port: 0.0.0.0 overlaps every IPv4 address,
 * :: every address of both families (Linux binds :: dual-stack unless
 * net.ipv6.bindv6only is set). */
static int
clash(const struct sockaddr_storage *x, const struct sockaddr_storage *y)
{
    struct sockaddr_storage a, b;
    unmap(x, &a);
    unmap(y, &b);
    if (port_of(&a) != port_of(&b)) {
        return 0;
    }
    if (a.ss_family != b.ss_family) {
        return (a.ss_family == AF_INET6 && is_any(&a)) || (b.ss_family == AF_INET6 && is_any(&b));
    }
    if (is_any(&a) || is_any(&b)) {
        return 1;
    }
    if (a.ss_family == AF_INET) {
        return ((struct sockaddr_in *)(void *)&a)->sin_addr.s_addr ==
               ((struct sockaddr_in *)(void *)&b)->sin_addr.s_addr;
    }
    return memcmp(&((struct sockaddr_in6 *)(void *)&a)->sin6_addr,
                  &((struct sockaddr_in6 *)(void *)&b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

static int
check_tcp(struct pf *pf)
{
    const struct hd_config *cfg = pf->cfg;
    struct tcp_listener *l = calloc(cfg->nsources + 1, sizeof(*l));
    if (l == NULL) {
        return pf_error(pf, 0, "out of memory");
    }
    int rc = 0;
    size_t n = 0;
    for (size_t i = 0; i <= cfg->nsources; i++) {
        struct tcp_listener *t = &l[n];
        const struct hd_tls_conf *tls = NULL;
        if (i < cfg->nsources && cfg->sources[i].type == HD_SRC_TCP) {
            tls = cfg->sources[i].tls.enabled ? &cfg->sources[i].tls : NULL;
            const struct hd_source_conf *s = &cfg->sources[i];
            snprintf(t->what, sizeof(t->what), "[source %s]: listen", s->s.name);
            t->addr = s->listen;
            t->line = hd_config_key_line(&s->s, "source", "listen");
        } else if (i == cfg->nsources && cfg->metrics_listen[0] != '\0') {
            snprintf(t->what, sizeof(t->what), "[hopperd]: metrics_listen");
            t->addr = cfg->metrics_listen;
            t->line = hd_config_key_line(&cfg->main, "hopperd", "metrics_listen");
        } else {
            continue;
        }
        char why[HD_ERR_LEN];
        if (hd_net_resolve_listen(t->addr, &t->ss, why, sizeof(why)) < 0) {
            rc = pf_error(pf, t->line, "%s = %s: %s", t->what, t->addr, why);
            break;
        }
        char bound[HD_ADDR_MAX];
        hd_net_addr_str((const struct sockaddr *)&t->ss, bound, sizeof(bound));
        snprintf(t->shown, sizeof(t->shown), strcmp(bound, t->addr) == 0 ? "%s" : "%s (%s)",
                 t->addr, bound);
        for (size_t j = 0; j < n && rc == 0; j++) {
            if (clash(&l[j].ss, &t->ss)) {
                rc = pf_error(pf, t->line,
                              "%s = %s clashes with %s = %s at line %d: only one of them can "
                              "bind it",
                              t->what, t->shown, l[j].what, l[j].shown, l[j].line);
            }
        }
        if (rc < 0) {
            break;
        }
        /* A TLS source that verifies its clients (tls_verify_client =
         * required) is meant to face the network. */
        int authenticated = tls != NULL && tls->verify_client == 2;
        if (!hd_net_is_loopback((const struct sockaddr *)&t->ss) && pf->warn != NULL &&
            !authenticated) {
            char msg[sizeof(t->what) + 2 * HD_ADDR_MAX + 160];
            snprintf(msg, sizeof(msg),
                     "%s = %s binds %s, which is not a loopback address: anyone who can reach "
                     "this host may connect%s",
                     t->what, t->addr, bound,
                     tls == NULL ? ", and everything travels in plaintext (no TLS)"
                                 : " (tls_verify_client is not required)");
            pf->warn(pf->arg, msg);
        }
        n++;
    }
    free(l);
    return rc;
}

/* `path` made absolute (against the working directory) with "//", "/./"
 * and "dir/.." removed, without looking at the file system. */
static void
normalize(const char *path, char *out, size_t outlen)
{
    char buf[2 * HD_PATH_MAX];
    char cwd[HD_PATH_MAX];
    if (path[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL) {
        snprintf(buf, sizeof(buf), "%s/%s", cwd, path);
    } else {
        snprintf(buf, sizeof(buf), "%s", path);
    }
    size_t o = 0;
    out[0] = '\0';
    for (char *save = NULL, *c = strtok_r(buf, "/", &save); c != NULL;
         c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, ".") == 0) {
            continue;
        }
        if (strcmp(c, "..") == 0) {
            char *slash = strrchr(out, '/');
            o = slash != NULL ? (size_t)(slash - out) : 0;
            out[o] = '\0';
            continue;
        }
        int w = snprintf(out + o, outlen - o, "/%s", c);
        o = w > 0 && (size_t)w < outlen - o ? o + (size_t)w : outlen - 1;
    }
    if (o == 0) {
        snprintf(out, outlen, "/");
    }
}

/* The directory part of `path` ("." for a bare name, "/" for the root). */
static void
dir_of(const char *path, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", path);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') {
        out[--n] = '\0';
    }
    char *slash = strrchr(out, '/');
    if (slash == NULL) {
        snprintf(out, outlen, ".");
    } else if (slash == out) {
        out[1] = '\0';
    } else {
        *slash = '\0';
    }
}

/* A directory hopperd writes into: 0 when it is one and writable, 1 when
 * it does not exist, or -1 with the reason in why. */
static int
writable_dir(const char *dir, char *why, size_t len)
{
    struct stat st;
    if (stat(dir, &st) < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return 1; /* missing, or below something that is not a directory */
        }
        snprintf(why, len, "%s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, len, "%s is not a directory", dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) < 0) {
        snprintf(why, len, "%s is not writable (%s)", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* state_dir is a writable directory, or its nearest existing ancestor is
 * one (hopperd creates the missing part); each queue's directory in it,
 * where it exists, too. */
static int
check_state_dir(struct pf *pf)
{
    const struct hd_config *cfg = pf->cfg;
    int line = hd_config_key_line(&cfg->main, "hopperd", "state_dir");
    char why[HD_ERR_LEN];
    int rc = writable_dir(cfg->state_dir, why, sizeof(why));
    if (rc < 0) {
        return pf_error(pf, line, "state_dir = %s: %s", cfg->state_dir, why);
    }
    if (rc == 0) {
        for (size_t i = 0; i < cfg->nqueues; i++) {
            char qdir[HD_PATH_MAX + HD_NAME_MAX + 2];
            snprintf(qdir, sizeof(qdir), "%s/%s", cfg->state_dir, cfg->queues[i].s.name);
            if (writable_dir(qdir, why, sizeof(why)) < 0) {
                return pf_error(pf, cfg->queues[i].s.line, "[queue %s]: %s", cfg->queues[i].s.name,
                                why);
            }
        }
        return 0;
    }
    char anc[HD_PATH_MAX], below[HD_PATH_MAX];
    snprintf(anc, sizeof(anc), "%s", cfg->state_dir);
    do {
        memcpy(below, anc, sizeof(below));
        dir_of(below, anc, sizeof(anc));
        rc = writable_dir(anc, why, sizeof(why));
    } while (rc == 1 && strcmp(anc, ".") != 0 && strcmp(anc, "/") != 0);
    if (rc != 0) {
        return pf_error(pf, line, "state_dir = %s cannot be created: %s", cfg->state_dir,
                        rc < 0 ? why : "no existing parent directory");
    }
    return 0;
}

/* Unix sources: no two on one path; the path is free or a stale socket
 * (anything else makes the start fail), in a writable directory that exists
 * or is state_dir (created before the sources are bound). */
static int
check_unix(struct pf *pf)
{
    const struct hd_config *cfg = pf->cfg;
    char state[HD_PATH_MAX];
    normalize(cfg->state_dir, state, sizeof(state));
    for (size_t i = 0; i < cfg->nsources; i++) {
        const struct hd_source_conf *s = &cfg->sources[i];
        if (s->type != HD_SRC_UNIX) {
            continue;
        }
        int line = hd_config_key_line(&s->s, "source", "path");
        char mine[HD_PATH_MAX];
        normalize(s->path, mine, sizeof(mine));
        for (size_t j = 0; j < i; j++) {
            const struct hd_source_conf *o = &cfg->sources[j];
            char theirs[HD_PATH_MAX];
            if (o->type != HD_SRC_UNIX) {
                continue;
            }
            normalize(o->path, theirs, sizeof(theirs));
            if (strcmp(mine, theirs) == 0) {
                return pf_error(pf, line,
                                "[source %s]: path = %s is the socket of [source %s] (line %d) too",
                                s->s.name, s->path, o->s.name,
                                hd_config_key_line(&o->s, "source", "path"));
            }
        }
        struct stat st;
        if (lstat(s->path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
            return pf_error(pf, line, "[source %s]: path = %s exists and is not a socket",
                            s->s.name, s->path);
        }
        char dir[HD_PATH_MAX], ndir[HD_PATH_MAX], why[HD_ERR_LEN];
        dir_of(s->path, dir, sizeof(dir));
        normalize(dir, ndir, sizeof(ndir));
        int rc = writable_dir(dir, why, sizeof(why));
        if (rc < 0 || (rc == 1 && strcmp(ndir, state) != 0)) {
            return pf_error(pf, line, "[source %s]: path = %s: %s", s->s.name, s->path,
                            rc < 0 ? why : "its directory does not exist");
        }
    }
    return 0;
}

/* Jetstream sinks with `creds = FILE`: the file can be read, now, by this
 * process, and holds a user JWT and an nkey seed (nats.c reads it at every
 * connect; without this a missing file would only show as a connect error
 * retried forever). Read, never kept: the seed is a secret. */
#define CREDS_MAX (64 * 1024)
static int
check_creds(struct pf *pf)
{
    const struct hd_config *cfg = pf->cfg;
    for (size_t i = 0; i < cfg->nsinks; i++) {
        const struct hd_sink_conf *k = &cfg->sinks[i];
        if (k->type != HD_SINK_JETSTREAM || k->creds[0] == '\0') {
            continue;
        }
        int line = hd_config_key_line(&k->s, "sink", "creds");
        int fd = open(k->creds, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
            return pf_error(pf, line, "[sink %s]: creds = %s: %s", k->s.name, k->creds,
                            strerror(errno));
        }
        struct stat st;
        char *text = NULL;
        const char *why = NULL;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            why = "not a regular file";
        } else if (st.st_size <= 0 || st.st_size > CREDS_MAX) {
            why = "not a NATS credentials file (empty or above 64 KiB)";
        } else if ((text = calloc(1, (size_t)st.st_size + 1)) == NULL) {
            why = "out of memory";
        } else {
            size_t got = 0;
            ssize_t r;
            while (got < (size_t)st.st_size &&
                   (r = read(fd, text + got, (size_t)st.st_size - got)) > 0) {
                got += (size_t)r;
            }
            if (strstr(text, "BEGIN NATS USER JWT") == NULL ||
                strstr(text, "NKEY SEED") == NULL) {
                why = "not a NATS credentials file (no user JWT and nkey seed)";
            }
            memset(text, 0, (size_t)st.st_size);
        }
        free(text);
        close(fd);
        if (why != NULL) {
            return pf_error(pf, line, "[sink %s]: creds = %s: %s", k->s.name, k->creds, why);
        }
    }
    return 0;
}

/* Every TLS file exists and parses, each certificate matches its key, each
 * CA bundle loads, keys are private: the contexts are built, then freed. */
static int
check_tls(struct pf *pf)
{
    const struct hd_config *cfg = pf->cfg;
    SSL_CTX **src = calloc(cfg->nsources + 1, sizeof(*src));
    SSL_CTX **sink = calloc(cfg->nsinks + 1, sizeof(*sink));
    int rc = -1;
    if (src == NULL || sink == NULL) {
        pf_error(pf, 0, "out of memory");
    } else if (hd_tls_contexts_new(cfg, src, sink, pf->err, pf->errlen) == 0) {
        hd_tls_contexts_free(src, cfg->nsources);
        hd_tls_contexts_free(sink, cfg->nsinks);
        rc = 0;
    }
    free(src);
    free(sink);
    return rc;
}

int
hd_preflight(const struct hd_config *cfg, char *err, size_t errlen, hd_preflight_warn_fn *warn,
             void *arg)
{
    struct pf pf = {cfg, err, errlen, warn, arg};
    if (check_tcp(&pf) < 0 || check_unix(&pf) < 0 || check_state_dir(&pf) < 0 ||
        check_creds(&pf) < 0 || check_tls(&pf) < 0) {
        return -1;
    }
    return 0;
}
