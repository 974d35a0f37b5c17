/* SPDX-License-Identifier: MIT */
/* Target functions: the SIGHUP reload path of hopperd (main.c reload):
 *                   hd_config_load_buffer of the running and the next
 *                   config, hd_config_diff, hd_reload_sinks ->
 *                   hd_relay_reload on the running sinks (issue 15).
 * Property: when the running config loads, it differs from itself in
 * nothing (0 changes, empty description), also when loaded twice; when the
 * next one loads too, the change count is 0 exactly when the description is
 * empty, and 0 both ways or neither (A vs B, B vs A); the reload hands every
 * sink that kept its name and type exactly next's address and timeouts,
 * bumps its generation exactly when it is a file sink or its address
 * changed, touches no other sink; a second reload with the same config
 * changes no address and bumps only file sinks. The log level is restored.
 * Input: bytes 0-1 (LE): the running config's length; then the running
 * config, then the next one (both INI text, as the config harness). The
 * sink runtimes are built by hand from the running config as main.c's
 * daemon_setup does (conf, lock, address, timeouts). */
#include "fuzz_common.h"

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "reload.h"

#include <pthread.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
diff(const struct hd_config *a, const struct hd_config *b, const char *what_for)
{
    char what[512];
    memset(what, 'x', sizeof(what));
    int n = hd_config_diff(a, b, what, sizeof(what));
    FZ_CHECK(n >= 0, "%s: diff %d", what_for, n);
    FZ_CHECK(memchr(what, '\0', sizeof(what)) != NULL, "%s: description not terminated",
             what_for);
    FZ_CHECK((n == 0) == (what[0] == '\0'), "%s: %d changes, description '%s'", what_for, n,
             what);
    return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > FZ_MAX_INPUT) {
        return 0;
    }
    static int quiet;
    if (!quiet) {
        log_init(HD_LOG_ERROR, 0);
        quiet = 1;
    }
    size_t alen = (size_t)data[0] | (size_t)data[1] << 8;
    const char *abuf = (const char *)data + 2;
    if (alen > size - 2) {
        alen = size - 2;
    }
    const char *bbuf = abuf + alen;
    size_t blen = size - 2 - alen;
    char err[512];
    struct hd_config *a = NULL;
    if (hd_config_load_buffer("a.conf", abuf, alen, &a, err, sizeof(err)) < 0) {
        return 0;
    }
    struct hd_config *a2 = NULL;
    FZ_CHECK(hd_config_load_buffer("a.conf", abuf, alen, &a2, err, sizeof(err)) == 0,
             "the same text loads once, not twice: %s", err);
    FZ_CHECK(diff(a, a, "a vs a") == 0, "a config differs from itself");
    FZ_CHECK(diff(a, a2, "a vs a loaded again") == 0, "a config differs from a second load");
    hd_config_free(a2);
    struct hd_config *b = NULL;
    if (hd_config_load_buffer("b.conf", bbuf, blen, &b, err, sizeof(err)) < 0) {
        hd_config_free(a); /* rejected: the running config stays */
        return 0;
    }
    int ab = diff(a, b, "a vs b");
    int ba = diff(b, a, "b vs a");
    FZ_CHECK((ab == 0) == (ba == 0), "a vs b: %d changes, b vs a: %d", ab, ba);

    /* The running sinks (main.c daemon_setup). */
    struct hd_daemon d;
    memset(&d, 0, sizeof(d));
    d.cfg = a;
    d.nsinks = a->nsinks;
    d.sinks = calloc(a->nsinks ? a->nsinks : 1, sizeof(*d.sinks));
    FZ_CHECK(d.sinks != NULL, "out of memory");
    for (size_t i = 0; i < a->nsinks; i++) {
        struct hd_sink_rt *s = &d.sinks[i];
        const struct hd_sink_conf *sc = &a->sinks[i];
        s->conf = sc;
        s->d = &d;
        pthread_mutex_init(&s->mu, NULL);
        snprintf(s->connect, sizeof(s->connect), "%s", sc->connect);
        s->connect_timeout_ms = sc->connect_timeout_ms;
        s->reconnect_min_ms = sc->reconnect_min_ms;
        s->reconnect_max_ms = sc->reconnect_max_ms;
    }
    int level = log_getlevel();
    log_setlevel(b->log_level);
    for (int round = 0; round < 2; round++) {
        static char before[64][HD_ADDR_MAX];
        unsigned gen[64];
        size_t nk = a->nsinks < 64 ? a->nsinks : 64;
        for (size_t i = 0; i < nk; i++) {
            memcpy(before[i], d.sinks[i].connect, HD_ADDR_MAX);
            gen[i] = d.sinks[i].generation;
        }
        size_t took = hd_reload_sinks(&d, b);
        size_t want_took = 0;
        for (size_t i = 0; i < nk; i++) {
            const struct hd_sink_rt *s = &d.sinks[i];
            const struct hd_sink_conf *nc = NULL;
            for (size_t j = 0; j < b->nsinks; j++) {
                if (strcmp(s->conf->s.name, b->sinks[j].s.name) == 0 &&
                    s->conf->type == b->sinks[j].type) {
                    nc = &b->sinks[j];
                    want_took++;
                }
            }
            if (nc == NULL) {
                FZ_CHECK(strcmp(s->connect, before[i]) == 0 && s->generation == gen[i],
                         "sink %s not in the new config, but changed", s->conf->s.name);
                continue;
            }
            FZ_CHECK(strcmp(s->connect, nc->connect) == 0 &&
                         s->connect_timeout_ms == nc->connect_timeout_ms &&
                         s->reconnect_min_ms == nc->reconnect_min_ms &&
                         s->reconnect_max_ms == nc->reconnect_max_ms,
                     "sink %s did not take the new settings", s->conf->s.name);
            int moved = strcmp(before[i], nc->connect) != 0;
            unsigned want = gen[i] + (s->conf->type == HD_SINK_FILE || moved ? 1u : 0u);
            FZ_CHECK(s->generation == want, "round %d: sink %s generation %u, want %u", round,
                     s->conf->s.name, s->generation, want);
            FZ_CHECK(round == 0 || !moved, "sink %s moved on a repeated reload",
                     s->conf->s.name);
        }
        if (a->nsinks <= 64) {
            FZ_CHECK(took == want_took, "%zu sinks reloaded, %zu match", took, want_took);
        }
    }
    log_setlevel(level);
    for (size_t i = 0; i < a->nsinks; i++) {
        pthread_mutex_destroy(&d.sinks[i].mu);
    }
    free(d.sinks);
    hd_config_free(b);
    hd_config_free(a);
    return 0;
}
