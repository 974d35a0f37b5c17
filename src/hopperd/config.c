/* SPDX-License-Identifier: MIT */
/* hopperd configuration loader.
 *
 * libinih does the tokenizing; everything else is driven by one table,
 * `directives`, with a row per key: section kind, key, type, bounds, the
 * default (as text, parsed by the same code as a value from the file),
 * where it is stored and whether SIGHUP may change it. A section's
 * defaults are applied when its header is read, so unit tests can check
 * that every default parses.
 *
 * Line numbers: the handler of the system libinih gets no line number
 * (INI_HANDLER_LINENO is a build-time choice of the library), so the file is
 * fed to ini_parse_stream() through our own reader, which counts lines. The
 * reader also
 *   - strips `#` comments after values (a `#` preceded by a blank starts a
 *     comment; Debian's libinih strips only `;` inline), and
 *   - sees section headers first, so an unknown or duplicate section is an
 *     error even when it has no keys.
 * Only the first error is reported; parsing stops being meaningful after it.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "netutil.h"

enum kind { K_MAIN, K_QUEUE, K_SOURCE, K_SINK, K_NONE };
static const char *const kind_names[] = {"hopperd", "queue", "source", "sink"};

enum dtype {
    T_NAME,
    T_PATH,
    T_ADDR,
    T_SIZE,
    T_DURATION,
    T_UINT,
    T_OCTAL,
    T_ENUM,
    T_FSYNC,
    T_NAMES, /* comma-separated names, stored as "a,b" */
    T_UIDS,  /* comma-separated user names or numbers -> struct hd_idlist */
    T_GIDS,  /* comma-separated group names or numbers -> struct hd_idlist */
    T_TEXT,  /* free text without spaces: 1..size-1 characters, "" when min == 0 */
    T_FILE,  /* a file's path, "" = none */
    T_IDENTS, /* comma-separated TLS identities (CN or DNS name), stored as "a,b" */
};

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const durability_names[] = {"memory", "disk", NULL};
static const char *const when_full_names[] = {"block", "reject", "drop_newest", "drop_oldest",
                                              NULL};
static const char *const source_type_names[] = {"tcp", "unix", NULL};
static const char *const sink_type_names[] = {"tcp", "file", "jetstream", NULL};
static const char *const format_names[] = {"lines", "octet-counted", "native", NULL};
static const char *const onoff_names[] = {"off", "on", NULL};
/* Index = enum hd_tls_verify (tls.h; tlsconf.c maps them). */
static const char *const verify_names[] = {"none", "optional", "required", NULL};

struct directive {
    int kind; /* enum kind */
    const char *key;
    int type;                 /* enum dtype */
    uint64_t min, max;        /* numeric bounds; for T_ADDR min 0 = may be empty */
    const char *def;          /* default as text, NULL = none (may be required) */
    size_t off;               /* offset in struct hd_config or the section struct */
    size_t size;              /* size of the field (strings) */
    int reloadable;           /* SIGHUP applies it (see hd_reload in main.c) */
    const char *const *names; /* T_ENUM */
};

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define FLD(type, f) offsetof(type, f), sizeof(((type *)0)->f)
#define QF(f) FLD(struct hd_queue_conf, f)
#define SF(f) FLD(struct hd_source_conf, f)
#define KF(f) FLD(struct hd_sink_conf, f)
#define MF(f) FLD(struct hd_config, f)

