/* SPDX-License-Identifier: MIT */
/* Target functions: hd_config_load_buffer hd_config_free hd_parse_size
 *                   hd_parse_duration hd_parse_addr hd_name_is_valid
 *                   (src/hopperd/config.c over libinih; hd_parse_addr is
 *                   in src/hopperd/netutil.c)
 * Property: arbitrary config text never crashes the loader; it returns 0
 * with a config or -1 without one; an error is a NUL-terminated
 * "fuzz.conf:LINE: message" whose LINE is within the text (only "out of
 * memory" and "no queue configured" may omit it); loading twice gives the same result and message. An
 * accepted config is consistent: names valid, strings terminated, every
 * source and sink points at a queue of that name, a source's may_use
 * starts with its own queue and holds valid queue indices, id lists only
 * on unix sources, at most one sink per queue, queue sizes within the documented bounds (max_record_bytes <=
 * disk_bytes / 2, compression <= 9; segment_bytes may exceed disk_bytes
 * only when left at its default: the library caps segments at a quarter
 * of disk_bytes, docs/hopperd.md). The
 * unit parsers, on the first line of the input, return 0 or -1 and leave a
 * terminated message.
 *
 * Input: the config text itself (no selector byte). */
#include "fuzz_common.h"

#include "config.h"

#include <ctype.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NAME "fuzz.conf"

static int
terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

static void
check_section(const struct hd_section *s, size_t nlines)
{
    FZ_CHECK(terminated(s->name, sizeof(s->name)), "section name not terminated");
    FZ_CHECK(s->line >= 1 && (size_t)s->line <= nlines, "section line %d of %zu", s->line,
             nlines);
}

static void
check_config(const struct hd_config *c, size_t nlines)
{
    FZ_CHECK(terminated(c->state_dir, sizeof(c->state_dir)) &&
                 terminated(c->metrics_listen, sizeof(c->metrics_listen)),
             "main strings not terminated");
    for (size_t i = 0; i < c->nqueues; i++) {
        const struct hd_queue_conf *q = &c->queues[i];
        check_section(&q->s, nlines);
        FZ_CHECK(hd_name_is_valid(q->s.name), "queue name '%s'", q->s.name);
        FZ_CHECK(q->segment_bytes <= q->disk_bytes || q->segment_bytes == 64ull << 20,
                 "queue %s: segment > disk", q->s.name);
        FZ_CHECK(q->max_record_bytes <= q->disk_bytes / 2, "queue %s: max_record > disk/2",
                 q->s.name);
        FZ_CHECK(q->compression <= 9, "queue %s: compression %llu", q->s.name,
                 (unsigned long long)q->compression);
        for (size_t j = 0; j < i; j++) {
            FZ_CHECK(strcmp(c->queues[j].s.name, q->s.name) != 0, "duplicate queue %s",
                     q->s.name);
        }
    }
    for (size_t i = 0; i < c->nsources; i++) {
        const struct hd_source_conf *s = &c->sources[i];
        check_section(&s->s, nlines);
        FZ_CHECK(terminated(s->listen, sizeof(s->listen)) && terminated(s->path, sizeof(s->path)) &&
                     terminated(s->queue, sizeof(s->queue)),
                 "source strings not terminated");
        FZ_CHECK(s->queue_index >= 0 && (size_t)s->queue_index < c->nqueues,
                 "source %s: queue_index %d of %zu", s->s.name, s->queue_index, c->nqueues);
        FZ_CHECK(strcmp(c->queues[s->queue_index].s.name, s->queue) == 0,
                 "source %s: queue_index points at the wrong queue", s->s.name);
        FZ_CHECK(terminated(s->queues, sizeof(s->queues)), "source queues not terminated");
        FZ_CHECK(s->nmay_use >= 1 && s->nmay_use <= HD_MAX_SOURCE_QUEUES &&
                     s->may_use[0] == s->queue_index,
                 "source %s: may_use starts without its own queue", s->s.name);
        for (size_t k = 0; k < s->nmay_use; k++) {
            FZ_CHECK(s->may_use[k] >= 0 && (size_t)s->may_use[k] < c->nqueues,
                     "source %s: may_use[%zu] = %d of %zu", s->s.name, k, s->may_use[k],
                     c->nqueues);
        }
        FZ_CHECK(s->allowed_uids.n <= HD_MAX_IDS && s->allowed_gids.n <= HD_MAX_IDS,
                 "source %s: id lists too long", s->s.name);
        FZ_CHECK(s->type == HD_SRC_UNIX || (s->allowed_uids.n == 0 && s->allowed_gids.n == 0),
                 "source %s: id lists on a tcp source", s->s.name);
    }
    for (size_t i = 0; i < c->nsinks; i++) {
        const struct hd_sink_conf *k = &c->sinks[i];
        check_section(&k->s, nlines);
        FZ_CHECK(terminated(k->connect, sizeof(k->connect)) && terminated(k->path, sizeof(k->path)) &&
                     terminated(k->queue, sizeof(k->queue)),
                 "sink strings not terminated");
        FZ_CHECK(k->queue_index >= 0 && (size_t)k->queue_index < c->nqueues,
                 "sink %s: queue_index %d of %zu", k->s.name, k->queue_index, c->nqueues);
        FZ_CHECK(strcmp(c->queues[k->queue_index].s.name, k->queue) == 0,
                 "sink %s: queue_index points at the wrong queue", k->s.name);
        FZ_CHECK(k->reconnect_min_ms <= k->reconnect_max_ms, "sink %s: reconnect min > max",
                 k->s.name);
        for (size_t j = 0; j < i; j++) {
            FZ_CHECK(c->sinks[j].queue_index != k->queue_index, "two sinks on queue %s",
                     k->queue);
        }
    }
}

