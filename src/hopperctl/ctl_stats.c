/* SPDX-License-Identifier: MIT */
/* hopperctl stats: GET /metrics from hopperd's metrics endpoint and print
 * the queues and sinks as two tables. Every allocation is checked: out of
 * memory is reported and exits 1. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctl.h"
#include "netutil.h"

struct sample {
    char name[96];
    char labels[256];
    double value;
};

static const char *
label(const char *labels, const char *key, char *out, size_t outlen)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "%s=\"", key);
    const char *p = strstr(labels, pat);
    out[0] = '\0';
    if (p != NULL) {
        p += strlen(pat);
        const char *e = strchr(p, '"');
        if (e != NULL) {
            snprintf(out, outlen, "%.*s", (int)(e - p), p);
        }
    }
    return out;
}

static double
find(const struct sample *s, size_t n, const char *name, const char *key, const char *val,
     const char *key2, const char *val2)
{
    double sum = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        char v[128];
        if (strcmp(s[i].name, name) != 0) {
            continue;
        }
        if (key != NULL && strcmp(label(s[i].labels, key, v, sizeof(v)), val) != 0) {
            continue;
        }
        if (key2 != NULL && strcmp(label(s[i].labels, key2, v, sizeof(v)), val2) != 0) {
            continue;
        }
        sum += s[i].value;
        found = 1;
    }
    return found ? sum : -1;
}

/* GET /metrics from addr: the whole response, NUL-terminated, in *out
 * (caller frees). 0, or -1 after printing why. */
static int
fetch_metrics(const char *addr, char **out)
{
    *out = NULL;
    int fd = ctl_connect(addr, NULL);
    if (fd < 0) {
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    char *body = malloc(cap);
    if (body == NULL) {
        close(fd);
        fprintf(stderr, "hopperctl: out of memory\n");
        return -1;
    }
    /* A request that could not be sent gets no response: the caller
     * reports a bad response. */
    static const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
    int sent = hd_write_all(fd, req, sizeof(req) - 1, 1, 0, NULL, NULL) == 0;
    ssize_t r;
    while (sent && (r = recv(fd, body + len, cap - len - 1, 0)) > 0) {
        len += (size_t)r;
        if (cap - len < 2) {
            char *nb = realloc(body, cap * 2);
            if (nb == NULL) {
                free(body);
                close(fd);
                fprintf(stderr, "hopperctl: out of memory\n");
                return -1;
            }
            body = nb;
            cap *= 2;
        }
    }
    close(fd);
    body[len] = '\0';
    *out = body;
    return 0;
}

/* Parse the sample lines after the HTTP header at `text` (modified in
 * place) into *out (caller frees). Returns the count, or -ENOMEM. */
static long
parse_samples(char *text, struct sample **out)
{
    size_t ns = 0, scap = 256;
    struct sample *s = malloc(scap * sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            continue;
        }
        if (ns == scap) {
            struct sample *grown = realloc(s, scap * 2 * sizeof(*s));
            if (grown == NULL) {
                free(s);
                return -ENOMEM;
            }
            s = grown;
            scap *= 2;
        }
        char *sp = strrchr(line, ' ');
        if (sp == NULL) {
            continue;
        }
        s[ns].value = strtod(sp + 1, NULL);
        *sp = '\0';
        char *brace = strchr(line, '{');
        if (brace != NULL) {
            snprintf(s[ns].labels, sizeof(s[ns].labels), "%s", brace);
            *brace = '\0';
        } else {
            s[ns].labels[0] = '\0';
        }
        snprintf(s[ns].name, sizeof(s[ns].name), "%s", line);
        ns++;
    }
    *out = s;
    return (long)ns;
}

int
ctl_stats(int argc, char **argv)
{
    const char *addr = "127.0.0.1:9466";
    int ch;
    while ((ch = getopt(argc, argv, "m:")) != -1) {
        if (ch == 'm') {
            addr = optarg;
        } else {
            ctl_usage();
        }
    }
    char *body;
    if (fetch_metrics(addr, &body) < 0) {
        return 1;
    }
    char *p = strstr(body, "\r\n\r\n");
    if (p == NULL || strncmp(body, "HTTP/1.0 200", 12) != 0) {
        fprintf(stderr, "hopperctl: %s: bad metrics response\n", addr);
        free(body);
        return 1;
    }
    struct sample *s;
    long parsed = parse_samples(p + 4, &s);
    if (parsed < 0) {
        fprintf(stderr, "hopperctl: out of memory\n");
        free(body);
        return 1;
    }
    size_t ns = (size_t)parsed;
    printf("%-16s %12s %12s %12s %14s %12s %12s %10s\n", "QUEUE", "MEM_REC", "DISK_REC", "BACKLOG",
           "DISK_BYTES", "INGRESS", "DROPPED", "FAILED");
    for (size_t i = 0; i < ns; i++) {
        char q[128];
        if (strcmp(s[i].name, "hopperd_queue_backlog_records") != 0) {
            continue;
        }
        label(s[i].labels, "queue", q, sizeof(q));
        printf("%-16s %12.0f %12.0f %12.0f %14.0f %12.0f %12.0f %10.0f\n", q,
               find(s, ns, "hopperd_queue_memory_records", "queue", q, NULL, NULL),
               find(s, ns, "hopperd_queue_disk_records", "queue", q, NULL, NULL), s[i].value,
               find(s, ns, "hopperd_queue_disk_bytes", "queue", q, NULL, NULL),
               find(s, ns, "hopperd_ingress_records_total", "queue", q, NULL, NULL),
               find(s, ns, "hopperd_dropped_records_total", "queue", q, NULL, NULL),
               find(s, ns, "hopperd_queue_failed", "queue", q, NULL, NULL));
    }
    printf("\n%-16s %-16s %-12s %12s %14s %10s %10s\n", "SINK", "QUEUE", "STATE", "EGRESS",
           "EGRESS_BYTES", "RECONNECTS", "FAILURES");
    for (size_t i = 0; i < ns; i++) {
        char k[128], q[128], st[32] = "?";
        if (strcmp(s[i].name, "hopperd_sink_connected") != 0) {
            continue;
        }
        label(s[i].labels, "sink", k, sizeof(k));
        label(s[i].labels, "queue", q, sizeof(q));
        for (size_t j = 0; j < ns; j++) {
            char k2[128];
            if (strcmp(s[j].name, "hopperd_sink_state") == 0 && s[j].value == 1 &&
                strcmp(label(s[j].labels, "sink", k2, sizeof(k2)), k) == 0) {
                label(s[j].labels, "state", st, sizeof(st));
            }
        }
        printf("%-16s %-16s %-12s %12.0f %14.0f %10.0f %10.0f\n", k, q, st,
               find(s, ns, "hopperd_egress_records_total", "sink", k, NULL, NULL),
               find(s, ns, "hopperd_egress_bytes_total", "sink", k, NULL, NULL),
               find(s, ns, "hopperd_sink_reconnects_total", "sink", k, NULL, NULL),
               find(s, ns, "hopperd_sink_connect_failures_total", "sink", k, NULL, NULL));
    }
    free(s);
    free(body);
    return 0;
}