static const struct directive directives[] = {
    /* [hopperd] */
    {K_MAIN, "state_dir", T_PATH, 0, 0, "/var/lib/hopperd", MF(state_dir), 0, NULL},
    {K_MAIN, "log_level", T_ENUM, 0, 0, "info", MF(log_level), 1, level_names},
    {K_MAIN, "metrics_listen", T_ADDR, 0, 0, "", MF(metrics_listen), 0, NULL},
    {K_MAIN, "shutdown_timeout", T_DURATION, 100, 3600000, "10s", MF(shutdown_timeout_ms), 0, NULL},
    /* [queue NAME] */
    {K_QUEUE, "memory_bytes", T_SIZE, 4 * KiB, 64 * GiB, "8MiB", QF(memory_bytes), 0, NULL},
    {K_QUEUE, "disk_bytes", T_SIZE, 64 * KiB, UINT64_C(1) << 50, "1GiB", QF(disk_bytes), 0, NULL},
    {K_QUEUE, "segment_bytes", T_SIZE, 64 * KiB, 4 * GiB, "64MiB", QF(segment_bytes), 0, NULL},
    {K_QUEUE, "max_record_bytes", T_SIZE, 1, 256 * MiB, "64KiB", QF(max_record_bytes), 0, NULL},
    {K_QUEUE, "compression", T_UINT, 0, 9, "1", QF(compression), 0, NULL},
    {K_QUEUE, "checkpoint_interval", T_DURATION, 1, 3600000, "1s", QF(checkpoint_ms), 0, NULL},
    {K_QUEUE, "durability", T_ENUM, 0, 0, "memory", QF(durability), 0, durability_names},
    {K_QUEUE, "fsync", T_FSYNC, 1, 3600000, "1s", QF(fsync), 0, NULL},
    {K_QUEUE, "when_full", T_ENUM, 0, 0, "block", QF(when_full), 0, when_full_names},
    /* [source NAME] */
    {K_SOURCE, "type", T_ENUM, 0, 0, NULL, SF(type), 0, source_type_names},
    {K_SOURCE, "listen", T_ADDR, 1, 0, NULL, SF(listen), 0, NULL},
    {K_SOURCE, "path", T_PATH, 0, 107, NULL, SF(path), 0, NULL},
    {K_SOURCE, "mode", T_OCTAL, 0, 0777, "0660", SF(mode), 0, NULL},
    {K_SOURCE, "format", T_ENUM, 0, 0, "lines", SF(format), 0, format_names},
    {K_SOURCE, "queue", T_NAME, 0, 0, NULL, SF(queue), 0, NULL},
    {K_SOURCE, "max_connections", T_UINT, 1, 65536, "256", SF(max_connections), 0, NULL},
    {K_SOURCE, "max_connections_per_peer", T_UINT, 0, 65536, "64", SF(max_conns_per_peer), 0,
     NULL},
    {K_SOURCE, "handshake_timeout", T_DURATION, 0, 600000, "10s", SF(handshake_timeout_ms), 0,
     NULL},
    {K_SOURCE, "idle_timeout", T_DURATION, 0, 3600000, "5m", SF(idle_timeout_ms), 0, NULL},
    {K_SOURCE, "allow_subscribe", T_ENUM, 0, 0, "off", SF(allow_subscribe), 0, onoff_names},
    {K_SOURCE, "queues", T_NAMES, 0, 0, "", SF(queues), 0, NULL},
    {K_SOURCE, "allowed_uids", T_UIDS, 0, 0, "", SF(allowed_uids), 0, NULL},
    {K_SOURCE, "allowed_gids", T_GIDS, 0, 0, "", SF(allowed_gids), 0, NULL},
    /* [source NAME] TLS (tlsconf.c builds the context; SIGHUP rebuilds it) */
    {K_SOURCE, "tls", T_ENUM, 0, 0, "off", SF(tls.enabled), 0, onoff_names},
    {K_SOURCE, "tls_cert", T_FILE, 0, 0, "", SF(tls.cert), 1, NULL},
    {K_SOURCE, "tls_key", T_FILE, 0, 0, "", SF(tls.key), 1, NULL},
    {K_SOURCE, "tls_ca", T_FILE, 0, 0, "", SF(tls.ca), 1, NULL},
    {K_SOURCE, "tls_verify_client", T_ENUM, 0, 0, "required", SF(tls.verify_client), 1,
     verify_names},
    {K_SOURCE, "tls_allowed_peers", T_IDENTS, 0, 0, "", SF(tls.allowed_peers), 1, NULL},
    {K_SOURCE, "tls_ciphers", T_TEXT, 0, 0, "", SF(tls.ciphers), 1, NULL},
    {K_SOURCE, "tls_ciphersuites", T_TEXT, 0, 0, "", SF(tls.ciphersuites), 1, NULL},
    /* [sink NAME] */
    {K_SINK, "type", T_ENUM, 0, 0, NULL, KF(type), 0, sink_type_names},
    {K_SINK, "connect", T_ADDR, 1, 0, NULL, KF(connect), 1, NULL},
    {K_SINK, "path", T_PATH, 0, 0, NULL, KF(path), 0, NULL},
    {K_SINK, "format", T_ENUM, 0, 0, "lines", KF(format), 0, format_names},
    {K_SINK, "queue", T_NAME, 0, 0, NULL, KF(queue), 0, NULL},
    {K_SINK, "fsync", T_FSYNC, 1, 3600000, "1s", KF(fsync), 0, NULL},
    {K_SINK, "connect_timeout", T_DURATION, 10, 600000, "5s", KF(connect_timeout_ms), 1, NULL},
    {K_SINK, "reconnect_min", T_DURATION, 1, 600000, "100ms", KF(reconnect_min_ms), 1, NULL},
    {K_SINK, "reconnect_max", T_DURATION, 1, 3600000, "30s", KF(reconnect_max_ms), 1, NULL},
    {K_SINK, "batch_bytes", T_SIZE, 1 * KiB, 64 * MiB, "256KiB", KF(batch_bytes), 0, NULL},
    /* [sink NAME] type = jetstream */
    {K_SINK, "servers", T_TEXT, 1, 0, NULL, KF(servers), 1, NULL},
    {K_SINK, "subject", T_TEXT, 1, 0, NULL, KF(subject), 0, NULL},
    {K_SINK, "stream", T_TEXT, 1, 0, NULL, KF(stream), 0, NULL},
    {K_SINK, "create_stream", T_ENUM, 0, 0, "off", KF(create_stream), 0, onoff_names},
    {K_SINK, "replicas", T_UINT, 1, 5, "1", KF(replicas), 0, NULL},
    {K_SINK, "max_bytes", T_SIZE, 0, UINT64_C(1) << 50, "0", KF(max_bytes), 0, NULL},
    {K_SINK, "duplicate_window", T_DURATION, 1000, 604800000, "2m", KF(duplicate_window_ms), 0, NULL},
    {K_SINK, "max_inflight", T_UINT, 1, 65536, "1024", KF(max_inflight), 0, NULL},
    {K_SINK, "ack_timeout", T_DURATION, 100, 600000, "5s", KF(ack_timeout_ms), 0, NULL},
    {K_SINK, "creds", T_TEXT, 0, 0, "", KF(creds), 1, NULL},
    {K_SINK, "user", T_TEXT, 0, 0, "", KF(user), 1, NULL},
    {K_SINK, "password", T_TEXT, 0, 0, "", KF(password), 1, NULL},
    {K_SINK, "token", T_TEXT, 0, 0, "", KF(token), 1, NULL},
    /* [sink NAME] type = tcp, TLS (tlsconf.c; SIGHUP: the next connection) */
    {K_SINK, "tls", T_ENUM, 0, 0, "off", KF(tls.enabled), 0, onoff_names},
    {K_SINK, "tls_ca", T_FILE, 0, 0, "", KF(tls.ca), 1, NULL},
    {K_SINK, "tls_server_name", T_TEXT, 0, 0, "", KF(tls.server_name), 0, NULL},
    {K_SINK, "tls_cert", T_FILE, 0, 0, "", KF(tls.cert), 1, NULL},
    {K_SINK, "tls_key", T_FILE, 0, 0, "", KF(tls.key), 1, NULL},
    {K_SINK, "tls_ciphers", T_TEXT, 0, 0, "", KF(tls.ciphers), 1, NULL},
    {K_SINK, "tls_ciphersuites", T_TEXT, 0, 0, "", KF(tls.ciphersuites), 1, NULL},
};
#define NDIRECTIVES (sizeof(directives) / sizeof(directives[0]))

/* Loader state, one per load. */
struct loader {
    struct hd_config *cfg;
    FILE *fp;        /* file input, or */
    const char *buf; /* buffer input */
    size_t len, pos;
    int lineno;    /* line most recently handed to libinih */
    char raw[256]; /* that line as read, for error messages */
    int kind;      /* enum kind of the current section, K_NONE before the first */
    void *cur;     /* base for the current section's offsets, NULL = ignore keys */
    struct hd_section *sec;
    int have_main;
    int failed;
    char *err;
    size_t errlen;
};

static void ld_error(struct loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
ld_error(struct loader *ld, int line, const char *fmt, ...)
{
    if (ld->failed) {
        return;
    }
    ld->failed = 1;
    char msg[HD_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line > 0 && line == ld->lineno && ld->raw[0] != '\0') {
        snprintf(ld->err, ld->errlen, "%s:%d: %s\n    %s", ld->cfg->file, line, msg, ld->raw);
    } else if (line > 0) {
        snprintf(ld->err, ld->errlen, "%s:%d: %s", ld->cfg->file, line, msg);
    } else {
        snprintf(ld->err, ld->errlen, "%s: %s", ld->cfg->file, msg);
    }
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- unit parsers ---- */

/* Leading unsigned decimal; 0 or -1 (no digits / overflow). */
static int
parse_u64(const char **sp, uint64_t *out)
{
    const char *s = *sp;
    uint64_t v = 0;
    if (*s < '0' || *s > '9') {
        return -1;
    }
    while (*s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -1;
        }
        v = v * 10 + d;
        s++;
    }
    *sp = s;
    *out = v;
    return 0;
}

int
hd_parse_size(const char *s, uint64_t *out, char *err, size_t errlen)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1}, {"B", 1}, {"KiB", KiB}, {"MiB", MiB}, {"GiB", GiB}};
    const char *p = s;
    uint64_t v;
    if (parse_u64(&p, &v) < 0) {
        seterr(err, errlen, "bad size '%s': expected a number with B, KiB, MiB or GiB", s);
        return -1;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].mult) {
                seterr(err, errlen, "size '%s' is too large", s);
                return -1;
            }
            *out = v * units[i].mult;
            return 0;
        }
    }
    seterr(err, errlen, "bad size unit in '%s': use B, KiB, MiB or GiB (1024-based)", s);
    return -1;
}