static void
check_error(const char *err, size_t errlen, size_t nlines)
{
    FZ_CHECK(terminated(err, errlen), "error message not terminated");
    size_t pre = strlen(NAME);
    FZ_CHECK(strncmp(err, NAME ":", pre + 1) == 0, "error without the file name: '%s'", err);
    const char *p = err + pre + 1;
    if (isdigit((unsigned char)*p)) {
        char *end = NULL;
        unsigned long line = strtoul(p, &end, 10);
        FZ_CHECK(end != NULL && *end == ':', "malformed line number: '%s'", err);
        FZ_CHECK(line >= 1 && line <= nlines, "error line %lu outside 1..%zu: '%s'", line, nlines,
                 err);
    } else {
        /* Only errors about the whole file may lack a line. */
        FZ_CHECK(strstr(err, "out of memory") != NULL || strstr(err, "no queue configured") != NULL,
                 "error without a line number: '%s'", err);
    }
}

/* The unit parsers on a NUL-terminated copy of the first line. */
static void
check_parsers(const uint8_t *data, size_t size)
{
    char s[300];
    size_t n = 0;
    while (n < size && n < sizeof(s) - 1 && data[n] != '\n' && data[n] != '\0') {
        s[n] = (char)data[n];
        n++;
    }
    s[n] = '\0';
    char err[HD_ERR_LEN];
    uint64_t v;
    err[0] = '\0';
    int rc = hd_parse_size(s, &v, err, sizeof(err));
    FZ_CHECK(rc == 0 || (rc == -1 && terminated(err, sizeof(err)) && err[0] != '\0'),
             "hd_parse_size rc %d", rc);
    err[0] = '\0';
    rc = hd_parse_duration(s, &v, err, sizeof(err));
    FZ_CHECK(rc == 0 || (rc == -1 && terminated(err, sizeof(err)) && err[0] != '\0'),
             "hd_parse_duration rc %d", rc);
    char host[HD_ADDR_MAX];
    char port[16];
    err[0] = '\0';
    rc = hd_parse_addr(s, host, sizeof(host), port, sizeof(port), err, sizeof(err));
    FZ_CHECK(rc == 0 || (rc == -1 && terminated(err, sizeof(err)) && err[0] != '\0'),
             "hd_parse_addr rc %d", rc);
    if (rc == 0) {
        FZ_CHECK(terminated(host, sizeof(host)) && terminated(port, sizeof(port)),
                 "address parts not terminated");
        char *end = NULL;
        unsigned long p = strtoul(port, &end, 10);
        FZ_CHECK(p >= 1 && p <= 65535 && end != port && *end == '\0', "port '%s'", port);
    }
    (void)hd_name_is_valid(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FZ_MAX_INPUT) {
        return 0;
    }
    size_t nlines = 1;
    for (size_t i = 0; i < size; i++) {
        nlines += data[i] == '\n';
    }
    check_parsers(data, size);

    char err1[HD_ERR_LEN];
    char err2[HD_ERR_LEN];
    memset(err1, 0x5a, sizeof(err1));
    memset(err2, 0x5a, sizeof(err2));
    struct hd_config *c1 = NULL;
    struct hd_config *c2 = NULL;
    int rc1 = hd_config_load_buffer(NAME, (const char *)data, size, &c1, err1, sizeof(err1));
    int rc2 = hd_config_load_buffer(NAME, (const char *)data, size, &c2, err2, sizeof(err2));
    FZ_CHECK(rc1 == 0 || rc1 == -1, "load rc %d", rc1);
    FZ_CHECK(rc1 == rc2, "two loads of the same text: %d then %d", rc1, rc2);
    if (rc1 == 0) {
        FZ_CHECK(c1 != NULL && c2 != NULL, "success without a config");
        check_config(c1, nlines);
        FZ_CHECK(c1->nqueues == c2->nqueues && c1->nsources == c2->nsources &&
                     c1->nsinks == c2->nsinks,
                 "two loads differ");
    } else {
        FZ_CHECK(c1 == NULL && c2 == NULL, "failure with a config");
        check_error(err1, sizeof(err1), nlines);
        FZ_CHECK(strcmp(err1, err2) == 0, "two loads, two messages: '%s' / '%s'", err1, err2);
    }
    hd_config_free(c1);
    hd_config_free(c2);
    return 0;
}