int
hd_parse_duration(const char *s, uint64_t *out_ms, char *err, size_t errlen)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}};
    const char *p = s;
    uint64_t v;
    if (parse_u64(&p, &v) < 0) {
        seterr(err, errlen, "bad duration '%s': expected a number with ms, s or m", s);
        return -1;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p == '\0' && v == 0) {
        *out_ms = 0;
        return 0;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].mult) {
                seterr(err, errlen, "duration '%s' is too large", s);
                return -1;
            }
            *out_ms = v * units[i].mult;
            return 0;
        }
    }
    seterr(err, errlen, "bad duration unit in '%s': use ms, s or m", s);
    return -1;
}

int
hd_name_is_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > HD_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

const char *
hd_format_name(int format)
{
    return format >= 0 && format <= HD_FMT_NATIVE ? format_names[format] : "?";
}

const char *
hd_when_full_name(int when_full)
{
    return when_full >= 0 && when_full <= HD_FULL_DROP_OLDEST ? when_full_names[when_full] : "?";
}

/* ---- the table ---- */

/* Index of `d` among the directives of its kind (its set_mask bit). */
static int
directive_bit(const struct directive *d)
{
    int bit = 0;
    for (const struct directive *e = directives; e < d; e++) {
        if (e->kind == d->kind) {
            bit++;
        }
    }
    return bit < HD_MAX_KEYS ? bit : HD_MAX_KEYS - 1;
}

static const struct directive *
find_directive(int kind, const char *key)
{
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        if (directives[i].kind == kind && strcmp(directives[i].key, key) == 0) {
            return &directives[i];
        }
    }
    return NULL;
}

static int
check_range(const struct directive *d, const char *value, uint64_t v, char *err, size_t errlen)
{
    if (v < d->min || (d->max != 0 && v > d->max)) {
        seterr(err, errlen, "%s = %s is out of range (%" PRIu64 "..%" PRIu64 "%s)", d->key, value,
               d->min, d->max, d->type == T_DURATION ? " ms" : "");
        return -1;
    }
    return 0;
}

/* The next item of a comma-separated list at *sp, blanks around it
 * removed, into item. Returns 1 when more items follow (*sp moves past the
 * comma), 0 after the last one, -1 when the item is empty (as in "a,,b"
 * or "a,") or longer than itemlen - 1. */
static int
next_item(const char **sp, char *item, size_t itemlen)
{
    const char *p = *sp + strspn(*sp, " \t");
    size_t n = strcspn(p, ",");
    int more = p[n] == ',';
    *sp = p + n + (size_t)more;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) {
        n--;
    }
    if (n == 0 || n >= itemlen) {
        return -1;
    }
    memcpy(item, p, n);
    item[n] = '\0';
    return more;
}

/* T_NAMES: "a, b" -> "a,b" ("" stays "": the default, nothing listed). */
static int
set_names(const struct directive *d, char *field, const char *value, char *err, size_t errlen)
{
    char out[HD_LIST_TEXT] = "";
    const char *p = value;
    for (int more = value[0] != '\0'; more;) {
        char name[HD_NAME_MAX + 1];
        more = next_item(&p, name, sizeof(name));
        if (more < 0 || !hd_name_is_valid(name)) {
            seterr(err, errlen, "%s = '%s': expected names of [A-Za-z0-9_.-] separated by commas",
                   d->key, value);
            return -1;
        }
        size_t used = strlen(out);
        snprintf(out + used, sizeof(out) - used, "%s%s", used > 0 ? "," : "", name);
    }
    snprintf(field, d->size, "%s", out);
    return 0;
}

/* T_IDENTS: "host-a.example, Client B" -> "host-a.example,Client B": at
 * most HD_MAX_IDS identities of printable ASCII (inner blanks allowed: a CN
 * may have them), no commas; compared without regard to ASCII case
 * (hd_auth_tls_names). */
static int
set_idents(const struct directive *d, char *field, const char *value, char *err, size_t errlen)
{
    char out[HD_LIST_TEXT] = "";
    const char *p = value;
    int n = 0;
    for (int more = value[0] != '\0'; more;) {
        char item[HD_LIST_TEXT];
        more = next_item(&p, item, sizeof(item));
        int printable = more >= 0;
        for (size_t i = 0; printable && item[i] != '\0'; i++) {
            printable = item[i] >= ' ' && item[i] <= '~';
        }
        if (!printable) {
            seterr(err, errlen,
                   "%s = '%s': expected certificate names (CN or DNS name) separated by commas",
                   d->key, value);
            return -1;
        }
        if (++n > HD_MAX_IDS) {
            seterr(err, errlen, "%s: at most %d entries", d->key, HD_MAX_IDS);
            return -1;
        }
        size_t used = strlen(out), il = strlen(item);
        if (used + 1 + il >= sizeof(out)) {
            seterr(err, errlen, "%s: the list is too long", d->key);
            return -1;
        }
        if (used > 0) {
            out[used++] = ',';
        }
        memcpy(out + used, item, il + 1);
    }
    snprintf(field, d->size, "%s", out);
    return 0;
}

/* A user (T_UIDS) or group (T_GIDS) name -> its id, from the system's
 * databases (getpwnam_r/getgrnam_r: /etc/passwd, or whatever NSS says). */
static int
lookup_id(const struct directive *d, const char *name, uint32_t *id, char *err, size_t errlen)
{
    int is_group = d->type == T_GIDS;
    for (size_t cap = 1024; cap <= (size_t)1 << 20; cap *= 4) {
        char *buf = malloc(cap);
        if (buf == NULL) {
            break;
        }
        int rc;
        int found = 0;
        if (is_group) {
            struct group gr, *res = NULL;
            rc = getgrnam_r(name, &gr, buf, cap, &res);
            if (rc == 0 && res != NULL) {
                *id = (uint32_t)gr.gr_gid;
                found = 1;
            }
        } else {
            struct passwd pw, *res = NULL;
            rc = getpwnam_r(name, &pw, buf, cap, &res);
            if (rc == 0 && res != NULL) {
                *id = (uint32_t)pw.pw_uid;
                found = 1;
            }
        }
        free(buf);
        if (found) {
            return 0;
        }
        if (rc != ERANGE) {
            seterr(err, errlen, "%s: no %s '%s'%s%s", d->key, is_group ? "group" : "user", name,
                   rc != 0 ? ": " : "", rc != 0 ? strerror(rc) : "");
            return -1;
        }
    }
    seterr(err, errlen, "%s: looking up '%s': out of memory", d->key, name);
    return -1;
}

/* T_UIDS, T_GIDS: "0, www-data, 1000" -> ids (names resolved now). */
static int
set_ids(const struct directive *d, char *field, const char *value, char *err, size_t errlen)
{
    struct hd_idlist l;
    memset(&l, 0, sizeof(l));
    const char *p = value;
    for (int more = value[0] != '\0'; more;) {
        char item[HD_LIST_TEXT];
        more = next_item(&p, item, sizeof(item));
        if (more < 0) {
            seterr(err, errlen, "%s = '%s': expected %s names or numbers separated by commas",
                   d->key, value, d->type == T_GIDS ? "group" : "user");
            return -1;
        }
        if (l.n == HD_MAX_IDS) {
            seterr(err, errlen, "%s: at most %d entries", d->key, HD_MAX_IDS);
            return -1;
        }
        uint64_t v;
        const char *q = item;
        if (item[0] >= '0' && item[0] <= '9') {
            if (parse_u64(&q, &v) < 0 || *q != '\0' || v >= UINT32_MAX) {
                seterr(err, errlen, "%s: '%s' is not an id (0..%" PRIu32 ") nor a name", d->key,
                       item, UINT32_MAX - 1);
                return -1;
            }
            l.id[l.n++] = (uint32_t)v;
        } else if (lookup_id(d, item, &l.id[l.n++], err, errlen) < 0) {
            return -1;
        }
    }
    memcpy(field, &l, sizeof(l));
    return 0;
}

/* Parse `value` for directive `d` and store it at base + d->off. */
static int
set_value(const struct directive *d, void *base, const char *value, char *err, size_t errlen)
{
    char *field = (char *)base + d->off;
    uint64_t v = 0;
    switch (d->type) {
    case T_NAME:
        if (!hd_name_is_valid(value)) {
            seterr(err, errlen, "%s = '%s': names are 1..128 characters of [A-Za-z0-9_.-]", d->key,
                   value);
            return -1;
        }
        snprintf(field, d->size, "%s", value);
        return 0;
    case T_PATH: {
        size_t lim = d->max != 0 ? d->max : d->size - 1;
        if (value[0] == '\0' || strlen(value) > lim) {
            seterr(err, errlen, "%s: path must be 1..%zu characters", d->key, lim);
            return -1;
        }
        snprintf(field, d->size, "%s", value);
        return 0;
    }
    case T_ADDR: {
        char host[HD_ADDR_MAX], port[16];
        if (value[0] == '\0' && d->min == 0) {
            field[0] = '\0';
            return 0;
        }
        if (strlen(value) >= d->size ||
            hd_parse_addr(value, host, sizeof(host), port, sizeof(port), err, errlen) < 0) {
            if (strlen(value) >= d->size) {
                seterr(err, errlen, "%s: address too long", d->key);
            }
            return -1;
        }
        snprintf(field, d->size, "%s", value);
        return 0;
    }
    case T_SIZE:
        if (hd_parse_size(value, &v, err, errlen) < 0 ||
            check_range(d, value, v, err, errlen) < 0) {
            return -1;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    case T_DURATION:
        if (hd_parse_duration(value, &v, err, errlen) < 0 ||
            check_range(d, value, v, err, errlen) < 0) {
            return -1;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    case T_UINT:
    case T_OCTAL: {
        char *end = NULL;
        errno = 0;
        unsigned long long u = strtoull(value, &end, d->type == T_OCTAL ? 8 : 10);
        if (value[0] < '0' || value[0] > '9' || errno != 0 || end == value || *end != '\0') {
            seterr(err, errlen, "%s = '%s': expected %s number", d->key, value,
                   d->type == T_OCTAL ? "an octal" : "a whole");
            return -1;
        }
        v = (uint64_t)u;
        if (check_range(d, value, v, err, errlen) < 0) {
            return -1;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case T_ENUM:
        for (int i = 0; d->names[i] != NULL; i++) {
            if (strcmp(value, d->names[i]) == 0) {
                memcpy(field, &i, sizeof(i));
                return 0;
            }
        }
        {
            char list[256] = "";
            for (int i = 0; d->names[i] != NULL; i++) {
                strncat(list, i == 0 ? "" : " | ", sizeof(list) - strlen(list) - 1);
                strncat(list, d->names[i], sizeof(list) - strlen(list) - 1);
            }
            seterr(err, errlen, "%s = '%s': expected %s", d->key, value, list);
        }
        return -1;
    case T_FSYNC: {
        struct hd_fsync fs;
        memset(&fs, 0, sizeof(fs));
        if (strcmp(value, "never") == 0) {
            fs.mode = HD_FSYNC_NEVER;
        } else if (strcmp(value, "always") == 0) {
            fs.mode = HD_FSYNC_ALWAYS;
        } else {
            char why[HD_ERR_LEN];
            if (hd_parse_duration(value, &v, why, sizeof(why)) < 0) {
                seterr(err, errlen, "%s = '%s': expected never | always | DURATION (ms, s, m)",
                       d->key, value);
                return -1;
            }
            if (check_range(d, value, v, err, errlen) < 0) {
                return -1;
            }
            fs.mode = HD_FSYNC_INTERVAL;
            fs.interval_ms = v;
        }
        memcpy(field, &fs, sizeof(fs));
        return 0;
    }
    case T_NAMES:
        return set_names(d, field, value, err, errlen);
    case T_TEXT:
        if (value[0] == '\0' && d->min == 0) {
            field[0] = '\0';
            return 0;
        }
        if (value[0] == '\0' || strlen(value) >= d->size || strpbrk(value, " \t") != NULL) {
            seterr(err, errlen, "%s: must be 1..%zu characters without spaces", d->key, d->size - 1);
            return -1;
        }
        snprintf(field, d->size, "%s", value);
        return 0;
    case T_UIDS:
    case T_GIDS:
        return set_ids(d, field, value, err, errlen);
    case T_FILE:
        if (strlen(value) >= d->size) {
            seterr(err, errlen, "%s: path must be at most %zu characters", d->key, d->size - 1);
            return -1;
        }
        snprintf(field, d->size, "%s", value);
        return 0;
    case T_IDENTS:
        return set_idents(d, field, value, err, errlen);
    default:
        seterr(err, errlen, "%s: internal error: bad directive type", d->key);
        return -1;
    }
}

/* Apply every default of `kind` to `base`. The defaults are constants, so a
 * failure here is a bug in the table (a unit test parses them all). */
static void
apply_defaults(int kind, void *base)
{
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        const struct directive *d = &directives[i];
        char err[HD_ERR_LEN];
        if (d->kind == kind && d->def != NULL && set_value(d, base, d->def, err, sizeof(err)) < 0) {
            fatalx("config: bad built-in default: %s", err);
        }
    }
}

/* ---- sections ---- */

static void *
grow(void *arr, size_t *n, size_t elem)
{
    char *p = realloc(arr, (*n + 1) * elem);
    if (p == NULL) {
        return NULL;
    }
    memset(p + *n * elem, 0, elem);
    (*n)++;
    return p;
}

static void
section_begin(struct loader *ld, char *header)
{
    struct hd_config *cfg = ld->cfg;
    ld->cur = NULL;
    ld->sec = NULL;
    ld->kind = K_NONE;
    /* header: "KIND" or "KIND NAME", blanks already trimmed at both ends */
    char *name = header + strcspn(header, " \t");
    if (*name != '\0') {
        *name++ = '\0';
        name += strspn(name, " \t");
    }
    int kind = K_NONE;
    for (int k = 0; k < K_NONE; k++) {
        if (strcmp(header, kind_names[k]) == 0) {
            kind = k;
        }
    }
    if (kind == K_NONE) {
        ld_error(ld, ld->lineno,
                 "unknown section [%s]: expected [hopperd], [queue NAME], [source NAME] or "
                 "[sink NAME]",
                 header);
        return;
    }
    if (kind == K_MAIN) {
        if (*name != '\0') {
            ld_error(ld, ld->lineno, "section [hopperd] takes no name");
            return;
        }
        if (ld->have_main) {
            ld_error(ld, ld->lineno, "duplicate section [hopperd] (first at line %d)",
                     cfg->main.line);
            return;
        }
        ld->have_main = 1;
        cfg->main.line = ld->lineno;
        ld->kind = K_MAIN;
        ld->cur = cfg;
        ld->sec = &cfg->main;
        return;
    }
    if (!hd_name_is_valid(name)) {
        ld_error(ld, ld->lineno,
                 "[%s %s]: a %s needs a name of 1..128 characters of [A-Za-z0-9_.-]", header, name,
                 header);
        return;
    }
    struct hd_section *prev = NULL;
    for (size_t i = 0; kind == K_QUEUE && i < cfg->nqueues; i++) {
        prev = strcmp(cfg->queues[i].s.name, name) == 0 ? &cfg->queues[i].s : prev;
    }
    for (size_t i = 0; kind == K_SOURCE && i < cfg->nsources; i++) {
        prev = strcmp(cfg->sources[i].s.name, name) == 0 ? &cfg->sources[i].s : prev;
    }
    for (size_t i = 0; kind == K_SINK && i < cfg->nsinks; i++) {
        prev = strcmp(cfg->sinks[i].s.name, name) == 0 ? &cfg->sinks[i].s : prev;
    }
    if (prev != NULL) {
        ld_error(ld, ld->lineno, "duplicate section [%s %s] (first at line %d)", header, name,
                 prev->line);
        return;
    }
    void *base = NULL;
    struct hd_section *sec = NULL;
    if (kind == K_QUEUE) {
        struct hd_queue_conf *a = grow(cfg->queues, &cfg->nqueues, sizeof(*a));
        if (a != NULL) {
            cfg->queues = a;
            base = &a[cfg->nqueues - 1];
            sec = &a[cfg->nqueues - 1].s;
        }
    } else if (kind == K_SOURCE) {
        struct hd_source_conf *a = grow(cfg->sources, &cfg->nsources, sizeof(*a));
        if (a != NULL) {
            cfg->sources = a;
            base = &a[cfg->nsources - 1];
            sec = &a[cfg->nsources - 1].s;
            a[cfg->nsources - 1].queue_index = -1;
        }
    } else {
        struct hd_sink_conf *a = grow(cfg->sinks, &cfg->nsinks, sizeof(*a));
        if (a != NULL) {
            cfg->sinks = a;
            base = &a[cfg->nsinks - 1];
            sec = &a[cfg->nsinks - 1].s;
            a[cfg->nsinks - 1].queue_index = -1;
        }
    }
    if (base == NULL) {
        ld_error(ld, ld->lineno, "out of memory");
        return;
    }
    snprintf(sec->name, sizeof(sec->name), "%s", name);
    sec->line = ld->lineno;
    apply_defaults(kind, base);
    ld->kind = kind;
    ld->cur = base;
    ld->sec = sec;
}

/* ---- libinih glue ---- */

static int
read_char(struct loader *ld)
{
    if (ld->fp != NULL) {
        return getc(ld->fp);
    }
    if (ld->pos >= ld->len) {
        return EOF;
    }
    return (unsigned char)ld->buf[ld->pos++];
}

/* fgets-like reader for ini_parse_stream(): one line per call. */
static char *
ld_reader(char *str, int num, void *stream)
{
    struct loader *ld = stream;
    char line[4096];
    size_t n = 0;
    int c;
    int any = 0;
    int too_long = 0;
    while ((c = read_char(ld)) != EOF) {
        any = 1;
        if (c == '\n') {
            break;
        }
        if (c == '\0') {
            c = ' '; /* a NUL would end the line early inside libinih */
        }
        if (n < sizeof(line) - 1) {
            line[n++] = (char)c;
        } else {
            too_long = 1;
        }
    }
    if (!any) {
        return NULL;
    }
    line[n] = '\0';
    ld->lineno++;
    snprintf(ld->raw, sizeof(ld->raw), "%.200s", line);
    /* `#` after a blank starts a comment (a `#` at the start of the line is
     * a whole-line comment, which libinih handles too). */
    for (size_t i = 0; i < n; i++) {
        if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
            line[i] = '\0';
            n = i;
            break;
        }
    }
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r')) {
        line[--n] = '\0';
    }
    char *t = line + strspn(line, " \t");
    if (t[0] == '[') {
        char *end = strchr(t, ']');
        if (end == NULL) {
            ld_error(ld, ld->lineno, "section header without ']'");
        } else {
            *end = '\0';
            char *h = t + 1 + strspn(t + 1, " \t");
            size_t hl = strlen(h);
            while (hl > 0 && (h[hl - 1] == ' ' || h[hl - 1] == '\t')) {
                h[--hl] = '\0';
            }
            char copy[sizeof(line)];
            snprintf(copy, sizeof(copy), "%s", h);
            *end = ']';
            section_begin(ld, copy);
        }
    }
    if (too_long || num < 4 || n > (size_t)num - 3) {
        ld_error(ld, ld->lineno, "line too long (at most %d characters before a comment)",
                 num > 3 ? num - 3 : 0);
        n = 0;
        line[0] = '\0';
    }
    memcpy(str, line, n);
    str[n] = '\n';
    str[n + 1] = '\0';
    return str;
}

static int
ld_handler(void *user, const char *section, const char *key, const char *value)
{
    struct loader *ld = user;
    (void)section;
    if (ld->failed) {
        return 1;
    }
    if (ld->kind == K_NONE) {
        ld_error(ld, ld->lineno, "'%s' is outside of any section", key);
        return 1;
    }
    const struct directive *d = find_directive(ld->kind, key);
    if (d == NULL) {
        ld_error(ld, ld->lineno, "unknown directive '%s' in section [%s%s%s]", key,
                 kind_names[ld->kind], ld->kind == K_MAIN ? "" : " ", ld->sec->name);
        return 1;
    }
    int bit = directive_bit(d);
    if (ld->sec->set_mask & (UINT64_C(1) << bit)) {
        ld_error(ld, ld->lineno, "duplicate directive '%s' (first at line %d)", key,
                 ld->sec->key_line[bit]);
        return 1;
    }
    char why[HD_ERR_LEN];
    if (value[0] == '\0' && !(d->type == T_ADDR && d->min == 0)) {
        ld_error(ld, ld->lineno, "%s: missing value", key);
        return 1;
    }
    if (set_value(d, ld->cur, value, why, sizeof(why)) < 0) {
        ld_error(ld, ld->lineno, "%s", why);
        return 1;
    }
    ld->sec->set_mask |= UINT64_C(1) << bit;
    ld->sec->key_line[bit] = ld->lineno;
    return 1;
}

/* ---- whole-file checks ---- */

static int
is_set(const struct hd_section *sec, int kind, const char *key)
{
    const struct directive *d = find_directive(kind, key);
    return d != NULL && (sec->set_mask & (UINT64_C(1) << directive_bit(d))) != 0;
}

static int
key_line(const struct hd_section *sec, int kind, const char *key)
{
    const struct directive *d = find_directive(kind, key);
    /* A key left at its default has no line: point at its section. */
    int line = d != NULL ? sec->key_line[directive_bit(d)] : 0;
    return line > 0 ? line : sec->line;
}

int
hd_config_key_line(const struct hd_section *sec, const char *section_kind, const char *key)
{
    for (int k = 0; k < K_NONE; k++) {
        if (strcmp(kind_names[k], section_kind) == 0) {
            return key_line(sec, k, key);
        }
    }
    return sec->line;
}

int
hd_source_may_use(const struct hd_source_conf *s, int queue_index)
{
    for (size_t i = 0; i < s->nmay_use; i++) {
        if (s->may_use[i] == queue_index) {
            return 1;
        }
    }
    return 0;
}

int
hd_config_queue_index(const struct hd_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nqueues; i++) {
        if (strcmp(cfg->queues[i].s.name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* A key that does not apply to the section's type (or format) is an error,
 * not ignored: it is almost always a typo in `type`. `what` names the
 * setting it does not apply to, e.g. "type = tcp". */
static void
forbid(struct loader *ld, const struct hd_section *sec, int kind, const char *key, const char *what)
{
    if (is_set(sec, kind, key)) {
        ld_error(ld, key_line(sec, kind, key), "[%s %s]: '%s' does not apply to %s",
                 kind_names[kind], sec->name, key, what);
    }
}

static void
require(struct loader *ld, const struct hd_section *sec, int kind, const char *key, const char *why)
{
    if (!is_set(sec, kind, key)) {
        ld_error(ld, sec->line, "[%s %s]: '%s' is required%s", kind_names[kind], sec->name, key,
                 why);
    }
}

/* type = jetstream: what it needs, what does not apply, and the shape of
 * servers, subject and stream (docs/man/hopperd.conf.5). */
static void
check_jetstream(struct loader *ld, struct hd_sink_conf *k)
{
    const struct hd_section *sec = &k->s;
    require(ld, sec, K_SINK, "servers", " for type = jetstream");
    require(ld, sec, K_SINK, "subject", " for type = jetstream");
    require(ld, sec, K_SINK, "stream", " for type = jetstream");
    static const char *const not_js[] = {"connect", "path", "fsync", "format", "batch_bytes"};
    for (size_t j = 0; j < sizeof(not_js) / sizeof(not_js[0]); j++) {
        forbid(ld, sec, K_SINK, not_js[j], "type = jetstream");
    }
    if (ld->failed) {
        return;
    }
    /* servers: nats://HOST:PORT or tls://HOST:PORT, comma-separated. */
    const char *p = k->servers;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        int scheme = strncmp(p, "nats://", 7) == 0 ? 7 : strncmp(p, "tls://", 6) == 0 ? 6 : 0;
        if (scheme == 0 || n <= (size_t)scheme) {
            ld_error(ld, key_line(sec, K_SINK, "servers"),
                     "[sink %s]: servers: each entry must be nats://HOST:PORT or tls://HOST:PORT",
                     sec->name);
            return;
        }
        p += n;
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                ld_error(ld, key_line(sec, K_SINK, "servers"), "[sink %s]: servers: empty entry",
                         sec->name);
                return;
            }
        }
    }
    if (strpbrk(k->subject, "*>") != NULL || k->subject[0] == '.' ||
        k->subject[strlen(k->subject) - 1] == '.' || strstr(k->subject, "..") != NULL) {
        ld_error(ld, key_line(sec, K_SINK, "subject"),
                 "[sink %s]: subject: no wildcards (* >) and no empty tokens", sec->name);
    }
    if (strpbrk(k->stream, ".*>/\\") != NULL) {
        ld_error(ld, key_line(sec, K_SINK, "stream"),
                 "[sink %s]: stream: a name without . * > / or \\", sec->name);
    }
    int user = is_set(sec, K_SINK, "user"), password = is_set(sec, K_SINK, "password");
    int nauth = is_set(sec, K_SINK, "creds") + (user || password) + is_set(sec, K_SINK, "token");
    if (user != password) {
        ld_error(ld, key_line(sec, K_SINK, user ? "user" : "password"),
                 "[sink %s]: user and password go together", sec->name);
    } else if (nauth > 1) {
        ld_error(ld, sec->line, "[sink %s]: use one of creds, user/password or token", sec->name);
    }
    if (!k->create_stream) {
        static const char *const create_only[] = {"replicas", "max_bytes", "duplicate_window"};
        for (size_t j = 0; j < sizeof(create_only) / sizeof(create_only[0]); j++) {
            forbid(ld, sec, K_SINK, create_only[j], "create_stream = off (the stream's own settings apply)");
        }
    }
}

/* TLS keys of a source (kind K_SOURCE) or a sink (K_SINK): they apply
 * only with tls = on, which applies only to type = tcp (and to sinks of type
 * jetstream, whose connection nats.c makes with the same files); a source's
 * tls_verify_client defaults to required with tls_ca and none without. */
static void
check_tls(struct loader *ld, const struct hd_section *sec, int kind, struct hd_tls_conf *t,
          int is_tcp)
{
    static const char *const source_keys[] = {"tls_cert", "tls_key", "tls_ca",
                                              "tls_verify_client", "tls_allowed_peers",
                                              "tls_ciphers", "tls_ciphersuites"};
    static const char *const sink_keys[] = {"tls_ca", "tls_server_name", "tls_cert",
                                            "tls_key", "tls_ciphers", "tls_ciphersuites"};
    const char *const *keys = kind == K_SOURCE ? source_keys : sink_keys;
    size_t nkeys = kind == K_SOURCE ? sizeof(source_keys) / sizeof(source_keys[0])
                                    : sizeof(sink_keys) / sizeof(sink_keys[0]);
    if (!t->enabled) {
        for (size_t j = 0; j < nkeys; j++) {
            forbid(ld, sec, kind, keys[j], "tls = off (set tls = on)");
        }
        t->verify_client = 0; /* HD_TLS_VERIFY_NONE */
        return;
    }
    if (!is_tcp) {
        ld_error(ld, key_line(sec, kind, "tls"), "[%s %s]: tls = on needs type = tcp%s",
                 kind_names[kind], sec->name, kind == K_SINK ? " or jetstream" : "");
        return;
    }
    if (kind == K_SOURCE) {
        require(ld, sec, kind, "tls_cert", " with tls = on");
        require(ld, sec, kind, "tls_key", " with tls = on");
        if (!is_set(sec, kind, "tls_verify_client")) {
            t->verify_client = t->ca[0] != '\0' ? 2 : 0; /* required : none */
        } else if (t->verify_client != 0 && t->ca[0] == '\0') {
            ld_error(ld, key_line(sec, kind, "tls_verify_client"),
                     "[source %s]: tls_verify_client = %s needs tls_ca (the CAs that sign "
                     "client certificates)",
                     sec->name, verify_names[t->verify_client]);
        }
        if (t->allowed_peers[0] != '\0' && t->verify_client != 2) {
            ld_error(ld, key_line(sec, kind, "tls_allowed_peers"),
                     "[source %s]: tls_allowed_peers needs tls_ca and tls_verify_client = "
                     "required",
                     sec->name);
        }
        return;
    }
    if ((t->cert[0] != '\0') != (t->key[0] != '\0')) {
        ld_error(ld, key_line(sec, kind, t->cert[0] != '\0' ? "tls_cert" : "tls_key"),
                 "[sink %s]: tls_cert and tls_key go together", sec->name);
    }
}

/* s->may_use: the source's queue, then each of `queues` (which must
 * exist; naming the source's own queue again is harmless). */
static void
resolve_may_use(struct loader *ld, struct hd_source_conf *s)
{
    s->may_use[0] = s->queue_index;
    s->nmay_use = 1;
    const char *p = s->queues;
    for (int more = p[0] != '\0'; more;) {
        char name[HD_NAME_MAX + 1];
        more = next_item(&p, name, sizeof(name));
        if (more < 0) {
            break; /* cannot happen: set_names() stored valid names */
        }
        int qi = hd_config_queue_index(ld->cfg, name);
        if (qi < 0) {
            ld_error(ld, key_line(&s->s, K_SOURCE, "queues"), "[source %s]: queues: no [queue %s]",
                     s->s.name, name);
            return;
        }
        if (hd_source_may_use(s, qi)) {
            continue;
        }
        if (s->nmay_use == HD_MAX_SOURCE_QUEUES) {
            ld_error(ld, key_line(&s->s, K_SOURCE, "queues"),
                     "[source %s]: queues: at most %d queues per source", s->s.name,
                     HD_MAX_SOURCE_QUEUES);
            return;
        }
        s->may_use[s->nmay_use++] = qi;
    }
}

/* Nothing configured is a mistake, not a daemon that runs idle (and
 * creates state_dir): at least one queue, and each one fed by a source or
 * consumed by a sink. A queue with a sink and no source still drains what
 * an earlier run spooled; one with a source and no sink is read by native
 * subscribers or offline (hopperctl dump). */
static void
check_every_queue_used(struct loader *ld)
{
    const struct hd_config *cfg = ld->cfg;
    if (cfg->nqueues == 0) {
        ld_error(ld, 0, "no queue configured (a [queue NAME] with a [source] or [sink] using it)");
        return;
    }
    for (size_t i = 0; i < cfg->nqueues; i++) {
        int used = 0;
        for (size_t j = 0; j < cfg->nsources && !used; j++) {
            used = hd_source_may_use(&cfg->sources[j], (int)i);
        }
        for (size_t j = 0; j < cfg->nsinks && !used; j++) {
            used = cfg->sinks[j].queue_index == (int)i;
        }
        if (!used) {
            ld_error(ld, cfg->queues[i].s.line,
                     "[queue %s]: no source writes to it and no sink reads it", cfg->queues[i].s.name);
        }
    }
}

static void
validate(struct loader *ld)
{
    struct hd_config *cfg = ld->cfg;
    for (size_t i = 0; i < cfg->nqueues; i++) {
        struct hd_queue_conf *q = &cfg->queues[i];
        /* The library seals segments at a quarter of disk_bytes anyway, so
         * only an explicit segment_bytes above the budget is a mistake. */
        if (is_set(&q->s, K_QUEUE, "segment_bytes") && q->segment_bytes > q->disk_bytes) {
            ld_error(ld, key_line(&q->s, K_QUEUE, "segment_bytes"),
                     "[queue %s]: segment_bytes must not exceed disk_bytes", q->s.name);
        }
        if (q->max_record_bytes > q->disk_bytes / 2) {
            ld_error(ld, key_line(&q->s, K_QUEUE, "max_record_bytes"),
                     "[queue %s]: max_record_bytes must be at most half of disk_bytes", q->s.name);
        }
    }
    for (size_t i = 0; i < cfg->nsources; i++) {
        struct hd_source_conf *s = &cfg->sources[i];
        require(ld, &s->s, K_SOURCE, "type", " (tcp | unix)");
        require(ld, &s->s, K_SOURCE, "queue", "");
        if (ld->failed) {
            return;
        }
        if (s->type == HD_SRC_TCP) {
            require(ld, &s->s, K_SOURCE, "listen", " for type = tcp");
            forbid(ld, &s->s, K_SOURCE, "path", "type = tcp");
            forbid(ld, &s->s, K_SOURCE, "mode", "type = tcp");
        } else {
            require(ld, &s->s, K_SOURCE, "path", " for type = unix");
            forbid(ld, &s->s, K_SOURCE, "listen", "type = unix");
        }
        if (s->type == HD_SRC_TCP) {
            /* A tcp peer has no credentials to check (auth.h). */
            forbid(ld, &s->s, K_SOURCE, "allowed_uids", "type = tcp");
            forbid(ld, &s->s, K_SOURCE, "allowed_gids", "type = tcp");
        }
        check_tls(ld, &s->s, K_SOURCE, &s->tls, s->type == HD_SRC_TCP);
        if (s->format != HD_FMT_NATIVE) {
            /* Only native clients name queues or subscribe. */
            forbid(ld, &s->s, K_SOURCE, "queues", "this format (native only)");
            forbid(ld, &s->s, K_SOURCE, "allow_subscribe", "this format (native only)");
        }
        s->queue_index = hd_config_queue_index(cfg, s->queue);
        if (s->queue_index < 0) {
            ld_error(ld, key_line(&s->s, K_SOURCE, "queue"), "[source %s]: no [queue %s]",
                     s->s.name, s->queue);
            continue;
        }
        resolve_may_use(ld, s);
    }
    for (size_t i = 0; i < cfg->nsinks; i++) {
        struct hd_sink_conf *k = &cfg->sinks[i];
        require(ld, &k->s, K_SINK, "type", " (tcp | file | jetstream)");
        require(ld, &k->s, K_SINK, "queue", "");
        if (ld->failed) {
            return;
        }
        static const char *const js_only[] = {
            "servers", "subject", "stream",   "create_stream", "replicas", "max_bytes",
            "duplicate_window", "max_inflight", "ack_timeout", "creds", "user", "password",
            "token"};
        if (k->type != HD_SINK_JETSTREAM) {
            for (size_t j = 0; j < sizeof(js_only) / sizeof(js_only[0]); j++) {
                forbid(ld, &k->s, K_SINK, js_only[j], "this type (only to type = jetstream)");
            }
        }
        if (k->type == HD_SINK_JETSTREAM) {
            check_jetstream(ld, k);
        } else if (k->type == HD_SINK_TCP) {
            require(ld, &k->s, K_SINK, "connect", " for type = tcp");
            forbid(ld, &k->s, K_SINK, "path", "type = tcp");
            forbid(ld, &k->s, K_SINK, "fsync", "type = tcp");
        } else {
            require(ld, &k->s, K_SINK, "path", " for type = file");
            forbid(ld, &k->s, K_SINK, "connect", "type = file");
            forbid(ld, &k->s, K_SINK, "connect_timeout", "type = file");
        }
        check_tls(ld, &k->s, K_SINK, &k->tls,
                  k->type == HD_SINK_TCP || k->type == HD_SINK_JETSTREAM);
        if (k->format == HD_FMT_NATIVE && k->type != HD_SINK_TCP) {
            ld_error(ld, key_line(&k->s, K_SINK, "format"),
                     "[sink %s]: format = native needs type = tcp", k->s.name);
        }
        if (k->reconnect_min_ms > k->reconnect_max_ms) {
            ld_error(ld, key_line(&k->s, K_SINK, "reconnect_min"),
                     "[sink %s]: reconnect_min must not exceed reconnect_max", k->s.name);
        }
        k->queue_index = hd_config_queue_index(cfg, k->queue);
        if (k->queue_index < 0) {
            ld_error(ld, key_line(&k->s, K_SINK, "queue"), "[sink %s]: no [queue %s]", k->s.name,
                     k->queue);
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (cfg->sinks[j].queue_index == k->queue_index) {
                ld_error(ld, key_line(&k->s, K_SINK, "queue"),
                         "[sink %s]: queue %s already has [sink %s] (a queue has one consumer)",
                         k->s.name, k->queue, cfg->sinks[j].s.name);
            }
        }
    }
    if (!ld->failed) {
        check_every_queue_used(ld);
    }
}

static int
load(struct loader *ld, struct hd_config **out)
{
    int rc = ini_parse_stream(ld_reader, ld, ld_handler, ld);
    if (rc == -2) {
        ld_error(ld, 0, "out of memory");
    } else if (rc > 0) {
        ld_error(ld, rc, "syntax error: expected '[section]', 'key = value' or a comment");
    }
    if (!ld->failed) {
        validate(ld);
    }
    if (ld->failed) {
        hd_config_free(ld->cfg);
        return -1;
    }
    *out = ld->cfg;
    return 0;
}

static struct hd_config *
config_new(const char *name)
{
    struct hd_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        return NULL;
    }
    snprintf(cfg->file, sizeof(cfg->file), "%s", name);
    apply_defaults(K_MAIN, cfg);
    return cfg;
}

int
hd_config_load_buffer(const char *name, const char *buf, size_t len, struct hd_config **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    struct loader ld = {.kind = K_NONE, .err = err, .errlen = errlen, .buf = buf, .len = len};
    ld.cfg = config_new(name);
    if (ld.cfg == NULL) {
        seterr(err, errlen, "%s: out of memory", name);
        return -1;
    }
    return load(&ld, out);
}

int
hd_config_load_file(const char *path, struct hd_config **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct loader ld = {.kind = K_NONE, .err = err, .errlen = errlen, .fp = fp};
    ld.cfg = config_new(path);
    if (ld.cfg == NULL) {
        fclose(fp);
        seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int rc = load(&ld, out);
    if (rc == 0 && ferror(fp)) {
        seterr(err, errlen, "%s: read error", path);
        hd_config_free(*out);
        *out = NULL;
        rc = -1;
    }
    fclose(fp);
    return rc;
}

void
hd_config_free(struct hd_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    free(cfg->queues);
    free(cfg->sources);
    free(cfg->sinks);
    free(cfg);
}

/* ---- reload support ---- */

static const void *
section_base(const struct hd_config *cfg, int kind, const char *name, const struct hd_section **sec)
{
    if (kind == K_MAIN) {
        *sec = &cfg->main;
        return cfg;
    }
    for (size_t i = 0; kind == K_QUEUE && i < cfg->nqueues; i++) {
        if (strcmp(cfg->queues[i].s.name, name) == 0) {
            *sec = &cfg->queues[i].s;
            return &cfg->queues[i];
        }
    }
    for (size_t i = 0; kind == K_SOURCE && i < cfg->nsources; i++) {
        if (strcmp(cfg->sources[i].s.name, name) == 0) {
            *sec = &cfg->sources[i].s;
            return &cfg->sources[i];
        }
    }
    for (size_t i = 0; kind == K_SINK && i < cfg->nsinks; i++) {
        if (strcmp(cfg->sinks[i].s.name, name) == 0) {
            *sec = &cfg->sinks[i].s;
            return &cfg->sinks[i];
        }
    }
    return NULL;
}

static int
diff_kind(const struct hd_config *a, const struct hd_config *b, int kind, const char *name,
          char *what, size_t len)
{
    const struct hd_section *sa = NULL, *sb = NULL;
    const void *ba = section_base(a, kind, name, &sa);
    const void *bb = section_base(b, kind, name, &sb);
    if (ba == NULL || bb == NULL) {
        if (what[0] == '\0') {
            snprintf(what, len, "[%s %s] was %s", kind_names[kind], name,
                     ba == NULL ? "added" : "removed");
        }
        return 1;
    }
    int n = 0;
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        const struct directive *d = &directives[i];
        if (d->kind != kind || d->reloadable) {
            continue;
        }
        if (memcmp((const char *)ba + d->off, (const char *)bb + d->off, d->size) != 0) {
            if (what[0] == '\0') {
                snprintf(what, len, "[%s%s%s] %s", kind_names[kind], kind == K_MAIN ? "" : " ",
                         kind == K_MAIN ? "" : name, d->key);
            }
            n++;
        }
    }
    return n;
}

int
hd_config_diff(const struct hd_config *running, const struct hd_config *next, char *what,
               size_t len)
{
    what[0] = '\0';
    int n = diff_kind(running, next, K_MAIN, "", what, len);
    for (size_t i = 0; i < running->nqueues; i++) {
        n += diff_kind(running, next, K_QUEUE, running->queues[i].s.name, what, len);
    }
    for (size_t i = 0; i < next->nqueues; i++) {
        if (hd_config_queue_index(running, next->queues[i].s.name) < 0) {
            n += diff_kind(running, next, K_QUEUE, next->queues[i].s.name, what, len);
        }
    }
    for (size_t i = 0; i < running->nsources; i++) {
        n += diff_kind(running, next, K_SOURCE, running->sources[i].s.name, what, len);
    }
    for (size_t i = 0; i < next->nsources; i++) {
        const struct hd_section *s;
        if (section_base(running, K_SOURCE, next->sources[i].s.name, &s) == NULL) {
            n += diff_kind(running, next, K_SOURCE, next->sources[i].s.name, what, len);
        }
    }
    for (size_t i = 0; i < running->nsinks; i++) {
        n += diff_kind(running, next, K_SINK, running->sinks[i].s.name, what, len);
    }
    for (size_t i = 0; i < next->nsinks; i++) {
        const struct hd_section *s;
        if (section_base(running, K_SINK, next->sinks[i].s.name, &s) == NULL) {
            n += diff_kind(running, next, K_SINK, next->sinks[i].s.name, what, len);
        }
    }
    return n;
}
